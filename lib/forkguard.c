/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * libvmaretry - never wait for malloc() while a fork() is in flight.
 *
 * The deadlock.  glibc's fork() takes malloc's locks (after the prepare
 * handlers of pthread_atfork(), before the system call) and holds them
 * until the system call returns.  With UFFD_FEATURE_EVENT_FORK that system
 * call waits until a handler thread of the runtime reads the FORK message.
 * A handler that calls malloc() or free() in between waits for the forking
 * thread, and so, through the order of events (uffd_event.c), does every other
 * handler: nobody reads the message.  It is not only the handlers: a
 * thread that holds a space's write lock (an update) and waits in malloc()
 * stops a handler that applies an event, the same way.
 *
 * The guard.  Every allocation and free of the library goes through
 * vmr_fork_enter()/vmr_fork_leave(), a Dekker pair with our prepare
 * handler, over a slot of the calling thread's own:
 *
 *   allocator:  slot.depth = 1; barrier; if forking: slot.depth = 0, refuse
 *   prepare:    forking++; barrier; wait until every slot's depth is 0
 *
 * The barrier is asymmetric where the kernel has membarrier(): on the
 * allocator's side a compiler barrier, on prepare's a membarrier() (a full
 * barrier on every running thread; forks are rare).  Elsewhere both sides
 * are seq_cst (the allocator's store an exchange).  Either way the
 * allocator's load sees forking (it refuses) or prepare's load of its slot
 * sees the depth (it waits for the allocator to leave, and malloc's locks
 * are free until then, so the allocator's malloc() finishes).  So no thread
 * inside the guard ever waits for a fork's locks, and a thread refused does
 * not call malloc(): it takes memory from the pool (pool.c), or puts the
 * block to free on a list that the next thread let in frees (at the latest
 * the forking thread itself, in the parent handler).  Work that must call
 * into glibc (pthread_create()) runs only inside the guard; a caller
 * refused tries again later (uffd_fork.c starts a forked child's threads so).
 * Inside, the guard nests: prepare is waiting for the outer section, so an
 * inner one needs no check.
 *
 * Slots.  A thread's first use takes a free slot from the list (or makes
 * one, from the pool: never malloc() here) and keeps it in a thread-local
 * pointer; a key's destructor frees it at thread exit.  Slots are never
 * unlinked, so the prepare handler walks the list without a lock.  Only
 * the owner writes a slot's depth: an enter or a leave writes no shared
 * line.
 *
 * forking is raised by prepare and lowered by the parent and the child
 * handlers; while several forks overlap it stays raised.  The prepare
 * handler waits only for threads inside the guard, which wait for no fork:
 * it returns.  An allocator refused is never blocked: it does not retry in
 * a loop.
 *
 * Cost: a store and a load on the thread's own line per allocation or
 * free (with membarrier(); an exchange instead of the store without it),
 * a store per leave, on update paths only (a fault, a lookup, a lock never
 * allocate).  An alloc+free pair of 64 bytes took 6 ns without the guard,
 * 12.5 ns with it (membarrier), 20 ns with the exchange, and 26 ns in a
 * first version that counted the threads inside in one shared counter
 * (best of 7 runs of 5M pairs, one thread, this 2-vCPU VM).
 *
 * In a forked child, the handler resets forking, every slot (the child has
 * one thread: the others' slots are free again), and drops the parent's
 * deferred frees (freeing them would be right, but nothing needs it).
 */
#include "internal.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>

struct deferred_free {
	struct deferred_free *next;
};

struct slot {
	_Atomic unsigned int depth; /* written by the owner only */
	_Atomic bool owned;
	struct slot *next;          /* set once, before the slot is listed */
} __attribute__((aligned(VMR_ALLOC_ALIGN)));

static _Atomic unsigned long forking;
/* Blocks freed while refused; pushed by anyone, taken whole. */
static _Atomic(struct deferred_free *) deferred;
/* Every slot ever made: pushed, never unlinked. */
static _Atomic(struct slot *) slots;
static _Thread_local struct slot *mine VMR_TLS_MODEL;
static _Thread_local bool keyed VMR_TLS_MODEL; /* slot_key holds mine */
static pthread_key_t slot_key;
static bool asymmetric; /* membarrier() registered; set once at init */
static bool have_key;   /* slot_key made; set once at init */

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

static void slot_release(void *arg)
{
	struct slot *s = arg;

	/* A later destructor of this thread may allocate: a new claim. */
	mine = NULL;
	keyed = false;
	/* Pairs with the acquire of the claim in slot_get(). */
	atomic_store_explicit(&s->owned, false, memory_order_release);
}

/* The calling thread's slot; NULL only if the pool is out of memory. */
static struct slot *slot_get(void)
{
	struct slot *s;

	if (vmr_likely(mine != NULL))
		return mine;
	/* A tree without a space may be the process's first user. */
	vmr_fork_guard_init();
	for (s = atomic_load_explicit(&slots, memory_order_acquire); s;
	     s = s->next) {
		bool none = false;

		if (!atomic_load_explicit(&s->owned, memory_order_relaxed) &&
		    atomic_compare_exchange_strong_explicit(
			    &s->owned, &none, true, memory_order_acquire,
			    memory_order_relaxed))
			break;
	}
	if (!s) {
		s = vmr_pool_alloc(sizeof(*s), VMR_ALLOC_ALIGN);
		if (!s)
			return NULL;
		atomic_init(&s->depth, 0);
		atomic_init(&s->owned, true);
		s->next = atomic_load_explicit(&slots, memory_order_relaxed);
		/* seq_cst: in the order of vmr_fork_enter()'s exchange, so a
		 * prepare() that misses the slot is one whose increment the
		 * enter sees; release: a walker sees the slot whole. */
		while (!atomic_compare_exchange_weak_explicit(
			&slots, &s->next, s, memory_order_seq_cst,
			memory_order_relaxed))
			;
	}
	mine = s;
	return s;
}

bool vmr_fork_enter(void)
{
	struct slot *s = slot_get();
	unsigned int depth;

	if (vmr_unlikely(!s))
		return false;
	depth = atomic_load_explicit(&s->depth, memory_order_relaxed);
	if (depth) {
		/* Nested: prepare waits for the outer section. */
		atomic_store_explicit(&s->depth, depth + 1,
				      memory_order_relaxed);
		return true;
	}
	if (atomic_load_explicit(&forking, memory_order_relaxed))
		return false;
	/* Pairs with the barrier of prepare(), between its increment and
	 * its loads of the slots. */
	if (vmr_likely(asymmetric)) {
		atomic_store_explicit(&s->depth, 1, memory_order_relaxed);
		atomic_signal_fence(memory_order_seq_cst);
	} else {
		atomic_exchange(&s->depth, 1);
	}
	if (atomic_load(&forking)) {
		atomic_store_explicit(&s->depth, 0, memory_order_release);
		return false;
	}
	if (vmr_unlikely(!keyed) && have_key) {
		/* Inside: pthread_setspecific() may allocate (keys past the
		 * first 32). */
		keyed = !pthread_setspecific(slot_key, s);
	}
	return true;
}

void vmr_fork_leave(void)
{
	struct slot *s = mine;
	unsigned int depth = atomic_load_explicit(&s->depth,
						  memory_order_relaxed);

	if (depth == 1 && vmr_unlikely(atomic_load_explicit(
				  &deferred, memory_order_relaxed)))
		drain_deferred();
	/* Release: what the section did is before prepare's wait ends. */
	atomic_store_explicit(&s->depth, depth - 1, memory_order_release);
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
	/* Pairs with the barrier of vmr_fork_enter(). */
	if (asymmetric)
		vmr_membarrier();
	for (struct slot *s = atomic_load(&slots); s; s = s->next)
		while (atomic_load(&s->depth))
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
	atomic_store_explicit(&deferred, NULL, memory_order_relaxed);
	for (struct slot *s = atomic_load(&slots); s; s = s->next) {
		atomic_store_explicit(&s->depth, 0, memory_order_relaxed);
		atomic_store_explicit(&s->owned, s == mine,
				      memory_order_relaxed);
	}
	vmr_pool_after_fork_child();
}

static pthread_once_t once = PTHREAD_ONCE_INIT;
static int init_err;

static void install(void)
{
	init_err = -pthread_key_create(&slot_key, slot_release);
	have_key = !init_err;
	if (!init_err)
		init_err = -pthread_atfork(prepare, parent, child);
	asymmetric = !init_err && !vmr_membarrier_register();
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
