/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * libvmaretry - the userfaultfd runtime: non-cooperative events.
 *
 * Ordering of events and faults.  A non-cooperative event (REMOVE, UNMAP,
 * REMAP, FORK) must change the space before any fault read after it is
 * resolved: a fault queued behind a REMOVE must not be filled with stale
 * data from the store.  So, under the read mutex (uffd_excl.c), each batch
 * gets a sequence number and records the last batch before it that held an
 * event (its barrier), and a batch that holds events becomes the new last
 * one.  Before resolving anything a thread waits until the events of its
 * barrier batch have been applied (events_applied, a futex:
 * vmr_uffd_wait_events()); a batch with events applies them in message
 * order and then publishes its own sequence number
 * (vmr_uffd_publish_events(), a release that the waiters' acquire pairs
 * with).  Event batches thus apply in order, and a fault waits only while
 * an earlier event is being applied.  A thread waits holding no lock, and
 * applying an event waits only for faults that hold range locks, which no
 * waiting thread does: no deadlock.  Sequence numbers wrap: they are
 * compared by their signed difference.
 *
 * Events change the space with the ordinary update calls, under its write
 * lock, which waits for the faults installing pages in the range:
 *   REMOVE (MADV_DONTNEED/REMOVE): unregister the range (the kernel then
 *          zero-fills it, as the discarded memory must read) and unmap it
 *          from the space;
 *   UNMAP: unmap it from the space (the VMA, and its registration, is
 *          gone);
 *   REMAP: map the moved regions at their new address (same store, same
 *          offsets), unmap the old range;
 *   FORK:  a child runtime, with a copy of the regions, serves the child's
 *          new userfaultfd (uffd_fork.c).
 * Every allocation of an event's application goes through the fork guard
 * (forkguard.c): it never waits for a fork() in flight, whose message may
 * sit behind the event (every other handler waits for the event's
 * application before it reads again).
 */
#include "uffd_internal.h"
#include "futex.h"

#include <limits.h>
#include <sys/ioctl.h>
#include <unistd.h>

/* Apply one event to the space (see above), on the thread that read it. */
void vmr_uffd_apply_event(struct uffd_handler *h, const struct uffd_msg *msg)
{
	struct vmr_uffd *u = h->uffd;
	struct uffd_region_copy *v;
	size_t n;

	VMR_DEBUG_POINT(VMR_DP_UFFD_EVENT, 0);
	switch (msg->event) {
	case UFFD_EVENT_REMOVE: {
		struct uffdio_range r = {
			.start = msg->arg.remove.start,
			.len = msg->arg.remove.end - msg->arg.remove.start,
		};

		hcount(h, UC(events_remove));
		/* The discarded memory must read as zero from now on. */
		ioctl(u->fd, UFFDIO_UNREGISTER, &r);
		vmr_unmap(u->space, r.start, r.len);
		break;
	}
	case UFFD_EVENT_UNMAP:
		hcount(h, UC(events_unmap));
		vmr_unmap(u->space, msg->arg.remove.start,
			  msg->arg.remove.end - msg->arg.remove.start);
		break;
	case UFFD_EVENT_REMAP:
		hcount(h, UC(events_remap));
		n = vmr_uffd_copy_regions(
			u->space, msg->arg.remap.from,
			msg->arg.remap.from + msg->arg.remap.len, &v);
		vmr_uffd_map_copies(
			u, v, n,
			(intptr_t)(msg->arg.remap.to - msg->arg.remap.from),
			msg->arg.remap.to, msg->arg.remap.len);
		vmr_uffd_free_copies(v, n);
		vmr_unmap(u->space, msg->arg.remap.from, msg->arg.remap.len);
		break;
	case UFFD_EVENT_FORK:
		hcount(h, UC(events_fork));
		if (vmr_uffd_child_create(u, (int)msg->arg.fork.ufd))
			close((int)msg->arg.fork.ufd);
		break;
	default:
		break;
	}
}

/* Wait until the events of batch @barrier have been applied. */
void vmr_uffd_wait_events(struct vmr_uffd *u, uint32_t barrier)
{
	uint32_t done;

	for (;;) {
		/* Pairs with the release in vmr_uffd_publish_events(). */
		done = atomic_load_explicit(&u->events_applied,
					    memory_order_acquire);
		if ((int32_t)(done - barrier) >= 0)
			return;
		vmr_futex_wait(&u->events_applied, done);
	}
}

void vmr_uffd_publish_events(struct vmr_uffd *u, uint32_t seq)
{
	atomic_store_explicit(&u->events_applied, seq, memory_order_release);
	vmr_futex_wake(&u->events_applied, INT_MAX);
}
