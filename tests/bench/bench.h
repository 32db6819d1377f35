/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Helpers shared by the benchmarks: a clock, medians, a barrier start, and
 * the BENCH line format of DESIGN.md:
 *
 *   BENCH bench=<name> impl=<impl> <key>=<value>... metric=<m> value=<v>
 *
 * Every figure a benchmark prints is measured in the same run as the
 * baselines it is compared with; ratios are printed as
 * metric=ratio_vs_<impl> lines.
 */
#ifndef VMR_BENCH_H
#define VMR_BENCH_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Monotonic clock in nanoseconds. */
uint64_t bench_now_ns(void);

/* Median of @n doubles (sorts @v in place). */
double bench_median(double *v, size_t n);

/* Print one BENCH line: @keys is the part between impl= and metric=. */
void bench_print(const char *bench, const char *impl, const char *keys,
		 const char *metric, double value);

/*
 * Print one BENCH line with keys on both sides of impl=:
 *   BENCH bench=<bench> <head> impl=<impl> <keys> metric=<m> value=<v>
 * @head (e.g. "case=shared") and @keys may each be NULL or empty.
 */
void bench_print_keys(const char *bench, const char *head, const char *impl,
		      const char *keys, const char *metric, double value);

/*
 * Print one BENCH line without impl= (for figures of a configuration, such
 * as a retry policy, rather than of an implementation):
 *   BENCH bench=<bench> <keys> metric=<m> value=<v>
 * @keys may be NULL or empty.
 */
void bench_print_kv(const char *bench, const char *keys, const char *metric,
		    double value);

/*
 * The @pct percentile (0 to 100) of @n values by nearest rank: the smallest
 * value with at least @pct% of the values at or below it.  Sorts @v in
 * place; 0 if @n is 0.
 */
uint64_t bench_percentile_u64(uint64_t *v, size_t n, double pct);

/* Read an integer option "--name=value" from argv, or @def. */
long bench_opt(int argc, char **argv, const char *name, long def);

/*
 * A flag option: true for "--name" or "--name=N" with N non-zero, false for
 * "--name=0" or when absent.
 */
bool bench_flag(int argc, char **argv, const char *name);

/* A string option "--name=value" from argv (a pointer into argv), or @def. */
const char *bench_opt_str(int argc, char **argv, const char *name,
			  const char *def);

/* Pin the calling thread to CPU @cpu modulo the CPUs it may use. */
void bench_pin(unsigned int cpu);

/*
 * Pin every thread of the process (those in /proc/self/task now; threads
 * created later inherit the mask of their creator) to CPU @cpu modulo the
 * CPUs the calling thread may use.  Call it before creating threads to pin
 * the whole process, as `taskset -c` would.  Returns the CPU number, or
 * -errno.
 */
int bench_pin_process(unsigned int cpu);

/* How many CPUs the calling thread may run on (at least 1). */
unsigned int bench_nr_cpus(void);

/* Sleep @ms milliseconds, resuming after a signal. */
void bench_sleep_ms(long ms);

/* splitmix64: the next pseudo-random number of the sequence *@state. */
uint64_t bench_rand(uint64_t *state);

/* Print "<program>: @what: strerror(@err)" on stderr and exit(1). */
_Noreturn void bench_die(const char *what, int err);

/* posix_memalign() to a cache line (64 bytes), or bench_die(). */
void *bench_alloc(size_t size);

/* Append @x to the growable array *@v of *@n values (*@cap allocated). */
void bench_push_u64(uint64_t **v, size_t *n, size_t *cap, uint64_t x);

/* Median of @n values skipping nan ones; nan if all are (sorts @v). */
double bench_median_or_nan(double *v, size_t n);

/* Sleep @ns nanoseconds (clock_nanosleep), resuming after a signal. */
void bench_sleep_ns(uint64_t ns);

/* Busy-wait until bench_now_ns() reaches @t. */
void bench_spin_until(uint64_t t);

/*
 * Initialise a pthread_rwlock_t that prefers writers, as mmap_lock does
 * (glibc's default lets readers starve writers).  Returns 0 or an errno.
 */
int bench_rwlock_init(pthread_rwlock_t *lock);

/*
 * A team of threads started together and stopped by a flag.  Each member
 * calls pthread_barrier_wait(&team->start) when it is ready and then works
 * until bench_team_stopped(); bench_team_run() starts them, passes the
 * barrier with them, sleeps @ms, raises the flag and joins them.
 */
struct bench_team {
	atomic_bool stop __attribute__((aligned(64)));
	pthread_barrier_t start;
};

struct bench_member {
	pthread_t tid;
	void *(*fn)(void *);
	void *arg;
};

static inline bool bench_team_stopped(struct bench_team *tm)
{
	return atomic_load_explicit(&tm->stop, memory_order_relaxed);
}

void bench_team_run(struct bench_team *tm, struct bench_member *m,
		    unsigned int n, long ms);

#endif /* VMR_BENCH_H */
