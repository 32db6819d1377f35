/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * libvmaretry - the userfaultfd runtime: mappings.
 *
 * vmr_uffd_map() maps a range into the space as a region whose private
 * data is a mapping (the store, its ops, the page map that holds each
 * page's lock and "installed" state), and registers the range with the
 * kernel.  A region split or copied by the space shares its mapping
 * (region_open() in uffd_fault.c takes a reference for the new piece,
 * region_close() drops it), so the mapping lives as long as any piece of
 * it, as long as any fault that references it (uffd_fault.c takes its
 * own reference across a call that may drop its lock), and as long as a
 * copy of its regions for an event (below).  A region is
 * closed once no fault holds or can find it (space.h), so the last
 * reference frees the page map and the mapping with nobody left to use
 * them.
 *
 * Each mapping gets a unique id: a fault that read a page into its buffer
 * and retried tells by the id whether the buffer belongs to the mapping it
 * finds now (the range may have been unmapped and mapped again).
 *
 * An event that moves or copies regions (REMAP, FORK) takes a copy of
 * them under the space's read lock (vmr_uffd_copy_regions()) and maps new
 * mappings over the same stores (vmr_uffd_map_copies()): the new regions
 * fault in from the store at the same offsets.
 */
#include "uffd_internal.h"

#include <errno.h>
#include <string.h>
#include <sys/ioctl.h>

static _Atomic uint64_t next_mapping_id = 1;

/* A mapping of [base, base + len) over @store, with one reference. */
struct uffd_mapping *vmr_uffd_mapping_new(struct vmr_uffd *u, uintptr_t base,
					  size_t len, unsigned int mode,
					  const struct vmr_uffd_store_ops *ops,
					  void *store)
{
	struct uffd_mapping *m = vmr_alloc(sizeof(*m));

	if (!m)
		return NULL;
	memset(m, 0, sizeof(*m));
	if (vmr_pagemap_create(u->space, len / u->page, &m->pages)) {
		vmr_free(m);
		return NULL;
	}
	m->id = atomic_fetch_add(&next_mapping_id, 1);
	m->base = base;
	m->mode = mode;
	m->uffd = u;
	m->ops = *ops;
	m->store = store;
	atomic_init(&m->refs, 1);
	return m;
}

void vmr_uffd_mapping_get(struct uffd_mapping *m)
{
	atomic_fetch_add(&m->refs, 1);
}

void vmr_uffd_mapping_put(struct uffd_mapping *m)
{
	if (atomic_fetch_sub(&m->refs, 1) == 1) {
		vmr_pagemap_destroy(m->pages);
		vmr_free(m);
	}
}

/*
 * Each uffd region of the space in [start, end), as a copy; a failed
 * allocation ends the list early.  Each copy holds a reference on its
 * mapping, taken under the space lock while the region holds one: an
 * unmap once the lock is dropped may close the region, and the mapping's
 * store and ops are read after that.  vmr_uffd_free_copies() drops them.
 */
size_t vmr_uffd_copy_regions(struct vmr_space *space, uintptr_t start,
			     uintptr_t end, struct uffd_region_copy **out)
{
	struct vmr_tree_iter it;
	struct vmr_tree_entry e;
	struct uffd_region_copy *v = NULL;
	size_t n = 0, cap = 0;

	vmr_space_read_lock(space);
	vmr_tree_iter_start(&it, space->tree, start);
	while (vmr_tree_iter_next(&it, &e) && e.start < end) {
		struct vmr_region *r = e.value;

		if (!is_uffd_region(r))
			continue;
		if (n == cap) {
			struct uffd_region_copy *nv;

			cap = cap * 2 + 8;
			nv = vmr_realloc(v, n * sizeof(*v), cap * sizeof(*v));
			if (!nv)
				break;
			v = nv;
		}
		v[n].start = r->start < start ? start : r->start;
		v[n].end = r->end > end ? end : r->end;
		v[n].prot = r->prot;
		v[n].offset = r->offset + (v[n].start - r->start);
		v[n].m = r->private_data;
		vmr_uffd_mapping_get(v[n].m);
		n++;
	}
	vmr_space_read_unlock(space);
	*out = v;
	return n;
}

/* Drop the references of vmr_uffd_copy_regions()'s @n copies, and @v. */
void vmr_uffd_free_copies(struct uffd_region_copy *v, size_t n)
{
	for (size_t i = 0; i < n; i++)
		vmr_uffd_mapping_put(v[i].m);
	vmr_free(v);
}

/* Map each copy of @v, moved by @shift, with a new mapping of [base,
 * base + len) over the copy's store.  A copy that cannot be mapped is left
 * out: its pages then fault as unmapped ones (poisoned, or zero-filled
 * where the kernel has no UFFDIO_POISON). */
void vmr_uffd_map_copies(struct vmr_uffd *u, const struct uffd_region_copy *v,
			 size_t n, intptr_t shift, uintptr_t base, size_t len)
{
	for (size_t i = 0; i < n; i++) {
		struct uffd_mapping *m =
			vmr_uffd_mapping_new(u, base, len, v[i].m->mode,
					     &v[i].m->ops, v[i].m->store);
		struct vmr_region_desc d = {
			.start = (uintptr_t)((intptr_t)v[i].start + shift),
			.len = v[i].end - v[i].start,
			.prot = v[i].prot,
			.offset = v[i].offset,
			.ops = &vmr_uffd_region_ops,
			.ops_size = sizeof(vmr_uffd_region_ops),
			.private_data = m,
		};

		if (!m)
			continue;
		if (vmr_map(u->space, &d, sizeof(d), VMR_MAP_REPLACE))
			vmr_uffd_mapping_put(m);
	}
}

int vmr_uffd_map(struct vmr_uffd *uffd, void *addr, size_t len,
		 unsigned int prot, uint64_t offset, unsigned int mode,
		 const struct vmr_uffd_store_ops *ops, size_t ops_size,
		 void *store)
{
	struct vmr_uffd_store_ops o;
	struct uffdio_register reg;
	struct vmr_region_desc d;
	struct uffd_mapping *m;
	uint64_t need;
	int err;

	unsigned int kind = mode & ~VMR_UFFD_FAST_STORE;

	if (!uffd || !addr || !len ||
	    ((uintptr_t)addr | len) & (uffd->page - 1) ||
	    (uintptr_t)addr + len <= (uintptr_t)addr ||
	    (kind != VMR_UFFD_MISSING &&
	     kind != (VMR_UFFD_MISSING | VMR_UFFD_WP) &&
	     kind != VMR_UFFD_MINOR))
		return -EINVAL;
	err = vmr_copy_sized(&o, sizeof(o), ops, ops_size);
	if (err)
		return err;
	if (!o.read && kind != VMR_UFFD_MINOR)
		return -EINVAL;
	if (atomic_load(&uffd->dead))
		return -ESRCH;
	m = vmr_uffd_mapping_new(uffd, (uintptr_t)addr, len, mode, &o, store);
	if (!m)
		return -ENOMEM;
	memset(&d, 0, sizeof(d));
	d.start = (uintptr_t)addr;
	d.len = len;
	d.prot = prot;
	d.offset = offset;
	d.ops = &vmr_uffd_region_ops;
	d.ops_size = sizeof(vmr_uffd_region_ops);
	d.private_data = m;
	err = vmr_map(uffd->space, &d, sizeof(d), 0);
	if (err) {
		vmr_uffd_mapping_put(m);
		return err;
	}
	memset(&reg, 0, sizeof(reg));
	reg.range.start = (uintptr_t)addr;
	reg.range.len = len;
	reg.mode =
		(mode & VMR_UFFD_MISSING ? UFFDIO_REGISTER_MODE_MISSING : 0) |
		(mode & VMR_UFFD_WP ? UFFDIO_REGISTER_MODE_WP : 0) |
		(mode & VMR_UFFD_MINOR ? UFFDIO_REGISTER_MODE_MINOR : 0);
	need = mode & VMR_UFFD_MINOR ? (1ull << _UFFDIO_CONTINUE) :
				       (1ull << _UFFDIO_COPY);
	if (ioctl(uffd->fd, UFFDIO_REGISTER, &reg)) {
		err = errno == ESRCH || errno == ENOSPC ? -ESRCH : -errno;
	} else if ((reg.ioctls & need) != need) {
		struct uffdio_range r = reg.range;

		ioctl(uffd->fd, UFFDIO_UNREGISTER, &r);
		err = -EINVAL;
	}
	if (err)
		vmr_unmap(uffd->space, (uintptr_t)addr, len);
	return err;
}

int vmr_uffd_unmap(struct vmr_uffd *uffd, void *addr, size_t len)
{
	struct uffdio_range r = { .start = (uintptr_t)addr, .len = len };

	if (!uffd || !len || ((uintptr_t)addr | len) & (uffd->page - 1) ||
	    (uintptr_t)addr + len <= (uintptr_t)addr)
		return -EINVAL;
	/* vmr_unmap() would refuse after the range was unregistered. */
	if (vmr_space_is_write_locked(uffd->space))
		return -EDEADLK;
	/* Wakes the faults waiting in the range; not an error if gone. */
	ioctl(uffd->fd, UFFDIO_UNREGISTER, &r);
	return vmr_unmap(uffd->space, (uintptr_t)addr, len);
}
