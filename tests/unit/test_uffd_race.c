/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Race injection for the userfaultfd runtime: a non-cooperative event
 * (REMOVE, UNMAP, REMAP, FORK), an install behind the runtime's back
 * (EEXIST) or a shutdown, landed at a chosen point of one fault's life:
 *
 *   AT_FAULT    the message is read, before the fault is handled
 *               (debug point uffd_fault);
 *   AT_LOOKUP   the engine found the region, before the range lock (debug
 *               point range_lookup, inside an RCU read-side section);
 *   AT_STORE    during the store read: the store's own read callback, so
 *               these run in every build, debug points or not;
 *   AT_RESOLVE  the page is read and the fault's lock held, before the
 *               installing ioctl (debug point uffd_resolve);
 *   AT_INSTALL  the install goes ahead, just before its ioctl (debug point
 *               uffd_install).  Not in the matrix of events at each point:
 *               with events and several handler threads no event can be
 *               read there, which the exclusion tests check.
 *
 * How an event is landed.  A thread that causes a non-cooperative event
 * sleeps in the kernel until a handler thread reads its message, and until
 * then every UFFDIO_COPY on the descriptor fails with EAGAIN.  So the
 * injection, which runs on the handler thread that holds the fault, never
 * causes the event itself (it would wait for a message only a handler can
 * read): it tells an actor thread to, then waits, with a bound, for one of
 * two states before the fault goes on:
 *
 *   PENDING  one handler thread, so the event stays queued: wait until the
 *            descriptor polls readable.  The fault then meets the kernel's
 *            EAGAIN, is deferred, and must be retried after the event has
 *            been read and applied (the kernel selftests' retry-on-EAGAIN).
 *   RACING   three handler threads: another reads the event at once (and a
 *            third the next one: an mremap() may queue an UNMAP behind its
 *            REMAP and return only once both are read, while the first is
 *            held as below).  Where
 *            the fault holds no lock (AT_FAULT, AT_LOOKUP, AT_STORE under a
 *            policy that drops the lock for I/O) wait until the event is
 *            applied: the region is detached and the write hold over, so
 *            that the fault goes on against the changed space (at AT_LOOKUP
 *            the range lock then misses).  Where the fault holds its lock,
 *            the event's application waits for it: wait only until the
 *            event is read (the actor's call returned), and hold the other
 *            handler at the uffd_event debug point until the fault's ioctl
 *            has had every chance to run, which widens the window between
 *            reading a REMOVE and applying it to certainty.  (The runtime must
 *            then defer the install: a copy after the madvise()'s zap and
 *            before the range is unregistered would leave stale data.)
 *
 * Each test checks outcomes, not only the absence of a crash: the faulting
 * thread returns (joined with a deadline: a lost wakeup fails the test, and
 * the test then wakes the thread itself so that it ends), the page holds
 * what the event's semantics say afterwards (zero after a REMOVE, never
 * the store's stale contents; SIGSEGV where it was unmapped; the store's
 * contents at the page's new place after a REMAP and in a forked child),
 * and the runtime's and the engine's counters show that the race was hit
 * (eagain, enoent, eexist, coalesced, vma_lock_miss...), not missed.
 *
 * The REMAP actor plugs the hole the move leaves with a PROT_NONE mapping
 * (MAP_FIXED_NOREPLACE), so that the faulter's retry at the old address
 * gets SIGSEGV and not whatever another thread mapped there meanwhile;
 * where the plug loses that race the view is not checked.
 *
 * The reference test unmaps a whole area while one fault on a page is in
 * its store read, its lock dropped, and a duplicate sleeps on the page:
 * the sleeper wakes after the regions and the first fault have let the
 * mapping go, and must still find its page map (ASan reports it if not).
 *
 * The shutdown tests end a fault parked at each point with an event
 * pending, and fault storms of many threads over many pages with a slow
 * store, with vmr_uffd_destroy() and with vmr_space_shutdown() first: every
 * faulter, every thread that caused an event, and destroy itself return.
 *
 * Where userfaultfd is refused, or the build has no debug points and the
 * test needs them, or the kernel has no EVENT_FORK for a fork case, the
 * test says so on stderr and passes (Check has no skip).
 *
 * The store, the areas, the look at a page and the runtime's helpers are
 * shared with test_uffd.c: uffd_harness.h.
 */
#include "mm.h"
#include "uffd_harness.h"
#include "vmr_test.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef MAP_FIXED_NOREPLACE
#define MAP_FIXED_NOREPLACE 0x100000
#endif

/* How long a wait that must end may take. */
#define DEADLINE_S 10.0
/* How long an injection waits for the state it needs. */
#define INJECT_S 5.0
/* How long a held event application waits for the fault's ioctl. */
#define HOLD_S 0.05
/* How long an install is held for an event that must not be read. */
#define EXCL_S 0.2

/* The area of one race: PAGES pages; the fault is on page TARGET; REMOVE
 * and UNMAP cover [EV_FIRST, EV_FIRST + EV_COUNT), REMAP moves them all. */
#define PAGES 8
#define TARGET 3
#define EV_FIRST 2
#define EV_COUNT 3

static const enum vmr_retry_policy policies[] = {
	VMR_RETRY_VMA,
	VMR_RETRY_SPACE,
	VMR_HOLD_IO,
};
#define NR_POLICIES ((int)VMR_ARRAY_SIZE(policies))

/* ---- the points, the events, the modes ---------------------------------- */

enum at { AT_FAULT, AT_LOOKUP, AT_STORE, AT_RESOLVE, NR_AT,
	  AT_INSTALL = NR_AT };
enum event { EV_REMOVE, EV_UNMAP, EV_REMAP, EV_FORK, NR_EV };
enum mode { PENDING, RACING, NR_MODES };

static const char *const at_names[NR_AT + 1] = {
	"fault", "lookup", "store read", "resolve", "install",
};
static const char *const ev_names[NR_EV] = {
	"REMOVE", "UNMAP", "REMAP", "FORK",
};
static const char *const mode_names[NR_MODES] = { "pending", "racing" };

/* The debug point of each place; AT_STORE needs none. */
static const enum vmr_debug_point at_points[NR_AT + 1] = {
	[AT_FAULT] = VMR_DP_UFFD_FAULT,
	[AT_LOOKUP] = VMR_DP_RANGE_LOOKUP,
	[AT_STORE] = VMR_DEBUG_POINTS_NR,
	[AT_RESOLVE] = VMR_DP_UFFD_RESOLVE,
	[AT_INSTALL] = VMR_DP_UFFD_INSTALL,
};

/* Whether the fault holds its lock at @at under @policy. */
static bool lock_held_at(enum at at, enum vmr_retry_policy policy)
{
	return at == AT_RESOLVE || (at == AT_STORE && policy == VMR_HOLD_IO);
}

/* ---- memory of the process ------------------------------------------------ */

/* A new area of @pages pages registered with the runtime, page 0 at store
 * page @store_page; by value: a race copies it (the actor's, the moved
 * one) and none changes it. */
static struct area registered_area(size_t pages, uint64_t store_page)
{
	struct area *a = new_area(pages, store_page);

	map_area(a);
	return *a;
}

/* One thread that touches one page once; the test thread reads @view. */
struct toucher {
	pthread_t thread;
	uintptr_t addr;
	uint64_t off;
	bool write;
	enum view view;
	atomic_bool done;
};

/* The race's faulter, and whether it returned: the handler threads read
 * this flag, set up before they started (the toucher itself is set up
 * after, and reaches them only through the kernel, unseen by TSan). */
static struct toucher *race_faulter(void);
static atomic_bool race_faulter_done;

static void *toucher_main(void *arg)
{
	struct toucher *t = arg;

	t->view = look(t->addr, t->off, t->write);
	atomic_store(&t->done, true);
	if (t == race_faulter())
		atomic_store(&race_faulter_done, true);
	return NULL;
}

static void start_toucher(struct toucher *t, uintptr_t addr, uint64_t off)
{
	memset(t, 0, sizeof(*t));
	t->addr = addr;
	t->off = off;
	atomic_init(&t->done, false);
	ck_assert_int_eq(pthread_create(&t->thread, NULL, toucher_main, t), 0);
}

/* A page known to be resolvable, looked at from a thread of its own. */
static enum view look_from_thread(uintptr_t addr, uint64_t off);

/* ---- the runtime ----------------------------------------------------------- */

/* A space and a runtime over it as @o says; false where userfaultfd is
 * refused or valgrind runs the test. */
static bool open_race_runtime_with(const struct rt_opts *o, const char *test)
{
	if (getenv("VMR_TEST_VALGRIND")) {
		/* Valgrind runs one thread at a time: a thread asleep in a
		 * uffd fault would keep the handler from ever running. */
		fprintf(stderr, "%s: userfaultfd under valgrind: skipped\n",
			test);
		return false;
	}
	return open_runtime(o, test);
}

static bool open_race_runtime(enum vmr_retry_policy policy,
			      unsigned int threads, const char *test)
{
	struct rt_opts o = { .policy = policy, .threads = threads };

	return open_race_runtime_with(&o, test);
}

static bool need_debug_points(const char *test)
{
	if (vmr_debug_points_built())
		return true;
	fprintf(stderr, "%s: built without debug points (-Ddebug_points=true): "
			"skipped\n",
		test);
	return false;
}

static enum view look_from_thread(uintptr_t addr, uint64_t off)
{
	struct toucher t;
	int err;

	start_toucher(&t, addr, off);
	err = vmr_test_join(t.thread, DEADLINE_S);
	ck_assert_msg(!err, "a fault at %#lx was never resolved",
		      (unsigned long)addr);
	return t.view;
}

/*
 * Join @t within @seconds.  A thread left asleep is a lost wakeup: say so,
 * with the counters, after waking it by unregistering @len bytes at
 * @range (which makes them plain memory), so that the test ends.
 */
static void join_faulter(struct toucher *t, void *range, size_t len,
			 double seconds)
{
	struct uffdio_range r = { .start = (uintptr_t)range, .len = len };
	struct vmr_uffd_stats u;
	int err = vmr_test_join(t->thread, seconds);

	if (!err)
		return;
	u = ustats();
	ioctl(vmr_uffd_fd(uffd), UFFDIO_UNREGISTER, &r);
	vmr_test_join(t->thread, DEADLINE_S);
	ck_abort_msg("the faulter at %#lx was left asleep (%llu faults, "
		     "%llu copies, %llu wakes, %llu eagain, %llu enoent, "
		     "%llu eexist)",
		     (unsigned long)t->addr, (unsigned long long)u.faults,
		     (unsigned long long)u.copies, (unsigned long long)u.wakes,
		     (unsigned long long)u.eagain, (unsigned long long)u.enoent,
		     (unsigned long long)u.eexist);
}

/* ---- the actor: causes the event when told ------------------------------- */

struct actor {
	pthread_t thread;
	enum event ev;
	struct area area; /* where the event happens */
	void *dest;       /* REMAP: where the area moves (reserved) */
	atomic_bool go;
	atomic_bool done;
	int ret;          /* 0, or the errno of the call */
	bool plugged;     /* REMAP: PROT_NONE now where the area was */
	pid_t child;      /* FORK */
};

static void *actor_main(void *arg)
{
	struct actor *a = arg;
	unsigned char *first = a->area.base + EV_FIRST * pg;
	size_t len = a->area.pages * pg;
	bool go;
	void *p;

	VMR_WAIT_FOR(go, atomic_load(&a->go), DEADLINE_S + INJECT_S);
	if (!go) {
		a->ret = ETIMEDOUT;
		atomic_store(&a->done, true);
		return NULL;
	}
	switch (a->ev) {
	case EV_REMOVE:
		a->ret = madvise(first, EV_COUNT * pg, MADV_DONTNEED) ? errno : 0;
		break;
	case EV_UNMAP:
		/* Replacing unmaps (an UNMAP event) and keeps the addresses
		 * taken: a later access is SIGSEGV, never someone's page. */
		p = mmap(first, EV_COUNT * pg, PROT_NONE,
			 MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED | MAP_NORESERVE,
			 -1, 0);
		a->ret = p == first ? 0 : p == MAP_FAILED ? errno : EFAULT;
		break;
	case EV_REMAP:
		p = mremap(a->area.base, len, len,
			   MREMAP_MAYMOVE | MREMAP_FIXED, a->dest);
		a->ret = p == a->dest ? 0 : p == MAP_FAILED ? errno : EFAULT;
		if (a->ret)
			break;
		p = mmap(a->area.base, len, PROT_NONE,
			 MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE |
				 MAP_NORESERVE,
			 -1, 0);
		a->plugged = p == a->area.base;
		if (p != MAP_FAILED && p != a->area.base)
			munmap(p, len);
		break;
	case EV_FORK:
		a->child = fork();
		if (a->child == 0)
			_exit(child_touch(&a->area, false));
		a->ret = a->child < 0 ? errno : 0;
		break;
	default:
		a->ret = EINVAL;
		break;
	}
	atomic_store(&a->done, true);
	return NULL;
}

static void start_actor(struct actor *a, enum event ev, const struct area *area,
			void *dest)
{
	memset(a, 0, sizeof(*a));
	a->ev = ev;
	a->area = *area;
	a->dest = dest;
	a->child = -1;
	atomic_init(&a->go, false);
	atomic_init(&a->done, false);
	ck_assert_int_eq(pthread_create(&a->thread, NULL, actor_main, a), 0);
}


/* ---- the injection ---------------------------------------------------- */

enum action {
	DO_EVENT,   /* start the actor's event, wait as the mode says */
	DO_EEXIST,  /* install a MARKER page first */
	DO_PARK,    /* start the event, then hold until shutdown began */
	DO_COALESCE, /* wait for a duplicate fault, then install a MARKER */
	DO_OUTLIVE,  /* wait for a duplicate fault, then unmap the area and
		      * wait until its regions are closed */
	DO_HOLD_EVENT, /* start the event, hold the fault EXCL_S or until the
			* event is read (which must not happen) */
	DO_HOLD_FAULT  /* hold the fault until the test thread says another
			* fault was served */
};

/*
 * One race.  The test thread sets it up before any fault; the injection
 * runs once, on the handler thread that reaches the point for @addr
 * first, and records (never asserts); the test thread asserts after.
 */
static struct race {
	enum at at;
	enum action action;
	uintptr_t addr;      /* the fault's page */
	uint64_t off;        /* its store offset (AT_STORE) */
	size_t index;        /* its index in its page map (page_wait) */
	enum mode mode;
	bool lock_held;      /* the fault holds its lock at the point */
	bool dontwake;       /* DO_EEXIST: leave the wake to the runtime */
	struct actor *actor;
	struct toucher *faulter;
	atomic_bool armed;
	atomic_bool fired;
	atomic_bool returned;      /* the injection went back to the fault */
	atomic_bool hold_events;   /* hold the next event's application */
	atomic_bool events_held;   /* ... and it was */
	atomic_bool dup_waiting;   /* DO_COALESCE: the duplicate sleeps */
	atomic_int copy_err;       /* DO_EEXIST, DO_COALESCE: the copy */
	struct area area;          /* DO_OUTLIVE: what it unmaps */
	atomic_bool other_served;  /* DO_HOLD_FAULT: the other fault was */
	const char *_Atomic err;   /* the first thing that went wrong */
} race;

static struct toucher *race_faulter(void)
{
	return race.faulter;
}

static void race_error(const char *what)
{
	const char *none = NULL;

	atomic_compare_exchange_strong(&race.err, &none, what);
}

static bool race_at_store(uint64_t off)
{
	return race.at == AT_STORE && off == race.off &&
	       atomic_load(&race.armed);
}

/* Wait until the runtime's descriptor has a message: the event. */
static bool event_queued(double seconds)
{
	struct pollfd p = { .fd = vmr_uffd_fd(uffd), .events = POLLIN };
	double end = vmr_test_now() + seconds;

	do {
		p.revents = 0;
		if (poll(&p, 1, 10) > 0 && (p.revents & POLLIN))
			return true;
	} while (vmr_test_now() < end);
	return false;
}

/* Whether the write hold that detached @r is over. */
static bool detach_done(const struct vmr_region *r)
{
	return atomic_load(&r->detached) &&
	       atomic_load(&r->write_seq) != atomic_load(&space->lock.seq);
}

static void fire_event(void)
{
	const struct rcu_flavor_struct *flavor = vmr_space_flavor(space);
	struct actor *a = race.actor;
	struct vmr_region *r;
	bool ok;

	/* The region, kept valid by the read-side section until the wait
	 * for its detach is over (no grace period is waited for by anyone
	 * this section could block). */
	vmr_rcu_read_lock(flavor);
	r = vmr_tree_lookup(space->tree, race.addr, NULL);
	atomic_store(&a->go, true);
	if (race.mode == PENDING) {
		if (!event_queued(INJECT_S))
			race_error("the event never reached the queue");
		vmr_rcu_read_unlock(flavor);
		return;
	}
	VMR_WAIT_FOR(ok, atomic_load(&a->done), INJECT_S);
	if (!ok)
		race_error("the event was never read");
	if (ok && !race.lock_held && a->ev != EV_FORK) {
		VMR_WAIT_FOR(ok, !r || detach_done(r), INJECT_S);
		if (!ok)
			race_error("the event was read and never applied");
	}
	vmr_rcu_read_unlock(flavor);
}

static void fire_park(void)
{
	bool ok;

	atomic_store(&race.actor->go, true);
	if (!event_queued(INJECT_S))
		race_error("the event never reached the queue");
	atomic_store(&race.returned, false);
	VMR_WAIT_FOR(ok, vmr_space_is_shut_down(space), DEADLINE_S);
	if (!ok)
		race_error("the runtime was never shut down");
}

static void fire_coalesce(void)
{
	bool ok;

	VMR_WAIT_FOR(ok, atomic_load(&race.dup_waiting), INJECT_S);
	if (!ok)
		race_error("the duplicate fault never waited for the page");
	atomic_store(&race.copy_err,
		     copy_marker(vmr_uffd_fd(uffd), race.addr, true));
}

static void fire_outlive(void)
{
	struct area *a = &race.area;
	bool ok;
	int err;

	VMR_WAIT_FOR(ok, atomic_load(&race.dup_waiting), INJECT_S);
	if (!ok) {
		race_error("the duplicate fault never waited for the page");
		return;
	}
	/* This fault dropped its lock for the read: nothing it holds keeps
	 * the unmap's write lock waiting. */
	err = vmr_uffd_unmap(uffd, a->base, a->pages * pg);
	if (err) {
		race_error("the unmap failed");
		return;
	}
	/* The regions' close(): their references on the mapping are gone,
	 * and only the two faults' own are left. */
	VMR_WAIT_FOR(ok, atomic_load(&space->zombies) == 0, INJECT_S);
	if (!ok)
		race_error("the unmapped regions were never closed");
}

/* Hold an install while the actor causes an event: no handler may read
 * it before the install has landed. */
static void fire_hold_event(void)
{
	bool read;

	atomic_store(&race.actor->go, true);
	VMR_WAIT_FOR(read, atomic_load(&race.actor->done), EXCL_S);
	if (read)
		race_error("an event was read while a page was being "
			   "installed");
}

/* Hold an install until another fault was served meanwhile. */
static void fire_hold_fault(void)
{
	bool ok;

	VMR_WAIT_FOR(ok, atomic_load(&race.other_served), INJECT_S);
	if (!ok)
		race_error("no other fault was served while a page was being "
			   "installed");
}

static void race_fire(void)
{
	if (!atomic_exchange(&race.armed, false))
		return;
	atomic_store(&race.fired, true);
	switch (race.action) {
	case DO_EVENT:
		fire_event();
		break;
	case DO_EEXIST:
		atomic_store(&race.copy_err,
			     copy_marker(vmr_uffd_fd(uffd), race.addr,
					 race.dontwake));
		break;
	case DO_PARK:
		fire_park();
		break;
	case DO_COALESCE:
		fire_coalesce();
		break;
	case DO_OUTLIVE:
		fire_outlive();
		break;
	case DO_HOLD_EVENT:
		fire_hold_event();
		break;
	case DO_HOLD_FAULT:
		fire_hold_fault();
		break;
	}
	atomic_store(&race.returned, true);
}

/* The store read's injection point (AT_STORE), in every build. */
static void race_store_read(uint64_t off)
{
	if (race_at_store(off))
		race_fire();
}

/*
 * The event's application, held (on the other handler thread) until the
 * injection has gone back to its fault and the fault's ioctl has had the
 * time to run: at most HOLD_S after, or as soon as the faulter wakes.
 */
static void hold_event(void)
{
	bool ok;

	if (!atomic_exchange(&race.hold_events, false))
		return;
	VMR_WAIT_FOR(ok, atomic_load(&race.returned), INJECT_S);
	if (!ok) {
		race_error("the held event's fault never went on");
		return;
	}
	VMR_WAIT_FOR(ok, atomic_load(&race_faulter_done), HOLD_S);
	atomic_store(&race.events_held, true);
}

static void race_hook(enum vmr_debug_point point, uintptr_t addr, void *arg)
{
	(void)arg;
	if (point == VMR_DP_UFFD_EVENT) {
		hold_event();
		return;
	}
	if (point == VMR_DP_PAGE_WAIT &&
	    (race.action == DO_COALESCE || race.action == DO_OUTLIVE) &&
	    addr == race.index && atomic_load(&race.fired))
		atomic_store(&race.dup_waiting, true);
	if (race.at != AT_STORE && point == at_points[race.at] &&
	    addr == race.addr && atomic_load(&race.armed))
		race_fire();
}

/* Arm the race: the fault on page @i of @a, at @at. */
static void arm(enum at at, enum action action, const struct area *a,
		size_t i)
{
	race.at = at;
	race.action = action;
	race.addr = page_addr(a, i);
	race.off = page_off(a, i);
	race.index = i;
	race.area = *a;
	if (at != AT_STORE || action == DO_COALESCE || action == DO_OUTLIVE)
		ck_assert_int_eq(vmr_debug_set(race_hook, NULL), 0);
	else if (vmr_debug_points_built())
		/* The event hold still helps where there is one. */
		ck_assert_int_eq(vmr_debug_set(race_hook, NULL), 0);
	atomic_store(&race.armed, true);
}

static void assert_race_ran(void)
{
	const char *err = atomic_load(&race.err);

	ck_assert_msg(atomic_load(&race.fired),
		      "the injection at %s never ran", at_names[race.at]);
	ck_assert_msg(!err, "the injection at %s: %s", at_names[race.at], err);
}

/*
 * Join the race's faulter @t (its area @a) and actor @act, each within
 * DEADLINE_S; the injection must have run without an error, and the
 * actor's call must have succeeded.
 */
static void join_race(struct toucher *t, struct actor *act,
		      const struct area *a)
{
	join_faulter(t, a->base, PAGES * pg, DEADLINE_S);
	ck_assert_int_eq(vmr_test_join(act->thread, DEADLINE_S), 0);
	assert_race_ran();
	ck_assert_msg(!act->ret, "the %s failed: %s", ev_names[act->ev],
		      strerror(act->ret));
}

/* ---- fixture ------------------------------------------------------------ */

static void setup(void)
{
	harness_setup(DEADLINE_S);
	store.on_read = race_store_read;
	memset(&race, 0, sizeof(race));
	atomic_init(&race.armed, false);
	atomic_init(&race.fired, false);
	atomic_init(&race.returned, false);
	atomic_init(&race.hold_events, false);
	atomic_init(&race.events_held, false);
	atomic_init(&race.dup_waiting, false);
	atomic_init(&race.other_served, false);
	atomic_init(&race.copy_err, 0);
	atomic_init(&race.err, NULL);
	atomic_init(&race_faulter_done, false);
}

/* The teardown's destroy, bounded too: a hang fails the test. */
static void destroy_runtime(void)
{
	struct destroyer d;

	if (!uffd)
		return;
	start_destroy(&d);
	join_destroy(&d, DESTROY_S);
}

static void teardown(void)
{
	if (vmr_debug_points_built())
		vmr_debug_set(NULL, NULL);
	atomic_store(&race.armed, false);
	destroy_runtime();
	harness_teardown();
}

/* ---- an event at each point of a fault ------------------------------------ */

/* _i: the point, the event, the mode, the policy, slowest last. */
#define EVENT_CASES (NR_AT * NR_EV * NR_MODES * NR_POLICIES)

START_TEST(test_an_event_at_each_point_of_a_fault_leaves_every_page_right)
{
	const enum at at = (enum at)(_i % NR_AT);
	const enum event ev = (enum event)(_i / NR_AT % NR_EV);
	const enum mode mode = (enum mode)(_i / (NR_AT * NR_EV) % NR_MODES);
	const enum vmr_retry_policy policy =
		policies[_i / (NR_AT * NR_EV * NR_MODES)];
	const bool held = lock_held_at(at, policy);
	struct vmr_uffd_stats u;
	struct vmr_stats s;
	struct toucher t;
	struct actor act;
	struct area a, moved;
	void *dest = NULL;
	enum view v;
	uint64_t off;

	if (at != AT_STORE && !need_debug_points(__func__))
		return;
	if (!open_race_runtime(policy, mode == PENDING ? 1 : 3, __func__))
		return;
	if (ev == EV_FORK && !need_fork_events(__func__))
		return;
	fprintf(stderr, "%s: %s at %s, %s, policy %d\n", __func__,
		ev_names[ev], at_names[at], mode_names[mode], (int)policy);
	a = registered_area(PAGES, 1000 + (uint64_t)_i * 2 * PAGES);
	if (ev == EV_REMAP)
		dest = map_memory(PAGES, PROT_NONE);
	start_actor(&act, ev, &a, dest);
	race.mode = mode;
	race.lock_held = held;
	race.actor = &act;
	race.faulter = &t;
	/* Where the fault holds its lock, the event's application waits
	 * for it: hold it longer still, so the fault's ioctl surely runs
	 * between the event's read and its application. */
	if (mode == RACING && held && vmr_debug_points_built())
		atomic_store(&race.hold_events, true);
	arm(at, DO_EVENT, &a, TARGET);
	start_toucher(&t, page_addr(&a, TARGET), page_off(&a, TARGET));
	join_race(&t, &act, &a);
	if (ev == EV_REMAP && !act.plugged)
		forget_memory(a.base);
	u = settled_ustats();
	s = sstats();

	/* What the faulter saw. */
	switch (ev) {
	case EV_REMOVE:
		/* Removed before it was resolved: the page is zero now,
		 * never the store's contents from before the REMOVE. */
		ck_assert_msg(t.view == VIEW_ZERO,
			      "the faulter read %s after its page was removed",
			      view_names[t.view]);
		break;
	case EV_UNMAP:
		ck_assert_msg(t.view == VIEW_SIGSEGV,
			      "the faulter got %s after its page was unmapped",
			      view_names[t.view]);
		break;
	case EV_REMAP:
		if (act.plugged)
			ck_assert_msg(t.view == VIEW_SIGSEGV,
				      "the faulter got %s at the address its "
				      "page moved away from",
				      view_names[t.view]);
		break;
	case EV_FORK:
		ck_assert_msg(t.view == VIEW_STORE,
			      "the parent's faulter read %s across a fork",
			      view_names[t.view]);
		break;
	default:
		break;
	}

	/* The counters: the event applied once, and the race was hit. */
	ck_assert_uint_eq(u.poisoned, 0);
	switch (ev) {
	case EV_REMOVE:
		ck_assert_uint_eq(u.events_remove, 1);
		break;
	case EV_UNMAP:
		ck_assert_uint_eq(u.events_unmap, 1);
		break;
	case EV_REMAP:
		ck_assert_uint_eq(u.events_remap, 1);
		break;
	default:
		ck_assert_uint_eq(u.events_fork, 1);
		break;
	}
	ck_assert_msg(u.copies == (ev == EV_FORK),
		      "%llu pages installed (the parent's fault %s)",
		      (unsigned long long)u.copies,
		      ev == EV_FORK ? "must be, once" : "must not be");
	if (mode == PENDING) {
		/* The install met the queued event's EAGAIN and retried. */
		ck_assert_msg(u.eagain >= 1, "no EAGAIN: the race was missed");
	} else if (ev != EV_FORK && !held) {
		/* The fault went on against the changed space. */
		if (at == AT_LOOKUP)
			ck_assert_msg(s.vma_lock_miss >= 1,
				      "the range lock never missed its region");
		else
			ck_assert_msg(s.result_sigsegv >= 1,
				      "the fault found its region still there");
		ck_assert_uint_ge(u.enoent, 1);
	} else if (ev != EV_FORK) {
		/* The ioctl found the range gone or changing. */
		ck_assert_uint_ge(u.enoent + u.eagain, 1);
		if (vmr_debug_points_built())
			ck_assert(atomic_load(&race.events_held));
	}

	/* What the pages hold now. */
	switch (ev) {
	case EV_REMOVE:
		ck_assert(!region_at(page_addr(&a, TARGET), NULL));
		v = look_from_thread(page_addr(&a, TARGET), page_off(&a, TARGET));
		ck_assert_msg(v == VIEW_ZERO,
			      "a removed page reads %s afterwards",
			      view_names[v]);
		ck_assert_uint_eq(look_from_thread(page_addr(&a, 0),
						   page_off(&a, 0)),
				  VIEW_STORE);
		ck_assert_uint_eq(look_from_thread(page_addr(&a, PAGES - 1),
						   page_off(&a, PAGES - 1)),
				  VIEW_STORE);
		break;
	case EV_UNMAP:
		ck_assert(!region_at(page_addr(&a, TARGET), NULL));
		ck_assert_uint_eq(look_from_thread(page_addr(&a, TARGET),
						   page_off(&a, TARGET)),
				  VIEW_SIGSEGV);
		ck_assert_uint_eq(look_from_thread(page_addr(&a, PAGES - 1),
						   page_off(&a, PAGES - 1)),
				  VIEW_STORE);
		break;
	case EV_REMAP:
		moved = a;
		moved.base = dest;
		ck_assert(!region_at(page_addr(&a, TARGET), NULL));
		ck_assert(region_at(page_addr(&moved, TARGET), &off));
		ck_assert_uint_eq(off, page_off(&a, TARGET));
		/* Every page at its new place reads its own contents. */
		for (size_t i = 0; i < PAGES; i++) {
			v = look_from_thread(page_addr(&moved, i),
					     page_off(&moved, i));
			ck_assert_msg(v == VIEW_STORE,
				      "moved page %zu reads %s", i,
				      view_names[v]);
		}
		break;
	case EV_FORK:
		assert_child_read_right(wait_child(act.child));
		ck_assert_uint_eq(look_from_thread(page_addr(&a, TARGET),
						   page_off(&a, TARGET)),
				  VIEW_STORE);
		break;
	default:
		break;
	}
}
END_TEST

/* ---- EEXIST at each point ----------------------------------------------- */

/*
 * The page is installed behind the runtime's back (UFFDIO_COPY of a
 * MARKER on its descriptor) at each point of the fault: the runtime's own
 * install finds it (EEXIST) and must wake the faulter, which is the only
 * wake where the second install did not wake (DONTWAKE).  _i: the point,
 * DONTWAKE or not, the policy (RETRY_VMA or HOLD_IO).
 */
START_TEST(test_a_page_installed_at_each_point_of_a_fault_is_eexist_and_woken)
{
	const enum at at = (enum at)(_i % NR_AT);
	const bool dontwake = _i / NR_AT % 2;
	const enum vmr_retry_policy policy =
		_i / (2 * NR_AT) ? VMR_HOLD_IO : VMR_RETRY_VMA;
	struct vmr_uffd_stats u;
	struct toucher t;
	struct area a;

	if (at != AT_STORE && !need_debug_points(__func__))
		return;
	if (!open_race_runtime(policy, 1, __func__))
		return;
	a = registered_area(PAGES, 5000 + (uint64_t)_i * PAGES);
	race.dontwake = dontwake;
	arm(at, DO_EEXIST, &a, TARGET);
	start_toucher(&t, page_addr(&a, TARGET), page_off(&a, TARGET));
	join_faulter(&t, a.base, PAGES * pg, DEADLINE_S);
	assert_race_ran();
	ck_assert_int_eq(atomic_load(&race.copy_err), 0);
	ck_assert_msg(t.view == VIEW_MARKER, "the faulter read %s",
		      view_names[t.view]);
	u = settled_ustats();
	ck_assert_uint_eq(u.eexist, 1);
	ck_assert_uint_eq(u.copies, 0);
	ck_assert_uint_eq(u.poisoned, 0);
	ck_assert_uint_ge(u.wakes, 1);
	/* The page stays the second installer's; the others are served. */
	for (size_t i = 0; i < PAGES; i++)
		ck_assert_uint_eq(look_from_thread(page_addr(&a, i),
						   page_off(&a, i)),
				  i == TARGET ? VIEW_MARKER : VIEW_STORE);
}
END_TEST

/*
 * Two faults on page TARGET of @a, two touchers @t: the first is armed at
 * @at for @action, and the second starts once the injection has fired (the
 * first holds the page then: the second is its duplicate).  Both are
 * joined, and the injection must have run without an error.
 */
static void fault_twice(enum at at, enum action action, const struct area *a,
			struct toucher t[2])
{
	bool ok;

	arm(at, action, a, TARGET);
	start_toucher(&t[0], page_addr(a, TARGET), page_off(a, TARGET));
	VMR_WAIT_FOR(ok, atomic_load(&race.fired), DEADLINE_S);
	ck_assert_msg(ok, "the first fault never reached %s", at_names[at]);
	start_toucher(&t[1], page_addr(a, TARGET), page_off(a, TARGET));
	join_faulter(&t[0], a->base, PAGES * pg, DEADLINE_S);
	join_faulter(&t[1], a->base, PAGES * pg, DEADLINE_S);
	assert_race_ran();
}

/*
 * Two faults on one page, two handler threads: the first is held at
 * resolve until the second waits for the page's lock; then the page is
 * installed behind the runtime's back without a wake.  The first install
 * finds it (EEXIST, wake), the second fault finds the page up to date
 * (coalesced, wake): both faulters return with the MARKER, and the store
 * was read once.
 */
START_TEST(test_a_duplicate_fault_behind_an_eexist_is_coalesced_and_woken)
{
	struct vmr_uffd_stats u;
	struct toucher t[2];
	struct area a;

	if (!need_debug_points(__func__))
		return;
	if (!open_race_runtime(VMR_HOLD_IO, 2, __func__))
		return;
	a = registered_area(PAGES, 9000);
	fault_twice(AT_RESOLVE, DO_COALESCE, &a, t);
	ck_assert_int_eq(atomic_load(&race.copy_err), 0);
	ck_assert_uint_eq(t[0].view, VIEW_MARKER);
	ck_assert_uint_eq(t[1].view, VIEW_MARKER);
	u = settled_ustats();
	ck_assert_uint_eq(u.eexist, 1);
	ck_assert_uint_eq(u.coalesced, 1);
	ck_assert_uint_eq(u.copies, 0);
	ck_assert_uint_eq(atomic_load(&store.reads), 1);
}
END_TEST

/*
 * A duplicate fault asleep on a page outlives the page's mapping.  Two
 * faults on one page, two handler threads, a policy that drops the lock
 * for I/O: the first is held in its store read (lock dropped, page locked)
 * until the second sleeps in the page wait (its lock dropped too); then the
 * whole area is unmapped and its regions closed.  The first fault's retry
 * finds no region: it unlocks the page, which wakes the second, and drops
 * its reference on the mapping.  The sleeper wakes in the page map, so its
 * own reference must keep the mapping alive until then: without it, the
 * first fault frees the map just before the sleeper reads it (the
 * sanitizer build reports the use after free).  Both faulters return with
 * zero (the range is plain memory now), the store was read once, and
 * nothing was installed.  _i: the policy (RETRY_VMA, RETRY_SPACE).
 */
START_TEST(test_a_fault_asleep_on_a_page_outlives_the_unmap_of_its_mapping)
{
	const enum vmr_retry_policy policy = policies[_i];
	struct vmr_uffd_stats u;
	struct vmr_stats st;
	struct toucher t[2];
	struct area a;
	bool ok;

	if (!need_debug_points(__func__))
		return;
	if (!open_race_runtime(policy, 2, __func__))
		return;
	a = registered_area(PAGES, 9100);
	fault_twice(AT_STORE, DO_OUTLIVE, &a, t);
	ck_assert_uint_eq(t[0].view, VIEW_ZERO);
	ck_assert_uint_eq(t[1].view, VIEW_ZERO);
	ck_assert(!region_at(page_addr(&a, TARGET), NULL));
	/* The faulters returned at the unmap; their faults end after. */
	VMR_WAIT_FOR(ok, sstats().faults == 2, DEADLINE_S);
	ck_assert_msg(ok, "the two faults never ended");
	u = settled_ustats();
	st = sstats();
	ck_assert_uint_eq(u.copies, 0);
	ck_assert_uint_eq(atomic_load(&store.reads), 1);
	/* Each retried, found no region, and slept once (the duplicate). */
	ck_assert_uint_eq(st.result_sigsegv, 2);
	ck_assert_uint_eq(st.page_wait_sleeps, 1);
}
END_TEST

/*
 * The set-up of a race with a REMOVE: an area of PAGES pages at store page
 * @store_page, the actor @act ready to remove its event range, and the
 * toucher @t faulting on page TARGET, armed at @at for @action.
 */
static struct area remove_race(struct actor *act, struct toucher *t,
			       enum at at, enum action action,
			       uint64_t store_page)
{
	struct area a = registered_area(PAGES, store_page);

	start_actor(act, EV_REMOVE, &a, NULL);
	race.actor = act;
	race.faulter = t;
	arm(at, action, &a, TARGET);
	start_toucher(t, page_addr(&a, TARGET), page_off(&a, TARGET));
	return a;
}

/* ---- reads and installs -------------------------------------------------- */

/*
 * With events and several handler threads, no message is read while a
 * page is being installed: a REMOVE read then would let its madvise() zap
 * the range before the copy lands, and leave the store's contents in
 * memory just discarded.  One fault is held just before its ioctl while
 * the actor removes its page; two idle handler threads could read the
 * event, yet it must stay unread for EXCL_S.  Then the copy meets the
 * queued event (EAGAIN) and is deferred, the event is read and applied,
 * and the faulter and the page read zero, never the store.  (Without the
 * exclusion the event is read at once, the zap runs, and the copy lands
 * after it.)  _i: the policy.
 */
START_TEST(test_no_event_is_read_while_a_page_is_installed)
{
	const enum vmr_retry_policy policy = policies[_i];
	struct vmr_uffd_stats u;
	struct toucher t;
	struct actor act;
	struct area a;
	enum view v;

	if (!need_debug_points(__func__))
		return;
	if (!open_race_runtime(policy, 3, __func__))
		return;
	a = remove_race(&act, &t, AT_INSTALL, DO_HOLD_EVENT,
			9200 + (uint64_t)_i * PAGES);
	join_race(&t, &act, &a);
	ck_assert_msg(t.view == VIEW_ZERO, "the faulter read %s",
		      view_names[t.view]);
	u = settled_ustats();
	ck_assert_uint_eq(u.copies, 0);
	ck_assert_uint_ge(u.eagain, 1);
	ck_assert_uint_eq(u.events_remove, 1);
	ck_assert_uint_eq(u.poisoned, 0);
	v = look_from_thread(page_addr(&a, TARGET), page_off(&a, TARGET));
	ck_assert_msg(v == VIEW_ZERO, "the removed page reads %s afterwards",
		      view_names[v]);
}
END_TEST

/*
 * Without events there is nothing to order, and without REMOVE events no
 * read can let a discard overtake a copy: an install in flight keeps no
 * other handler thread from reading and serving faults.  One fault is held
 * just before its ioctl until a fault on another page has been served (two
 * handler threads); then both pages read the store.  _i: 0,
 * VMR_UFFD_NO_EVENTS; 1, VMR_UFFD_NO_REMOVE.
 */
START_TEST(test_without_removes_an_install_keeps_no_other_fault_waiting)
{
	const struct rt_opts o = { .policy = VMR_RETRY_VMA,
				   .threads = 2,
				   .flags = _i ? VMR_UFFD_NO_REMOVE :
						 VMR_UFFD_NO_EVENTS };
	struct vmr_uffd_stats u;
	struct toucher t;
	struct area a;
	enum view v;
	bool ok;

	if (!need_debug_points(__func__))
		return;
	if (!open_race_runtime_with(&o, __func__))
		return;
	a = registered_area(PAGES, 9300);
	race.faulter = &t;
	arm(AT_INSTALL, DO_HOLD_FAULT, &a, TARGET);
	start_toucher(&t, page_addr(&a, TARGET), page_off(&a, TARGET));
	VMR_WAIT_FOR(ok, atomic_load(&race.fired), DEADLINE_S);
	ck_assert_msg(ok, "the fault never reached %s", at_names[AT_INSTALL]);
	v = look_from_thread(page_addr(&a, TARGET + 1),
			     page_off(&a, TARGET + 1));
	atomic_store(&race.other_served, true);
	join_faulter(&t, a.base, PAGES * pg, DEADLINE_S);
	assert_race_ran();
	ck_assert_uint_eq(v, VIEW_STORE);
	ck_assert_uint_eq(t.view, VIEW_STORE);
	u = settled_ustats();
	ck_assert_uint_eq(u.copies, 2);
	ck_assert_uint_eq(u.events_remove + u.events_unmap + u.events_remap +
				  u.events_fork,
			  0);
}
END_TEST

/* ---- shutdown ----------------------------------------------------------- */

/*
 * The only handler thread is parked at a point of a fault, with a REMOVE
 * of the fault's page queued behind it, when the runtime is destroyed:
 * destroy returns, the faulter returns (the page zero: removed, and plain
 * memory once the runtime is gone), and so does the madvise() that caused
 * the event (its message is read, or the descriptor closed).  _i: the
 * point, the policy (RETRY_VMA or HOLD_IO).
 */
START_TEST(test_destroy_with_a_fault_parked_and_an_event_queued_ends_both)
{
	const enum at at = (enum at)(_i % NR_AT);
	const enum vmr_retry_policy policy =
		_i / NR_AT ? VMR_HOLD_IO : VMR_RETRY_VMA;
	struct destroyer d;
	struct toucher t;
	struct actor act;
	struct area a;
	bool ok;

	if (at != AT_STORE && !need_debug_points(__func__))
		return;
	if (!open_race_runtime(policy, 1, __func__))
		return;
	a = remove_race(&act, &t, at, DO_PARK, 12000 + (uint64_t)_i * PAGES);
	VMR_WAIT_FOR(ok, atomic_load(&race.fired), DEADLINE_S);
	ck_assert_msg(ok, "the fault never reached %s", at_names[at]);
	/* Parked, and the event queued (or the injection says why not). */
	VMR_WAIT_FOR(ok, event_queued(0) || atomic_load(&race.err),
		     DEADLINE_S);
	ck_assert_msg(ok, "the REMOVE never reached the queue");
	start_destroy(&d);
	join_destroy(&d, DESTROY_S);
	join_race(&t, &act, &a);
	ck_assert_msg(t.view == VIEW_ZERO, "the faulter read %s",
		      view_names[t.view]);
	ck_assert_int_eq(vmr_space_destroy(space), 0);
	space = NULL;
}
END_TEST

/* A fault storm: touchers over many pages, each in its own order. */
#define STORM_AREAS 2
#define STORM_PAGES 512
#define STORM_TOUCHERS 8

struct stormer {
	pthread_t thread;
	struct area *areas;
	uint64_t seed;
	atomic_bool *stop;
	atomic_uchar *removed; /* per page of area 0: removed once */
	uint64_t views[NR_VIEWS];
	uint64_t wrong; /* views the page may not show */
	uintptr_t wrong_addr;
	enum view wrong_view;
};

/* Whether page @i of area @k may read @v: its contents, or zero where the
 * runtime may be gone; store and zero only where it was removed. */
static bool storm_allowed(const struct stormer *s, size_t k, size_t i,
			  enum view v)
{
	bool removed = k == 0 && s->removed && atomic_load(&s->removed[i]);

	return v == VIEW_STORE || v == VIEW_ZERO ||
	       (v == VIEW_MIXED && removed);
}

static void *stormer_main(void *arg)
{
	struct stormer *s = arg;
	struct vmr_rng rng;

	vmr_rng_init(&rng, s->seed);
	do {
		for (size_t n = 0; n < STORM_AREAS * STORM_PAGES; n++) {
			size_t k = vmr_rng_below(&rng, STORM_AREAS);
			size_t i = vmr_rng_below(&rng, STORM_PAGES);
			enum view v = look(page_addr(&s->areas[k], i),
					   page_off(&s->areas[k], i), n & 1);

			s->views[v]++;
			if (!storm_allowed(s, k, i, v) && !s->wrong++) {
				s->wrong_addr = page_addr(&s->areas[k], i);
				s->wrong_view = v;
			}
		}
	} while (!atomic_load(s->stop));
	return NULL;
}

static void start_storm(struct stormer *s, struct area *areas,
			atomic_bool *stop, atomic_uchar *removed)
{
	for (size_t n = 0; n < STORM_TOUCHERS; n++) {
		memset(&s[n], 0, sizeof(s[n]));
		s[n].areas = areas;
		s[n].seed = vmr_test_seed() * 31 + n;
		s[n].stop = stop;
		s[n].removed = removed;
		ck_assert_int_eq(pthread_create(&s[n].thread, NULL,
						stormer_main, &s[n]),
				 0);
	}
}

/* Join the storm within @seconds; every view it saw was allowed. */
static uint64_t join_storm(struct stormer *s, double seconds, uint64_t *zero)
{
	double end = vmr_test_now() + seconds;
	uint64_t total = 0;

	*zero = 0;
	for (size_t n = 0; n < STORM_TOUCHERS; n++) {
		int err = vmr_test_join(s[n].thread, end - vmr_test_now());

		ck_assert_msg(!err,
			      "storm toucher %zu still faulting after %.0f s: "
			      "a fault was never ended",
			      n, seconds);
		ck_assert_msg(!s[n].wrong,
			      "%llu pages read wrong; the first, at %#lx, "
			      "read %s",
			      (unsigned long long)s[n].wrong,
			      (unsigned long)s[n].wrong_addr,
			      view_names[s[n].wrong_view]);
		for (int v = 0; v < NR_VIEWS; v++)
			total += s[n].views[v];
		*zero += s[n].views[VIEW_ZERO];
	}
	return total;
}

/* Removes random ranges of area 0 until told to stop; marks them first. */
struct remover {
	pthread_t thread;
	struct area *a;
	atomic_uchar *removed;
	uint64_t seed;
	atomic_bool *stop;
	atomic_uint rounds;
	unsigned int failed;
};

static void *remover_main(void *arg)
{
	struct remover *r = arg;
	struct vmr_rng rng;

	vmr_rng_init(&rng, r->seed);
	while (!atomic_load(r->stop)) {
		size_t len = 1 + vmr_rng_below(&rng, 16);
		size_t first = vmr_rng_below(&rng, r->a->pages - len + 1);

		for (size_t i = first; i < first + len; i++)
			atomic_store(&r->removed[i], 1);
		if (madvise(r->a->base + first * pg, len * pg, MADV_DONTNEED))
			r->failed++;
		atomic_fetch_add(&r->rounds, 1);
		vmr_test_sleep(0.001);
	}
	return NULL;
}

/* Forks children that each touch every page of area 1 until told to
 * stop; a child's status is 0 if every page read its contents or zero. */
struct forker {
	pthread_t thread;
	struct area *a;
	atomic_bool *stop;
	atomic_uint forks;
	unsigned int bad;
	int bad_status;
};

static int child_touch_storm(const struct area *a)
{
	for (size_t i = 0; i < a->pages; i++) {
		enum view v = look(page_addr(a, i), page_off(a, i), i & 1);

		if (v != VIEW_STORE && v != VIEW_ZERO)
			return 10 + (int)v;
	}
	return 0;
}

static void *forker_main(void *arg)
{
	struct forker *f = arg;

	while (!atomic_load(f->stop)) {
		double end = vmr_test_now() + DEADLINE_S;
		int status = 0;
		pid_t pid = fork();

		if (pid == 0)
			_exit(child_touch_storm(f->a));
		if (pid < 0) {
			f->bad++;
			break;
		}
		atomic_fetch_add(&f->forks, 1);
		if (reap_child(pid, end, &status) == 0)
			status = -1;
		if (status && !f->bad++)
			f->bad_status = status;
		vmr_test_sleep(0.005);
	}
	return NULL;
}

/*
 * Many threads fault over many pages of a slow store while another thread
 * removes ranges and another forks children that fault too; the runtime
 * is destroyed in the middle: destroy returns within its bound, every
 * faulter and every madvise() and fork() returns, each page read its
 * contents or zero (store and zero only where removed), each child read
 * right.  Under policies[_i].
 */
START_TEST(test_destroy_during_a_storm_of_faults_and_events_ends_them_all)
{
	struct stormer s[STORM_TOUCHERS];
	struct area areas[STORM_AREAS];
	atomic_uchar *removed;
	atomic_bool stop;
	struct remover rm;
	struct forker fk;
	struct destroyer d;
	uint64_t total, zero;
	bool forks, ok;

	if (!open_race_runtime(policies[_i], 2, __func__))
		return;
	forks = (vmr_uffd_features(uffd) & UFFD_FEATURE_EVENT_FORK) &&
		!VMR_TEST_TSAN;
	store.slow_every = 1;
	store.delay_us = 200;
	for (size_t k = 0; k < STORM_AREAS; k++)
		areas[k] = registered_area(STORM_PAGES,
					   20000 + k * 2 * STORM_PAGES);
	removed = calloc(STORM_PAGES, sizeof(*removed));
	ck_assert_ptr_nonnull(removed);
	atomic_init(&stop, false);
	start_storm(s, areas, &stop, removed);
	rm = (struct remover){ .a = &areas[0], .removed = removed,
			       .seed = vmr_test_seed(), .stop = &stop };
	ck_assert_int_eq(pthread_create(&rm.thread, NULL, remover_main, &rm),
			 0);
	fk = (struct forker){ .a = &areas[1], .stop = &stop };
	if (forks)
		ck_assert_int_eq(pthread_create(&fk.thread, NULL, forker_main,
						&fk),
				 0);
	/* The destroy comes in the middle of it all: after a fork and a
	 * round of removes (a loaded machine may take a while to start). */
	VMR_WAIT_FOR(ok, atomic_load(&rm.rounds) > 0 &&
				 (!forks || atomic_load(&fk.forks) > 0),
		     DEADLINE_S);
	ck_assert_msg(ok, "no remove round or no fork began");
	vmr_test_sleep(0.15);
	start_destroy(&d);
	join_destroy(&d, DESTROY_S);
	atomic_store(&stop, true);
	total = join_storm(s, DEADLINE_S, &zero);
	ck_assert_int_eq(vmr_test_join(rm.thread, DEADLINE_S), 0);
	ck_assert_uint_eq(rm.failed, 0);
	ck_assert_uint_gt(rm.rounds, 0);
	if (forks) {
		ck_assert_int_eq(vmr_test_join(fk.thread, 2 * DEADLINE_S), 0);
		ck_assert_msg(!fk.bad, "%u children read wrong (status %#x)",
			      fk.bad, fk.bad_status);
		ck_assert_uint_gt(fk.forks, 0);
	}
	ck_assert_uint_ge(total, STORM_TOUCHERS * STORM_AREAS * STORM_PAGES);
	/* Afterwards every page is plain memory: the storm saw zeroes. */
	ck_assert_uint_gt(zero, 0);
	free(removed);
	ck_assert_int_eq(vmr_space_destroy(space), 0);
	space = NULL;
}
END_TEST

/*
 * vmr_space_shutdown() in the middle of a storm: faults in flight end
 * unfinished, their faulters are woken and fault again; no thread of the
 * runtime hangs, and vmr_uffd_destroy() afterwards returns and ends every
 * fault (the pages are plain memory then).  Under policies[_i].
 */
START_TEST(test_shutdown_during_a_fault_storm_then_destroy_ends_every_fault)
{
	struct stormer s[STORM_TOUCHERS];
	struct area areas[STORM_AREAS];
	atomic_bool stop;
	struct destroyer d;
	struct vmr_stats st;
	uint64_t total, zero, faults;
	bool ok;

	if (!open_race_runtime(policies[_i], 2, __func__))
		return;
	store.slow_every = 1;
	store.delay_us = 200;
	for (size_t k = 0; k < STORM_AREAS; k++)
		areas[k] = registered_area(STORM_PAGES,
					   40000 + k * 2 * STORM_PAGES);
	atomic_init(&stop, false);
	start_storm(s, areas, &stop, NULL);
	vmr_test_sleep(0.1);
	ck_assert_int_eq(vmr_space_shutdown(space), 0);
	/* The handlers still answer every message: faults keep ending,
	 * unfinished, and the faulters fault again. */
	faults = sstats().faults;
	VMR_WAIT_FOR(ok, sstats().result_unfinished > 0 &&
				 sstats().faults > faults + 8,
		     DEADLINE_S);
	ck_assert_msg(ok, "after shutdown the handlers stopped answering");
	start_destroy(&d);
	join_destroy(&d, DESTROY_S);
	atomic_store(&stop, true);
	total = join_storm(s, DEADLINE_S, &zero);
	ck_assert_uint_ge(total, STORM_TOUCHERS * STORM_AREAS * STORM_PAGES);
	ck_assert_uint_gt(zero, 0);
	st = sstats();
	ck_assert_uint_gt(st.result_unfinished, 0);
	ck_assert_uint_eq(st.bad_results, 0);
	ck_assert_int_eq(vmr_space_destroy(space), 0);
	space = NULL;
}
END_TEST

/* ---- a fork() while an event is applied --------------------------------- */

/*
 * glibc's fork() holds malloc's locks while it waits for a handler to read
 * its FORK message.  The hook parks the only handler thread as it starts
 * to apply a REMOVE (which allocates: it updates the space), lets a fork()
 * begin, and gives it the time to reach that wait.
 */
static struct {
	atomic_bool armed, parked, forking;
} fk_race;

static void fork_race_hook(enum vmr_debug_point point, uintptr_t addr,
			   void *arg)
{
	bool ok;

	(void)addr;
	(void)arg;
	if (point != VMR_DP_UFFD_EVENT || !atomic_exchange(&fk_race.armed, false))
		return;
	atomic_store(&fk_race.parked, true);
	VMR_WAIT_FOR(ok, atomic_load(&fk_race.forking), INJECT_S);
	vmr_test_sleep(0.2);
}

struct madviser {
	pthread_t thread;
	void *addr;
	size_t len;
	int ret;
};

static void *madviser_main(void *arg)
{
	struct madviser *m = arg;

	m->ret = madvise(m->addr, m->len, MADV_DONTNEED) ? errno : 0;
	return NULL;
}

struct fork_once {
	pthread_t thread;
	pid_t pid;
	int status;
};

static void *fork_once_main(void *arg)
{
	struct fork_once *f = arg;

	atomic_store(&fk_race.forking, true);
	f->pid = fork();
	if (f->pid == 0)
		_exit(0);
	if (f->pid > 0)
		waitpid(f->pid, &f->status, 0);
	return NULL;
}

/*
 * A fork() while the only handler thread applies an event (the event's
 * update allocating as the fork holds malloc's locks): the fork returns,
 * the event is applied (the page reads zero), the child exits cleanly.
 */
START_TEST(test_a_fork_while_an_event_is_applied_returns)
{
	struct madviser m;
	struct fork_once f = { .pid = -1 };
	struct area a;
	bool ok;

	if (!need_debug_points(__func__) ||
	    !open_race_runtime(VMR_RETRY_VMA, 1, __func__) ||
	    !need_fork_events(__func__))
		return;
	a = registered_area(PAGES, 60000);
	ck_assert(look(page_addr(&a, 0), page_off(&a, 0), false) ==
		  VIEW_STORE);
	atomic_init(&fk_race.parked, false);
	atomic_init(&fk_race.forking, false);
	atomic_init(&fk_race.armed, true);
	ck_assert_int_eq(vmr_debug_set(fork_race_hook, NULL), 0);
	m = (struct madviser){ .addr = a.base, .len = pg };
	ck_assert_int_eq(pthread_create(&m.thread, NULL, madviser_main, &m),
			 0);
	VMR_WAIT_FOR(ok, atomic_load(&fk_race.parked), DEADLINE_S);
	ck_assert_msg(ok, "the REMOVE never reached the handler");
	ck_assert_int_eq(pthread_create(&f.thread, NULL, fork_once_main, &f),
			 0);
	ck_assert_msg(!vmr_test_join(f.thread, DEADLINE_S),
		      "fork() never returned: its FORK message was never read");
	ck_assert_int_eq(vmr_test_join(m.thread, DEADLINE_S), 0);
	ck_assert_int_eq(m.ret, 0);
	ck_assert_int_gt(f.pid, 0);
	ck_assert_msg(WIFEXITED(f.status) && !WEXITSTATUS(f.status),
		      "child status %#x", f.status);
	ck_assert(look(page_addr(&a, 0), page_off(&a, 0), false) ==
		  VIEW_ZERO);
	VMR_WAIT_FOR(ok, ustats().events_fork == 1, DEADLINE_S);
	ck_assert_msg(ok, "the FORK event was never applied");
}
END_TEST

/* ---- the suite ---------------------------------------------------------- */

static Suite *uffd_race_suite(void)
{
	Suite *s = suite_create("uffd_race");
	TCase *tc;

	tc = add_tcase(s, "an event at each point of a fault", 60, setup,
		       teardown);
	tcase_add_loop_test(
		tc, test_an_event_at_each_point_of_a_fault_leaves_every_page_right,
		0, EVENT_CASES);

	tc = add_tcase(s, "EEXIST at each point of a fault", 60, setup,
		       teardown);
	tcase_add_loop_test(
		tc,
		test_a_page_installed_at_each_point_of_a_fault_is_eexist_and_woken,
		0, NR_AT * 2 * 2);
	tcase_add_test(
		tc, test_a_duplicate_fault_behind_an_eexist_is_coalesced_and_woken);

	tc = add_tcase(s, "a mapping outlives its faults", 60, setup, teardown);
	tcase_add_loop_test(
		tc, test_a_fault_asleep_on_a_page_outlives_the_unmap_of_its_mapping,
		0, 2);

	tc = add_tcase(s, "reads and installs", 60, setup, teardown);
	tcase_add_loop_test(tc, test_no_event_is_read_while_a_page_is_installed,
			    0, NR_POLICIES);
	tcase_add_loop_test(
		tc, test_without_removes_an_install_keeps_no_other_fault_waiting,
		0, 2);

	tc = add_tcase(s, "fork", 60, setup, teardown);
	tcase_add_test(tc, test_a_fork_while_an_event_is_applied_returns);

	tc = add_tcase(s, "shutdown", 60, setup, teardown);
	tcase_add_loop_test(
		tc, test_destroy_with_a_fault_parked_and_an_event_queued_ends_both,
		0, NR_AT * 2);
	tcase_add_loop_test(
		tc, test_destroy_during_a_storm_of_faults_and_events_ends_them_all,
		0, NR_POLICIES);
	tcase_add_loop_test(
		tc, test_shutdown_during_a_fault_storm_then_destroy_ends_every_fault,
		0, NR_POLICIES);
	return s;
}

int main(void)
{
	return vmr_test_run(uffd_race_suite());
}
