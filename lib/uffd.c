/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * libvmaretry - the userfaultfd runtime.
 *
 * Threads.  N handler threads poll one userfaultfd (O_NONBLOCK) and read
 * its messages in batches (by default, one message at a time when there
 * are several: see DEFAULT_BATCH).  A mutex around read() gives every
 * batch a sequence number in the order the kernel handed the batches out,
 * which is the order of the messages in its queue.
 *
 * Ordering of events and faults.  A non-cooperative event (REMOVE, UNMAP,
 * REMAP, FORK) must change the space before any fault read after it is
 * resolved: a fault queued behind a REMOVE must not be filled with stale
 * data from the store.  So, under the read mutex, each batch also records
 * the last batch before it that held an event (its barrier), and a batch
 * that holds events becomes the new last one.  Before resolving anything a
 * thread waits until the events of its barrier batch have been applied
 * (events_applied, a futex); a batch with events applies them in message
 * order and then publishes its own sequence number.  Event batches thus
 * apply in order, and a fault waits only while an earlier event is being
 * applied.  A thread waits holding no lock, and applying an event waits
 * only for faults that hold range locks, which no waiting thread does: no
 * deadlock.
 *
 * Installs and reads.  The kernel refuses an install (EAGAIN) only while an
 * event is unread; once a REMOVE is read, madvise() zaps the range at once,
 * and a copy landing before the event is applied would leave stale data in
 * discarded memory.  So no install may be in flight across a read(), and
 * an install proceeds only if every event read so far is applied (else it
 * is deferred, as for EAGAIN).  Only REMOVE needs the exclusion: an unmap,
 * a move or a fork changes the mapping under the mmap write lock, installs
 * are refused from before the change until its event is read, and one
 * after that finds the old range gone (ENOENT).  Since Linux 6.8 a REMOVE
 * also waits, before it raises the count that refuses installs, for the
 * installs already in the kernel (map_changing_lock: written there, read
 * across each install).  That covers an install the kernel has begun, not
 * one between the handler's check and the kernel's: a read that completes
 * the REMOVE in that gap lets the zap run before it, so the exclusion is
 * kept on every kernel.  A descriptor without
 * REMOVE events (VMR_UFFD_NO_REMOVE) orders its reads, as above, but its
 * installs run beside them; a discarded page then faults in from the
 * store again, and a copy racing its discard leaves the same contents (see
 * "Installed pages").  The exclusion is Dekker's, so that an
 * install writes only its own thread's line: the installer sets its
 * handler's installing flag, fences, and backs off while u->reading is
 * set; the reader sets u->reading, fences, and waits until no other
 * handler is installing.  With both fences seq_cst, at least one of them
 * sees the other's store.  The reader holds only the read mutex and waits
 * only for installs in progress; an install waits for nothing the reader
 * holds (UFFDIO_COPY takes the mmap lock, which no event holds while it
 * waits to be read): no deadlock.  (A shared rwlock here, one read-side
 * atomic per install and sleeps behind the reader, cost a third of the
 * throughput at two handler threads.)  Each side waits for the other
 * across one system call, so it spins a few microseconds before it sleeps
 * (wait_clear()): yielding at once, as before, left two handler threads at
 * 0.72-0.79 of the minimal handler's throughput in bench_uffd, against
 * 0.83-0.96 with the spin (six alternating rounds each).  Past the spin it
 * sleeps on the flag's futex, and the flag's owner clears it with an
 * exchange that tells it whether to wake anyone (futex.h's sleeper-flag
 * protocol, as in the range lock's fence mode and the space lock, with
 * the argument that no wake-up is lost).  Waiting by sched_yield()
 * instead, with more handler threads than CPUs, took the CPU the owner
 * needed.  bench_uffd --store=zero
 * --reps=3 --pages=32768 --max-handlers=4 (and =8) on 2 vCPUs, sixteen
 * alternating runs of the two builds (2026-12-07), ours / minimal,
 * medians (quartiles): at four handlers 0.685 (0.63-0.72) with yields,
 * 0.76 (0.74-0.76) with the futex; at eight 0.87 against 0.96 (four
 * runs); at two 0.865 (0.81-0.92) against 0.81 (0.79-0.85), and 0.84
 * (0.80-0.92) for the futex in fourteen later runs: noise, as far as
 * these runs tell.  Pinned to one CPU and with the sleeping store, no
 * difference above the noise.  Yielding four times before sleeping was
 * no better at two handlers (0.82) and worse at four (0.69 against 0.75,
 * fourteen alternating runs).  With one handler thread the reader is
 * the installer: neither side runs, and a fault pays no fence.
 * Only the copy itself needs the exclusion, not the wake-up of the thread
 * it resolves (a cross-CPU one as a rule): inside the exclusion a copy is
 * made with UFFDIO_COPY_MODE_DONTWAKE, and UFFDIO_WAKE follows
 * install_end().  That is a system call more per page, and still the
 * better side of the trade: waking inside the copy took two handler
 * threads from 0.78 to 0.68 of the minimal handler and four from 0.76 to
 * 0.61 (bench_uffd --store=zero --reps=1 --pages=32768 --max-handlers=4,
 * ten alternating runs of each build, medians, 2026-12-07).  Nor does a
 * longer spin help both counts: 2048 spins read 0.83 against 0.77 at two
 * handlers but 0.72 against 0.74 at four, 8192 read 0.83 and 0.69 (twelve
 * alternating runs each); going back to epoll_wait() after a short batch
 * instead of an excluded empty read, 0.79 and 0.76 against 0.75 and 0.74:
 * noise.  Nor does a reader that finds an install still running after
 * its spin, and lets go of the read mutex and its flag to wait for it
 * holding nothing: 69.9k against 71.9k pages/s at two handlers, 61.5k
 * against 61.7k at four (eight alternating runs).  The runtime with
 * REMOVE events is measured against a
 * hand-written handler that keeps the same exclusion with a rwlock
 * (bench_uffd's minimal_remove).
 *
 * Without events.  A descriptor that delivers none (VMR_UFFD_NO_EVENTS, a
 * kernel without them, or a handed-in descriptor whose features name none)
 * has nothing to order: its handler threads read in parallel, without the
 * read mutex, the batch numbers or the exclusion, as a hand-written
 * handler does.  A madvise(MADV_DONTNEED) of registered memory then races
 * the runtime's installs as it races any handler's: a copy for a page in
 * the range may land after the zap and stay.  A caller that hears no
 * events keeps its discards apart from faults on the same pages (a page
 * discarded alone faults in again: see "Installed pages").
 *
 * Installed pages.  A page's state in its mapping's page map says it was
 * installed, so that a duplicate message only wakes.  That holds as long
 * as nothing takes the page out behind the runtime's back, which a REMOVE
 * event reports.  Without REMOVE events, a discarded page faults again and
 * its message finds the page "installed": were it only woken, its thread
 * would fault forever.  So there a message for an installed page is taken
 * for a duplicate only if it was read before the page was installed: it
 * waited for the page's lock, or an earlier message of its batch for the
 * same page was resolved first.  Otherwise the page is read and installed
 * again, and EEXIST says it was a duplicate after all (a late one: it
 * costs a store read).
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
 *          new userfaultfd; its threads start as soon as no other fork()
 *          is in flight (start_children()).
 * Every allocation of an event's application goes through the fork guard
 * (forkguard.c): it never waits for a fork() in flight, whose message may
 * sit behind the event (every other handler waits for the event's
 * application before it reads again).
 *
 * A fault.  Each page-fault message becomes vmr_handle_fault() on the
 * space; the region's handler (uffd_fault()) takes the page's lock in the
 * mapping's page map (so duplicate messages for a page coalesce: the second
 * waits for the first, finds the page installed and only wakes; on its
 * last attempt it does not wait, see uffd_fault()), reads the
 * store into the handler thread's page buffer (releasing the fault's lock
 * first if the policy says so, and then returning the retry the engine
 * asked for: the buffer, kept in the fault's persistent descriptor, is
 * installed on the retry without a second read, and the page lock is kept
 * across the retry so that a duplicate cannot read the store again), and
 * installs the page under the fault's lock with UFFDIO_COPY (ZEROPAGE,
 * CONTINUE, WRITEPROTECT as the mapping says).  The fault holds a
 * reference on its mapping from before anything that may drop its lock
 * until it is done with it, so an unmap during the read cannot free it.
 *
 * Ioctl outcomes (both encodings: -1/errno and a negative count field):
 *   done         the page is installed, and the faulter woken (by the
 *                ioctl, or by UFFDIO_WAKE after a DONTWAKE copy);
 *   EEXIST       someone installed it already: done, and UFFDIO_WAKE;
 *   EAGAIN       the layout is changing (an event is queued and unread, or
 *                just read and not yet completed): the fault is deferred
 *                and retried after the thread's next read of messages, or
 *                within a millisecond, never in a loop that reads nothing;
 *   ENOENT       the range is no longer registered (unregistered, unmapped
 *                or moved): nothing to install; wake, in case no
 *                unregister did;
 *   ESRCH        the process exited: the runtime is dead, threads idle;
 *   other        a bug or a hostile range: poison the page (or zero it),
 *                which wakes the faulter.
 * A fault that does not resolve from the store (no region, a forbidden
 * access, a store error) is poisoned, so the faulting thread gets SIGBUS
 * instead of sleeping forever; a stale message (a duplicate read after its
 * range was unregistered) finds the range gone (ENOENT) and is only
 * woken.  Every path installs, wakes, or knows that the kernel woke
 * (unregistered or dead): no faulter is left asleep.
 *
 * Counters are per handler thread, written by it alone, summed on read.
 */
#include "mm.h"
#include "futex.h"

#include <errno.h>
#include <sched.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <sys/epoll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <urcu/arch.h>
#include <urcu/flavor.h>

/* Newer than some distributions' headers. */
#ifndef UFFD_USER_MODE_ONLY
#define UFFD_USER_MODE_ONLY 1
#endif
#ifndef USERFAULTFD_IOC_NEW
#define USERFAULTFD_IOC_NEW _IO(0xAA, 0x00)
#endif
#ifndef UFFD_FEATURE_POISON
#define UFFD_FEATURE_POISON (1 << 14)
#endif
#ifndef UFFDIO_POISON
struct uffdio_poison {
	struct uffdio_range range;
	__u64 mode;
	__s64 updated;
};
#define _UFFDIO_POISON (0x08)
#define UFFDIO_POISON _IOWR(UFFDIO, _UFFDIO_POISON, struct uffdio_poison)
#endif

#define RUNTIME_EVENTS                                                         \
	(UFFD_FEATURE_EVENT_REMOVE | UFFD_FEATURE_EVENT_UNMAP |               \
	 UFFD_FEATURE_EVENT_REMAP | UFFD_FEATURE_EVENT_FORK)

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
#define MAX_BATCH 4096
#define MAX_THREADS 1024

#define NR_UFFD_COUNTERS (sizeof(struct vmr_uffd_stats) / sizeof(uint64_t))
#define UC(field) (offsetof(struct vmr_uffd_stats, field) / sizeof(uint64_t))

struct vmr_uffd;

/* One vmr_uffd_map(): the private data of its regions and their pieces. */
struct mapping {
	uint64_t id; /* unique: tells a buffered page from a stale one */
	uintptr_t base;
	unsigned int mode;
	struct vmr_uffd *uffd;
	struct vmr_uffd_store_ops ops;
	void *store;
	struct vmr_pagemap *pages; /* page lock and "installed" state */
	_Atomic long refs;         /* regions using it */
};

/*
 * Deferred faults (EAGAIN), retried after the pending events are read, are
 * kept in an array allocated with the thread: a fault's path allocates
 * nothing (and a fault meets EAGAIN exactly when events are pending, a
 * fork's among them: see forkguard.c for why no allocation of ours waits
 * for one).  When the array is full the fault is woken instead: its
 * thread faults again, and the kernel sends a new message.
 */
#define MAX_DEFERRED 256
/* Spins (cpu_relax) before a wait for another handler yields: a few us. */
#define WAIT_SPINS 128

struct handler {
	struct vmr_uffd *uffd;
	pthread_t thread;
	int epoll_fd;
	void *buf; /* one page */
	struct uffd_msg *msgs;
	struct uffd_msg *deferred; /* MAX_DEFERRED */
	unsigned int nr_deferred;
	/* The page map of this thread's last fault: see hint_set(). */
	uintptr_t hint_base;
	size_t hint_len;
	struct vmr_pagemap *hint_pages;
	_Atomic uint32_t installing; /* EXCL_*: see "Installs and reads" */
	_Atomic uint64_t count[NR_UFFD_COUNTERS];
} __attribute__((aligned(VMR_CACHELINE)));

struct vmr_uffd {
	struct vmr_space *space;
	int fd;
	bool own_fd;
	int stop_fd;
	uint64_t features;
	size_t page;
	unsigned int page_shift; /* log2(page) */
	unsigned int nr_threads, batch;
	struct handler *handlers;
	/* Batch order (see above). */
	pthread_mutex_t read_lock;
	/* Set while a handler reads messages: no install may run then. */
	_Atomic uint32_t reading; /* EXCL_* */
	/* Written under read_lock (serial_reads()) or by the one handler. */
	uint32_t batch_seq;
	_Atomic uint32_t last_event_seq;
	_Atomic uint32_t events_applied;
	_Atomic bool dead;
	_Atomic bool stopping;
	bool started; /* its handler threads run */
	/* Runtimes of forked children, and what they need. */
	pthread_mutex_t children_lock;
	struct vmr_uffd *children, *next_child;
	_Atomic bool children_pending; /* some child's threads to start */
	struct vmr_space *child_space; /* a child owns its space */
};

/* What the region handler tells the message loop about one fault. */
enum fault_status {
	FAULT_DONE = 0, /* installed, woken, or nothing to do */
	FAULT_DEFERRED, /* EAGAIN: retry after reading pending messages */
	FAULT_GONE,     /* ENOENT: range unregistered; kernel woke it */
	FAULT_DEAD,     /* ESRCH */
	FAULT_FAILED,   /* some other error: poison it */
};

enum fault_kind { KIND_MISSING, KIND_WP, KIND_MINOR };

struct fault_ctx {
	struct handler *h;
	enum fault_kind kind;
	bool write;
	enum fault_status status;
	bool resolved; /* the handler installed or woke the page */
	/* Read before its page was installed by another fault: see
	 * "Installed pages". */
	bool follows;
	/* The page read by an earlier attempt of this fault. */
	bool have;
	uint64_t have_map, have_off;
	int read_err;
	/* The page this fault keeps locked (and its mapping referenced)
	 * across a retry after reading it, so duplicates wait for it. */
	struct mapping *held;
	size_t held_idx;
};

static _Atomic uint64_t next_mapping_id = 1;

static inline void hcount(struct handler *h, size_t idx)
{
	vmr_count_add(&h->count[idx], 1); /* only its thread writes */
}

/* ---- ioctls and their outcomes ----------------------------------------- */

enum outcome { OUT_OK, OUT_EXISTS, OUT_AGAIN, OUT_GONE, OUT_DEAD, OUT_FAILED };

/*
 * Classify an ioctl that returned @ret and whose count field says @done of
 * @len bytes (read the field after the ioctl: not as an argument of the
 * same call, whose evaluation order C leaves open): the count field holds
 * the bytes done or a negative errno, the return value -1 with errno.
 * Both encodings of EAGAIN are seen.
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

static void wake(struct handler *h, uintptr_t addr, size_t len)
{
	struct uffdio_range r = { .start = addr, .len = len };

	ioctl(h->uffd->fd, UFFDIO_WAKE, &r);
	hcount(h, UC(wakes));
}

/* Count an outcome; wake on EEXIST; mark the runtime dead on ESRCH. */
static enum outcome settle(struct handler *h, enum outcome o, uintptr_t addr)
{
	switch (o) {
	case OUT_EXISTS:
		hcount(h, UC(eexist));
		wake(h, addr, h->uffd->page);
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
 * not wake the faulting thread: the caller must wake() the page if the
 * outcome is OUT_OK (settle() wakes on EEXIST itself).
 */
static enum outcome do_copy(struct handler *h, uintptr_t addr, bool wp,
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
	return settle(h, o, addr);
}

static enum outcome do_continue(struct handler *h, uintptr_t addr)
{
	struct uffdio_continue c = {
		.range = { .start = addr, .len = h->uffd->page },
	};
	int ret = ioctl(h->uffd->fd, UFFDIO_CONTINUE, &c);
	enum outcome o = outcome_of(ret, c.mapped, h->uffd->page);

	if (o == OUT_OK)
		hcount(h, UC(continues));
	return settle(h, o, addr);
}

static enum outcome do_unprotect(struct handler *h, uintptr_t addr)
{
	struct uffdio_writeprotect w = {
		.range = { .start = addr, .len = h->uffd->page },
		.mode = 0, /* clear, and wake */
	};
	int ret = ioctl(h->uffd->fd, UFFDIO_WRITEPROTECT, &w);
	enum outcome o = outcome_of(ret, 0, 0);

	if (o == OUT_OK)
		hcount(h, UC(wp_resolved));
	return settle(h, o, addr);
}

/*
 * A page that cannot be resolved from its store: poison it, so that the
 * access gets SIGBUS, or zero it where the kernel has no UFFDIO_POISON.
 * Either wakes the faulter.
 */
static enum outcome do_poison(struct handler *h, uintptr_t addr)
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
	return settle(h, o, addr);
}

/* ---- the regions' fault handler --------------------------------------- */

static void mapping_get(struct mapping *m)
{
	atomic_fetch_add(&m->refs, 1);
}

static void mapping_put(struct mapping *m)
{
	if (atomic_fetch_sub(&m->refs, 1) == 1) {
		vmr_pagemap_destroy(m->pages);
		vmr_free(m);
	}
}

/*
 * A fault's own reference on its mapping (@ref: whether it holds one),
 * taken at most once, before a call that may drop the fault's lock; and
 * its release when the fault is done with the mapping (see uffd_fault()).
 */
static void fault_ref(struct mapping *m, bool *ref)
{
	if (!*ref) {
		mapping_get(m);
		*ref = true;
	}
}

static void fault_unref(struct mapping *m, bool ref)
{
	if (ref)
		mapping_put(m);
}

static void region_open(struct vmr_region *r, const struct vmr_region *from)
{
	(void)r;
	mapping_get(vmr_region_private(from));
}

static void region_close(struct vmr_region *r)
{
	mapping_put(vmr_region_private(r));
}

static vmr_fault_t uffd_fault(struct vmr_fault *vmf);

static const struct vmr_region_ops uffd_region_ops = {
	.fault = uffd_fault,
	.open = region_open,
	.close = region_close,
};

/* The fault ends without installing: tell the message loop why. */
static vmr_fault_t give_up(struct vmr_fault *vmf, struct fault_ctx *c,
			   struct mapping *m, size_t idx, enum outcome o)
{
	c->status = o == OUT_AGAIN ? FAULT_DEFERRED :
		    o == OUT_GONE  ? FAULT_GONE :
		    o == OUT_DEAD  ? FAULT_DEAD :
				     FAULT_FAILED;
	vmr_page_unlock(m->pages, idx);
	vmr_fault_release(vmf);
	return VMR_FAULT_COMPLETED;
}

/* The descriptor delivers events: see "Without events". */
static inline bool has_events(const struct vmr_uffd *u)
{
	return u->features & RUNTIME_EVENTS;
}

/* Events and several handler threads: reads are ordered. */
static inline bool serial_reads(const struct vmr_uffd *u)
{
	return u->nr_threads > 1 && has_events(u);
}

/* A discard is reported: see "Installed pages". */
static inline bool hears_removes(const struct vmr_uffd *u)
{
	return u->features & UFFD_FEATURE_EVENT_REMOVE;
}

/* REMOVE events and several handler threads: reads exclude installs. */
static inline bool excl_reads(const struct vmr_uffd *u)
{
	return u->nr_threads > 1 && hears_removes(u);
}

/*
 * The two sides' flags (a handler's installing, the runtime's reading):
 * BUSY while the side is in its system call, WAITER once the other side
 * sleeps on it (futex.h's sleeper-flag protocol).  Only the owner sets or
 * clears BUSY; waiters only add WAITER, to a word that is BUSY.
 */
#define EXCL_BUSY 0x1u
#define EXCL_WAITER 0x2u

/*
 * Wait until @word is not BUSY (acquire).  The other side holds it across
 * one system call (a read() of messages, an installing ioctl), a few
 * microseconds: spin that long first, then sleep on the word (its owner
 * may be descheduled, and with more handler threads than CPUs a spinning
 * or yielding waiter takes the CPU the owner needs).
 */
static void wait_clear(_Atomic uint32_t *word)
{
	unsigned int spins = 0;
	uint32_t v;

	while ((v = atomic_load_explicit(word, memory_order_acquire)) &
	       EXCL_BUSY) {
		if (spins < WAIT_SPINS) {
			spins++;
			caa_cpu_relax();
			continue;
		}
		vmr_futex_mark_wait(word, v, EXCL_WAITER);
	}
}

/* Clear @word (release), waking whoever sleeps on it. */
static void clear_wake(_Atomic uint32_t *word)
{
	vmr_futex_exchange_wake(word, 0, EXCL_WAITER);
}

/*
 * Enter an install: no read() of messages runs until install_end().  With
 * one handler thread the reader is the installer: nothing to exclude, and
 * no fence on the fault path.  Returns whether it excludes reads.
 */
static bool install_begin(struct handler *h)
{
	if (!excl_reads(h->uffd))
		return false;
	for (;;) {
		atomic_store_explicit(&h->installing, EXCL_BUSY,
				      memory_order_relaxed);
		/* Pairs with the fence in read_begin(). */
		atomic_thread_fence(memory_order_seq_cst);
		/* Acquire: the batch's last_event_seq is seen. */
		if (!(atomic_load_explicit(&h->uffd->reading,
					   memory_order_acquire) &
		      EXCL_BUSY))
			return true;
		clear_wake(&h->installing);
		wait_clear(&h->uffd->reading);
	}
}

static void install_end(struct handler *h)
{
	if (excl_reads(h->uffd))
		clear_wake(&h->installing);
}

/* Install the fault's page (or poison it), reads excluded if @excl. */
static enum outcome install(struct handler *h, const struct fault_ctx *c,
			    const struct mapping *m, uintptr_t addr, bool excl)
{
	VMR_DEBUG_POINT(VMR_DP_UFFD_INSTALL, addr);
	if (c->read_err)
		return do_poison(h, addr);
	return do_copy(h, addr, (m->mode & VMR_UFFD_WP) && !c->write, excl);
}

/* The index in its mapping's page map of the page at @addr. */
static inline size_t page_index(const struct vmr_uffd *u, uintptr_t base,
				uintptr_t addr)
{
	return (addr - base) >> u->page_shift;
}

/*
 * The page word a fault locks is a cache miss as a rule: one word per page,
 * faults in any order, and the kernel's page copies in between evict it.
 * Each handler thread remembers the page map of its last fault, and as soon
 * as a batch is read it prefetches the word of every fault message's page
 * that falls in that map: the first message's miss then overlaps its
 * region lookup and range lock, the others' the faults before them.  It is
 * a guess, never trusted: the map may have been freed since, and only an
 * address is computed from it (a prefetch neither loads nor faults); the
 * fault locks the word of its own region's map.  Measured with perf record
 * -e cpu-clock over bench_uffd --pin --max-handlers=1 --store=zero
 * --reps=5 --pages=32768 --impl=vmr: a prefetch per message, issued when
 * the message was handled, took vmr_page_trylock()'s samples from 442 to
 * 104 (three runs each, 2026-12-07); prefetching the whole batch at once
 * took them from 421-474 to 118-148 (four alternating runs each on another
 * VM, 2026-12-07, about 50000 samples a run: some 0.6 % of the round
 * trip).  Throughput cannot resolve that: see bench_uffd.c.
 */
static void hint_set(struct handler *h, const struct mapping *m)
{
	if (h->hint_pages != m->pages) {
		h->hint_base = m->base;
		h->hint_len = vmr_pagemap_size(m->pages) << h->uffd->page_shift;
		h->hint_pages = m->pages;
	}
}

static void hint_prefetch(const struct handler *h, uintptr_t addr)
{
	if (addr - h->hint_base < h->hint_len)
		vmr_page_prefetch(h->hint_pages,
				  page_index(h->uffd, h->hint_base, addr));
}

static vmr_fault_t uffd_fault(struct vmr_fault *vmf)
{
	struct fault_ctx *c = vmf->ctx;
	struct handler *h = c->h;
	struct mapping *m = vmr_region_private(vmf->region);
	size_t idx = page_index(h->uffd, m->base, vmf->address);
	uint64_t off = vmr_region_offset(vmf->region) +
		       (vmf->address - vmr_region_start(vmf->region));
	vmr_fault_t ret, io, major = 0;
	enum outcome o;
	bool excl, ref = false;

	hint_set(h, m);

	/*
	 * While the fault holds its lock, its region cannot be closed, and
	 * so neither can the mapping the region references.  A reference
	 * of the fault's own (@ref) is taken only before a call that may
	 * drop the lock: a fault that keeps it, the common one, writes
	 * nothing that another handler thread's fault writes too.
	 */
	if (c->held == m && c->held_idx == idx) {
		/* Ours since the read; its reference is ours too. */
		c->held = NULL;
		ref = true;
	} else {
		if (c->held) {
			vmr_page_unlock(c->held->pages, c->held_idx);
			mapping_put(c->held);
			c->held = NULL;
		}
		if (vmr_page_trylock(m->pages, idx)) {
			/* Uncontended: the common case. */
		} else if (!vmr_fault_allow_retry_first(vmf) &&
			   vmr_fault_policy(vmf) != VMR_HOLD_IO) {
			/*
			 * A duplicate on its last attempt would wait for the
			 * page under the fault's lock.  But the holder may
			 * keep the page across its own retry (c->held) and
			 * then need the space lock: page -> space, against
			 * this wait's space -> page, and a writer queued on
			 * the space lock closes the cycle.  (The kernel never
			 * holds a folio lock into a retry.)  Do not wait: the
			 * holder installs, poisons, or defers and retries,
			 * and each of those wakes this fault's thread too.
			 */
			hcount(h, UC(coalesced));
			c->resolved = true;
			vmr_fault_release(vmf);
			return VMR_FAULT_COMPLETED;
		} else {
			c->follows = true;
			fault_ref(m, &ref); /* the wait may drop the lock */
			ret = vmr_page_lock_or_retry(vmf, m->pages, idx);
			if (ret) {
				fault_unref(m, ref);
				return ret;
			}
		}
	}
	if (c->kind == KIND_WP) {
		/* A write to a present, write-protected page. */
		if (m->ops.dirty)
			m->ops.dirty(m->store, off);
		o = do_unprotect(h, vmf->address);
		goto installed;
	}
	if (vmr_page_uptodate(m->pages, idx) &&
	    (hears_removes(h->uffd) || c->follows)) {
		/* A duplicate message: the page is in already. */
		hcount(h, UC(coalesced));
		wake(h, vmf->address, h->uffd->page);
		c->resolved = true;
		vmr_page_unlock(m->pages, idx);
		fault_unref(m, ref);
		return VMR_FAULT_NOPAGE;
	}
	if (c->kind == KIND_MINOR) {
		o = do_continue(h, vmf->address);
		goto installed;
	}
	io = 0;
	major = 0;
	if (!c->have || c->have_map != m->id || c->have_off != off) {
		major = VMR_FAULT_MAJOR;
		if (!(m->mode & VMR_UFFD_FAST_STORE)) {
			fault_ref(m, &ref); /* the read may drop the lock */
			io = vmr_fault_release_for_io(vmf);
		}
		VMR_DEBUG_POINT(VMR_DP_UFFD_READ, vmf->address);
		c->read_err = m->ops.read(m->store, off, h->buf,
					  h->uffd->page);
		c->have = true;
		c->have_map = m->id;
		c->have_off = off;
		if (c->read_err)
			hcount(h, UC(store_errors));
		if (io) {
			/* The lock was dropped for the read: retry, and
			 * install the buffered page then (c->held takes
			 * over the reference). */
			c->held = m;
			c->held_idx = idx;
			return io | VMR_FAULT_MAJOR;
		}
	}
	VMR_DEBUG_POINT(VMR_DP_UFFD_RESOLVE, vmf->address);
	/*
	 * The kernel refuses installs (EAGAIN) only while an event is
	 * unread: once read, a REMOVE's madvise() zaps the range, and a copy
	 * landing after the zap and before the event is applied (unregister)
	 * would leave stale data in discarded memory.  So install only when
	 * every event read so far is applied; else defer, as for EAGAIN.
	 */
	excl = install_begin(h);
	if (atomic_load_explicit(&h->uffd->last_event_seq,
				 memory_order_relaxed) !=
	    atomic_load_explicit(&h->uffd->events_applied,
				 memory_order_acquire))
		o = settle(h, OUT_AGAIN, vmf->address);
	else
		o = install(h, c, m, vmf->address, excl);
	install_end(h);
	/* The wake-up of the faulting thread, a cross-CPU one as a rule,
	 * need not keep reads out: it goes after install_end(). */
	if (excl && o == OUT_OK)
		wake(h, vmf->address, h->uffd->page);
installed:
	if (o != OUT_OK && o != OUT_EXISTS) {
		ret = give_up(vmf, c, m, idx, o);
		fault_unref(m, ref);
		return ret;
	}
	c->resolved = true;
	if (c->kind != KIND_WP)
		vmr_page_mark_uptodate_unlock(m->pages, idx);
	else
		vmr_page_unlock(m->pages, idx);
	fault_unref(m, ref);
	/* MAJOR if this attempt read the store, as filemap_fault(). */
	return VMR_FAULT_NOPAGE | major;
}

/* ---- messages ----------------------------------------------------------- */

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
static enum outcome poison_unless_mapped(struct handler *h, uintptr_t addr,
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
		o = do_poison(h, addr);
	vmr_space_read_unlock(space);
	return o;
}

/* One page-fault message; false if it must be retried later (EAGAIN). */
static bool handle_fault_msg(struct handler *h, const struct uffd_msg *msg,
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
		mapping_put(c.held);
	}
	switch (c.status) {
	case FAULT_DEFERRED:
		return false;
	case FAULT_GONE:
		/* Gone by munmap/mremap: nothing unregistered, nothing woke
		 * it. */
		wake(h, addr, u->page);
		return true;
	case FAULT_DEAD:
		return true;
	case FAULT_FAILED:
		do_poison(h, addr);
		return true;
	case FAULT_DONE:
		break;
	}
	if (c.resolved)
		return true;
	if (res & VMR_FAULT_RETRY) {
		/* Unfinished: the runtime is shutting down; let it fault
		 * again (the teardown unregisters the range). */
		wake(h, addr, u->page);
		return true;
	}
	/* A forbidden access, no region, or a handler error: SIGBUS, not a
	 * hang; a stale message finds the range gone (ENOENT): wake it. */
	o = (res & VMR_FAULT_SIGSEGV) ? poison_unless_mapped(h, addr, fflags) :
					do_poison(h, addr);
	switch (o) {
	case OUT_AGAIN:
		return false;
	case OUT_GONE:
		wake(h, addr, u->page);
		return true;
	default:
		return true;
	}
}

static void wake_msg(struct handler *h, const struct uffd_msg *msg)
{
	wake(h, msg->arg.pagefault.address & ~(h->uffd->page - 1),
	     h->uffd->page);
}

static void defer(struct handler *h, const struct uffd_msg *msg)
{
	if (h->nr_deferred == MAX_DEFERRED) {
		/* Full: wake it; it will fault again. */
		wake_msg(h, msg);
		return;
	}
	h->deferred[h->nr_deferred++] = *msg;
}

static void retry_deferred(struct handler *h)
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

/* Each region of the space in [start, end), as a copy (the space may
 * change). */
struct region_copy {
	uintptr_t start, end;
	unsigned int prot;
	uint64_t offset;
	struct mapping *m;
};

static size_t copy_regions(struct vmr_space *space, uintptr_t start,
			   uintptr_t end, struct region_copy **out)
{
	struct vmr_tree_iter it;
	struct vmr_tree_entry e;
	struct region_copy *v = NULL;
	size_t n = 0, cap = 0;

	vmr_space_read_lock(space);
	vmr_tree_iter_start(&it, space->tree, start);
	while (vmr_tree_iter_next(&it, &e) && e.start < end) {
		struct vmr_region *r = e.value;

		if (r->ops.fault != uffd_fault)
			continue;
		if (n == cap) {
			struct region_copy *nv;

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
		n++;
	}
	vmr_space_read_unlock(space);
	*out = v;
	return n;
}

static struct mapping *mapping_new(struct vmr_uffd *u, uintptr_t base,
				   size_t len, unsigned int mode,
				   const struct vmr_uffd_store_ops *ops,
				   void *store);

/* Map [start, end) of @to with the stores and offsets of @v. */
static void map_copies(struct vmr_uffd *u, const struct region_copy *v,
		       size_t n, intptr_t shift, uintptr_t base, size_t len)
{
	for (size_t i = 0; i < n; i++) {
		struct mapping *m = mapping_new(u, base, len, v[i].m->mode,
						&v[i].m->ops, v[i].m->store);
		struct vmr_region_desc d = {
			.start = (uintptr_t)((intptr_t)v[i].start + shift),
			.len = v[i].end - v[i].start,
			.prot = v[i].prot,
			.offset = v[i].offset,
			.ops = &uffd_region_ops,
			.ops_size = sizeof(uffd_region_ops),
			.private_data = m,
		};

		if (!m)
			continue;
		if (vmr_map(u->space, &d, sizeof(d), VMR_MAP_REPLACE))
			mapping_put(m);
	}
}

static int child_create(struct vmr_uffd *parent, int fd);
static void start_children(struct vmr_uffd *u);

static void apply_event(struct handler *h, const struct uffd_msg *msg)
{
	struct vmr_uffd *u = h->uffd;
	struct region_copy *v;
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
		n = copy_regions(u->space, msg->arg.remap.from,
				 msg->arg.remap.from + msg->arg.remap.len, &v);
		map_copies(u, v, n,
			   (intptr_t)(msg->arg.remap.to - msg->arg.remap.from),
			   msg->arg.remap.to, msg->arg.remap.len);
		vmr_free(v);
		vmr_unmap(u->space, msg->arg.remap.from, msg->arg.remap.len);
		break;
	case UFFD_EVENT_FORK:
		hcount(h, UC(events_fork));
		if (child_create(u, (int)msg->arg.fork.ufd))
			close((int)msg->arg.fork.ufd);
		break;
	default:
		break;
	}
}

static bool is_event(const struct uffd_msg *msg)
{
	return msg->event != UFFD_EVENT_PAGEFAULT;
}

/* Wait until the events of batch @barrier have been applied. */
static void wait_events(struct vmr_uffd *u, uint32_t barrier)
{
	uint32_t done;

	for (;;) {
		/* Pairs with the release in publish_events(). */
		done = atomic_load_explicit(&u->events_applied,
					    memory_order_acquire);
		if ((int32_t)(done - barrier) >= 0)
			return;
		vmr_futex_wait(&u->events_applied, done);
	}
}

static void publish_events(struct vmr_uffd *u, uint32_t seq)
{
	atomic_store_explicit(&u->events_applied, seq, memory_order_release);
	vmr_futex_wake(&u->events_applied, INT_MAX);
}

/*
 * Begin a read of messages: in batch order (under read_lock) and, where
 * REMOVE events come, with no install in flight.  Without events to order,
 * reads run in parallel.
 */
static void read_begin(struct handler *h)
{
	struct vmr_uffd *u = h->uffd;

	if (!serial_reads(u))
		return;
	pthread_mutex_lock(&u->read_lock);
	if (!excl_reads(u))
		return;
	atomic_store_explicit(&u->reading, EXCL_BUSY, memory_order_relaxed);
	/* Pairs with the fence in install_begin(). */
	atomic_thread_fence(memory_order_seq_cst);
	for (unsigned int i = 0; i < u->nr_threads; i++)
		if (&u->handlers[i] != h)
			wait_clear(&u->handlers[i].installing);
}

static void read_end(struct vmr_uffd *u)
{
	if (!serial_reads(u))
		return;
	if (excl_reads(u))
		clear_wake(&u->reading);
	pthread_mutex_unlock(&u->read_lock);
}

/*
 * Whether a fault message before message @i of the batch, for the same
 * page, was resolved (a deferred one has its event cleared): message @i
 * was read before that page was installed.
 */
static bool resolved_before(const struct handler *h, size_t i)
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
static size_t handle_batch(struct handler *h)
{
	struct vmr_uffd *u = h->uffd;
	uint32_t seq, barrier;
	bool events = false;
	ssize_t got;
	size_t n;

	read_begin(h);
	got = read(u->fd, h->msgs, u->batch * sizeof(*h->msgs));
	if (got <= 0) {
		read_end(u);
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
	read_end(u);
	/* Every page word of the batch at once: see hint_set(). */
	for (size_t i = 0; i < n; i++)
		if (!is_event(&h->msgs[i]))
			hint_prefetch(h, h->msgs[i].arg.pagefault.address);

	hcount(h, UC(batches));
	wait_events(u, barrier);
	for (size_t i = 0; i < n; i++) {
		hcount(h, UC(messages));
		if (is_event(&h->msgs[i])) {
			apply_event(h, &h->msgs[i]);
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
		publish_events(u, seq);
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
	struct handler *h = arg;
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
		start_children(u);
	}
	/* Whatever was deferred: wake it (the teardown unregisters). */
	for (unsigned int i = 0; i < h->nr_deferred; i++)
		wake_msg(h, &h->deferred[i]);
	h->nr_deferred = 0;
	vmr_space_unregister_thread(u->space);
	return NULL;
}

/* ---- opening and negotiating ------------------------------------------ */

static int open_uffd(void)
{
	int fd, dev, err;

	fd = (int)syscall(SYS_userfaultfd,
			  O_CLOEXEC | O_NONBLOCK | UFFD_USER_MODE_ONLY);
	if (fd >= 0)
		return fd;
	err = errno;
	if (err == EINVAL) /* a kernel without UFFD_USER_MODE_ONLY */
		fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
	if (fd >= 0)
		return fd;
	/* The sysctl or seccomp refused the syscall: try the device. */
	dev = open("/dev/userfaultfd", O_RDWR | O_CLOEXEC);
	if (dev < 0)
		return -(err == ENOSYS && errno == ENOENT ? ENOSYS :
			 err == EPERM || errno == EACCES ? EPERM : err);
	fd = ioctl(dev, USERFAULTFD_IOC_NEW,
		   O_CLOEXEC | O_NONBLOCK | UFFD_USER_MODE_ONLY);
	if (fd < 0 && errno == EINVAL)
		fd = ioctl(dev, USERFAULTFD_IOC_NEW, O_CLOEXEC | O_NONBLOCK);
	err = errno;
	close(dev);
	return fd >= 0 ? fd : -err;
}

/* UFFDIO_API on @fd asking for @features; 0 and the answer, or -errno. */
static int api(int fd, uint64_t features, uint64_t *got)
{
	struct uffdio_api a = { .api = UFFD_API, .features = features };

	if (ioctl(fd, UFFDIO_API, &a))
		return -errno;
	*got = a.features;
	return 0;
}

/* What the kernel supports: ask on a descriptor thrown away after. */
static int probe_features(uint64_t *supported)
{
	int fd = open_uffd(), err;

	if (fd < 0)
		return fd;
	err = api(fd, 0, supported);
	close(fd);
	return err;
}

/* Open (or adopt) the runtime's descriptor with the features to use. */
static int negotiate(struct vmr_uffd *u, const struct vmr_uffd_config *cfg)
{
	uint64_t supported = 0, want, answer;
	int err;

	if (cfg->fd >= 0) {
		u->fd = cfg->fd;
		u->own_fd = false;
		if (fcntl(u->fd, F_SETFL, fcntl(u->fd, F_GETFL) | O_NONBLOCK))
			return -errno;
		if (cfg->flags & VMR_UFFD_FD_READY) {
			/* Its features were chosen by whoever made it. */
			u->features = cfg->features;
			return 0;
		}
	}
	err = probe_features(&supported);
	if (err && cfg->fd < 0)
		return err;
	if (err) /* a handed-in descriptor, and we may not open our own */
		supported = cfg->features | RUNTIME_EVENTS;
	want = cfg->features | (supported & UFFD_FEATURE_POISON) |
	       (cfg->flags & VMR_UFFD_NO_EVENTS ? 0 :
						  supported & RUNTIME_EVENTS);
	if (cfg->flags & VMR_UFFD_NO_REMOVE)
		want &= ~(uint64_t)UFFD_FEATURE_EVENT_REMOVE;
	if (cfg->fd < 0) {
		u->fd = open_uffd();
		if (u->fd < 0)
			return u->fd;
		u->own_fd = true;
	}
	err = api(u->fd, want, &answer);
	if (err == -EPERM && (want & UFFD_FEATURE_EVENT_FORK) && u->own_fd) {
		/* EVENT_FORK needs CAP_SYS_PTRACE: do without it. */
		close(u->fd);
		u->fd = open_uffd();
		if (u->fd < 0)
			return u->fd;
		want &= ~(uint64_t)UFFD_FEATURE_EVENT_FORK;
		err = api(u->fd, want, &answer);
	}
	if (!err)
		u->features = want;
	return err;
}

/* ---- life cycle ---------------------------------------------------------- */

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

static int start_threads(struct vmr_uffd *u)
{
	for (unsigned int i = 0; i < u->nr_threads; i++) {
		struct handler *h = &u->handlers[i];

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

/*
 * The read mutex is held across one read() of messages, about a
 * microsecond; a thread that finds it taken would sleep and be woken by a
 * futex, unless it spins that long first (glibc's adaptive mutex).
 * bench_uffd --store=zero --reps=3 --pages=32768 --max-handlers=4 on 2
 * vCPUs, eight alternating runs of each build (2026-12-07), ours over
 * minimal, medians: at two handler threads 0.96 against 0.90 without
 * REMOVE events, 0.80 against 0.79 with them; at four 0.87 against 0.86
 * and 0.75 against 0.70; without events, which take no read mutex, 0.92
 * and 0.89 for both builds.
 */
static void read_lock_init(pthread_mutex_t *m)
{
#ifdef __GLIBC__
	pthread_mutexattr_t a;

	if (!pthread_mutexattr_init(&a)) {
		pthread_mutexattr_settype(&a, PTHREAD_MUTEX_ADAPTIVE_NP);
		pthread_mutex_init(m, &a);
		pthread_mutexattr_destroy(&a);
		return;
	}
#endif
	pthread_mutex_init(m, NULL);
}

static int runtime_new(struct vmr_space *space,
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
		   u->nr_threads > 1 ? 1 : DEFAULT_BATCH;
	atomic_init(&u->events_applied, 0);
	atomic_init(&u->dead, false);
	atomic_init(&u->stopping, false);
	read_lock_init(&u->read_lock);
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
	err = negotiate(u, cfg);
	if (!err && start)
		err = start_threads(u);
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
	return runtime_new(space, &cfg, uffdp, true);
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

		if (r->ops.fault == uffd_fault &&
		    ((struct mapping *)r->private_data)->uffd == u)
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

/* ---- mappings -------------------------------------------------------- */

static struct mapping *mapping_new(struct vmr_uffd *u, uintptr_t base,
				   size_t len, unsigned int mode,
				   const struct vmr_uffd_store_ops *ops,
				   void *store)
{
	struct mapping *m = vmr_alloc(sizeof(*m));

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

int vmr_uffd_map(struct vmr_uffd *uffd, void *addr, size_t len,
		 unsigned int prot, uint64_t offset, unsigned int mode,
		 const struct vmr_uffd_store_ops *ops, size_t ops_size,
		 void *store)
{
	struct vmr_uffd_store_ops o;
	struct uffdio_register reg;
	struct vmr_region_desc d;
	struct mapping *m;
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
	m = mapping_new(uffd, (uintptr_t)addr, len, mode, &o, store);
	if (!m)
		return -ENOMEM;
	memset(&d, 0, sizeof(d));
	d.start = (uintptr_t)addr;
	d.len = len;
	d.prot = prot;
	d.offset = offset;
	d.ops = &uffd_region_ops;
	d.ops_size = sizeof(uffd_region_ops);
	d.private_data = m;
	err = vmr_map(uffd->space, &d, sizeof(d), 0);
	if (err) {
		mapping_put(m);
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

/* ---- forked children ---------------------------------------------------- */

static int child_create(struct vmr_uffd *parent, int fd)
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
	struct region_copy *v;
	size_t n;
	int err;

	err = vmr_space_create(&scfg, sizeof(scfg), &space);
	if (err)
		return err;
	err = runtime_new(space, &cfg, &child, false);
	if (err) {
		vmr_space_destroy(space);
		return err;
	}
	child->own_fd = true; /* the kernel gave it to us */
	child->child_space = space;
	/* The child's memory is a copy of the parent's: same stores. */
	n = copy_regions(parent->space, 0, UINTPTR_MAX, &v);
	for (size_t i = 0; i < n; i++)
		map_copies(child, &v[i], 1, 0, v[i].start,
			   v[i].end - v[i].start);
	vmr_free(v);
	/* Its threads start only now (its first fault must find the
	 * regions), and only where glibc's fork-time locks are free. */
	pthread_mutex_lock(&parent->children_lock);
	child->next_child = parent->children;
	parent->children = child;
	pthread_mutex_unlock(&parent->children_lock);
	atomic_store_explicit(&parent->children_pending, true,
			      memory_order_relaxed);
	start_children(parent);
	return 0;
}

/*
 * On a handler thread of @u: start the threads of the children made since
 * the last call.  pthread_create() allocates in glibc, which another fork()
 * in flight may hold locked while it waits for a handler to read its
 * message (forkguard.c): so it runs inside the fork guard, and a handler
 * refused tries again within a millisecond (see handler_main()).  Until
 * then the child's faults wait in its descriptor.  A child whose threads
 * cannot start loses its descriptor: its faulters wake, and its memory is
 * plain anonymous memory from then on.
 */
static void start_children(struct vmr_uffd *u)
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
		if (start_threads(c)) {
			close(c->fd);
			c->fd = -1;
		}
	}
	pthread_mutex_unlock(&u->children_lock);
	vmr_fork_leave();
}

/* ---- queries --------------------------------------------------------- */

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
