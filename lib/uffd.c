/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * libvmaretry - the userfaultfd runtime: its life cycle, queries and
 * counters.
 *
 * The runtime serves one userfaultfd for one space.  Its parts, each
 * argued in its own file (uffd_internal.h lists them):
 *  - the descriptor, opened or adopted, with the features negotiated at
 *    run time (uffd_open.c);
 *  - N handler threads reading messages (uffd_handler.c); each fault
 *    message goes through the fault engine to the regions' fault handler,
 *    which takes the page's lock, reads the store and installs the page
 *    (uffd_fault.c) with an ioctl whose every outcome is classified
 *    (uffd_ioctl.c);
 *  - events (REMOVE, UNMAP, REMAP, FORK) change the space before any
 *    fault read after them is resolved (uffd_event.c, uffd_fork.c), and
 *    where REMOVE events come no install overlaps a read of messages
 *    (uffd_excl.c);
 *  - vmr_uffd_map() registers a range and maps it as a region over a
 *    store (uffd_mapping.c).
 * The invariant they keep together: every fault message is answered, by
 * an install, a wake-up, a poison, or the kernel's own wake-up when its
 * range is unregistered or its process exits; no faulting thread is left
 * asleep, and no page is installed with data older than a discard the
 * runtime heard of.
 *
 * Teardown.  vmr_uffd_destroy() shuts the space down (faults in the engine
 * finish or return), unregisters every range (which wakes every thread
 * waiting in a fault on them), stops the threads once no fork() can be
 * waiting for one (stop_threads()), reads what is left on the descriptor
 * (a thread that caused an event sleeps until it is read), and destroys
 * the runtimes of forked children.
 *
 * Counters are per handler thread, written by it alone (relaxed), summed
 * on read: vmr_uffd_stats() is a snapshot, not an atomic one.
 */
#include "uffd_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <unistd.h>

static void runtime_free(struct vmr_uffd *u)
{
	if (u->handlers) {
		for (unsigned int i = 0; i < u->nr_threads; i++) {
			vmr_free(u->handlers[i].buf);
			vmr_free(u->handlers[i].msgs);
			vmr_free(u->handlers[i].deferred);
			if (u->handlers[i].epoll_fd >= 0)
				close(u->handlers[i].epoll_fd);
		}
		vmr_free(u->handlers);
	}
	if (u->stop_fd >= 0)
		close(u->stop_fd);
	if (u->own_fd && u->fd >= 0)
		close(u->fd);
	pthread_mutex_destroy(&u->read_lock);
	pthread_mutex_destroy(&u->children_lock);
	vmr_free(u);
}

/*
 * A runtime for @space as @cfg says (checked by the caller), its handler
 * threads started if @start (a forked child's start later: uffd_fork.c);
 * 0 or -errno, with nothing left behind.
 */
int vmr_uffd_runtime_new(struct vmr_space *space,
			 const struct vmr_uffd_config *cfg,
			 struct vmr_uffd **out, bool start)
{
	struct vmr_uffd *u;
	long cpus;
	int err;

	u = vmr_alloc_aligned(sizeof(*u));
	if (!u)
		return -ENOMEM;
	memset(u, 0, sizeof(*u));
	u->space = space;
	u->fd = -1;
	u->stop_fd = -1;
	u->page = vmr_space_page_size(space);
	u->page_shift = (unsigned int)__builtin_ctzl(u->page);
	cpus = sysconf(_SC_NPROCESSORS_ONLN);
	u->nr_threads = cfg->threads ? cfg->threads :
				       (unsigned int)(cpus > 0 ? cpus : 1);
	u->batch = cfg->batch ? cfg->batch :
				vmr_uffd_default_batch(u->nr_threads);
	atomic_init(&u->events_applied, 0);
	atomic_init(&u->dead, false);
	atomic_init(&u->stopping, false);
	vmr_uffd_read_lock_init(&u->read_lock);
	atomic_init(&u->reading, 0);
	atomic_init(&u->last_event_seq, 0);
	pthread_mutex_init(&u->children_lock, NULL);
	u->handlers = vmr_alloc_aligned(u->nr_threads * sizeof(*u->handlers));
	if (u->handlers)
		memset(u->handlers, 0, u->nr_threads * sizeof(*u->handlers));
	for (unsigned int i = 0; u->handlers && i < u->nr_threads; i++)
		u->handlers[i].epoll_fd = -1;
	u->stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (!u->handlers || u->stop_fd < 0) {
		err = u->stop_fd < 0 ? -errno : -ENOMEM;
		runtime_free(u);
		return err;
	}
	err = vmr_uffd_negotiate(u, cfg);
	if (!err && start)
		err = vmr_uffd_start_threads(u);
	if (err) {
		runtime_free(u);
		return err;
	}
	*out = u;
	return 0;
}

int vmr_uffd_create(struct vmr_space *space,
		    const struct vmr_uffd_config *config, size_t config_size,
		    struct vmr_uffd **uffdp)
{
	struct vmr_uffd_config cfg;
	int err;

	if (!space || !uffdp)
		return -EINVAL;
	err = vmr_copy_sized(&cfg, sizeof(cfg), config, config_size);
	if (err)
		return err;
	if (!config || config_size < offsetof(struct vmr_uffd_config, fd) +
						      sizeof(int))
		cfg.fd = -1;
	/* Now, before the runtime opens descriptors that could take a closed
	 * @fd's number and be mistaken for it. */
	if (cfg.fd >= 0 && fcntl(cfg.fd, F_GETFL) < 0)
		return -EBADF;
	if (cfg.threads > MAX_THREADS || cfg.batch > MAX_BATCH ||
	    (cfg.flags & ~(VMR_UFFD_FD_READY | VMR_UFFD_NO_EVENTS |
			   VMR_UFFD_NO_REMOVE)) ||
	    ((cfg.flags & VMR_UFFD_NO_REMOVE) &&
	     (cfg.features & UFFD_FEATURE_EVENT_REMOVE)) ||
	    vmr_space_page_size(space) != (size_t)sysconf(_SC_PAGESIZE))
		return -EINVAL;
	return vmr_uffd_runtime_new(space, &cfg, uffdp, true);
}

/*
 * Read what is left on the stopped runtime's descriptor: a thread that
 * caused an event sleeps until it is read, and a fork()'s child, not yet
 * running, holds the descriptor open, so closing it would not end that
 * sleep.  Faults need nothing: unregistering woke them.
 */
static void drain(struct vmr_uffd *u)
{
	struct uffd_msg msg;

	while (read(u->fd, &msg, sizeof(msg)) == (ssize_t)sizeof(msg))
		if (msg.event == UFFD_EVENT_FORK)
			close((int)msg.arg.fork.ufd);
}

/* Unregister every range this runtime registered (its regions). */
static void unregister_all(struct vmr_uffd *u)
{
	struct vmr_tree_iter it;
	struct vmr_tree_entry e;

	vmr_space_read_lock(u->space);
	vmr_tree_iter_start(&it, u->space->tree, 0);
	while (vmr_tree_iter_next(&it, &e)) {
		struct vmr_region *r = e.value;
		struct uffdio_range range = { .start = e.start,
					      .len = e.end - e.start };

		if (is_uffd_region(r) &&
		    ((struct uffd_mapping *)r->private_data)->uffd == u)
			ioctl(u->fd, UFFDIO_UNREGISTER, &range);
	}
	vmr_space_read_unlock(u->space);
}

/*
 * Stop the handler threads only once no fork() can be waiting for one of
 * them.  A thread's exit frees its malloc() cache inside glibc: while a
 * fork() in flight holds malloc's locks, that exit waits for the fork,
 * and a fork that copied our ranges waits for a handler to read its FORK
 * message: the join would never return.  So the ranges are unregistered
 * first (a fork that copies the address space after that sends us
 * nothing), and the threads go on reading until no fork() that began
 * before is in flight.
 */
static void stop_threads(struct vmr_uffd *u)
{
	if (!u->started)
		return;
	unregister_all(u);
	while (vmr_fork_in_flight())
		usleep(1000);
	atomic_store(&u->stopping, true);
	eventfd_write(u->stop_fd, 1);
	for (unsigned int i = 0; i < u->nr_threads; i++)
		pthread_join(u->handlers[i].thread, NULL);
}

int vmr_uffd_destroy(struct vmr_uffd *uffd)
{
	struct vmr_uffd *child, *next;

	if (!uffd)
		return 0;
	vmr_space_shutdown(uffd->space);
	stop_threads(uffd);
	/* Again: a REMAP applied while the threads ran may have mapped a
	 * range the first pass did not see. */
	unregister_all(uffd);
	drain(uffd);
	for (child = uffd->children; child; child = next) {
		struct vmr_space *cs = child->child_space;

		next = child->next_child;
		vmr_uffd_destroy(child);
		vmr_space_destroy(cs);
	}
	runtime_free(uffd);
	return 0;
}

int vmr_uffd_fd(const struct vmr_uffd *uffd)
{
	return uffd ? uffd->fd : -1;
}

uint64_t vmr_uffd_features(const struct vmr_uffd *uffd)
{
	return uffd ? uffd->features : 0;
}

struct vmr_space *vmr_uffd_space(const struct vmr_uffd *uffd)
{
	return uffd ? uffd->space : NULL;
}

bool vmr_uffd_is_dead(const struct vmr_uffd *uffd)
{
	return uffd && atomic_load(&uffd->dead);
}

int vmr_uffd_stats(const struct vmr_uffd *uffd, struct vmr_uffd_stats *stats,
		   size_t size)
{
	uint64_t sum[NR_UFFD_COUNTERS] = { 0 };
	size_t n = size / sizeof(uint64_t);

	if (!uffd || !stats || size % sizeof(uint64_t))
		return -EINVAL;
	for (unsigned int i = 0; i < uffd->nr_threads; i++)
		for (size_t c = 0; c < NR_UFFD_COUNTERS; c++)
			sum[c] += atomic_load_explicit(
				&uffd->handlers[i].count[c],
				memory_order_relaxed);
	if (n > NR_UFFD_COUNTERS)
		n = NR_UFFD_COUNTERS;
	memcpy(stats, sum, n * sizeof(uint64_t));
	memset((uint64_t *)stats + n, 0, size - n * sizeof(uint64_t));
	return 0;
}
