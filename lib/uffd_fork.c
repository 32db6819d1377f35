/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * libvmaretry - the userfaultfd runtime: forked children.
 *
 * A FORK event hands the runtime the child's new userfaultfd.  A child
 * runtime, with a space of its own holding a copy of the parent's regions
 * (same stores, same offsets: the child's memory is a copy of the
 * parent's), serves it with one handler thread.  Its thread starts only
 * once its regions are in (its first fault must find them), and only
 * where glibc's fork-time locks are free: pthread_create() allocates in
 * glibc, which another fork() in flight may hold locked while it waits for
 * a handler to read its message (forkguard.c).  So the start runs inside
 * the fork guard, and a handler refused tries again within a millisecond
 * (uffd_handler.c's wait); until then the child's faults wait in its
 * descriptor.  A child whose thread cannot start loses its descriptor:
 * its faulters wake, and its memory is plain anonymous memory from then
 * on.  The parent's vmr_uffd_destroy() destroys its children.
 */
#include "uffd_internal.h"

#include <unistd.h>

/* The runtime of the child whose descriptor a FORK event handed in as
 * @fd; 0, or -errno and @fd is the caller's to close. */
int vmr_uffd_child_create(struct vmr_uffd *parent, int fd)
{
	struct vmr_uffd_config cfg = { .threads = 1,
				       .batch = parent->batch,
				       .fd = fd,
				       .flags = VMR_UFFD_FD_READY,
				       .features = parent->features };
	struct vmr_space_config scfg = {
		.page_size = parent->page,
		.flavor = parent->space->flavor,
		.granularity = parent->space->granularity,
		.policy = parent->space->policy,
	};
	struct vmr_space *space;
	struct vmr_uffd *child;
	struct uffd_region_copy *v;
	size_t n;
	int err;

	err = vmr_space_create(&scfg, sizeof(scfg), &space);
	if (err)
		return err;
	err = vmr_uffd_runtime_new(space, &cfg, &child, false);
	if (err) {
		vmr_space_destroy(space);
		return err;
	}
	child->own_fd = true; /* the kernel gave it to us */
	child->child_space = space;
	/* The child's memory is a copy of the parent's: same stores. */
	n = vmr_uffd_copy_regions(parent->space, 0, UINTPTR_MAX, &v);
	for (size_t i = 0; i < n; i++)
		vmr_uffd_map_copies(child, &v[i], 1, 0, v[i].start,
				    v[i].end - v[i].start);
	vmr_uffd_free_copies(v, n);
	/* Its threads start only now (its first fault must find the
	 * regions), and only where glibc's fork-time locks are free. */
	pthread_mutex_lock(&parent->children_lock);
	child->next_child = parent->children;
	parent->children = child;
	pthread_mutex_unlock(&parent->children_lock);
	atomic_store_explicit(&parent->children_pending, true,
			      memory_order_relaxed);
	vmr_uffd_start_children(parent);
	return 0;
}

/* On a handler thread of @u: start the threads of the children made since
 * the last call (see above). */
void vmr_uffd_start_children(struct vmr_uffd *u)
{
	if (!atomic_load_explicit(&u->children_pending, memory_order_relaxed) ||
	    !vmr_fork_enter())
		return;
	atomic_store_explicit(&u->children_pending, false,
			      memory_order_relaxed);
	pthread_mutex_lock(&u->children_lock);
	for (struct vmr_uffd *c = u->children; c; c = c->next_child) {
		if (c->started || c->fd < 0)
			continue;
		if (vmr_uffd_start_threads(c)) {
			close(c->fd);
			c->fd = -1;
		}
	}
	pthread_mutex_unlock(&u->children_lock);
	vmr_fork_leave();
}
