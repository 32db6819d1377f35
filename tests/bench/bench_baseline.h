/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Per-region baseline locks of the benchmarks (bench_lock, bench_scenarios),
 * written from their sources, kept in a side table of cache-line-sized
 * entries (one per region, found through the region's private data):
 *
 *   refcount  the kernel's vm_refcnt (vma_start_read() since 6.15): a
 *             reader increments the region's counter unless it is 0
 *             (detached) or has the writer bit (VMA_LOCK_OFFSET), and
 *             decrements it to unlock; a writer adds the bit and waits for
 *             the readers to drain;
 *   ck        a Concurrency Kit ck_rwlock_t per region.
 *
 * The third baseline, one global pthread_rwlock_t (mmap_lock before per-VMA
 * locks), is bench_rwlock_init() of bench.h.  Header-only: the read paths
 * are inline, as the kernel's and ck's are.
 */
#ifndef VMR_BENCH_BASELINE_H
#define VMR_BENCH_BASELINE_H

#include <ck_rwlock.h>

#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

/* refcount: the writer bit (the kernel's VMA_LOCK_OFFSET). */
#define BENCH_REF_WRITER 0x40000000u

/* Per-region state of the refcount and ck baselines. */
struct bench_side {
	_Atomic uint32_t refcnt; /* 0 detached, 1 + readers, | REF_WRITER */
	ck_rwlock_t ck;
} __attribute__((aligned(64)));

/* An attached region's state (refcount 1, ck unlocked). */
static inline void bench_side_init(struct bench_side *s, bool attached)
{
	atomic_init(&s->refcnt, attached ? 1 : 0);
	ck_rwlock_init(&s->ck);
}

/*
 * vma_start_read()'s __refcount_inc_not_zero_limited_acquire(): no reader
 * gets in while the region is detached (0) or write-locked.  Call it under
 * the RCU read lock of the lookup that found the region.  True if held.
 */
static inline bool bench_refcount_read_trylock(struct bench_side *s)
{
	uint32_t v = atomic_load_explicit(&s->refcnt, memory_order_relaxed);
	bool held;

	do {
		held = v && !(v & BENCH_REF_WRITER);
		/* Acquire: pairs with the writer's release. */
	} while (held && !atomic_compare_exchange_weak_explicit(
				 &s->refcnt, &v, v + 1, memory_order_acquire,
				 memory_order_relaxed));
	return held;
}

static inline void bench_refcount_read_unlock(struct bench_side *s)
{
	/* Release: pairs with the writer's drain. */
	atomic_fetch_sub_explicit(&s->refcnt, 1, memory_order_release);
}

/* A new region: attached and write-locked before publication. */
static inline void bench_refcount_write_lock_new(struct bench_side *s)
{
	atomic_store_explicit(&s->refcnt, BENCH_REF_WRITER | 1,
			      memory_order_relaxed);
}

/* vma_start_write(): set the writer bit, wait for the readers to drain. */
static inline void bench_refcount_write_lock(struct bench_side *s)
{
	atomic_fetch_add_explicit(&s->refcnt, BENCH_REF_WRITER,
				  memory_order_seq_cst);
	/* Acquire: pairs with the readers' release decrements. */
	while (atomic_load_explicit(&s->refcnt, memory_order_acquire) !=
	       (BENCH_REF_WRITER | 1))
		sched_yield();
}

/* End the write hold; @detach leaves the region detached (unmapped). */
static inline void bench_refcount_write_unlock(struct bench_side *s,
					       bool detach)
{
	/* Release: pairs with the readers' acquire CAS. */
	if (detach)
		atomic_store_explicit(&s->refcnt, 0, memory_order_release);
	else
		atomic_fetch_sub_explicit(&s->refcnt, BENCH_REF_WRITER,
					  memory_order_release);
}

#endif /* VMR_BENCH_BASELINE_H */
