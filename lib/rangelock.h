/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * libvmaretry - the VMA-range lock's read side, inline for the fault path.
 *
 * The design and its argument are in lib/rangelock.c, which holds the
 * write side and the public calls.  The read side lives here so that the
 * fault engine (lib/fault.c) gets it inlined: a fault's whole common path,
 * lookup to unlock, is then one function with no call but the handler's
 * and the tree walk's (tests/bench/bench_fault.c says what that saves).
 * Include it after <urcu/urcu-memb.h> with _LGPL_SOURCE defined, as
 * liburcu's inline read side needs.
 */
#ifndef VMR_RANGELOCK_H
#define VMR_RANGELOCK_H

#ifndef _LGPL_SOURCE
#error "define _LGPL_SOURCE and include <urcu/urcu-memb.h> first"
#endif

#include "mm.h"
#include "futex.h"
#include "tsan.h"

#include <errno.h>
#include <limits.h>

#define WORD_HELD 0x1u
#define WORD_WAITER 0x2u
#define WORD_GEN 0x4u /* one generation */
#define WORD_FLAGS (WORD_GEN - 1)

#define MISS_MAX 8

/* Release a hold taken when the word was @free. */
static inline void state_release(const struct vmr_space *space,
				 struct vmr_tstate *ts, uint32_t free)
{
	VMR_DEBUG_POINT(VMR_DP_RANGE_UNLOCK, 0);
	if (space->lean_unlock) {
		atomic_store_explicit(&ts->word, free + WORD_GEN,
				      memory_order_release);
		/* The writer's membarrier() orders this load after the
		 * store. */
		atomic_signal_fence(memory_order_seq_cst);
		if (vmr_unlikely(atomic_load_explicit(&ts->waiter,
						      memory_order_relaxed)))
			vmr_futex_wake(&ts->word, INT_MAX);
		return;
	}
	/* Pairs with the acquire of a writer re-reading the word. */
	vmr_futex_exchange_wake(&ts->word, free + WORD_GEN, WORD_WAITER);
}

/*
 * Step 3: may the fault keep its lock on @r over [start, end)?  The mark is
 * read before detached, and the order matters: a fault that finds the mark
 * of a write hold that has ended (the space lock's seq moved on) acquired,
 * through that seq, everything the hold did, the detach of @r included.
 * Read the other way round, a fault could see "attached" before the hold's
 * detach and "released" after the hold's end, and keep a region that a
 * whole-region writer removed (the stress test found exactly this).
 */
static inline int region_check(struct vmr_space *space,
			       const struct vmr_region *r, uintptr_t start,
			       uintptr_t end)
{
	uint64_t seq = atomic_load(&r->write_seq);

	if (seq == atomic_load(&space->lock.seq) &&
	    vmr_ranges_overlap(start, end, atomic_load(&r->write_start),
			       atomic_load(&r->write_end)))
		return -EBUSY;
	if (atomic_load(&r->detached))
		return -EAGAIN;
	return 0;
}

/* Steps 1-3 for region @r over [start, end) on the thread's state @ts. */
static inline int state_lock(struct vmr_space *space, struct vmr_tstate *ts,
			     struct vmr_region *r, uintptr_t start,
			     uintptr_t end, struct vmr_range_lock *lock)
{
	uint32_t v = atomic_load_explicit(&ts->word, memory_order_relaxed);
	int ret;

	if (v & WORD_HELD)
		return -EBUSY; /* this thread holds one already */
	atomic_store_explicit(&ts->region, r, memory_order_relaxed);
	atomic_store_explicit(&ts->start, start, memory_order_relaxed);
	atomic_store_explicit(&ts->end, end, memory_order_relaxed);
	if (space->membarrier) {
		atomic_store_explicit(&ts->word, v | WORD_HELD,
				      memory_order_relaxed);
		/* The writer's membarrier() orders us. */
		atomic_signal_fence(memory_order_seq_cst);
	} else {
		/* Pairs with the fence in vmr_range_drain(). */
		atomic_exchange_explicit(&ts->word, v | WORD_HELD,
					 memory_order_seq_cst);
	}
	VMR_DEBUG_POINT(VMR_DP_RANGE_CHECK, start);
	ret = region_check(space, r, start, end);
	if (ret) {
		state_release(space, ts, v);
		return ret;
	}
	lock->region = r;
	lock->start = start;
	lock->end = end;
	lock->slot = ts;
	lock->seq = v;
	return 0;
}

/*
 * The fault path's read-side critical section: liburcu's inline fast path
 * for the default flavor (a thread-local counter), the flavor's calls
 * otherwise.  Under TSan, always the calls: inlined, liburcu's plain
 * accesses to its own shared words would be instrumented in our code and
 * reported; the library's copy is not instrumented (see tsan.h).
 */
static inline void fault_rcu_lock(const struct vmr_space *space)
{
#ifndef VMR_TSAN
	if (vmr_likely(space->flavor == &urcu_memb_flavor))
		urcu_memb_read_lock();
	else
#endif
		space->flavor->read_lock();
}

static inline void fault_rcu_unlock(const struct vmr_space *space)
{
	vmr_tsan_reader_exit();
#ifndef VMR_TSAN
	if (vmr_likely(space->flavor == &urcu_memb_flavor))
		urcu_memb_read_unlock();
	else
#endif
		space->flavor->read_unlock();
}

/* vmr_range_read_lock() for the caller's tstate @ts (not NULL), counting
 * in *@misses (if not NULL) the lookups retried because the region was
 * detached under them (the kernel's VMA_LOCK_MISS). */
static inline int vmr_range_read_lock_ts(struct vmr_space *space,
					 struct vmr_tstate *ts, uintptr_t addr,
					 size_t len,
					 struct vmr_range_lock *lock,
					 unsigned int *misses)
{
	uintptr_t start, end, last;
	struct vmr_region *r;
	unsigned int tries;
	int ret = -EAGAIN;

	last = addr + (len ? len - 1 : 0);
	if (vmr_unlikely(last < addr))
		return -EINVAL;
	start = addr & ~space->page_mask;
	end = (last | space->page_mask) + 1; /* 0: the top page, never mapped */

	fault_rcu_lock(space);
	for (tries = 0; tries < MISS_MAX; tries++) {
		r = vmr_tree_lookup(space->tree, addr, NULL);
		if (!r || end == 0 || end > r->end) {
			ret = -ENOENT;
			break;
		}
		VMR_DEBUG_POINT(VMR_DP_RANGE_LOOKUP, addr);
		if (space->granularity == VMR_LOCK_REGION)
			ret = state_lock(space, ts, r, r->start, r->end, lock);
		else
			ret = state_lock(space, ts, r, start, end, lock);
		if (ret != -EAGAIN)
			break;
		if (misses)
			(*misses)++;
	}
	fault_rcu_unlock(space);
	return ret;
}

/* vmr_range_read_unlock() for a lock the caller knows it holds. */
static inline void vmr_range_read_unlock_held(struct vmr_space *space,
					      struct vmr_range_lock *lock)
{
	struct vmr_tstate *ts = lock->slot;

	lock->slot = NULL;
	state_release(space, ts, lock->seq);
}

#endif /* VMR_RANGELOCK_H */
