/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The simulated file pager of the benchmarks: see bench_pager.h. */
#include "bench_pager.h"

#include "bench.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

/* vmf->handler_data: what the fault's earlier attempts did. */
#define HD_IO_RETRIED 1u   /* returned a retry after its own read */
#define HD_WAIT_RETRIED 2u /* returned a retry after a page wait */

size_t bench_page_size(void)
{
	long p = sysconf(_SC_PAGESIZE);

	return p > 0 ? (size_t)p : 4096;
}

void bench_map_region(struct vmr_space *space, uintptr_t start, size_t len,
		      uint64_t offset, const struct vmr_region_ops *ops,
		      void *private_data, unsigned int flags)
{
	struct vmr_region_desc desc;
	int err;

	memset(&desc, 0, sizeof(desc));
	desc.start = start;
	desc.len = len;
	desc.prot = VMR_PROT_READ | VMR_PROT_WRITE;
	desc.offset = offset;
	desc.ops = ops;
	desc.ops_size = ops ? sizeof(*ops) : 0;
	desc.private_data = private_data;
	err = vmr_map(space, &desc, sizeof(desc), flags);
	if (err)
		bench_die("vmr_map", -err);
}

void bench_pager_init(struct bench_pager *pg, struct vmr_space *space,
		      size_t page, size_t pages, size_t cache, uint64_t io_ns,
		      bool pin)
{
	int err;

	memset(pg, 0, sizeof(*pg));
	pg->page = page;
	pg->pages = pages;
	pg->cache = (long)cache;
	pg->io_ns = io_ns;
	pg->pin = pin;
	atomic_init(&pg->resident, 0);
	err = vmr_pagemap_create(space, pages, &pg->map);
	if (err)
		bench_die("vmr_pagemap_create", -err);
}

void bench_pager_fill(struct bench_pager *pg, uint64_t *rng)
{
	size_t i;

	while (atomic_load(&pg->resident) < pg->cache) {
		i = (size_t)(bench_rand(rng) % pg->pages);
		if (vmr_page_uptodate(pg->map, i))
			continue;
		if (vmr_page_lock(pg->map, i, 0) ||
		    vmr_page_mark_uptodate(pg->map, i) ||
		    vmr_page_unlock(pg->map, i))
			bench_die("filling the cache", EIO);
		atomic_fetch_add(&pg->resident, 1);
	}
}

void bench_pager_fini(struct bench_pager *pg)
{
	vmr_pagemap_destroy(pg->map);
	pg->map = NULL;
}

void bench_pager_ctx_add(struct bench_pager_ctx *sum,
			 const struct bench_pager_ctx *c)
{
	sum->io_retries += c->io_retries;
	sum->wait_retries += c->wait_retries;
	sum->io_rereads += c->io_rereads;
	sum->wait_rereads += c->wait_rereads;
	sum->reads += c->reads;
	sum->io_ns += c->io_ns;
	sum->evictions += c->evictions;
	sum->bad += c->bad;
}

/*
 * Charge one page about to be read to the cache; over the limit, evict
 * random up-to-date pages until back at it (direct reclaim).  Bounded:
 * pages locked or pinned cannot be evicted, and they may be all there is.
 */
static void charge(struct bench_pager *pg, struct bench_pager_ctx *c)
{
	long r = atomic_fetch_add(&pg->resident, 1) + 1;
	size_t probes = 0, victim;

	while (r > pg->cache && probes++ < 4 * pg->pages) {
		victim = (size_t)(bench_rand(&c->rng) % pg->pages);
		if (vmr_page_evict(pg->map, victim)) {
			c->evictions++;
			r = atomic_fetch_sub(&pg->resident, 1) - 1;
		} else {
			r = atomic_load(&pg->resident);
		}
	}
}

/* The read: sleep, as a thread waiting for a disk does. */
static void read_page(struct bench_pager *pg, struct bench_pager_ctx *c)
{
	uint64_t t0 = bench_now_ns();

	bench_sleep_ns(pg->io_ns);
	c->io_ns += bench_now_ns() - t0;
	c->reads++;
}

/* filemap_fault() after <vmaretry/pagewait.h>, with the optional pin. */
vmr_fault_t bench_pager_fault(struct vmr_fault *vmf)
{
	struct bench_pager *pg = vmr_region_private(vmf->region);
	struct bench_pager_ctx *c = vmf->ctx;
	size_t i, pinned;
	vmr_fault_t ret;

	i = (size_t)((vmf->address - vmr_region_start(vmf->region)) /
		     pg->page) +
	    (size_t)(vmr_region_offset(vmf->region) / pg->page);
	/* A retry of a pinning fault uses the page it pinned. */
	if (pg->pin && vmr_fault_pinned_page(vmf, pg->map, &pinned)) {
		if (pinned != i || !(vmf->handler_data & HD_IO_RETRIED))
			c->bad++; /* the engine lost track of the pin */
		i = pinned;
	}

	ret = vmr_page_lock_or_retry(vmf, pg->map, i);
	if (ret) {
		if (ret & VMR_FAULT_RETRY) {
			c->wait_retries++;
			vmf->handler_data |= HD_WAIT_RETRIED;
		}
		return ret;
	}
	if (!vmr_page_uptodate(pg->map, i)) {
		if (vmf->handler_data & HD_IO_RETRIED)
			c->io_rereads++;
		else if (vmf->handler_data & HD_WAIT_RETRIED)
			c->wait_rereads++;
		charge(pg, c);
		ret = vmr_fault_release_for_io(vmf);
		read_page(pg, c);
		if (vmr_page_mark_uptodate(pg->map, i))
			bench_die("vmr_page_mark_uptodate", EPERM);
		if (ret) {
			/* The fault's lock is gone: retry to install it. */
			if (pg->pin && vmr_fault_pin_page(vmf, pg->map, i))
				bench_die("vmr_fault_pin_page", EOVERFLOW);
			vmr_page_unlock(pg->map, i);
			if (ret & VMR_FAULT_RETRY) {
				c->io_retries++;
				vmf->handler_data |= HD_IO_RETRIED;
			}
			return ret | VMR_FAULT_MAJOR;
		}
		ret = VMR_FAULT_MAJOR; /* read holding the lock */
	}
	/* Install: nothing to map in this model. */
	vmr_page_unlock(pg->map, i);
	return ret;
}

const struct vmr_region_ops bench_pager_ops = { .fault = bench_pager_fault };

__attribute__((format(printf, 3, 4))) static void
report(int *n, const char *who, const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "%s: %s: ", program_invocation_short_name, who);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	(*n)++;
}

#define U(x) ((unsigned long long)(x))

int bench_pager_check(const char *who, const struct vmr_stats *st,
		      uint64_t faults, const struct bench_pager_ctx *sum)
{
	uint64_t retries = sum->io_retries + sum->wait_retries;
	int n = 0;

	if (st->faults != faults)
		report(&n, who, "engine counted %llu faults, threads %llu",
		       U(st->faults), U(faults));
	if (st->vma_lock_retry + st->space_retries != retries)
		report(&n, who, "vma_lock_retry + space_retries = %llu != "
		       "handler retries %llu",
		       U(st->vma_lock_retry + st->space_retries), U(retries));
	if (st->page_reads != sum->reads)
		report(&n, who, "page_reads %llu != handler reads %llu",
		       U(st->page_reads), U(sum->reads));
	if (st->bad_results || sum->bad)
		report(&n, who, "%llu bad results, %llu faults not ending in "
		       "0 or MAJOR or with a wrong pin", U(st->bad_results),
		       U(sum->bad));
	/* Every fault makes one fine-grained attempt, and one more per
	 * RETRY_VMA followed; each ends in success, abort or retry. */
	if (st->vma_lock_success + st->vma_lock_abort + st->vma_lock_retry !=
	    st->faults + st->vma_retries)
		report(&n, who, "vma_lock success + abort + retry = %llu != "
		       "faults + vma_retries = %llu",
		       U(st->vma_lock_success + st->vma_lock_abort +
			 st->vma_lock_retry),
		       U(st->faults + st->vma_retries));
	/* The others go to the space lock, once and once per retry there. */
	if (st->space_lock_faults !=
	    st->faults - st->vma_lock_success + st->space_retries)
		report(&n, who, "space_lock_faults %llu != faults - "
		       "vma_lock_success + space_retries = %llu",
		       U(st->space_lock_faults),
		       U(st->faults - st->vma_lock_success + st->space_retries));
	return n;
}
