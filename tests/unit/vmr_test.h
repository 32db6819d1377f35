/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Helpers shared by the Check suites: run length and seed from the
 * environment, a small per-thread PRNG, and a main() that runs one suite.
 *
 * Concurrent tests run VMR_TEST_SECONDS seconds (default 2; the meson test
 * setup "long" raises it) and print the seed they use; VMR_TEST_SEED
 * replays a run.  Worker threads only record what they saw; the test
 * thread asserts after joining them.
 */
#ifndef VMR_TEST_H
#define VMR_TEST_H

#include "vmr_rng.h"

#include <check.h>
#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Seconds a concurrent test runs. */
double vmr_test_seconds(void);

/* True when run under valgrind (the meson setup "valgrind" sets
 * VMR_TEST_VALGRIND): tests that fault on userfaultfd memory skip, since
 * valgrind runs one thread at a time. */
bool vmr_test_valgrind(void);

/*
 * True in a ThreadSanitizer build.  TSan's fork() holds the tool's own
 * locks across the system call, which with UFFD_FEATURE_EVENT_FORK sleeps
 * until a handler thread of the same process, needing those locks, reads
 * the FORK message: tests that fork with fork events skip under it (a
 * deadlock of the tool; without it the runtime handles the fork).
 */
#if defined(__SANITIZE_THREAD__)
#define VMR_TEST_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define VMR_TEST_TSAN 1
#endif
#endif
#ifndef VMR_TEST_TSAN
#define VMR_TEST_TSAN 0
#endif

/* @n, or a sixteenth of it (at least 1) under valgrind: for loops sized
 * to take a second natively, which memcheck would run for minutes. */
size_t vmr_test_count(size_t n);

/* The run's seed: VMR_TEST_SEED if set, else fresh; printed once. */
uint64_t vmr_test_seed(void);

/* Monotonic clock in seconds. */
double vmr_test_now(void);

/*
 * Join @t, waiting at most @seconds: 0, or pthread_timedjoin_np()'s error
 * (ETIMEDOUT: the thread is still running, and still joinable).  A test
 * joins every thread that must end this way, so that a lost wakeup or a
 * hang fails the test instead of blocking it.
 */
int vmr_test_join(pthread_t t, double seconds);

/* Poll @cond every millisecond for up to @seconds; @ok tells whether it
 * came true. */
#define VMR_WAIT_FOR(ok, cond, seconds)                                       \
	do {                                                                  \
		double vmr_end_ = vmr_test_now() + (seconds);                 \
		while (!((ok) = (cond)) && vmr_test_now() < vmr_end_)         \
			vmr_test_sleep(0.001);                                \
	} while (0)

/* Sleep @seconds (monotonic; restarted after a signal). */
void vmr_test_sleep(double seconds);

/* Runs @s in Check's fork mode and returns main()'s exit status. */
int vmr_test_run(Suite *s);

#endif /* VMR_TEST_H */
