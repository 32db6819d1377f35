/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * libvmaretry - the VMA-range lock.
 *
 * Design
 * ------
 * Visible readers, after BRAVO (Dice & Kogan, ATC'19), one per thread:
 * instead of a reader count per region (the kernel's vm_refcnt, one cache
 * line that every fault in a region writes), each thread that faults in a
 * space has a state of its own there (struct vmr_tstate, lib/thread.c).
 * A fault writes into its own state what it holds (region and address
 * range) and checks the region's write marks.  A writer marks the ranges
 * it will change on the regions (kernel vma_start_write()'s vm_lock_seq),
 * then scans the threads' states and waits for those whose held range
 * overlaps.  Lock state per region is four words (write_seq, write_start,
 * write_end, detached) whatever the thread count; per space, one state per
 * thread that ever faulted there (reused when a thread exits).
 *
 * The alternative considered, a lock-free list range lock (Kogan, Dice &
 * Issa, EuroSys'20), makes every reader of a region insert a node into
 * that region's list with a CAS on a shared link: exactly the shared write
 * this lock exists to avoid when many threads fault in one big region.
 * The states cost the writer instead: one scan of them per write lock,
 * where a fault costs a store and a release on a line its thread owns.  A
 * first version hashed threads to a table of slots claimed by CAS; making
 * the state the thread's own removed the claim, one of three locked
 * instructions per fault (and gave the counters a home without atomics).
 *
 * Conflicts are decided by address, not by region: a state holds the
 * address range [start, end) of its lock, and a writer waits for every
 * state whose range overlaps the range it write-locks.  This matters
 * because an update replaces the regions it changes by new ones (a
 * region's bounds never change): a fault may still hold the old region
 * over pages the update did not touch, and a later writer of those pages,
 * marking the new region, must still wait for it.
 *
 * State word (a futex): HELD, WAITER (a writer sleeps on it, fence mode),
 * and a generation above them that each release bumps.  A thread holds at
 * most one fast-path read lock per space at a time; a second one while the
 * first is held fails with -EBUSY, and the fault falls back to the space
 * lock.
 *
 *   read lock   (under RCU, after the tree lookup found region R):
 *     1. store R, start, end in the thread's state;
 *     2. publish: exchange the word to HELD (a full barrier) [FENCE]
 *                 store the word, no barrier               [MEMBARRIER]
 *     3. check: R write-locked over an overlapping range -> release,
 *        -EBUSY (ABORT); else R detached -> release, -EAGAIN (MISS: look
 *        up again).  In this order: see region_check().
 *   read unlock: store the next free generation, then read the state's
 *     waiter flag; if set, wake the writer.  (Where membarrier() is not
 *     available, fence mode instead exchanges the word and wakes the
 *     writer if WAITER was set in it.)
 *   write lock  (space lock held for write):
 *     a. mark: each region meeting the range gets write_start/write_end
 *        (extended to cover earlier marks of this hold) and then
 *        write_seq = the space lock's odd seq;
 *     b. barrier: a full fence [FENCE], or membarrier(PRIVATE_EXPEDITED)
 *        [MEMBARRIER], which runs a full barrier on every CPU that runs a
 *        thread of the process;
 *     c. scan: for each HELD state whose range overlaps, wait until its
 *        generation moves on: set the state's waiter flag, membarrier(),
 *        and sleep on the word while it holds the same generation (without
 *        membarrier(): set WAITER in the word by CAS and sleep on it).
 *   write unlock: the space lock's seq becomes even; no mark matches it.
 *
 * Why a fault and a writer cannot both go ahead (Dekker): the fault stores
 * its state then loads the marks (1-3), the writer stores the marks then
 * loads the states (a-c), with a full barrier between on both sides (the
 * publishing exchange and the writer's fence are seq_cst; with membarrier,
 * the barrier runs on the fault's CPU between any two of its
 * instructions).  So either the fault's load sees the mark and it backs
 * off, or the writer's scan sees the held state and waits for it.  A
 * state the writer sees HELD with a range from an earlier hold belongs to a
 * fault whose check comes after the writer's marks: skipping it is safe,
 * waiting for it merely early.  The writer waits for the hold it saw (its
 * generation), not for later holds of the same state: those were checked
 * against its marks.  The same argument, with the waiter flag and the
 * word swapped and membarrier() on the writer's side, shows that a read
 * unlock (a plain store, then a load of the flag) cannot miss a writer that
 * went to sleep on it.  So a fault pays one locked instruction (fence mode)
 * or none (membarrier mode); a writer pays a membarrier() only when it must
 * sleep on a fault anyway.
 *
 * Detach: an update publishes its new tree version first and marks the
 * regions it replaced detached after it, so a fault that sees detached
 * looks up again and finds the new version (no MISS loop).  A detached
 * region is freed only after a grace period (no lookup can return it) in
 * which no held state holds it (lib/region.c).
 *
 * Progress: a read lock never waits; it fails and the fault falls back to
 * the space lock, whose write holder is the writer, so new faults cannot
 * starve a writer.  MISS retries are bounded.  The writer's wait ends
 * when the faults it found release their locks.
 *
 * Measured (build/tests/bench/bench_lock, defaults: 5 interleaved runs of
 * 200 ms, medians; 2-vCPU VM, 2026-11-23, after the per-thread states and
 * the lean unlock).  Lock + unlock of one page, million ops/s:
 *
 *                     shared region        disjoint regions
 *                     1 thread  2 threads  1 thread  2 threads
 *   vmr (fence)         48.2      78.2       59.5     116.5
 *   vmr (membarrier)    47.7      76.1       75.2     120.9
 *   refcount (kernel)   53.1      29.7       74.4     132.7
 *   ck_rwlock/region    49.0      36.4       73.0     132.1
 *   global rwlock       49.0      25.0       67.3      24.5
 *
 * One thread: on a par with the baselines in one region (one locked
 * instruction each way against their two), a little behind them across
 * 10000 regions.  Two threads in one region: 2.6x the refcount, whose
 * shared line halves its throughput (our own two-thread scaling measured
 * 1.6-2.2x over runs on this VM).  The membarrier barrier saves the last
 * locked instruction but makes every write lock a membarrier(): writers
 * ran 5-8x slower (0.3 M vs 0.06 M map/protect/unmap per second) and the
 * IPIs cost the readers more than they saved (0.35-0.45x of their
 * no-writer throughput with a writer, against 0.5-0.7x with the fence, as
 * the baselines).  So the fence is the default.
 */

/* liburcu's inline read side for the default flavor (LGPL, as we are). */
#define _LGPL_SOURCE
#include <urcu/urcu-memb.h>

#include "rangelock.h"

#include <errno.h>
#include <urcu/flavor.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

/* Visit every published tstate of @space. */
#define for_each_tstate(space, i, ts)                                         \
	for (uint32_t i = 0, nr_ = atomic_load_explicit(                       \
				     &(space)->tstates.nr,                     \
				     memory_order_acquire);                    \
	     i < nr_ && ((ts) = vmr_tstate_at(&(space)->tstates, i), 1); i++)

bool vmr_readers_busy(const struct vmr_space *space)
{
	struct vmr_tstate *ts;

	for_each_tstate(space, i, ts)
		if (atomic_load(&ts->word) & WORD_HELD)
			return true;
	return false;
}

size_t vmr_readers_held(const struct vmr_space *space,
			const struct vmr_region **out, size_t max)
{
	struct vmr_tstate *ts;
	size_t n = 0;

	for_each_tstate(space, i, ts) {
		if (!(atomic_load(&ts->word) & WORD_HELD))
			continue;
		if (n == max)
			return max + 1;
		out[n++] = atomic_load_explicit(&ts->region,
						memory_order_relaxed);
	}
	return n;
}

bool vmr_readers_hold(const struct vmr_space *space,
		      const struct vmr_region *region)
{
	struct vmr_tstate *ts;

	for_each_tstate(space, i, ts)
		if ((atomic_load(&ts->word) & WORD_HELD) &&
		    atomic_load_explicit(&ts->region, memory_order_relaxed) ==
			    region)
			return true;
	return false;
}

/* ---- read side --------------------------------------------------------- */

/* The lock and unlock themselves are inline, in lib/rangelock.h. */

int vmr_range_read_lock_counted(struct vmr_space *space, uintptr_t addr,
				size_t len, struct vmr_range_lock *lock,
				unsigned int *misses)
{
	struct vmr_tstate *ts;

	if (vmr_unlikely(!space || !lock))
		return -EINVAL;
	ts = vmr_tstate_get(space);
	if (vmr_unlikely(!ts))
		return -EBUSY;
	return vmr_range_read_lock_ts(space, ts, addr, len, lock, misses);
}

int vmr_range_read_lock(struct vmr_space *space, uintptr_t addr, size_t len,
			struct vmr_range_lock *lock)
{
	return vmr_range_read_lock_counted(space, addr, len, lock, NULL);
}

int vmr_range_read_unlock(struct vmr_range_lock *lock)
{
	struct vmr_tstate *ts;
	uint32_t w;

	if (!lock || !lock->slot)
		return lock ? vmr_misuse("range read unlock of a lock not "
					 "held") :
			      -EINVAL;
	ts = lock->slot;
	w = atomic_load_explicit(&ts->word, memory_order_relaxed);
	if ((w & ~WORD_WAITER) != (lock->seq | WORD_HELD))
		return vmr_misuse("range read unlock of a lock released "
				  "already");
	lock->slot = NULL;
	state_release(lock->region->space, ts, lock->seq);
	return 0;
}

/* ---- write side -------------------------------------------------------- */

void vmr_region_mark(struct vmr_space *space, struct vmr_region *region,
		     uintptr_t start, uintptr_t end)
{
	uint64_t seq = atomic_load_explicit(&space->lock.seq,
					    memory_order_relaxed);

	if (space->granularity == VMR_LOCK_REGION ||
	    start < region->start)
		start = region->start;
	if (space->granularity == VMR_LOCK_REGION || end > region->end)
		end = region->end;
	if (atomic_load_explicit(&region->write_seq, memory_order_relaxed) ==
	    seq) {
		/* Marked already in this hold: cover both. */
		uintptr_t ws = atomic_load_explicit(&region->write_start,
						    memory_order_relaxed);
		uintptr_t we = atomic_load_explicit(&region->write_end,
						    memory_order_relaxed);

		if (ws < start)
			start = ws;
		if (we > end)
			end = we;
	}
	/* Seq_cst: ordered before the drain's scan (Dekker, see above). */
	atomic_store(&region->write_start, start);
	atomic_store(&region->write_end, end);
	atomic_store(&region->write_seq, seq);
}

/* Sleep until the hold of @ts seen as word @v has ended. */
static void state_wait(struct vmr_space *space, struct vmr_tstate *ts,
		       uint32_t v)
{
	uint32_t gen = v & ~WORD_FLAGS;

	if (space->lean_unlock) {
		atomic_store_explicit(&ts->waiter, 1, memory_order_relaxed);
		for (;;) {
			/* Orders the flag before the word's re-read, and the
			 * reader's release before its flag check. */
			vmr_membarrier();
			v = atomic_load_explicit(&ts->word,
						 memory_order_acquire);
			if ((v & ~WORD_FLAGS) != gen || !(v & WORD_HELD))
				break;
			vmr_futex_wait(&ts->word, v);
		}
		atomic_store_explicit(&ts->waiter, 0, memory_order_relaxed);
		return;
	}
	for (;;) {
		vmr_futex_mark_wait(&ts->word, v, WORD_WAITER);
		/* Pairs with the release in state_release(). */
		v = atomic_load_explicit(&ts->word, memory_order_acquire);
		if ((v & ~WORD_FLAGS) != gen || !(v & WORD_HELD))
			return;
	}
}

void vmr_range_drain(struct vmr_space *space, uintptr_t start, uintptr_t end)
{
	struct vmr_tstate *ts;

	if (space->membarrier)
		vmr_membarrier();
	else
		/* Pairs with the publishing exchange in state_lock(). */
		atomic_thread_fence(memory_order_seq_cst);
	VMR_DEBUG_POINT(VMR_DP_RANGE_MARK, start);
	for_each_tstate(space, i, ts) {
		uint32_t v = atomic_load(&ts->word);

		if (!(v & WORD_HELD))
			continue;
		if (!vmr_ranges_overlap(
			    start, end,
			    atomic_load_explicit(&ts->start,
						 memory_order_relaxed),
			    atomic_load_explicit(&ts->end,
						 memory_order_relaxed)))
			continue;
		state_wait(space, ts, v);
	}
}

void vmr_range_write_lock_held(struct vmr_space *space, uintptr_t start,
			       uintptr_t end)
{
	struct vmr_tree_iter it;
	struct vmr_tree_entry e;

	/* The space write lock keeps every other tree writer out. */
	vmr_tree_iter_start(&it, space->tree, start);
	while (vmr_tree_iter_next(&it, &e) && e.start < end)
		vmr_region_mark(space, e.value, start, end);
	vmr_range_drain(space, start, end);
}

int vmr_range_write_lock(struct vmr_space *space, uintptr_t start,
			 uintptr_t end)
{
	if (!space || start >= end || (start & space->page_mask) ||
	    (end & space->page_mask))
		return -EINVAL;
	if (!vmr_space_lock_is_owner(&space->lock))
		return vmr_misuse("range write lock without the space write "
				  "lock");
	vmr_range_write_lock_held(space, start, end);
	return 0;
}
