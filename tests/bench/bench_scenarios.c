/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * bench_scenarios - the seed debate, measured: the three scenarios of the
 * linux-mm RFC thread ("mm: continue using per-VMA lock when retrying page
 * faults after I/O", reference/kernel.md section 6) under every answer to
 * it, and the fault path's scaling against the baselines of bench_lock.
 *
 * Variants
 * --------
 * thrash, contention and bigregion each run under five variants, one space
 * of their own per run (everything else in struct vmr_space_config left at
 * its default):
 *
 *   retry_space     VMR_RETRY_SPACE, VMR_LOCK_REGION: mainline Linux, a
 *                   fault that dropped its lock for I/O retries under the
 *                   space lock (mmap_lock);
 *   retry_vma       VMR_RETRY_VMA, VMR_LOCK_REGION: the RFC, it retries on
 *                   the per-region lock (VM_FAULT_RETRY_VMA);
 *   hold_io_region  VMR_HOLD_IO, VMR_LOCK_REGION: Wilcox's alternative, the
 *                   per-region lock is held across the I/O;
 *   hold_io_range   VMR_HOLD_IO, VMR_LOCK_RANGE: the same, but the lock
 *                   covers only the faulting page (finer than the kernel);
 *   retry_vma_pin   VMR_RETRY_VMA, VMR_LOCK_REGION, and the handler pins
 *                   the page it read across the retry (vmr_fault_pin_page(),
 *                   vmr_fault_pinned_page()): beyond the kernel, which
 *                   rebuilds its vm_fault on every attempt.
 *
 * Every fault is a read fault (VMR_FAULT_FLAG_DEFAULT | USER) through
 * vmr_handle_fault() into the simulated pager of bench_pager.h: a page
 * cache (one vmr_pagemap) smaller than the working set, charged and
 * reclaimed at read time (uniform random victims; locked and pinned pages
 * are skipped), over a store whose reads sleep --io-us microseconds
 * (default 50; the process runs with a 1 ns timer slack).  Faulting
 * threads are not pinned: they spend most of their time asleep, and there
 * are more of them than CPUs.  Each run fills the cache with random pages,
 * resets the counters, starts every thread on one barrier, runs --ms
 * milliseconds (default 1000), stops them with a flag and joins them.
 * Every repetition (--reps, default 3) runs the five variants in an order
 * rotated by one per repetition; each figure is the median over the
 * repetitions, and the counters are checked (bench_pager_check(): the
 * engine's faults, retries and reads against the handlers', its attempt
 * identities, bad results, lost pins), anything that does not add up
 * reported on stderr.  Fault latencies are exact: every fault is timed
 * around vmr_handle_fault() into a per-thread array; p50/p99 are nearest
 * ranks over every fault of the run.  Besides its own figures, each of the
 * three reports the handlers' (bench_pager.h): io_retries, wait_retries,
 * wait_evicted_pct (100 * wait_rereads / wait_retries: retries after
 * waiting for another fault's read that found the page evicted; the pin
 * protects only the reading fault), evictions, io_mean_ns (what a read's
 * sleep really took), starved_threads (faulting threads that finished no
 * fault in the whole run, also reported on stderr), and the raw counters
 * of vmr_space_stats().
 *
 * thrash (Wilcox's case; the Kylin test: 500 threads, a 1 GB memcg, 16 MB
 * files; ~45% of I/O retries found their folio evicted with mainline, under
 * 2% with RETRY_VMA, up to 2.4x the rounds/s)
 *   --threads threads (default 64) each loop: pick one of --files files
 *   (default 64) at random, vmr_map() it (a region of --file-pages pages,
 *   default 64, in a slot of the thread's own, with the file's store
 *   offset), fault in every page in order, vmr_unmap() it.  The files share
 *   one page cache of --cache-pages pages (default 512: one eighth of the
 *   64 x 64-page working set, the Kylin ratio).  Figures:
 *     rounds_per_s       files read per second: all threads' faults /
 *                        --file-pages / span (so rounds cut by the stop
 *                        flag count for what they did);
 *     evicted_retry_pct  100 * io_rereads / io_retries: the share of I/O
 *                        retries whose page had been evicted between the
 *                        read and the retry (Kylin's RETRY_IO_MISS /
 *                        RETRY_MMAP_DROP; nan without I/O retries);
 *     rereads            the engine's page_rereads: reads of pages that had
 *                        been up to date before (in a thrashing cache,
 *                        most reads; compare the variants);
 *     reads_per_fault    page_reads / faults: what the misses cost, re-reads
 *                        after an eviction before the retry included;
 *   and faults_per_s, fault_p50_ns, fault_p99_ns, complete_rounds,
 *   space_read_wait_ns and space_write_wait_ns (totals), and
 *   map_unmap_p50_ns / _p99_ns / _max_ns (each vmr_map() and vmr_unmap()
 *   call of the threads, exact).
 *
 * contention (Song; the Douyin warm start: mmap_lock read acquisitions
 * -71%, read wait -96%)
 *   --contention-threads faulting threads (default 8) fault at random pages
 *   of one region of --contention-pages pages (default 8192) over a cache
 *   of --contention-cache-pages (default 1024), so most faults read and
 *   retry, while --mappers threads (default 2) each vmr_map() and
 *   vmr_unmap() a --map-pages region (default 4) in an area of their own,
 *   back to back (or pausing --mapper-us after each pair; default 0).
 *   Figures: space_read_locks (vmr_space_stats(); all from faults here),
 *   space_read_wait_ns (total), space_read_wait_avg_ns (per acquisition),
 *   space_read_wait_p99_ns (vmr_hist_percentile() of the waits that
 *   waited: a power-of-two bucket bound), the same four for writes,
 *   faults_per_s, mapper_ops_per_s, fault_p50_ns, fault_p99_ns and the raw
 *   counters.
 *
 * bigregion (Baghdasaryan, Stoakes; Android apps fork at run time with
 * hundreds of threads and thousands of VMAs)
 *   32 small regions (16 pages each, never faulted) and one region of
 *   --bigregion-pages pages (default 16384) after them: most of the space.
 *   --bigregion-threads faulting threads (default 16) fault at random pages
 *   of the big region over a cache of --bigregion-cache-pages (default
 *   2048).  Two writers:
 *     protect  every --protect-us (default 2000): vmr_protect() a random
 *              --protect-pages sub-range (default 16) of the big region
 *              read-only, which splits it; half a period later, vmr_map()
 *              with VMR_MAP_REPLACE the whole big region back as one
 *              read-write region over the same offsets ("merge": the
 *              library never merges neighbours, and the kernel's
 *              mprotect() back would merge them, write-locking all three);
 *              the page cache is keyed by offset, so nothing is lost;
 *     fork     every --fork-us (default 10000): vmr_space_write_lock() and
 *              vmr_range_write_lock() over every region (dup_mmap()),
 *              holding them --fork-hold-us (default 100, busy) before
 *              vmr_space_write_unlock().
 *   Figures: protect_lat_p50_ns / _p99_ns (the vmr_protect() call: its
 *   locks, the wait for faults, and the update), merge_lat_p50_ns /
 *   _p99_ns (the vmr_map() call), fork_lock_p50_ns / _p99_ns (from before
 *   vmr_space_write_lock() to the return of vmr_range_write_lock(): the time
 *   to get the locks), each exact over the run's operations; fault_p50_ns,
 *   fault_p99_ns, fault_p999_ns, faults_per_s, the writers' op counts and
 *   the raw counters.
 *
 * For these three, every variant also gets metric=<m>_vs_retry_space
 * lines for the headline metrics: the variant's median over retry_space's
 * (mainline, the baseline measured in the same run).
 *
 * scaling (scenario=scaling_disjoint and scenario=scaling_shared)
 *   Fault throughput with a no-op handler, threads 1, 2, 4, ... up to
 *   --max-threads (default: the online CPUs, which is also counted),
 *   thread t pinned to CPU t.  1024 regions of 64 pages and one region of
 *   65536 pages; disjoint: thread t faults at random pages of a small
 *   region of its own; shared: every thread faults at random pages of the
 *   big region.  The retry policy does not matter without I/O; the
 *   implementations ("variant=") are
 *     vmr        vmr_handle_fault() on a space with the default config
 *                (VMR_RETRY_VMA, VMR_LOCK_REGION, VMR_BARRIER_AUTO);
 *     vmr_range  the same with VMR_LOCK_RANGE;
 *     rwlock     one global writer-preferring pthread_rwlock_t read-locked
 *                around the lookup and the handler (mmap_lock before
 *                per-VMA locks);
 *     refcount   the kernel's vm_refcnt per region (bench_baseline.h):
 *                lookup under RCU, increment unless detached or
 *                write-locked, handler, decrement;
 *     ck         a ck_rwlock_t per region: lookup under RCU, read lock,
 *                handler, unlock.
 *   The baselines call the same handler through the region's ops with a
 *   struct vmr_fault built on the stack, as bench_fault's rwlock does.
 *   Figures: ops_per_s (all threads' faults / span), scaling (÷ the same
 *   implementation's 1-thread ops_per_s), and for vmr and vmr_range
 *   ratio_vs_<baseline> (ops_per_s ÷ the baseline's).  Each run lasts
 *   --scaling-ms (default 200); repetitions interleave as above.
 *
 * Output: one BENCH line per figure,
 *   BENCH bench=scenario scenario=thrash variant=retry_vma threads=64
 *         metric=rounds_per_s value=123
 * (threads= is the number of faulting threads), progress on stderr, and
 * with --csv=PATH one CSV row per figure: scenario,variant,threads,metric,
 * value (with a header row).
 *
 * Options: --scenario=thrash|contention|bigregion|scaling|all (default
 * all; a comma-separated list also works), --reps=N, --ms=N, --seed=N,
 * --io-us=N, --csv=PATH, and the per-scenario ones above.
 */
#define _LGPL_SOURCE
#include <urcu/urcu-memb.h>

#include <vmaretry.h>

#include "bench.h"
#include "bench_baseline.h"
#include "bench_call.h"
#include "bench_pager.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <time.h>
#include <unistd.h>

#define MAX_THREADS 1024
#define MAX_REPS 64
#define MAX_METRICS 48
#define NR_ADDRS (1u << 16) /* precomputed random pages per thread */
#define BASE_PAGE 256u      /* first page of the first region */
#define GAP_PAGES 1024u     /* between areas */

#define FAULT_FLAGS (VMR_FAULT_FLAG_DEFAULT | VMR_FAULT_FLAG_USER)

/* ======================================================================== */
/* Options, variants and output                                              */
/* ======================================================================== */

struct opts {
	int reps;
	long ms;
	uint64_t seed;
	long io_us;
	/* thrash */
	unsigned int threads;
	size_t files, file_pages, cache_pages;
	/* contention */
	unsigned int cont_threads, mappers;
	size_t cont_pages, cont_cache, map_pages;
	long mapper_us;
	/* bigregion */
	unsigned int big_threads;
	size_t big_pages, big_cache, protect_pages;
	long protect_us, fork_us, fork_hold_us;
	/* scaling */
	unsigned int max_threads;
	long scaling_ms;
};

struct variant {
	const char *name;
	enum vmr_retry_policy policy;
	enum vmr_lock_granularity granularity;
	bool pin;
};

enum {
	V_RETRY_SPACE,
	V_RETRY_VMA,
	V_HOLD_IO_REGION,
	V_HOLD_IO_RANGE,
	V_RETRY_VMA_PIN,
	NR_VARIANTS
};

static const struct variant variants[NR_VARIANTS] = {
	{ "retry_space", VMR_RETRY_SPACE, VMR_LOCK_REGION, false },
	{ "retry_vma", VMR_RETRY_VMA, VMR_LOCK_REGION, false },
	{ "hold_io_region", VMR_HOLD_IO, VMR_LOCK_REGION, false },
	{ "hold_io_range", VMR_HOLD_IO, VMR_LOCK_RANGE, false },
	{ "retry_vma_pin", VMR_RETRY_VMA, VMR_LOCK_REGION, true },
};

static FILE *csv;

/* One figure: a BENCH line, and a CSV row with --csv. */
static void emit(const char *scenario, const char *variant,
		 unsigned int threads, const char *metric, double value)
{
	char keys[160];

	snprintf(keys, sizeof(keys), "scenario=%s variant=%s threads=%u",
		 scenario, variant, threads);
	bench_print_kv("scenario", keys, metric, value);
	if (csv)
		fprintf(csv, "%s,%s,%u,%s,%.6g\n", scenario, variant, threads,
			metric, value);
}

static double ratio(double a, double b)
{
	return b > 0 ? a / b : NAN;
}

static double pct(double a, double b)
{
	return 100 * ratio(a, b);
}

static struct vmr_space *variant_space(const struct variant *v)
{
	struct vmr_space_config cfg;
	struct vmr_space *space;
	int err;

	memset(&cfg, 0, sizeof(cfg));
	cfg.policy = v->policy;
	cfg.granularity = v->granularity;
	err = vmr_space_create(&cfg, sizeof(cfg), &space);
	if (err)
		bench_die("vmr_space_create", -err);
	return space;
}

static void space_destroy(struct vmr_space *space)
{
	int err = vmr_space_destroy(space);

	if (err)
		bench_die("vmr_space_destroy", -err);
}

/* Add @ns to the absolute time @t. */
static void timespec_add(struct timespec *t, long ns)
{
	t->tv_nsec += ns;
	while (t->tv_nsec >= 1000000000L) {
		t->tv_nsec -= 1000000000L;
		t->tv_sec++;
	}
}

static void sleep_until(const struct timespec *t)
{
	while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, t, NULL) ==
	       EINTR)
		;
}

/* ======================================================================== */
/* Faulting threads, shared by thrash, contention and bigregion              */
/* ======================================================================== */

struct faulter {
	struct bench_team *team;
	struct vmr_space *space;
	size_t page;
	/* Random faults (contention, bigregion): NR_ADDRS pages of a region. */
	uintptr_t start;
	const uint32_t *idx;
	/* thrash: the thread's slot and the files. */
	uintptr_t slot;
	size_t files, file_pages;
	struct bench_pager *pg;
	uint64_t rng;
	struct bench_pager_ctx pc; /* the handler's counters (vmf->ctx) */
	uint64_t faults, rounds, bad;
	uint64_t *lat;
	size_t nlat, cap;
	uint64_t *wlat; /* thrash: each vmr_map() and vmr_unmap() */
	size_t nwlat, wcap;
	uint64_t t0, t1;
} __attribute__((aligned(64)));

static inline void fault_one(struct faulter *f, uintptr_t addr)
{
	uint64_t t = bench_now_ns();
	vmr_fault_t res;

	if (vmr_handle_fault(f->space, addr, FAULT_FLAGS, &f->pc, &res))
		bench_die("vmr_handle_fault", EINVAL);
	bench_push_u64(&f->lat, &f->nlat, &f->cap, bench_now_ns() - t);
	f->faults++;
	if (res & ~VMR_FAULT_MAJOR)
		f->bad++;
}

/* contention, bigregion: faults at random pages of one region. */
static void *random_faulter_main(void *arg)
{
	struct faulter *f = arg;
	uint64_t k = 0;

	vmr_space_register_thread(f->space);
	pthread_barrier_wait(&f->team->start);
	f->t0 = bench_now_ns();
	do {
		fault_one(f, f->start + (uintptr_t)f->idx[k++ & (NR_ADDRS - 1)] *
						f->page);
	} while (!bench_team_stopped(f->team));
	f->t1 = bench_now_ns();
	vmr_space_unregister_thread(f->space);
	return NULL;
}

/* thrash: map a file, read it in order, unmap it; again. */
static void *thrash_faulter_main(void *arg)
{
	struct faulter *f = arg;
	size_t len = f->file_pages * f->page, p, file;
	uint64_t t;
	int err;

	vmr_space_register_thread(f->space);
	pthread_barrier_wait(&f->team->start);
	f->t0 = bench_now_ns();
	do {
		file = (size_t)(bench_rand(&f->rng) % f->files);
		t = bench_now_ns();
		bench_map_region(f->space, f->slot, len, file * len,
				 &bench_pager_ops, f->pg, 0);
		bench_push_u64(&f->wlat, &f->nwlat, &f->wcap,
			       bench_now_ns() - t);
		for (p = 0; p < f->file_pages; p++) {
			if (bench_team_stopped(f->team))
				break;
			fault_one(f, f->slot + p * f->page);
		}
		t = bench_now_ns();
		err = vmr_unmap(f->space, f->slot, len);
		if (err)
			bench_die("vmr_unmap", -err);
		bench_push_u64(&f->wlat, &f->nwlat, &f->wcap,
			       bench_now_ns() - t);
		if (p == f->file_pages)
			f->rounds++;
	} while (!bench_team_stopped(f->team));
	f->t1 = bench_now_ns();
	vmr_space_unregister_thread(f->space);
	return NULL;
}

/* What a run of faulters did, all threads together. */
struct fault_sum {
	uint64_t faults, rounds, bad;
	unsigned int starved; /* threads that finished no fault */
	struct bench_pager_ctx pc;
	uint64_t first, last; /* span */
	uint64_t *lat;        /* every fault's latency, sorted */
	size_t nlat;
};

static void faulters_sum(struct faulter *f, unsigned int n,
			 struct fault_sum *s)
{
	unsigned int t;

	memset(s, 0, sizeof(*s));
	s->first = UINT64_MAX;
	for (t = 0; t < n; t++) {
		/* A thread starved for the whole run is a finding, not an
		 * error: counted, and reported on stderr. */
		if (!f[t].faults)
			s->starved++;
		s->first = f[t].t0 < s->first ? f[t].t0 : s->first;
		s->last = f[t].t1 > s->last ? f[t].t1 : s->last;
		s->faults += f[t].faults;
		s->rounds += f[t].rounds;
		s->bad += f[t].bad;
		bench_pager_ctx_add(&s->pc, &f[t].pc);
		s->nlat += f[t].nlat;
	}
	s->lat = bench_alloc(s->nlat * sizeof(*s->lat));
	for (s->nlat = 0, t = 0; t < n; t++) {
		memcpy(s->lat + s->nlat, f[t].lat, f[t].nlat * sizeof(*s->lat));
		s->nlat += f[t].nlat;
		free(f[t].lat);
		f[t].lat = NULL;
	}
	s->pc.bad += s->bad;
	if (s->starved)
		fprintf(stderr, "bench_scenarios: %u of %u faulting threads "
			"finished no fault in the run\n", s->starved, n);
}

static double span_s(const struct fault_sum *s)
{
	return (double)(s->last - s->first) / 1e9;
}

/* Nearest-rank percentile of the latencies (sorted by the first call). */
static double lat_pct(struct fault_sum *s, double p)
{
	return (double)bench_percentile_u64(s->lat, s->nlat, p);
}

/* Per-thread arrays of NR_ADDRS random page indices below @pages. */
static uint32_t **random_pages(unsigned int threads, size_t pages,
			       uint64_t seed)
{
	uint32_t **idx = bench_alloc(threads * sizeof(*idx));
	uint64_t rng = seed;

	for (unsigned int t = 0; t < threads; t++) {
		idx[t] = bench_alloc(NR_ADDRS * sizeof(uint32_t));
		for (unsigned int i = 0; i < NR_ADDRS; i++)
			idx[t][i] = (uint32_t)(bench_rand(&rng) % pages);
	}
	return idx;
}

static void free_pages_idx(uint32_t **idx, unsigned int threads)
{
	for (unsigned int t = 0; t < threads; t++)
		free(idx[t]);
	free(idx);
}

/* The raw counters every retry scenario reports. */
#define RAW_COUNTERS(X)                                                        \
	X(vma_lock_success) X(vma_lock_abort) X(vma_lock_retry)                \
	X(vma_lock_miss) X(vma_retries) X(vma_retries_exhausted)               \
	X(space_lock_faults) X(space_retries) X(retry_disallowed)              \
	X(result_major) X(page_wait_sleeps) X(page_reads) X(page_rereads)      \
	X(space_read_locks) X(space_read_waits) X(space_write_locks)           \
	X(space_write_waits)

#define RAW_NAME(c) #c,
#define RAW_COUNT(c) +1
#define NR_RAW (0 RAW_COUNTERS(RAW_COUNT))

static const char *const raw_names[NR_RAW] = { RAW_COUNTERS(RAW_NAME) };

static void raw_out(const struct vmr_stats *st, double *out)
{
	unsigned int k = 0;

#define RAW_OUT(c) out[k++] = (double)st->c;
	RAW_COUNTERS(RAW_OUT)
#undef RAW_OUT
}

/* Figures of the handlers' counters, after the scenario's own. */
#define PAGER_FIGURES(X)                                                       \
	X(io_retries) X(wait_retries) X(wait_evicted_pct) X(evictions)        \
	X(io_mean_ns) X(starved_threads)
#define PAGER_NAME(c) #c,
#define NR_PAGER (0 PAGER_FIGURES(RAW_COUNT))

static void pager_out(const struct fault_sum *s, double *out)
{
	out[0] = (double)s->pc.io_retries;
	out[1] = (double)s->pc.wait_retries;
	out[2] = pct((double)s->pc.wait_rereads, (double)s->pc.wait_retries);
	out[3] = (double)s->pc.evictions;
	out[4] = ratio((double)s->pc.io_ns, (double)s->pc.reads);
	out[5] = (double)s->starved;
}

/* ======================================================================== */
/* The driver: variants interleaved, medians, ratios vs retry_space          */
/* ======================================================================== */

struct scenario {
	const char *name;
	unsigned int nr_own; /* scenario's own metrics, then pager, raw */
	const char *const *own_names;
	const char *const *headline; /* NULL-terminated: ratio metrics */
	unsigned int (*threads)(const struct opts *o);
	/* One run: fills out[nr_own + NR_PAGER + NR_RAW]. */
	void (*run)(const struct variant *v, const struct opts *o,
		    uint64_t seed, double *out);
};

static const char *const pager_names[NR_PAGER] = {
	PAGER_FIGURES(PAGER_NAME)
};

static const char *metric_name(const struct scenario *sc, unsigned int k)
{
	if (k < sc->nr_own)
		return sc->own_names[k];
	k -= sc->nr_own;
	if (k < NR_PAGER)
		return pager_names[k];
	return raw_names[k - NR_PAGER];
}

static void run_scenario(const struct scenario *sc, const struct opts *o)
{
	unsigned int nr = sc->nr_own + NR_PAGER + NR_RAW, i, j, k;
	double (*s)[MAX_METRICS][MAX_REPS] =
		bench_alloc(NR_VARIANTS * sizeof(*s));
	double med[NR_VARIANTS][MAX_METRICS], v[MAX_REPS], out[MAX_METRICS];
	unsigned int threads = sc->threads(o);
	uint64_t rng = o->seed;
	char metric[96];
	int rep;

	if (nr > MAX_METRICS)
		bench_die("too many metrics", E2BIG);
	for (rep = 0; rep < o->reps; rep++) {
		for (j = 0; j < NR_VARIANTS; j++) {
			i = (j + (unsigned int)rep) % NR_VARIANTS;
			fprintf(stderr, "bench_scenarios: %s, repetition %d/%d, "
				"%s\n", sc->name, rep + 1, o->reps,
				variants[i].name);
			for (k = 0; k < nr; k++)
				out[k] = NAN;
			sc->run(&variants[i], o, bench_rand(&rng), out);
			for (k = 0; k < nr; k++)
				s[i][k][rep] = out[k];
		}
	}
	for (i = 0; i < NR_VARIANTS; i++) {
		for (k = 0; k < nr; k++) {
			memcpy(v, s[i][k], (size_t)o->reps * sizeof(double));
			med[i][k] = bench_median_or_nan(v, (size_t)o->reps);
			/* A raw counter the scenario reports already. */
			for (j = 0; j < k && strcmp(metric_name(sc, j),
						    metric_name(sc, k));
			     j++)
				;
			if (j == k)
				emit(sc->name, variants[i].name, threads,
				     metric_name(sc, k), med[i][k]);
		}
	}
	for (i = 0; i < NR_VARIANTS; i++) {
		for (const char *const *h = sc->headline; *h; h++) {
			for (k = 0; k < nr && strcmp(metric_name(sc, k), *h);
			     k++)
				;
			if (k == nr)
				bench_die("unknown headline metric", EINVAL);
			snprintf(metric, sizeof(metric), "%s_vs_retry_space",
				 *h);
			emit(sc->name, variants[i].name, threads, metric,
			     ratio(med[i][k], med[V_RETRY_SPACE][k]));
		}
	}
	free(s);
}

/* ======================================================================== */
/* thrash                                                                    */
/* ======================================================================== */

enum {
	TH_ROUNDS_PER_S,
	TH_EVICTED_RETRY_PCT,
	TH_REREADS,
	TH_FAULTS_PER_S,
	TH_FAULT_P50,
	TH_FAULT_P99,
	TH_COMPLETE_ROUNDS,
	TH_SPACE_READ_WAIT_NS,
	TH_SPACE_WRITE_WAIT_NS,
	TH_READS_PER_FAULT,
	TH_MAP_P50,
	TH_MAP_P99,
	TH_MAP_MAX,
	NR_TH
};

static const char *const thrash_names[NR_TH] = {
	"rounds_per_s", "evicted_retry_pct", "rereads", "faults_per_s",
	"fault_p50_ns", "fault_p99_ns", "complete_rounds",
	"space_read_wait_ns", "space_write_wait_ns", "reads_per_fault",
	"map_unmap_p50_ns", "map_unmap_p99_ns", "map_unmap_max_ns",
};

static const char *const thrash_headline[] = {
	"rounds_per_s", "evicted_retry_pct", "rereads", "reads_per_fault",
	"fault_p99_ns", NULL,
};

static unsigned int thrash_threads(const struct opts *o)
{
	return o->threads;
}

static void thrash_run(const struct variant *v, const struct opts *o,
		       uint64_t seed, double *out)
{
	unsigned int n = o->threads, t;
	struct faulter *f = bench_alloc(n * sizeof(*f));
	struct bench_member *m = bench_alloc(n * sizeof(*m));
	struct bench_pager *pg = bench_alloc(sizeof(*pg));
	size_t page = bench_page_size();
	struct vmr_space *space = variant_space(v);
	uintptr_t base = (uintptr_t)BASE_PAGE * page;
	struct bench_team tm;
	struct fault_sum s;
	struct vmr_stats st;
	uint64_t rng = seed, *wlat;
	size_t nw;

	bench_pager_init(pg, space, page, o->files * o->file_pages,
			 o->cache_pages, (uint64_t)o->io_us * 1000, v->pin);
	bench_pager_fill(pg, &rng);
	vmr_space_stats_reset(space);
	for (t = 0; t < n; t++) {
		memset(&f[t], 0, sizeof(f[t]));
		f[t].team = &tm;
		f[t].space = space;
		f[t].page = page;
		f[t].slot = base + (uintptr_t)t * (o->file_pages + 1) * page;
		f[t].files = o->files;
		f[t].file_pages = o->file_pages;
		f[t].pg = pg;
		f[t].rng = bench_rand(&rng);
		f[t].pc.rng = bench_rand(&rng);
		m[t].fn = thrash_faulter_main;
		m[t].arg = &f[t];
	}
	bench_team_run(&tm, m, n, o->ms);
	vmr_space_stats(space, &st, sizeof(st));
	faulters_sum(f, n, &s);
	bench_pager_check(v->name, &st, s.faults, &s.pc);

	out[TH_ROUNDS_PER_S] =
		(double)s.faults / (double)o->file_pages / span_s(&s);
	out[TH_EVICTED_RETRY_PCT] =
		pct((double)s.pc.io_rereads, (double)s.pc.io_retries);
	out[TH_REREADS] = (double)st.page_rereads;
	out[TH_FAULTS_PER_S] = (double)s.faults / span_s(&s);
	out[TH_FAULT_P50] = lat_pct(&s, 50);
	out[TH_FAULT_P99] = lat_pct(&s, 99);
	out[TH_COMPLETE_ROUNDS] = (double)s.rounds;
	out[TH_SPACE_READ_WAIT_NS] = (double)st.space_read_wait_ns;
	out[TH_SPACE_WRITE_WAIT_NS] = (double)st.space_write_wait_ns;
	out[TH_READS_PER_FAULT] = ratio((double)st.page_reads, (double)s.faults);
	for (nw = 0, t = 0; t < n; t++)
		nw += f[t].nwlat;
	wlat = bench_alloc(nw * sizeof(*wlat));
	for (nw = 0, t = 0; t < n; t++) {
		memcpy(wlat + nw, f[t].wlat, f[t].nwlat * sizeof(*wlat));
		nw += f[t].nwlat;
		free(f[t].wlat);
	}
	out[TH_MAP_P50] = (double)bench_percentile_u64(wlat, nw, 50);
	out[TH_MAP_P99] = (double)bench_percentile_u64(wlat, nw, 99);
	out[TH_MAP_MAX] = (double)bench_percentile_u64(wlat, nw, 100);
	free(wlat);
	pager_out(&s, out + NR_TH);
	raw_out(&st, out + NR_TH + NR_PAGER);

	bench_pager_fini(pg);
	space_destroy(space);
	free(s.lat);
	free(pg);
	free(m);
	free(f);
}

static const struct scenario thrash = {
	"thrash", NR_TH, thrash_names, thrash_headline, thrash_threads,
	thrash_run,
};

/* ======================================================================== */
/* contention                                                                */
/* ======================================================================== */

#define MAP_SLOTS 16u /* each mapper's slots, used in turn */

struct mapper {
	struct bench_team *team;
	struct vmr_space *space;
	uintptr_t area;
	size_t len, stride;
	long pause_ns;
	uint64_t ops, t0, t1;
} __attribute__((aligned(64)));

static void *mapper_main(void *arg)
{
	struct mapper *mp = arg;
	unsigned int j = 0;
	uintptr_t a;
	int err;

	vmr_space_register_thread(mp->space);
	pthread_barrier_wait(&mp->team->start);
	mp->t0 = bench_now_ns();
	do {
		a = mp->area + (uintptr_t)j * mp->stride;
		bench_map_region(mp->space, a, mp->len, 0, NULL, NULL, 0);
		err = vmr_unmap(mp->space, a, mp->len);
		if (err)
			bench_die("vmr_unmap (mapper)", -err);
		mp->ops += 2;
		j = (j + 1) % MAP_SLOTS;
		if (mp->pause_ns)
			bench_sleep_ns((uint64_t)mp->pause_ns);
	} while (!bench_team_stopped(mp->team));
	mp->t1 = bench_now_ns();
	vmr_space_unregister_thread(mp->space);
	return NULL;
}

enum {
	CO_SPACE_READ_LOCKS,
	CO_SPACE_READ_WAIT_NS,
	CO_SPACE_READ_WAIT_AVG,
	CO_SPACE_READ_WAIT_P99,
	CO_SPACE_WRITE_LOCKS,
	CO_SPACE_WRITE_WAIT_NS,
	CO_SPACE_WRITE_WAIT_AVG,
	CO_SPACE_WRITE_WAIT_P99,
	CO_FAULTS_PER_S,
	CO_MAPPER_OPS_PER_S,
	CO_FAULT_P50,
	CO_FAULT_P99,
	CO_EVICTED_RETRY_PCT,
	NR_CO
};

static const char *const contention_names[NR_CO] = {
	"space_read_locks", "space_read_wait_ns", "space_read_wait_avg_ns",
	"space_read_wait_p99_ns", "space_write_locks", "space_write_wait_ns",
	"space_write_wait_avg_ns", "space_write_wait_p99_ns", "faults_per_s",
	"mapper_ops_per_s", "fault_p50_ns", "fault_p99_ns",
	"evicted_retry_pct",
};

static const char *const contention_headline[] = {
	"space_read_locks", "space_read_wait_ns", "space_write_wait_ns",
	"faults_per_s", NULL,
};

static unsigned int contention_threads(const struct opts *o)
{
	return o->cont_threads;
}

static void contention_run(const struct variant *v, const struct opts *o,
			   uint64_t seed, double *out)
{
	unsigned int n = o->cont_threads, nm = o->mappers, t;
	struct faulter *f = bench_alloc(n * sizeof(*f));
	struct mapper *mp = bench_alloc((nm ? nm : 1) * sizeof(*mp));
	struct bench_member *m = bench_alloc((n + nm) * sizeof(*m));
	struct bench_pager *pg = bench_alloc(sizeof(*pg));
	size_t page = bench_page_size();
	struct vmr_space *space = variant_space(v);
	uintptr_t start = (uintptr_t)BASE_PAGE * page, area;
	size_t stride = (o->map_pages + 1) * page;
	uint32_t **idx = random_pages(n, o->cont_pages, seed);
	uint64_t rng = seed ^ 0xc0de, mops = 0, mspan = 0;
	struct bench_team tm;
	struct fault_sum s;
	struct vmr_stats st;

	bench_pager_init(pg, space, page, o->cont_pages, o->cont_cache,
			 (uint64_t)o->io_us * 1000, v->pin);
	bench_map_region(space, start, o->cont_pages * page, 0,
			 &bench_pager_ops, pg, 0);
	bench_pager_fill(pg, &rng);
	vmr_space_stats_reset(space);
	for (t = 0; t < n; t++) {
		memset(&f[t], 0, sizeof(f[t]));
		f[t].team = &tm;
		f[t].space = space;
		f[t].page = page;
		f[t].start = start;
		f[t].idx = idx[t];
		f[t].pc.rng = bench_rand(&rng);
		m[t].fn = random_faulter_main;
		m[t].arg = &f[t];
	}
	area = start + (o->cont_pages + GAP_PAGES) * page;
	for (t = 0; t < nm; t++) {
		memset(&mp[t], 0, sizeof(mp[t]));
		mp[t].team = &tm;
		mp[t].space = space;
		mp[t].area = area + (uintptr_t)t * MAP_SLOTS * stride;
		mp[t].len = o->map_pages * page;
		mp[t].stride = stride;
		mp[t].pause_ns = o->mapper_us * 1000;
		m[n + t].fn = mapper_main;
		m[n + t].arg = &mp[t];
	}
	bench_team_run(&tm, m, n + nm, o->ms);
	vmr_space_stats(space, &st, sizeof(st));
	faulters_sum(f, n, &s);
	bench_pager_check(v->name, &st, s.faults, &s.pc);
	for (t = 0; t < nm; t++) {
		mops += mp[t].ops;
		mspan = mp[t].t1 - mp[t].t0 > mspan ? mp[t].t1 - mp[t].t0 :
						      mspan;
	}

	out[CO_SPACE_READ_LOCKS] = (double)st.space_read_locks;
	out[CO_SPACE_READ_WAIT_NS] = (double)st.space_read_wait_ns;
	out[CO_SPACE_READ_WAIT_AVG] = ratio((double)st.space_read_wait_ns,
					    (double)st.space_read_locks);
	out[CO_SPACE_READ_WAIT_P99] =
		(double)vmr_hist_percentile(st.space_read_wait_hist, 99);
	out[CO_SPACE_WRITE_LOCKS] = (double)st.space_write_locks;
	out[CO_SPACE_WRITE_WAIT_NS] = (double)st.space_write_wait_ns;
	out[CO_SPACE_WRITE_WAIT_AVG] = ratio((double)st.space_write_wait_ns,
					     (double)st.space_write_locks);
	out[CO_SPACE_WRITE_WAIT_P99] =
		(double)vmr_hist_percentile(st.space_write_wait_hist, 99);
	out[CO_FAULTS_PER_S] = (double)s.faults / span_s(&s);
	out[CO_MAPPER_OPS_PER_S] = mspan ? (double)mops * 1e9 / (double)mspan :
					   0;
	out[CO_FAULT_P50] = lat_pct(&s, 50);
	out[CO_FAULT_P99] = lat_pct(&s, 99);
	out[CO_EVICTED_RETRY_PCT] =
		pct((double)s.pc.io_rereads, (double)s.pc.io_retries);
	pager_out(&s, out + NR_CO);
	raw_out(&st, out + NR_CO + NR_PAGER);

	bench_pager_fini(pg);
	space_destroy(space);
	free_pages_idx(idx, n);
	free(s.lat);
	free(pg);
	free(m);
	free(mp);
	free(f);
}

static const struct scenario contention = {
	"contention", NR_CO, contention_names, contention_headline,
	contention_threads, contention_run,
};

/* ======================================================================== */
/* bigregion                                                                 */
/* ======================================================================== */

#define BIG_SMALL 32u       /* small regions before the big one */
#define BIG_SMALL_PAGES 16u /* each, with a one-page hole after it */

struct big_writer {
	struct bench_team *team;
	struct vmr_space *space;
	struct bench_pager *pg;
	uintptr_t lo, hi;         /* fork: everything */
	uintptr_t big, big_len;   /* protect: the big region */
	size_t sub_len, page;
	long period_ns, hold_ns;
	uint64_t rng;
	uint64_t ops;
	uint64_t *lat, *lat2; /* protect/fork latencies; merge latencies */
	size_t nlat, cap, nlat2, cap2;
} __attribute__((aligned(64)));

static void *protect_main(void *arg)
{
	struct big_writer *w = arg;
	size_t subs = w->big_len / w->sub_len, k;
	struct timespec next;
	uint64_t t0;
	uintptr_t a;
	int err;

	vmr_space_register_thread(w->space);
	pthread_barrier_wait(&w->team->start);
	clock_gettime(CLOCK_MONOTONIC, &next);
	while (!bench_team_stopped(w->team)) {
		timespec_add(&next, w->period_ns / 2);
		sleep_until(&next);
		k = (size_t)(bench_rand(&w->rng) % subs);
		a = w->big + k * w->sub_len;
		t0 = bench_now_ns();
		err = vmr_protect(w->space, a, w->sub_len, VMR_PROT_READ);
		if (err)
			bench_die("vmr_protect", -err);
		bench_push_u64(&w->lat, &w->nlat, &w->cap, bench_now_ns() - t0);

		timespec_add(&next, w->period_ns - w->period_ns / 2);
		sleep_until(&next);
		/* The kernel would merge the pieces back; we map it anew. */
		t0 = bench_now_ns();
		bench_map_region(w->space, w->big, w->big_len, 0,
				 &bench_pager_ops, w->pg, VMR_MAP_REPLACE);
		bench_push_u64(&w->lat2, &w->nlat2, &w->cap2,
			       bench_now_ns() - t0);
		w->ops += 2;
	}
	vmr_space_unregister_thread(w->space);
	return NULL;
}

static void *fork_main(void *arg)
{
	struct big_writer *w = arg;
	struct timespec next;
	uint64_t t0, t1;
	int err;

	vmr_space_register_thread(w->space);
	pthread_barrier_wait(&w->team->start);
	clock_gettime(CLOCK_MONOTONIC, &next);
	while (!bench_team_stopped(w->team)) {
		timespec_add(&next, w->period_ns);
		sleep_until(&next);
		t0 = bench_now_ns();
		err = vmr_space_write_lock(w->space);
		if (err)
			bench_die("vmr_space_write_lock", -err);
		err = vmr_range_write_lock(w->space, w->lo, w->hi);
		if (err)
			bench_die("vmr_range_write_lock", -err);
		t1 = bench_now_ns();
		bench_push_u64(&w->lat, &w->nlat, &w->cap, t1 - t0);
		bench_spin_until(t1 + (uint64_t)w->hold_ns);
		err = vmr_space_write_unlock(w->space);
		if (err)
			bench_die("vmr_space_write_unlock", -err);
		w->ops++;
	}
	vmr_space_unregister_thread(w->space);
	return NULL;
}

enum {
	BR_FORK_P50,
	BR_FORK_P99,
	BR_PROTECT_P50,
	BR_PROTECT_P99,
	BR_MERGE_P50,
	BR_MERGE_P99,
	BR_FAULT_P50,
	BR_FAULT_P99,
	BR_FAULT_P999,
	BR_FAULTS_PER_S,
	BR_FORK_OPS,
	BR_PROTECT_OPS,
	BR_EVICTED_RETRY_PCT,
	BR_SPACE_READ_WAIT_NS,
	NR_BR
};

static const char *const bigregion_names[NR_BR] = {
	"fork_lock_p50_ns", "fork_lock_p99_ns", "protect_lat_p50_ns",
	"protect_lat_p99_ns", "merge_lat_p50_ns", "merge_lat_p99_ns",
	"fault_p50_ns", "fault_p99_ns", "fault_p999_ns", "faults_per_s",
	"fork_ops", "protect_ops", "evicted_retry_pct", "space_read_wait_ns",
};

static const char *const bigregion_headline[] = {
	"fork_lock_p99_ns", "protect_lat_p99_ns", "fault_p99_ns",
	"faults_per_s", NULL,
};

static unsigned int bigregion_threads(const struct opts *o)
{
	return o->big_threads;
}

static void bigregion_run(const struct variant *v, const struct opts *o,
			  uint64_t seed, double *out)
{
	unsigned int n = o->big_threads, t;
	struct faulter *f = bench_alloc(n * sizeof(*f));
	struct bench_member *m = bench_alloc((n + 2) * sizeof(*m));
	struct big_writer *w = bench_alloc(2 * sizeof(*w));
	struct bench_pager *pg = bench_alloc(sizeof(*pg));
	size_t page = bench_page_size();
	struct vmr_space *space = variant_space(v);
	uintptr_t lo = (uintptr_t)BASE_PAGE * page, big;
	uint32_t **idx = random_pages(n, o->big_pages, seed);
	uint64_t rng = seed ^ 0xb16;
	struct bench_team tm;
	struct fault_sum s;
	struct vmr_stats st;

	for (t = 0; t < BIG_SMALL; t++)
		bench_map_region(space,
				 lo + (uintptr_t)t * (BIG_SMALL_PAGES + 1) * page,
				 BIG_SMALL_PAGES * page, 0, NULL, NULL, 0);
	big = lo + (uintptr_t)BIG_SMALL * (BIG_SMALL_PAGES + 1) * page;
	bench_pager_init(pg, space, page, o->big_pages, o->big_cache,
			 (uint64_t)o->io_us * 1000, v->pin);
	bench_map_region(space, big, o->big_pages * page, 0, &bench_pager_ops,
			 pg, 0);
	bench_pager_fill(pg, &rng);
	vmr_space_stats_reset(space);
	for (t = 0; t < n; t++) {
		memset(&f[t], 0, sizeof(f[t]));
		f[t].team = &tm;
		f[t].space = space;
		f[t].page = page;
		f[t].start = big;
		f[t].idx = idx[t];
		f[t].pc.rng = bench_rand(&rng);
		m[t].fn = random_faulter_main;
		m[t].arg = &f[t];
	}
	memset(w, 0, 2 * sizeof(*w));
	for (t = 0; t < 2; t++) {
		w[t].team = &tm;
		w[t].space = space;
		w[t].pg = pg;
		w[t].lo = lo;
		w[t].hi = big + o->big_pages * page;
		w[t].big = big;
		w[t].big_len = o->big_pages * page;
		w[t].sub_len = o->protect_pages * page;
		w[t].page = page;
		w[t].rng = bench_rand(&rng);
	}
	w[0].period_ns = o->protect_us * 1000;
	w[1].period_ns = o->fork_us * 1000;
	w[1].hold_ns = o->fork_hold_us * 1000;
	m[n].fn = protect_main;
	m[n].arg = &w[0];
	m[n + 1].fn = fork_main;
	m[n + 1].arg = &w[1];
	bench_team_run(&tm, m, n + 2, o->ms);
	vmr_space_stats(space, &st, sizeof(st));
	faulters_sum(f, n, &s);
	bench_pager_check(v->name, &st, s.faults, &s.pc);

	out[BR_FORK_P50] = (double)bench_percentile_u64(w[1].lat, w[1].nlat, 50);
	out[BR_FORK_P99] = (double)bench_percentile_u64(w[1].lat, w[1].nlat, 99);
	out[BR_PROTECT_P50] =
		(double)bench_percentile_u64(w[0].lat, w[0].nlat, 50);
	out[BR_PROTECT_P99] =
		(double)bench_percentile_u64(w[0].lat, w[0].nlat, 99);
	out[BR_MERGE_P50] =
		(double)bench_percentile_u64(w[0].lat2, w[0].nlat2, 50);
	out[BR_MERGE_P99] =
		(double)bench_percentile_u64(w[0].lat2, w[0].nlat2, 99);
	out[BR_FAULT_P50] = lat_pct(&s, 50);
	out[BR_FAULT_P99] = lat_pct(&s, 99);
	out[BR_FAULT_P999] = lat_pct(&s, 99.9);
	out[BR_FAULTS_PER_S] = (double)s.faults / span_s(&s);
	out[BR_FORK_OPS] = (double)w[1].ops;
	out[BR_PROTECT_OPS] = (double)w[0].ops;
	out[BR_EVICTED_RETRY_PCT] =
		pct((double)s.pc.io_rereads, (double)s.pc.io_retries);
	out[BR_SPACE_READ_WAIT_NS] = (double)st.space_read_wait_ns;
	pager_out(&s, out + NR_BR);
	raw_out(&st, out + NR_BR + NR_PAGER);

	bench_pager_fini(pg);
	space_destroy(space);
	free_pages_idx(idx, n);
	for (t = 0; t < 2; t++) {
		free(w[t].lat);
		free(w[t].lat2);
	}
	free(s.lat);
	free(pg);
	free(w);
	free(m);
	free(f);
}

static const struct scenario bigregion = {
	"bigregion", NR_BR, bigregion_names, bigregion_headline,
	bigregion_threads, bigregion_run,
};

/* ======================================================================== */
/* scaling                                                                   */
/* ======================================================================== */

#define SC_SMALL 1024u
#define SC_SMALL_PAGES 64u
#define SC_BIG_PAGES 65536u
#define SC_BATCH 64 /* faults between looks at the stop flag */
#define MAX_COUNTS 16

enum sc_impl { SI_VMR, SI_VMR_RANGE, SI_RWLOCK, SI_REFCOUNT, SI_CK, NR_SI };

static const char *const sc_impl_names[NR_SI] = {
	"vmr", "vmr_range", "rwlock", "refcount", "ck",
};

enum sc_case { SC_DISJOINT, SC_SHARED, NR_SC };

static const char *const sc_case_names[NR_SC] = {
	"scaling_disjoint", "scaling_shared",
};

struct sc_world {
	size_t page;
	uintptr_t small_base, big_start;
	struct vmr_space *space;       /* default config: vmr and baselines */
	struct vmr_space *range_space; /* VMR_LOCK_RANGE */
	struct bench_side *side;       /* SC_SMALL + 1 */
	pthread_rwlock_t rwlock;
	uintptr_t *addrs[NR_SC][MAX_THREADS];
};

struct sc_worker {
	struct bench_team *team;
	struct sc_world *w;
	enum sc_impl impl;
	const uintptr_t *addrs;
	unsigned int cpu;
	uint64_t ops, fallbacks, t0, t1;
} __attribute__((aligned(64)));

/* The baselines' fallback: the space lock for read (lock_mm_and_find_vma()). */
static void sc_fallback(struct vmr_space *space, uintptr_t a,
			uintptr_t page_mask)
{
	int err = vmr_space_read_lock(space);

	if (err)
		bench_die("vmr_space_read_lock", -err);
	if (bench_lookup_fault(space, a, page_mask, FAULT_FLAGS,
			       VMR_FAULT_LOCK_SPACE))
		bench_die("fallback fault failed", EIO);
	vmr_space_read_unlock(space);
}

static uint64_t sc_loop(struct sc_worker *wk)
{
	struct sc_world *w = wk->w;
	struct vmr_space *space =
		wk->impl == SI_VMR_RANGE ? w->range_space : w->space;
	uintptr_t page_mask = w->page - 1, a;
	const uintptr_t *addrs = wk->addrs;
	uint64_t ops = 0, fallbacks = 0;
	struct vmr_region *r;
	struct bench_side *s;
	vmr_fault_t res;
	unsigned int k;
	bool held;

	do {
		for (k = 0; k < SC_BATCH; k++, ops++) {
			a = addrs[ops & (NR_ADDRS - 1)];
			switch (wk->impl) {
			case SI_VMR:
			case SI_VMR_RANGE:
				if (vmr_handle_fault(space, a, FAULT_FLAGS,
						     NULL, &res) || res)
					bench_die("vmr_handle_fault", EIO);
				break;
			case SI_RWLOCK:
				pthread_rwlock_rdlock(&w->rwlock);
				res = bench_lookup_fault(space, a, page_mask,
							 FAULT_FLAGS,
							 VMR_FAULT_LOCK_SPACE);
				pthread_rwlock_unlock(&w->rwlock);
				if (res)
					bench_die("rwlock fault", EIO);
				break;
			case SI_REFCOUNT:
				urcu_memb_read_lock();
				r = bench_lookup(space, a);
				if (!r)
					bench_die("lookup missed", ENOENT);
				s = vmr_region_private(r);
				held = bench_refcount_read_trylock(s);
				urcu_memb_read_unlock();
				if (__builtin_expect(!held, 0)) {
					sc_fallback(space, a, page_mask);
					fallbacks++;
					break;
				}
				res = bench_call_fault(space, r, a, page_mask,
						       FAULT_FLAGS,
						       VMR_FAULT_LOCK_VMA);
				bench_refcount_read_unlock(s);
				if (res)
					bench_die("refcount fault", EIO);
				break;
			default:
				urcu_memb_read_lock();
				r = bench_lookup(space, a);
				if (!r)
					bench_die("lookup missed", ENOENT);
				s = vmr_region_private(r);
				ck_rwlock_read_lock(&s->ck);
				urcu_memb_read_unlock();
				if (__builtin_expect(vmr_region_is_detached(r),
						     0)) {
					ck_rwlock_read_unlock(&s->ck);
					sc_fallback(space, a, page_mask);
					fallbacks++;
					break;
				}
				res = bench_call_fault(space, r, a, page_mask,
						       FAULT_FLAGS,
						       VMR_FAULT_LOCK_VMA);
				ck_rwlock_read_unlock(&s->ck);
				if (res)
					bench_die("ck fault", EIO);
				break;
			}
		}
	} while (!bench_team_stopped(wk->team));
	wk->fallbacks = fallbacks;
	return ops;
}

static void *sc_main(void *arg)
{
	struct sc_worker *wk = arg;

	bench_pin(wk->cpu);
	vmr_space_register_thread(wk->w->space);
	pthread_barrier_wait(&wk->team->start);
	wk->t0 = bench_now_ns();
	wk->ops = sc_loop(wk);
	wk->t1 = bench_now_ns();
	vmr_space_unregister_thread(wk->w->space);
	return NULL;
}

static struct vmr_space *sc_space(struct sc_world *w, bool range)
{
	struct vmr_space_config cfg;
	struct vmr_space *space;
	unsigned int i;
	int err;

	memset(&cfg, 0, sizeof(cfg));
	cfg.granularity = VMR_LOCK_RANGE;
	err = range ? vmr_space_create(&cfg, sizeof(cfg), &space) :
		      vmr_space_create(NULL, 0, &space);
	if (err)
		bench_die("vmr_space_create", -err);
	for (i = 0; i < SC_SMALL; i++)
		bench_map_region(space,
				 w->small_base + (uintptr_t)i *
						 (SC_SMALL_PAGES + 1) * w->page,
				 SC_SMALL_PAGES * w->page, 0, &bench_nop_ops,
				 &w->side[i], 0);
	bench_map_region(space, w->big_start, SC_BIG_PAGES * w->page, 0,
			 &bench_nop_ops, &w->side[SC_SMALL], 0);
	return space;
}

static struct sc_world *sc_world_create(unsigned int max_threads,
					uint64_t seed)
{
	struct sc_world *w = bench_alloc(sizeof(*w));
	uint64_t rng = seed;
	uintptr_t base;
	unsigned int t, i;
	int err;

	memset(w, 0, sizeof(*w));
	w->page = bench_page_size();
	w->small_base = (uintptr_t)BASE_PAGE * w->page;
	w->big_start = w->small_base +
		       ((uintptr_t)SC_SMALL * (SC_SMALL_PAGES + 1) + GAP_PAGES) *
			       w->page;
	w->side = bench_alloc((SC_SMALL + 1) * sizeof(*w->side));
	for (i = 0; i <= SC_SMALL; i++)
		bench_side_init(&w->side[i], true);
	err = bench_rwlock_init(&w->rwlock);
	if (err)
		bench_die("pthread_rwlock_init", err);
	w->space = sc_space(w, false);
	w->range_space = sc_space(w, true);
	for (t = 0; t < max_threads; t++) {
		/* Thread t's own small region, spread over them. */
		base = w->small_base + (uintptr_t)((t * 37u) % SC_SMALL) *
					       (SC_SMALL_PAGES + 1) * w->page;
		w->addrs[SC_DISJOINT][t] =
			bench_alloc(NR_ADDRS * sizeof(uintptr_t));
		w->addrs[SC_SHARED][t] =
			bench_alloc(NR_ADDRS * sizeof(uintptr_t));
		for (i = 0; i < NR_ADDRS; i++) {
			w->addrs[SC_DISJOINT][t][i] =
				base + (uintptr_t)(bench_rand(&rng) %
						   (SC_SMALL_PAGES * w->page));
			w->addrs[SC_SHARED][t][i] =
				w->big_start +
				(uintptr_t)(bench_rand(&rng) %
					    (SC_BIG_PAGES * w->page));
		}
	}
	return w;
}

static void sc_world_destroy(struct sc_world *w)
{
	space_destroy(w->space);
	space_destroy(w->range_space);
	pthread_rwlock_destroy(&w->rwlock);
	for (unsigned int c = 0; c < NR_SC; c++)
		for (unsigned int t = 0; t < MAX_THREADS; t++)
			free(w->addrs[c][t]);
	free(w->side);
	free(w);
}

/* One timed run; returns ops_per_s. */
static double sc_run(struct sc_world *w, enum sc_case c, enum sc_impl impl,
		     unsigned int threads, long ms)
{
	struct sc_worker *wk = bench_alloc(threads * sizeof(*wk));
	struct bench_member *m = bench_alloc(threads * sizeof(*m));
	uint64_t first = UINT64_MAX, last = 0, ops = 0;
	struct bench_team tm;
	unsigned int t;

	for (t = 0; t < threads; t++) {
		memset(&wk[t], 0, sizeof(wk[t]));
		wk[t].team = &tm;
		wk[t].w = w;
		wk[t].impl = impl;
		wk[t].addrs = w->addrs[c][t];
		wk[t].cpu = t;
		m[t].fn = sc_main;
		m[t].arg = &wk[t];
	}
	bench_team_run(&tm, m, threads, ms);
	for (t = 0; t < threads; t++) {
		if (!wk[t].ops || wk[t].t1 <= wk[t].t0)
			bench_die("a thread did no work", EIO);
		if (wk[t].fallbacks)
			fprintf(stderr, "bench_scenarios: %s: %s fell back %llu "
				"times with no writer\n", sc_case_names[c],
				sc_impl_names[impl],
				(unsigned long long)wk[t].fallbacks);
		ops += wk[t].ops;
		first = wk[t].t0 < first ? wk[t].t0 : first;
		last = wk[t].t1 > last ? wk[t].t1 : last;
	}
	free(m);
	free(wk);
	return (double)ops * 1e9 / (double)(last - first);
}

static void run_scaling(const struct opts *o)
{
	unsigned int counts[MAX_COUNTS], nc = 0, n, c, k, j, i, b;
	double (*s)[MAX_COUNTS][NR_SI][MAX_REPS] =
		bench_alloc(NR_SC * sizeof(*s));
	double med[MAX_COUNTS][NR_SI];
	struct sc_world *w = sc_world_create(o->max_threads, o->seed);
	char metric[64];
	int rep;

	for (n = 1; n < o->max_threads && nc < MAX_COUNTS - 1; n *= 2)
		counts[nc++] = n;
	counts[nc++] = o->max_threads;
	/* Untimed warm-up: caches, page tables, the spaces' thread states. */
	for (c = 0; c < NR_SC; c++)
		for (i = 0; i < NR_SI; i++)
			sc_run(w, (enum sc_case)c, (enum sc_impl)i,
			       o->max_threads,
			       o->scaling_ms < 20 ? o->scaling_ms : 20);
	for (rep = 0; rep < o->reps; rep++) {
		fprintf(stderr, "bench_scenarios: scaling, repetition %d/%d\n",
			rep + 1, o->reps);
		for (c = 0; c < NR_SC; c++)
			for (k = 0; k < nc; k++)
				for (j = 0; j < NR_SI; j++) {
					i = (j + (unsigned int)rep) % NR_SI;
					s[c][k][i][rep] = sc_run(
						w, (enum sc_case)c,
						(enum sc_impl)i, counts[k],
						o->scaling_ms);
				}
	}
	for (c = 0; c < NR_SC; c++) {
		for (k = 0; k < nc; k++)
			for (i = 0; i < NR_SI; i++)
				med[k][i] = bench_median(s[c][k][i],
							 (size_t)o->reps);
		for (k = 0; k < nc; k++) {
			for (i = 0; i < NR_SI; i++) {
				emit(sc_case_names[c], sc_impl_names[i],
				     counts[k], "ops_per_s", med[k][i]);
				emit(sc_case_names[c], sc_impl_names[i],
				     counts[k], "scaling",
				     ratio(med[k][i], med[0][i]));
			}
			for (i = SI_VMR; i <= SI_VMR_RANGE; i++)
				for (b = SI_RWLOCK; b < NR_SI; b++) {
					snprintf(metric, sizeof(metric),
						 "ratio_vs_%s",
						 sc_impl_names[b]);
					emit(sc_case_names[c],
					     sc_impl_names[i], counts[k],
					     metric,
					     ratio(med[k][i], med[k][b]));
				}
		}
	}
	sc_world_destroy(w);
	free(s);
}

/* ======================================================================== */
/* main                                                                      */
/* ======================================================================== */

static bool wanted(const char *list, const char *name)
{
	size_t len = strlen(name);
	const char *p = list;

	if (!strcmp(list, "all"))
		return true;
	while ((p = strstr(p, name))) {
		if ((p == list || p[-1] == ',') &&
		    (p[len] == '\0' || p[len] == ','))
			return true;
		p += len;
	}
	return false;
}

static bool known(const char *list)
{
	static const char *const names[] = { "thrash", "contention",
					     "bigregion", "scaling", "all" };
	const char *p = list;
	size_t len;
	unsigned int i;

	while (*p) {
		len = strcspn(p, ",");
		for (i = 0; i < 5; i++)
			if (strlen(names[i]) == len &&
			    !strncmp(p, names[i], len))
				break;
		if (i == 5 || !len)
			return false;
		p += len;
		if (*p == ',')
			p++;
	}
	return true;
}

static long opt(int argc, char **argv, const char *name, long def, long lo,
		long hi, bool *ok)
{
	long v = bench_opt(argc, argv, name, def);

	if (v < lo || v > hi) {
		fprintf(stderr, "bench_scenarios: --%s=%ld: must be %ld to "
			"%ld\n", name, v, lo, hi);
		*ok = false;
	}
	return v;
}

int main(int argc, char **argv)
{
	long online = sysconf(_SC_NPROCESSORS_ONLN);
	const char *which = bench_opt_str(argc, argv, "scenario", "all");
	const char *csv_path = bench_opt_str(argc, argv, "csv", NULL);
	struct opts o;
	bool ok = true;

	if (online < 1)
		online = 1;
	if (online > MAX_THREADS)
		online = MAX_THREADS;
	memset(&o, 0, sizeof(o));
	o.reps = (int)opt(argc, argv, "reps", 3, 1, MAX_REPS, &ok);
	o.ms = opt(argc, argv, "ms", 1000, 1, 3600000, &ok);
	o.seed = (uint64_t)bench_opt(argc, argv, "seed", 0x5eed);
	o.io_us = opt(argc, argv, "io-us", 50, 0, 999999, &ok);
	o.threads = (unsigned int)opt(argc, argv, "threads", 64, 1,
				      MAX_THREADS, &ok);
	o.files = (size_t)opt(argc, argv, "files", 64, 1, 1 << 20, &ok);
	o.file_pages = (size_t)opt(argc, argv, "file-pages", 64, 1, 1 << 20,
				   &ok);
	o.cache_pages = (size_t)opt(argc, argv, "cache-pages",
				    (long)(o.files * o.file_pages / 8), 1,
				    1L << 30, &ok);
	o.cont_threads = (unsigned int)opt(argc, argv, "contention-threads", 8,
					   1, MAX_THREADS, &ok);
	o.mappers = (unsigned int)opt(argc, argv, "mappers", 2, 0,
				      MAX_THREADS, &ok);
	o.cont_pages = (size_t)opt(argc, argv, "contention-pages", 8192, 2,
				   1L << 30, &ok);
	o.cont_cache = (size_t)opt(argc, argv, "contention-cache-pages",
				   (long)o.cont_pages / 8, 1, 1L << 30, &ok);
	o.map_pages = (size_t)opt(argc, argv, "map-pages", 4, 1, 1 << 20, &ok);
	o.mapper_us = opt(argc, argv, "mapper-us", 0, 0, 999999, &ok);
	o.big_threads = (unsigned int)opt(argc, argv, "bigregion-threads", 16,
					  1, MAX_THREADS, &ok);
	o.big_pages = (size_t)opt(argc, argv, "bigregion-pages", 16384, 2,
				  1L << 30, &ok);
	o.big_cache = (size_t)opt(argc, argv, "bigregion-cache-pages",
				  (long)o.big_pages / 8, 1, 1L << 30, &ok);
	o.protect_pages = (size_t)opt(argc, argv, "protect-pages", 16, 1,
				      1L << 30, &ok);
	o.protect_us = opt(argc, argv, "protect-us", 2000, 2, 999999, &ok);
	o.fork_us = opt(argc, argv, "fork-us", 10000, 1, 999999, &ok);
	o.fork_hold_us = opt(argc, argv, "fork-hold-us", 100, 0, 999999, &ok);
	o.max_threads = (unsigned int)opt(argc, argv, "max-threads", online, 1,
					  MAX_THREADS, &ok);
	o.scaling_ms = opt(argc, argv, "scaling-ms", 200, 1, 3600000, &ok);
	if (o.cache_pages >= o.files * o.file_pages ||
	    o.cont_cache >= o.cont_pages || o.big_cache >= o.big_pages ||
	    o.protect_pages >= o.big_pages) {
		fprintf(stderr, "bench_scenarios: each cache must be smaller "
			"than its working set, and --protect-pages smaller "
			"than --bigregion-pages\n");
		ok = false;
	}
	if (!known(which)) {
		fprintf(stderr, "bench_scenarios: --scenario=%s: not one of "
			"thrash, contention, bigregion, scaling, all\n", which);
		ok = false;
	}
	if (!ok) {
		fprintf(stderr,
			"usage: %s [--scenario=thrash|contention|bigregion|"
			"scaling|all] [--reps=N] [--ms=N] [--seed=N]"
			" [--io-us=N] [--csv=PATH]\n"
			"  thrash:     [--threads=N] [--files=N] "
			"[--file-pages=N] [--cache-pages=N]\n"
			"  contention: [--contention-threads=N] [--mappers=N] "
			"[--contention-pages=N]\n"
			"              [--contention-cache-pages=N] "
			"[--map-pages=N] [--mapper-us=N]\n"
			"  bigregion:  [--bigregion-threads=N] "
			"[--bigregion-pages=N] [--bigregion-cache-pages=N]\n"
			"              [--protect-pages=N] [--protect-us=N] "
			"[--fork-us=N] [--fork-hold-us=N]\n"
			"  scaling:    [--max-threads=N] [--scaling-ms=N]\n",
			argv[0]);
		return 2;
	}
	if (csv_path) {
		csv = fopen(csv_path, "w");
		if (!csv)
			bench_die(csv_path, errno);
		fprintf(csv, "scenario,variant,threads,metric,value\n");
	}
	/* Sleeps of tens of microseconds must not be stretched by the
	 * default 50 us timer slack; threads inherit it. */
	prctl(PR_SET_TIMERSLACK, 1UL, 0UL, 0UL, 0UL);
	urcu_memb_register_thread();
	if (wanted(which, "thrash"))
		run_scenario(&thrash, &o);
	if (wanted(which, "contention"))
		run_scenario(&contention, &o);
	if (wanted(which, "bigregion"))
		run_scenario(&bigregion, &o);
	if (wanted(which, "scaling"))
		run_scaling(&o);
	urcu_memb_unregister_thread();
	if (csv && fclose(csv))
		bench_die(csv_path, errno);
	return 0;
}
