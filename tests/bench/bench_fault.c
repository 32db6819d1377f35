/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * bench_fault - the fault engine: its fast path against one global rwlock
 * and a bare RCU lookup, and its retry path under each retry policy with a
 * thrashing page cache and a periodic space-lock writer.
 *
 * Part 1: the fast path (bench=fault_fast)
 * ----------------------------------------
 * One op is one whole fault that needs no I/O: a fault at a precomputed
 * random address (any page of any of 10000 regions of 16 pages, with a
 * one-page hole after each; each thread its own array of 65536 addresses,
 * used in a loop), whose handler does nothing and returns 0.  Every
 * implementation looks the address up in the same space's region tree and
 * calls the same handler, so only what surrounds them differs:
 *
 *   vmr          vmr_handle_fault(space, addr, VMR_FAULT_FLAG_DEFAULT |
 *                VMR_FAULT_FLAG_USER, NULL, &res): the thread's state
 *                lookup, the VMA-range read lock under RCU (default config:
 *                VMR_LOCK_REGION, VMR_BARRIER_AUTO), the access check, the
 *                handler through the region's ops, the unlock and the
 *                per-thread counters (no fault timing);
 *   rwlock       the baseline, what a pager does today with one lock over
 *                its region tree (mmap_lock before per-VMA locks): one
 *                global pthread_rwlock_t (writer-preferring, as mmap_lock)
 *                read-locked, the engine's own tree walk
 *                (vmr_tree_lookup()) and access check (vmr_access_error()),
 *                a struct vmr_fault built on the stack as the engine
 *                builds it, the region's handler called as the engine
 *                calls it, unlock (tests/bench/bench_call.h);
 *   bare_lookup  the floor: urcu_memb_read_lock() (inline, _LGPL_SOURCE) +
 *                the same vmr_tree_lookup() + urcu_memb_read_unlock(),
 *                with no lock, no check and no handler;
 *   unlocked     rwlock's fault with RCU in place of the rwlock: the
 *                lookup, the access check, the descriptor and the handler
 *                call, under urcu_memb_read_lock() alone.  Every correct
 *                design does at least this (it must find and read the
 *                region, call its handler, and keep the region alive
 *                meanwhile), so, give or take how each builds its
 *                descriptor, rwlock / unlocked is the most that any lock
 *                could show against the rwlock on the machine at hand.
 *
 * ns_per_op is each thread's wall time (from the barrier start to the
 * moment it saw the stop flag) divided by its faults, averaged over the
 * threads: perfect scaling shows as a flat ns_per_op.  Printed per thread
 * count, 1 to --max-threads (default: the online CPUs), with
 *   metric=ratio_vs_rwlock       rwlock ns / vmr ns (above 1: vmr faster)
 *   metric=ratio_vs_bare_lookup  vmr ns / bare_lookup ns (what the fault
 *                                engine costs over the bare lookup; note
 *                                the direction: 1 would be free)
 *   impl=unlocked metric=ratio_vs_rwlock
 *                                rwlock ns / unlocked ns: the ceiling of
 *                                vmr's ratio_vs_rwlock here
 * Thread t is pinned to CPU t (bench_pin).  Every figure is the median of
 * --reps (default 5) repetitions of --ms milliseconds (default 200); each
 * repetition runs every thread count and implementation once, the
 * implementations in an order rotated by one per repetition.
 *
 * Where the time goes at one thread (2-vCPU VM, 2026-12-06, builds with
 * parts cut out by hand, three runs each, ns per op): bare_lookup 97-99;
 * bare_lookup plus the access check's read of the region 113-121; vmr
 * 203-218 against rwlock 173-193.  With the range lock and the handler
 * call both cut out, vmr still ran 179-199 against rwlock 176-198; with
 * the counters cut out, no change.  So the lock is not what puts vmr
 * behind the rwlock at one thread: the rest of the engine (the thread's
 * state, the fault descriptor, the checks) costs about what the rwlock's
 * lock, unlock and handler call do together.  300 nops added to
 * bare_lookup's loop (with the region read) took it to 148 and 155 (two
 * runs): on this machine any few hundred instructions per fault cost
 * tens of nanoseconds.  A cpu-clock profile (2026-12-07, perf record -e
 * cpu-clock -F 20000 over --retry=0 --max-threads=1 --reps=5, the three
 * impls running equal times) shows why the rwlock stays close: after the
 * tree walk (63 % of all samples, the three together) the largest cost is
 * the first read of the region's line, which both pay: 6657 samples at
 * the bounds check in vmr_range_read_lock_ts() for vmr, 6926 at the access
 * check's vmr_region_prot() for rwlock, against 1852 for the rwlock's lock
 * and unlock together and 1002 in vmr_handle_fault().  bare_lookup does not
 * read the region.  Nor is the range lock's locked instruction what holds
 * vmr back: with --barrier=2 (none on the read side) vmr's
 * ratio_vs_rwlock read 0.85-0.90 and its ratio_vs_bare_lookup 2.03-2.11,
 * against 0.85-0.90 and 2.16-2.19 with the fence (three runs each,
 * alternated, at one thread).
 *
 * Instruction counts (callgrind over --retry=0 --max-threads=1 --reps=1
 * --ms=20, a release build with debug info, 2026-12-07): vmr_handle_fault
 * was 485 instructions per fault, 129 of them the tree walk (68 of those
 * the linear pivot scan of the inner nodes); inlining the range lock's
 * read side, the common unlock and the thread-state lookup took it to
 * 359, one fast-fault counter to 356.  The rwlock's lock and unlock are 66
 * between them.  Five alternating runs of the two builds at
 * --max-threads=2, medians (ranges): ratio_vs_rwlock at one thread went
 * from 0.87 (0.84-0.93) to 0.96 (0.93-0.98), ratio_vs_bare_lookup from
 * 2.20 (1.98-2.21) to 1.92 (1.82-2.05).  A throw-away build whose
 * vmr_handle_fault did nothing but the protocol (thread state, range
 * lock, access check, handler, unlock, one counter: 335 instructions) read
 * 0.95-0.98 against 0.89-0.96 for the real engine in the same alternation:
 * the engine's checks and bookkeeping are not what is left.  With an
 * lfence before every fault, so that no fault's misses overlap the next
 * one's tree walk, vmr ran 204-244 ns and rwlock 212-241 (ratio_vs_rwlock
 * 0.99-1.05, three runs): our guess, not measured further, is that the
 * rwlock's shorter path lets the CPU start the next fault's walk while
 * this one waits for its region's line, and ours is too long for that.
 *
 * What any lock could gain here (2-vCPU AMD EPYC VM, 2026-12-07, six runs
 * of --retry=0 --max-threads=2 --reps=9, medians (ranges)): unlocked ran
 * 84 ns (80-102) at one thread and 81 (76-88) at two, against rwlock's
 * 95 (85-107) and 112 (103-126) and bare_lookup's 58 and 57.  So after
 * the tree walk, the region's line and the handler call (26 ns over the
 * bare lookup), the rwlock's lock and unlock add only 11 ns at one thread
 * and 31 at two: unlocked's ratio_vs_rwlock, the ceiling, was 1.07
 * (1.00-1.19) and 1.36 (1.27-1.45).  vmr read 1.02 (0.99-1.18) and 1.27
 * (1.20-1.36), and ran 1.04 and 1.05 times unlocked's ns (medians of the
 * per-run quotients).  With --barrier=2 in six runs alternated with
 * those: ceiling 1.09 and 1.34, vmr 1.02 and 1.23.  On this machine, then,
 * no lock design reaches 1.3x the rwlock at one thread or 3x at two; what
 * is left to win is vmr's 4-5 % over no lock at all.  Those baselines
 * reached the tree and the region through the public calls
 * (vmr_space_find_region(), vmr_region_prot(), vmr_region_ops()): three
 * calls and about ten instructions a fault (callgrind) that the engine
 * does not make.  They now walk the tree and check access with the
 * engine's own vmr_tree_lookup() and vmr_access_error().  Four alternating
 * runs of each build (same command, 2026-12-07, a slower VM), medians:
 * the ceiling read 1.13 before and 1.16 after at one thread, 1.40 and
 * 1.33 at two; vmr 0.91 and 0.89, 1.23 and 1.17: no change above the
 * noise.
 *
 * Part 2: the retry path (bench=fault_retry)
 * ------------------------------------------
 * It models a file pager in the situation of the RFC thread's thrash case
 * (Kylin: 500 threads reading through a 1 GB memcg with 8 GB of files) and
 * of its contention case (Douyin: I/O-retrying faults while other threads
 * take mmap_lock for write), scaled down (the page cache, the store and
 * the handler are bench_pager.c's, shared with bench_scenarios, which
 * models each of those cases in full):
 *
 *   - one region of --pages pages (default 8192), read-write, with a page
 *     map (vmr_pagemap_create()) over them; one small unrelated region
 *     elsewhere for the writer;
 *   - a page cache of --cache pages (default 1024: one eighth of the
 *     working set, the Kylin ratio), filled with random pages before the
 *     run; every page read is charged to it first and, if that takes it
 *     over --cache up-to-date pages, the charging fault itself evicts
 *     random pages (vmr_page_evict(), which skips locked and pinned ones)
 *     until it is back at --cache: direct reclaim at charge time, as a
 *     memcg at its limit does in __filemap_get_folio().  Victims are
 *     chosen uniformly, so a page that was read but not yet installed is
 *     as much a candidate as any (in the kernel it sits unreferenced on the
 *     inactive list); under the uniform access below LRU would not do
 *     better anyway;
 *   - --threads faulting threads (default 4, also on 2 CPUs: they spend
 *     most of their time asleep in I/O), pinned round-robin to the CPUs,
 *     each faulting at uniformly random pages of the region (its own
 *     precomputed array) with VMR_FAULT_FLAG_DEFAULT | USER;
 *   - the handler is the pattern of <vmaretry/pagewait.h>
 *     (filemap_fault()): vmr_page_lock_or_retry(); if the page is not up
 *     to date: charge it, vmr_fault_release_for_io(), "read" it, mark it
 *     up to date, and if the lock was released unlock the page and return
 *     the retry | MAJOR; else install it (nothing to do), unlock, return 0.
 *     The read is a sleep of --io-us microseconds (default 50) in
 *     clock_nanosleep(), with the thread's timer slack set to 1 ns: a
 *     thread waiting for I/O sleeps and gives up its CPU, which a
 *     busy-wait would not (and with 4 faulting threads on 2 CPUs a
 *     busy-wait would measure CPU sharing, not locking).  The measured
 *     mean read time is printed (io_mean_ns): on the 2-vCPU development
 *     VMs a 50 us sleep takes 80-90 us (waking a halted vCPU), and with
 *     dozens of threads the sleeps and wakeups alone saturate 2 CPUs;
 *   - policy retry_vma_pin: a space with VMR_RETRY_VMA whose handler, after
 *     its read, pins the page (vmr_fault_pin_page()) before unlocking it and
 *     returning the retry, and on the retry takes the page from
 *     vmr_fault_pinned_page() (checked against the address: a mismatch is
 *     reported); the engine drops the pin when the fault ends, so the pin
 *     protects the reading fault only, not faults that waited for its
 *     read (see wait_reread_pct).  The other policies never pin;
 *   - one writer thread (pinned to the last CPU) that every --writer-us
 *     microseconds (default 1000) takes the space lock for write
 *     (vmr_space_write_lock()), holds it --hold-us microseconds (default
 *     20, busy: the page-table work of an mmap or munmap) and releases it,
 *     then calls vmr_protect() on the first half of the unrelated region,
 *     flipping it between read-write and read-only (a real update: split
 *     or not, range write lock, retire).  No writer ever touches the
 *     faulting region, so under VMR_LOCK_REGION a fault's VMA-range lock
 *     never conflicts with it: only the space lock does.
 *
 * Each policy runs in a space of its own, made for each run (policy in
 * struct vmr_space_config, VMR_SPACE_TIME_FAULTS on, everything else
 * default), counters reset after the cache is filled.  Every fault is
 * timed by its thread around vmr_handle_fault() into a per-thread array,
 * so p50_ns and p99_ns are exact (nearest rank over every fault of the
 * run, all threads); the library's own histogram p99 (an upper bucket
 * bound) is printed beside them as lib_hist_p99_ns.
 *
 * The handler counts, per thread:
 *   io_retries    retries it returned after doing a read with the fault's
 *                 lock released (vmr_fault_release_for_io() said RETRY);
 *                 it marks the fault (vmf->handler_data) as I/O-retried;
 *   wait_retries  retries vmr_page_lock_or_retry() returned: the page was
 *                 locked by another fault's read, the lock was released
 *                 and the page waited for;
 *   io_rereads    handler calls of an I/O-retried fault that find the page
 *                 not up to date (evicted between the read and the retry)
 *                 and read it again;
 *   wait_rereads  the same for faults that had made a wait retry.
 * and the figures are
 *   retries                io_retries + wait_retries: every RETRY the
 *                          handler returned (each waited for I/O: its own
 *                          or another fault's); must equal the engine's
 *                          vma_lock_retry + space_retries (checked);
 *   space_locks_per_retry  stats.space_lock_faults / retries: space-lock
 *                          acquisitions on the fault path per retry
 *                          (nan where a policy makes no retries: hold_io);
 *   reread_pct             100 * io_rereads / io_retries: the share of
 *                          I/O retries whose page had been evicted before
 *                          the retry and had to be read again (the Kylin
 *                          RETRY_IO_MISS / RETRY_MMAP_DROP; nan without
 *                          I/O retries);
 *   wait_reread_pct        100 * wait_rereads / wait_retries;
 *   p50_ns, p99_ns         whole-fault latency, as above;
 *   faults_per_s           all threads' faults / span of the run;
 *   major_pct              100 * stats.result_major / stats.faults: the
 *                          engine counts a fault major only if its final
 *                          result has MAJOR, so a fault whose retry found
 *                          the page is not counted (the kernel's
 *                          mm_account_fault() also counts TRIED faults);
 *   writer_ops_per_s       the writer's lock holds and vmr_protect()s;
 *   writer_lock_p99_ns     how long the writer's vmr_space_write_lock()
 *                          waited (exact over its ~500 acquisitions per
 *                          run, so one preemption of the writer moves it);
 * plus the engine's raw counters (vmr_space_stats()): vma_lock_success,
 * vma_lock_retry, vma_retries, space_lock_faults, space_retries,
 * vma_lock_abort, page_reads, page_rereads (pages that had ever been up
 * to date before: every miss after the first read of a page, not only
 * after a retry), and the handler's evictions.  Each is the median over
 * the repetitions; ratios are not taken between medians.  The four
 * policies run interleaved (order rotated per repetition), each run
 * --retry-ms milliseconds (default 500).  Counters that do not add up
 * are reported on stderr: the engine's faults, retries and page reads
 * against the handlers' counts, its attempts (success + abort + retry =
 * faults + vma_retries; space_lock_faults = faults - vma_lock_success +
 * space_retries), bad_results, faults that did not end in 0 or MAJOR,
 * and pins the engine lost.
 *
 * Output: BENCH lines (see bench.h), e.g.
 *   BENCH bench=fault_fast impl=vmr threads=2 regions=10000
 *         metric=ns_per_op value=41.2
 *   BENCH bench=fault_retry policy=retry_vma metric=p99_ns value=1.3e+05
 * and a progress line per repetition on stderr.
 *
 * Options: --reps=N, --ms=N, --max-threads=N (part 1); --retry-ms=N,
 * --threads=N, --pages=N, --cache=N, --io-us=N, --writer-us=N,
 * --hold-us=N (part 2); --fast=0 or --retry=0 skips a part; --seed=N.
 */
#define _LGPL_SOURCE
#include <urcu/urcu-memb.h>

#include <vmaretry.h>

#include "bench.h"
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

#define CACHELINE 64
#define MAX_THREADS 64
#define MAX_REPS 64
#define NR_ADDRS (1u << 16) /* precomputed addresses per thread */
#define BATCH 64            /* fast-path ops between looks at the flag */

/* Fast-path layout, in pages. */
#define NR_REGIONS 10000u
#define REGION_PAGES 16u
#define REGION_STRIDE 17u /* a one-page hole after each */
#define BASE_PAGE 256u

/* Retry-path layout: the writer's region, GAP_PAGES after the big one. */
#define GAP_PAGES 1024u
#define W_PAGES 16u

#define FAULT_FLAGS (VMR_FAULT_FLAG_DEFAULT | VMR_FAULT_FLAG_USER)

/* ======================================================================== */
/* Part 1: the fast path                                                     */
/* ======================================================================== */

enum fast_impl { FAST_VMR, FAST_RWLOCK, FAST_BARE, FAST_UNLOCKED, NR_FAST };

static const char *const fast_names[NR_FAST] = {
	"vmr", "rwlock", "bare_lookup", "unlocked",
};

struct fast_world {
	struct vmr_space *space;
	uintptr_t page_mask;
	pthread_rwlock_t rwlock;
	uintptr_t *addrs[MAX_THREADS];
};

struct fast_worker {
	struct bench_team *team;
	struct fast_world *world;
	enum fast_impl impl;
	const uintptr_t *addrs;
	unsigned int cpu;
	uint64_t ops;
	uint64_t t0, t1;
} __attribute__((aligned(CACHELINE)));

static uint64_t fast_vmr(struct fast_worker *wk)
{
	struct vmr_space *space = wk->world->space;
	const uintptr_t *addrs = wk->addrs;
	uint64_t ops = 0;
	vmr_fault_t res;
	unsigned int k;

	do {
		for (k = 0; k < BATCH; k++, ops++) {
			if (vmr_handle_fault(space, addrs[ops & (NR_ADDRS - 1)],
					     FAULT_FLAGS, NULL, &res) ||
			    res)
				bench_die("vmr_handle_fault failed", EIO);
		}
	} while (!bench_team_stopped(wk->team));
	return ops;
}

/*
 * The baselines' faults: under the global rwlock if @rw, else under RCU
 * alone (unlocked: no design that calls the handler can be cheaper, see
 * the header).  Inlined into each caller with @rw a constant.
 */
static inline __attribute__((always_inline)) uint64_t
fast_plain(struct fast_worker *wk, bool rw)
{
	struct vmr_space *space = wk->world->space;
	pthread_rwlock_t *lock = &wk->world->rwlock;
	uintptr_t page_mask = wk->world->page_mask;
	const uintptr_t *addrs = wk->addrs;
	uint64_t ops = 0;
	vmr_fault_t res;
	unsigned int k;
	uintptr_t a;

	do {
		for (k = 0; k < BATCH; k++, ops++) {
			a = addrs[ops & (NR_ADDRS - 1)];
			if (rw)
				pthread_rwlock_rdlock(lock);
			else
				urcu_memb_read_lock();
			res = bench_lookup_fault(space, a, page_mask,
						 FAULT_FLAGS,
						 rw ? VMR_FAULT_LOCK_SPACE :
						      VMR_FAULT_LOCK_NONE);
			if (rw)
				pthread_rwlock_unlock(lock);
			else
				urcu_memb_read_unlock();
			if (res)
				bench_die("baseline fault failed", EIO);
		}
	} while (!bench_team_stopped(wk->team));
	return ops;
}

static uint64_t fast_rwlock(struct fast_worker *wk)
{
	return fast_plain(wk, true);
}

static uint64_t fast_unlocked(struct fast_worker *wk)
{
	return fast_plain(wk, false);
}

static uint64_t fast_bare(struct fast_worker *wk)
{
	struct vmr_space *space = wk->world->space;
	const uintptr_t *addrs = wk->addrs;
	struct vmr_region *r;
	uint64_t ops = 0;
	unsigned int k;

	do {
		for (k = 0; k < BATCH; k++, ops++) {
			urcu_memb_read_lock();
			r = bench_lookup(space, addrs[ops & (NR_ADDRS - 1)]);
			urcu_memb_read_unlock();
			if (!r)
				bench_die("lookup missed", ENOENT);
		}
	} while (!bench_team_stopped(wk->team));
	return ops;
}

static void *fast_main(void *arg)
{
	struct fast_worker *wk = arg;

	bench_pin(wk->cpu);
	vmr_space_register_thread(wk->world->space);
	pthread_barrier_wait(&wk->team->start);
	wk->t0 = bench_now_ns();
	switch (wk->impl) {
	case FAST_VMR:
		wk->ops = fast_vmr(wk);
		break;
	case FAST_RWLOCK:
		wk->ops = fast_rwlock(wk);
		break;
	case FAST_UNLOCKED:
		wk->ops = fast_unlocked(wk);
		break;
	default:
		wk->ops = fast_bare(wk);
		break;
	}
	wk->t1 = bench_now_ns();
	vmr_space_unregister_thread(wk->world->space);
	return NULL;
}

/* One timed run; returns its ns_per_op. */
static double fast_run(struct fast_world *w, enum fast_impl impl,
		       unsigned int threads, long ms)
{
	struct fast_worker *wk = bench_alloc(threads * sizeof(*wk));
	struct bench_member m[MAX_THREADS];
	struct bench_team tm;
	double sum = 0;
	unsigned int t;

	for (t = 0; t < threads; t++) {
		memset(&wk[t], 0, sizeof(wk[t]));
		wk[t].team = &tm;
		wk[t].world = w;
		wk[t].impl = impl;
		wk[t].addrs = w->addrs[t];
		wk[t].cpu = t;
		m[t].fn = fast_main;
		m[t].arg = &wk[t];
	}
	bench_team_run(&tm, m, threads, ms);
	for (t = 0; t < threads; t++) {
		if (!wk[t].ops || wk[t].t1 <= wk[t].t0)
			bench_die("a thread did no work", EIO);
		sum += (double)(wk[t].t1 - wk[t].t0) / (double)wk[t].ops;
	}
	free(wk);
	return sum / threads;
}

/* The fast path's space: defaults, or --barrier=N (enum vmr_reader_barrier). */
static struct vmr_space_config fast_config;

static struct fast_world *fast_world_create(unsigned int max_threads,
					    uint64_t seed)
{
	struct fast_world *w = bench_alloc(sizeof(*w));
	size_t page = bench_page_size();
	uint64_t rng = seed;
	unsigned int t, i;
	uintptr_t start;
	int err;

	memset(w, 0, sizeof(*w));
	err = vmr_space_create(&fast_config, sizeof(fast_config), &w->space);
	if (err)
		bench_die("vmr_space_create", -err);
	w->page_mask = vmr_space_page_size(w->space) - 1;
	for (i = 0; i < NR_REGIONS; i++)
		bench_map_region(w->space,
				 ((uintptr_t)BASE_PAGE +
				  (uintptr_t)i * REGION_STRIDE) * page,
				 REGION_PAGES * page, 0, &bench_nop_ops, NULL, 0);
	err = bench_rwlock_init(&w->rwlock);
	if (err)
		bench_die("pthread_rwlock_init", err);
	for (t = 0; t < max_threads; t++) {
		w->addrs[t] = bench_alloc(NR_ADDRS * sizeof(uintptr_t));
		for (i = 0; i < NR_ADDRS; i++) {
			start = ((uintptr_t)BASE_PAGE +
				 (uintptr_t)(bench_rand(&rng) % NR_REGIONS) *
					 REGION_STRIDE) *
				page;
			w->addrs[t][i] =
				start +
				(uintptr_t)(bench_rand(&rng) %
					    (REGION_PAGES * page));
		}
	}
	return w;
}

static void fast_world_destroy(struct fast_world *w)
{
	int err = vmr_space_destroy(w->space);

	if (err)
		bench_die("vmr_space_destroy", -err);
	pthread_rwlock_destroy(&w->rwlock);
	for (unsigned int t = 0; t < MAX_THREADS; t++)
		free(w->addrs[t]);
	free(w);
}

static void fast_bench(unsigned int max_threads, int reps, long ms,
		       uint64_t seed)
{
	struct fast_world *w = fast_world_create(max_threads, seed);
	double (*s)[NR_FAST][MAX_REPS] =
		bench_alloc(max_threads * sizeof(*s));
	double med[NR_FAST];
	char keys[64];
	unsigned int n, j, i;
	int rep;

	for (rep = 0; rep < reps; rep++) {
		fprintf(stderr, "bench_fault: fast path, repetition %d/%d\n",
			rep + 1, reps);
		for (n = 1; n <= max_threads; n++)
			for (j = 0; j < NR_FAST; j++) {
				i = (j + (unsigned int)rep) % NR_FAST;
				s[n - 1][i][rep] = fast_run(
					w, (enum fast_impl)i, n, ms);
			}
	}
	for (n = 1; n <= max_threads; n++) {
		snprintf(keys, sizeof(keys), "threads=%u regions=%u", n,
			 NR_REGIONS);
		for (i = 0; i < NR_FAST; i++) {
			med[i] = bench_median(s[n - 1][i], (size_t)reps);
			bench_print("fault_fast", fast_names[i], keys,
				    "ns_per_op", med[i]);
		}
		bench_print("fault_fast", "vmr", keys, "ratio_vs_rwlock",
			    med[FAST_RWLOCK] / med[FAST_VMR]);
		bench_print("fault_fast", "vmr", keys, "ratio_vs_bare_lookup",
			    med[FAST_VMR] / med[FAST_BARE]);
		/* The most any lock could show against the rwlock. */
		bench_print("fault_fast", "unlocked", keys, "ratio_vs_rwlock",
			    med[FAST_RWLOCK] / med[FAST_UNLOCKED]);
	}
	free(s);
	fast_world_destroy(w);
}

/* ======================================================================== */
/* Part 2: the retry path                                                    */
/* ======================================================================== */

struct policy {
	const char *name;
	enum vmr_retry_policy policy;
	bool pin;
};

static const struct policy policies[] = {
	{ "retry_space", VMR_RETRY_SPACE, false },
	{ "retry_vma", VMR_RETRY_VMA, false },
	{ "hold_io", VMR_HOLD_IO, false },
	{ "retry_vma_pin", VMR_RETRY_VMA, true },
};

#define NR_POLICIES (sizeof(policies) / sizeof(policies[0]))

struct retry_opts {
	unsigned int threads;
	size_t pages, cache;
	long io_us, writer_us, hold_us, ms;
	uint64_t seed;
};

/* A faulting thread; its counters are written only by itself. */
struct faulter {
	struct bench_team *team;
	struct vmr_space *space;
	uintptr_t start; /* of the region */
	size_t page;
	const uint32_t *idx; /* NR_ADDRS pages to fault at */
	unsigned int cpu;
	struct bench_pager_ctx pc; /* the handler's counters (vmf->ctx) */
	uint64_t faults;
	uint64_t *lat;
	size_t nlat, cap;
	uint64_t t0, t1;
} __attribute__((aligned(CACHELINE)));

struct writer {
	struct bench_team *team;
	struct vmr_space *space;
	uintptr_t start; /* the unrelated region */
	size_t len;
	long period_ns, hold_ns;
	uint64_t ops;
	uint64_t *wait;
	size_t nwait, cap;
} __attribute__((aligned(CACHELINE)));

static void *faulter_main(void *arg)
{
	struct faulter *f = arg;
	uint64_t t, k = 0;
	vmr_fault_t res;

	bench_pin(f->cpu);
	prctl(PR_SET_TIMERSLACK, 1UL, 0UL, 0UL, 0UL);
	vmr_space_register_thread(f->space);
	pthread_barrier_wait(&f->team->start);
	f->t0 = bench_now_ns();
	do {
		t = bench_now_ns();
		if (vmr_handle_fault(f->space,
				     f->start +
					     (uintptr_t)f->idx[k++ & (NR_ADDRS - 1)] *
						     f->page,
				     FAULT_FLAGS, &f->pc, &res))
			bench_die("vmr_handle_fault", EINVAL);
		bench_push_u64(&f->lat, &f->nlat, &f->cap, bench_now_ns() - t);
		f->faults++;
		if (res & ~VMR_FAULT_MAJOR)
			f->pc.bad++;
	} while (!bench_team_stopped(f->team));
	f->t1 = bench_now_ns();
	vmr_space_unregister_thread(f->space);
	return NULL;
}

static void *writer_main(void *arg)
{
	struct writer *w = arg;
	unsigned int prot = VMR_PROT_READ;
	struct timespec next;
	uint64_t t0, t1;
	int err;

	bench_pin(bench_nr_cpus() - 1);
	prctl(PR_SET_TIMERSLACK, 1UL, 0UL, 0UL, 0UL);
	vmr_space_register_thread(w->space);
	pthread_barrier_wait(&w->team->start);
	clock_gettime(CLOCK_MONOTONIC, &next);
	while (!bench_team_stopped(w->team)) {
		next.tv_nsec += w->period_ns;
		while (next.tv_nsec >= 1000000000L) {
			next.tv_nsec -= 1000000000L;
			next.tv_sec++;
		}
		while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &next,
				       NULL) == EINTR)
			;
		t0 = bench_now_ns();
		err = vmr_space_write_lock(w->space);
		if (err)
			bench_die("vmr_space_write_lock", -err);
		t1 = bench_now_ns();
		bench_push_u64(&w->wait, &w->nwait, &w->cap, t1 - t0);
		bench_spin_until(t1 + (uint64_t)w->hold_ns);
		err = vmr_space_write_unlock(w->space);
		if (err)
			bench_die("vmr_space_write_unlock", -err);
		err = vmr_protect(w->space, w->start, w->len / 2, prot);
		if (err)
			bench_die("vmr_protect", -err);
		prot ^= VMR_PROT_WRITE;
		w->ops += 2;
	}
	vmr_space_unregister_thread(w->space);
	return NULL;
}

/* Per-run figures, each a median over the repetitions. */
enum rmetric {
	RM_SPACE_LOCKS_PER_RETRY,
	RM_P50,
	RM_P99,
	RM_REREAD_PCT,
	RM_FAULTS_PER_S,
	RM_RETRIES,
	RM_IO_RETRIES,
	RM_WAIT_RETRIES,
	RM_WAIT_REREAD_PCT,
	RM_MAJOR_PCT,
	RM_VMA_LOCK_SUCCESS,
	RM_VMA_LOCK_RETRY,
	RM_VMA_RETRIES,
	RM_SPACE_LOCK_FAULTS,
	RM_SPACE_RETRIES,
	RM_VMA_LOCK_ABORT,
	RM_PAGE_READS,
	RM_PAGE_REREADS,
	RM_EVICTIONS,
	RM_IO_MEAN_NS,
	RM_LIB_HIST_P99,
	RM_WRITER_OPS_PER_S,
	RM_WRITER_LOCK_P99,
	NR_RMETRICS
};

static const char *const rmetric_names[NR_RMETRICS] = {
	"space_locks_per_retry", "p50_ns", "p99_ns", "reread_pct",
	"faults_per_s", "retries", "io_retries", "wait_retries",
	"wait_reread_pct", "major_pct", "vma_lock_success", "vma_lock_retry",
	"vma_retries", "space_lock_faults", "space_retries", "vma_lock_abort",
	"page_reads", "page_rereads", "evictions", "io_mean_ns",
	"lib_hist_p99_ns", "writer_ops_per_s", "writer_lock_p99_ns",
};

static double ratio(double a, double b)
{
	return b > 0 ? a / b : NAN;
}

/**
 * retry_run() - one timed run of one policy
 * @p: the policy
 * @o: the options
 * @idx: per faulting thread, NR_ADDRS page indices
 * @rng: seed source for the cache fill and the reclaim victims
 * @out: receives NR_RMETRICS figures
 *
 * Context: the main thread, registered with urcu-memb.
 */
static void retry_run(const struct policy *p, const struct retry_opts *o,
		      uint32_t *const *idx, uint64_t *rng, double *out)
{
	struct faulter *f = bench_alloc(o->threads * sizeof(*f));
	struct writer *w = bench_alloc(sizeof(*w));
	struct bench_pager *pg = bench_alloc(sizeof(*pg));
	struct bench_member m[MAX_THREADS + 1];
	size_t page = bench_page_size(), nlat = 0;
	uint64_t first = UINT64_MAX, last = 0, faults = 0, *lat;
	struct bench_pager_ctx sum = { 0 };
	struct vmr_space_config cfg;
	struct vmr_space *space;
	struct vmr_stats st;
	uintptr_t start = (uintptr_t)BASE_PAGE * page;
	unsigned int t;
	struct bench_team tm;
	int err;

	memset(&cfg, 0, sizeof(cfg));
	cfg.policy = p->policy;
	cfg.flags = VMR_SPACE_TIME_FAULTS;
	err = vmr_space_create(&cfg, sizeof(cfg), &space);
	if (err)
		bench_die("vmr_space_create", -err);
	bench_pager_init(pg, space, page, o->pages, o->cache,
			 (uint64_t)o->io_us * 1000, p->pin);
	bench_map_region(space, start, o->pages * page, 0, &bench_pager_ops,
			 pg, 0);
	memset(w, 0, sizeof(*w));
	w->start = start + (o->pages + GAP_PAGES) * page;
	w->len = W_PAGES * page;
	bench_map_region(space, w->start, w->len, 0, NULL, NULL, 0);

	/* Fill the cache with random pages, then count from zero. */
	bench_pager_fill(pg, rng);
	vmr_space_stats_reset(space);

	for (t = 0; t < o->threads; t++) {
		memset(&f[t], 0, sizeof(f[t]));
		f[t].team = &tm;
		f[t].space = space;
		f[t].start = start;
		f[t].page = page;
		f[t].idx = idx[t];
		f[t].cpu = t;
		f[t].pc.rng = bench_rand(rng);
		m[t].fn = faulter_main;
		m[t].arg = &f[t];
	}
	w->team = &tm;
	w->space = space;
	w->period_ns = o->writer_us * 1000;
	w->hold_ns = o->hold_us * 1000;
	m[o->threads].fn = writer_main;
	m[o->threads].arg = w;
	bench_team_run(&tm, m, o->threads + 1, o->ms);

	vmr_space_stats(space, &st, sizeof(st));
	for (t = 0; t < o->threads; t++) {
		if (!f[t].faults || f[t].t1 <= f[t].t0)
			bench_die("a faulting thread did no work", EIO);
		first = f[t].t0 < first ? f[t].t0 : first;
		last = f[t].t1 > last ? f[t].t1 : last;
		faults += f[t].faults;
		bench_pager_ctx_add(&sum, &f[t].pc);
		nlat += f[t].nlat;
	}
	lat = bench_alloc(nlat * sizeof(*lat));
	for (nlat = 0, t = 0; t < o->threads; t++) {
		memcpy(lat + nlat, f[t].lat, f[t].nlat * sizeof(*lat));
		nlat += f[t].nlat;
		free(f[t].lat);
	}
	bench_pager_check(p->name, &st, faults, &sum);

	out[RM_RETRIES] = (double)(sum.io_retries + sum.wait_retries);
	out[RM_SPACE_LOCKS_PER_RETRY] =
		ratio((double)st.space_lock_faults, out[RM_RETRIES]);
	out[RM_P50] = (double)bench_percentile_u64(lat, nlat, 50);
	out[RM_P99] = (double)bench_percentile_u64(lat, nlat, 99);
	out[RM_REREAD_PCT] =
		100 * ratio((double)sum.io_rereads, (double)sum.io_retries);
	out[RM_FAULTS_PER_S] = (double)faults * 1e9 / (double)(last - first);
	out[RM_IO_RETRIES] = (double)sum.io_retries;
	out[RM_WAIT_RETRIES] = (double)sum.wait_retries;
	out[RM_WAIT_REREAD_PCT] =
		100 * ratio((double)sum.wait_rereads, (double)sum.wait_retries);
	out[RM_MAJOR_PCT] =
		100 * ratio((double)st.result_major, (double)st.faults);
	out[RM_VMA_LOCK_SUCCESS] = (double)st.vma_lock_success;
	out[RM_VMA_LOCK_RETRY] = (double)st.vma_lock_retry;
	out[RM_VMA_RETRIES] = (double)st.vma_retries;
	out[RM_SPACE_LOCK_FAULTS] = (double)st.space_lock_faults;
	out[RM_SPACE_RETRIES] = (double)st.space_retries;
	out[RM_VMA_LOCK_ABORT] = (double)st.vma_lock_abort;
	out[RM_PAGE_READS] = (double)st.page_reads;
	out[RM_PAGE_REREADS] = (double)st.page_rereads;
	out[RM_EVICTIONS] = (double)sum.evictions;
	out[RM_IO_MEAN_NS] = ratio((double)sum.io_ns, (double)sum.reads);
	out[RM_LIB_HIST_P99] =
		(double)vmr_hist_percentile(st.fault_latency_hist, 99);
	out[RM_WRITER_OPS_PER_S] =
		(double)w->ops * 1e9 / (double)(last - first);
	out[RM_WRITER_LOCK_P99] =
		(double)bench_percentile_u64(w->wait, w->nwait, 99);

	bench_pager_fini(pg);
	err = vmr_space_destroy(space);
	if (err)
		bench_die("vmr_space_destroy", -err);
	free(lat);
	free(w->wait);
	free(w);
	free(pg);
	free(f);
}

static void retry_bench(const struct retry_opts *o, int reps)
{
	double (*s)[NR_RMETRICS][MAX_REPS] =
		bench_alloc(NR_POLICIES * sizeof(*s));
	double v[MAX_REPS], out[NR_RMETRICS];
	uint32_t *idx[MAX_THREADS];
	uint64_t rng = o->seed;
	char keys[64];
	unsigned int t, j, i, k;
	int rep;

	for (t = 0; t < o->threads; t++) {
		idx[t] = bench_alloc(NR_ADDRS * sizeof(uint32_t));
		for (i = 0; i < NR_ADDRS; i++)
			idx[t][i] = (uint32_t)(bench_rand(&rng) % o->pages);
	}
	for (rep = 0; rep < reps; rep++) {
		fprintf(stderr, "bench_fault: retry path, repetition %d/%d\n",
			rep + 1, reps);
		for (j = 0; j < NR_POLICIES; j++) {
			i = (j + (unsigned int)rep) % NR_POLICIES;
			retry_run(&policies[i], o, idx, &rng, out);
			for (k = 0; k < NR_RMETRICS; k++)
				s[i][k][rep] = out[k];
		}
	}
	for (i = 0; i < NR_POLICIES; i++) {
		snprintf(keys, sizeof(keys), "policy=%s", policies[i].name);
		for (k = 0; k < NR_RMETRICS; k++) {
			memcpy(v, s[i][k], (size_t)reps * sizeof(double));
			bench_print_kv("fault_retry", keys, rmetric_names[k],
				       bench_median_or_nan(v, (size_t)reps));
		}
	}
	for (t = 0; t < o->threads; t++)
		free(idx[t]);
	free(s);
}

int main(int argc, char **argv)
{
	long online = sysconf(_SC_NPROCESSORS_ONLN);
	long reps = bench_opt(argc, argv, "reps", 5);
	long ms = bench_opt(argc, argv, "ms", 200);
	long max_threads, pages, cache;
	struct retry_opts o;

	if (online < 1)
		online = 1;
	if (online > MAX_THREADS)
		online = MAX_THREADS;
	max_threads = bench_opt(argc, argv, "max-threads", online);
	fast_config.barrier =
		(enum vmr_reader_barrier)bench_opt(argc, argv, "barrier", 0);
	pages = bench_opt(argc, argv, "pages", 8192);
	cache = bench_opt(argc, argv, "cache", 1024);
	memset(&o, 0, sizeof(o));
	o.threads = (unsigned int)bench_opt(argc, argv, "threads", 4);
	o.io_us = bench_opt(argc, argv, "io-us", 50);
	o.writer_us = bench_opt(argc, argv, "writer-us", 1000);
	o.hold_us = bench_opt(argc, argv, "hold-us", 20);
	o.ms = bench_opt(argc, argv, "retry-ms", 500);
	o.seed = (uint64_t)bench_opt(argc, argv, "seed", 0xfa017);
	if (reps < 1 || reps > MAX_REPS || ms < 1 || max_threads < 1 ||
	    max_threads > MAX_THREADS || o.threads < 1 ||
	    o.threads > MAX_THREADS || pages < 1 || pages > (1L << 30) ||
	    cache < 1 || cache >= pages || o.io_us < 0 ||
	    o.io_us > 999999 || o.writer_us < 1 || o.writer_us > 999999 ||
	    o.hold_us < 0 || o.hold_us >= o.writer_us || o.ms < 1) {
		fprintf(stderr,
			"usage: %s [--reps=1..%d] [--ms=N] [--max-threads=1..%d]"
			" [--retry-ms=N] [--threads=1..%d] [--pages=N]"
			" [--cache=1..pages-1] [--io-us=N] [--writer-us=N]"
			" [--hold-us=N] [--fast=0|1] [--retry=0|1]"
			" [--seed=N]\n",
			argv[0], MAX_REPS, MAX_THREADS, MAX_THREADS);
		return 2;
	}
	o.pages = (size_t)pages;
	o.cache = (size_t)cache;

	urcu_memb_register_thread();
	if (bench_opt(argc, argv, "fast", 1))
		fast_bench((unsigned int)max_threads, (int)reps, ms, o.seed);
	if (bench_opt(argc, argv, "retry", 1))
		retry_bench(&o, (int)reps);
	urcu_memb_unregister_thread();
	return 0;
}
