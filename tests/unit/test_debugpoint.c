/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Debug points: the stress and race-injection tests rely on a hook firing
 * at each named point, in the order the code passes them, with the address
 * the point documents, and on the yield injector leaving behaviour intact.
 * If a point moved or vanished, those tests would quietly inject nothing;
 * this suite is what notices.
 *
 * Each case records the points the test thread passes (other threads are
 * filtered out by thread id) and checks their order as a subsequence, since
 * a point may be passed more than once (a lookup descends several levels).
 * In a build without debug points (the default), only the -ENOSYS
 * contract and the names are checked; the other cases say they skip.
 */
#include "mm.h"
#include "debugpoint.h"
#include "vmr_test.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#define PG 4096u
#define BASE ((uintptr_t)1 << 32)
#define MAX_SEEN 4096

/* What the hook saw on the test thread. */
static struct {
	pthread_t thread;
	unsigned int n;
	enum vmr_debug_point point[MAX_SEEN];
	uintptr_t addr[MAX_SEEN];
	_Atomic unsigned int any[VMR_DEBUG_POINTS_NR]; /* every thread */
} seen;

static void record(enum vmr_debug_point p, uintptr_t addr, void *arg)
{
	(void)arg;
	atomic_fetch_add(&seen.any[p], 1);
	if (!pthread_equal(pthread_self(), seen.thread) || seen.n >= MAX_SEEN)
		return;
	seen.point[seen.n] = p;
	seen.addr[seen.n] = addr;
	seen.n++;
}

static void start_recording(void)
{
	memset(&seen, 0, sizeof(seen));
	seen.thread = pthread_self();
	ck_assert_int_eq(vmr_debug_set(record, NULL), 0);
}

/* Index of the first @p at or after @from whose address is @addr (any
 * address if @addr is ~0), or -1. */
static int find(unsigned int from, enum vmr_debug_point p, uintptr_t addr)
{
	for (unsigned int i = from; i < seen.n; i++)
		if (seen.point[i] == p && (addr == ~(uintptr_t)0 ||
					   seen.addr[i] == addr))
			return (int)i;
	return -1;
}

/* Assert that @pts appear in this order (each after the previous one). */
static void expect_order(const enum vmr_debug_point *pts, unsigned int n,
			 uintptr_t addr)
{
	unsigned int from = 0;

	for (unsigned int i = 0; i < n; i++) {
		int at = find(from, pts[i], addr);

		ck_assert_msg(at >= 0, "point %s (after %u of %u) not passed",
			      vmr_debug_point_name(pts[i]), i, n);
		from = (unsigned int)at + 1;
	}
}

static bool need_points(void)
{
	if (vmr_debug_points_built())
		return true;
	printf("skip: built without debug points (-Ddebug_points=true)\n");
	return false;
}

static struct vmr_space *space;

static void make(unsigned int policy)
{
	struct vmr_space_config cfg = { .page_size = PG, .policy = policy };

	vmr_rcu_register_thread(NULL);
	ck_assert_int_eq(vmr_space_create(&cfg, sizeof(cfg), &space), 0);
}

static void teardown(void)
{
	vmr_debug_set(NULL, NULL);
	ck_assert(vmr_space_lock_is_idle(&space->lock));
	ck_assert_int_eq(vmr_space_destroy(space), 0);
	vmr_rcu_unregister_thread(NULL);
}

static void map(uintptr_t start, size_t pages,
		const struct vmr_region_ops *ops, unsigned int flags)
{
	struct vmr_region_desc d = { .start = start, .len = pages * PG,
				     .prot = VMR_PROT_READ | VMR_PROT_WRITE,
				     .ops = ops,
				     .ops_size = ops ? sizeof(*ops) : 0 };

	ck_assert_int_eq(vmr_map(space, &d, sizeof(d), flags), 0);
}

/* ---- names and the contract of a build without points ------------------- */

START_TEST(test_every_point_has_its_own_name)
{
	for (unsigned int i = 0; i < VMR_DEBUG_POINTS_NR; i++) {
		const char *n = vmr_debug_point_name(i);

		ck_assert_str_ne(n, "?");
		for (unsigned int j = 0; j < i; j++)
			ck_assert_str_ne(n, vmr_debug_point_name(j));
	}
	ck_assert_str_eq(vmr_debug_point_name(VMR_DEBUG_POINTS_NR), "?");
	ck_assert_str_eq(vmr_debug_point_name((enum vmr_debug_point)-1), "?");
}
END_TEST

START_TEST(test_setting_a_hook_says_whether_points_are_built)
{
	int want = vmr_debug_points_built() ? 0 : -ENOSYS;

	ck_assert_int_eq(vmr_debug_set(record, NULL), want);
	ck_assert_int_eq(vmr_debug_set(NULL, NULL), want);
	ck_assert_int_eq(vmr_debug_yield(~0u, 1, 10, 1), want);
	ck_assert_int_eq(vmr_debug_yield(~0u, 0, 10, 1), -EINVAL);
	ck_assert_int_eq(vmr_debug_set(NULL, NULL), want);
}
END_TEST

/* ---- the fault path ------------------------------------------------------ */

static _Atomic unsigned int handler_calls;

/* Finishes on the second call; the first asks for a retry. */
static vmr_fault_t retry_once(struct vmr_fault *vmf)
{
	if (atomic_fetch_add(&handler_calls, 1) == 0 &&
	    (vmf->flags & VMR_FAULT_FLAG_ALLOW_RETRY)) {
		vmr_fault_release(vmf);
		return VMR_FAULT_RETRY;
	}
	return 0;
}

static vmr_fault_t done(struct vmr_fault *vmf)
{
	(void)vmf;
	atomic_fetch_add(&handler_calls, 1);
	return 0;
}

START_TEST(test_a_fault_passes_lookup_check_locked_unlock_in_order)
{
	static const struct vmr_region_ops ops = { .fault = done };
	static const enum vmr_debug_point order[] = {
		VMR_DP_RANGE_LOOKUP, VMR_DP_RANGE_CHECK, VMR_DP_FAULT_LOCKED,
		VMR_DP_RANGE_UNLOCK
	};
	uintptr_t addr = BASE + 3 * PG + 17;
	vmr_fault_t res;

	if (!need_points())
		return;
	make(VMR_RETRY_VMA);
	map(BASE, 8, &ops, 0);
	start_recording();
	ck_assert_int_eq(vmr_handle_fault(space, addr, VMR_FAULT_FLAG_DEFAULT,
					  NULL, &res), 0);
	ck_assert_uint_eq(res, 0);
	ck_assert_uint_eq(handler_calls, 1);
	/* The lookup names the faulting address; the check, the range it
	 * locks (the region's, here). */
	expect_order(order, 1, addr);
	expect_order(order, 4, ~(uintptr_t)0);
	ck_assert_int_ge(find(0, VMR_DP_RANGE_CHECK, BASE), 0);
	/* The engine's points name the page. */
	ck_assert_int_ge(find(0, VMR_DP_FAULT_LOCKED, addr & ~(uintptr_t)(PG - 1)),
			 0);
	ck_assert_int_lt(find(0, VMR_DP_FAULT_RETRY, ~(uintptr_t)0), 0);
	teardown();
}
END_TEST

START_TEST(test_a_retried_fault_passes_the_retry_point_between_attempts)
{
	static const struct vmr_region_ops ops = { .fault = retry_once };
	static const enum vmr_debug_point order[] = {
		VMR_DP_FAULT_LOCKED, VMR_DP_FAULT_RETRY, VMR_DP_FAULT_LOCKED
	};
	uintptr_t addr = BASE + PG;
	vmr_fault_t res;

	if (!need_points())
		return;
	make(_i == 0 ? VMR_RETRY_VMA : VMR_RETRY_SPACE);
	map(BASE, 4, &ops, 0);
	start_recording();
	ck_assert_int_eq(vmr_handle_fault(space, addr, VMR_FAULT_FLAG_DEFAULT,
					  NULL, &res), 0);
	ck_assert_uint_eq(handler_calls, 2);
	expect_order(order, 3, addr);
	teardown();
}
END_TEST

START_TEST(test_no_point_fires_once_the_hook_is_removed)
{
	static const struct vmr_region_ops ops = { .fault = done };
	vmr_fault_t res;

	if (!need_points())
		return;
	make(VMR_RETRY_VMA);
	map(BASE, 4, &ops, 0);
	start_recording();
	ck_assert_int_eq(vmr_debug_set(NULL, NULL), 0);
	ck_assert_int_eq(vmr_handle_fault(space, BASE, VMR_FAULT_FLAG_DEFAULT,
					  NULL, &res), 0);
	map(BASE + 16 * PG, 4, NULL, 0);
	ck_assert_uint_eq(handler_calls, 1);
	ck_assert_uint_eq(seen.n, 0);
	teardown();
}
END_TEST

/* ---- updates -------------------------------------------------------------- */

START_TEST(test_a_replacing_map_marks_publishes_then_detaches)
{
	static const enum vmr_debug_point order[] = {
		VMR_DP_RANGE_MARK, VMR_DP_TREE_PUBLISH, VMR_DP_TREE_RETIRE,
		VMR_DP_SPACE_DETACH
	};

	if (!need_points())
		return;
	make(VMR_RETRY_VMA);
	map(BASE, 8, NULL, 0);
	start_recording();
	map(BASE + 2 * PG, 2, NULL, VMR_MAP_REPLACE);
	expect_order(order, 4, ~(uintptr_t)0);
	/* The tree publishes the run it replaced (the whole region, cut in
	 * three); the space names the range it maps. */
	ck_assert_int_ge(find(0, VMR_DP_TREE_PUBLISH, BASE), 0);
	ck_assert_int_ge(find(0, VMR_DP_SPACE_DETACH, BASE + 2 * PG), 0);
	teardown();
}
END_TEST

START_TEST(test_a_lookup_in_a_deep_tree_descends_at_its_address)
{
	uintptr_t addr = BASE + 2 * 777 * PG;

	if (!need_points())
		return;
	make(VMR_RETRY_VMA);
	for (unsigned int i = 0; i < 2000; i++)
		map(BASE + 2 * i * PG, 1, NULL, 0);
	start_recording();
	vmr_rcu_read_lock(NULL);
	ck_assert_ptr_nonnull(vmr_space_find_region(space, addr));
	vmr_rcu_read_unlock(NULL);
	ck_assert_int_ge(find(0, VMR_DP_TREE_DESCEND, addr), 0);
	teardown();
}
END_TEST

/* ---- page wait ------------------------------------------------------------ */

struct waiter {
	struct vmr_pagemap *map;
	int ret;
};

static void *lock_page_5(void *arg)
{
	struct waiter *w = arg;

	w->ret = vmr_page_lock(w->map, 5, 0);
	if (!w->ret)
		w->ret = vmr_page_unlock(w->map, 5);
	return NULL;
}

START_TEST(test_a_contended_page_passes_wait_and_unlock_with_its_index)
{
	struct waiter w = { .ret = -1 };
	pthread_t t;
	bool ok;

	if (!need_points())
		return;
	ck_assert_int_eq(vmr_pagemap_create(NULL, 8, &w.map), 0);
	start_recording();
	ck_assert(vmr_page_trylock(w.map, 5));
	ck_assert_int_eq(pthread_create(&t, NULL, lock_page_5, &w), 0);
	/* The waiter reaches the point only once it found the page locked
	 * and is about to sleep. */
	VMR_WAIT_FOR(ok, atomic_load(&seen.any[VMR_DP_PAGE_WAIT]) > 0, 10);
	ck_assert_msg(ok, "the waiter never reached page_wait");
	ck_assert_int_eq(vmr_page_unlock(w.map, 5), 0);
	ck_assert_int_eq(vmr_test_join(t, 10), 0);
	ck_assert_int_eq(w.ret, 0);
	ck_assert_int_ge(find(0, VMR_DP_PAGE_UNLOCK, 5), 0);
	/* The waiter's own unlock passed the point too. */
	ck_assert_uint_ge(atomic_load(&seen.any[VMR_DP_PAGE_UNLOCK]), 2);
	vmr_debug_set(NULL, NULL);
	vmr_pagemap_destroy(w.map);
}
END_TEST

/* ---- the yield injector --------------------------------------------------- */

#define INJ_THREADS 3
#define INJ_FAULTS 300

static void *fault_loop(void *arg)
{
	uintptr_t *bad = arg;
	vmr_fault_t res;

	vmr_rcu_register_thread(NULL);
	for (unsigned int i = 0; i < INJ_FAULTS; i++)
		if (vmr_handle_fault(space, BASE + (i % 8) * PG,
				     VMR_FAULT_FLAG_DEFAULT, NULL, &res) ||
		    res)
			(*bad)++;
	vmr_rcu_unregister_thread(NULL);
	return NULL;
}

/* Yields and sleeps at every point change timing, never results: every
 * fault still finishes with its handler run exactly once, while a writer
 * keeps replacing a neighbouring region. */
START_TEST(test_faults_under_the_yield_injector_all_finish_once)
{
	static const struct vmr_region_ops ops = { .fault = done };
	uintptr_t bad[INJ_THREADS] = { 0 };
	pthread_t t[INJ_THREADS];

	if (!need_points())
		return;
	make(_i == 0 ? VMR_RETRY_VMA : VMR_RETRY_SPACE);
	map(BASE, 8, &ops, 0);
	ck_assert_int_eq(vmr_debug_yield(~0u, 2, 50, vmr_test_seed()), 0);
	for (unsigned int i = 0; i < INJ_THREADS; i++)
		ck_assert_int_eq(pthread_create(&t[i], NULL, fault_loop,
						&bad[i]), 0);
	for (unsigned int i = 0; i < 50; i++)
		map(BASE + 16 * PG, 4, NULL, VMR_MAP_REPLACE);
	for (unsigned int i = 0; i < INJ_THREADS; i++) {
		ck_assert_int_eq(vmr_test_join(t[i], 60), 0);
		ck_assert_uint_eq(bad[i], 0);
	}
	ck_assert_uint_eq(handler_calls, INJ_THREADS * INJ_FAULTS);
	teardown();
}
END_TEST

static Suite *debugpoint_suite(void)
{
	Suite *s = suite_create("debugpoint");
	TCase *tc = tcase_create("points");

	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, test_every_point_has_its_own_name);
	tcase_add_test(tc, test_setting_a_hook_says_whether_points_are_built);
	tcase_add_test(tc,
		       test_a_fault_passes_lookup_check_locked_unlock_in_order);
	tcase_add_loop_test(
		tc, test_a_retried_fault_passes_the_retry_point_between_attempts,
		0, 2);
	tcase_add_test(tc, test_no_point_fires_once_the_hook_is_removed);
	tcase_add_test(tc, test_a_replacing_map_marks_publishes_then_detaches);
	tcase_add_test(tc, test_a_lookup_in_a_deep_tree_descends_at_its_address);
	tcase_add_test(
		tc, test_a_contended_page_passes_wait_and_unlock_with_its_index);
	tcase_add_loop_test(
		tc, test_faults_under_the_yield_injector_all_finish_once, 0, 2);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	return vmr_test_run(debugpoint_suite());
}
