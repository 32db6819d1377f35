/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * bench_tree - the region tree against a tsearch tree under a rwlock.
 *
 * What is measured
 * ----------------
 * At each tree size (10, 1000, 10000 and 100000 entries, up to
 * --max-regions), for two implementations built from the same entries in
 * the same (shuffled) order:
 *
 *   vmr             our region tree: lookups under urcu-memb's inline
 *                   read lock, updates through the tree's own writer mutex;
 *   tsearch_rwlock  glibc's tsearch/tfind/tdelete (a red-black tree) keyed
 *                   by range, with a comparison that calls overlapping
 *                   ranges equal, so tfind() of the 1-byte range [a, a + 1)
 *                   finds the entry containing a; guarded by one
 *                   pthread_rwlock_t, read-locked for each lookup and
 *                   write-locked for each update (a pager's region list
 *                   today, and the kernel's mmap_lock before per-VMA locks).
 *
 *   tree_lookup   one lookup of a random address inside a uniformly random
 *                 entry, with one read lock/unlock pair around it as a page
 *                 fault would take, on 1 and 2 reader threads (1, 2, 4...
 *                 up to --max-threads), each pinned to its own CPU.
 *                 ns_per_op is the time per lookup as one thread sees it
 *                 (its wall time / the lookups it did, averaged over the
 *                 threads), so perfect scaling shows as a flat ns_per_op;
 *                 mops is the total throughput of all threads in millions
 *                 of lookups per second, and scaling_vs_1thread is the
 *                 n-thread mops over the 1-thread mops.
 *   tree_update   one insert of an entry into a free slot plus the remove
 *                 of it again, on one thread: ns per (insert + remove).
 *   tree_replace  a replace that splits one entry into 3 and the replace
 *                 that merges them back, on one thread: ns per replace
 *                 call.  The baseline does tdelete + 3 tsearch (and 3
 *                 tdelete + tsearch) under one write lock per replace.
 *
 * How
 * ---
 * Every figure is the median of --reps repetitions (default 5).  A lookup
 * repetition runs --ms milliseconds (default 200), an update or replace
 * repetition a quarter of that.  Repetitions of the two implementations
 * alternate (vmr, tsearch_rwlock, vmr, ...), and lookup repetitions also
 * cycle through the thread counts (1 thread: vmr, tsearch_rwlock; 2
 * threads: vmr, tsearch_rwlock; 1 thread: ...), so that drift of the
 * machine hits every ratio and every scaling figure evenly.
 *
 * Workers start together on a pthread barrier and run until the main
 * thread, which sleeps meanwhile, raises a stop flag; each worker times
 * itself.  Addresses and entry picks are drawn before the clock starts
 * (one address array per reader thread, shared by both implementations),
 * so no random number generator is timed.  Every lookup must hit and every
 * update must succeed, or the benchmark dies.  After each vmr update
 * repetition the main thread waits for the frees queued through call_rcu()
 * (rcu_barrier), outside the timed section, so that the backlog does not
 * spill into the next repetition; the frees themselves run on liburcu's
 * call_rcu thread while vmr updates are being timed, and their cost to the
 * writer (malloc arena contention with that thread) is part of the figure.
 *
 * Output: one line per figure, as DESIGN.md asks, e.g. (one line each)
 *   BENCH bench=tree_lookup impl=vmr threads=1 regions=10000
 *         metric=ns_per_op value=23.4
 * and after each pair of implementations
 *   BENCH bench=tree_lookup impl=vmr threads=1 regions=10000
 *         metric=ratio_vs_tsearch_rwlock value=3.4
 * where the ratio is tsearch_rwlock ns_per_op / vmr ns_per_op (medians):
 * how many times faster ours is; above 1 means vmr wins.
 *
 * Options: --reps=N, --ms=N, --max-regions=N, --max-threads=N (default 2).
 */
#define _LGPL_SOURCE
#include <urcu/urcu-memb.h>

#include <vmaretry.h>

#include "bench.h"

#include <errno.h>
#include <pthread.h>
#include <search.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define CACHELINE 64

/* Entry geometry: 3-page entries, each followed by a free 3-page slot. */
#define PAGE ((uintptr_t)4096)
#define ENTRY_PAGES 3
#define ENTRY_SIZE (ENTRY_PAGES * PAGE)
#define STRIDE (2 * ENTRY_SIZE)
#define BASE ((uintptr_t)0x10000)

/* Precomputed random addresses per reader and entry picks per writer. */
#define NR_ADDRS (1u << 16)
#define NR_PICKS (1u << 14)

/* Lookups between two looks at the stop flag. */
#define BATCH 64

#define MAX_THREADS 16
#define MAX_REPS 64

static const size_t sizes[] = { 10, 1000, 10000, 100000 };

/* One range; the value of a vmr entry and the key of a tsearch node. */
struct region {
	uintptr_t start;
	uintptr_t end;
};

/* Both implementations over the same entries, and the random inputs. */
struct world {
	size_t n;
	struct region *regions;  /* the n entries, ascending */
	struct region *gaps;     /* gaps[i]: the free slot after regions[i] */
	struct region pieces[3]; /* the pieces of the entry being split */
	uint32_t *picks;         /* NR_PICKS random entry indexes */
	uintptr_t *addrs[MAX_THREADS]; /* NR_ADDRS addresses per reader */
	struct vmr_tree *tree;
	void *troot;             /* the tsearch tree */
	pthread_rwlock_t lock;   /* guards troot */
};

enum op { OP_LOOKUP, OP_UPDATE, OP_REPLACE, NR_OPS };

static const char *const op_names[NR_OPS] = {
	"tree_lookup", "tree_update", "tree_replace",
};

struct worker;

/*
 * Runs one operation until the stop flag is up, at least one batch even if
 * the thread starts late; returns the ops done.
 */
typedef uint64_t loop_fn(struct world *w, struct worker *wk);

struct impl {
	const char *name;
	loop_fn *loop[NR_OPS];
	void (*settle)(void); /* after each repetition, untimed; may be NULL */
};

/* One repetition: what the workers share. */
struct run {
	atomic_bool stop __attribute__((aligned(CACHELINE)));
	struct world *world;
	loop_fn *loop;
	pthread_barrier_t start;
};

/* One worker thread; padded so that workers never share a cache line. */
struct worker {
	pthread_t tid;
	struct run *run;
	const uintptr_t *addrs;
	unsigned int cpu;
	uint64_t ops;
	uint64_t t0; /* when it began, after the barrier */
	uint64_t t1; /* when it saw the stop flag */
} __attribute__((aligned(CACHELINE)));

static _Noreturn void die(const char *what, int err)
{
	fprintf(stderr, "bench_tree: %s: %s\n", what, strerror(err));
	exit(1);
}

static inline bool run_stopped(const struct run *r)
{
	return atomic_load_explicit(&r->stop, memory_order_relaxed);
}

/* ---- random inputs ------------------------------------------------------ */

/* splitmix64: small, fast and good enough to pick entries. */
static uint64_t rand_next(uint64_t *state)
{
	uint64_t z = (*state += 0x9e3779b97f4a7c15ull);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static void *xmalloc(size_t size)
{
	void *p = malloc(size);

	if (!p)
		die("malloc", ENOMEM);
	return p;
}

/* ---- the baseline's key order ------------------------------------------- */

/* Overlapping ranges compare equal: a 1-byte key finds its container. */
static int region_cmp(const void *a, const void *b)
{
	const struct region *x = a, *y = b;

	if (x->end <= y->start)
		return -1;
	if (y->end <= x->start)
		return 1;
	return 0;
}

static void region_keep(void *key)
{
	(void)key; /* keys live in the world's arrays */
}

/* tsearch() that must add @key itself; the caller holds the write lock. */
static void tsearch_add(struct world *w, struct region *key)
{
	void *node = tsearch(key, &w->troot, region_cmp);

	if (!node)
		die("tsearch", ENOMEM);
	if (*(struct region **)node != key)
		die("tsearch found an overlapping key", EEXIST);
}

/* tdelete() of a key that must be there; the caller holds the write lock. */
static void tdelete_must(struct world *w, const struct region *key)
{
	if (!tdelete(key, &w->troot, region_cmp))
		die("tdelete", ENOENT);
}

/* ---- the world ---------------------------------------------------------- */

/* Entries of @w in a random order, the same for both implementations. */
static size_t *shuffled(size_t n, uint64_t *rng)
{
	size_t *order = xmalloc(n * sizeof(*order));
	size_t i, j, t;

	for (i = 0; i < n; i++)
		order[i] = i;
	for (i = n - 1; i > 0; i--) {
		j = (size_t)(rand_next(rng) % (i + 1));
		t = order[i];
		order[i] = order[j];
		order[j] = t;
	}
	return order;
}

static void world_fill(struct world *w, unsigned int nr_readers,
		       uint64_t *rng)
{
	struct region *r;
	unsigned int t;
	uintptr_t off;
	size_t i;

	for (i = 0; i < w->n; i++) {
		w->regions[i].start = BASE + i * STRIDE;
		w->regions[i].end = w->regions[i].start + ENTRY_SIZE;
		w->gaps[i].start = w->regions[i].end;
		w->gaps[i].end = w->gaps[i].start + ENTRY_SIZE;
	}
	for (i = 0; i < NR_PICKS; i++)
		w->picks[i] = (uint32_t)(rand_next(rng) % w->n);
	for (t = 0; t < nr_readers; t++) {
		w->addrs[t] = xmalloc(NR_ADDRS * sizeof(uintptr_t));
		for (i = 0; i < NR_ADDRS; i++) {
			r = &w->regions[rand_next(rng) % w->n];
			off = (uintptr_t)(rand_next(rng) % ENTRY_SIZE);
			w->addrs[t][i] = r->start + off;
		}
	}
}

/**
 * world_create() - build both trees over @n entries
 * @n: number of entries
 * @nr_readers: reader threads to draw address arrays for
 * @seed: seed of every random choice
 *
 * Context: a thread registered with urcu-memb.
 */
static struct world *world_create(size_t n, unsigned int nr_readers,
				  uint64_t seed)
{
	struct world *w = xmalloc(sizeof(*w));
	uint64_t rng = seed;
	size_t *order, i;
	struct region *r;
	int err;

	memset(w, 0, sizeof(*w));
	w->n = n;
	w->regions = xmalloc(n * sizeof(*w->regions));
	w->gaps = xmalloc(n * sizeof(*w->gaps));
	w->picks = xmalloc(NR_PICKS * sizeof(*w->picks));
	world_fill(w, nr_readers, &rng);

	err = vmr_tree_create(NULL, &w->tree);
	if (err)
		die("vmr_tree_create", -err);
	err = pthread_rwlock_init(&w->lock, NULL);
	if (err)
		die("pthread_rwlock_init", err);
	order = shuffled(n, &rng);
	for (i = 0; i < n; i++) {
		r = &w->regions[order[i]];
		err = vmr_tree_insert(w->tree, r->start, r->end, r);
		if (err)
			die("vmr_tree_insert", -err);
		tsearch_add(w, r);
	}
	free(order);
	return w;
}

/* Context: a thread registered with urcu-memb, outside any read section. */
static void world_destroy(struct world *w)
{
	unsigned int t;

	vmr_tree_destroy(w->tree, NULL, NULL);
	tdestroy(w->troot, region_keep);
	pthread_rwlock_destroy(&w->lock);
	for (t = 0; t < MAX_THREADS; t++)
		free(w->addrs[t]);
	free(w->picks);
	free(w->gaps);
	free(w->regions);
	free(w);
}

/* Set the 3 one-page pieces of @r into which tree_replace splits it. */
static void pieces_set(struct world *w, const struct region *r)
{
	unsigned int k;

	for (k = 0; k < 3; k++) {
		w->pieces[k].start = r->start + k * (ENTRY_SIZE / 3);
		w->pieces[k].end = w->pieces[k].start + ENTRY_SIZE / 3;
	}
}

/* ---- vmr ---------------------------------------------------------------- */

static uint64_t vmr_lookup_loop(struct world *w, struct worker *wk)
{
	const uintptr_t *addrs = wk->addrs;
	uint64_t ops = 0;
	unsigned int k;
	void *v;

	do {
		for (k = 0; k < BATCH; k++, ops++) {
			urcu_memb_read_lock();
			v = vmr_tree_lookup(w->tree,
					    addrs[ops & (NR_ADDRS - 1)], NULL);
			urcu_memb_read_unlock();
			if (!v)
				die("vmr_tree_lookup missed", ENOENT);
		}
	} while (!run_stopped(wk->run));
	return ops;
}

static uint64_t vmr_update_loop(struct world *w, struct worker *wk)
{
	struct region *g;
	uint64_t ops = 0;
	int err;

	do {
		g = &w->gaps[w->picks[ops & (NR_PICKS - 1)]];
		err = vmr_tree_insert(w->tree, g->start, g->end, g);
		if (!err)
			err = vmr_tree_remove(w->tree, g->start, g->end, NULL);
		if (err)
			die("vmr_tree_insert/remove", -err);
		ops++;
	} while (!run_stopped(wk->run));
	return ops;
}

static uint64_t vmr_replace_loop(struct world *w, struct worker *wk)
{
	struct vmr_tree_entry add[3];
	struct region *r;
	uint64_t ops = 0;
	unsigned int k;
	int ret;

	do {
		r = &w->regions[w->picks[(ops / 2) & (NR_PICKS - 1)]];
		pieces_set(w, r);
		for (k = 0; k < 3; k++) {
			add[k].start = w->pieces[k].start;
			add[k].end = w->pieces[k].end;
			add[k].value = &w->pieces[k];
		}
		ret = vmr_tree_replace(w->tree, r->start, r->end, add, 3,
				       NULL, NULL);
		if (ret != 1)
			die("vmr_tree_replace (split)", ret < 0 ? -ret : EIO);
		add[0].start = r->start;
		add[0].end = r->end;
		add[0].value = r;
		ret = vmr_tree_replace(w->tree, r->start, r->end, add, 1,
				       NULL, NULL);
		if (ret != 3)
			die("vmr_tree_replace (merge)", ret < 0 ? -ret : EIO);
		ops += 2;
	} while (!run_stopped(wk->run));
	return ops;
}

/* Wait for the nodes that vmr updates queued through call_rcu(). */
static void vmr_settle(void)
{
	urcu_memb_barrier();
}

/* ---- tsearch under a rwlock --------------------------------------------- */

static uint64_t tsearch_lookup_loop(struct world *w, struct worker *wk)
{
	const uintptr_t *addrs = wk->addrs;
	struct region key;
	uint64_t ops = 0;
	unsigned int k;
	void *v;

	do {
		for (k = 0; k < BATCH; k++, ops++) {
			key.start = addrs[ops & (NR_ADDRS - 1)];
			key.end = key.start + 1;
			pthread_rwlock_rdlock(&w->lock);
			v = tfind(&key, &w->troot, region_cmp);
			pthread_rwlock_unlock(&w->lock);
			if (!v)
				die("tfind missed", ENOENT);
		}
	} while (!run_stopped(wk->run));
	return ops;
}

static uint64_t tsearch_update_loop(struct world *w, struct worker *wk)
{
	struct region *g;
	uint64_t ops = 0;

	do {
		g = &w->gaps[w->picks[ops & (NR_PICKS - 1)]];
		pthread_rwlock_wrlock(&w->lock);
		tsearch_add(w, g);
		pthread_rwlock_unlock(&w->lock);
		pthread_rwlock_wrlock(&w->lock);
		tdelete_must(w, g);
		pthread_rwlock_unlock(&w->lock);
		ops++;
	} while (!run_stopped(wk->run));
	return ops;
}

static uint64_t tsearch_replace_loop(struct world *w, struct worker *wk)
{
	struct region *r;
	uint64_t ops = 0;
	unsigned int k;

	do {
		r = &w->regions[w->picks[(ops / 2) & (NR_PICKS - 1)]];
		pieces_set(w, r);
		pthread_rwlock_wrlock(&w->lock);
		tdelete_must(w, r);
		for (k = 0; k < 3; k++)
			tsearch_add(w, &w->pieces[k]);
		pthread_rwlock_unlock(&w->lock);
		pthread_rwlock_wrlock(&w->lock);
		for (k = 0; k < 3; k++)
			tdelete_must(w, &w->pieces[k]);
		tsearch_add(w, r);
		pthread_rwlock_unlock(&w->lock);
		ops += 2;
	} while (!run_stopped(wk->run));
	return ops;
}

/* Ours first: index 0 is what every ratio is of. */
static const struct impl impls[] = {
	{
		.name = "vmr",
		.loop = { vmr_lookup_loop, vmr_update_loop, vmr_replace_loop },
		.settle = vmr_settle,
	},
	{
		.name = "tsearch_rwlock",
		.loop = { tsearch_lookup_loop, tsearch_update_loop,
			  tsearch_replace_loop },
		.settle = NULL,
	},
};

#define NR_IMPLS (sizeof(impls) / sizeof(impls[0]))

/* ---- running a repetition ----------------------------------------------- */

static void *worker_main(void *arg)
{
	struct worker *wk = arg;
	struct run *r = wk->run;

	bench_pin(wk->cpu);
	urcu_memb_register_thread();
	pthread_barrier_wait(&r->start);
	wk->t0 = bench_now_ns();
	wk->ops = r->loop(r->world, wk);
	wk->t1 = bench_now_ns();
	urcu_memb_unregister_thread();
	return NULL;
}

static void sleep_ms(long ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };

	while (nanosleep(&ts, &ts) && errno == EINTR)
		;
}

/**
 * run_rep() - one timed repetition of one operation of one implementation
 * @w: the world
 * @loop: the implementation's loop for the operation
 * @threads: worker threads, pinned to CPUs 0, 1, ...
 * @ms: how long the workers run
 * @ns_per_op: receives the mean over the workers of their ns per op
 * @mops: receives the workers' total throughput in millions of ops/s: all
 *        their ops over the span from the first start to the last stop
 *        (not a sum of per-thread rates, which overcounts when threads
 *        that share a CPU run at different times)
 *
 * Context: the main thread, outside any read-side critical section.
 */
static void run_rep(struct world *w, loop_fn *loop, unsigned int threads,
		    long ms, double *ns_per_op, double *mops)
{
	struct worker wk[MAX_THREADS];
	uint64_t first = UINT64_MAX, last = 0, ops = 0;
	struct run r;
	unsigned int t;
	int err;

	atomic_init(&r.stop, false);
	r.world = w;
	r.loop = loop;
	err = pthread_barrier_init(&r.start, NULL, threads + 1);
	if (err)
		die("pthread_barrier_init", err);
	for (t = 0; t < threads; t++) {
		memset(&wk[t], 0, sizeof(wk[t]));
		wk[t].run = &r;
		wk[t].addrs = w->addrs[t];
		wk[t].cpu = t;
		err = pthread_create(&wk[t].tid, NULL, worker_main, &wk[t]);
		if (err)
			die("pthread_create", err);
	}
	pthread_barrier_wait(&r.start);
	sleep_ms(ms);
	atomic_store_explicit(&r.stop, true, memory_order_relaxed);

	*ns_per_op = 0;
	for (t = 0; t < threads; t++) {
		pthread_join(wk[t].tid, NULL);
		if (!wk[t].ops || wk[t].t1 <= wk[t].t0)
			die("a worker did no work", EIO);
		*ns_per_op += (double)(wk[t].t1 - wk[t].t0) /
			      (double)wk[t].ops / threads;
		ops += wk[t].ops;
		first = wk[t].t0 < first ? wk[t].t0 : first;
		last = wk[t].t1 > last ? wk[t].t1 : last;
	}
	*mops = (double)ops * 1e3 / (double)(last - first);
	pthread_barrier_destroy(&r.start);
}

/* ---- figures ------------------------------------------------------------ */

/* 1, 2, 4, ... reader threads: at most log2(MAX_THREADS) + 1 counts. */
#define MAX_COUNTS 5

struct figure {
	unsigned int threads;
	double ns_per_op[NR_IMPLS]; /* medians */
	double mops[NR_IMPLS];
};

/**
 * measure() - median figures of one operation at several thread counts
 * @w: the world
 * @op: the operation
 * @f: one figure per thread count, @threads set by the caller
 * @nr: number of figures
 * @reps: repetitions of each
 * @ms: length of each repetition
 *
 * Each repetition runs every thread count and, within it, every
 * implementation in turn, so that drift of the machine hits the ratios
 * between implementations and between thread counts alike.
 */
static void measure(struct world *w, enum op op, struct figure *f,
		    unsigned int nr, int reps, long ms)
{
	double ns[MAX_COUNTS][NR_IMPLS][MAX_REPS];
	double mops[MAX_COUNTS][NR_IMPLS][MAX_REPS];
	unsigned int c, i;
	int rep;

	for (rep = 0; rep < reps; rep++) {
		for (c = 0; c < nr; c++) {
			for (i = 0; i < NR_IMPLS; i++) {
				run_rep(w, impls[i].loop[op], f[c].threads, ms,
					&ns[c][i][rep], &mops[c][i][rep]);
				if (impls[i].settle)
					impls[i].settle();
			}
		}
	}
	for (c = 0; c < nr; c++) {
		for (i = 0; i < NR_IMPLS; i++) {
			f[c].ns_per_op[i] = bench_median(ns[c][i],
							 (size_t)reps);
			f[c].mops[i] = bench_median(mops[c][i], (size_t)reps);
		}
	}
}

/* The lines of figure @f; @one is the 1-thread figure to scale against. */
static void print_figure(enum op op, size_t n, const struct figure *f,
			 const struct figure *one)
{
	char keys[64], metric[64];
	unsigned int i;

	snprintf(keys, sizeof(keys), "threads=%u regions=%zu", f->threads, n);
	for (i = 0; i < NR_IMPLS; i++)
		bench_print(op_names[op], impls[i].name, keys, "ns_per_op",
			    f->ns_per_op[i]);
	if (op == OP_LOOKUP) {
		for (i = 0; i < NR_IMPLS; i++)
			bench_print(op_names[op], impls[i].name, keys, "mops",
				    f->mops[i]);
	}
	if (f != one) {
		for (i = 0; i < NR_IMPLS; i++)
			bench_print(op_names[op], impls[i].name, keys,
				    "scaling_vs_1thread",
				    f->mops[i] / one->mops[i]);
	}
	for (i = 1; i < NR_IMPLS; i++) {
		snprintf(metric, sizeof(metric), "ratio_vs_%s", impls[i].name);
		bench_print(op_names[op], impls[0].name, keys, metric,
			    f->ns_per_op[i] / f->ns_per_op[0]);
	}
}

/* Every figure at one tree size. */
static void bench_size(size_t n, unsigned int max_threads, int reps, long ms)
{
	struct world *w = world_create(n, max_threads, 0x5eed0000u + n);
	struct figure f[MAX_COUNTS];
	long update_ms = ms / 4 > 0 ? ms / 4 : 1;
	unsigned int nr = 0, threads, c;
	enum op op;

	for (threads = 1; threads <= max_threads; threads *= 2)
		f[nr++].threads = threads;
	measure(w, OP_LOOKUP, f, nr, reps, ms);
	for (c = 0; c < nr; c++)
		print_figure(OP_LOOKUP, n, &f[c], &f[0]);

	for (op = OP_UPDATE; op <= OP_REPLACE; op++) {
		f[0].threads = 1;
		measure(w, op, f, 1, reps, update_ms);
		print_figure(op, n, &f[0], &f[0]);
	}
	world_destroy(w);
}

int main(int argc, char **argv)
{
	long reps = bench_opt(argc, argv, "reps", 5);
	long ms = bench_opt(argc, argv, "ms", 200);
	long max_regions = bench_opt(argc, argv, "max-regions", 100000);
	long max_threads = bench_opt(argc, argv, "max-threads", 2);
	size_t i;

	if (reps < 1 || reps > MAX_REPS || ms < 1 || max_regions < 1 ||
	    max_threads < 1 || max_threads > MAX_THREADS) {
		fprintf(stderr, "usage: %s [--reps=1..%d] [--ms=N] "
			"[--max-regions=N] [--max-threads=1..%d]\n",
			argv[0], MAX_REPS, MAX_THREADS);
		return 2;
	}
	urcu_memb_register_thread();
	for (i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		if (sizes[i] <= (size_t)max_regions)
			bench_size(sizes[i], (unsigned int)max_threads,
				   (int)reps, ms);
	}
	urcu_memb_unregister_thread();
	return 0;
}
