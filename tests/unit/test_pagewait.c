/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Page wait: the page map's life cycle and arguments; the page lock
 * (trylock, sleeping lock, waiting for an unlock, unlock from any thread,
 * misuse); mutual exclusion under stress on pages that share wait-table
 * words, which is also the lost-wakeup test; the up-to-date state and its
 * read and re-read counters; eviction; pins and their limit; shutdown,
 * which ends killable waits only; vmr_page_lock_or_retry() inside real
 * faults under each retry policy, with and without RETRY_NOWAIT; a pin
 * that a fault keeps across its retry; and many faults on one page, of
 * which exactly one reads it.
 *
 * Fault handlers run on the faulting thread and only record what they saw
 * (struct probe, struct io_thread); the test thread asserts once the fault
 * has returned or its thread has been joined.  A wait that must not end is
 * checked by giving it SHORT_US to end and seeing that it has not; a wait
 * that must end is joined with a deadline, so that a lost wakeup fails the
 * test instead of hanging it.
 */
#include "mm.h"
#include "vmr_test.h"

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <urcu/urcu-memb.h>

#define PG 4096u
#define BASE ((uintptr_t)1 << 30)
#define NPAGES 16
/* Long enough for a thread that was started to reach its sleep. */
#define SHORT_US 50000
/* How long a wait that must end may take before the test calls it lost. */
#define DEADLINE_S 30
/* Most pins a page can hold: 2^24 - 1. */
#define PIN_MAX 0xffffffu

#define DEF VMR_FAULT_FLAG_DEFAULT
#define NOWAIT VMR_FAULT_FLAG_RETRY_NOWAIT
#define ON_VMA VMR_FAULT_FLAG_VMA_LOCK
#define KILLABLE VMR_FAULT_FLAG_KILLABLE

static struct vmr_space *space;
static struct vmr_pagemap *map;

/* Loop tests run once per policy; the first two retry, the last holds. */
static const enum vmr_retry_policy policies[] = {
	VMR_RETRY_SPACE,
	VMR_RETRY_VMA,
	VMR_HOLD_IO,
};

#ifdef VMR_DEBUG
#define MISUSE(expr, err) (void)(expr) /* aborts: a signal test */
#define add_misuse_test(tc, t) tcase_add_test_raise_signal(tc, t, SIGABRT)
#else
#define MISUSE(expr, err) ck_assert_int_eq((expr), (err))
#define add_misuse_test(tc, t) tcase_add_test(tc, t)
#endif

/* Poll @cond for up to @seconds; @ok tells whether it came true. */
#define WAIT_FOR(ok, cond, seconds)                                           \
	do {                                                                  \
		double end_ = vmr_test_now() + (seconds);                     \
		while (!((ok) = (cond)) && vmr_test_now() < end_)             \
			usleep(1000);                                         \
	} while (0)

/* ---- fixtures and helpers ----------------------------------------------- */

static void make_space(enum vmr_retry_policy policy)
{
	struct vmr_space_config cfg = { .page_size = PG, .policy = policy };

	ck_assert_int_eq(vmr_space_create(&cfg, sizeof(cfg), &space), 0);
}

/*
 * A space with @policy, a page map of @pages pages over it and, if @ops is
 * not NULL, one region of as many pages at BASE whose faults @ops handles
 * (page i of the map backs address BASE + i * PG).
 */
static void open_space(enum vmr_retry_policy policy, size_t pages,
		       const struct vmr_region_ops *ops)
{
	make_space(policy);
	ck_assert_int_eq(vmr_pagemap_create(space, pages, &map), 0);
	if (ops) {
		struct vmr_region_desc d = {
			.start = BASE,
			.len = pages * PG,
			.prot = VMR_PROT_READ | VMR_PROT_WRITE,
			.ops = ops,
			.ops_size = sizeof(*ops),
		};

		ck_assert_int_eq(vmr_map(space, &d, sizeof(d), 0), 0);
	}
}

static void setup_bare(void)
{
	urcu_memb_register_thread();
}

static void setup_pages(void)
{
	setup_bare();
	open_space(VMR_RETRY_VMA, NPAGES, NULL);
}

static void teardown(void)
{
	vmr_pagemap_destroy(map);
	map = NULL;
	/* Destroy refuses while a fault lock is held or a map is alive. */
	ck_assert_int_eq(vmr_space_destroy(space), 0);
	space = NULL;
	urcu_memb_unregister_thread();
}

static uintptr_t page_addr(size_t i)
{
	return BASE + i * PG;
}

static struct vmr_stats get_stats(void)
{
	struct vmr_stats st;

	ck_assert_int_eq(vmr_space_stats(space, &st, sizeof(st)), 0);
	return st;
}

/* Whether page @i is locked; leaves it as it was.  Any thread. */
static bool is_locked(size_t i)
{
	if (!vmr_page_trylock(map, i))
		return true;
	vmr_page_unlock(map, i);
	return false;
}

/* Read page @i in as a pager does: lock, mark up to date, unlock. */
static void read_page_in(size_t i)
{
	ck_assert_int_eq(vmr_page_lock(map, i, 0), 0);
	ck_assert_int_eq(vmr_page_mark_uptodate(map, i), 0);
	ck_assert_int_eq(vmr_page_unlock(map, i), 0);
}

/* Whether some fault of the space holds a lock: a VMA-range or the space's. */
static bool fault_lock_held(void)
{
	return vmr_readers_busy(space) || !vmr_space_lock_is_idle(&space->lock);
}

/* Join @t; one still asleep after DEADLINE_S lost its wakeup. */
static void join_or_fail(pthread_t t, const char *what)
{
	struct timespec ts;
	int err;

	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += DEADLINE_S;
	err = pthread_timedjoin_np(t, NULL, &ts);
	ck_assert_msg(!err, "%s asleep after %d s (error %d): lost wakeup?",
		      what, DEADLINE_S, err);
}

/* ---- a thread making one page call -------------------------------------- */

enum page_op { OP_LOCK, OP_UNLOCK, OP_WAIT_UNLOCKED };

struct waiter {
	pthread_t thread;
	enum page_op op;
	size_t page;
	unsigned int flags;
	int ret;	      /* read after the join */
	atomic_bool started;
	atomic_bool done;     /* the call returned */
};

static void *waiter_main(void *arg)
{
	struct waiter *w = arg;
	int ret = -1;

	atomic_store(&w->started, true);
	switch (w->op) {
	case OP_LOCK:
		ret = vmr_page_lock(map, w->page, w->flags);
		break;
	case OP_UNLOCK:
		ret = vmr_page_unlock(map, w->page);
		break;
	case OP_WAIT_UNLOCKED:
		ret = vmr_page_wait_unlocked(map, w->page, w->flags);
		break;
	}
	w->ret = ret;
	atomic_store(&w->done, true);
	return NULL;
}

static void start_waiter(struct waiter *w, enum page_op op, size_t page,
			 unsigned int flags)
{
	memset(w, 0, sizeof(*w));
	w->op = op;
	w->page = page;
	w->flags = flags;
	atomic_init(&w->started, false);
	atomic_init(&w->done, false);
	ck_assert_int_eq(pthread_create(&w->thread, NULL, waiter_main, w), 0);
}

/* Its call has not returned, though it had the time to. */
static void assert_still_waiting(struct waiter *w)
{
	bool started;

	WAIT_FOR(started, atomic_load(&w->started), DEADLINE_S);
	ck_assert(started);
	usleep(SHORT_US);
	ck_assert_msg(!atomic_load(&w->done), "a page wait returned early");
}

/* What its call returned. */
static int join_waiter(struct waiter *w)
{
	join_or_fail(w->thread, "a page waiter");
	return w->ret;
}

static int call_on_another_thread(enum page_op op, size_t page)
{
	struct waiter w;

	start_waiter(&w, op, page, 0);
	return join_waiter(&w);
}

/* ---- faults that record what their handler saw -------------------------- */

#define MAX_ATTEMPTS 8

enum probe_mode {
	PROBE_LOCK, /* lock_or_retry the page; unlock it if that locked it */
	PROBE_PIN,  /* pin it and retry once; look for the pin in the retry */
};

/* What one attempt (one call of the handler) saw. */
struct attempt {
	unsigned int flags;	  /* vmf->flags */
	unsigned int lock;	  /* vmf->lock on entry */
	vmr_fault_t ret;	  /* PROBE_LOCK: what lock_or_retry returned */
	unsigned int lock_after;  /* ... and vmf->lock after it */
	bool page_locked;	  /* ... the page was locked after a 0 */
	int pin_err;		  /* PROBE_PIN: vmr_fault_pin_page() */
	bool pinned;		  /* the page had pins */
	bool other_pinned;	  /* its neighbour had pins */
	bool found_pin;		  /* vmr_fault_pinned_page() in the map */
	size_t pin_index;	  /* ... and the page it named */
	bool found_pin_elsewhere; /* ... in another map */
	bool evicted;		  /* vmr_page_evict() succeeded */
};

/* A fault's ctx: what its handler is to do, and what it saw. */
struct probe {
	enum probe_mode mode;
	size_t page;
	atomic_uint entered; /* attempts begun: the test thread polls it */
	unsigned int nr;     /* attempts recorded */
	struct attempt at[MAX_ATTEMPTS];
};

static void probe_init(struct probe *p, enum probe_mode mode, size_t page)
{
	memset(p, 0, sizeof(*p));
	p->mode = mode;
	p->page = page;
	atomic_init(&p->entered, 0);
}

static vmr_fault_t probe_pin(struct vmr_fault *vmf, struct probe *p,
			     struct attempt *a)
{
	if (p->nr == 1) {
		/* Pin the neighbour, then the page: a second pin moves it. */
		a->pin_err = vmr_fault_pin_page(vmf, map, p->page + 1);
		if (!a->pin_err)
			a->pin_err = vmr_fault_pin_page(vmf, map, p->page);
		a->pinned = vmr_page_pinned(map, p->page);
		a->other_pinned = vmr_page_pinned(map, p->page + 1);
		/* As if it waited for I/O: drop the lock, retry. */
		return vmr_fault_release_for_io(vmf);
	}
	a->found_pin = vmr_fault_pinned_page(vmf, map, &a->pin_index);
	a->found_pin_elsewhere = vmr_fault_pinned_page(vmf, NULL, NULL);
	a->pinned = vmr_page_pinned(map, p->page);
	a->evicted = vmr_page_evict(map, p->page);
	return 0;
}

static vmr_fault_t probe_fault(struct vmr_fault *vmf)
{
	struct probe *p = vmf->ctx;
	struct attempt *a = &p->at[p->nr < MAX_ATTEMPTS ? p->nr :
							  MAX_ATTEMPTS - 1];

	p->nr++;
	a->flags = vmf->flags;
	a->lock = vmf->lock;
	atomic_fetch_add(&p->entered, 1);
	if (p->mode == PROBE_PIN)
		return probe_pin(vmf, p, a);
	a->ret = vmr_page_lock_or_retry(vmf, map, p->page);
	a->lock_after = vmf->lock;
	if (a->ret)
		return a->ret;
	a->page_locked = !vmr_page_trylock(map, p->page);
	vmr_page_unlock(map, p->page);
	return 0;
}

static const struct vmr_region_ops probe_ops = { .fault = probe_fault };

static void assert_attempt(const struct probe *p, unsigned int n,
			   unsigned int flags, unsigned int lock,
			   vmr_fault_t ret, unsigned int lock_after)
{
	const struct attempt *a = &p->at[n];

	ck_assert_msg(n < p->nr, "attempt %u never ran", n);
	ck_assert_msg(a->flags == flags, "attempt %u: flags %#x, want %#x", n,
		      a->flags, flags);
	ck_assert_msg(a->lock == lock, "attempt %u: lock %u, want %u", n,
		      a->lock, lock);
	ck_assert_msg(a->ret == ret, "attempt %u: lock_or_retry %#x, want %#x",
		      n, a->ret, ret);
	ck_assert_msg(a->lock_after == lock_after,
		      "attempt %u: lock %u after lock_or_retry, want %u", n,
		      a->lock_after, lock_after);
	if (!ret)
		ck_assert_msg(a->page_locked, "attempt %u: page not locked", n);
}

/* Fault at page @page on the test thread; its result. */
static vmr_fault_t fault_at(size_t page, unsigned int flags, struct probe *p)
{
	vmr_fault_t res = ~0u;

	ck_assert_int_eq(vmr_handle_fault(space, page_addr(page) + 8, flags,
					  p, &res),
			 0);
	return res;
}

/* A thread making one fault. */
struct faulter {
	pthread_t thread;
	uintptr_t addr;
	unsigned int flags;
	void *ctx;
	int err;	 /* read after the join */
	vmr_fault_t res;
	atomic_bool done; /* vmr_handle_fault() returned */
};

static void *faulter_main(void *arg)
{
	struct faulter *f = arg;

	vmr_space_register_thread(space);
	f->err = vmr_handle_fault(space, f->addr, f->flags, f->ctx, &f->res);
	atomic_store(&f->done, true);
	vmr_space_unregister_thread(space);
	return NULL;
}

static void start_faulter(struct faulter *f, size_t page, unsigned int flags,
			  void *ctx)
{
	memset(f, 0, sizeof(*f));
	f->addr = page_addr(page) + 8;
	f->flags = flags;
	f->ctx = ctx;
	atomic_init(&f->done, false);
	ck_assert_int_eq(pthread_create(&f->thread, NULL, faulter_main, f), 0);
}

/* The fault's result. */
static vmr_fault_t join_faulter(struct faulter *f)
{
	join_or_fail(f->thread, "a fault");
	ck_assert_int_eq(f->err, 0);
	return f->res;
}

/*
 * Lock page @p->page and fault on it from another thread; return once the
 * fault waits for the page, holding its lock if @holds, else with its lock
 * released.  The caller then unlocks the page or shuts the space down.
 */
static void start_fault_on_held_page(struct probe *p, unsigned int flags,
				     bool holds, struct faulter *f)
{
	bool ok;

	ck_assert(vmr_page_trylock(map, p->page));
	start_faulter(f, p->page, flags, p);
	WAIT_FOR(ok, atomic_load(&p->entered) > 0, DEADLINE_S);
	ck_assert_msg(ok, "the fault never reached its handler");
	if (holds) {
		/* It cannot finish before the unlock: held all along. */
		usleep(SHORT_US);
		ck_assert_msg(fault_lock_held(),
			      "the fault released its lock to wait");
	} else {
		WAIT_FOR(ok, !fault_lock_held(), DEADLINE_S);
		ck_assert_msg(ok, "the fault kept its lock to wait");
	}
	ck_assert_msg(!atomic_load(&f->done), "the fault did not wait");
}

/* Fault on a page the test thread holds; unlock it once the fault waits. */
static vmr_fault_t fault_until_unlocked(struct probe *p, bool holds)
{
	struct faulter f;

	start_fault_on_held_page(p, DEF, holds, &f);
	ck_assert_int_eq(vmr_page_unlock(map, p->page), 0);
	return join_faulter(&f);
}

/* ---- create and destroy ------------------------------------------------- */

START_TEST(test_bad_create_arguments_are_refused)
{
	static const size_t too_many[] = {
		(size_t)1 << 41,
		SIZE_MAX / sizeof(uint32_t) + 1, /* bytes would wrap */
		SIZE_MAX,
	};
	struct vmr_pagemap *m = NULL;

	make_space(VMR_RETRY_VMA);
	ck_assert_int_eq(vmr_pagemap_create(space, 4, NULL), -EINVAL);
	ck_assert_int_eq(vmr_pagemap_create(NULL, 4, NULL), -EINVAL);
	ck_assert_int_eq(vmr_pagemap_create(space, 0, &m), -EINVAL);
	ck_assert_int_eq(vmr_pagemap_create(NULL, 0, &m), -EINVAL);
	for (size_t n = 0; n < VMR_ARRAY_SIZE(too_many); n++)
		ck_assert_int_eq(vmr_pagemap_create(space, too_many[n], &m),
				 -EINVAL);
	ck_assert_ptr_null(m);
	/* Nothing was left on the space: teardown's destroy succeeds. */
}
END_TEST

START_TEST(test_create_without_memory_fails_with_enomem)
{
	struct vmr_pagemap *m = NULL;
	int ret;

	make_space(VMR_RETRY_VMA);
	vmr_alloc_fail_after(0);
	ret = vmr_pagemap_create(space, 4, &m);
	vmr_alloc_fail_after(-1);
	ck_assert_int_eq(ret, -ENOMEM);
	ck_assert_ptr_null(m);
	/* The failed map is not on the space: teardown's destroy succeeds. */
}
END_TEST

START_TEST(test_a_new_map_has_its_size_and_every_page_free)
{
	static const size_t sizes[] = { 1, 3, 1000 };
	struct vmr_pagemap *m;

	make_space(VMR_RETRY_VMA);
	for (size_t n = 0; n < VMR_ARRAY_SIZE(sizes); n++) {
		ck_assert_int_eq(vmr_pagemap_create(space, sizes[n], &map), 0);
		ck_assert_uint_eq(vmr_pagemap_size(map), sizes[n]);
		for (size_t i = 0; i < sizes[n]; i++) {
			ck_assert(!is_locked(i));
			ck_assert(!vmr_page_uptodate(map, i));
			ck_assert(!vmr_page_pinned(map, i));
		}
		vmr_pagemap_destroy(map);
		map = NULL;
	}
	/* A map needs no space. */
	ck_assert_int_eq(vmr_pagemap_create(NULL, 2, &m), 0);
	ck_assert_uint_eq(vmr_pagemap_size(m), 2);
	vmr_pagemap_destroy(m);
	ck_assert_uint_eq(vmr_pagemap_size(NULL), 0);
	vmr_pagemap_destroy(NULL);
}
END_TEST

START_TEST(test_page_maps_outlive_their_space)
{
	/* Destroyed so that the middle of the space's list goes first. */
	static const int order[] = { 1, 0, 2 };
	struct vmr_pagemap *m[3];

	make_space(VMR_RETRY_VMA);
	for (int n = 0; n < 3; n++)
		ck_assert_int_eq(vmr_pagemap_create(space, 4, &m[n]), 0);
	vmr_pagemap_destroy(m[order[0]]);
	/* The space goes; the maps left go on without it. */
	ck_assert_int_eq(vmr_space_destroy(space), 0);
	space = NULL;
	for (int k = 1; k < 3; k++) {
		ck_assert_int_eq(vmr_page_lock(m[order[k]], 0,
					       VMR_FAULT_FLAG_KILLABLE),
				 0);
		ck_assert_int_eq(vmr_page_mark_uptodate(m[order[k]], 0), 0);
		ck_assert_int_eq(vmr_page_unlock(m[order[k]], 0), 0);
		ck_assert(vmr_page_uptodate(m[order[k]], 0));
		vmr_pagemap_destroy(m[order[k]]);
	}
}
END_TEST

/* ---- arguments ---------------------------------------------------------- */

static void assert_page_refused(struct vmr_pagemap *m, size_t i)
{
	ck_assert(!vmr_page_trylock(m, i));
	ck_assert_int_eq(vmr_page_lock(m, i, 0), -EINVAL);
	ck_assert_int_eq(vmr_page_wait_unlocked(m, i, 0), -EINVAL);
	ck_assert_int_eq(vmr_page_unlock(m, i), -EINVAL);
	ck_assert(!vmr_page_uptodate(m, i));
	ck_assert_int_eq(vmr_page_mark_uptodate(m, i), -EINVAL);
	ck_assert(!vmr_page_evict(m, i));
	ck_assert_int_eq(vmr_page_pin(m, i), -EINVAL);
	ck_assert_int_eq(vmr_page_unpin(m, i), -EINVAL);
	ck_assert(!vmr_page_pinned(m, i));
}

START_TEST(test_out_of_range_pages_are_refused_by_every_call)
{
	size_t i;

	assert_page_refused(map, NPAGES);
	assert_page_refused(map, NPAGES + 1);
	assert_page_refused(map, SIZE_MAX);
	assert_page_refused(NULL, 0);
	ck_assert_int_eq(vmr_fault_pin_page(NULL, map, 0), -EINVAL);
	ck_assert(!vmr_fault_pinned_page(NULL, map, &i));
	/* The last page is in range, and untouched. */
	ck_assert(!is_locked(NPAGES - 1));
	ck_assert(!vmr_page_pinned(map, NPAGES - 1));
}
END_TEST

/* ---- page lock ---------------------------------------------------------- */

START_TEST(test_trylock_takes_only_an_unlocked_page)
{
	ck_assert(vmr_page_trylock(map, 0));
	ck_assert(!vmr_page_trylock(map, 0));
	/* Pages lock independently. */
	ck_assert(vmr_page_trylock(map, 1));
	ck_assert_int_eq(vmr_page_unlock(map, 0), 0);
	ck_assert(!vmr_page_trylock(map, 1));
	ck_assert(vmr_page_trylock(map, 0));
	ck_assert_int_eq(vmr_page_unlock(map, 0), 0);
	ck_assert_int_eq(vmr_page_unlock(map, 1), 0);
}
END_TEST

START_TEST(test_lock_takes_a_free_page_at_once)
{
	ck_assert_int_eq(vmr_page_lock(map, 2, 0), 0);
	ck_assert(is_locked(2));
	ck_assert_int_eq(vmr_page_unlock(map, 2), 0);
	ck_assert(!is_locked(2));
	ck_assert_int_eq(vmr_page_lock(map, 2, KILLABLE), 0);
	ck_assert_int_eq(vmr_page_unlock(map, 2), 0);
	ck_assert_uint_eq(get_stats().page_wait_sleeps, 0);
}
END_TEST

START_TEST(test_unlocking_an_unlocked_page_is_misuse)
{
	read_page_in(3);
	ck_assert_int_eq(vmr_page_pin(map, 3), 0);
	MISUSE(vmr_page_unlock(map, 3), -EPERM);
	/* Refused, nothing changed. */
	ck_assert(!is_locked(3));
	ck_assert(vmr_page_uptodate(map, 3));
	ck_assert(vmr_page_pinned(map, 3));
	ck_assert_int_eq(vmr_page_unpin(map, 3), 0);
}
END_TEST

START_TEST(test_any_thread_may_unlock_a_page)
{
	ck_assert_int_eq(call_on_another_thread(OP_LOCK, 5), 0);
	ck_assert(is_locked(5));
	ck_assert_int_eq(vmr_page_unlock(map, 5), 0);
	ck_assert(vmr_page_trylock(map, 5));
	ck_assert_int_eq(call_on_another_thread(OP_UNLOCK, 5), 0);
	ck_assert(!is_locked(5));
}
END_TEST

START_TEST(test_lock_sleeps_until_the_holder_unlocks)
{
	struct waiter w;

	ck_assert(vmr_page_trylock(map, 6));
	start_waiter(&w, OP_LOCK, 6, 0);
	assert_still_waiting(&w);
	ck_assert_int_eq(vmr_page_unlock(map, 6), 0);
	ck_assert_int_eq(join_waiter(&w), 0);
	/* The waiter holds it now. */
	ck_assert(is_locked(6));
	ck_assert_int_eq(vmr_page_unlock(map, 6), 0);
}
END_TEST

START_TEST(test_wait_unlocked_ends_at_the_unlock_taking_nothing)
{
	struct waiter w;

	ck_assert(vmr_page_trylock(map, 8));
	start_waiter(&w, OP_WAIT_UNLOCKED, 8, 0);
	assert_still_waiting(&w);
	ck_assert_int_eq(vmr_page_unlock(map, 8), 0);
	ck_assert_int_eq(join_waiter(&w), 0);
	ck_assert(!is_locked(8));
	/* On a free page it returns at once. */
	ck_assert_int_eq(vmr_page_wait_unlocked(map, 9, 0), 0);
	ck_assert(!is_locked(9));
}
END_TEST

/* ---- mutual exclusion under stress -------------------------------------- */

#define MX_THREADS 4
#define MX_PAGES 8

/*
 * pagewait.c's wait_word(): the wait-table slot of page @i.  Copied (white
 * box) only to pick pages that share slots; if the hash changes, the test
 * still checks exclusion, with less sharing.
 */
static unsigned int wait_slot(size_t i)
{
	return (unsigned int)(((uint64_t)i * 0x9e3779b97f4a7c15ull) >> 56);
}

/*
 * Fill @pages with MX_PAGES pages, half of them sharing the wait word of
 * page 0 and half that of page 1; return the map size they need.
 */
static size_t pick_colliding_pages(size_t *pages)
{
	const unsigned int slot[2] = { wait_slot(0), wait_slot(1) };
	unsigned int got[2] = { 0, 0 };
	size_t n = 0;

	for (size_t i = 0; n < MX_PAGES; i++) {
		for (int s = 0; s < 2; s++) {
			if (wait_slot(i) == slot[s] && got[s] < MX_PAGES / 2) {
				got[s]++;
				pages[n++] = i;
				break;
			}
		}
	}
	return pages[n - 1] + 1;
}

struct mx_run {
	size_t pages[MX_PAGES];
	unsigned long count[MX_PAGES]; /* guarded by the page lock alone */
	atomic_int inside[MX_PAGES];   /* holders of each page: 0 or 1 */
	atomic_bool stop;
	uint64_t seed;
};

struct mx_thread {
	pthread_t thread;
	struct mx_run *run;
	unsigned int id;
	unsigned long locks, violations, errors;
};

static void *mx_main(void *arg)
{
	struct mx_thread *t = arg;
	struct mx_run *run = t->run;
	struct vmr_rng r;

	vmr_rng_init(&r, run->seed + t->id);
	while (!atomic_load_explicit(&run->stop, memory_order_relaxed)) {
		unsigned int k = (unsigned int)vmr_rng_below(&r, MX_PAGES);
		unsigned int op = (unsigned int)vmr_rng_below(&r, 8);
		size_t pg = run->pages[k];
		unsigned long c;

		if (op == 0) {
			/* Sleepers that do not lock share the words too. */
			if (vmr_page_wait_unlocked(map, pg, 0))
				t->errors++;
			continue;
		}
		if (op == 1) {
			if (!vmr_page_trylock(map, pg))
				continue;
		} else if (vmr_page_lock(map, pg, op & 2 ? KILLABLE : 0)) {
			t->errors++;
			continue;
		}
		t->locks++;
		if (atomic_fetch_add(&run->inside[k], 1))
			t->violations++;
		/* A read-modify-write that loses counts without exclusion. */
		c = run->count[k];
		if (vmr_rng_below(&r, 4) == 0)
			sched_yield();
		run->count[k] = c + 1;
		atomic_fetch_sub(&run->inside[k], 1);
		if (vmr_page_unlock(map, pg))
			t->errors++;
		if (vmr_rng_below(&r, 16) == 0)
			sched_yield();
	}
	return NULL;
}

START_TEST(test_page_locks_exclude_each_other_on_shared_wait_words)
{
	struct mx_run *run = calloc(1, sizeof(*run));
	struct mx_thread t[MX_THREADS];
	unsigned long locks = 0, violations = 0, errors = 0, counted = 0;
	double end;

	ck_assert_ptr_nonnull(run);
	run->seed = vmr_test_seed() ^ 13;
	for (int k = 0; k < MX_PAGES; k++)
		atomic_init(&run->inside[k], 0);
	atomic_init(&run->stop, false);
	open_space(VMR_RETRY_VMA, pick_colliding_pages(run->pages), NULL);
	for (unsigned int n = 0; n < MX_THREADS; n++) {
		t[n] = (struct mx_thread){ .run = run, .id = n };
		ck_assert_int_eq(pthread_create(&t[n].thread, NULL, mx_main,
						&t[n]),
				 0);
	}
	end = vmr_test_now() + vmr_test_seconds();
	while (vmr_test_now() < end)
		usleep(10000);
	atomic_store(&run->stop, true);
	/* Every thread finishes: no sleeper was left without its wakeup. */
	for (unsigned int n = 0; n < MX_THREADS; n++)
		join_or_fail(t[n].thread, "a page locker");
	for (unsigned int n = 0; n < MX_THREADS; n++) {
		locks += t[n].locks;
		violations += t[n].violations;
		errors += t[n].errors;
	}
	for (int k = 0; k < MX_PAGES; k++)
		counted += run->count[k];
	ck_assert_uint_eq(violations, 0);
	ck_assert_uint_eq(errors, 0);
	ck_assert_uint_eq(counted, locks);
	ck_assert_uint_gt(locks, 1000);
	/* The run was contended: lockers slept. */
	ck_assert_uint_gt(get_stats().page_wait_sleeps, 0);
	free(run);
}
END_TEST

/* ---- up to date and re-reads -------------------------------------------- */

START_TEST(test_marking_makes_a_locked_page_up_to_date)
{
	ck_assert(!vmr_page_uptodate(map, 0));
	ck_assert_int_eq(vmr_page_lock(map, 0, 0), 0);
	ck_assert_int_eq(vmr_page_mark_uptodate(map, 0), 0);
	ck_assert(vmr_page_uptodate(map, 0));
	ck_assert_int_eq(vmr_page_unlock(map, 0), 0);
	ck_assert(vmr_page_uptodate(map, 0));
	ck_assert(!vmr_page_uptodate(map, 1));
}
END_TEST

START_TEST(test_a_read_after_eviction_counts_as_a_reread)
{
	struct vmr_stats st;

	read_page_in(1);
	st = get_stats();
	ck_assert_uint_eq(st.page_reads, 1);
	ck_assert_uint_eq(st.page_rereads, 0);
	ck_assert(vmr_page_evict(map, 1));
	read_page_in(1);
	st = get_stats();
	ck_assert_uint_eq(st.page_reads, 2);
	ck_assert_uint_eq(st.page_rereads, 1);
	/* The first read of another page is not a re-read. */
	read_page_in(2);
	st = get_stats();
	ck_assert_uint_eq(st.page_reads, 3);
	ck_assert_uint_eq(st.page_rereads, 1);
}
END_TEST

START_TEST(test_marking_twice_counts_one_read)
{
	ck_assert_int_eq(vmr_page_lock(map, 0, 0), 0);
	ck_assert_int_eq(vmr_page_mark_uptodate(map, 0), 0);
	ck_assert_int_eq(vmr_page_mark_uptodate(map, 0), 0);
	ck_assert_int_eq(vmr_page_unlock(map, 0), 0);
	read_page_in(0);
	ck_assert_uint_eq(get_stats().page_reads, 1);
	ck_assert_uint_eq(get_stats().page_rereads, 0);
}
END_TEST

START_TEST(test_a_map_of_no_space_reads_uncounted)
{
	struct vmr_pagemap *lone;

	ck_assert_int_eq(vmr_pagemap_create(NULL, 2, &lone), 0);
	ck_assert(vmr_page_trylock(lone, 1));
	ck_assert_int_eq(vmr_page_mark_uptodate(lone, 1), 0);
	ck_assert_int_eq(vmr_page_unlock(lone, 1), 0);
	ck_assert(vmr_page_uptodate(lone, 1));
	vmr_pagemap_destroy(lone);
	ck_assert_uint_eq(get_stats().page_reads, 0);
}
END_TEST

START_TEST(test_marking_an_unlocked_page_is_misuse)
{
	MISUSE(vmr_page_mark_uptodate(map, 0), -EPERM);
	ck_assert(!vmr_page_uptodate(map, 0));
	ck_assert_uint_eq(get_stats().page_reads, 0);
}
END_TEST

/* ---- eviction ----------------------------------------------------------- */

START_TEST(test_evict_drops_an_idle_up_to_date_page)
{
	read_page_in(0);
	ck_assert(vmr_page_evict(map, 0));
	ck_assert(!vmr_page_uptodate(map, 0));
	ck_assert(!vmr_page_evict(map, 0));
	ck_assert(!is_locked(0));
}
END_TEST

START_TEST(test_evict_leaves_locked_pinned_and_unread_pages_alone)
{
	/* Never read. */
	ck_assert(!vmr_page_evict(map, 1));
	ck_assert(!vmr_page_uptodate(map, 1));
	/* Locked. */
	read_page_in(2);
	ck_assert(vmr_page_trylock(map, 2));
	ck_assert(!vmr_page_evict(map, 2));
	ck_assert(vmr_page_uptodate(map, 2));
	ck_assert(!vmr_page_trylock(map, 2));
	ck_assert_int_eq(vmr_page_unlock(map, 2), 0);
	/* Pinned, twice: each pin keeps it. */
	read_page_in(3);
	ck_assert_int_eq(vmr_page_pin(map, 3), 0);
	ck_assert_int_eq(vmr_page_pin(map, 3), 0);
	ck_assert(!vmr_page_evict(map, 3));
	ck_assert_int_eq(vmr_page_unpin(map, 3), 0);
	ck_assert(!vmr_page_evict(map, 3));
	ck_assert(vmr_page_uptodate(map, 3));
	ck_assert_int_eq(vmr_page_unpin(map, 3), 0);
	ck_assert(!vmr_page_pinned(map, 3));
	/* Nothing keeps it now. */
	ck_assert(vmr_page_evict(map, 3));
	ck_assert(vmr_page_evict(map, 2));
}
END_TEST

/* ---- pins --------------------------------------------------------------- */

START_TEST(test_pins_are_counted)
{
	ck_assert(!vmr_page_pinned(map, 0));
	ck_assert_int_eq(vmr_page_pin(map, 0), 0);
	ck_assert(vmr_page_pinned(map, 0));
	ck_assert_int_eq(vmr_page_pin(map, 0), 0);
	ck_assert_int_eq(vmr_page_unpin(map, 0), 0);
	ck_assert(vmr_page_pinned(map, 0));
	/* A pin neither locks its page nor pins another. */
	ck_assert(!is_locked(0));
	ck_assert(!vmr_page_pinned(map, 1));
	ck_assert_int_eq(vmr_page_unpin(map, 0), 0);
	ck_assert(!vmr_page_pinned(map, 0));
}
END_TEST

START_TEST(test_pins_stop_at_the_limit_with_eoverflow)
{
	unsigned int n;
	int err = 0;

	for (n = 0; n < PIN_MAX && !err; n++)
		err = vmr_page_pin(map, 0);
	ck_assert_int_eq(err, 0);
	ck_assert_int_eq(vmr_page_pin(map, 0), -EOVERFLOW);
	/* The count did not spill into the page's state or its neighbour. */
	ck_assert(vmr_page_pinned(map, 0));
	ck_assert(!vmr_page_uptodate(map, 0));
	ck_assert(!vmr_page_pinned(map, 1));
	read_page_in(0);
	ck_assert(vmr_page_uptodate(map, 0));
	ck_assert_int_eq(vmr_page_pin(map, 0), -EOVERFLOW);
	/* One unpin makes room for one pin. */
	ck_assert_int_eq(vmr_page_unpin(map, 0), 0);
	ck_assert_int_eq(vmr_page_pin(map, 0), 0);
	ck_assert_int_eq(vmr_page_pin(map, 0), -EOVERFLOW);
}
END_TEST

START_TEST(test_unpinning_an_unpinned_page_is_misuse)
{
	read_page_in(4);
	ck_assert(vmr_page_trylock(map, 4));
	MISUSE(vmr_page_unpin(map, 4), -EPERM);
	/* Refused, nothing changed. */
	ck_assert(!vmr_page_pinned(map, 4));
	ck_assert(vmr_page_uptodate(map, 4));
	ck_assert(!vmr_page_trylock(map, 4));
	ck_assert_int_eq(vmr_page_unlock(map, 4), 0);
	ck_assert_int_eq(vmr_page_pin(map, 4), 0);
	ck_assert_int_eq(vmr_page_unpin(map, 4), 0);
}
END_TEST

/* ---- shutdown ----------------------------------------------------------- */

START_TEST(test_shutdown_ends_killable_page_waits)
{
	struct waiter w[3];

	open_space(VMR_RETRY_VMA, NPAGES, NULL);
	ck_assert(vmr_page_trylock(map, 0));
	start_waiter(&w[0], OP_LOCK, 0, KILLABLE);
	start_waiter(&w[1], OP_LOCK, 0, VMR_FAULT_FLAG_INTERRUPTIBLE);
	start_waiter(&w[2], OP_WAIT_UNLOCKED, 0, KILLABLE);
	for (int n = 0; n < 3; n++)
		assert_still_waiting(&w[n]);
	ck_assert_int_eq(vmr_space_shutdown(space), 0);
	ck_assert(vmr_space_is_shut_down(space));
	for (int n = 0; n < 3; n++)
		ck_assert_int_eq(join_waiter(&w[n]), -EINTR);
	/* The holder still holds the page. */
	ck_assert(!vmr_page_trylock(map, 0));
	ck_assert_int_eq(vmr_page_unlock(map, 0), 0);
	/* A free page needs no wait: still taken. */
	ck_assert_int_eq(vmr_page_lock(map, 1, KILLABLE), 0);
	ck_assert_int_eq(vmr_page_unlock(map, 1), 0);
}
END_TEST

START_TEST(test_shutdown_leaves_a_non_killable_wait_waiting)
{
	struct waiter w;

	open_space(VMR_RETRY_VMA, NPAGES, NULL);
	ck_assert(vmr_page_trylock(map, 0));
	start_waiter(&w, OP_LOCK, 0, 0);
	assert_still_waiting(&w);
	ck_assert_int_eq(vmr_space_shutdown(space), 0);
	assert_still_waiting(&w);
	ck_assert_int_eq(vmr_page_unlock(map, 0), 0);
	ck_assert_int_eq(join_waiter(&w), 0);
	ck_assert(is_locked(0));
	ck_assert_int_eq(vmr_page_unlock(map, 0), 0);
}
END_TEST

/* A fault waiting for a page the test holds, then shutdown: it ends. */
static void fault_across_shutdown(enum vmr_retry_policy policy,
				  unsigned int flags, bool holds)
{
	struct faulter f;
	struct probe p;
	struct vmr_stats st;
	vmr_fault_t res;

	open_space(policy, NPAGES, &probe_ops);
	probe_init(&p, PROBE_LOCK, 3);
	start_fault_on_held_page(&p, flags, holds, &f);
	ck_assert_int_eq(vmr_space_shutdown(space), 0);
	res = join_faulter(&f);
	st = get_stats();
	ck_assert_uint_eq(p.nr, 1);
	ck_assert_msg(p.at[0].ret & VMR_FAULT_RETRY,
		      "lock_or_retry returned %#x", p.at[0].ret);
	ck_assert_uint_eq(p.at[0].lock_after, VMR_FAULT_LOCK_NONE);
	ck_assert_uint_eq(st.bad_results, 0);
	/* Unfinished: RETRY (with the handler's RETRY_VMA, if it had one). */
	ck_assert_msg((res & VMR_FAULT_RETRY) && !(res & VMR_FAULT_ERROR),
		      "the fault ended %#x, not unfinished (RETRY)", res);
	ck_assert_uint_eq(st.result_unfinished, 1);
	ck_assert(!fault_lock_held());
	/* The page is still the test thread's. */
	ck_assert(is_locked(3));
	ck_assert_int_eq(vmr_page_unlock(map, 3), 0);
}

START_TEST(test_shutdown_ends_a_fault_waiting_for_its_page)
{
	fault_across_shutdown(policies[_i], DEF, policies[_i] == VMR_HOLD_IO);
}
END_TEST

START_TEST(test_shutdown_ends_a_fault_waiting_without_allow_retry)
{
	/*
	 * Without ALLOW_RETRY (as after space_retry_max retries)
	 * lock_or_retry sleeps for the page holding the fault's lock; on
	 * shutdown it releases the lock and returns RETRY, as documented.
	 */
	fault_across_shutdown(VMR_RETRY_VMA, KILLABLE, true);
}
END_TEST

/* ---- lock_or_retry in a fault ------------------------------------------- */

START_TEST(test_lock_or_retry_takes_a_free_page)
{
	struct probe p, q;

	open_space(policies[_i], NPAGES, &probe_ops);
	probe_init(&p, PROBE_LOCK, 3);
	ck_assert_uint_eq(fault_at(3, DEF, &p), 0);
	ck_assert_uint_eq(p.nr, 1);
	assert_attempt(&p, 0, DEF | ON_VMA, VMR_FAULT_LOCK_VMA, 0,
		       VMR_FAULT_LOCK_VMA);
	/* A no-wait fault runs under the space lock, and takes it too. */
	probe_init(&q, PROBE_LOCK, 3);
	ck_assert_uint_eq(fault_at(3, DEF | NOWAIT, &q), 0);
	ck_assert_uint_eq(q.nr, 1);
	assert_attempt(&q, 0, DEF | NOWAIT, VMR_FAULT_LOCK_SPACE, 0,
		       VMR_FAULT_LOCK_SPACE);
	ck_assert(!is_locked(3));
	ck_assert(!fault_lock_held());
}
END_TEST

START_TEST(test_retry_space_retries_a_held_page_on_the_space_lock)
{
	struct vmr_stats st;
	struct probe p;

	open_space(VMR_RETRY_SPACE, NPAGES, &probe_ops);
	probe_init(&p, PROBE_LOCK, 3);
	ck_assert_uint_eq(fault_until_unlocked(&p, false), 0);
	ck_assert_uint_eq(p.nr, 2);
	/* First try: lock released, page waited for, RETRY. */
	assert_attempt(&p, 0, DEF | ON_VMA, VMR_FAULT_LOCK_VMA,
		       VMR_FAULT_RETRY, VMR_FAULT_LOCK_NONE);
	/* RETRY without MAJOR sets no TRIED: this try could drop it again. */
	assert_attempt(&p, 1, DEF, VMR_FAULT_LOCK_SPACE, 0,
		       VMR_FAULT_LOCK_SPACE);
	st = get_stats();
	ck_assert_uint_eq(st.vma_lock_retry, 1);
	ck_assert_uint_eq(st.vma_retries, 0);
	ck_assert_uint_eq(st.space_lock_faults, 1);
	ck_assert_uint_eq(st.result_ok, 1);
	ck_assert(!is_locked(3));
}
END_TEST

START_TEST(test_retry_vma_retries_a_held_page_on_the_vma_lock)
{
	struct vmr_stats st;
	struct probe p;

	open_space(VMR_RETRY_VMA, NPAGES, &probe_ops);
	probe_init(&p, PROBE_LOCK, 3);
	ck_assert_uint_eq(fault_until_unlocked(&p, false), 0);
	ck_assert_uint_eq(p.nr, 2);
	assert_attempt(&p, 0, DEF | ON_VMA, VMR_FAULT_LOCK_VMA,
		       VMR_FAULT_RETRY | VMR_FAULT_RETRY_VMA,
		       VMR_FAULT_LOCK_NONE);
	assert_attempt(&p, 1, DEF | ON_VMA, VMR_FAULT_LOCK_VMA, 0,
		       VMR_FAULT_LOCK_VMA);
	st = get_stats();
	ck_assert_uint_eq(st.vma_lock_retry, 1);
	ck_assert_uint_eq(st.vma_retries, 1);
	ck_assert_uint_eq(st.vma_lock_success, 1);
	ck_assert_uint_eq(st.space_lock_faults, 0);
	ck_assert(!is_locked(3));
}
END_TEST

START_TEST(test_hold_io_waits_for_a_held_page_holding_the_lock)
{
	struct vmr_stats st;
	struct probe p;

	open_space(VMR_HOLD_IO, NPAGES, &probe_ops);
	probe_init(&p, PROBE_LOCK, 3);
	ck_assert_uint_eq(fault_until_unlocked(&p, true), 0);
	ck_assert_uint_eq(p.nr, 1);
	assert_attempt(&p, 0, DEF | ON_VMA, VMR_FAULT_LOCK_VMA, 0,
		       VMR_FAULT_LOCK_VMA);
	st = get_stats();
	ck_assert_uint_eq(st.vma_lock_retry, 0);
	ck_assert_uint_eq(st.vma_lock_success, 1);
	ck_assert_uint_eq(st.space_lock_faults, 0);
	ck_assert(!is_locked(3));
}
END_TEST

START_TEST(test_lock_or_retry_of_a_page_out_of_range_is_sigbus)
{
	struct vmr_stats st;
	struct probe p;

	open_space(VMR_RETRY_VMA, NPAGES, &probe_ops);
	probe_init(&p, PROBE_LOCK, NPAGES);
	ck_assert_uint_eq(fault_at(0, DEF, &p), VMR_FAULT_SIGBUS);
	/* Answered with the fault's lock held; the engine released it. */
	assert_attempt(&p, 0, DEF | ON_VMA, VMR_FAULT_LOCK_VMA,
		       VMR_FAULT_SIGBUS, VMR_FAULT_LOCK_VMA);
	st = get_stats();
	ck_assert_uint_eq(st.result_sigbus, 1);
	ck_assert_uint_eq(st.bad_results, 0);
	ck_assert(!fault_lock_held());
}
END_TEST

/* ---- no-wait faults ----------------------------------------------------- */

START_TEST(test_nowait_fault_on_a_held_page_ends_unfinished_unlocked)
{
	const unsigned int flags = DEF | NOWAIT;
	struct vmr_stats st;
	struct faulter f;
	struct probe p;
	vmr_fault_t res;
	bool finished;

	open_space(policies[_i], NPAGES, &probe_ops);
	probe_init(&p, PROBE_LOCK, 3);
	ck_assert(vmr_page_trylock(map, 3));
	start_faulter(&f, 3, flags, &p);
	/* It must end with the page still held... */
	WAIT_FOR(finished, atomic_load(&f.done), 5);
	/* ...but if it sleeps on it, wake it before failing. */
	ck_assert_int_eq(vmr_page_unlock(map, 3), 0);
	res = join_faulter(&f);
	ck_assert_msg(finished, "a RETRY_NOWAIT fault slept on the page");
	ck_assert_uint_eq(res, VMR_FAULT_RETRY);
	ck_assert_uint_eq(p.nr, 1);
	/* Never on the fine-grained lock; RETRY with the space lock held. */
	assert_attempt(&p, 0, flags, VMR_FAULT_LOCK_SPACE, VMR_FAULT_RETRY,
		       VMR_FAULT_LOCK_SPACE);
	/* The engine released it. */
	ck_assert(!fault_lock_held());
	st = get_stats();
	ck_assert_uint_eq(st.result_unfinished, 1);
	ck_assert_uint_eq(st.bad_results, 0);
	ck_assert_uint_eq(st.space_lock_faults, 1);
	ck_assert_uint_eq(st.space_retries, 0);
	ck_assert_uint_eq(st.vma_lock_success + st.vma_lock_abort +
				  st.vma_lock_retry,
			  0);
}
END_TEST

/* ---- fault pins --------------------------------------------------------- */

START_TEST(test_a_fault_pin_outlives_the_retry_and_ends_with_the_fault)
{
	struct probe p;

	/* The two policies that retry after vmr_fault_release_for_io(). */
	open_space(policies[_i], NPAGES, &probe_ops);
	read_page_in(3);
	probe_init(&p, PROBE_PIN, 3);
	ck_assert_uint_eq(fault_at(3, DEF, &p), 0);
	ck_assert_uint_eq(p.nr, 2);
	/* First try: the second pin moved the first. */
	ck_assert_int_eq(p.at[0].pin_err, 0);
	ck_assert(p.at[0].pinned);
	ck_assert(!p.at[0].other_pinned);
	/* The retry finds it, and eviction skips the page. */
	ck_assert(p.at[1].found_pin);
	ck_assert_uint_eq(p.at[1].pin_index, 3);
	ck_assert(!p.at[1].found_pin_elsewhere);
	ck_assert(p.at[1].pinned);
	ck_assert(!p.at[1].evicted);
	/* The fault is over, and so is its pin. */
	ck_assert(!vmr_page_pinned(map, 3));
	ck_assert(!vmr_page_pinned(map, 4));
	ck_assert(vmr_page_uptodate(map, 3));
	ck_assert(vmr_page_evict(map, 3));
}
END_TEST

START_TEST(test_a_fault_pin_ends_with_an_unfinished_fault)
{
	struct probe p;

	open_space(VMR_RETRY_VMA, NPAGES, &probe_ops);
	probe_init(&p, PROBE_PIN, 3);
	/* No-wait: release_for_io answers RETRY, and the fault ends. */
	ck_assert_uint_eq(fault_at(3, DEF | NOWAIT, &p), VMR_FAULT_RETRY);
	ck_assert_uint_eq(p.nr, 1);
	ck_assert_int_eq(p.at[0].pin_err, 0);
	ck_assert(p.at[0].pinned);
	ck_assert(!vmr_page_pinned(map, 3));
	ck_assert(!fault_lock_held());
}
END_TEST

/* ---- one fault reads, the others wait ----------------------------------- */

#define IO_THREADS 8
#define IO_PAGES 16
#define IO_BYTES 64
#define IO_US 2000

struct io_run {
	pthread_barrier_t round; /* the threads fault on each page at once */
	unsigned char data[IO_PAGES][IO_BYTES]; /* a page's reader fills it */
	atomic_uint reads[IO_PAGES];		/* times each page was read */
};

/* One faulting thread, and what its faults saw. */
struct io_thread {
	pthread_t thread;
	struct io_run *run;
	unsigned int installed;	   /* faults that installed their page */
	unsigned int bad_contents; /* ... and found it not as read */
	unsigned int bad_calls;	   /* calls that failed */
	unsigned int bad_results;  /* faults that did not end in 0 */
};

static unsigned char io_byte(size_t page, size_t k)
{
	return (unsigned char)(page * 37 + k + 1);
}

/* The pager's read: slow, so that the other faults find it under way. */
static void io_read(struct io_run *run, size_t i)
{
	usleep(IO_US);
	atomic_fetch_add(&run->reads[i], 1);
	for (size_t k = 0; k < IO_BYTES; k++)
		run->data[i][k] = io_byte(i, k);
}

/* The handler of pagewait.h's header comment. */
static vmr_fault_t io_fault(struct vmr_fault *vmf)
{
	struct io_thread *t = vmf->ctx;
	size_t i = (vmf->address - BASE) / PG;
	vmr_fault_t ret;

	ret = vmr_page_lock_or_retry(vmf, map, i);
	if (ret)
		return ret;
	if (!vmr_page_uptodate(map, i)) {
		ret = vmr_fault_release_for_io(vmf);
		io_read(t->run, i);
		if (vmr_page_mark_uptodate(map, i))
			t->bad_calls++;
		if (ret) {
			if (vmr_page_unlock(map, i))
				t->bad_calls++;
			return ret | VMR_FAULT_MAJOR;
		}
	}
	/* Install it: what the reader read must be there. */
	t->installed++;
	for (size_t k = 0; k < IO_BYTES; k++) {
		if (t->run->data[i][k] != io_byte(i, k)) {
			t->bad_contents++;
			break;
		}
	}
	if (vmr_page_unlock(map, i))
		t->bad_calls++;
	return 0;
}

static const struct vmr_region_ops io_ops = { .fault = io_fault };

static void *io_main(void *arg)
{
	struct io_thread *t = arg;
	vmr_fault_t res;

	vmr_space_register_thread(space);
	for (size_t i = 0; i < IO_PAGES; i++) {
		pthread_barrier_wait(&t->run->round);
		if (vmr_handle_fault(space, page_addr(i) + 1, DEF, t, &res))
			t->bad_calls++;
		else if (res)
			t->bad_results++;
	}
	vmr_space_unregister_thread(space);
	return NULL;
}

START_TEST(test_one_of_many_faults_on_a_page_reads_it)
{
	struct io_run *run = calloc(1, sizeof(*run));
	struct io_thread t[IO_THREADS];
	struct vmr_stats st;

	ck_assert_ptr_nonnull(run);
	for (size_t i = 0; i < IO_PAGES; i++)
		atomic_init(&run->reads[i], 0);
	ck_assert_int_eq(pthread_barrier_init(&run->round, NULL, IO_THREADS),
			 0);
	open_space(policies[_i], IO_PAGES, &io_ops);
	for (int n = 0; n < IO_THREADS; n++) {
		t[n] = (struct io_thread){ .run = run };
		ck_assert_int_eq(pthread_create(&t[n].thread, NULL, io_main,
						&t[n]),
				 0);
	}
	for (int n = 0; n < IO_THREADS; n++)
		join_or_fail(t[n].thread, "a faulting thread");
	for (int n = 0; n < IO_THREADS; n++) {
		ck_assert_uint_eq(t[n].installed, IO_PAGES);
		ck_assert_uint_eq(t[n].bad_contents, 0);
		ck_assert_uint_eq(t[n].bad_calls, 0);
		ck_assert_uint_eq(t[n].bad_results, 0);
	}
	for (size_t i = 0; i < IO_PAGES; i++)
		ck_assert_msg(atomic_load(&run->reads[i]) == 1,
			      "page %zu read %u times", i,
			      atomic_load(&run->reads[i]));
	st = get_stats();
	ck_assert_uint_eq(st.page_reads, IO_PAGES);
	ck_assert_uint_eq(st.page_rereads, 0);
	ck_assert_uint_eq(st.faults, IO_THREADS * IO_PAGES);
	ck_assert_uint_eq(st.result_ok, IO_THREADS * IO_PAGES);
	ck_assert_uint_eq(st.bad_results, 0);
	/* The faults did meet: some waited for a read under way. */
	ck_assert_uint_gt(st.page_wait_sleeps, 0);
	pthread_barrier_destroy(&run->round);
	free(run);
}
END_TEST

/* ---- the suite ---------------------------------------------------------- */

static TCase *add_tcase(Suite *s, const char *name, void (*setup)(void))
{
	TCase *tc = tcase_create(name);

	tcase_add_checked_fixture(tc, setup, teardown);
	suite_add_tcase(s, tc);
	return tc;
}

static Suite *pagewait_suite(void)
{
	Suite *s = suite_create("pagewait");
	const int nr_policies = (int)VMR_ARRAY_SIZE(policies);
	TCase *tc;

	tc = add_tcase(s, "create and destroy", setup_bare);
	tcase_add_test(tc, test_bad_create_arguments_are_refused);
	tcase_add_test(tc, test_create_without_memory_fails_with_enomem);
	tcase_add_test(tc, test_a_new_map_has_its_size_and_every_page_free);
	tcase_add_test(tc, test_page_maps_outlive_their_space);

	tc = add_tcase(s, "arguments", setup_pages);
	tcase_add_test(tc, test_out_of_range_pages_are_refused_by_every_call);

	tc = add_tcase(s, "page lock", setup_pages);
	tcase_add_test(tc, test_trylock_takes_only_an_unlocked_page);
	tcase_add_test(tc, test_lock_takes_a_free_page_at_once);
	add_misuse_test(tc, test_unlocking_an_unlocked_page_is_misuse);
	tcase_add_test(tc, test_any_thread_may_unlock_a_page);
	tcase_add_test(tc, test_lock_sleeps_until_the_holder_unlocks);
	tcase_add_test(tc,
		       test_wait_unlocked_ends_at_the_unlock_taking_nothing);

	tc = add_tcase(s, "mutual exclusion", setup_bare);
	tcase_set_timeout(tc, vmr_test_seconds() * 3 + 60);
	tcase_add_test(tc,
		       test_page_locks_exclude_each_other_on_shared_wait_words);

	tc = add_tcase(s, "up to date and re-reads", setup_pages);
	tcase_add_test(tc, test_marking_makes_a_locked_page_up_to_date);
	tcase_add_test(tc, test_a_read_after_eviction_counts_as_a_reread);
	tcase_add_test(tc, test_marking_twice_counts_one_read);
	tcase_add_test(tc, test_a_map_of_no_space_reads_uncounted);
	add_misuse_test(tc, test_marking_an_unlocked_page_is_misuse);

	tc = add_tcase(s, "eviction", setup_pages);
	tcase_add_test(tc, test_evict_drops_an_idle_up_to_date_page);
	tcase_add_test(tc,
		       test_evict_leaves_locked_pinned_and_unread_pages_alone);

	tc = add_tcase(s, "pins", setup_pages);
	tcase_add_test(tc, test_pins_are_counted);
	tcase_add_test(tc, test_pins_stop_at_the_limit_with_eoverflow);
	add_misuse_test(tc, test_unpinning_an_unpinned_page_is_misuse);

	tc = add_tcase(s, "shutdown", setup_bare);
	tcase_add_test(tc, test_shutdown_ends_killable_page_waits);
	tcase_add_test(tc, test_shutdown_leaves_a_non_killable_wait_waiting);
	tcase_add_loop_test(tc, test_shutdown_ends_a_fault_waiting_for_its_page,
			    0, nr_policies);
	tcase_add_test(tc,
		       test_shutdown_ends_a_fault_waiting_without_allow_retry);

	tc = add_tcase(s, "lock or retry in a fault", setup_bare);
	tcase_add_loop_test(tc, test_lock_or_retry_takes_a_free_page, 0,
			    nr_policies);
	tcase_add_test(tc,
		       test_retry_space_retries_a_held_page_on_the_space_lock);
	tcase_add_test(tc, test_retry_vma_retries_a_held_page_on_the_vma_lock);
	tcase_add_test(tc, test_hold_io_waits_for_a_held_page_holding_the_lock);
	tcase_add_test(tc, test_lock_or_retry_of_a_page_out_of_range_is_sigbus);

	tc = add_tcase(s, "no-wait faults", setup_bare);
	tcase_add_loop_test(
		tc, test_nowait_fault_on_a_held_page_ends_unfinished_unlocked,
		0, nr_policies);

	tc = add_tcase(s, "fault pins", setup_bare);
	/* The policies that retry: VMR_RETRY_SPACE and VMR_RETRY_VMA. */
	tcase_add_loop_test(
		tc, test_a_fault_pin_outlives_the_retry_and_ends_with_the_fault,
		0, 2);
	tcase_add_test(tc, test_a_fault_pin_ends_with_an_unfinished_fault);

	tc = add_tcase(s, "one reader does the I/O", setup_bare);
	tcase_add_loop_test(tc, test_one_of_many_faults_on_a_page_reads_it, 0,
			    nr_policies);
	return s;
}

int main(void)
{
	return vmr_test_run(pagewait_suite());
}
