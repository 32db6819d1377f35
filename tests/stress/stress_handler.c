/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The engine phase's regions: their records, open() and close(), and the
 * fault handler, which checks, while it holds its fault's lock, every
 * invariant that only a handler can see (listed in stress_engine.c): the
 * region is not closed, not detached where the lock forbids it, contains
 * the address, is what the tree maps the address to now (or shows the
 * same thing there), and carries the page's published generation; and,
 * for the page-wait handler, that the page lock is exclusive and the
 * cached contents are the generation's, untorn.
 *
 * Four handler kinds, picked per mapping, drive the engine's paths: plain
 * (finish under the lock), pager (page wait and I/O through a page map,
 * retrying as the policy says, pinning across the retry), complete
 * (release the lock itself, COMPLETED) and space (RETRY from the
 * fine-grained lock, for work that needs the space lock).
 */
#include "stress_engine.h"

#include <inttypes.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

struct rec *stress_new_rec(struct round *R, uint32_t gen, enum kind kind)
{
	struct rec *rec = calloc(1, sizeof(*rec));

	if (!rec) {
		fprintf(stderr, "stress: out of memory\n");
		exit(1);
	}
	atomic_init(&rec->magic, REC_LIVE);
	rec->gen = gen;
	rec->kind = kind;
	rec->all_next = atomic_load(&R->recs);
	while (!atomic_compare_exchange_weak(&R->recs, &rec->all_next, rec))
		;
	return rec;
}

/* ---- region callbacks ---------------------------------------------------- */

struct round *stress_cur_round;

static void region_open(struct vmr_region *region,
			const struct vmr_region *from)
{
	const struct rec *old = vmr_region_private(from);
	struct round *R = stress_cur_round;

	if (!vmr_space_is_write_locked(vmr_region_space(region)))
		stress_violation("open() without the space write lock");
	if (atomic_load(&old->magic) != REC_LIVE)
		stress_violation("open() from a closed region gen %u",
				 old->gen);
	vmr_region_set_private(region, stress_new_rec(R, old->gen, old->kind));
	atomic_fetch_add(&R->opens, 1);
}

static void region_close(struct vmr_region *region)
{
	struct rec *rec = vmr_region_private(region);
	uint32_t was = REC_LIVE;

	if (!atomic_compare_exchange_strong(&rec->magic, &was, REC_CLOSED))
		stress_violation("close() twice on region gen %u [%#" PRIxPTR
				 ", %#" PRIxPTR ")",
				 rec->gen, vmr_region_start(region),
				 vmr_region_end(region));
	atomic_fetch_add(&stress_cur_round->closes, 1);
}

static vmr_fault_t stress_fault(struct vmr_fault *vmf);

const struct vmr_region_ops stress_region_ops = {
	.fault = stress_fault,
	.open = region_open,
	.close = region_close,
};

/* ---- the handler --------------------------------------------------------- */

/* The checks a handler makes while it holds its fault's lock. */
static void check_locked(struct round *R, const struct vmr_fault *vmf,
			 const struct rec *rec, const char *where)
{
	const struct vmr_region *r = vmf->region, *now;
	uintptr_t a = vmf->real_address;
	size_t p = page_of(a);
	uint64_t w;
	uint32_t cur, pend;

	if (vmf->lock == VMR_FAULT_LOCK_NONE) {
		stress_violation("%s: handler without a lock at %#" PRIxPTR,
				 where, a);
		return;
	}
	if (atomic_load(&rec->magic) != REC_LIVE)
		stress_violation("%s: handler on a closed region gen %u at "
				 "%#" PRIxPTR, where, rec->gen, a);
	if (a < vmr_region_start(r) || a >= vmr_region_end(r))
		stress_violation("%s: address %#" PRIxPTR " outside its "
				 "region [%#" PRIxPTR ", %#" PRIxPTR ")",
				 where, a, vmr_region_start(r),
				 vmr_region_end(r));
	if (vmr_region_offset(r) != vmr_region_start(r) - BASE)
		stress_violation("%s: region [%#" PRIxPTR ", ...) has offset "
				 "%#" PRIx64, where, vmr_region_start(r),
				 vmr_region_offset(r));
	if ((vmf->lock == VMR_FAULT_LOCK_SPACE ||
	     R->granularity == VMR_LOCK_REGION) &&
	    vmr_region_is_detached(r))
		stress_violation("%s: handler on a detached region gen %u at "
				 "%#" PRIxPTR " (lock %u, granularity %d)",
				 where, rec->gen, a, vmf->lock,
				 (int)R->granularity);
	if ((vmf->flags & VMR_FAULT_FLAG_WRITE) &&
	    !(vmr_region_prot(r) & VMR_PROT_WRITE))
		stress_violation("%s: write fault in a read-only region",
				 where);

	/* What the tree maps the address to now. */
	vmr_rcu_read_lock(NULL);
	now = vmr_space_find_region(vmf->space, a);
	if (!now) {
		stress_violation("%s: address %#" PRIxPTR " unmapped while "
				 "its fault holds it (gen %u)", where, a,
				 rec->gen);
	} else if (vmf->lock == VMR_FAULT_LOCK_SPACE ||
		   R->granularity == VMR_LOCK_REGION) {
		if (now != r)
			stress_violation("%s: region at %#" PRIxPTR " replaced "
					 "while its fault holds it (gen %u -> "
					 "%u)", where, a, rec->gen,
					 ((struct rec *)vmr_region_private(now))
						 ->gen);
	} else {
		const struct rec *nrec = vmr_region_private(now);

		if (nrec->gen != rec->gen ||
		    vmr_region_prot(now) != vmr_region_prot(r) ||
		    vmr_region_offset(now) - vmr_region_start(now) !=
			    vmr_region_offset(r) - vmr_region_start(r))
			stress_violation("%s: page %#" PRIxPTR " changed while "
					 "its fault holds it (gen %u prot %u "
					 "-> gen %u prot %u)", where, a,
					 rec->gen, vmr_region_prot(r),
					 nrec->gen, vmr_region_prot(now));
	}
	vmr_rcu_read_unlock(NULL);

	w = atomic_load(&R->pstate[p]);
	cur = (uint32_t)w;
	pend = (uint32_t)(w >> 32);
	if (rec->gen != cur && rec->gen != pend)
		stress_violation("%s: stale install at page %zu: region gen "
				 "%u, published gen %u (pending %u)", where,
				 p, rec->gen, cur, pend);
}

static void install(struct round *R, const struct vmr_fault *vmf,
		    const struct rec *rec, const char *where)
{
	size_t p = page_of(vmf->real_address);
	uint32_t last;

	check_locked(R, vmf, rec, where);
	/*
	 * Installs of a page are ordered by its lock: one on a newer
	 * mapping can only start after the update that made it waited out
	 * every install on the older one.  Generations only grow, so the
	 * installed one never goes back.
	 */
	last = atomic_load(&R->installed[p]);
	do {
		if (rec->gen < last) {
			stress_violation("%s: page %zu installed from gen %u "
					 "after gen %u", where, p, rec->gen,
					 last);
			break;
		}
	} while (!atomic_compare_exchange_weak(&R->installed[p], &last,
					       rec->gen));
}

static void io_pause(uintptr_t salt)
{
	/* A few microseconds of "I/O", or just a yield. */
	if (salt % 3)
		usleep((useconds_t)(salt % 97));
	else
		sched_yield();
}

static void page_enter(struct round *R, size_t p)
{
	if (atomic_fetch_add(&R->page_holders[p], 1))
		stress_violation("page lock of page %zu held twice", p);
}

static void page_leave(struct round *R, size_t p)
{
	atomic_fetch_sub(&R->page_holders[p], 1);
	if (vmr_page_unlock(R->map, p))
		stress_violation("page %zu unlock failed", p);
}

/* filemap_fault() over a page map, as <vmaretry/pagewait.h> shows it. */
static vmr_fault_t pager_fault(struct round *R, struct vmr_fault *vmf,
			       const struct rec *rec)
{
	size_t p = page_of(vmf->real_address);
	uint32_t gen = rec->gen;
	struct cache *c = &R->cache[p];
	vmr_fault_t ret;
	bool read = false, was_uptodate;

	check_locked(R, vmf, rec, "pager entry");
	ret = vmr_page_lock_or_retry(vmf, R->map, p);
	if (ret)
		return ret; /* waited with the lock dropped, or NOWAIT */
	page_enter(R, p);
	/* Locked pages are not evicted: this stays true until we unlock. */
	was_uptodate = vmr_page_uptodate(R->map, p);
	if (!was_uptodate || c->gen != gen) {
		ret = vmr_fault_release_for_io(vmf);
		/* The read: word by word, so a second writer would tear it. */
		c->gen = 0;
		for (size_t w = 0; w < CACHE_WORDS; w++) {
			c->data[w] = store_word(gen, p, w);
			if (w == 1)
				io_pause(vmf->real_address ^ gen);
		}
		c->gen = gen;
		if (vmr_page_mark_uptodate(R->map, p))
			stress_violation("mark_uptodate of page %zu failed", p);
		/* The library counts a read only where it changes the state
		 * (a re-read of another generation's page is ours alone). */
		if (!was_uptodate)
			atomic_fetch_add(&R->page_reads, 1);
		read = true;
		if (ret) {
			/* Pin across the retry, beyond the kernel. */
			if (vmf->real_address & 1)
				vmr_fault_pin_page(vmf, R->map, p);
			page_leave(R, p);
			return ret | VMR_FAULT_MAJOR;
		}
	}
	for (size_t w = 0; w < CACHE_WORDS; w++)
		if (c->gen != gen || c->data[w] != store_word(gen, p, w)) {
			stress_violation("page %zu: cache holds gen %u word "
					 "%zu %#" PRIx64 ", region gen %u: "
					 "torn or stale contents", p, c->gen,
					 w, c->data[w], gen);
			break;
		}
	install(R, vmf, rec, "pager");
	page_leave(R, p);
	return read ? VMR_FAULT_MAJOR : 0;
}

static vmr_fault_t stress_fault(struct vmr_fault *vmf)
{
	struct round *R = stress_cur_round;
	const struct rec *rec = vmr_region_private(vmf->region);

	atomic_fetch_add(&R->handler_calls, 1);
	switch (rec->kind) {
	case K_PAGER:
		return pager_fault(R, vmf, rec);
	case K_COMPLETE:
		install(R, vmf, rec, "complete");
		if (vmr_fault_release(vmf))
			stress_violation("vmr_fault_release failed");
		return VMR_FAULT_COMPLETED;
	case K_SPACE:
		if (vmf->lock == VMR_FAULT_LOCK_VMA &&
		    vmr_fault_allow_retry_first(vmf)) {
			check_locked(R, vmf, rec, "space-retry");
			if (vmr_fault_release(vmf))
				stress_violation("vmr_fault_release failed");
			return VMR_FAULT_RETRY;
		}
		install(R, vmf, rec, "space");
		return 0;
	default:
		install(R, vmf, rec, "plain");
		return vmf->real_address & 2 ? VMR_FAULT_NOPAGE : 0;
	}
}
