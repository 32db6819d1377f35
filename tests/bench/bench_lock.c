/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * bench_lock - the read side of a fault's region lock: VMA-range read locks
 * against mmap_lock, the kernel's per-VMA reference count and a Concurrency
 * Kit rwlock per region.
 *
 * What is measured
 * ----------------
 * One op is what a fault does to hold its region and let it go again, with
 * nothing done while it is held: find the region of one page-aligned
 * address, read-lock it for one page, unlock.  Reader threads do ops back
 * to back on precomputed random pages; the figure is the total ops per
 * second of all readers together.  Every implementation looks the address
 * up in a vmr space's region tree (the same layout in every space, the same
 * addresses), so only the locking around the lookup differs:
 *
 *   vmr             vmr_range_read_lock(space, addr, page) +
 *                   vmr_range_read_unlock() on a space with the default
 *                   config (VMR_LOCK_REGION, VMR_BARRIER_AUTO): the lookup,
 *                   its RCU section, the reader-slot claim, publish and
 *                   check, and the release, all inside the library
 *                   (which inlines urcu-memb's read lock, as the
 *                   baselines below do);
 *   vmr_range       the same on a space with VMR_LOCK_RANGE;
 *   vmr_membarrier  the same on a space with VMR_BARRIER_MEMBARRIER
 *                   (skipped, with a message on stderr, where
 *                   vmr_space_create() says -ENOSYS);
 *   rwlock          one global pthread_rwlock_t read-locked around
 *                   vmr_space_find_region() (mmap_lock before per-VMA
 *                   locks); safe without RCU because every update runs
 *                   under its write side.  It prefers writers
 *                   (PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP) as
 *                   mmap_lock does; glibc's default would let the readers
 *                   starve the writer;
 *   refcount        the kernel's vm_refcnt (vma_start_read() since 6.15):
 *                   a lookup under urcu-memb's inline read lock, then a CAS
 *                   loop that increments the region's counter unless it is
 *                   0 (detached) or has the writer bit (VMA_LOCK_OFFSET),
 *                   RCU unlock, and a decrement to unlock;
 *   ck              a ck_rwlock_t per region: lookup under RCU,
 *                   ck_rwlock_read_lock() (which spins while a writer holds
 *                   it), RCU unlock, a check that the region is still
 *                   attached, ck_rwlock_read_unlock().
 *
 * refcount and ck keep their per-region state in a side table of
 * cache-line-sized entries, one per region (found through the region's
 * private data), and use the default space for the lookup and the space
 * lock.  A reader whose lock fails (vmr_range_read_lock() returning
 * -EBUSY, -ENOENT or -EAGAIN, or a refcount with the writer bit set) does
 * what a fault engine does: vmr_space_read_lock() + vmr_space_find_region()
 * + vmr_space_read_unlock(), counted as an op and as a fallback.  An op
 * whose lookup finds nothing, under either lock, kills the benchmark:
 * readers only touch regions that stay mapped.
 *
 * Cases
 * -----
 * Every space holds 10000 regions of 64 pages (one-page holes between
 * them) and one region of 65536 pages after them.
 *
 *   disjoint         reader t faults at random pages of its own 64-page
 *                    region (regions spread over the 10000);
 *   shared           every reader faults at random pages of the big
 *                    region: the case where a per-region counter is one
 *                    cache line that every fault writes;
 *   disjoint_writer, shared_writer
 *                    the same while one writer thread loops over 64
 *                    16-page slots in an address range above all of
 *                    that, which no reader touches: vmr_map() a region,
 *                    vmr_protect() its first half read-only (a split),
 *                    vmr_unmap() it (the Douyin-style contention: faults
 *                    on the region lock while another thread changes the
 *                    layout).  Each of the three calls takes the space
 *                    lock for write, write-locks its range and scans the
 *                    reader slots, as the library always does; around each
 *                    the writer also takes what its implementation's
 *                    readers take: rwlock write-locks the global rwlock;
 *                    refcount sets the writer bit on the slot's counter
 *                    and spins (sched_yield) until the readers drain, and
 *                    on unmap leaves it 0 (detached); ck write-locks the
 *                    slot's ck_rwlock_t.  The vmr impls add nothing.
 *                    writer_ops_per_s counts those calls (3 per loop).
 *
 * Reader t is pinned to CPU t (bench_pin); the writer is pinned to the
 * last CPU this process may use, so with fewer readers than CPUs it runs
 * beside them, and with as many it shares that CPU with the last reader
 * (on a 2-CPU machine: threads=1 has reader on CPU 0, writer on CPU 1;
 * threads=2 has the writer sharing CPU 1 with reader 1).  The main thread
 * is not pinned; it sleeps while a run is timed.
 *
 * On the 2-vCPU development VMs a busy thread on one vCPU slows a thread
 * on the other by 40-70% even when they share no memory (a plain ALU loop
 * does it), so scaling_vs_1thread and vs_no_writer measured there say as
 * much about the VM as about the locks: take those from a many-core
 * machine (DESIGN.md, "Measuring scale"), and ratios between
 * implementations, which run under the same conditions, from anywhere.
 *
 * How
 * ---
 * Thread counts are 1, 2, 4, ... up to --max-threads (default: the online
 * CPUs), which is also counted if it is not a power of two.  Every figure
 * is the median of --reps repetitions (default 5) of --ms milliseconds
 * (default 200).  Each repetition runs every case, thread count and
 * implementation once, the implementations in an order rotated by one at
 * each repetition, so that drift of the machine hits every ratio, every
 * scaling figure and every with/without-writer pair alike.  Threads are
 * created for each run and start together on a pthread barrier; the main
 * thread sleeps, raises a stop flag, and joins them.  Each thread times
 * itself and checks the flag every 64 ops; ops_per_s is the readers' total
 * ops over the span from the first start to the last stop.  Per-thread
 * counts live in registers and land in a cache-line-aligned worker struct
 * at the end.  The page addresses are drawn before any clock starts (one
 * array per reader per case kind, 65536 entries, used in a loop).  After
 * each run with a writer, the main thread waits for the regions and tree
 * nodes it retired to be freed (urcu_memb_barrier()), untimed.
 *
 * Output: one line per figure, e.g. (one line each)
 *   BENCH bench=lock case=shared impl=vmr threads=2
 *         metric=ops_per_s value=4.1e+07
 *   ... metric=fallbacks_per_mop   fallbacks per million ops
 *   ... metric=scaling_vs_1thread  n-thread ops/s / 1-thread ops/s
 *   ... metric=writer_ops_per_s    writer cases: the writer's calls per s
 *   ... metric=vs_no_writer        writer cases: ops/s with the writer /
 *                                  ops/s without, same impl and threads
 *   BENCH bench=lock case=shared impl=vmr threads=2
 *         metric=ratio_vs_refcount value=1.9
 * where ratio_vs_<impl> is vmr's ops/s / <impl>'s (medians): above 1 means
 * vmr wins.  A progress line per repetition goes to stderr.
 *
 * Options: --reps=N, --ms=N, --max-threads=N.
 */
#define _LGPL_SOURCE
#include <urcu/urcu-memb.h>

#include <vmaretry.h>

#include "bench.h"
#include "bench_baseline.h"

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define CACHELINE 64

/* Layout, in pages of the space: the same in every space. */
#define NR_SMALL 10000u  /* disjoint regions */
#define SMALL_PAGES 64u
#define SMALL_STRIDE 65u /* one-page hole after each */
#define BIG_PAGES 65536u /* the shared region */
#define W_SLOTS 64u      /* the writer's slots */
#define W_PAGES 16u
#define W_STRIDE 32u
#define BASE_PAGE 256u   /* first page of the first region */
#define GAP_PAGES 1024u  /* between the three areas */

/* Side-table entries: small regions, the big one, the writer's slots. */
#define BIG_INDEX NR_SMALL
#define W_INDEX (NR_SMALL + 1u)
#define NR_SIDES (W_INDEX + W_SLOTS)

/* Precomputed random pages per reader. */
#define NR_ADDRS (1u << 16)

/* Ops between two looks at the stop flag. */
#define BATCH 64

#define MAX_THREADS 64
#define MAX_REPS 64
#define MAX_COUNTS 8 /* 1, 2, 4, ... 64, and one more */

enum space_id { SPACE_DEFAULT, SPACE_RANGE, SPACE_MEMBARRIER, NR_SPACES };

enum addr_kind { ADDRS_DISJOINT, ADDRS_SHARED, NR_KINDS };

enum bench_case {
	CASE_DISJOINT,
	CASE_SHARED,
	CASE_DISJOINT_WRITER,
	CASE_SHARED_WRITER,
	NR_CASES
};

static const char *const case_names[NR_CASES] = {
	"disjoint", "shared", "disjoint_writer", "shared_writer",
};

static inline enum addr_kind case_addrs(enum bench_case c)
{
	return c == CASE_SHARED || c == CASE_SHARED_WRITER ? ADDRS_SHARED :
							     ADDRS_DISJOINT;
}

static inline bool case_has_writer(enum bench_case c)
{
	return c >= CASE_DISJOINT_WRITER;
}

/* What every run shares, built once. */
struct world {
	size_t page;
	uintptr_t small_base, big_start, w_base;
	struct vmr_space *space[NR_SPACES]; /* NULL: unavailable here */
	struct bench_side *side;            /* NR_SIDES entries */
	pthread_rwlock_t rwlock;            /* the rwlock baseline */
	uintptr_t *addrs[NR_KINDS][MAX_THREADS];
};

/* One reader or the writer; padded so that no two share a cache line. */
struct worker {
	pthread_t tid;
	struct run *run;
	const uintptr_t *addrs;
	unsigned int cpu;
	uint64_t ops;
	uint64_t fallbacks;
	uint64_t t0; /* when it began, after the barrier */
	uint64_t t1; /* when it saw the stop flag */
} __attribute__((aligned(CACHELINE)));

typedef uint64_t reader_fn(struct worker *wk);

enum update { UPD_MAP, UPD_PROTECT, UPD_UNMAP };

typedef void update_fn(struct world *w, struct bench_side *s,
		       enum update u);

struct impl {
	const char *name;
	enum space_id space;
	reader_fn *reader;
	update_fn *update_begin; /* around each writer call; may be NULL */
	update_fn *update_end;
};

/* One run: what its threads share. */
struct run {
	atomic_bool stop __attribute__((aligned(CACHELINE)));
	struct world *world;
	const struct impl *impl;
	struct vmr_space *space;
	pthread_barrier_t start;
};

static _Noreturn void die(const char *what, int err)
{
	fprintf(stderr, "bench_lock: %s: %s\n", what, strerror(err));
	exit(1);
}

static inline bool run_stopped(const struct run *r)
{
	return atomic_load_explicit(&r->stop, memory_order_relaxed);
}

/*
 * The fault engine's fallback: the space lock for read and a lookup under
 * it (the kernel's lock_mm_and_find_vma()).
 */
static void fault_fallback(struct vmr_space *space, uintptr_t addr)
{
	int err = vmr_space_read_lock(space);

	if (err)
		die("vmr_space_read_lock", -err);
	if (!vmr_space_find_region(space, addr))
		die("fallback lookup missed", ENOENT);
	vmr_space_read_unlock(space);
}

/* ---- readers ------------------------------------------------------------ */

/* vmr, vmr_range, vmr_membarrier: only the space differs. */
static uint64_t vmr_reader(struct worker *wk)
{
	struct vmr_space *space = wk->run->space;
	const uintptr_t *addrs = wk->addrs;
	size_t page = wk->run->world->page;
	uint64_t ops = 0, fallbacks = 0;
	struct vmr_range_lock lk;
	unsigned int k;
	uintptr_t a;
	int ret;

	do {
		for (k = 0; k < BATCH; k++, ops++) {
			a = addrs[ops & (NR_ADDRS - 1)];
			ret = vmr_range_read_lock(space, a, page, &lk);
			if (__builtin_expect(!ret, 1)) {
				if (vmr_range_read_unlock(&lk))
					die("vmr_range_read_unlock", EINVAL);
				continue;
			}
			if (ret == -EINVAL)
				die("vmr_range_read_lock", EINVAL);
			fault_fallback(space, a);
			fallbacks++;
		}
	} while (!run_stopped(wk->run));
	wk->fallbacks = fallbacks;
	return ops;
}

static uint64_t rwlock_reader(struct worker *wk)
{
	pthread_rwlock_t *lock = &wk->run->world->rwlock;
	struct vmr_space *space = wk->run->space;
	const uintptr_t *addrs = wk->addrs;
	struct vmr_region *r;
	uint64_t ops = 0;
	unsigned int k;

	do {
		for (k = 0; k < BATCH; k++, ops++) {
			pthread_rwlock_rdlock(lock);
			r = vmr_space_find_region(space,
						  addrs[ops & (NR_ADDRS - 1)]);
			pthread_rwlock_unlock(lock);
			if (!r)
				die("lookup missed", ENOENT);
		}
	} while (!run_stopped(wk->run));
	wk->fallbacks = 0;
	return ops;
}

/*
 * refcount: vma_start_read()'s __refcount_inc_not_zero_limited_acquire():
 * no reader gets in while the region is detached (0) or write-locked.
 * The kernel then re-checks the VMA against the address (its VMAs are
 * SLAB_TYPESAFE_BY_RCU); our regions are not reused under RCU.
 */
static uint64_t refcount_reader(struct worker *wk)
{
	struct vmr_space *space = wk->run->space;
	const uintptr_t *addrs = wk->addrs;
	uint64_t ops = 0, fallbacks = 0;
	struct vmr_region *r;
	struct bench_side *s;
	unsigned int k;
	uintptr_t a;
	bool held;

	do {
		for (k = 0; k < BATCH; k++, ops++) {
			a = addrs[ops & (NR_ADDRS - 1)];
			urcu_memb_read_lock();
			r = vmr_space_find_region(space, a);
			if (!r)
				die("lookup missed", ENOENT);
			s = vmr_region_private(r);
			held = bench_refcount_read_trylock(s);
			urcu_memb_read_unlock();
			if (__builtin_expect(held, 1)) {
				bench_refcount_read_unlock(s);
				continue;
			}
			fault_fallback(space, a);
			fallbacks++;
		}
	} while (!run_stopped(wk->run));
	wk->fallbacks = fallbacks;
	return ops;
}

static uint64_t ck_reader(struct worker *wk)
{
	struct vmr_space *space = wk->run->space;
	const uintptr_t *addrs = wk->addrs;
	uint64_t ops = 0, fallbacks = 0;
	struct vmr_region *r;
	struct bench_side *s;
	unsigned int k;
	uintptr_t a;

	do {
		for (k = 0; k < BATCH; k++, ops++) {
			a = addrs[ops & (NR_ADDRS - 1)];
			urcu_memb_read_lock();
			r = vmr_space_find_region(space, a);
			if (!r)
				die("lookup missed", ENOENT);
			s = vmr_region_private(r);
			ck_rwlock_read_lock(&s->ck);
			urcu_memb_read_unlock();
			if (__builtin_expect(!vmr_region_is_detached(r), 1)) {
				ck_rwlock_read_unlock(&s->ck);
				continue;
			}
			/* Unmapped between the lookup and the lock. */
			ck_rwlock_read_unlock(&s->ck);
			fault_fallback(space, a);
			fallbacks++;
		}
	} while (!run_stopped(wk->run));
	wk->fallbacks = fallbacks;
	return ops;
}

/* ---- what each writer takes besides the library's own locks ------------- */

static void rwlock_update_begin(struct world *w, struct bench_side *s,
                                enum update u)
{
	(void)s;
	(void)u;
	pthread_rwlock_wrlock(&w->rwlock);
}

static void rwlock_update_end(struct world *w, struct bench_side *s,
                              enum update u)
{
	(void)s;
	(void)u;
	pthread_rwlock_unlock(&w->rwlock);
}

/* vma_start_write(): set the writer bit, wait for the readers to drain. */
static void refcount_update_begin(struct world *w, struct bench_side *s,
				  enum update u)
{
	(void)w;
	if (u == UPD_MAP)
		bench_refcount_write_lock_new(s);
	else
		bench_refcount_write_lock(s);
}

static void refcount_update_end(struct world *w, struct bench_side *s,
                                enum update u)
{
	(void)w;
	bench_refcount_write_unlock(s, u == UPD_UNMAP);
}

static void ck_update_begin(struct world *w, struct bench_side *s,
                            enum update u)
{
	(void)w;
	(void)u;
	ck_rwlock_write_lock(&s->ck);
}

static void ck_update_end(struct world *w, struct bench_side *s,
                          enum update u)
{
	(void)w;
	(void)u;
	ck_rwlock_write_unlock(&s->ck);
}

/* Ours first: index 0 is what every ratio is of. */
static const struct impl impls[] = {
	{ "vmr", SPACE_DEFAULT, vmr_reader, NULL, NULL },
	{ "vmr_range", SPACE_RANGE, vmr_reader, NULL, NULL },
	{ "vmr_membarrier", SPACE_MEMBARRIER, vmr_reader, NULL, NULL },
	{ "rwlock", SPACE_DEFAULT, rwlock_reader, rwlock_update_begin,
	  rwlock_update_end },
	{ "refcount", SPACE_DEFAULT, refcount_reader, refcount_update_begin,
	  refcount_update_end },
	{ "ck", SPACE_DEFAULT, ck_reader, ck_update_begin, ck_update_end },
};

#define NR_IMPLS (sizeof(impls) / sizeof(impls[0]))

/* ---- the writer ---------------------------------------------------------- */

static void update_begin(struct run *r, struct bench_side *s, enum update u)
{
	if (r->impl->update_begin)
		r->impl->update_begin(r->world, s, u);
}

static void update_end(struct run *r, struct bench_side *s, enum update u)
{
	if (r->impl->update_end)
		r->impl->update_end(r->world, s, u);
}

/* Map, protect half, unmap, over the writer's slots in turn. */
static uint64_t writer_loop(struct worker *wk)
{
	struct run *r = wk->run;
	struct world *w = r->world;
	struct vmr_region_desc desc;
	size_t len = W_PAGES * w->page;
	uint64_t ops = 0;
	unsigned int j = 0;
	struct bench_side *s;
	int err;

	memset(&desc, 0, sizeof(desc));
	desc.len = len;
	desc.prot = VMR_PROT_READ | VMR_PROT_WRITE;
	do {
		desc.start = w->w_base + (uintptr_t)j * W_STRIDE * w->page;
		s = &w->side[W_INDEX + j];
		desc.private_data = s;

		update_begin(r, s, UPD_MAP);
		err = vmr_map(r->space, &desc, sizeof(desc), 0);
		update_end(r, s, UPD_MAP);
		if (err)
			die("vmr_map (writer)", -err);

		update_begin(r, s, UPD_PROTECT);
		err = vmr_protect(r->space, desc.start, len / 2, VMR_PROT_READ);
		update_end(r, s, UPD_PROTECT);
		if (err)
			die("vmr_protect (writer)", -err);

		update_begin(r, s, UPD_UNMAP);
		err = vmr_unmap(r->space, desc.start, len);
		update_end(r, s, UPD_UNMAP);
		if (err)
			die("vmr_unmap (writer)", -err);

		ops += 3;
		j = (j + 1) % W_SLOTS;
	} while (!run_stopped(r));
	return ops;
}

/* ---- running one repetition ---------------------------------------------- */

static void *reader_main(void *arg)
{
	struct worker *wk = arg;
	struct run *r = wk->run;

	bench_pin(wk->cpu);
	vmr_space_register_thread(r->space);
	pthread_barrier_wait(&r->start);
	wk->t0 = bench_now_ns();
	wk->ops = r->impl->reader(wk);
	wk->t1 = bench_now_ns();
	vmr_space_unregister_thread(r->space);
	return NULL;
}

static void *writer_main(void *arg)
{
	struct worker *wk = arg;
	struct run *r = wk->run;

	bench_pin(wk->cpu);
	vmr_space_register_thread(r->space);
	pthread_barrier_wait(&r->start);
	wk->t0 = bench_now_ns();
	wk->ops = writer_loop(wk);
	wk->t1 = bench_now_ns();
	vmr_space_unregister_thread(r->space);
	return NULL;
}

/* One run's figures. */
struct sample {
	double ops_per_s;
	double fallbacks_per_mop;
	double writer_ops_per_s; /* 0 without a writer */
};

static void spawn(struct worker *wk, struct run *r, const uintptr_t *addrs,
		  unsigned int cpu, void *(*fn)(void *))
{
	int err;

	memset(wk, 0, sizeof(*wk));
	wk->run = r;
	wk->addrs = addrs;
	wk->cpu = cpu;
	err = pthread_create(&wk->tid, NULL, fn, wk);
	if (err)
		die("pthread_create", err);
}

/**
 * run_rep() - one timed run of one implementation on one case
 * @w: the world
 * @impl: the implementation
 * @c: the case
 * @threads: reader threads, pinned to CPUs 0, 1, ...
 * @ms: how long they run
 * @out: receives the run's figures
 *
 * Context: the main thread, registered with urcu-memb, outside any
 * read-side critical section.
 */
static void run_rep(struct world *w, const struct impl *impl,
		    enum bench_case c, unsigned int threads, long ms,
		    struct sample *out)
{
	struct worker wk[MAX_THREADS + 1];
	uint64_t first = UINT64_MAX, last = 0, ops = 0, fallbacks = 0;
	bool writer = case_has_writer(c);
	unsigned int t, n = threads + writer;
	struct run r;
	int err;

	atomic_init(&r.stop, false);
	r.world = w;
	r.impl = impl;
	r.space = w->space[impl->space];
	err = pthread_barrier_init(&r.start, NULL, n + 1);
	if (err)
		die("pthread_barrier_init", err);
	for (t = 0; t < threads; t++)
		spawn(&wk[t], &r, w->addrs[case_addrs(c)][t], t, reader_main);
	if (writer)
		spawn(&wk[threads], &r, NULL, bench_nr_cpus() - 1,
		      writer_main);
	pthread_barrier_wait(&r.start);
	bench_sleep_ms(ms);
	atomic_store_explicit(&r.stop, true, memory_order_relaxed);

	for (t = 0; t < n; t++) {
		pthread_join(wk[t].tid, NULL);
		if (!wk[t].ops || wk[t].t1 <= wk[t].t0)
			die("a thread did no work", EIO);
	}
	for (t = 0; t < threads; t++) {
		ops += wk[t].ops;
		fallbacks += wk[t].fallbacks;
		first = wk[t].t0 < first ? wk[t].t0 : first;
		last = wk[t].t1 > last ? wk[t].t1 : last;
	}
	out->ops_per_s = (double)ops * 1e9 / (double)(last - first);
	out->fallbacks_per_mop = (double)fallbacks * 1e6 / (double)ops;
	out->writer_ops_per_s =
		writer ? (double)wk[threads].ops * 1e9 /
				 (double)(wk[threads].t1 - wk[threads].t0) :
			 0;
	pthread_barrier_destroy(&r.start);
	/* Untimed: free what the writer retired before the next run. */
	if (writer)
		urcu_memb_barrier();
}

/* ---- the world ------------------------------------------------------------ */

static void *xalloc(size_t align, size_t size)
{
	void *p = NULL;

	if (posix_memalign(&p, align, size))
		die("posix_memalign", ENOMEM);
	return p;
}

static uintptr_t small_start(const struct world *w, unsigned int i)
{
	return w->small_base + (uintptr_t)i * SMALL_STRIDE * w->page;
}

/* The disjoint region of reader @t: spread over the small regions. */
static unsigned int reader_region(unsigned int t)
{
	return t * (NR_SMALL / MAX_THREADS) + 1;
}

static void map_one(struct vmr_space *space, uintptr_t start, size_t len,
		    struct bench_side *s)
{
	struct vmr_region_desc desc;
	int err;

	memset(&desc, 0, sizeof(desc));
	desc.start = start;
	desc.len = len;
	desc.prot = VMR_PROT_READ | VMR_PROT_WRITE;
	desc.private_data = s;
	err = vmr_map(space, &desc, sizeof(desc), 0);
	if (err)
		die("vmr_map", -err);
}

/* A space of the layout above; NULL if the kernel lacks what it needs. */
static struct vmr_space *space_create(struct world *w, enum space_id id)
{
	struct vmr_space_config cfg;
	struct vmr_space *space;
	unsigned int i;
	int err;

	memset(&cfg, 0, sizeof(cfg));
	if (id == SPACE_RANGE)
		cfg.granularity = VMR_LOCK_RANGE;
	if (id == SPACE_MEMBARRIER)
		cfg.barrier = VMR_BARRIER_MEMBARRIER;
	/* The default space gets no config at all. */
	if (id == SPACE_DEFAULT)
		err = vmr_space_create(NULL, 0, &space);
	else
		err = vmr_space_create(&cfg, sizeof(cfg), &space);
	if (err == -ENOSYS && id == SPACE_MEMBARRIER) {
		fprintf(stderr, "bench_lock: impl=vmr_membarrier skipped: "
			"membarrier(PRIVATE_EXPEDITED) is not available\n");
		return NULL;
	}
	if (err)
		die("vmr_space_create", -err);
	for (i = 0; i < NR_SMALL; i++)
		map_one(space, small_start(w, i), SMALL_PAGES * w->page,
			&w->side[i]);
	map_one(space, w->big_start, BIG_PAGES * w->page,
		&w->side[BIG_INDEX]);
	return space;
}

/**
 * world_create() - the spaces, the side table and the random pages
 * @max_threads: readers to draw page arrays for
 * @seed: seed of every random choice
 *
 * Context: a thread registered with urcu-memb.
 */
static struct world *world_create(unsigned int max_threads, uint64_t seed)
{
	struct world *w = xalloc(CACHELINE, sizeof(*w));
	uint64_t rng = seed, end_page;
	uintptr_t base;
	unsigned int t, i, k;
	long sys_page;
	int err;

	memset(w, 0, sizeof(*w));
	sys_page = sysconf(_SC_PAGESIZE);
	w->page = sys_page > 0 ? (size_t)sys_page : 4096;
	end_page = BASE_PAGE + (uint64_t)NR_SMALL * SMALL_STRIDE + GAP_PAGES +
		   BIG_PAGES + GAP_PAGES + (uint64_t)W_SLOTS * W_STRIDE;
	if (end_page > UINTPTR_MAX / w->page)
		die("the layout does not fit the address space", E2BIG);
	w->small_base = BASE_PAGE * w->page;
	w->big_start = small_start(w, NR_SMALL) + GAP_PAGES * w->page;
	w->w_base = w->big_start + (BIG_PAGES + GAP_PAGES) * w->page;

	w->side = xalloc(CACHELINE, NR_SIDES * sizeof(*w->side));
	/* Readers' regions attached; the writer's slots not mapped. */
	for (i = 0; i < NR_SIDES; i++)
		bench_side_init(&w->side[i], i < W_INDEX);
	err = bench_rwlock_init(&w->rwlock);
	if (err)
		die("pthread_rwlock_init", err);

	for (t = 0; t < max_threads; t++) {
		for (k = 0; k < NR_KINDS; k++)
			w->addrs[k][t] = xalloc(CACHELINE,
						NR_ADDRS * sizeof(uintptr_t));
		base = small_start(w, reader_region(t));
		for (i = 0; i < NR_ADDRS; i++) {
			w->addrs[ADDRS_DISJOINT][t][i] =
				base + (uintptr_t)(bench_rand(&rng) %
						   SMALL_PAGES) * w->page;
			w->addrs[ADDRS_SHARED][t][i] =
				w->big_start + (uintptr_t)(bench_rand(&rng) %
							   BIG_PAGES) * w->page;
		}
	}
	for (i = 0; i < NR_SPACES; i++)
		w->space[i] = space_create(w, (enum space_id)i);
	return w;
}

/* Context: a thread registered with urcu-memb, outside any read section. */
static void world_destroy(struct world *w)
{
	unsigned int i, t, k;
	int err;

	for (i = 0; i < NR_SPACES; i++) {
		err = vmr_space_destroy(w->space[i]);
		if (err)
			die("vmr_space_destroy", -err);
	}
	pthread_rwlock_destroy(&w->rwlock);
	for (k = 0; k < NR_KINDS; k++)
		for (t = 0; t < MAX_THREADS; t++)
			free(w->addrs[k][t]);
	free(w->side);
	free(w);
}

/* ---- figures --------------------------------------------------------------- */

/* Every run's samples: [case][thread count][impl][rep]. */
struct results {
	unsigned int nr_counts;
	unsigned int counts[MAX_COUNTS];
	int reps;
	struct sample s[NR_CASES][MAX_COUNTS][NR_IMPLS][MAX_REPS];
};

/* Medians of one (case, count, impl) cell. */
static struct sample cell_median(struct results *res, enum bench_case c,
				 unsigned int k, unsigned int i)
{
	double v[3][MAX_REPS];
	struct sample m;
	int rep;

	for (rep = 0; rep < res->reps; rep++) {
		v[0][rep] = res->s[c][k][i][rep].ops_per_s;
		v[1][rep] = res->s[c][k][i][rep].fallbacks_per_mop;
		v[2][rep] = res->s[c][k][i][rep].writer_ops_per_s;
	}
	m.ops_per_s = bench_median(v[0], (size_t)res->reps);
	m.fallbacks_per_mop = bench_median(v[1], (size_t)res->reps);
	m.writer_ops_per_s = bench_median(v[2], (size_t)res->reps);
	return m;
}

static bool impl_available(const struct world *w, unsigned int i)
{
	return w->space[impls[i].space] != NULL;
}

static void print_case(struct world *w, struct results *res,
		       enum bench_case c)
{
	struct sample m[MAX_COUNTS][NR_IMPLS], base;
	char head[32], keys[32], metric[64];
	const char *name;
	unsigned int k, i;

	for (k = 0; k < res->nr_counts; k++)
		for (i = 0; i < NR_IMPLS; i++)
			m[k][i] = cell_median(res, c, k, i);
	snprintf(head, sizeof(head), "case=%s", case_names[c]);
	for (k = 0; k < res->nr_counts; k++) {
		snprintf(keys, sizeof(keys), "threads=%u", res->counts[k]);
		for (i = 0; i < NR_IMPLS; i++) {
			if (!impl_available(w, i))
				continue;
			name = impls[i].name;
			bench_print_keys("lock", head, name, keys, "ops_per_s",
					 m[k][i].ops_per_s);
			bench_print_keys("lock", head, name, keys,
					 "fallbacks_per_mop",
					 m[k][i].fallbacks_per_mop);
			if (k > 0)
				bench_print_keys("lock", head, name, keys,
						 "scaling_vs_1thread",
						 m[k][i].ops_per_s /
							 m[0][i].ops_per_s);
			if (!case_has_writer(c))
				continue;
			base = cell_median(res, c - CASE_DISJOINT_WRITER, k, i);
			bench_print_keys("lock", head, name, keys,
					 "vs_no_writer",
					 m[k][i].ops_per_s / base.ops_per_s);
			bench_print_keys("lock", head, name, keys,
					 "writer_ops_per_s",
					 m[k][i].writer_ops_per_s);
		}
		for (i = 1; i < NR_IMPLS; i++) {
			if (!impl_available(w, i))
				continue;
			snprintf(metric, sizeof(metric), "ratio_vs_%s",
				 impls[i].name);
			bench_print_keys("lock", head, impls[0].name, keys,
					 metric,
					 m[k][0].ops_per_s / m[k][i].ops_per_s);
		}
	}
}

/**
 * measure() - every run of every repetition, interleaved
 * @w: the world
 * @res: the thread counts and reps, filled with the samples
 * @ms: length of each run
 *
 * Each repetition runs every case, thread count and implementation once;
 * the implementations' order rotates by one per repetition.
 */
static void measure(struct world *w, struct results *res, long ms)
{
	unsigned int k, j, i;
	int rep, c;

	for (rep = 0; rep < res->reps; rep++) {
		fprintf(stderr, "bench_lock: repetition %d/%d\n", rep + 1,
			res->reps);
		for (c = 0; c < NR_CASES; c++) {
			for (k = 0; k < res->nr_counts; k++) {
				for (j = 0; j < NR_IMPLS; j++) {
					i = (j + (unsigned int)rep) % NR_IMPLS;
					if (!impl_available(w, i))
						continue;
					run_rep(w, &impls[i],
						(enum bench_case)c,
						res->counts[k], ms,
						&res->s[c][k][i][rep]);
				}
			}
		}
	}
}

int main(int argc, char **argv)
{
	long online = sysconf(_SC_NPROCESSORS_ONLN);
	long reps = bench_opt(argc, argv, "reps", 5);
	long ms = bench_opt(argc, argv, "ms", 200);
	long max_threads;
	struct results *res;
	struct world *w;
	unsigned int n;
	int c;

	if (online < 1)
		online = 1;
	if (online > MAX_THREADS)
		online = MAX_THREADS;
	max_threads = bench_opt(argc, argv, "max-threads", online);
	if (reps < 1 || reps > MAX_REPS || ms < 1 || max_threads < 1 ||
	    max_threads > MAX_THREADS) {
		fprintf(stderr, "usage: %s [--reps=1..%d] [--ms=N] "
			"[--max-threads=1..%d]\n", argv[0], MAX_REPS,
			MAX_THREADS);
		return 2;
	}
	res = xalloc(CACHELINE, sizeof(*res));
	memset(res, 0, sizeof(*res));
	res->reps = (int)reps;
	for (n = 1; n < (unsigned int)max_threads; n *= 2)
		res->counts[res->nr_counts++] = n;
	res->counts[res->nr_counts++] = (unsigned int)max_threads;

	urcu_memb_register_thread();
	w = world_create((unsigned int)max_threads, 0x10c4b3e5u);
	measure(w, res, ms);
	for (c = 0; c < NR_CASES; c++)
		print_case(w, res, (enum bench_case)c);
	world_destroy(w);
	free(res);
	urcu_memb_unregister_thread();
	return 0;
}
