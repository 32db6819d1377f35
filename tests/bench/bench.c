/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include "bench.h"

#include <dirent.h>
#include <errno.h>
#include <math.h>
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

bool bench_flag(int argc, char **argv, const char *name)
{
	size_t len = strlen(name);

	for (int i = 1; i < argc; i++) {
		if (!strncmp(argv[i], "--", 2) &&
		    !strncmp(argv[i] + 2, name, len) && argv[i][2 + len] == '\0')
			return true;
	}
	return bench_opt(argc, argv, name, 0) != 0;
}

const char *bench_opt_str(int argc, char **argv, const char *name,
			  const char *def)
{
	size_t len = strlen(name);

	for (int i = 1; i < argc; i++) {
		if (!strncmp(argv[i], "--", 2) &&
		    !strncmp(argv[i] + 2, name, len) && argv[i][2 + len] == '=')
			return argv[i] + 3 + len;
	}
	return def;
}

/* The CPU number of the @cpu-th CPU (modulo) the caller may use, or -errno. */
static int pick_cpu(unsigned int cpu)
{
	cpu_set_t allowed;
	unsigned int n;

	if (sched_getaffinity(0, sizeof(allowed), &allowed))
		return -errno;
	n = (unsigned int)CPU_COUNT(&allowed);
	if (!n)
		return -EINVAL;
	cpu %= n;
	for (int c = 0; c < CPU_SETSIZE; c++) {
		if (CPU_ISSET(c, &allowed) && cpu-- == 0)
			return c;
	}
	return -EINVAL;
}

void bench_pin(unsigned int cpu)
{
	int c = pick_cpu(cpu);
	cpu_set_t one;

	if (c < 0)
		return;
	CPU_ZERO(&one);
	CPU_SET(c, &one);
	sched_setaffinity(0, sizeof(one), &one);
}

int bench_pin_process(unsigned int cpu)
{
	int c = pick_cpu(cpu), err = 0;
	struct dirent *de;
	cpu_set_t one;
	DIR *dir;
	long tid;

	if (c < 0)
		return c;
	CPU_ZERO(&one);
	CPU_SET(c, &one);
	/* The caller first, so that it is pinned even if /proc is missing. */
	if (sched_setaffinity(0, sizeof(one), &one))
		return -errno;
	dir = opendir("/proc/self/task");
	if (!dir)
		return c;
	while ((de = readdir(dir))) {
		tid = strtol(de->d_name, NULL, 10);
		if (tid > 0 && sched_setaffinity((pid_t)tid, sizeof(one), &one) &&
		    errno != ESRCH)
			err = -errno;
	}
	closedir(dir);
	return err ? err : c;
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

_Noreturn void bench_die(const char *what, int err)
{
	fprintf(stderr, "%s: %s: %s\n", program_invocation_short_name, what,
		strerror(err));
	exit(1);
}

void *bench_alloc(size_t size)
{
	void *p = NULL;

	if (posix_memalign(&p, 64, size ? size : 1))
		bench_die("posix_memalign", ENOMEM);
	return p;
}

void bench_push_u64(uint64_t **v, size_t *n, size_t *cap, uint64_t x)
{
	if (*n == *cap) {
		*cap = *cap ? *cap * 2 : 4096;
		*v = realloc(*v, *cap * sizeof(**v));
		if (!*v)
			bench_die("realloc", ENOMEM);
	}
	(*v)[(*n)++] = x;
}

double bench_median_or_nan(double *v, size_t n)
{
	size_t k = 0;

	for (size_t i = 0; i < n; i++)
		if (!isnan(v[i]))
			v[k++] = v[i];
	return k ? bench_median(v, k) : NAN;
}

void bench_sleep_ns(uint64_t ns)
{
	struct timespec ts = { (time_t)(ns / 1000000000u),
			       (long)(ns % 1000000000u) };

	while (clock_nanosleep(CLOCK_MONOTONIC, 0, &ts, &ts) == EINTR)
		;
}

void bench_spin_until(uint64_t t)
{
	while (bench_now_ns() < t)
		;
}

int bench_rwlock_init(pthread_rwlock_t *lock)
{
	pthread_rwlockattr_t attr;
	int err = pthread_rwlockattr_init(&attr);

	if (!err)
		err = pthread_rwlockattr_setkind_np(
			&attr, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
	if (!err)
		err = pthread_rwlock_init(lock, &attr);
	pthread_rwlockattr_destroy(&attr);
	return err;
}

void bench_team_run(struct bench_team *tm, struct bench_member *m,
		    unsigned int n, long ms)
{
	unsigned int i;
	int err;

	atomic_init(&tm->stop, false);
	err = pthread_barrier_init(&tm->start, NULL, n + 1);
	if (err)
		bench_die("pthread_barrier_init", err);
	for (i = 0; i < n; i++) {
		err = pthread_create(&m[i].tid, NULL, m[i].fn, m[i].arg);
		if (err)
			bench_die("pthread_create", err);
	}
	pthread_barrier_wait(&tm->start);
	bench_sleep_ms(ms);
	atomic_store_explicit(&tm->stop, true, memory_order_relaxed);
	for (i = 0; i < n; i++)
		pthread_join(m[i].tid, NULL);
	pthread_barrier_destroy(&tm->start);
}
