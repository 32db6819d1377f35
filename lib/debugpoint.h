/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * libvmaretry - debug points: named places in the lock, tree, engine and
 * uffd runtime where a test can run code of its own.
 *
 * Built with -Ddebug_points=true (VMR_DEBUG_POINTS), each point calls the
 * hook installed with vmr_debug_set(), if any.  Tests use it two ways:
 *
 *   - yield injection (vmr_debug_yield()): at random points, a random
 *     sched_yield() or short sleep, so that the interleavings a stress run
 *     explores are not only those a quiet scheduler produces (liburcu's
 *     DEBUG_YIELD does the same for its read side and grace periods);
 *   - race injection: a hook that, at one point and for one address,
 *     starts an munmap(), mremap(), madvise() or fork() on another thread,
 *     to land an event exactly between two steps of a fault.
 *
 * Built without it (the default), VMR_DEBUG_POINT() is nothing: the hot
 * paths carry no load and no branch for it, and vmr_debug_points_built()
 * tells a test to skip.
 *
 * A hook runs on the thread that reached the point, with whatever that
 * thread holds there (see each point), so it must not wait for anything
 * that waits for the holder.  Points marked RCU are inside a read-side
 * critical section: no synchronize_rcu() or rcu_barrier() there.
 */
#ifndef VMR_DEBUGPOINT_H
#define VMR_DEBUGPOINT_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

enum vmr_debug_point {
	/* Tree writer (tree lock held): the new version is built, before it
	 * is published. */
	VMR_DP_TREE_PUBLISH,
	/* Tree writer (tree lock held): published, before the replaced
	 * nodes are queued for recycling. */
	VMR_DP_TREE_RETIRE,
	/* Tree reader (RCU): between two levels of a lookup. */
	VMR_DP_TREE_DESCEND,
	/* Range read lock (RCU): region found, before the state is
	 * published. */
	VMR_DP_RANGE_LOOKUP,
	/* Range read lock (RCU): state published, before the region check. */
	VMR_DP_RANGE_CHECK,
	/* Range read unlock: before the state is released. */
	VMR_DP_RANGE_UNLOCK,
	/* Range write lock (space write lock held): marks stored, before
	 * the drain scans the states. */
	VMR_DP_RANGE_MARK,
	/* Space update (space write lock held): the new tree version is
	 * published, before the replaced regions are marked detached. */
	VMR_DP_SPACE_DETACH,
	/* Engine: the fault's lock is held, before the handler runs. */
	VMR_DP_FAULT_LOCKED,
	/* Engine: between two attempts of a fault (no lock held). */
	VMR_DP_FAULT_RETRY,
	/* Page wait: the page is locked by someone else, before sleeping
	 * (the fault's lock already dropped when it must be); the address
	 * given is the page's index in its page map. */
	VMR_DP_PAGE_WAIT,
	/* Page unlock: the lock bit is cleared, before the wake (index). */
	VMR_DP_PAGE_UNLOCK,
	/* uffd handler thread: a page-fault message is read, before the
	 * fault is handled (nothing held). */
	VMR_DP_UFFD_FAULT,
	/* uffd fault handler: page locked, just before the store read (the
	 * fault's lock already dropped for the I/O when the policy says). */
	VMR_DP_UFFD_READ,
	/* uffd fault handler: the page is read and the fault's lock held,
	 * before the installing ioctl. */
	VMR_DP_UFFD_RESOLVE,
	/* uffd fault handler: the install goes ahead (every event read so
	 * far is applied and, with several handler threads and events, no
	 * read() of messages can start), just before the installing ioctl. */
	VMR_DP_UFFD_INSTALL,
	/* uffd handler thread: before a non-cooperative event is applied. */
	VMR_DP_UFFD_EVENT,
	VMR_DEBUG_POINTS_NR
};

/* What a hook gets: the point, the address it concerns (0 if none), and
 * the argument given to vmr_debug_set(). */
typedef void vmr_debug_fn(enum vmr_debug_point point, uintptr_t addr,
			  void *arg);

/* True if the library was built with debug points. */
bool vmr_debug_points_built(void);

/* The name of @point ("uffd_read"), for messages. */
const char *vmr_debug_point_name(enum vmr_debug_point point);

/*
 * Install @fn (NULL removes it).  A thread that is running the previous
 * hook may still finish it after this returns; swap hooks only while
 * that cannot matter (between test phases).  -ENOSYS if not built.
 */
int vmr_debug_set(vmr_debug_fn *fn, void *arg);

/*
 * Install the yield injector: at each point whose bit is set in @mask
 * (1u << point), one time in @one_in, a sched_yield(), or one time in four
 * of those a sleep of up to @max_sleep_us microseconds.  The choices come
 * from a per-thread generator seeded from @seed, so a seed names a run's
 * schedule as far as the scheduler lets it.  -ENOSYS if not built,
 * -EINVAL if @one_in is 0.
 */
int vmr_debug_yield(uint32_t mask, unsigned int one_in,
		    unsigned int max_sleep_us, uint64_t seed);

#ifdef VMR_DEBUG_POINTS
extern _Atomic(vmr_debug_fn *) vmr_debug_hook;
void vmr_debug_call(vmr_debug_fn *fn, enum vmr_debug_point point,
		    uintptr_t addr);

#define VMR_DEBUG_POINT(point, addr)                                          \
	do {                                                                  \
		vmr_debug_fn *dp_fn_ = atomic_load_explicit(                   \
			&vmr_debug_hook, memory_order_acquire);               \
		if (dp_fn_)                                                   \
			vmr_debug_call(dp_fn_, (point), (uintptr_t)(addr));   \
	} while (0)
#else
#define VMR_DEBUG_POINT(point, addr) ((void)0)
#endif

#endif /* VMR_DEBUGPOINT_H */
