/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * libvmaretry - the address space's internal layout, shared by space.c
 * (life cycle), spacelock.c (the space lock), rangelock.c (VMA-range
 * locks), region.c (region objects) and map.c (map, unmap, protect).
 */
#ifndef VMR_MM_H
#define VMR_MM_H

#include "internal.h"

#include <vmaretry/stats.h>
#include <vmaretry/pagewait.h>

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
	/* Writers queue in ticket order (FIFO, as rwsem waiters do). */
	_Atomic uint32_t next_ticket;
	_Atomic uint32_t serving;
};

int vmr_space_lock_init(struct vmr_space_lock *lock);
void vmr_space_lock_fini(struct vmr_space_lock *lock);
/* Nobody holds it or sleeps on it. */
bool vmr_space_lock_is_idle(struct vmr_space_lock *lock);
/* The calling thread holds it for write. */
bool vmr_space_lock_is_owner(const struct vmr_space_lock *lock);

/* A token unique to the calling thread while it lives. */
const void *vmr_thread_self(void);

/*
 * A thread's state in one space (lib/thread.c): its VMA-range read lock
 * (lib/rangelock.c) and its counters (lib/stats.c).  Written on the fast
 * path only by its thread; read by writers scanning for readers and by
 * vmr_space_stats().
 */
#define VMR_NR_COUNTERS (sizeof(struct vmr_stats) / sizeof(uint64_t))
#define VMR_STAT(field) (offsetof(struct vmr_stats, field) / sizeof(uint64_t))

struct vmr_thread;

struct vmr_tstate {
	_Atomic uint32_t word;  /* HELD, WAITER, generation */
	_Atomic uint32_t waiter; /* lean unlock: a writer sleeps on word */
	_Atomic(const struct vmr_region *) region;
	_Atomic uintptr_t start;
	_Atomic uintptr_t end;
	_Atomic(struct vmr_thread *) owner; /* NULL: orphan, adoptable */
	/* Faults that ended on the fine-grained lock with result 0 and no
	 * TRIED: both vma_lock_success and result_ok, counted once, here in
	 * the line the fault writes anyway (lib/stats.c adds it to both). */
	_Atomic uint64_t fast_faults;
	_Atomic uint64_t count[VMR_NR_COUNTERS]
		__attribute__((aligned(VMR_CACHELINE)));
} __attribute__((aligned(VMR_CACHELINE)));

#define VMR_TSTATE_CHUNK 64u
#define VMR_TSTATE_MAX (VMR_TSTATE_CHUNK * 1024u)

struct vmr_tstate_table {
	_Atomic uint32_t nr;  /* published tstates; only grows */
	pthread_mutex_t lock; /* serialises claims */
	struct vmr_tstate *chunks[VMR_TSTATE_MAX / VMR_TSTATE_CHUNK];
};

int vmr_tstates_init(struct vmr_tstate_table *table);
void vmr_tstates_fini(struct vmr_space *space);
struct vmr_tstate *vmr_tstate_at(const struct vmr_tstate_table *table,
				 uint32_t i);
/*
 * The tstate of the space the calling thread last looked one up in, so
 * that a thread faulting in one space finds its own with one compare.
 * Never stale: space ids are never reused, a space's teardown leaves no
 * other space with its id, and a thread's exit, which orphans its tstates,
 * clears it.
 */
struct vmr_tstate_hint {
	uint64_t space_id; /* 0: none */
	struct vmr_tstate *ts;
};
extern _Thread_local struct vmr_tstate_hint vmr_tstate_hint VMR_TLS_MODEL;

/* vmr_tstate_get() past the hint: the thread's cache, then its bindings. */
struct vmr_tstate *vmr_tstate_find(struct vmr_space *space);

uint64_t vmr_space_id_new(void);

/* Start fetching page @index's word of @map for a lock soon; @map may be
 * stale (nothing is read through it). */
void vmr_page_prefetch(struct vmr_pagemap *map, size_t index);

/* Add @n to a counter that only the calling thread writes (readers sum
 * with relaxed loads): a load and a store, no read-modify-write. */
static inline void vmr_count_add(_Atomic uint64_t *c, uint64_t n)
{
	atomic_store_explicit(
		c, atomic_load_explicit(c, memory_order_relaxed) + n,
		memory_order_relaxed);
}

/* Count @n more of counter @idx on the calling thread's own tstate. */
static inline void vmr_count(struct vmr_tstate *ts, size_t idx, uint64_t n)
{
	vmr_count_add(&ts->count[idx], n);
}

/* Count one event of @ns nanoseconds in histogram @hist (a VMR_STAT). */
void vmr_count_hist(struct vmr_tstate *ts, size_t hist, uint64_t ns);

/* Monotonic nanoseconds. */
uint64_t vmr_now_ns(void);

/* Some read lock of the space is held (or being taken). */
bool vmr_readers_busy(const struct vmr_space *space);
/* Some held read lock holds @region. */
bool vmr_readers_hold(const struct vmr_space *space,
		      const struct vmr_region *region);
/*
 * Store the regions held by read locks in @out (up to @max, with repeats);
 * return how many, or @max + 1 if there were more.
 */
size_t vmr_readers_held(const struct vmr_space *space,
			const struct vmr_region **out, size_t max);

struct vmr_region {
	/*
	 * First line: what every fault reads.  Bounds and protection are
	 * immutable once published; the write-lock state (vm_lock_seq) is
	 * written only under the space write lock, so faults that read it
	 * do not share a line that other faults write.  The region is write-
	 * locked over [write_start, write_end) while write_seq equals the
	 * space lock's (odd) seq.
	 */
	uintptr_t start;
	uintptr_t end;
	_Atomic uint64_t write_seq;
	_Atomic uintptr_t write_start;
	_Atomic uintptr_t write_end;
	_Atomic bool detached;
	unsigned int prot;
	unsigned int policy; /* enum vmr_retry_policy; 0: the space's */
	struct vmr_space *space;
	/* Second line: what the handler reads. */
	struct vmr_region_ops ops;
	void *private_data;
	uint64_t offset;
	struct vmr_region *retire_next; /* batch of retired regions */
	struct rcu_head rcu;
} __attribute__((aligned(VMR_CACHELINE)));

struct vmr_space {
	/* Read by every fault; written only at creation. */
	struct vmr_tree *tree;
	const struct rcu_flavor_struct *flavor;
	uint64_t id; /* unique among all spaces ever made */
	uintptr_t page_mask; /* page_size - 1 */
	enum vmr_lock_granularity granularity;
	bool membarrier; /* VMR_BARRIER_MEMBARRIER */
	bool lean_unlock; /* read unlock is a store; waiting writers
			   * use membarrier() (rangelock.c) */
	bool time_faults; /* VMR_SPACE_TIME_FAULTS */
	unsigned int policy; /* enum vmr_retry_policy, never DEFAULT */
	unsigned int vma_retry_max;
	unsigned int space_retry_max;
	_Atomic bool dying; /* vmr_space_shutdown() */
	/* Regions detached and not yet closed. */
	_Atomic long zombies __attribute__((aligned(VMR_CACHELINE)));
	struct vmr_space_lock lock;
	struct vmr_tstate_table tstates;
	/* vmr_space_stats_reset(): what the counters said then. */
	pthread_mutex_t stats_lock;
	uint64_t stats_base[VMR_NR_COUNTERS];
	/* Page maps whose waits vmr_space_shutdown() must end. */
	pthread_mutex_t maps_lock;
	struct vmr_pagemap *maps;
};

/* The calling thread's tstate in @space; NULL if out of memory or full. */
static inline struct vmr_tstate *vmr_tstate_get(struct vmr_space *sp)
{
	if (vmr_likely(vmr_tstate_hint.space_id == sp->id))
		return vmr_tstate_hint.ts;
	return vmr_tstate_find(sp);
}

/* Wake every waiter of every page map of @space (shutdown). */
void vmr_pagemaps_wake_all(struct vmr_space *space);
/* Forget @space in the page maps that outlive it. */
void vmr_pagemaps_detach_all(struct vmr_space *space);
/* Sleep until @index is unlocked (@take: and lock it); 0 or -EINTR. */
int vmr_page_wait(struct vmr_pagemap *map, size_t index, unsigned int flags,
		  bool take);
/* vmr_page_mark_uptodate() and vmr_page_unlock() in one step. */
int vmr_page_mark_uptodate_unlock(struct vmr_pagemap *map, size_t index);
/* Drop the page pin a fault holds, if any. */
void vmr_fault_unpin(struct vmr_fault *vmf);

static inline bool vmr_ranges_overlap(uintptr_t s1, uintptr_t e1, uintptr_t s2,
				      uintptr_t e2)
{
	return s1 < e2 && s2 < e1;
}

/* The VMR_FAULT_FLAG_* a caller may pass (VMA_LOCK is the engine's). */
#define VMR_FAULT_CALLER_FLAGS                                                 \
	(VMR_FAULT_FLAG_WRITE | VMR_FAULT_FLAG_ALLOW_RETRY |                  \
	 VMR_FAULT_FLAG_RETRY_NOWAIT | VMR_FAULT_FLAG_KILLABLE |              \
	 VMR_FAULT_FLAG_TRIED | VMR_FAULT_FLAG_USER |                         \
	 VMR_FAULT_FLAG_INSTRUCTION | VMR_FAULT_FLAG_INTERRUPTIBLE)

/* access_error(): may not this access (VMR_FAULT_FLAG_*) be made to @r? */
static inline bool vmr_access_error(const struct vmr_region *r,
				    unsigned int flags)
{
	if (flags & VMR_FAULT_FLAG_WRITE)
		return !(r->prot & VMR_PROT_WRITE);
	if (flags & VMR_FAULT_FLAG_INSTRUCTION)
		return !(r->prot & VMR_PROT_EXEC);
	return !(r->prot & (VMR_PROT_READ | VMR_PROT_WRITE | VMR_PROT_EXEC));
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
 * them any more, close and free them (one grace period and one scan of the
 * read locks per batch, not per region).
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
