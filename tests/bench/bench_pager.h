/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * A simulated file pager for the benchmarks (bench_fault, bench_scenarios):
 * a page cache smaller than the working set over a simulated store whose
 * reads sleep, and the fault handler of <vmaretry/pagewait.h>
 * (filemap_fault()) over it, with the optional pin across retry.
 *
 *   - the page cache is one vmr_pagemap of @pages pages, indexed by store
 *     offset / page size: a region's page i is its offset / page + i, so
 *     regions cut from a region (split by vmr_protect(), say) and regions
 *     mapped again over the same offsets share the cached pages;
 *   - every page read is charged to the cache first and, if that takes it
 *     over @cache up-to-date pages, the charging fault itself evicts random
 *     pages (vmr_page_evict(), which skips locked and pinned ones) until it
 *     is back at @cache: direct reclaim at charge time, as a memcg at its
 *     limit does in __filemap_get_folio().  Victims are chosen uniformly,
 *     so a page that was read but not yet installed is as much a candidate
 *     as any (in the kernel it sits unreferenced on the inactive list);
 *   - a read is a sleep of @io_ns in clock_nanosleep() (set the thread's
 *     timer slack to 1 ns, PR_SET_TIMERSLACK, or the kernel stretches it):
 *     a thread waiting for I/O gives up its CPU, which a busy-wait would
 *     not;
 *   - the handler: vmr_page_lock_or_retry(); if the page is not up to
 *     date: charge it, vmr_fault_release_for_io(), read it, mark it up to
 *     date, and if the lock was released unlock the page and return the
 *     retry | MAJOR (with @pin: after vmr_fault_pin_page(), so that the
 *     retry finds it; the retry takes its page from
 *     vmr_fault_pinned_page()); else install it (nothing to do), unlock,
 *     return 0 (or MAJOR if it read holding the lock).
 *
 * The handler's vmf->ctx must be the faulting thread's struct
 * bench_pager_ctx, whose counters only that thread writes:
 *   io_retries    retries returned after a read done with the fault's lock
 *                 released (vmr_fault_release_for_io() said RETRY);
 *   wait_retries  retries vmr_page_lock_or_retry() returned (the page was
 *                 locked by another fault's read; lock released, waited);
 *   io_rereads    handler calls of an I/O-retried fault that found the page
 *                 evicted between its read and the retry, and read it again
 *                 (the Kylin test's RETRY_IO_MISS);
 *   wait_rereads  the same for faults that had made a wait retry;
 *   reads, io_ns  reads made and the time they took;
 *   evictions     pages this thread evicted;
 *   bad           pins the engine lost track of (and whatever the caller
 *                 adds: results it did not expect).
 */
#ifndef VMR_BENCH_PAGER_H
#define VMR_BENCH_PAGER_H

#include <vmaretry.h>

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct bench_pager {
	struct vmr_pagemap *map;
	size_t page;     /* bytes */
	size_t pages;    /* pages in the store and the map */
	long cache;      /* limit of up-to-date pages */
	uint64_t io_ns;  /* one read */
	bool pin;        /* pin the page read across the retry */
	/* Up-to-date pages, counting those charged and being read. */
	_Atomic long resident __attribute__((aligned(64)));
};

/* A faulting thread's counters (vmf->ctx of the pager's faults). */
struct bench_pager_ctx {
	uint64_t rng; /* reclaim victims: seed it */
	uint64_t io_retries, wait_retries, io_rereads, wait_rereads;
	uint64_t reads, io_ns, evictions, bad;
};

/* The handler, and ops whose ->fault it is (private data: the pager). */
vmr_fault_t bench_pager_fault(struct vmr_fault *vmf);
extern const struct vmr_region_ops bench_pager_ops;

/*
 * Set up @pg over a new page map of @pages pages in @space, with a cache of
 * @cache pages and reads of @io_ns; all pages out of the cache.  Dies on
 * error.
 */
void bench_pager_init(struct bench_pager *pg, struct vmr_space *space,
		      size_t page, size_t pages, size_t cache, uint64_t io_ns,
		      bool pin);

/* Fill the cache with random pages (untimed, before a run). */
void bench_pager_fill(struct bench_pager *pg, uint64_t *rng);

/* Destroy the page map. */
void bench_pager_fini(struct bench_pager *pg);

/* @sum += @c, counter by counter (rng excepted). */
void bench_pager_ctx_add(struct bench_pager_ctx *sum,
			 const struct bench_pager_ctx *c);

/*
 * Report on stderr, prefixed by @who, the counters that do not add up; they
 * point at the library: the engine's faults against @faults (the callers'
 * count), its retries (vma_lock_retry + space_retries) against the
 * handlers' (io + wait), page_reads against the handlers' reads,
 * bad_results and @sum->bad, and the engine's attempt identities
 * (success + abort + retry = faults + vma_retries; space_lock_faults =
 * faults - vma_lock_success + space_retries).  Returns how many failed.
 */
int bench_pager_check(const char *who, const struct vmr_stats *st,
		      uint64_t faults, const struct bench_pager_ctx *sum);

/* vmr_map() a read-write region, or die; @flags as vmr_map()'s. */
void bench_map_region(struct vmr_space *space, uintptr_t start, size_t len,
		      uint64_t offset, const struct vmr_region_ops *ops,
		      void *private_data, unsigned int flags);

/* The system page size. */
size_t bench_page_size(void);

#endif /* VMR_BENCH_PAGER_H */
