/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * libvmaretry - never wait for malloc() while a fork() is in flight.
 *
 * The deadlock.  glibc's fork() takes malloc's locks (after the prepare
 * handlers of pthread_atfork(), before the system call) and holds them
 * until the system call returns.  With UFFD_FEATURE_EVENT_FORK that system
 * call waits until a handler thread of the runtime reads the FORK message.
 * A handler that calls malloc() or free() in between waits for the forking
 * thread, and so, through the order of events (uffd.c), does every other
 * handler: nobody reads the message.  It is not only the handlers: a
 * thread that holds a space's write lock (an update) and waits in malloc()
 * stops a handler that applies an event, the same way.
 *
 * The guard.  Every allocation and free of the library goes through
 * vmr_fork_enter()/vmr_fork_leave(), a Dekker pair with our prepare
 * handler:
 *
 *   allocator:  inside++ (seq_cst); if forking (seq_cst): inside--, refuse
 *   prepare:    forking++ (seq_cst); wait until inside == 0
 *
 * In the single total order of seq_cst operations either the allocator's
 * load sees forking (it refuses) or prepare's loads see inside > 0 (it
 * waits for the allocator to leave, and malloc's locks are free until
 * then, so the allocator's malloc() finishes).  So no thread inside the
 * guard ever waits for a fork's locks, and a thread refused does not call
 * malloc(): it takes memory from the pool (pool.c), or puts the block to
 * free on a list that the first thread let in later frees (at the latest
 * the forking thread itself, in the parent handler).  Work that must call
 * into glibc (pthread_create()) runs only inside the guard; a caller
 * refused tries again later (uffd.c starts a forked child's threads so).
 *
 * forking is raised by prepare and lowered by the parent and the child
 * handlers; while several forks overlap it stays raised.  The prepare
 * handler waits only for allocators inside the guard, which wait for no
 * fork: it returns.  An allocator refused is never blocked: it does not
 * retry in a loop.  Progress for the forking thread's peers is thus
 * unconditional, and glibc's own locking is untouched.
 *
 * Cost: two atomic read-modify-writes on one shared line per allocation
 * or free, on update paths only (a fault, a lookup, a lock never
 * allocate).
 *
 * In a forked child, the handler resets the counters (the child has one
 * thread) and drops the parent's deferred frees (freeing them would be
 * right, but nothing needs it).
 */
#include "internal.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>

struct deferred_free {
	struct deferred_free *next;
};

static _Atomic unsigned long forking;
static _Atomic unsigned long inside;
/* Blocks freed while refused; pushed by anyone, taken whole. */
static _Atomic(struct deferred_free *) deferred;

static void drain_deferred(void)
{
	/* Pairs with the release of the push in vmr_fork_defer_free(). */
	struct deferred_free *d =
		atomic_exchange_explicit(&deferred, NULL, memory_order_acquire);

	while (d) {
		struct deferred_free *next = d->next;

		free(d);
		d = next;
	}
}

bool vmr_fork_enter(void)
{
	if (atomic_load_explicit(&forking, memory_order_relaxed))
		return false;
	atomic_fetch_add(&inside, 1);
	/* Pairs with the seq_cst increment and loads of prepare(). */
	if (atomic_load(&forking)) {
		atomic_fetch_sub_explicit(&inside, 1, memory_order_release);
		return false;
	}
	return true;
}

void vmr_fork_leave(void)
{
	if (vmr_unlikely(atomic_load_explicit(&deferred,
					      memory_order_relaxed)))
		drain_deferred();
	atomic_fetch_sub_explicit(&inside, 1, memory_order_release);
}

void vmr_fork_defer_free(void *ptr)
{
	struct deferred_free *d = ptr;

	d->next = atomic_load_explicit(&deferred, memory_order_relaxed);
	while (!atomic_compare_exchange_weak_explicit(&deferred, &d->next, d,
						      memory_order_release,
						      memory_order_relaxed))
		;
}

static void prepare(void)
{
	atomic_fetch_add(&forking, 1);
	/* Pairs with the increment and load of vmr_fork_enter(). */
	while (atomic_load(&inside))
		sched_yield();
}

static void parent(void)
{
	atomic_fetch_sub(&forking, 1);
	/* glibc has let go of malloc's locks: free what waited. */
	if (atomic_load_explicit(&deferred, memory_order_relaxed) &&
	    vmr_fork_enter())
		vmr_fork_leave();
}

static void child(void)
{
	atomic_store_explicit(&forking, 0, memory_order_relaxed);
	atomic_store_explicit(&inside, 0, memory_order_relaxed);
	atomic_store_explicit(&deferred, NULL, memory_order_relaxed);
	vmr_pool_after_fork_child();
}

static pthread_once_t once = PTHREAD_ONCE_INIT;
static int init_err;

static void install(void)
{
	init_err = -pthread_atfork(prepare, parent, child);
}

int vmr_fork_guard_init(void)
{
	pthread_once(&once, install);
	return init_err;
}

bool vmr_fork_in_flight(void)
{
	return atomic_load_explicit(&forking, memory_order_relaxed) != 0;
}
