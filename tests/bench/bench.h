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

/* Pin the calling thread to CPU @cpu modulo the CPUs it may use. */
void bench_pin(unsigned int cpu);

/* How many CPUs the calling thread may run on (at least 1). */
unsigned int bench_nr_cpus(void);

/* Sleep @ms milliseconds, resuming after a signal. */
void bench_sleep_ms(long ms);

/* splitmix64: the next pseudo-random number of the sequence *@state. */
uint64_t bench_rand(uint64_t *state);

#endif /* VMR_BENCH_H */
