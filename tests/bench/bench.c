/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include "bench.h"

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
	printf("BENCH bench=%s impl=%s%s%s metric=%s value=%.4g\n", bench, impl,
	       keys && *keys ? " " : "", keys ? keys : "", metric, value);
	fflush(stdout);
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
