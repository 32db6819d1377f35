/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The engine phase: faults, map/unmap/protect, page-wait I/O, RCU readers
 * and space teardown, all at once, on a synthetic space (no real memory).
 *
 * Each round makes a space with a random configuration (lock granularity,
 * retry policy, reader barrier, retry bounds), runs for its share of the
 * run, shuts the space down while faults are in flight, joins everything
 * and checks the books, then destroys the space.  Faults come from
 * --threads fault threads of the round, from short-lived threads that a
 * churn thread keeps starting (their per-space state is orphaned and
 * adopted), and from one veteran thread that lives through every round
 * (spaces are destroyed and created under it).
 *
 * Layout (page indices from BASE, PG bytes each):
 *   [0, NMAIN)          the main area: one writer maps (with and without
 *                       MAP_REPLACE), unmaps and protects random ranges;
 *   [NMAIN, WIN0)       a gap never mapped (faults there must SIGSEGV);
 *   [WIN0, WIN0 + NWIN) the window: always covered; its writer only ever
 *                       replaces ranges of it atomically (MAP_REPLACE) or
 *                       protects them (splits), never unmaps.
 *
 * The model.  Every vmr_map() gets a fresh generation number; the pieces
 * an update cuts from a region keep its generation (our open() copies it),
 * so a generation names "what the page shows".  Per page, the writer that
 * owns it publishes an atomic word: the current generation, and while an
 * update of the page is under way, the pending one (set before the call,
 * folded into current after it returns).  Each writer owns its pages, so
 * the word is exact.
 *
 * Invariants checked continuously (stress_violation() records them):
 *  - a handler never runs on a closed region (our close() marks the
 *    region's record; close runs only once no fault can reach it);
 *  - holding the space lock, or the fine-grained lock of a whole region
 *    (VMR_LOCK_REGION), the region is not detached: a writer marks the
 *    region and waits for every read lock on it before it publishes and
 *    detaches (rangelock.c), and a writer holds the space lock for write
 *    from before the publish to after the detach.  Holding only its pages
 *    (VMR_LOCK_RANGE), the region may be detached by an update elsewhere
 *    in it (map.c: "faults holding pages of a cut region outside the range
 *    go on"), so there the check is the next one;
 *  - the faulting address lies in [vm_start, vm_end), and the region the
 *    tree maps that address to *now* is the same region (space lock,
 *    region lock) or one showing the same thing there (range lock: same
 *    generation, protection and backing offset): no update that touches
 *    the held page can publish while the lock is held;
 *  - no stale install: the generation a handler installs is the page's
 *    current or pending one (an update can only have returned after the
 *    lock was dropped, and a region it made is only reachable after its
 *    publish, after the pending generation was set), and never older than
 *    one installed before it;
 *  - page contents: the page-wait handler reads "the store" into a cache
 *    entry under the page lock (word by word, with yields between), and
 *    checks before installing that the entry holds this generation's
 *    contents, untorn; the page lock is checked exclusive by a counter;
 *  - readers walk the whole tree under RCU, forward and backward: entries
 *    sorted, no overlap, each region's bounds those of its entry and its
 *    record not closed (close waits a grace period), and the window
 *    covered without a hole; they also read the counters while all this
 *    runs, which must never go down;
 *  - the main area's writer checks after each update that the tree shows
 *    its model, and that map without REPLACE and protect fail exactly when
 *    the model says (-EEXIST on overlap, -ENOMEM over a hole);
 *  - every fault returns (the watchdog: STRESS_STUCK_S), with a result
 *    its flags allow (RETRY only with RETRY_NOWAIT or after shutdown,
 *    never SIGBUS: our handlers never fail).
 *
 * The handler and the region callbacks are in stress_handler.c, the
 * shared layout in stress_engine.h.  Readers and handlers open their RCU
 * sections with vmr_rcu_read_lock(), whose unlock tells ThreadSanitizer
 * about the grace period (lib/tsan.h).
 *
 * Checked at each teardown, after joining every thread: the space lock is
 * idle and no read lock is held, no page is locked or pinned, the
 * library's counters match ours (faults, each result class, handler calls,
 * page reads, bad results), vmr_space_destroy() succeeds, and every region
 * made (mapped or opened) was closed exactly once.
 */
#include "stress_engine.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <urcu/urcu-memb.h>

/* ---- fault threads ------------------------------------------------------- */

static void classify(struct round *R, vmr_fault_t res, unsigned int flags,
		     uintptr_t a)
{
	const vmr_fault_t known = VMR_FAULT_MAJOR | VMR_FAULT_NOPAGE |
				  VMR_FAULT_SIGSEGV | VMR_FAULT_COMPLETED |
				  VMR_FAULT_RETRY | VMR_FAULT_RETRY_VMA;

	if (res & ~known)
		stress_violation("fault at %#" PRIxPTR " (flags %#x) returned "
				 "%#x", a, flags, res);
	if ((res & VMR_FAULT_RETRY) &&
	    !(flags & VMR_FAULT_FLAG_RETRY_NOWAIT) &&
	    !atomic_load(&R->shutting))
		stress_violation("fault at %#" PRIxPTR " (flags %#x) returned "
				 "%#x: unfinished without NOWAIT or shutdown",
				 a, flags, res);
	/* The same classes as the engine's count_result(). */
	if (!res)
		atomic_fetch_add(&R->res_ok, 1);
	else if (res & VMR_FAULT_SIGSEGV)
		atomic_fetch_add(&R->res_sigsegv, 1);
	else if (res & VMR_FAULT_SIGBUS)
		atomic_fetch_add(&R->res_sigbus, 1);
	else if (res & VMR_FAULT_OOM)
		atomic_fetch_add(&R->res_oom, 1);
	else if (res & VMR_FAULT_RETRY)
		atomic_fetch_add(&R->res_unfinished, 1);
	else if (res & VMR_FAULT_COMPLETED)
		atomic_fetch_add(&R->res_completed, 1);
	else if (res & VMR_FAULT_NOPAGE)
		atomic_fetch_add(&R->res_nopage, 1);
	else
		atomic_fetch_add(&R->res_ok, 1);
	/* Gap pages and the (never mapped) gap must SIGSEGV. */
	if (page_of(a) >= NMAIN && page_of(a) < WIN0 &&
	    !(res & (VMR_FAULT_SIGSEGV | VMR_FAULT_RETRY)))
		stress_violation("fault in the gap at %#" PRIxPTR " returned "
				 "%#x", a, res);
}

/* One fault at a random address with random flags, recorded. */
static void fault_once(struct round *R, struct vmr_rng *rng,
		       struct stress_beat *beat)
{
	uintptr_t a = BASE + vmr_rng_below(rng, (uint64_t)NP * PG);
	unsigned int f = VMR_FAULT_FLAG_DEFAULT | VMR_FAULT_FLAG_USER;
	uint64_t dice = vmr_rng_next(rng);
	vmr_fault_t res = 0;
	int err;

	if (dice % 4 == 0)
		f |= VMR_FAULT_FLAG_WRITE;
	else if (dice % 32 == 1)
		f |= VMR_FAULT_FLAG_INSTRUCTION;
	if ((dice >> 8) % 16 == 0)
		f |= VMR_FAULT_FLAG_RETRY_NOWAIT;
	else if ((dice >> 8) % 16 == 1)
		f &= ~VMR_FAULT_FLAG_ALLOW_RETRY;
	stress_beat_begin(beat, a);
	err = vmr_handle_fault(R->space, a, f, NULL, &res);
	stress_beat_end(beat);
	atomic_fetch_add(&R->faults, 1);
	if (err) {
		stress_violation("vmr_handle_fault(%#" PRIxPTR ", %#x): %d", a,
				 f, err);
		return;
	}
	classify(R, res, f, a);
	/* After shutdown every fault returns at once: do not let them
	 * swamp the counts. */
	if (atomic_load_explicit(&R->shutting, memory_order_relaxed))
		usleep(1000);
}

static void *fault_main(void *arg)
{
	struct thread *t = arg;
	struct round *R = t->round;
	struct vmr_rng rng;

	vmr_rng_init(&rng, t->seed);
	urcu_memb_register_thread();
	while (!atomic_load_explicit(&R->stop, memory_order_relaxed))
		fault_once(R, &rng, &t->beat);
	urcu_memb_unregister_thread();
	return NULL;
}

/*
 * Thread churn: short-lived threads that fault a little and exit, so that
 * their per-space state is orphaned and adopted (lib/thread.c) while
 * writers scan it and the counters are summed: the counts of a thread
 * that has exited must still add up at teardown.
 */
struct child {
	struct round *R;
	uint64_t seed;
	unsigned int faults;
	struct stress_beat *beat;
};

static void *child_main(void *arg)
{
	struct child *c = arg;
	struct vmr_rng rng;

	vmr_rng_init(&rng, c->seed);
	urcu_memb_register_thread();
	for (unsigned int i = 0; i < c->faults &&
	     !atomic_load_explicit(&c->R->stop, memory_order_relaxed); i++)
		fault_once(c->R, &rng, c->beat);
	urcu_memb_unregister_thread();
	return NULL;
}

static void *churn_main(void *arg)
{
	struct thread *t = arg;
	struct round *R = t->round;
	struct stress_beat child_beat;
	struct vmr_rng rng;

	vmr_rng_init(&rng, t->seed);
	stress_beat_register(&child_beat, "churned fault thread", t->id);
	while (!atomic_load_explicit(&R->stop, memory_order_relaxed)) {
		struct child c = {
			.R = R,
			.seed = vmr_rng_next(&rng),
			.faults = 1 + (unsigned int)vmr_rng_below(&rng, 200),
			.beat = &child_beat,
		};
		pthread_t tid;

		if (pthread_create(&tid, NULL, child_main, &c)) {
			stress_violation("pthread_create failed in churn");
			break;
		}
		/* Its faults are watched through child_beat. */
		pthread_join(tid, NULL);
	}
	stress_beat_unregister(&child_beat);
	return NULL;
}

/*
 * The veteran: one fault thread that lives through every round, so that
 * spaces are created and destroyed under a thread bound to them (a
 * space's teardown must drop the thread's binding, and a new space, maybe
 * at the same address, must not be taken for the old one).  Each round
 * hands it the round through `veteran_round`; once the round stops, the
 * veteran clears it and never touches the round again, and the round
 * waits for that before it checks or destroys anything.
 */
static _Atomic(struct round *) veteran_round;
static atomic_bool veteran_exit;
static struct stress_beat veteran_beat;

static void *veteran_main(void *arg)
{
	struct vmr_rng rng;

	(void)arg;
	vmr_rng_init(&rng, stress_opts.seed ^ 0x7e7e);
	urcu_memb_register_thread();
	while (!atomic_load(&veteran_exit)) {
		struct round *R = atomic_load(&veteran_round);

		if (!R) {
			usleep(200);
			continue;
		}
		while (!atomic_load_explicit(&R->stop, memory_order_relaxed))
			fault_once(R, &rng, &veteran_beat);
		atomic_store(&veteran_round, NULL); /* R is not ours any more */
	}
	urcu_memb_unregister_thread();
	return NULL;
}

/* ---- writers ------------------------------------------------------------- */

static unsigned int random_prot(struct vmr_rng *rng, bool never_none)
{
	static const unsigned int prots[] = {
		VMR_PROT_READ | VMR_PROT_WRITE,
		VMR_PROT_READ,
		VMR_PROT_READ | VMR_PROT_EXEC,
		VMR_PROT_READ | VMR_PROT_WRITE | VMR_PROT_EXEC,
		VMR_PROT_NONE,
	};

	return prots[vmr_rng_below(rng, never_none ? 4 : 5)];
}

static void set_pending(struct round *R, size_t p, size_t n, uint32_t gen)
{
	for (size_t q = p; q < p + n; q++) {
		uint64_t w = atomic_load(&R->pstate[q]);

		atomic_store(&R->pstate[q], (uint32_t)w | (uint64_t)gen << 32);
	}
}

static void set_current(struct round *R, size_t p, size_t n, uint32_t gen)
{
	for (size_t q = p; q < p + n; q++)
		atomic_store(&R->pstate[q], gen);
}

static void drop_pending(struct round *R, size_t p, size_t n)
{
	for (size_t q = p; q < p + n; q++)
		atomic_store(&R->pstate[q],
			     (uint32_t)atomic_load(&R->pstate[q]));
}

static int do_map(struct round *R, struct thread *t, struct vmr_rng *rng,
		  size_t p, size_t n, unsigned int flags, bool never_none)
{
	uint32_t gen = atomic_fetch_add(&R->next_gen, 1);
	struct vmr_region_desc d = {
		.start = PAGE_ADDR(p),
		.len = n * PG,
		.prot = random_prot(rng, never_none),
		.offset = (uint64_t)p * PG,
		.ops = &stress_region_ops,
		.ops_size = sizeof(stress_region_ops),
		.policy = (enum vmr_retry_policy)vmr_rng_below(rng, 4),
	};
	int err;

	d.private_data = stress_new_rec(R, gen, (enum kind)vmr_rng_below(rng,
								   NR_KINDS));
	set_pending(R, p, n, gen);
	stress_beat_begin(&t->beat, d.start);
	err = vmr_map(R->space, &d, sizeof(d), flags);
	stress_beat_end(&t->beat);
	if (err) {
		drop_pending(R, p, n);
		return err;
	}
	set_current(R, p, n, gen);
	atomic_fetch_add(&R->maps_ok, 1);
	/* The old mapping's cached pages go (those not locked or pinned). */
	for (size_t q = p; q < p + n; q++)
		vmr_page_evict(R->map, q);
	return 0;
}

/* The tree shows the main area's model exactly (only we change it). */
static void check_main_model(struct round *R, size_t p, size_t n,
			     const char *op)
{
	size_t lo = p > 0 ? p - 1 : 0, hi = p + n < NMAIN ? p + n + 1 : NMAIN;

	vmr_rcu_read_lock(NULL);
	for (size_t q = lo; q < hi; q++) {
		const struct vmr_region *r =
			vmr_space_find_region(R->space, PAGE_ADDR(q));
		uint32_t cur = (uint32_t)atomic_load(&R->pstate[q]);
		uint32_t gen = r ? ((const struct rec *)vmr_region_private(r))
					   ->gen :
				   0;

		if (gen != cur) {
			stress_violation("after %s [%zu, %zu): page %zu shows "
					 "gen %u, model %u", op, p, p + n, q,
					 gen, cur);
			break;
		}
	}
	vmr_rcu_read_unlock(NULL);
}

static void *main_writer(void *arg)
{
	struct thread *t = arg;
	struct round *R = t->round;
	struct vmr_rng rng;

	vmr_rng_init(&rng, t->seed);
	urcu_memb_register_thread();
	while (!atomic_load_explicit(&R->stop, memory_order_relaxed)) {
		size_t n = 1 + vmr_rng_below(&rng, 16);
		size_t p = vmr_rng_below(&rng, NMAIN - n + 1);
		unsigned int op = (unsigned int)vmr_rng_below(&rng, 8);
		bool hole = false, any = false;
		const char *name;
		int err, want;

		for (size_t q = p; q < p + n; q++) {
			if ((uint32_t)atomic_load(&R->pstate[q]))
				any = true;
			else
				hole = true;
		}
		if (op < 3) {
			name = "map replace";
			want = 0;
			err = do_map(R, t, &rng, p, n, VMR_MAP_REPLACE, false);
		} else if (op == 3) {
			name = "map";
			want = any ? -EEXIST : 0;
			err = do_map(R, t, &rng, p, n, 0, false);
		} else if (op < 6) {
			name = "unmap";
			want = 0;
			set_pending(R, p, n, 0);
			stress_beat_begin(&t->beat, PAGE_ADDR(p));
			err = vmr_unmap(R->space, PAGE_ADDR(p), n * PG);
			stress_beat_end(&t->beat);
			if (!err)
				set_current(R, p, n, 0);
		} else {
			name = "protect";
			want = hole ? -ENOMEM : 0;
			stress_beat_begin(&t->beat, PAGE_ADDR(p));
			err = vmr_protect(R->space, PAGE_ADDR(p), n * PG,
					  random_prot(&rng, false));
			stress_beat_end(&t->beat);
		}
		if (err != want)
			stress_violation("%s [%zu, %zu) returned %d, expected "
					 "%d", name, p, p + n, err, want);
		check_main_model(R, p, n, name);
		atomic_fetch_add(&R->updates, 1);
		if (vmr_rng_below(&rng, 4) == 0)
			usleep((useconds_t)vmr_rng_below(&rng, 300));
	}
	urcu_memb_unregister_thread();
	return NULL;
}

static void *window_writer(void *arg)
{
	struct thread *t = arg;
	struct round *R = t->round;
	struct vmr_rng rng;

	vmr_rng_init(&rng, t->seed);
	urcu_memb_register_thread();
	while (!atomic_load_explicit(&R->stop, memory_order_relaxed)) {
		size_t n = 1 + vmr_rng_below(&rng, NWIN / 2);
		size_t p = WIN0 + vmr_rng_below(&rng, NWIN - n + 1);
		int err;

		if (vmr_rng_below(&rng, 2)) {
			err = do_map(R, t, &rng, p, n, VMR_MAP_REPLACE, false);
		} else {
			stress_beat_begin(&t->beat, PAGE_ADDR(p));
			err = vmr_protect(R->space, PAGE_ADDR(p), n * PG,
					  random_prot(&rng, false));
			stress_beat_end(&t->beat);
		}
		if (err)
			stress_violation("window update [%zu, %zu): %d", p,
					 p + n, err);
		atomic_fetch_add(&R->updates, 1);
		if (vmr_rng_below(&rng, 4) == 0)
			usleep((useconds_t)vmr_rng_below(&rng, 300));
	}
	urcu_memb_unregister_thread();
	return NULL;
}

/* ---- readers ------------------------------------------------------------- */

static void reader_walk(struct round *R)
{
	const uintptr_t w0 = PAGE_ADDR(WIN0), w1 = PAGE_ADDR(WIN0 + NWIN);
	struct vmr_tree_iter it;
	struct vmr_tree_entry e;
	uintptr_t prev_end = 0, covered = w0;
	bool first = true, hole = false;

	vmr_rcu_read_lock(NULL);
	vmr_tree_iter_start(&it, R->space->tree, 0);
	while (vmr_tree_iter_next(&it, &e)) {
		const struct vmr_region *r = e.value;
		const struct rec *rec = vmr_region_private(r);

		if (e.start >= e.end || (!first && e.start < prev_end)) {
			stress_violation("reader: entry [%#" PRIxPTR ", %#"
					 PRIxPTR ") after one ending at %#"
					 PRIxPTR ": overlap", e.start, e.end,
					 prev_end);
			break;
		}
		if (vmr_region_start(r) != e.start ||
		    vmr_region_end(r) != e.end)
			stress_violation("reader: entry [%#" PRIxPTR ", %#"
					 PRIxPTR ") holds region [%#" PRIxPTR
					 ", %#" PRIxPTR ")", e.start, e.end,
					 vmr_region_start(r),
					 vmr_region_end(r));
		if (atomic_load(&rec->magic) != REC_LIVE)
			stress_violation("reader: closed region gen %u still "
					 "reachable under RCU", rec->gen);
		/* The window: entries meeting it must tile it. */
		if (e.end > w0 && e.start < w1) {
			if (e.start > covered)
				hole = true;
			if (e.end > covered)
				covered = e.end;
		}
		prev_end = e.end;
		first = false;
	}
	vmr_rcu_read_unlock(NULL);
	if (hole || covered < w1)
		stress_violation("reader: hole in the window [%#" PRIxPTR
				 ", %#" PRIxPTR "): covered to %#" PRIxPTR,
				 w0, w1, covered);
	atomic_fetch_add(&R->reader_walks, 1);
}

/* The same walk backwards, from the top (vmr_tree_iter_prev()). */
static void reader_walk_back(struct round *R)
{
	const uintptr_t w0 = PAGE_ADDR(WIN0), w1 = PAGE_ADDR(WIN0 + NWIN);
	struct vmr_tree_iter it;
	struct vmr_tree_entry e;
	uintptr_t prev_start = UINTPTR_MAX, covered = w1;
	bool hole = false;

	vmr_rcu_read_lock(NULL);
	vmr_tree_iter_start(&it, R->space->tree, UINTPTR_MAX);
	while (vmr_tree_iter_prev(&it, &e)) {
		if (e.start >= e.end || e.end > prev_start) {
			stress_violation("reader: entry [%#" PRIxPTR ", %#"
					 PRIxPTR ") before one starting at %#"
					 PRIxPTR
					 " (walking back): overlap", e.start,
					 e.end, prev_start);
			break;
		}
		if (e.end > w0 && e.start < w1) {
			if (e.end < covered)
				hole = true;
			if (e.start < covered)
				covered = e.start;
		}
		prev_start = e.start;
	}
	vmr_rcu_read_unlock(NULL);
	if (hole || covered > w0)
		stress_violation("reader: hole in the window [%#" PRIxPTR
				 ", %#" PRIxPTR ") walking back: covered "
				 "from %#" PRIxPTR, w0, w1, covered);
	atomic_fetch_add(&R->reader_walks, 1);
}

/*
 * The counters, read while everything runs: each is exact as of some
 * moment during the call (stats.h), so none ever goes down between two
 * reads by the same thread.
 */
static void stats_check(struct round *R, struct vmr_stats *last)
{
	struct vmr_stats st;
	const uint64_t *a = (const uint64_t *)last, *b = (const uint64_t *)&st;

	if (vmr_space_stats(R->space, &st, sizeof(st))) {
		stress_violation("vmr_space_stats failed while running");
		return;
	}
	for (size_t i = 0; i < sizeof(st) / sizeof(uint64_t); i++)
		if (b[i] < a[i]) {
			stress_violation("stats counter %zu went from %" PRIu64
					 " down to %" PRIu64, i, a[i], b[i]);
			break;
		}
	*last = st;
}

static void *reader_main(void *arg)
{
	struct thread *t = arg;
	struct round *R = t->round;
	struct vmr_stats last = { 0 };
	unsigned long n = 0;

	urcu_memb_register_thread();
	while (!atomic_load_explicit(&R->stop, memory_order_relaxed)) {
		stress_beat_begin(&t->beat, 0);
		if (n++ % 2)
			reader_walk_back(R);
		else
			reader_walk(R);
		if (n % 16 == 0)
			stats_check(R, &last);
		stress_beat_end(&t->beat);
		sched_yield();
	}
	urcu_memb_unregister_thread();
	return NULL;
}

/* ---- one round ----------------------------------------------------------- */

#define CHECK_EQ(what, a, b)                                                   \
	do {                                                                  \
		uint64_t a_ = (a), b_ = (b);                                  \
		if (a_ != b_)                                                 \
			stress_violation("round %u: %s: %" PRIu64 " != %"    \
					 PRIu64, round_no, what, a_, b_);     \
	} while (0)

static void check_books(struct round *R, unsigned int round_no)
{
	struct vmr_stats st;
	uint64_t results;

	if (vmr_space_stats(R->space, &st, sizeof(st))) {
		stress_violation("vmr_space_stats failed");
		return;
	}
	results = st.result_ok + st.result_nopage + st.result_completed +
		  st.result_sigsegv + st.result_sigbus + st.result_oom +
		  st.result_unfinished;
	CHECK_EQ("faults counted vs made", st.faults, atomic_load(&R->faults));
	CHECK_EQ("results vs faults", results, st.faults);
	CHECK_EQ("result_ok", st.result_ok, atomic_load(&R->res_ok));
	CHECK_EQ("result_nopage", st.result_nopage,
		 atomic_load(&R->res_nopage));
	CHECK_EQ("result_completed", st.result_completed,
		 atomic_load(&R->res_completed));
	CHECK_EQ("result_sigsegv", st.result_sigsegv,
		 atomic_load(&R->res_sigsegv));
	CHECK_EQ("result_sigbus", st.result_sigbus, 0);
	CHECK_EQ("result_oom", st.result_oom, 0);
	CHECK_EQ("result_unfinished", st.result_unfinished,
		 atomic_load(&R->res_unfinished));
	CHECK_EQ("bad_results", st.bad_results, 0);
	/*
	 * Every attempt either calls the handler or ends in SIGSEGV
	 * without it (our handlers never return SIGSEGV): fine-grained
	 * attempts are vma_lock_success (handler without RETRY, or an access
	 * error) plus vma_lock_retry; space-lock attempts are
	 * space_lock_faults (handler, or no region / access error).
	 */
	CHECK_EQ("handler calls vs attempts", atomic_load(&R->handler_calls),
		 st.vma_lock_success + st.vma_lock_retry +
			 st.space_lock_faults - st.result_sigsegv);
	CHECK_EQ("page reads", st.page_reads, atomic_load(&R->page_reads));
	if (st.page_rereads > st.page_reads)
		stress_violation("round %u: page_rereads %" PRIu64 " > "
				 "page_reads %" PRIu64, round_no,
				 st.page_rereads, st.page_reads);
	if (st.result_major > st.faults - st.result_sigsegv -
				      st.result_unfinished)
		stress_violation("round %u: result_major %" PRIu64 " above "
				 "the finished faults", round_no,
				 st.result_major);
	if (st.vma_retries > st.vma_lock_retry)
		stress_violation("round %u: vma_retries %" PRIu64 " > "
				 "vma_lock_retry %" PRIu64, round_no,
				 st.vma_retries, st.vma_lock_retry);
	if (st.space_write_locks < atomic_load(&R->updates))
		stress_violation("round %u: %" PRIu64 " space write locks for "
				 "%lu updates", round_no, st.space_write_locks,
				 atomic_load(&R->updates));
}

static void check_idle(struct round *R, unsigned int round_no)
{
	if (vmr_space_is_write_locked(R->space))
		stress_violation("round %u: space lock held for write at "
				 "teardown", round_no);
	if (!vmr_space_lock_is_idle(&R->space->lock))
		stress_violation("round %u: space lock not idle at teardown",
				 round_no);
	if (vmr_readers_busy(R->space))
		stress_violation("round %u: a VMA-range read lock is still "
				 "held at teardown", round_no);
	for (size_t p = 0; p < NP; p++) {
		if (vmr_page_pinned(R->map, p))
			stress_violation("round %u: page %zu still pinned",
					 round_no, p);
		if (atomic_load(&R->page_holders[p]) ||
		    !vmr_page_trylock(R->map, p)) {
			stress_violation("round %u: page %zu still locked",
					 round_no, p);
			continue;
		}
		vmr_page_unlock(R->map, p);
	}
}

static void start(struct thread *t, struct round *R, unsigned int id,
		  const char *who, void *(*fn)(void *))
{
	t->round = R;
	t->id = id;
	t->seed = R->seed + id * 7919u;
	stress_beat_register(&t->beat, who, id);
	if (pthread_create(&t->tid, NULL, fn, t)) {
		fprintf(stderr, "stress: pthread_create failed\n");
		exit(1);
	}
}

static int make_space(struct round *R, struct vmr_rng *rng,
		      unsigned int round_no)
{
	struct vmr_space_config cfg = {
		.page_size = PG,
		.granularity = (enum vmr_lock_granularity)vmr_rng_below(rng,
									   2),
		.barrier = (enum vmr_reader_barrier)vmr_rng_below(rng, 3),
		.policy = (enum vmr_retry_policy)vmr_rng_below(rng, 4),
		.vma_retry_max = (unsigned int)vmr_rng_below(rng, 5),
		.space_retry_max = (unsigned int)vmr_rng_below(rng, 9),
		.flags = vmr_rng_below(rng, 2) ? VMR_SPACE_TIME_FAULTS : 0,
	};
	int err = vmr_space_create(&cfg, sizeof(cfg), &R->space);

	if (err == -ENOSYS && cfg.barrier == VMR_BARRIER_MEMBARRIER) {
		cfg.barrier = VMR_BARRIER_FENCE;
		err = vmr_space_create(&cfg, sizeof(cfg), &R->space);
	}
	if (err) {
		fprintf(stderr, "stress: vmr_space_create: %s\n",
			strerror(-err));
		return err;
	}
	R->granularity = cfg.granularity;
	printf("stress: round %u: granularity %s, barrier %d, policy %d, "
	       "vma_retry_max %u, space_retry_max %u\n",
	       round_no,
	       cfg.granularity == VMR_LOCK_REGION ? "region" : "range",
	       (int)cfg.barrier, (int)cfg.policy, cfg.vma_retry_max,
	       cfg.space_retry_max);
	err = vmr_pagemap_create(R->space, NP, &R->map);
	if (err) {
		fprintf(stderr, "stress: vmr_pagemap_create: %s\n",
			strerror(-err));
		vmr_space_destroy(R->space);
		return err;
	}
	return 0;
}

static int run_round(unsigned int round_no, double seconds)
{
	struct round *R = calloc(1, sizeof(*R));
	unsigned int nf = stress_opts.threads, id = 0;
	struct thread *t;
	size_t nt = nf + 5; /* faults, churn, two writers, two readers */
	struct vmr_rng rng;
	int err;

	if (!R)
		return -ENOMEM;
	t = calloc(nt, sizeof(*t));
	if (!t) {
		free(R);
		return -ENOMEM;
	}
	vmr_rng_init(&rng, stress_opts.seed ^ ((uint64_t)round_no << 48));
	atomic_init(&R->next_gen, 1);
	R->seed = vmr_rng_next(&rng);
	R->round_no = round_no;
	err = make_space(R, &rng, round_no);
	if (err) {
		free(t);
		free(R);
		return err;
	}
	stress_cur_round = R;
	/* The window, whole, and a few regions of the main area. */
	{
		struct thread self = { .round = R };

		stress_beat_register(&self.beat, "setup", 0);
		if (do_map(R, &self, &rng, WIN0, NWIN, 0, false))
			stress_violation("cannot map the window");
		for (size_t p = 0; p < NMAIN; p += 32)
			if (do_map(R, &self, &rng, p, 16, 0, false))
				stress_violation("cannot map [%zu, %zu)", p,
						 p + 16);
		stress_beat_unregister(&self.beat);
	}
	for (unsigned int i = 0; i < nf; i++, id++)
		start(&t[id], R, id, "fault thread", fault_main);
	start(&t[id], R, id, "churn", churn_main);
	id++;
	start(&t[id], R, id, "main writer", main_writer);
	id++;
	start(&t[id], R, id, "window writer", window_writer);
	id++;
	start(&t[id], R, id, "reader", reader_main);
	id++;
	start(&t[id], R, id, "reader", reader_main);
	id++;

	atomic_store(&veteran_round, R);
	stress_watch(seconds);
	/* Teardown with everything running: faults must all return. */
	atomic_store(&R->shutting, true);
	vmr_space_shutdown(R->space);
	stress_watch(seconds / 20 < 0.05 ? seconds / 20 : 0.05);
	atomic_store(&R->stop, true);
	for (size_t i = 0; i < nt; i++) {
		stress_join(t[i].tid, t[i].beat.who);
		stress_beat_unregister(&t[i].beat);
	}
	{
		double start_s = stress_now();

		while (atomic_load(&veteran_round)) {
			if (stress_now() - start_s > STRESS_STUCK_S) {
				stress_violation("round %u: the veteran fault "
						 "thread never left the round",
						 round_no);
				stress_report("engine");
				exit(1);
			}
			stress_watch(0.001);
		}
	}

	check_idle(R, round_no);
	check_books(R, round_no);
	printf("stress: round %u: %lu faults (%lu handler calls, %lu page "
	       "reads, %lu unfinished), %lu updates, %lu reader walks\n",
	       round_no, atomic_load(&R->faults),
	       atomic_load(&R->handler_calls), atomic_load(&R->page_reads),
	       atomic_load(&R->res_unfinished), atomic_load(&R->updates),
	       atomic_load(&R->reader_walks));
	vmr_pagemap_destroy(R->map);
	err = vmr_space_destroy(R->space);
	if (err)
		stress_violation("round %u: vmr_space_destroy: %d", round_no,
				 err);
	/* Every region made was closed, once (destroy waited for them). */
	if (!err && atomic_load(&R->closes) !=
			    atomic_load(&R->opens) + atomic_load(&R->maps_ok))
		stress_violation("round %u: %lu closes for %lu maps and %lu "
				 "opens", round_no, atomic_load(&R->closes),
				 atomic_load(&R->maps_ok),
				 atomic_load(&R->opens));
	if (!err) {
		for (struct rec *rec = atomic_load(&R->recs), *next; rec;
		     rec = next) {
			next = rec->all_next;
			free(rec);
		}
		free(R);
	}
	/* A space destroy refused leaves R and its records to leak: the
	 * run fails anyway, and its regions may still point at them. */
	stress_cur_round = NULL;
	free(t);
	return 0;
}

int stress_engine_phase(void)
{
	double per = stress_opts.seconds / stress_opts.rounds;
	unsigned int ran = 0;
	pthread_t veteran;

	urcu_memb_register_thread();
	stress_beat_register(&veteran_beat, "veteran fault thread", 0);
	if (pthread_create(&veteran, NULL, veteran_main, NULL)) {
		fprintf(stderr, "stress: pthread_create failed\n");
		return 1;
	}
	for (unsigned int i = 0; i < stress_opts.rounds; i++) {
		int err = run_round(i, per);

		if (err) {
			fprintf(stderr, "stress: round %u could not run: %s\n",
				i, strerror(-err));
			break;
		}
		ran++;
		if (stress_violations())
			break;
	}
	atomic_store(&veteran_exit, true);
	stress_join(veteran, "veteran fault thread");
	stress_beat_unregister(&veteran_beat);
	urcu_memb_unregister_thread();
	if (stress_violations())
		return 1;
	return ran ? 0 : 77;
}
