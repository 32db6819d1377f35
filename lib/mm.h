/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * libvmaretry - the address space's internal layout, shared by space.c
 * (life cycle), spacelock.c (the space lock), rangelock.c (VMA-range
 * locks), region.c (region objects) and map.c (map, unmap, protect).
 */
#ifndef VMR_MM_H
#define VMR_MM_H

#include "internal.h"

#include <pthread.h>
#include <stdatomic.h>
#include <urcu/call-rcu.h>

#define VMR_CACHELINE 64

/*
 * The space lock (mmap_lock), lib/spacelock.c.  @seq is read by every
 * fault's range lock and written only when a writer comes and goes, so it
 * has a line to itself; @state is written by every holder.
 */
struct vmr_space_lock {
	_Atomic uint64_t seq __attribute__((aligned(VMR_CACHELINE)));
	_Atomic uint32_t state __attribute__((aligned(VMR_CACHELINE)));
	_Atomic uint32_t drain;
	_Atomic(const void *) owner;
	pthread_mutex_t writers;
};

int vmr_space_lock_init(struct vmr_space_lock *lock);
void vmr_space_lock_fini(struct vmr_space_lock *lock);
/* Nobody holds it or sleeps on it. */
bool vmr_space_lock_is_idle(struct vmr_space_lock *lock);
/* The calling thread holds it for write. */
bool vmr_space_lock_is_owner(const struct vmr_space_lock *lock);

/* A token unique to the calling thread while it lives. */
const void *vmr_thread_self(void);

/* The reader-slot table of the VMA-range lock, lib/rangelock.c. */
struct vmr_slot;
struct vmr_slot_table {
	struct vmr_slot *slots;
	uint32_t mask;
	bool membarrier;
};

int vmr_slots_init(struct vmr_slot_table *table, unsigned int nr,
		   enum vmr_reader_barrier barrier);
void vmr_slots_fini(struct vmr_slot_table *table);
/* Some read lock is held (or being taken). */
bool vmr_slots_busy(const struct vmr_slot_table *table);
/* Some held read lock holds @region. */
bool vmr_slots_hold(const struct vmr_slot_table *table,
		    const struct vmr_region *region);
/*
 * Store the regions held by published read locks in @out (up to @max, with
 * repeats); return how many, or @max + 1 if there were more.
 */
size_t vmr_slots_held(const struct vmr_slot_table *table,
		      const struct vmr_region **out, size_t max);

struct vmr_region {
	/* Immutable once published. */
	uintptr_t start;
	uintptr_t end;
	uint64_t offset;
	unsigned int prot;
	struct vmr_space *space;
	struct vmr_region_ops ops;
	void *private_data;
	/*
	 * Write-lock state (vm_lock_seq): the region is write-locked over
	 * [write_start, write_end) while write_seq equals the space lock's
	 * (odd) seq.  Written under the space write lock, read by faults.
	 */
	_Atomic uint64_t write_seq __attribute__((aligned(VMR_CACHELINE)));
	_Atomic uintptr_t write_start;
	_Atomic uintptr_t write_end;
	_Atomic bool detached;
	struct vmr_region *retire_next; /* batch of retired regions */
	struct rcu_head rcu;
};

struct vmr_space {
	/* Read by every fault; written only at creation. */
	struct vmr_tree *tree;
	const struct rcu_flavor_struct *flavor;
	uintptr_t page_mask; /* page_size - 1 */
	enum vmr_lock_granularity granularity;
	struct vmr_slot_table slots;
	/* Regions detached and not yet closed. */
	_Atomic long zombies __attribute__((aligned(VMR_CACHELINE)));
	struct vmr_space_lock lock;
};

static inline bool vmr_ranges_overlap(uintptr_t s1, uintptr_t e1, uintptr_t s2,
				      uintptr_t e2)
{
	return s1 < e2 && s2 < e1;
}

/* Write-lock state, lib/rangelock.c; the space lock is held for write. */

/* Mark [start, end) of @region (all of it under VMR_LOCK_REGION). */
void vmr_region_mark(struct vmr_space *space, struct vmr_region *region,
		     uintptr_t start, uintptr_t end);
/* Wait for the read locks held over ranges meeting [start, end). */
void vmr_range_drain(struct vmr_space *space, uintptr_t start, uintptr_t end);
/* Mark every region meeting [start, end), then drain: vma_start_write(). */
void vmr_range_write_lock_held(struct vmr_space *space, uintptr_t start,
			       uintptr_t end);

/*
 * vmr_range_read_lock() with a count of the lookups retried because the
 * region was detached under them (the kernel's VMA_LOCK_MISS).
 */
int vmr_range_read_lock_counted(struct vmr_space *space, uintptr_t addr,
				size_t len, struct vmr_range_lock *lock,
				unsigned int *misses);

/* Region objects, lib/region.c. */

/* A new region, detached, not yet published; NULL if out of memory. */
struct vmr_region *vmr_region_alloc(struct vmr_space *space);
/* The piece [start, end) of @from, announced to @from's open(). */
struct vmr_region *vmr_region_cut(const struct vmr_region *from,
				  uintptr_t start, uintptr_t end);
/* Free a region that was never published, after its close(). */
void vmr_region_discard(struct vmr_region *region);
/*
 * Retirement batches: detach each region added, then, once nothing reaches
 * them any more, close and free them (one grace period and one slot scan
 * per batch, not per region).
 */
struct vmr_retire_batch {
	struct vmr_space *space;
	struct vmr_region *head;
	long count;
};

void vmr_retire_init(struct vmr_retire_batch *batch, struct vmr_space *space);
/* Mark @region detached; it must already be out of the published tree. */
void vmr_retire_add(struct vmr_retire_batch *batch, struct vmr_region *region);
/* Hand the batch to call_rcu(). */
void vmr_retire_submit(struct vmr_retire_batch *batch);

#endif /* VMR_MM_H */
