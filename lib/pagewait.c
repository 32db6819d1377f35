/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * libvmaretry - page wait: per-page lock and up-to-date state, hashed futex
 * waits, and __folio_lock_or_retry().
 *
 * Each page is one 32-bit word: LOCKED, WAITERS (someone sleeps for it),
 * UPTODATE, EVER (was up to date once: a later read is a re-read), and a
 * pin count above.  Sleepers sleep on one of WAIT_SLOTS futex words chosen
 * by hashing the page index (the folio wait table: no wait queue per
 * page), so pages that share a word wake each other spuriously and
 * re-check.
 *
 *   wait:   read the table word (acquire); if the space is shutting down
 *           and the wait is killable, give up; set WAITERS on the page if
 *           it is still locked (CAS), else stop; sleep while the table word
 *           is unchanged.
 *   unlock: clear LOCKED and WAITERS in one CAS (release); if WAITERS was
 *           set, bump the table word and wake everyone on it.
 * No lost wakeup: a waiter either sets WAITERS before the unlock's CAS
 * (which then sees it and bumps the word the waiter read before) or its CAS
 * fails on the changed page and it re-checks.  Shutdown sets the space's
 * dying flag and then bumps and wakes every table word, so a killable
 * waiter either sees the flag or sleeps on a word that changes.
 *
 * The page lock is not owned by a thread (folios' are not either): one
 * thread may lock a page, another unlock it.
 */
#include "mm.h"
#include "futex.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define PG_LOCKED 0x1u
#define PG_WAITERS 0x2u
#define PG_UPTODATE 0x4u
#define PG_EVER 0x8u
#define PG_PIN 0x100u /* one pin */
#define PG_PIN_MAX 0xffffffu
#define WAIT_SLOTS 256u
#define MAX_PAGES ((size_t)1 << 32)

struct vmr_pagemap {
	struct vmr_space *space;
	struct vmr_pagemap *next; /* on space->maps */
	size_t nr;
	_Atomic uint32_t wait[WAIT_SLOTS];
	_Atomic uint32_t page[];
};

static inline _Atomic uint32_t *wait_word(struct vmr_pagemap *map, size_t i)
{
	uint64_t h = (uint64_t)i * 0x9e3779b97f4a7c15ull;

	return &map->wait[h >> 56];
}

static inline bool in_range(const struct vmr_pagemap *map, size_t i)
{
	return map && i < map->nr;
}

int vmr_pagemap_create(struct vmr_space *space, size_t nr_pages,
		       struct vmr_pagemap **mapp)
{
	struct vmr_pagemap *map;

	if (!mapp || !nr_pages || nr_pages > MAX_PAGES)
		return -EINVAL;
	map = vmr_alloc(sizeof(*map) + nr_pages * sizeof(map->page[0]));
	if (!map)
		return -ENOMEM;
	memset(map, 0, sizeof(*map) + nr_pages * sizeof(map->page[0]));
	map->space = space;
	map->nr = nr_pages;
	if (space) {
		pthread_mutex_lock(&space->maps_lock);
		map->next = space->maps;
		space->maps = map;
		pthread_mutex_unlock(&space->maps_lock);
	}
	*mapp = map;
	return 0;
}

void vmr_pagemap_destroy(struct vmr_pagemap *map)
{
	struct vmr_pagemap **p;

	if (!map)
		return;
	if (map->space) {
		pthread_mutex_lock(&map->space->maps_lock);
		for (p = &map->space->maps; *p != map; p = &(*p)->next)
			;
		*p = map->next;
		pthread_mutex_unlock(&map->space->maps_lock);
	}
	vmr_free(map);
}

size_t vmr_pagemap_size(const struct vmr_pagemap *map)
{
	return map ? map->nr : 0;
}

void vmr_pagemaps_wake_all(struct vmr_space *space)
{
	pthread_mutex_lock(&space->maps_lock);
	for (struct vmr_pagemap *map = space->maps; map; map = map->next) {
		for (unsigned int w = 0; w < WAIT_SLOTS; w++) {
			atomic_fetch_add_explicit(&map->wait[w], 1,
						  memory_order_release);
			vmr_futex_wake(&map->wait[w], INT_MAX);
		}
	}
	pthread_mutex_unlock(&space->maps_lock);
}

void vmr_pagemaps_detach_all(struct vmr_space *space)
{
	pthread_mutex_lock(&space->maps_lock);
	while (space->maps) {
		struct vmr_pagemap *map = space->maps;

		space->maps = map->next;
		map->space = NULL;
	}
	pthread_mutex_unlock(&space->maps_lock);
}

bool vmr_page_trylock(struct vmr_pagemap *map, size_t index)
{
	uint32_t v;

	if (!in_range(map, index))
		return false;
	v = atomic_load_explicit(&map->page[index], memory_order_relaxed);
	while (!(v & PG_LOCKED)) {
		/* Pairs with the release in vmr_page_unlock(). */
		if (atomic_compare_exchange_weak_explicit(
			    &map->page[index], &v, v | PG_LOCKED,
			    memory_order_acquire, memory_order_relaxed))
			return true;
	}
	return false;
}

void vmr_page_prefetch(struct vmr_pagemap *map, size_t index)
{
	/* Address arithmetic and a prefetch: no load, no fault. */
	__builtin_prefetch(&map->page[index], 1, 3);
}

static void count(struct vmr_space *space, size_t idx)
{
	struct vmr_tstate *ts = space ? vmr_tstate_get(space) : NULL;

	if (ts)
		vmr_count(ts, idx, 1);
}

int vmr_page_wait(struct vmr_pagemap *map, size_t index, unsigned int flags,
		  bool take)
{
	_Atomic uint32_t *word = wait_word(map, index);
	bool killable = flags & (VMR_FAULT_FLAG_KILLABLE |
				 VMR_FAULT_FLAG_INTERRUPTIBLE);
	bool slept = false;
	uint32_t seq, v;

	for (;;) {
		if (take ? vmr_page_trylock(map, index) :
			   !(atomic_load_explicit(&map->page[index],
						  memory_order_acquire) &
			     PG_LOCKED))
			break;
		/* Pairs with the bump in vmr_page_unlock() and shutdown. */
		seq = atomic_load_explicit(word, memory_order_acquire);
		if (killable && map->space && atomic_load(&map->space->dying))
			return -EINTR;
		v = atomic_load_explicit(&map->page[index],
					 memory_order_relaxed);
		if (!(v & PG_LOCKED))
			continue;
		if (!(v & PG_WAITERS) &&
		    !atomic_compare_exchange_weak_explicit(
			    &map->page[index], &v, v | PG_WAITERS,
			    memory_order_seq_cst, memory_order_relaxed))
			continue;
		slept = true;
		VMR_DEBUG_POINT(VMR_DP_PAGE_WAIT, index);
		vmr_futex_wait(word, seq);
	}
	if (slept)
		count(map->space, VMR_STAT(page_wait_sleeps));
	return 0;
}

/* Every VMR_FAULT_FLAG_*: a handler may pass its fault's flags. */
#define FAULT_FLAGS (VMR_FAULT_CALLER_FLAGS | VMR_FAULT_FLAG_VMA_LOCK)

int vmr_page_lock(struct vmr_pagemap *map, size_t index, unsigned int flags)
{
	if (!in_range(map, index) || (flags & ~FAULT_FLAGS))
		return -EINVAL;
	return vmr_page_wait(map, index, flags, true);
}

int vmr_page_wait_unlocked(struct vmr_pagemap *map, size_t index,
			   unsigned int flags)
{
	if (!in_range(map, index) || (flags & ~FAULT_FLAGS))
		return -EINVAL;
	return vmr_page_wait(map, index, flags, false);
}

/* Unlock, and set @set bits in the same step; the old word in *@old. */
static int page_unlock_set(struct vmr_pagemap *map, size_t index,
			   uint32_t set, uint32_t *old)
{
	_Atomic uint32_t *word;
	uint32_t v;

	if (!in_range(map, index))
		return -EINVAL;
	v = atomic_load_explicit(&map->page[index], memory_order_relaxed);
	do {
		if (!(v & PG_LOCKED))
			return vmr_misuse("page unlock of an unlocked page");
	} while (!atomic_compare_exchange_weak_explicit(
		&map->page[index], &v, (v & ~(PG_LOCKED | PG_WAITERS)) | set,
		memory_order_seq_cst, memory_order_relaxed));
	*old = v;
	VMR_DEBUG_POINT(VMR_DP_PAGE_UNLOCK, index);
	if (v & PG_WAITERS) {
		word = wait_word(map, index);
		atomic_fetch_add_explicit(word, 1, memory_order_release);
		vmr_futex_wake(word, INT_MAX);
	}
	return 0;
}

int vmr_page_unlock(struct vmr_pagemap *map, size_t index)
{
	uint32_t old;

	return page_unlock_set(map, index, 0, &old);
}

static void count_read(struct vmr_pagemap *map, uint32_t old)
{
	if (old & PG_UPTODATE)
		return;
	count(map->space, VMR_STAT(page_reads));
	if (old & PG_EVER)
		count(map->space, VMR_STAT(page_rereads));
}

int vmr_page_mark_uptodate_unlock(struct vmr_pagemap *map, size_t index)
{
	uint32_t old = 0; /* set unless it fails; for the compiler */
	int err = page_unlock_set(map, index, PG_UPTODATE | PG_EVER, &old);

	if (!err)
		count_read(map, old);
	return err;
}

bool vmr_page_uptodate(const struct vmr_pagemap *map, size_t index)
{
	/* Pairs with the release in vmr_page_mark_uptodate(). */
	return in_range(map, index) &&
	       (atomic_load_explicit(&map->page[index], memory_order_acquire) &
		PG_UPTODATE);
}

int vmr_page_mark_uptodate(struct vmr_pagemap *map, size_t index)
{
	uint32_t v;

	if (!in_range(map, index))
		return -EINVAL;
	v = atomic_load_explicit(&map->page[index], memory_order_relaxed);
	do {
		if (!(v & PG_LOCKED))
			return vmr_misuse("page marked up to date unlocked");
		if (v & PG_UPTODATE)
			return 0;
	} while (!atomic_compare_exchange_weak_explicit(
		&map->page[index], &v, v | PG_UPTODATE | PG_EVER,
		memory_order_release, memory_order_relaxed));
	count_read(map, v);
	return 0;
}

bool vmr_page_evict(struct vmr_pagemap *map, size_t index)
{
	uint32_t v;

	if (!in_range(map, index))
		return false;
	v = atomic_load_explicit(&map->page[index], memory_order_relaxed);
	do {
		if ((v & (PG_LOCKED | ~(PG_PIN - 1))) || !(v & PG_UPTODATE))
			return false;
	} while (!atomic_compare_exchange_weak_explicit(
		&map->page[index], &v, v & ~PG_UPTODATE, memory_order_acq_rel,
		memory_order_relaxed));
	return true;
}

int vmr_page_pin(struct vmr_pagemap *map, size_t index)
{
	uint32_t v;

	if (!in_range(map, index))
		return -EINVAL;
	v = atomic_load_explicit(&map->page[index], memory_order_relaxed);
	do {
		if (v / PG_PIN == PG_PIN_MAX)
			return -EOVERFLOW;
	} while (!atomic_compare_exchange_weak_explicit(
		&map->page[index], &v, v + PG_PIN, memory_order_acquire,
		memory_order_relaxed));
	return 0;
}

int vmr_page_unpin(struct vmr_pagemap *map, size_t index)
{
	uint32_t v;

	if (!in_range(map, index))
		return -EINVAL;
	v = atomic_load_explicit(&map->page[index], memory_order_relaxed);
	do {
		if (v < PG_PIN)
			return vmr_misuse("page unpin of an unpinned page");
	} while (!atomic_compare_exchange_weak_explicit(
		&map->page[index], &v, v - PG_PIN, memory_order_release,
		memory_order_relaxed));
	return 0;
}

bool vmr_page_pinned(const struct vmr_pagemap *map, size_t index)
{
	return in_range(map, index) &&
	       atomic_load_explicit(&map->page[index], memory_order_relaxed) >=
		       PG_PIN;
}

vmr_fault_t vmr_page_lock_or_retry(struct vmr_fault *vmf,
				   struct vmr_pagemap *map, size_t index)
{
	unsigned int policy;
	bool was_vma;

	if (!vmf || !in_range(map, index))
		return VMR_FAULT_SIGBUS;
	if (vmr_page_trylock(map, index))
		return 0;
	policy = vmr_fault_policy(vmf);
	if (vmr_fault_allow_retry_first(vmf)) {
		/* CAUTION: RETRY with the fault's lock still held. */
		if (vmf->flags & VMR_FAULT_FLAG_RETRY_NOWAIT)
			return VMR_FAULT_RETRY;
		if (policy != VMR_HOLD_IO) {
			was_vma = vmf->lock == VMR_FAULT_LOCK_VMA;
			vmr_fault_release(vmf);
			vmr_page_wait(map, index, vmf->flags, false);
			return VMR_FAULT_RETRY |
			       (was_vma && policy == VMR_RETRY_VMA ?
					VMR_FAULT_RETRY_VMA : 0);
		}
	}
	if (vmr_page_wait(map, index, vmf->flags, true)) {
		/* Shut down while waiting: give up, lock released. */
		vmr_fault_release(vmf);
		return VMR_FAULT_RETRY;
	}
	return 0;
}

int vmr_fault_pin_page(struct vmr_fault *vmf, struct vmr_pagemap *map,
		       size_t index)
{
	int err;

	if (!vmf)
		return -EINVAL;
	err = vmr_page_pin(map, index);
	if (err)
		return err;
	vmr_fault_unpin(vmf);
	vmf->pin_map = map;
	vmf->pin_index = index;
	vmf->pin_held = 1;
	return 0;
}

bool vmr_fault_pinned_page(const struct vmr_fault *vmf,
			   const struct vmr_pagemap *map, size_t *index)
{
	if (!vmf || !vmf->pin_held || vmf->pin_map != map)
		return false;
	if (index)
		*index = vmf->pin_index;
	return true;
}

void vmr_fault_unpin(struct vmr_fault *vmf)
{
	if (vmf->pin_held) {
		vmr_page_unpin(vmf->pin_map, vmf->pin_index);
		vmf->pin_held = 0;
	}
}
