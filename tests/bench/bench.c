/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include "bench.h"

#include <errno.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

uint64_t bench_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

double bench_median(double *v, size_t n)
{
	if (!n)
		return 0;
	qsort(v, n, sizeof(*v), cmp_double);
	return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

void bench_print(const char *bench, const char *impl, const char *keys,
		 const char *metric, double value)
{
	bench_print_keys(bench, NULL, impl, keys, metric, value);
}

void bench_print_keys(const char *bench, const char *head, const char *impl,
		      const char *keys, const char *metric, double value)
{
	printf("BENCH bench=%s%s%s impl=%s%s%s metric=%s value=%.4g\n", bench,
	       head && *head ? " " : "", head ? head : "", impl,
	       keys && *keys ? " " : "", keys ? keys : "", metric, value);
	fflush(stdout);
}

void bench_print_kv(const char *bench, const char *keys, const char *metric,
		    double value)
{
	printf("BENCH bench=%s%s%s metric=%s value=%.4g\n", bench,
	       keys && *keys ? " " : "", keys ? keys : "", metric, value);
	fflush(stdout);
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

uint64_t bench_percentile_u64(uint64_t *v, size_t n, double pct)
{
	double rank;
	size_t k;

	if (!n)
		return 0;
	qsort(v, n, sizeof(*v), cmp_u64);
	if (pct < 0)
		pct = 0;
	if (pct > 100)
		pct = 100;
	rank = pct / 100.0 * (double)n; /* nearest rank: ceil(), at least 1 */
	k = (size_t)rank;
	if ((double)k < rank)
		k++;
	return v[k ? k - 1 : 0];
}

long bench_opt(int argc, char **argv, const char *name, long def)
{
	size_t len = strlen(name);

	for (int i = 1; i < argc; i++) {
		if (!strncmp(argv[i], "--", 2) &&
		    !strncmp(argv[i] + 2, name, len) && argv[i][2 + len] == '=')
			return strtol(argv[i] + 3 + len, NULL, 0);
	}
	return def;
}

void bench_pin(unsigned int cpu)
{
	cpu_set_t allowed, one;
	unsigned int n = 0;

	if (sched_getaffinity(0, sizeof(allowed), &allowed))
		return;
	n = (unsigned int)CPU_COUNT(&allowed);
	if (!n)
		return;
	cpu %= n;
	for (int c = 0; c < CPU_SETSIZE; c++) {
		if (!CPU_ISSET(c, &allowed))
			continue;
		if (cpu-- == 0) {
			CPU_ZERO(&one);
			CPU_SET(c, &one);
			sched_setaffinity(0, sizeof(one), &one);
			return;
		}
	}
}

unsigned int bench_nr_cpus(void)
{
	cpu_set_t allowed;
	int n;

	if (sched_getaffinity(0, sizeof(allowed), &allowed))
		return 1;
	n = CPU_COUNT(&allowed);
	return n > 0 ? (unsigned int)n : 1;
}

void bench_sleep_ms(long ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };

	while (nanosleep(&ts, &ts) && errno == EINTR)
		;
}

uint64_t bench_rand(uint64_t *state)
{
	uint64_t z = (*state += 0x9e3779b97f4a7c15ull);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}
