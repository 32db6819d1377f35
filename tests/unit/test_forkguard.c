/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The fork guard (lib/forkguard.c) and its pool (lib/pool.c): while a
 * fork() is in flight the library's allocations come from the pool and
 * its frees wait; the pool hands out aligned, distinct blocks and takes
 * them back; allocating threads and a forking one together lose no block
 * and corrupt none.
 */
#include "internal.h"
#include "vmr_test.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

/* ---- inside a fork ------------------------------------------------------- */

/*
 * What the library does between our prepare handler and the system call,
 * seen from a prepare handler of the test's that runs after ours (glibc
 * runs prepare handlers in the reverse order of their registration: the
 * test registers its own before the library's).  Recorded, asserted after.
 */
static struct {
	bool ran;
	bool in_flight;
	bool from_pool, aligned_from_pool, page_from_pool;
	bool aligned, page_aligned;
	bool child_in_flight;
	void *heap_block; /* a malloc() block, freed during the fork */
} seen;

static void test_prepare(void)
{
	void *p, *q, *r;

	seen.ran = true;
	seen.in_flight = vmr_fork_in_flight();
	p = vmr_alloc(100);
	q = vmr_alloc_aligned(200);
	r = vmr_alloc_align(4096, 4096);
	seen.from_pool = p && vmr_pool_owns(p);
	seen.aligned_from_pool = q && vmr_pool_owns(q);
	seen.page_from_pool = r && vmr_pool_owns(r);
	seen.aligned = q && !((uintptr_t)q % VMR_ALLOC_ALIGN);
	seen.page_aligned = r && !((uintptr_t)r % 4096);
	if (p)
		memset(p, 0xa5, 100);
	if (r)
		memset(r, 0x5a, 4096);
	vmr_free(p);
	vmr_free(q);
	vmr_free(r);
	/* A malloc() block: kept until the fork is over, then freed. */
	vmr_free(seen.heap_block);
	seen.heap_block = NULL;
}

static void register_test_prepare(void)
{
	ck_assert_int_eq(pthread_atfork(test_prepare, NULL, NULL), 0);
}

START_TEST(test_allocations_during_a_fork_come_from_the_pool)
{
	pid_t pid;
	int status, fds[2];
	char in_child = 0;
	void *p;

	/* Ours after the test's: ours runs first. */
	register_test_prepare();
	ck_assert_int_eq(vmr_fork_guard_init(), 0);
	seen.heap_block = vmr_alloc(64);
	ck_assert_ptr_nonnull(seen.heap_block);
	ck_assert(!vmr_pool_owns(seen.heap_block));
	ck_assert_int_eq(pipe(fds), 0);
	pid = fork();
	if (pid == 0) {
		/* The child's word goes through a pipe: under valgrind its
		 * exit status is the leak check's (the parent's threads and
		 * deferred frees are gone in it). */
		char c = vmr_fork_in_flight() ? 'y' : 'n';

		_exit(write(fds[1], &c, 1) == 1 ? 0 : 2);
	}
	ck_assert_int_gt(pid, 0);
	close(fds[1]);
	ck_assert_int_eq(read(fds[0], &in_child, 1), 1);
	close(fds[0]);
	ck_assert_int_eq(waitpid(pid, &status, 0), pid);
	ck_assert(WIFEXITED(status));
	ck_assert_msg(in_child == 'n',
		      "in the child the fork still looked in flight");
	ck_assert(seen.ran);
	ck_assert_msg(seen.in_flight, "our prepare handler did not run first");
	ck_assert(seen.from_pool);
	ck_assert(seen.aligned_from_pool);
	ck_assert(seen.page_from_pool);
	ck_assert(seen.aligned);
	ck_assert(seen.page_aligned);
	/* After the fork: malloc() again. */
	ck_assert(!vmr_fork_in_flight());
	p = vmr_alloc(100);
	ck_assert_ptr_nonnull(p);
	ck_assert(!vmr_pool_owns(p));
	vmr_free(p);
}
END_TEST

/* ---- the pool ------------------------------------------------------------ */

START_TEST(test_the_pool_hands_out_aligned_distinct_blocks_and_reuses_them)
{
	static const size_t sizes[] = { 1, 8, 31, 32, 33, 100, 4096, 5000,
					65536, 65537, 300000 };
	enum { N = VMR_ARRAY_SIZE(sizes), ROUNDS = 4 };
	unsigned char *b[ROUNDS][N];
	void *again;

	for (size_t k = 0; k < ROUNDS; k++)
		for (size_t i = 0; i < N; i++) {
			b[k][i] = vmr_pool_alloc(sizes[i], i % 2 ? 64 : 0);
			ck_assert_ptr_nonnull(b[k][i]);
			ck_assert(vmr_pool_owns(b[k][i]));
			if (i % 2)
				ck_assert_uint_eq((uintptr_t)b[k][i] % 64, 0);
			memset(b[k][i], (int)(k * N + i), sizes[i]);
		}
	/* Every block kept its bytes: none overlaps another. */
	for (size_t k = 0; k < ROUNDS; k++)
		for (size_t i = 0; i < N; i++) {
			size_t j = 0;

			while (j < sizes[i] &&
			       b[k][i][j] == (unsigned char)(k * N + i))
				j++;
			ck_assert_msg(j == sizes[i], "block %zu/%zu changed", k,
				      i);
		}
	ck_assert(!vmr_pool_owns(&again));
	/* A block freed is the next one of its class. */
	vmr_pool_free(b[2][5]);
	again = vmr_pool_alloc(sizes[5], 0);
	ck_assert_ptr_eq(again, b[2][5]);
	for (size_t k = 0; k < ROUNDS; k++)
		for (size_t i = 0; i < N; i++)
			vmr_pool_free(b[k][i]);
	/* More than the whole pool: refused. */
	ck_assert_ptr_null(vmr_pool_alloc((size_t)1 << 27, 0));
}
END_TEST

/* ---- allocators and a forker --------------------------------------------- */

#define LIVE 32

struct allocator {
	pthread_t thread;
	struct vmr_rng rng;
	atomic_bool *stop;
	uint64_t allocs, from_pool, bad, failed;
};

static void fill(unsigned char *p, size_t n, uint64_t tag)
{
	for (size_t i = 0; i < n; i++)
		p[i] = (unsigned char)(tag + i);
}

static bool intact(const unsigned char *p, size_t n, uint64_t tag)
{
	for (size_t i = 0; i < n; i++)
		if (p[i] != (unsigned char)(tag + i))
			return false;
	return true;
}

static void *allocator_main(void *arg)
{
	struct allocator *a = arg;
	struct {
		unsigned char *p;
		size_t n;
		uint64_t tag;
	} live[LIVE] = { { 0 } };

	while (!atomic_load(a->stop)) {
		size_t k = vmr_rng_below(&a->rng, LIVE);
		size_t n = 1 + vmr_rng_below(&a->rng, 3000);
		bool aligned = vmr_rng_below(&a->rng, 4) == 0;

		if (live[k].p) {
			if (!intact(live[k].p, live[k].n, live[k].tag))
				a->bad++;
			vmr_free(live[k].p);
		}
		live[k].p = aligned ? vmr_alloc_aligned(n) : vmr_alloc(n);
		live[k].n = n;
		live[k].tag = vmr_rng_next(&a->rng);
		if (!live[k].p) {
			a->failed++;
			continue;
		}
		if (aligned && (uintptr_t)live[k].p % VMR_ALLOC_ALIGN)
			a->bad++;
		a->allocs++;
		a->from_pool += vmr_pool_owns(live[k].p);
		fill(live[k].p, n, live[k].tag);
	}
	for (size_t k = 0; k < LIVE; k++) {
		if (live[k].p && !intact(live[k].p, live[k].n, live[k].tag))
			a->bad++;
		vmr_free(live[k].p);
	}
	return NULL;
}

/*
 * Threads allocate, fill, check and free through the library while the
 * test thread forks again and again: no block is handed out twice or
 * changed under its owner, whether it came from malloc() or the pool, and
 * every child exits cleanly.
 */
START_TEST(test_allocators_and_forks_together_corrupt_nothing)
{
	enum { THREADS = 4 };
	struct allocator a[THREADS];
	atomic_bool stop;
	uint64_t seed = vmr_test_seed(), allocs = 0, pool = 0;
	unsigned int forks = 0, bad_children = 0;
	double end;

	ck_assert_int_eq(vmr_fork_guard_init(), 0);
	atomic_init(&stop, false);
	for (int i = 0; i < THREADS; i++) {
		a[i] = (struct allocator){ .stop = &stop };
		vmr_rng_init(&a[i].rng, seed + (uint64_t)i);
		ck_assert_int_eq(pthread_create(&a[i].thread, NULL,
						allocator_main, &a[i]),
				 0);
	}
	end = vmr_test_now() + vmr_test_seconds();
	while (vmr_test_now() < end) {
		int status;
		pid_t pid = fork();

		if (pid == 0)
			_exit(0);
		if (pid < 0)
			break;
		forks++;
		/* Under valgrind the status is the child's leak check: the
		 * parent's threads, and what they held, are gone in it. */
		if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status) ||
		    (WEXITSTATUS(status) && !vmr_test_valgrind()))
			bad_children++;
	}
	atomic_store(&stop, true);
	for (int i = 0; i < THREADS; i++) {
		ck_assert_int_eq(vmr_test_join(a[i].thread, 10.0), 0);
		ck_assert_uint_eq(a[i].bad, 0);
		ck_assert_uint_eq(a[i].failed, 0);
		allocs += a[i].allocs;
		pool += a[i].from_pool;
	}
	ck_assert_uint_gt(forks, 0);
	ck_assert_uint_eq(bad_children, 0);
	ck_assert_uint_gt(allocs, 0);
	fprintf(stderr, "%u forks, %llu allocations, %llu from the pool\n",
		forks, (unsigned long long)allocs, (unsigned long long)pool);
}
END_TEST

static Suite *forkguard_suite(void)
{
	Suite *s = suite_create("forkguard");
	TCase *tc;

	tc = tcase_create("inside a fork");
	tcase_add_test(tc, test_allocations_during_a_fork_come_from_the_pool);
	suite_add_tcase(s, tc);

	tc = tcase_create("pool");
	tcase_add_test(
		tc,
		test_the_pool_hands_out_aligned_distinct_blocks_and_reuses_them);
	suite_add_tcase(s, tc);

	tc = tcase_create("allocators and forks");
	tcase_add_test(tc, test_allocators_and_forks_together_corrupt_nothing);
	tcase_set_timeout(tc, vmr_test_seconds() * 3 + 60);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	return vmr_test_run(forkguard_suite());
}
