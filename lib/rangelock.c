/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * libvmaretry - the VMA-range lock.
 *
 * Design
 * ------
 * Reader-biased visible-reader slots, after BRAVO (Dice & Kogan, ATC'19):
 * instead of a reader count per region (the kernel's vm_refcnt, one cache
 * line every fault in a region writes), each space has a table of
 * cache-line-sized reader slots.  A fault claims the slot its thread hashes
 * to (each thread gets its own index on first use, so in practice it finds
 * the same free slot every time, in its own cache), writes there what it
 * holds (region and address range), and checks the region's write marks.
 * A writer marks the ranges it will change on the regions (kernel
 * vma_start_write's vm_lock_seq), then scans the table and waits for the
 * slots whose held range overlaps.  Lock state per region is four words
 * (write_seq, write_start, write_end, detached) whatever the thread count;
 * the table is per space (reader_slots x 64 bytes, 64 KiB by default).
 *
 * The alternative considered, a lock-free list range lock (Kogan, Dice &
 * Issa, EuroSys'20), makes every reader of a region insert a node into
 * that region's list with a CAS on a shared link: exactly the shared write
 * this lock exists to avoid when many threads fault in one big region.
 * The slot table costs the writer instead: one scan of the table per write
 * lock, where a fault costs one claim and one release of a line it owns.
 * Measurements: see the figures below and tests/bench/bench_lock.c.
 *
 * Conflicts are decided by address, not by region: a slot holds the
 * address range [start, end) of its lock, and a writer waits for every slot
 * whose range overlaps the range it write-locks.  This matters because an
 * update replaces the regions it changes by new ones (a region's bounds
 * never change): a fault may still hold the old region over pages the
 * update did not touch, and a later writer of those pages, marking the new
 * region, must still wait for it.
 *
 * Slot word (futex): BUSY (claimed), PUB (range published: the holder will
 * check the marks, or has), WAITER (a writer sleeps on it), and a
 * generation above them that each release bumps.
 *
 *   read lock   (under RCU, after the tree lookup found region R):
 *     1. claim: CAS a free slot word to BUSY (probing up to SLOT_PROBES
 *        slots from the thread's own), or fail with -EBUSY (ABORT);
 *     2. store R, start, end in the slot;
 *     3. publish: fetch_or PUB (a full barrier)  [VMR_BARRIER_FENCE]
 *                 nothing, PUB was set by the claim [VMR_BARRIER_MEMBARRIER]
 *     4. check: R write-locked over an overlapping range -> release,
 *        -EBUSY (ABORT); else R detached -> release, -EAGAIN (MISS: look
 *        up again).  In this order: see region_check().
 *   read unlock: exchange the word to the next free generation; if WAITER
 *     was set, wake the writer.
 *   write lock  (space lock held for write):
 *     a. mark: each region meeting the range gets write_start/write_end
 *        (extended to cover earlier marks of this hold) and then
 *        write_seq = the space lock's odd seq;
 *     b. barrier: a full fence [FENCE], or membarrier(PRIVATE_EXPEDITED)
 *        [MEMBARRIER], which runs a full barrier on every CPU that runs a
 *        thread of the process;
 *     c. scan: for each PUB slot whose range overlaps, set WAITER and sleep
 *        until the slot's generation moves on.
 *   write unlock: the space lock's seq becomes even; no mark matches it.
 *
 * Why a fault and a writer cannot both go ahead (Dekker): the fault stores
 * its slot then loads the marks (3-4), the writer stores the marks then
 * loads the slots (a-c), with a full barrier between on both sides (the
 * publish RMW and the writer's fence are seq_cst; with membarrier, the
 * barrier runs on the fault's CPU between any two of its instructions).
 * So either the fault's load sees the mark and it backs off, or the
 * writer's scan sees the published slot and waits for it.  A slot the
 * writer sees with stale contents (a reader between claim and publish, or
 * one reusing the slot) belongs to a fault whose check comes after the
 * writer's marks, so skipping it is safe, and waiting for it is merely
 * early.  The writer waits for the hold it saw (its generation), not for
 * later holds of the same slot: those were checked against its marks.
 *
 * Detach: an update publishes its new tree version first and marks the
 * regions it replaced detached after it, so a fault that sees detached
 * looks up again and finds the new version (no MISS loop).  A detached
 * region is freed only after a grace period (no lookup can return it) in
 * which no published slot holds it (lib/region.c).
 *
 * Progress: a read lock never waits; it fails and the fault falls back to
 * the space lock, whose write holder is the writer, so new faults cannot
 * starve a writer.  MISS retries are bounded.  The writer's wait ends
 * when the faults it found release their locks.
 *
 * Measured (build/tests/bench/bench_lock, defaults: 5 interleaved runs of
 * 200 ms, medians; 2-vCPU VM, 2026-11-23).  Lock + unlock of one page,
 * million ops/s:
 *
 *                     shared region        disjoint regions
 *                     1 thread  2 threads  1 thread  2 threads
 *   vmr (fence)         31.6      65.6       40.6      77.1
 *   vmr (membarrier)    39.2      70.7
 *   refcount (kernel)   39.2      34.6
 *   ck_rwlock/region    43.1      32.6
 *   global rwlock       39.7      24.6
 *
 * One thread pays for three locked instructions (claim, publish, release)
 * where a counter pays two: 0.6-0.8x the baselines.  Two threads in one
 * region: 2.08x our own one-thread figure and 1.9x the refcount, whose
 * shared line halves its throughput.  The membarrier barrier saves one
 * locked instruction per fault but makes each writer 5-8x slower (a
 * membarrier() per write lock: 0.3 M vs 0.06 M map/protect/unmap per
 * second) and interrupts every reader's CPU, which cost the readers more
 * than it saved them (0.36-0.44x of their no-writer throughput, against
 * 0.67-0.78x with the fence).  So the fence is the default.
 */

/* liburcu's inline read side for the default flavor (LGPL, as we are). */
#define _LGPL_SOURCE
#include <urcu/urcu-memb.h>

#include "mm.h"
#include "futex.h"

#include <errno.h>
#include <linux/membarrier.h>
#include <urcu/flavor.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#define SLOT_BUSY 0x1u
#define SLOT_PUB 0x2u
#define SLOT_WAITER 0x4u
#define SLOT_GEN 0x8u /* one generation */
#define SLOT_FLAGS (SLOT_GEN - 1)

#define SLOT_PROBES 8
#define MISS_MAX 8
#define DEFAULT_SLOTS 1024u
#define MAX_SLOTS (1u << 20)

struct vmr_slot {
	_Atomic uint32_t word;
	_Atomic(const struct vmr_region *) region;
	_Atomic uintptr_t start;
	_Atomic uintptr_t end;
} __attribute__((aligned(VMR_CACHELINE)));

static _Atomic uint32_t next_thread_index;
static _Thread_local uint32_t thread_index_plus1;

/* The calling thread's home slot index: consecutive threads, distinct slots. */
static inline uint32_t thread_index(void)
{
	uint32_t i = thread_index_plus1;

	if (vmr_unlikely(!i)) {
		i = atomic_fetch_add_explicit(&next_thread_index, 1,
					      memory_order_relaxed) + 1;
		thread_index_plus1 = i;
	}
	return i - 1;
}

static long sys_membarrier(int cmd)
{
	return syscall(__NR_membarrier, cmd, 0, 0);
}

int vmr_slots_init(struct vmr_slot_table *table, unsigned int nr,
		   enum vmr_reader_barrier barrier)
{
	uint32_t n = 1;

	if (nr == 0)
		nr = DEFAULT_SLOTS;
	if (nr > MAX_SLOTS)
		return -EINVAL;
	while (n < nr)
		n <<= 1;
	table->membarrier = barrier == VMR_BARRIER_MEMBARRIER;
	if (table->membarrier) {
		long cmds = sys_membarrier(MEMBARRIER_CMD_QUERY);

		if (cmds < 0 ||
		    !(cmds & MEMBARRIER_CMD_PRIVATE_EXPEDITED) ||
		    sys_membarrier(MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED))
			return -ENOSYS;
	}
	if (vmr_alloc_injected_failure() ||
	    posix_memalign((void **)&table->slots, VMR_CACHELINE,
			   n * sizeof(*table->slots)))
		return -ENOMEM;
	memset(table->slots, 0, n * sizeof(*table->slots));
	table->mask = n - 1;
	return 0;
}

void vmr_slots_fini(struct vmr_slot_table *table)
{
	free(table->slots);
	table->slots = NULL;
}

bool vmr_slots_busy(const struct vmr_slot_table *table)
{
	for (uint32_t i = 0; i <= table->mask; i++)
		if (atomic_load(&table->slots[i].word) & SLOT_BUSY)
			return true;
	return false;
}

bool vmr_slots_hold(const struct vmr_slot_table *table,
		    const struct vmr_region *region)
{
	for (uint32_t i = 0; i <= table->mask; i++) {
		struct vmr_slot *s = &table->slots[i];

		if ((atomic_load(&s->word) & SLOT_PUB) &&
		    atomic_load_explicit(&s->region, memory_order_relaxed) ==
			    region)
			return true;
	}
	return false;
}

size_t vmr_slots_held(const struct vmr_slot_table *table,
		      const struct vmr_region **out, size_t max)
{
	size_t n = 0;

	for (uint32_t i = 0; i <= table->mask; i++) {
		struct vmr_slot *s = &table->slots[i];

		if (!(atomic_load(&s->word) & SLOT_PUB))
			continue;
		if (n == max)
			return max + 1;
		out[n++] = atomic_load_explicit(&s->region,
						memory_order_relaxed);
	}
	return n;
}

/* ---- read side --------------------------------------------------------- */

/* Release a slot claimed when its word was @free. */
static inline void slot_release(struct vmr_slot *s, uint32_t free)
{
	/* Pairs with the acquire of a writer re-reading the word. */
	uint32_t old = atomic_exchange_explicit(&s->word, free + SLOT_GEN,
						memory_order_release);

	if (vmr_unlikely(old & SLOT_WAITER))
		vmr_futex_wake(&s->word, INT_MAX);
}

/*
 * Step 4: may the fault keep its lock on @r over [start, end)?  The mark is
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

/* Steps 1-4 for region @r over [start, end). */
static int slot_lock(struct vmr_space *space, struct vmr_region *r,
		     uintptr_t start, uintptr_t end,
		     struct vmr_range_lock *lock)
{
	struct vmr_slot_table *t = &space->slots;
	uint32_t home = thread_index(), claim, v;
	struct vmr_slot *s;
	int ret;

	claim = t->membarrier ? SLOT_BUSY | SLOT_PUB : SLOT_BUSY;
	for (unsigned int i = 0; i < SLOT_PROBES; i++) {
		s = &t->slots[(home + i) & t->mask];
		v = atomic_load_explicit(&s->word, memory_order_relaxed);
		if (v & SLOT_BUSY)
			continue;
		if (!atomic_compare_exchange_strong_explicit(
			    &s->word, &v, v | claim, memory_order_acquire,
			    memory_order_relaxed))
			continue;
		atomic_store_explicit(&s->region, r, memory_order_relaxed);
		atomic_store_explicit(&s->start, start, memory_order_relaxed);
		atomic_store_explicit(&s->end, end, memory_order_relaxed);
		if (t->membarrier)
			/* The writer's membarrier() orders us. */
			atomic_signal_fence(memory_order_seq_cst);
		else
			/* Pairs with the fence in vmr_range_drain(). */
			atomic_fetch_or_explicit(&s->word, SLOT_PUB,
						 memory_order_seq_cst);
		ret = region_check(space, r, start, end);
		if (ret) {
			slot_release(s, v);
			return ret;
		}
		lock->region = r;
		lock->start = start;
		lock->end = end;
		lock->slot = s;
		lock->seq = v;
		return 0;
	}
	return -EBUSY;
}

/*
 * The fault path's read-side critical section: liburcu's inline fast path
 * for the default flavor (a thread-local counter), the flavor's calls
 * otherwise.  Two indirect calls into liburcu cost about a quarter of an
 * uncontended read lock.
 */
static inline void fault_rcu_lock(const struct vmr_space *space)
{
	if (vmr_likely(space->flavor == &urcu_memb_flavor))
		urcu_memb_read_lock();
	else
		space->flavor->read_lock();
}

static inline void fault_rcu_unlock(const struct vmr_space *space)
{
	if (vmr_likely(space->flavor == &urcu_memb_flavor))
		urcu_memb_read_unlock();
	else
		space->flavor->read_unlock();
}

int vmr_range_read_lock_counted(struct vmr_space *space, uintptr_t addr,
				size_t len, struct vmr_range_lock *lock,
				unsigned int *misses)
{
	uintptr_t start, end, last;
	struct vmr_region *r;
	unsigned int tries;
	int ret = -EAGAIN;

	if (vmr_unlikely(!space || !lock))
		return -EINVAL;
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
		if (space->granularity == VMR_LOCK_REGION)
			ret = slot_lock(space, r, r->start, r->end, lock);
		else
			ret = slot_lock(space, r, start, end, lock);
		if (ret != -EAGAIN)
			break;
		if (misses)
			(*misses)++;
	}
	fault_rcu_unlock(space);
	return ret;
}

int vmr_range_read_lock(struct vmr_space *space, uintptr_t addr, size_t len,
			struct vmr_range_lock *lock)
{
	return vmr_range_read_lock_counted(space, addr, len, lock, NULL);
}

int vmr_range_read_unlock(struct vmr_range_lock *lock)
{
	struct vmr_slot *s;
	uint32_t w;

	if (!lock || !lock->slot)
		return lock ? vmr_misuse("range read unlock of a lock not held") :
			      -EINVAL;
	s = lock->slot;
	w = atomic_load_explicit(&s->word, memory_order_relaxed);
	if ((w & ~SLOT_WAITER) != (lock->seq | SLOT_BUSY | SLOT_PUB))
		return vmr_misuse("range read unlock of a lock released already");
	lock->slot = NULL;
	slot_release(s, lock->seq);
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

/* Sleep until the hold of @s seen as word @v has ended. */
static void slot_wait(struct vmr_slot *s, uint32_t v)
{
	uint32_t gen = v & ~SLOT_FLAGS;

	for (;;) {
		if (!(v & SLOT_WAITER)) {
			if (!atomic_compare_exchange_weak_explicit(
				    &s->word, &v, v | SLOT_WAITER,
				    memory_order_relaxed,
				    memory_order_relaxed)) {
				if ((v & ~SLOT_FLAGS) != gen || !(v & SLOT_PUB))
					return;
				continue;
			}
			v |= SLOT_WAITER;
		}
		vmr_futex_wait(&s->word, v);
		/* Pairs with the release in slot_release(). */
		v = atomic_load_explicit(&s->word, memory_order_acquire);
		if ((v & ~SLOT_FLAGS) != gen || !(v & SLOT_PUB))
			return;
	}
}

void vmr_range_drain(struct vmr_space *space, uintptr_t start, uintptr_t end)
{
	struct vmr_slot_table *t = &space->slots;

	if (t->membarrier) {
		if (sys_membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED))
			vmr_die("membarrier failed after registration");
	} else {
		/* Pairs with the publishing fetch_or in slot_lock(). */
		atomic_thread_fence(memory_order_seq_cst);
	}
	for (uint32_t i = 0; i <= t->mask; i++) {
		struct vmr_slot *s = &t->slots[i];
		uint32_t v = atomic_load(&s->word);

		if (!(v & SLOT_PUB))
			continue;
		if (!vmr_ranges_overlap(start, end,
					atomic_load_explicit(
						&s->start, memory_order_relaxed),
					atomic_load_explicit(
						&s->end, memory_order_relaxed)))
			continue;
		slot_wait(s, v);
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
		return vmr_misuse("range write lock without the space write lock");
	vmr_range_write_lock_held(space, start, end);
	return 0;
}
