/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * libvmaretry - per-thread state in each space.
 *
 * Every thread that faults in a space gets, on its first fault there, a
 * struct vmr_tstate of its own in that space: its VMA-range read lock
 * (lib/rangelock.c) and its share of the space's counters (lib/stats.c).
 * Nothing else ever writes a thread's tstate on the fast path, so a fault
 * writes no cache line that another fault writes, and counters need no
 * atomic read-modify-write.
 *
 * Finding it: each thread keeps a small cache of (space id, tstate) pairs;
 * a fault compares ids (spaces get a unique 64-bit id, so a space freed
 * and another allocated at the same address are not confused).  On a
 * miss, the slow path looks in the thread's full list of bindings, and
 * failing that adopts an orphaned tstate of the space or appends a new one.
 *
 * Lifetimes: a space owns its tstates and frees them when destroyed; a
 * thread owns its binding list and frees it when it exits (a pthread key
 * destructor).  The two meet under one global mutex, taken only on slow
 * paths: a thread's exit orphans its tstates (their counts stay, and a new
 * thread may adopt them), and a space's teardown removes its bindings from
 * every thread still alive.  So neither ever touches what the other freed.
 *
 * The space's tstate table only grows (chunks of TSTATE_CHUNK, published
 * by a release store of the count), so a writer scans it without a lock.
 */
#include "mm.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define CACHE_WAYS 8

struct binding {
	_Atomic uint64_t space_id; /* 0: empty */
	struct vmr_tstate *ts;
};

struct owned {
	uint64_t space_id;
	struct vmr_tstate *ts;
};

struct vmr_thread {
	struct binding cache[CACHE_WAYS]; /* read lock-free by the thread */
	unsigned int next_way;
	/* Under registry_lock: every tstate the thread owns. */
	struct owned *all;
	size_t nr, cap;
};

static pthread_mutex_t registry_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_once_t key_once = PTHREAD_ONCE_INIT;
static pthread_key_t exit_key;
static _Atomic uint64_t next_space_id = 1;
static _Thread_local struct vmr_thread *self VMR_TLS_MODEL;
_Thread_local struct vmr_tstate_hint vmr_tstate_hint VMR_TLS_MODEL;

/* Thread exit: orphan every tstate of this thread, free the thread. */
static void thread_exit(void *arg)
{
	struct vmr_thread *t = arg;

	pthread_mutex_lock(&registry_lock);
	for (size_t i = 0; i < t->nr; i++)
		atomic_store_explicit(&t->all[i].ts->owner, NULL,
				      memory_order_release);
	pthread_mutex_unlock(&registry_lock);
	vmr_free(t->all);
	vmr_free(t);
	self = NULL;
	/* Its tstates are orphans now, another thread's to adopt. */
	vmr_tstate_hint.space_id = 0;
}

static void make_key(void)
{
	if (pthread_key_create(&exit_key, thread_exit))
		vmr_die("pthread_key_create failed");
}

uint64_t vmr_space_id_new(void)
{
	return atomic_fetch_add_explicit(&next_space_id, 1,
					 memory_order_relaxed);
}

int vmr_tstates_init(struct vmr_tstate_table *table)
{
	memset(table, 0, sizeof(*table));
	atomic_init(&table->nr, 0);
	return -pthread_mutex_init(&table->lock, NULL);
}

struct vmr_tstate *vmr_tstate_at(const struct vmr_tstate_table *table,
				 uint32_t i)
{
	return &table->chunks[i / VMR_TSTATE_CHUNK][i % VMR_TSTATE_CHUNK];
}

/* Under table->lock: an orphan to adopt, or a new tstate; NULL if full. */
static struct vmr_tstate *tstate_claim(struct vmr_tstate_table *table,
				       struct vmr_thread *t)
{
	uint32_t nr = atomic_load_explicit(&table->nr, memory_order_relaxed);
	struct vmr_tstate *ts;

	for (uint32_t i = 0; i < nr; i++) {
		struct vmr_thread *none = NULL;

		ts = vmr_tstate_at(table, i);
		if (atomic_compare_exchange_strong_explicit(
			    &ts->owner, &none, t, memory_order_acquire,
			    memory_order_relaxed))
			return ts;
	}
	if (nr == VMR_TSTATE_MAX)
		return NULL;
	if (nr % VMR_TSTATE_CHUNK == 0) {
		struct vmr_tstate *chunk;

		chunk = vmr_alloc_align(VMR_TSTATE_CHUNK * sizeof(*chunk),
					VMR_CACHELINE);
		if (!chunk)
			return NULL;
		memset(chunk, 0, VMR_TSTATE_CHUNK * sizeof(*chunk));
		table->chunks[nr / VMR_TSTATE_CHUNK] = chunk;
	}
	ts = vmr_tstate_at(table, nr);
	atomic_store_explicit(&ts->owner, t, memory_order_relaxed);
	/* Pairs with the acquire of scanners: the tstate is initialised. */
	atomic_store_explicit(&table->nr, nr + 1, memory_order_release);
	return ts;
}

static void cache_put(struct vmr_thread *t, uint64_t id, struct vmr_tstate *ts)
{
	struct binding *b = &t->cache[t->next_way++ % CACHE_WAYS];

	atomic_store_explicit(&b->space_id, 0, memory_order_relaxed);
	b->ts = ts;
	atomic_store_explicit(&b->space_id, id, memory_order_relaxed);
}

static struct vmr_tstate *tstate_slow(struct vmr_space *space)
{
	struct vmr_thread *t = self;
	struct vmr_tstate *ts = NULL;

	if (!t) {
		pthread_once(&key_once, make_key);
		t = vmr_alloc_plain(sizeof(*t), 0);
		if (!t)
			return NULL;
		memset(t, 0, sizeof(*t));
		if (pthread_setspecific(exit_key, t)) {
			vmr_free(t);
			return NULL;
		}
		self = t;
	}
	pthread_mutex_lock(&registry_lock);
	for (size_t i = 0; i < t->nr; i++) {
		if (t->all[i].space_id == space->id) {
			ts = t->all[i].ts;
			break;
		}
	}
	if (!ts && t->nr == t->cap) {
		size_t cap = t->cap * 2 + 4;
		struct owned *all = vmr_realloc(t->all, t->nr * sizeof(*all),
						cap * sizeof(*all));

		if (all) {
			t->all = all;
			t->cap = cap;
		}
	}
	if (!ts && t->nr < t->cap) {
		pthread_mutex_lock(&space->tstates.lock);
		ts = tstate_claim(&space->tstates, t);
		pthread_mutex_unlock(&space->tstates.lock);
		if (ts)
			t->all[t->nr++] = (struct owned){ space->id, ts };
	}
	if (ts)
		cache_put(t, space->id, ts);
	pthread_mutex_unlock(&registry_lock);
	return ts;
}

/* @t's cached tstate for space @id; NULL if none (or no @t). */
static struct vmr_tstate *cached(const struct vmr_thread *t, uint64_t id)
{
	if (vmr_likely(t)) {
		for (unsigned int i = 0; i < CACHE_WAYS; i++)
			if (atomic_load_explicit(&t->cache[i].space_id,
						 memory_order_relaxed) == id)
				return t->cache[i].ts;
	}
	return NULL;
}

struct vmr_tstate *vmr_tstate_find(struct vmr_space *space)
{
	struct vmr_tstate *ts = cached(self, space->id);

	if (!ts)
		ts = tstate_slow(space);
	if (ts)
		vmr_tstate_hint = (struct vmr_tstate_hint){ space->id, ts };
	return ts;
}

/* Drop every binding of @space from the thread that owns @ts. */
static void unbind(struct vmr_thread *t, uint64_t id)
{
	for (unsigned int i = 0; i < CACHE_WAYS; i++)
		if (atomic_load_explicit(&t->cache[i].space_id,
					 memory_order_relaxed) == id)
			atomic_store_explicit(&t->cache[i].space_id, 0,
					      memory_order_relaxed);
	for (size_t i = 0; i < t->nr; i++) {
		if (t->all[i].space_id == id) {
			t->all[i] = t->all[--t->nr];
			return;
		}
	}
}

void vmr_tstates_fini(struct vmr_space *space)
{
	struct vmr_tstate_table *table = &space->tstates;
	uint32_t nr = atomic_load_explicit(&table->nr, memory_order_acquire);

	pthread_mutex_lock(&registry_lock);
	for (uint32_t i = 0; i < nr; i++) {
		struct vmr_thread *t = (struct vmr_thread *)atomic_load(
			&vmr_tstate_at(table, i)->owner);

		if (t)
			unbind(t, space->id);
	}
	pthread_mutex_unlock(&registry_lock);
	for (uint32_t c = 0; c * VMR_TSTATE_CHUNK < nr; c++)
		vmr_free(table->chunks[c]);
	pthread_mutex_destroy(&table->lock);
}
