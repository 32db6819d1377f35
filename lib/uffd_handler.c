/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * libvmaretry - the userfaultfd runtime's handler threads.
 *
 * Threads.  N handler threads wait on one userfaultfd (O_NONBLOCK), each
 * in an epoll set of its own (handler_epoll()), and read its messages in
 * batches: by default, one message a read when there are several threads
 * (vmr_uffd_default_batch()).  A thread that wakes reads until a read
 * finds nothing (handler_main()).  Each fault message becomes
 * vmr_handle_fault() on the space, passed as a USER fault (with
 * UFFD_USER_MODE_ONLY the descriptor hears no other), WRITE if the
 * message says so; the region's handler resolves it (uffd_fault.c).  Each
 * event is applied in the order uffd_event.c keeps.  A fault that cannot
 * be installed yet (the kernel's EAGAIN, a partial copy, or an event read
 * and not yet applied) is deferred: retried after the thread's next read,
 * or within a millisecond when the thread is idle, never in a loop that
 * reads nothing.  On shutdown whatever is still
 * deferred is woken: the teardown has unregistered its range, so its
 * thread's next fault is an ordinary one.
 *
 * Without events.  A descriptor that delivers none (VMR_UFFD_NO_EVENTS, a
 * kernel without them, or a handed-in descriptor whose features name none)
 * has nothing to order: its handler threads read in parallel, without the
 * read mutex, the batch numbers or the exclusion, as a hand-written
 * handler does.  A madvise(MADV_DONTNEED) of registered memory then races
 * the runtime's installs as it races any handler's: a copy for a page in
 * the range may land after the zap and stay.  A caller that hears no
 * events keeps its discards apart from faults on the same pages (a page
 * discarded alone faults in again: "Installed pages" in uffd_fault.c).
 *
 * A thread's buffers (messages, deferred faults, the page) are allocated
 * when it starts, and it binds its per-space state then: a fault's path
 * allocates nothing.  Its counters are written by it alone.
 */
#include "uffd_internal.h"

#include <errno.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

/*
 * Messages a read() takes when the config names no number: DEFAULT_BATCH
 * with one handler thread (a read() for many faults), one with several.
 * A thread resolves the faults it read one after the other, and each
 * message wakes one idle thread (EPOLLEXCLUSIVE): a thread that took more
 * would hold back faults that the threads woken for them would have
 * served, and those would find nothing to read.  It costs a read() a
 * fault.  bench_uffd --reps=1 --max-handlers=8 (2026-12-07, 2 vCPUs),
 * alternating runs of each build, medians of ours / minimal at 2 and 4
 * handlers:
 *   zero store (--pages=32768, 24 runs): without events 0.94 -> 1.00 and
 *   0.87 -> 0.94; without REMOVE 0.94 -> 0.92 and 0.83 -> 0.92; with
 *   REMOVE events 0.79 -> 0.83 and 0.69 -> 0.79; at 8 handlers no change
 *   above the noise (about 0.09: at one handler, the same code in both
 *   builds read 0.99 and 1.06);
 *   sleeping store (eight runs, of a build that read one at a time only
 *   for stores that may block, as this one does): without events 0.92 ->
 *   0.96 and 0.98 -> 1.07, and 1.15 -> 1.26 at 8 (25.4k -> 30.9k pages/s
 *   at 4).
 * The minimal handler gains too when it reads one at a time (+11 % and
 * +7 % at 2 and 4 handlers, zero store); with both reading one at a time
 * the ratios without events are alike: 1.01 and 1.01.
 */
#define DEFAULT_BATCH 64

unsigned int vmr_uffd_default_batch(unsigned int nr_threads)
{
	return nr_threads > 1 ? 1 : DEFAULT_BATCH;
}

/*
 * Poison @addr, whose fault found no region or a forbidden access, unless
 * the range has been mapped since (a stale message, then vmr_uffd_map()
 * after a REMOVE or an unmap): the page is registered again, and poisoning
 * it would give its next access SIGBUS.  The space lock, held for read
 * across the look-up and the ioctl, keeps a vmr_map(), and so the
 * registration that follows it, from landing in between.  A page mapped
 * again is not poisoned: OUT_GONE, and the caller wakes its thread, which
 * faults again.
 */
static enum outcome poison_unless_mapped(struct uffd_handler *h, uintptr_t addr,
					 unsigned int fflags)
{
	struct vmr_space *space = h->uffd->space;
	const struct vmr_region *r;
	enum outcome o;

	vmr_space_read_lock(space);
	r = vmr_space_find_region(space, addr);
	if (r && !vmr_access_error(r, fflags))
		o = OUT_GONE;
	else
		o = vmr_uffdio_poison(h, addr);
	vmr_space_read_unlock(space);
	return o;
}

/*
 * The fault at @addr was poisoned (or not) with outcome @o: whether it is
 * done (false: defer it).  A poison that failed woke nobody: wake the
 * thread, which faults again, rather than leave it asleep.
 */
static bool poisoned(struct uffd_handler *h, uintptr_t addr, enum outcome o)
{
	switch (o) {
	case OUT_AGAIN:
		return false;
	case OUT_GONE:
	case OUT_FAILED:
		vmr_uffdio_wake(h, addr, h->uffd->page);
		return true;
	default: /* woken by the ioctl (OUT_EXISTS: by settling), or dead */
		return true;
	}
}

/* One page-fault message; false if it must be retried later (EAGAIN). */
static bool handle_fault_msg(struct uffd_handler *h, const struct uffd_msg *msg,
			     bool follows)
{
	struct vmr_uffd *u = h->uffd;
	uint64_t flags = msg->arg.pagefault.flags;
	uintptr_t addr = msg->arg.pagefault.address & ~(u->page - 1);
	struct fault_ctx c = { .h = h, .follows = follows };
	unsigned int fflags = VMR_FAULT_FLAG_DEFAULT | VMR_FAULT_FLAG_USER;
	vmr_fault_t res;
	enum outcome o;

	VMR_DEBUG_POINT(VMR_DP_UFFD_FAULT, addr);
	if (flags & UFFD_PAGEFAULT_FLAG_WP)
		c.kind = KIND_WP;
	else if (flags & UFFD_PAGEFAULT_FLAG_MINOR)
		c.kind = KIND_MINOR;
	if (flags & UFFD_PAGEFAULT_FLAG_WRITE) {
		fflags |= VMR_FAULT_FLAG_WRITE;
		c.write = true;
	}
	vmr_handle_fault(u->space, addr, fflags, &c, &res);
	if (c.held) {
		/* Its retry never came (shutdown): let the page go. */
		vmr_page_unlock(c.held->pages, c.held_idx);
		vmr_uffd_mapping_put(c.held);
	}
	switch (c.status) {
	case FAULT_DEFERRED:
		return false;
	case FAULT_GONE:
		/* Gone by munmap/mremap: nothing unregistered, nothing woke
		 * it. */
		vmr_uffdio_wake(h, addr, u->page);
		return true;
	case FAULT_DEAD:
		return true;
	case FAULT_FAILED:
		return poisoned(h, addr, vmr_uffdio_poison(h, addr));
	case FAULT_DONE:
		break;
	}
	if (c.resolved)
		return true;
	if (res & VMR_FAULT_RETRY) {
		/* Unfinished: the runtime is shutting down; let it fault
		 * again (the teardown unregisters the range). */
		vmr_uffdio_wake(h, addr, u->page);
		return true;
	}
	/* A forbidden access, no region, or a handler error: SIGBUS, not a
	 * hang; a stale message finds the range gone (ENOENT): wake it. */
	o = (res & VMR_FAULT_SIGSEGV) ? poison_unless_mapped(h, addr, fflags) :
					vmr_uffdio_poison(h, addr);
	return poisoned(h, addr, o);
}

static void wake_msg(struct uffd_handler *h, const struct uffd_msg *msg)
{
	vmr_uffdio_wake(h,
			msg->arg.pagefault.address & ~(h->uffd->page - 1),
			h->uffd->page);
}

static void defer(struct uffd_handler *h, const struct uffd_msg *msg)
{
	if (h->nr_deferred == MAX_DEFERRED) {
		/* Full: wake it; it will fault again. */
		wake_msg(h, msg);
		return;
	}
	h->deferred[h->nr_deferred++] = *msg;
}

static void retry_deferred(struct uffd_handler *h)
{
	unsigned int n = h->nr_deferred;

	/* Those deferred again are compacted to the front: entry i goes to
	 * a slot at or below i, never over one still to be retried. */
	h->nr_deferred = 0;
	for (unsigned int i = 0; i < n; i++) {
		struct uffd_msg msg = h->deferred[i];

		if (!handle_fault_msg(h, &msg, false))
			h->deferred[h->nr_deferred++] = msg;
	}
}

/*
 * Whether a fault message before message @i of the batch, for the same
 * page, was resolved (a deferred one has its event cleared): message @i
 * was read before that page was installed.
 */
static bool resolved_before(const struct uffd_handler *h, size_t i)
{
	uintptr_t mask = ~(uintptr_t)(h->uffd->page - 1);
	uintptr_t page = h->msgs[i].arg.pagefault.address & mask;

	while (i--)
		if (h->msgs[i].event == UFFD_EVENT_PAGEFAULT &&
		    (h->msgs[i].arg.pagefault.address & mask) == page)
			return true;
	return false;
}

/* Read and handle one batch; how many messages (0: none there). */
static size_t handle_batch(struct uffd_handler *h)
{
	struct vmr_uffd *u = h->uffd;
	uint32_t seq, barrier;
	bool events = false;
	ssize_t got;
	size_t n;

	vmr_uffd_read_begin(h);
	got = read(u->fd, h->msgs, u->batch * sizeof(*h->msgs));
	if (got <= 0) {
		vmr_uffd_read_end(u);
		return 0;
	}
	n = (size_t)got / sizeof(*h->msgs);
	for (size_t i = 0; i < n && !events; i++)
		events = is_event(&h->msgs[i]);
	seq = barrier = 0;
	if (has_events(u)) {
		seq = ++u->batch_seq;
		barrier = atomic_load_explicit(&u->last_event_seq,
					       memory_order_relaxed);
		if (events)
			atomic_store_explicit(&u->last_event_seq, seq,
					      memory_order_relaxed);
	}
	vmr_uffd_read_end(u);
	/* Every page word of the batch at once: hint_set(), uffd_fault.c. */
	for (size_t i = 0; i < n; i++)
		if (!is_event(&h->msgs[i]))
			hint_prefetch(h, h->msgs[i].arg.pagefault.address);

	hcount(h, UC(batches));
	vmr_uffd_wait_events(u, barrier);
	for (size_t i = 0; i < n; i++) {
		hcount(h, UC(messages));
		if (is_event(&h->msgs[i])) {
			vmr_uffd_apply_event(h, &h->msgs[i]);
			continue;
		}
		hcount(h, UC(faults));
		if (!handle_fault_msg(h, &h->msgs[i],
				      !hears_removes(u) &&
					      resolved_before(h, i))) {
			defer(h, &h->msgs[i]);
			h->msgs[i].event = 0; /* not resolved: see above */
		}
	}
	if (events)
		vmr_uffd_publish_events(u, seq);
	return n;
}

/*
 * Each handler waits in an epoll set of its own, holding the userfaultfd
 * with EPOLLEXCLUSIVE: a message wakes one idle handler, not all of them
 * (with plain poll() every handler woke for every message: four context
 * switches a page at eight handlers in bench_uffd).  Waking more than
 * one is a trade on two vCPUs, not a gain: with no handler's set
 * exclusive, vmr_no_events went from 0.78 and 0.90 of the minimal
 * handler to 1.04 and 0.97 at four handlers, but from 1.22 and 1.16 to
 * 0.77 and 0.92 at eight; with the first two sets not exclusive (a message
 * wakes those two and one more), 1.01 and 1.00 at four against 0.90, but
 * 0.92 and 0.89 at two against 1.02 and 1.03 (bench_uffd --store=zero
 * --reps=1 --pages=32768 --max-handlers=8, three sets of eight
 * alternating runs, medians, 2026-12-07).  With REMOVE events waking all
 * took four handlers from 0.72 to 0.83, still under the minimal handler's
 * 0.9, and no other count above the noise.
 */
static int handler_epoll(struct vmr_uffd *u)
{
	struct epoll_event ev = { .events = EPOLLIN | EPOLLEXCLUSIVE };
	int ep = epoll_create1(EPOLL_CLOEXEC);

	if (ep < 0)
		return -errno;
	ev.data.fd = u->fd;
	if (epoll_ctl(ep, EPOLL_CTL_ADD, u->fd, &ev)) {
		/* A kernel without EPOLLEXCLUSIVE (before 4.5). */
		ev.events = EPOLLIN;
		if (epoll_ctl(ep, EPOLL_CTL_ADD, u->fd, &ev))
			goto fail;
	}
	ev.events = EPOLLIN;
	ev.data.fd = u->stop_fd;
	if (epoll_ctl(ep, EPOLL_CTL_ADD, u->stop_fd, &ev))
		goto fail;
	return ep;
fail:
	ev.data.fd = -errno;
	close(ep);
	return ev.data.fd;
}

static void *handler_main(void *arg)
{
	struct uffd_handler *h = arg;
	struct vmr_uffd *u = h->uffd;
	struct epoll_event ev[2];
	bool soon;
	int n;

	vmr_space_register_thread(u->space);
	/* Bind the thread's per-space state now, not on its first fault:
	 * a fault's path then allocates nothing. */
	vmr_tstate_get(u->space);
	while (!atomic_load(&u->stopping)) {
		/* With deferred work, look again soon even if idle. */
		soon = h->nr_deferred ||
		       atomic_load_explicit(&u->children_pending,
					    memory_order_relaxed);
		n = epoll_wait(h->epoll_fd, ev, 2, soon ? 1 : -1);
		if (n < 0 && errno != EINTR)
			break;
		if (atomic_load(&u->stopping))
			break;
		for (int i = 0; i < n; i++) {
			if (ev[i].data.fd != u->fd)
				continue;
			if (ev[i].events & (EPOLLERR | EPOLLHUP))
				atomic_store(&u->dead, true);
			/*
			 * Read until a read finds nothing.  Going back to
			 * epoll_wait() after each batch instead (the level-
			 * triggered set would report what came meanwhile)
			 * saves the empty read but costs a wait per batch
			 * while faults keep coming.  Counted with strace -c
			 * over bench_uffd --store=zero --pages=32768, one
			 * repetition, when every thread read batches of 64:
			 * at 1 handler, 8198 reads (2 empty) and 2 waits
			 * here against 8197 reads and 8193 waits; at 2
			 * handlers, 23270 reads (2649 empty) and 2650 waits
			 * against 22426 reads and 22422 waits.  Reading one
			 * message at a time (2 handlers, the default since),
			 * 32892 reads (26 empty) and 27 waits for 32768
			 * faults: waiting after each read would wait for
			 * each fault.
			 */
			while (handle_batch(h) > 0)
				;
		}
		if (h->nr_deferred && !atomic_load(&u->dead))
			retry_deferred(h);
		vmr_uffd_start_children(u);
	}
	/* Whatever was deferred: wake it (the teardown unregisters). */
	for (unsigned int i = 0; i < h->nr_deferred; i++)
		wake_msg(h, &h->deferred[i]);
	h->nr_deferred = 0;
	vmr_space_unregister_thread(u->space);
	return NULL;
}

/*
 * Allocate each handler's buffers and start its thread; 0 or -errno, and
 * then no thread of @u runs (runtime_free() takes the buffers).
 */
int vmr_uffd_start_threads(struct vmr_uffd *u)
{
	for (unsigned int i = 0; i < u->nr_threads; i++) {
		struct uffd_handler *h = &u->handlers[i];

		h->uffd = u;
		h->epoll_fd = handler_epoll(u);
		if (h->epoll_fd < 0)
			return h->epoll_fd;
		h->msgs = vmr_alloc(u->batch * sizeof(*h->msgs));
		h->deferred = vmr_alloc(MAX_DEFERRED * sizeof(*h->deferred));
		h->buf = vmr_alloc_align(u->page, u->page);
		if (!h->msgs || !h->deferred || !h->buf)
			return -ENOMEM;
	}
	for (unsigned int i = 0; i < u->nr_threads; i++) {
		if (pthread_create(&u->handlers[i].thread, NULL, handler_main,
				   &u->handlers[i])) {
			/* Stop the ones started. */
			atomic_store(&u->stopping, true);
			eventfd_write(u->stop_fd, 1);
			for (unsigned int j = 0; j < i; j++)
				pthread_join(u->handlers[j].thread, NULL);
			return -EAGAIN;
		}
	}
	u->started = true;
	return 0;
}
