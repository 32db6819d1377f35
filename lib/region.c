/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * libvmaretry - region objects: creation, accessors, and the end of a
 * region's life.
 *
 * A region is immutable once published (bounds, protection, offset, ops,
 * private data), so faults read it without a lock.  An update that changes
 * part of a region makes new regions for the parts (vmr_region_cut(), which
 * calls the owner's open()) and retires the old one.
 *
 * Retirement (vma_mark_detached() + the VMA's RCU free, then ->close):
 * the updater marks the region detached after publishing the tree version
 * without it, and queues reap() with call_rcu().  After that grace period no
 * lookup can return the region, and every fault that found it has finished
 * taking its lock (the lock is taken inside the lookup's read-side critical
 * section) and published it in its thread's state, or given up.  reap() then
 * scans the states once for the whole batch of regions one update retired:
 * a region a fault still holds (under VMR_LOCK_RANGE it may be handling
 * pages the update did not touch) goes into a new batch queued again;
 * the others are closed and freed.  Holds only end, so this terminates once
 * the last such fault unlocks.  space->zombies counts the regions retired
 * and not yet freed, so that vmr_space_destroy() can wait for them.
 */
#include "mm.h"
#include "tsan.h"

#include <string.h>
#include <urcu/compiler.h>
#include <urcu/flavor.h>

struct vmr_region *vmr_region_alloc(struct vmr_space *space)
{
	struct vmr_region *r = vmr_alloc_aligned(sizeof(*r));

	if (!r)
		return NULL;
	memset(r, 0, sizeof(*r));
	r->space = space;
	atomic_init(&r->write_seq, 0); /* even: never a write hold's seq */
	atomic_init(&r->write_start, 0);
	atomic_init(&r->write_end, 0);
	atomic_init(&r->detached, false);
	return r;
}

struct vmr_region *vmr_region_cut(const struct vmr_region *from,
				  uintptr_t start, uintptr_t end)
{
	struct vmr_region *r = vmr_region_alloc(from->space);

	if (!r)
		return NULL;
	r->start = start;
	r->end = end;
	r->offset = from->offset + (start - from->start);
	r->prot = from->prot;
	r->policy = from->policy;
	r->ops = from->ops;
	r->private_data = from->private_data;
	if (r->ops.open)
		r->ops.open(r, from);
	return r;
}

void vmr_region_discard(struct vmr_region *region)
{
	vmr_free(region);
}

#define HELD_MAX 64

static bool still_held(const struct vmr_region *r,
		       const struct vmr_region *const *held, size_t nr_held)
{
	if (nr_held > HELD_MAX)
		return vmr_readers_hold(r->space, r);
	for (size_t i = 0; i < nr_held; i++)
		if (held[i] == r)
			return true;
	return false;
}

static void reap(struct rcu_head *head)
{
	struct vmr_region *r = caa_container_of(head, struct vmr_region, rcu);
	const struct vmr_region *held[HELD_MAX];
	struct vmr_region *next, *again = NULL;
	struct vmr_space *space;
	size_t nr_held;
	long done = 0;

	vmr_tsan_callback_enter(head);
	space = r->space;
	/* One scan for the batch: the holders are at most the threads. */
	nr_held = vmr_readers_held(space, held, HELD_MAX);
	for (; r; r = next) {
		next = r->retire_next;
		if (still_held(r, held, nr_held)) {
			/* A fault still holds it: look again later. */
			r->retire_next = again;
			again = r;
			continue;
		}
		if (r->ops.close)
			r->ops.close(r);
		vmr_free(r);
		done++;
	}
	if (again)
		vmr_call_rcu(space->flavor, &again->rcu, reap);
	/* Last: vmr_space_destroy() may free the space once this is zero. */
	atomic_fetch_sub_explicit(&space->zombies, done, memory_order_release);
}

void vmr_retire_init(struct vmr_retire_batch *batch, struct vmr_space *space)
{
	batch->space = space;
	batch->head = NULL;
	batch->count = 0;
}

void vmr_retire_add(struct vmr_retire_batch *batch, struct vmr_region *region)
{
	/* After the tree version without it is published: see rangelock.c. */
	atomic_store(&region->detached, true);
	region->retire_next = batch->head;
	batch->head = region;
	batch->count++;
}

void vmr_retire_submit(struct vmr_retire_batch *batch)
{
	struct vmr_space *space = batch->space;

	if (!batch->head)
		return;
	atomic_fetch_add_explicit(&space->zombies, batch->count,
				  memory_order_relaxed);
	vmr_call_rcu(space->flavor, &batch->head->rcu, reap);
	batch->head = NULL;
	batch->count = 0;
}

uintptr_t vmr_region_start(const struct vmr_region *region)
{
	return region->start;
}

uintptr_t vmr_region_end(const struct vmr_region *region)
{
	return region->end;
}

unsigned int vmr_region_prot(const struct vmr_region *region)
{
	return region->prot;
}

uint64_t vmr_region_offset(const struct vmr_region *region)
{
	return region->offset;
}

void *vmr_region_private(const struct vmr_region *region)
{
	return region->private_data;
}

void vmr_region_set_private(struct vmr_region *region, void *private_data)
{
	region->private_data = private_data;
}

struct vmr_space *vmr_region_space(const struct vmr_region *region)
{
	return region->space;
}

const struct vmr_region_ops *vmr_region_ops(const struct vmr_region *region)
{
	return &region->ops;
}

bool vmr_region_is_detached(const struct vmr_region *region)
{
	return atomic_load_explicit(&region->detached, memory_order_acquire);
}
