/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * libvmaretry - page wait: a page lock and an up-to-date state per page of
 * a caller-sized index (the folio lock and PG_uptodate of a page cache),
 * with sleeps on a hashed table of futex words (the folio wait table),
 * never a mutex or condition variable per page.
 *
 * The pattern of a pager's fault handler (filemap_fault()):
 *
 *	ret = vmr_page_lock_or_retry(vmf, map, i);
 *	if (ret)
 *		return ret;           // lock released, page waited for: retry
 *	read = !vmr_page_uptodate(map, i);
 *	if (read) {
 *		ret = vmr_fault_release_for_io(vmf);
 *		read the page;        // one faulter reads, the others wait
 *		vmr_page_mark_uptodate(map, i);
 *		if (ret) {
 *			vmr_page_unlock(map, i);
 *			return ret | VMR_FAULT_MAJOR; // the lock was dropped
 *		}
 *	}
 *	install the page;
 *	vmr_page_unlock(map, i);
 *	return read ? VMR_FAULT_MAJOR : 0; // MAJOR if this attempt read it
 *
 * Pin across retry (beyond the kernel): before returning a retry after its
 * I/O, the handler may call vmr_fault_pin_page(vmf, map, i); eviction
 * (vmr_page_evict()) skips pinned pages, so the retry finds the page still
 * up to date even when the cache is thrashing, and the engine unpins it
 * when the fault ends.  This answers the case raised in the RFC thread
 * (pages reclaimed between the I/O and the retry) without holding any lock
 * across the I/O.
 *
 * The calls below that answer true or false answer false for a NULL map or
 * an index out of range.
 */
#ifndef VMARETRY_PAGEWAIT_H
#define VMARETRY_PAGEWAIT_H

#include <vmaretry/fault.h>

VMR_BEGIN_DECLS

/* Opaque: vmr_pagemap_create(). */
struct vmr_pagemap;

/**
 * vmr_pagemap_create() - make a page index of @nr_pages pages, all unlocked
 *                        and not up to date
 * @space: the space whose faults wait on it (its counters count the waits
 *         and reads; vmr_space_shutdown() ends its killable waits), or NULL
 * @nr_pages: pages in the index, 1 to 2^32 (4 bytes each)
 * @mapp: where to store the map
 *
 * Context: any thread.  May sleep.
 * Ownership: the caller's; vmr_pagemap_destroy() frees it.  If the space is
 * destroyed first, the map goes on without it.
 * Return: 0; -EINVAL if @mapp is NULL or @nr_pages is 0 or above 2^32;
 * -ENOMEM.
 */
int vmr_pagemap_create(struct vmr_space *space, size_t nr_pages,
		       struct vmr_pagemap **mapp);

/**
 * vmr_pagemap_destroy() - free a page index
 * @map: the map, or NULL
 *
 * Concurrency: nobody may use it any more.
 */
void vmr_pagemap_destroy(struct vmr_pagemap *map);

/**
 * vmr_pagemap_size() - number of pages of a map (0 if @map is NULL)
 */
size_t vmr_pagemap_size(const struct vmr_pagemap *map);

/**
 * vmr_page_trylock() - lock a page if it is unlocked (folio_trylock())
 * @map: the map
 * @index: the page
 *
 * Ordering: acquire.
 * Return: true if locked; false if it was locked already or @index is out
 * of range.
 */
bool vmr_page_trylock(struct vmr_pagemap *map, size_t index);

/**
 * vmr_page_lock() - lock a page, sleeping while it is locked
 *                   (folio_lock(), __folio_lock_killable())
 * @map: the map
 * @index: the page
 * @flags: VMR_FAULT_FLAG_KILLABLE or _INTERRUPTIBLE to end the wait when
 *         the map's space is shut down; 0 to wait regardless.  The other
 *         VMR_FAULT_FLAG_* bits are ignored, so a handler may pass its
 *         fault's flags.
 *
 * Context: may sleep.  Ordering: acquire.
 * Return: 0 (locked); -EINTR (not locked) if the wait ended on shutdown;
 * -EINVAL if @map is NULL, @index out of range, or @flags has a bit that is
 * no VMR_FAULT_FLAG_*.
 */
int vmr_page_lock(struct vmr_pagemap *map, size_t index, unsigned int flags);

/**
 * vmr_page_unlock() - unlock a page and wake its waiters (folio_unlock())
 * @map: the map
 * @index: the page
 *
 * Context: any thread (a page lock is not owned).  Never sleeps.
 * Ordering: release.
 * Return: 0; -EINVAL if @map is NULL or @index out of range; -EPERM if the
 * page is not locked (a debug build aborts).
 */
int vmr_page_unlock(struct vmr_pagemap *map, size_t index);

/**
 * vmr_page_wait_unlocked() - sleep until a page is unlocked, without taking
 *                            it (folio_wait_locked())
 * @map, @index, @flags: as vmr_page_lock()
 *
 * Return: as vmr_page_lock(), 0 meaning "was unlocked at some point".
 */
int vmr_page_wait_unlocked(struct vmr_pagemap *map, size_t index,
			   unsigned int flags);

/**
 * vmr_page_lock_or_retry() - lock a page for a fault, or release the
 *                            fault's lock and retry (__folio_lock_or_retry())
 * @vmf: the fault, holding its lock
 * @map: the map
 * @index: the page
 *
 * Takes the page lock if it is free.  Otherwise, on a first try with retry
 * allowed: with RETRY_NOWAIT returns RETRY with the fault's lock still held
 * (whatever the policy: a no-wait fault never sleeps here); else, unless
 * the policy is VMR_HOLD_IO, releases the fault's lock, waits
 * for the page to be unlocked (the fault's KILLABLE flag applies) and
 * returns RETRY, or RETRY | RETRY_VMA if the fault held the fine-grained
 * lock under VMR_RETRY_VMA.  Not a first try (TRIED, or no ALLOW_RETRY), or
 * VMR_HOLD_IO: sleeps for the page lock holding the fault's lock and
 * returns 0; if that wait ends on shutdown, releases the fault's lock and
 * returns RETRY.
 *
 * Context: inside the handler of @vmf.  May sleep.
 * Return: 0 with the page locked and the fault's lock held; otherwise the
 * reason to return from the handler, as above (SIGBUS if @vmf or @map is
 * NULL or @index is out of range, with the fault's lock as it was).
 */
vmr_fault_t vmr_page_lock_or_retry(struct vmr_fault *vmf,
				   struct vmr_pagemap *map, size_t index);

/**
 * vmr_page_uptodate() - whether a page's contents are valid
 *                       (folio_test_uptodate())
 * @map, @index: the page
 *
 * Ordering: acquire: true means the contents written before
 * vmr_page_mark_uptodate() are visible.
 * Return: false also for an out-of-range @index.
 */
bool vmr_page_uptodate(const struct vmr_pagemap *map, size_t index);

/**
 * vmr_page_mark_uptodate() - the page's contents are valid now
 *                            (folio_mark_uptodate())
 * @map, @index: the page, which the caller has locked
 *
 * Counts a page read in the space's counters, and a re-read if the page
 * had been up to date before.
 *
 * Ordering: release.
 * Return: 0; -EINVAL if @map is NULL or @index out of range; -EPERM if the
 * page is not locked (a debug build aborts).
 */
int vmr_page_mark_uptodate(struct vmr_pagemap *map, size_t index);

/**
 * vmr_page_evict() - drop a page from the cache, if nothing keeps it
 * @map, @index: the page
 *
 * Clears the up-to-date state of a page that is neither locked nor pinned
 * (the caller frees the contents, if they are its own, after a true
 * return).  For cache-size policies and tests of thrashing.  A page the
 * caller has locked is not evicted either: to drop a page for good, first
 * make sure no fault can lock it again (unmap its range), then evict it.
 *
 * Return: true if it was up to date and is not any more.
 */
bool vmr_page_evict(struct vmr_pagemap *map, size_t index);

/**
 * vmr_page_pin() - keep a page from eviction (a folio reference)
 * @map, @index: the page
 *
 * Return: 0; -EINVAL if @map is NULL or @index out of range; -EOVERFLOW if
 * the page has 2^24 - 1 pins.
 */
int vmr_page_pin(struct vmr_pagemap *map, size_t index);

/**
 * vmr_page_unpin() - undo vmr_page_pin()
 * @map, @index: the page
 *
 * Return: 0; -EINVAL as vmr_page_pin(); -EPERM if not pinned (a debug build
 * aborts).
 */
int vmr_page_unpin(struct vmr_pagemap *map, size_t index);

/**
 * vmr_page_pinned() - whether a page has pins
 */
bool vmr_page_pinned(const struct vmr_pagemap *map, size_t index);

/**
 * vmr_fault_pin_page() - pin a page for the rest of a fault
 * @vmf: the fault (with or without its lock)
 * @map, @index: the page
 *
 * The pin lasts across the fault's retries and is dropped by the engine
 * when the fault ends, whatever its result.  A fault pins one page: a
 * second call moves the pin.
 *
 * Return: 0; -EINVAL as vmr_page_pin(), or @vmf NULL; -EOVERFLOW.
 */
int vmr_fault_pin_page(struct vmr_fault *vmf, struct vmr_pagemap *map,
		       size_t index);

/**
 * vmr_fault_pinned_page() - the page this fault pinned in an earlier try
 * @vmf: the fault
 * @map: the map asked about
 * @index: receives the page, or NULL
 *
 * Return: true, and *@index, if the fault holds a pin in @map; false if
 * @vmf is NULL.
 */
bool vmr_fault_pinned_page(const struct vmr_fault *vmf,
			   const struct vmr_pagemap *map, size_t *index);

VMR_END_DECLS

#endif /* VMARETRY_PAGEWAIT_H */
