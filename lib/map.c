/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * libvmaretry - map, unmap, protect: the updates of a space.
 *
 * Each is one transaction under the space lock held for write, in the
 * kernel's order (vma_prepare() / vma_complete()):
 *
 *   1. collect the regions the range [start, end) meets and check the
 *      request against them (-EEXIST, -ENOMEM for protect over a hole);
 *   2. build the new version of the span they cover: the pieces of the
 *      met regions outside the range (vmr_region_cut(): same attributes,
 *      offsets shifted, open() called), and inside it the new region (map)
 *      or the re-protected pieces (protect), or nothing (unmap);
 *   3. write-lock [start, end): mark the met regions and wait for the
 *      faults holding overlapping ranges (vma_start_write());
 *   4. mark the new regions inside [start, end) write-locked too (a new
 *      VMA starts write-locked in the kernel), so that no fault enters the
 *      changed range before the update is over;
 *   5. publish the span's new version with one vmr_tree_replace();
 *   6. retire the replaced regions (detached, closed once unreachable);
 *   7. release the space lock, and with it every mark.
 *
 * Everything that can fail (allocation, the tree update) comes before the
 * first visible change, and a failure undoes what it made: nothing
 * changes.  Faults holding pages of a cut region outside the range go on:
 * their region is retired but stays valid until they unlock, and writers
 * of those pages will wait for them (conflicts are by address, see
 * rangelock.c).  Regions a protect leaves as they are (already @prot) are
 * kept, not copied.  Adjacent compatible regions are not merged.
 */
#include "mm.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

enum update_op { OP_MAP, OP_UNMAP, OP_PROTECT };

struct update {
	struct vmr_space *space;
	uintptr_t start, end;
	enum update_op op;
	unsigned int prot;         /* OP_PROTECT */
	struct vmr_region *mapped; /* OP_MAP: the new region */
	size_t nr_old;
	struct vmr_region **old;   /* regions met, in order */
	bool *keep;                /* old[i] stays in the tree */
	size_t nr_add;
	struct vmr_tree_entry *add; /* the span's new entries, in order */
	size_t nr_made;
	struct vmr_region **made;  /* regions cut for this update */
};

static bool range_ok(const struct vmr_space *space, uintptr_t start,
		     size_t len)
{
	return len && !(start & space->page_mask) &&
	       !(len & space->page_mask) && start + len > start;
}

/* Step 1: the regions [start, end) meets. */
static int collect(struct update *u)
{
	struct vmr_tree_iter it;
	struct vmr_tree_entry e;
	size_t n = 0;

	/* The space write lock keeps tree writers out: no RCU needed. */
	vmr_tree_iter_start(&it, u->space->tree, u->start);
	while (vmr_tree_iter_next(&it, &e) && e.start < u->end)
		n++;
	u->nr_old = n;
	/* Each region met gives at most three entries; a map adds one.  One
	 * block for the four arrays, the bools last (alignment): one
	 * allocation an update. */
	u->old = vmr_alloc((n + 1) * sizeof(*u->old) +
			   (3 * n + 1) * (sizeof(*u->made) + sizeof(*u->add)) +
			   (n + 1) * sizeof(*u->keep));
	if (!u->old)
		return -ENOMEM;
	u->made = (struct vmr_region **)(u->old + n + 1);
	u->add = (struct vmr_tree_entry *)(u->made + 3 * n + 1);
	u->keep = (bool *)(u->add + 3 * n + 1);
	vmr_tree_iter_start(&it, u->space->tree, u->start);
	for (size_t i = 0; i < n; i++) {
		vmr_tree_iter_next(&it, &e);
		u->old[i] = e.value;
		u->keep[i] = false;
	}
	return 0;
}

static int check(const struct update *u, unsigned int flags)
{
	uintptr_t at = u->start;

	if (u->op == OP_MAP && u->nr_old && !(flags & VMR_MAP_REPLACE))
		return -EEXIST;
	if (u->op != OP_PROTECT)
		return 0;
	for (size_t i = 0; i < u->nr_old; i++) {
		if (u->old[i]->start > at)
			return -ENOMEM; /* a hole, as mprotect(2) */
		at = u->old[i]->end;
	}
	return at < u->end ? -ENOMEM : 0;
}

static int add_cut(struct update *u, const struct vmr_region *from,
		   uintptr_t start, uintptr_t end, const unsigned int *prot)
{
	struct vmr_region *r = vmr_region_cut(from, start, end);

	if (!r)
		return -ENOMEM;
	if (prot)
		r->prot = *prot;
	u->made[u->nr_made++] = r;
	u->add[u->nr_add++] = (struct vmr_tree_entry){ start, end, r };
	return 0;
}

/* Step 2: the entries of the span's new version, in address order. */
static int build(struct update *u)
{
	int err = 0;

	if (u->op == OP_MAP && (!u->nr_old || u->old[0]->start >= u->start))
		u->add[u->nr_add++] = (struct vmr_tree_entry){
			u->start, u->end, u->mapped };
	for (size_t i = 0; i < u->nr_old && !err; i++) {
		struct vmr_region *r = u->old[i];

		if (u->op == OP_PROTECT && r->prot == u->prot) {
			u->keep[i] = true;
			u->add[u->nr_add++] = (struct vmr_tree_entry){
				r->start, r->end, r };
			continue;
		}
		if (r->start < u->start) {
			err = add_cut(u, r, r->start, u->start, NULL);
			if (!err && u->op == OP_MAP)
				u->add[u->nr_add++] = (struct vmr_tree_entry){
					u->start, u->end, u->mapped };
		}
		if (!err && u->op == OP_PROTECT)
			err = add_cut(u, r,
				      r->start > u->start ? r->start : u->start,
				      r->end < u->end ? r->end : u->end,
				      &u->prot);
		if (!err && r->end > u->end)
			err = add_cut(u, r, u->end, r->end, NULL);
	}
	return err;
}

static bool changes_anything(const struct update *u)
{
	for (size_t i = 0; i < u->nr_old; i++)
		if (!u->keep[i])
			return true;
	return u->op == OP_MAP;
}

/* Steps 3-6, with steps 1-2 done and nothing changed yet. */
static int commit(struct update *u)
{
	uintptr_t lo = u->start, hi = u->end;
	struct vmr_retire_batch batch;
	int ret;

	if (u->nr_old) {
		if (u->old[0]->start < lo)
			lo = u->old[0]->start;
		if (u->old[u->nr_old - 1]->end > hi)
			hi = u->old[u->nr_old - 1]->end;
	}
	vmr_range_write_lock_held(u->space, u->start, u->end);
	for (size_t i = 0; i < u->nr_add; i++) {
		struct vmr_region *r = u->add[i].value;

		if (r->start >= u->start && r->end <= u->end)
			vmr_region_mark(u->space, r, r->start, r->end);
	}
	ret = vmr_tree_replace(u->space->tree, lo, hi, u->add, u->nr_add,
			       NULL, NULL);
	if (ret < 0)
		return ret;
	VMR_DEBUG_POINT(VMR_DP_SPACE_DETACH, u->start);
	vmr_retire_init(&batch, u->space);
	for (size_t i = 0; i < u->nr_old; i++)
		if (!u->keep[i])
			vmr_retire_add(&batch, u->old[i]);
	vmr_retire_submit(&batch);
	u->nr_made = 0; /* published: theirs now */
	u->mapped = NULL;
	return 0;
}

static void update_fini(struct update *u)
{
	for (size_t i = 0; i < u->nr_made; i++) {
		if (u->made[i]->ops.close)
			u->made[i]->ops.close(u->made[i]);
		vmr_region_discard(u->made[i]);
	}
	if (u->mapped)
		vmr_region_discard(u->mapped);
	vmr_free(u->old); /* and the three arrays after it */
}

static int update(struct update *u, unsigned int flags)
{
	int err;

	err = vmr_space_write_lock(u->space);
	if (err) {
		update_fini(u);
		return err;
	}
	err = collect(u);
	if (!err)
		err = check(u, flags);
	if (!err)
		err = build(u);
	if (!err && changes_anything(u))
		err = commit(u);
	/* close() of discarded pieces runs with no lock of the space held. */
	vmr_space_write_unlock(u->space);
	update_fini(u);
	return err;
}

#define DESC_SIZE_0_1                                                         \
	(offsetof(struct vmr_region_desc, private_data) + sizeof(void *))
#define PROT_ALL (VMR_PROT_READ | VMR_PROT_WRITE | VMR_PROT_EXEC)

int vmr_map(struct vmr_space *space, const struct vmr_region_desc *desc,
	    size_t desc_size, unsigned int flags)
{
	struct update u = { .space = space, .op = OP_MAP };
	struct vmr_region_desc d;
	struct vmr_region *r;
	int err;

	if (!space || !desc || desc_size < DESC_SIZE_0_1 ||
	    (flags & ~VMR_MAP_REPLACE))
		return -EINVAL;
	err = vmr_copy_sized(&d, sizeof(d), desc, desc_size);
	if (err)
		return err;
	if (!range_ok(space, d.start, d.len) || (d.prot & ~PROT_ALL) ||
	    (d.offset & space->page_mask) ||
	    (unsigned int)d.policy > VMR_HOLD_IO)
		return -EINVAL;
	r = vmr_region_alloc(space);
	if (!r)
		return -ENOMEM;
	err = vmr_copy_sized(&r->ops, sizeof(r->ops), d.ops, d.ops_size);
	if (err) {
		vmr_region_discard(r);
		return err;
	}
	r->start = d.start;
	r->end = d.start + d.len;
	r->prot = d.prot;
	r->offset = d.offset;
	r->policy = d.policy;
	r->private_data = d.private_data;
	u.start = r->start;
	u.end = r->end;
	u.mapped = r;
	return update(&u, flags);
}

int vmr_unmap(struct vmr_space *space, uintptr_t start, size_t len)
{
	struct update u = { .space = space, .op = OP_UNMAP };

	if (!space || !range_ok(space, start, len))
		return -EINVAL;
	u.start = start;
	u.end = start + len;
	return update(&u, 0);
}

int vmr_protect(struct vmr_space *space, uintptr_t start, size_t len,
		unsigned int prot)
{
	struct update u = { .space = space, .op = OP_PROTECT, .prot = prot };

	if (!space || !range_ok(space, start, len) || (prot & ~PROT_ALL))
		return -EINVAL;
	u.start = start;
	u.end = start + len;
	return update(&u, 0);
}
