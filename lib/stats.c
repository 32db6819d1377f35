/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * libvmaretry - a space's counters.
 *
 * Each thread counts into the count[] array of its own tstate (lib/thread.c)
 * with a relaxed load and store: one writer per array, so no atomic
 * read-modify-write and no cache line shared with another thread.  A
 * reader sums every tstate's array with relaxed loads; a tstate outlives
 * its thread (it is orphaned, then maybe adopted), so counts are never
 * lost.  A reset records the current sums as a base that later reads
 * subtract: nobody writes another thread's counters.  The commonest fault
 * (fine-grained lock, result 0) counts once, in its tstate's fast_faults,
 * which a read adds to both counters it stands for.
 */
#include "mm.h"

#include <errno.h>
#include <string.h>
#include <time.h>

uint64_t vmr_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

void vmr_count_hist(struct vmr_tstate *ts, size_t hist, uint64_t ns)
{
	unsigned int b = 0;

	while (ns >= 2 && b < VMR_HIST_BUCKETS - 1) {
		ns >>= 1;
		b++;
	}
	vmr_count(ts, hist + b, 1);
}

static void sum(const struct vmr_space *space, uint64_t *out)
{
	struct vmr_tstate *ts;
	uint64_t fast;
	uint32_t nr = atomic_load_explicit(&space->tstates.nr,
					   memory_order_acquire);

	memset(out, 0, VMR_NR_COUNTERS * sizeof(*out));
	for (uint32_t i = 0; i < nr; i++) {
		ts = vmr_tstate_at(&space->tstates, i);
		for (size_t c = 0; c < VMR_NR_COUNTERS; c++)
			out[c] += atomic_load_explicit(&ts->count[c],
						       memory_order_relaxed);
		fast = atomic_load_explicit(&ts->fast_faults,
					    memory_order_relaxed);
		out[VMR_STAT(vma_lock_success)] += fast;
		out[VMR_STAT(result_ok)] += fast;
	}
}

int vmr_space_stats(const struct vmr_space *space, struct vmr_stats *stats,
		    size_t size)
{
	uint64_t now[VMR_NR_COUNTERS];
	size_t n = size / sizeof(uint64_t);

	if (!space || !stats || size % sizeof(uint64_t))
		return -EINVAL;
	if (n > VMR_NR_COUNTERS)
		n = VMR_NR_COUNTERS;
	sum(space, now);
	pthread_mutex_lock((pthread_mutex_t *)&space->stats_lock);
	for (size_t c = 0; c < VMR_NR_COUNTERS; c++)
		now[c] -= space->stats_base[c];
	pthread_mutex_unlock((pthread_mutex_t *)&space->stats_lock);
	/* Not counted on the fault path: every fault has one result. */
	now[VMR_STAT(faults)] = now[VMR_STAT(result_ok)] +
				now[VMR_STAT(result_nopage)] +
				now[VMR_STAT(result_completed)] +
				now[VMR_STAT(result_sigsegv)] +
				now[VMR_STAT(result_sigbus)] +
				now[VMR_STAT(result_oom)] +
				now[VMR_STAT(result_unfinished)];
	memcpy(stats, now, n * sizeof(uint64_t));
	memset((uint64_t *)stats + n, 0, size - n * sizeof(uint64_t));
	return 0;
}

int vmr_space_stats_reset(struct vmr_space *space)
{
	uint64_t now[VMR_NR_COUNTERS];

	if (!space)
		return -EINVAL;
	sum(space, now);
	pthread_mutex_lock(&space->stats_lock);
	memcpy(space->stats_base, now, sizeof(now));
	pthread_mutex_unlock(&space->stats_lock);
	return 0;
}

uint64_t vmr_hist_percentile(const uint64_t *hist, double pct)
{
	uint64_t total = 0, seen = 0, want;

	if (!hist)
		return 0;
	for (unsigned int b = 0; b < VMR_HIST_BUCKETS; b++)
		total += hist[b];
	if (!total)
		return 0;
	if (!(pct >= 0)) /* NaN too: converting it to an integer is UB */
		pct = 0;
	if (pct > 100)
		pct = 100;
	want = (uint64_t)(pct / 100.0 * (double)total + 0.5);
	if (want == 0)
		want = 1;
	for (unsigned int b = 0; b < VMR_HIST_BUCKETS; b++) {
		seen += hist[b];
		if (seen >= want)
			return (uint64_t)2 << b;
	}
	return (uint64_t)2 << (VMR_HIST_BUCKETS - 1);
}
