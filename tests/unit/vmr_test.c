/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include "vmr_test.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

double vmr_test_seconds(void)
{
	const char *s = getenv("VMR_TEST_SECONDS");
	double v = s ? strtod(s, NULL) : 2.0;

	return v > 0 ? v : 2.0;
}

bool vmr_test_valgrind(void)
{
	const char *s = getenv("VMR_TEST_VALGRIND");

	return s && *s && *s != '0';
}

size_t vmr_test_count(size_t n)
{
	if (!vmr_test_valgrind())
		return n;
	return n / 16 ? n / 16 : 1;
}

uint64_t vmr_test_seed(void)
{
	static uint64_t seed;
	const char *s;

	if (seed)
		return seed;
	s = getenv("VMR_TEST_SEED");
	if (s && *s)
		seed = strtoull(s, NULL, 0);
	else
		seed = (uint64_t)time(NULL) ^ ((uint64_t)clock() << 20);
	if (!seed)
		seed = 1;
	fprintf(stderr, "VMR_TEST_SEED=%llu\n", (unsigned long long)seed);
	return seed;
}

double vmr_test_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Now on @clock plus @seconds. */
static struct timespec deadline(clockid_t clock, double seconds)
{
	struct timespec ts;
	long ns = (long)((seconds - (double)(time_t)seconds) * 1e9);

	clock_gettime(clock, &ts);
	ts.tv_sec += (time_t)seconds;
	ts.tv_nsec += ns;
	if (ts.tv_nsec >= 1000000000L) {
		ts.tv_sec++;
		ts.tv_nsec -= 1000000000L;
	}
	return ts;
}

void vmr_test_sleep(double seconds)
{
	struct timespec ts = deadline(CLOCK_MONOTONIC, seconds);

	while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) ==
	       EINTR)
		;
}

int vmr_test_join(pthread_t t, double seconds)
{
	/* pthread_timedjoin_np() takes a CLOCK_REALTIME deadline. */
	struct timespec ts = deadline(CLOCK_REALTIME, seconds);

	return pthread_timedjoin_np(t, NULL, &ts);
}

int vmr_test_run(Suite *s)
{
	SRunner *sr = srunner_create(s);
	int failed;

	vmr_test_seed();
	srunner_run_all(sr, CK_ENV);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
