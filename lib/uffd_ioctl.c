/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * libvmaretry - the userfaultfd runtime's resolving ioctls, and the
 * classes of their outcomes.
 *
 * COPY, ZEROPAGE, CONTINUE and POISON report in two encodings: -1 with
 * errno, or a count field that holds the bytes done or a negative errno
 * (a partial copy is a count short of the length); WRITEPROTECT only in
 * the first.  EAGAIN is seen in both.  outcome_of() folds them into one
 * class, and the callers act on the class:
 *   done         the page is installed, and the faulter woken (by the
 *                ioctl, or by UFFDIO_WAKE after a DONTWAKE copy);
 *   EEXIST       someone installed it already: done, and UFFDIO_WAKE;
 *   EAGAIN       the layout is changing (an event is queued and unread, or
 *                just read and not yet completed), or the copy was partial:
 *                the fault is deferred and retried after the thread's next
 *                read of messages, or within a millisecond, never in a loop
 *                that reads nothing (uffd_handler.c);
 *   ENOENT       the range is no longer registered (unregistered, unmapped
 *                or moved): nothing to install; wake, in case no
 *                unregister did;
 *   ESRCH        the process exited: the runtime is dead, threads idle
 *                (ENOSPC before Linux 4.13);
 *   other        a bug or a hostile range: poison the page (or zero it),
 *                which wakes the faulter; where that fails too, wake it,
 *                and its thread faults again rather than sleep.
 * A fault that does not resolve from the store (no region, a forbidden
 * access, a store error) is poisoned, so the faulting thread gets SIGBUS
 * instead of sleeping forever; a stale message (a duplicate read after its
 * range was unregistered) finds the range gone (ENOENT) and is only
 * woken.  Every path installs, wakes, or knows that the kernel woke
 * (unregistered or dead): no faulter is left asleep.
 *
 * Every call here runs on a handler thread and counts on that thread's
 * counters only.
 */
#include "uffd_internal.h"

#include <errno.h>
#include <sys/ioctl.h>

/*
 * Classify an ioctl that returned @ret and whose count field says @done of
 * @len bytes (read the field after the ioctl: not as an argument of the
 * same call, whose evaluation order C leaves open).
 */
static enum outcome outcome_of(int ret, int64_t done, size_t len)
{
	int err = ret < 0 ? errno : 0;

	if (!err && done < 0)
		err = (int)-done;
	if (!err && (uint64_t)done != len)
		err = EAGAIN; /* partial: the rest is retried */
	switch (err) {
	case 0:
		return OUT_OK;
	case EEXIST:
		return OUT_EXISTS;
	case EAGAIN:
		return OUT_AGAIN;
	case ENOENT:
		return OUT_GONE;
	case ESRCH:
	case ENOSPC: /* ESRCH before Linux 4.13 */
		return OUT_DEAD;
	default:
		return OUT_FAILED;
	}
}

void vmr_uffdio_wake(struct uffd_handler *h, uintptr_t addr, size_t len)
{
	struct uffdio_range r = { .start = addr, .len = len };

	ioctl(h->uffd->fd, UFFDIO_WAKE, &r);
	hcount(h, UC(wakes));
}

/* Count an outcome; wake on EEXIST; mark the runtime dead on ESRCH. */
enum outcome vmr_uffdio_settle(struct uffd_handler *h, enum outcome o,
			       uintptr_t addr)
{
	switch (o) {
	case OUT_EXISTS:
		hcount(h, UC(eexist));
		vmr_uffdio_wake(h, addr, h->uffd->page);
		break;
	case OUT_AGAIN:
		hcount(h, UC(eagain));
		break;
	case OUT_GONE:
		hcount(h, UC(enoent));
		break;
	case OUT_DEAD:
		hcount(h, UC(esrch));
		atomic_store(&h->uffd->dead, true);
		break;
	default:
		break;
	}
	return o;
}

/*
 * Install the thread's page buffer at @addr.  With @dontwake the copy does
 * not wake the faulting thread: the caller must wake the page if the
 * outcome is OUT_OK (vmr_uffdio_settle() wakes on EEXIST itself).
 */
enum outcome vmr_uffdio_copy(struct uffd_handler *h, uintptr_t addr, bool wp,
			     bool dontwake)
{
	struct uffdio_copy c = {
		.dst = addr,
		.src = (uintptr_t)h->buf,
		.len = h->uffd->page,
		.mode = (wp ? UFFDIO_COPY_MODE_WP : 0) |
			(dontwake ? UFFDIO_COPY_MODE_DONTWAKE : 0),
	};
	int ret = ioctl(h->uffd->fd, UFFDIO_COPY, &c);
	enum outcome o = outcome_of(ret, c.copy, c.len);

	if (o == OUT_OK)
		hcount(h, UC(copies));
	return vmr_uffdio_settle(h, o, addr);
}

enum outcome vmr_uffdio_continue(struct uffd_handler *h, uintptr_t addr)
{
	struct uffdio_continue c = {
		.range = { .start = addr, .len = h->uffd->page },
	};
	int ret = ioctl(h->uffd->fd, UFFDIO_CONTINUE, &c);
	enum outcome o = outcome_of(ret, c.mapped, h->uffd->page);

	if (o == OUT_OK)
		hcount(h, UC(continues));
	return vmr_uffdio_settle(h, o, addr);
}

enum outcome vmr_uffdio_unprotect(struct uffd_handler *h, uintptr_t addr)
{
	struct uffdio_writeprotect w = {
		.range = { .start = addr, .len = h->uffd->page },
		.mode = 0, /* clear, and wake */
	};
	int ret = ioctl(h->uffd->fd, UFFDIO_WRITEPROTECT, &w);
	enum outcome o = outcome_of(ret, 0, 0);

	if (o == OUT_OK)
		hcount(h, UC(wp_resolved));
	return vmr_uffdio_settle(h, o, addr);
}

/*
 * A page that cannot be resolved from its store: poison it, so that the
 * access gets SIGBUS, or zero it where the kernel has no UFFDIO_POISON.
 * Either wakes the faulter.
 */
enum outcome vmr_uffdio_poison(struct uffd_handler *h, uintptr_t addr)
{
	struct vmr_uffd *u = h->uffd;
	enum outcome o;

	if (u->features & UFFD_FEATURE_POISON) {
		struct uffdio_poison p = {
			.range = { .start = addr, .len = u->page },
		};

		int ret = ioctl(u->fd, UFFDIO_POISON, &p);

		/* Evaluate the count only after the ioctl has set it. */
		o = outcome_of(ret, p.updated, u->page);
		if (o == OUT_OK)
			hcount(h, UC(poisoned));
	} else {
		struct uffdio_zeropage z = {
			.range = { .start = addr, .len = u->page },
		};

		int ret = ioctl(u->fd, UFFDIO_ZEROPAGE, &z);

		o = outcome_of(ret, z.zeropage, u->page);
		if (o == OUT_OK) {
			hcount(h, UC(zeropages));
			hcount(h, UC(poisoned));
		}
	}
	return vmr_uffdio_settle(h, o, addr);
}
