/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * libvmaretry - the VMA-range lock: what a fault holds on the region (or the
 * pages of it) it handles, and what a writer takes over the range it changes.
 *
 * The read side is the kernel's lock_vma_under_rcu() / vma_end_read(): a
 * lookup under RCU, a read lock that never waits, and a fallback to the
 * space lock when it cannot be had.  Unlike the kernel's per-VMA reference
 * count, it writes no memory that other faults write: faults in one region
 * do not share a cache line.  The write side is vma_start_write(): taken
 * with the space lock held for write, it waits for the faults whose held
 * range overlaps its own, and every one of them is released together when
 * the space lock's write hold ends (vma_end_write_all()).
 *
 * What a read lock covers is the space's granularity: the whole region
 * (VMR_LOCK_REGION, the kernel's) or only the pages asked for
 * (VMR_LOCK_RANGE), in which case writers that change other pages of the
 * same region neither wait for the fault nor make it fail.
 */
#ifndef VMARETRY_RANGELOCK_H
#define VMARETRY_RANGELOCK_H

#include <vmaretry/space.h>

VMR_BEGIN_DECLS

/**
 * struct vmr_range_lock - a held VMA-range read lock
 * @region: the region held: mapped when the lock was taken, and valid until
 *          vmr_range_read_unlock() even if an update detaches it meanwhile
 * @start: first address held (page-aligned)
 * @end: first address after the range held
 *
 * Lives on the caller's stack (or in its fault descriptor) while held; its
 * other fields are private.  Size pinned by the tests: part of the ABI.
 */
struct vmr_range_lock {
	struct vmr_region *region;
	uintptr_t start;
	uintptr_t end;
	/* private: */
	void *slot;
	uint32_t seq;
	uint32_t reserved32;
	uintptr_t reserved[2];
};

/**
 * vmr_range_read_lock() - find and read-lock the region of a fault
 *                         (lock_vma_under_rcu())
 * @space: the space
 * @addr: the faulting address
 * @len: bytes from @addr the fault will touch (0 means 1); under
 *       VMR_LOCK_RANGE the lock covers the pages of [@addr, @addr + @len)
 * @lock: filled in on success
 *
 * Under an RCU read-side critical section it takes itself, looks @addr up,
 * publishes the range it holds, then re-checks that the region is still
 * attached and that no writer holds an overlapping range.  It never waits.
 * A region detached between the lookup and the lock is the kernel's MISS:
 * the lookup is retried (up to a bound, past which -EAGAIN is returned).
 *
 * Context: a thread registered with the space's flavor, not inside a
 * read-side critical section of it (nesting is fine for flavors that
 * allow it).  Never sleeps.
 * Concurrency: any number of faults, writers and updates.
 * Ordering: acquire: the holder sees everything the update that mapped the
 * region published.
 * Ownership: the region stays valid until the unlock.
 * Return: 0 and @lock filled; -ENOENT if no region contains all of
 * [@addr, @addr + @len) (the kernel's ABORT for a failed walk); -EBUSY if a
 * writer holds an overlapping range, the calling thread holds a VMA-range
 * read lock in the space already (one per thread and space; a hold of the
 * space lock does not count), or no reader state could be had for it
 * (ABORT: fall back to the space lock); -EAGAIN if
 * the region kept being replaced (MISS, past the bound); -EINVAL if @space
 * or @lock is NULL or the range wraps.  On error nothing is held.
 */
int vmr_range_read_lock(struct vmr_space *space, uintptr_t addr, size_t len,
			struct vmr_range_lock *lock);

/**
 * vmr_range_read_unlock() - release a read lock (vma_end_read())
 * @lock: the lock taken by vmr_range_read_lock()
 *
 * Wakes a writer that waits for it.
 *
 * Context: any thread (the lock is not owned by the thread that took it).
 * Never sleeps.
 * Ordering: release: a writer that waited for this lock sees every store
 * the holder made.
 * Return: 0; -EINVAL if @lock is NULL; -EPERM if it is not held or was
 * released already (a debug build aborts instead).
 */
int vmr_range_read_unlock(struct vmr_range_lock *lock);

/**
 * vmr_range_write_lock() - write-lock an address range (vma_start_write())
 * @space: the space
 * @start: first address, page-aligned
 * @end: first address after the range, page-aligned, above @start
 *
 * Marks [@start, @end) write-locked in every region it meets (the whole of
 * each region under VMR_LOCK_REGION), then waits until every fault read
 * lock held over an overlapping range is released.  From the mark on, read
 * locks over an overlapping range fail with -EBUSY, so their faults fall
 * back to the space lock, which the caller holds: a stream of new faults
 * cannot starve the writer.  Faults elsewhere, in the same region included
 * under VMR_LOCK_RANGE, go on unhindered.  The lock is held until the
 * caller's write hold of the space lock ends; there is no unlock of its
 * own.  Locking a range again, or a range with no region in it, is allowed.
 *
 * Context: the thread holding the space lock for write, and no read lock
 * over an overlapping range (it would wait for itself forever).  May sleep.
 * Ordering: acquire: the caller sees every store of the faults it waited
 * for.
 * Return: 0; -EINVAL if @space is NULL or the range is empty, unaligned or
 * inverted; -EPERM if the caller does not hold the space lock for write (a
 * debug build aborts instead).
 */
int vmr_range_write_lock(struct vmr_space *space, uintptr_t start,
			 uintptr_t end);

VMR_END_DECLS

#endif /* VMARETRY_RANGELOCK_H */
