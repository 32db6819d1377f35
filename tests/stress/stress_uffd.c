/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The uffd phase: the userfaultfd runtime (vmr_uffd_*) on real memory,
 * with real page faults, for the length of the run, torn down and rebuilt
 * each round.
 *
 * Each round: a space with a random retry policy and lock granularity, a
 * runtime with two handler threads, and an anonymous mapping of NPAGES
 * pages registered in MISSING mode (sometimes FAST_STORE) over a store
 * whose every 8-byte word is a function of (page, word) with no zero
 * byte, read with short random sleeps.  Toucher threads read random words
 * and check each against the store (a zero page, a page from the wrong
 * offset, a torn or garbage page all show); a zapper thread drops random
 * ranges with MADV_DONTNEED, a REMOVE event where the kernel sends it,
 * which the runtime applies to the space (under its write lock, racing
 * the faults of the other pages) and which makes the range read as zero;
 * the zapper then puts the range back under the store (zap()), so that
 * pages fault again (one round in four runs without events, and one with
 * every event but REMOVE: the zap is then only the madvise()).  Touchers
 * only read, and keep off a range while it is being zapped: the contents
 * they see must always be the store's.
 *
 * With --hot the area is HOT_PAGES pages and the zapper never rests, so
 * that events, duplicate messages and retries meet on the same pages far
 * more often (and so the lock orders of the runtime are tried harder).
 *
 * Every touch must return: a wake the runtime loses leaves the toucher
 * asleep in the kernel, which the watchdog reports (STRESS_STUCK_S) with
 * the seed.  At the end of a round: the runtime's and the space's counters
 * (no store error, no poisoned page, no SIGBUS, no bad handler result,
 * the results adding up, some pages copied), then vmr_uffd_destroy(), and
 * vmr_space_destroy() must succeed (no lock left held).
 *
 * Where the kernel refuses userfaultfd the phase says why and the program
 * exits 77; under valgrind (VMR_TEST_VALGRIND set) too: valgrind runs one
 * thread at a time, and a thread faulting on uffd memory would block the
 * handler threads for good.
 */
#include "stress.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/userfaultfd.h>
#include <sys/mman.h>
#include <unistd.h>
#include <urcu/urcu-memb.h>

#include "mm.h"

/* Pages of the area; --hot: few pages, zapped back to back. */
#define NPAGES 256u
#define HOT_PAGES 16u
#define TOUCHERS_MAX 64

struct uround {
	size_t pg;
	size_t npages; /* NPAGES, or HOT_PAGES with --hot */
	unsigned char *mem;
	struct vmr_space *space;
	struct vmr_uffd *uffd;
	unsigned int mode;
	bool removes; /* the runtime gets REMOVE events */
	atomic_bool flux[NPAGES];     /* being zapped: touchers keep off */
	atomic_uint readers[NPAGES];  /* touchers reading the page */
	atomic_bool stop;
	atomic_ulong reads, touches, zaps;
	uint64_t seed;
};

struct uthread {
	struct uround *U;
	pthread_t tid;
	unsigned int id;
	struct stress_beat beat;
};

static uint64_t uword(size_t page, size_t j)
{
	uint64_t x = ((uint64_t)page + 1) * 0x9e3779b97f4a7c15ull ^
		     (j * 0xbf58476d1ce4e5b9ull);

	/* No zero byte: a zero-filled page never matches. */
	return x | 0x0101010101010101ull;
}

static int store_read(void *store, uint64_t off, void *buf, size_t len)
{
	struct uround *U = store;
	size_t page = off / U->pg;
	uint64_t *w = buf;
	unsigned long n = atomic_fetch_add(&U->reads, 1);

	if (off % U->pg || len != U->pg || page >= U->npages) {
		stress_violation("uffd store read at offset %#" PRIx64
				 " length %zu", off, len);
		return -EINVAL;
	}
	for (size_t j = 0; j < len / sizeof(*w); j++)
		w[j] = uword(page, j);
	if ((n ^ page) % 4 == 0)
		usleep((useconds_t)((n * 31 + page) % 200));
	return 0;
}

static const struct vmr_uffd_store_ops store_ops = { .read = store_read };

/*
 * A poisoned page (UFFDIO_POISON) reads as SIGBUS: catch it on the
 * toucher that made the read and record it, with the page, instead of
 * dying without the seed.
 */
static _Thread_local sigjmp_buf *touch_jump;

static void on_sigbus(int sig)
{
	if (!touch_jump) {
		signal(sig, SIG_DFL);
		raise(sig);
		return;
	}
	siglongjmp(*touch_jump, 1);
}

static void *toucher_main(void *arg)
{
	struct uthread *t = arg;
	struct uround *U = t->U;
	struct vmr_rng rng;
	sigjmp_buf jb;

	vmr_rng_init(&rng, U->seed + t->id * 7919u);
	touch_jump = &jb;
	while (!atomic_load_explicit(&U->stop, memory_order_relaxed)) {
		size_t page = vmr_rng_below(&rng, U->npages);
		size_t j = vmr_rng_below(&rng, U->pg / sizeof(uint64_t));
		volatile uint64_t *w =
			(volatile uint64_t *)(U->mem + page * U->pg) + j;
		uint64_t v;

		/* Dekker with the zapper (seq_cst both sides): it sets flux,
		 * then waits for readers; we count ourselves, then look. */
		atomic_fetch_add(&U->readers[page], 1);
		if (atomic_load(&U->flux[page])) {
			atomic_fetch_sub(&U->readers[page], 1);
			continue;
		}
		stress_beat_begin(&t->beat, (uintptr_t)w);
		if (sigsetjmp(jb, 1)) {
			stress_beat_end(&t->beat);
			atomic_fetch_sub(&U->readers[page], 1);
			stress_violation("uffd page %zu (%p) read as SIGBUS: "
					 "poisoned while mapped and registered",
					 page, (void *)w);
			continue;
		}
		v = *w;
		stress_beat_end(&t->beat);
		atomic_fetch_sub(&U->readers[page], 1);
		if (v != uword(page, j))
			stress_violation("uffd page %zu word %zu holds %#"
					 PRIx64 ", store has %#" PRIx64, page,
					 j, v, uword(page, j));
		atomic_fetch_add(&U->touches, 1);
	}
	touch_jump = NULL;
	return NULL;
}

/* Whether the space still has a region meeting [p, p + n). */
static bool mapped_in_space(struct uround *U, size_t p, size_t n)
{
	bool any = false;

	vmr_rcu_read_lock(NULL);
	for (size_t q = p; q < p + n && !any; q++)
		any = vmr_space_find_region(U->space,
					    (uintptr_t)(U->mem + q * U->pg));
	vmr_rcu_read_unlock(NULL);
	return any;
}

/*
 * One zap: MADV_DONTNEED over [p, p + n), which the runtime turns into
 * "discarded: reads as zero from now on" (REMOVE: the range is
 * unregistered and unmapped from the space), then put the range back
 * under the store (drop the pages again, vmr_uffd_map()), so that reads
 * are the store's again.  Touchers keep off the range meanwhile (flux),
 * because a read while it is unregistered would map the zero page, which
 * a later registration cannot see missing.  Without EVENT_REMOVE the range
 * stays registered, and its pages simply fault again.
 */
static void zap(struct uthread *t, size_t p, size_t n)
{
	struct uround *U = t->U;
	void *a = U->mem + p * U->pg;
	double deadline;
	int err;

	stress_beat_begin(&t->beat, (uintptr_t)a);
	for (size_t q = p; q < p + n; q++)
		atomic_store(&U->flux[q], true);
	for (size_t q = p; q < p + n; q++)
		while (atomic_load(&U->readers[q]))
			sched_yield();
	if (madvise(a, n * U->pg, MADV_DONTNEED))
		stress_violation("madvise(DONTNEED): %s", strerror(errno));
	if (U->removes) {
		/* The runtime applies the event on its own thread. */
		deadline = stress_now() + STRESS_STUCK_S / 2;
		while (mapped_in_space(U, p, n)) {
			if (stress_now() > deadline) {
				stress_violation("REMOVE of pages [%zu, %zu) "
						 "never applied to the space",
						 p, p + n);
				break;
			}
			usleep(100);
		}
		if (madvise(a, n * U->pg, MADV_DONTNEED))
			stress_violation("madvise(DONTNEED): %s",
					 strerror(errno));
		err = vmr_uffd_map(U->uffd, a, n * U->pg,
				   VMR_PROT_READ | VMR_PROT_WRITE,
				   (uint64_t)p * U->pg, U->mode, &store_ops,
				   sizeof(store_ops), U);
		if (err)
			stress_violation("vmr_uffd_map of removed pages [%zu, "
					 "%zu): %d", p, p + n, err);
	}
	for (size_t q = p; q < p + n; q++)
		atomic_store(&U->flux[q], false);
	stress_beat_end(&t->beat);
}

static void *zapper_main(void *arg)
{
	struct uthread *t = arg;
	struct uround *U = t->U;
	struct vmr_rng rng;

	vmr_rng_init(&rng, U->seed ^ 0x2a9);
	urcu_memb_register_thread();
	while (!atomic_load_explicit(&U->stop, memory_order_relaxed)) {
		size_t n = 1 + vmr_rng_below(&rng, stress_opts.hot ? 4 : 16);
		size_t p = vmr_rng_below(&rng, U->npages - n + 1);

		zap(t, p, n);
		atomic_fetch_add(&U->zaps, 1);
		if (stress_opts.hot)
			usleep((useconds_t)vmr_rng_below(&rng, 50));
		else
			usleep((useconds_t)(100 + vmr_rng_below(&rng, 400)));
	}
	urcu_memb_unregister_thread();
	return NULL;
}

static void start(struct uthread *t, struct uround *U, unsigned int id,
		  const char *who, void *(*fn)(void *))
{
	t->U = U;
	t->id = id;
	stress_beat_register(&t->beat, who, id);
	if (pthread_create(&t->tid, NULL, fn, t)) {
		fprintf(stderr, "stress: pthread_create failed\n");
		exit(1);
	}
}

/* 0: ran; 77: userfaultfd refused; 1: could not set up. */
static int run_round(unsigned int round_no, double seconds)
{
	struct uround U = {
		.pg = (size_t)sysconf(_SC_PAGESIZE),
		.npages = stress_opts.hot ? HOT_PAGES : NPAGES,
	};
	struct vmr_rng rng;
	struct vmr_space_config cfg = { 0 };
	struct vmr_uffd_config ucfg = { .threads = 2, .fd = -1 };
	struct vmr_uffd_stats us;
	struct vmr_stats st;
	struct vmr_space *space;
	struct vmr_uffd *uffd;
	struct uthread t[TOUCHERS_MAX + 1];
	unsigned int nt = stress_opts.threads < TOUCHERS_MAX ?
				  stress_opts.threads : TOUCHERS_MAX;
	unsigned int mode = VMR_UFFD_MISSING;
	int err;

	vmr_rng_init(&rng, stress_opts.seed ^ ((uint64_t)round_no << 48));
	U.seed = vmr_rng_next(&rng);
	cfg.policy = (enum vmr_retry_policy)vmr_rng_below(&rng, 4);
	cfg.granularity = (enum vmr_lock_granularity)vmr_rng_below(&rng, 2);
	if (vmr_rng_below(&rng, 4) == 0)
		mode |= VMR_UFFD_FAST_STORE;
	/* Without events, or without REMOVE events, the handler threads
	 * install while others read, and a zap is only a madvise(): its
	 * pages fault in again. */
	switch (vmr_rng_below(&rng, 4)) {
	case 0:
		ucfg.flags |= VMR_UFFD_NO_EVENTS;
		break;
	case 1:
		ucfg.flags |= VMR_UFFD_NO_REMOVE;
		break;
	default:
		break;
	}
	err = vmr_space_create(&cfg, sizeof(cfg), &space);
	if (err) {
		fprintf(stderr, "stress: vmr_space_create: %s\n",
			strerror(-err));
		return 1;
	}
	err = vmr_uffd_create(space, &ucfg, sizeof(ucfg), &uffd);
	if (err) {
		printf("stress: userfaultfd refused (%s): skipping the uffd "
		       "phase\n", strerror(-err));
		vmr_space_destroy(space);
		return 77;
	}
	U.mem = mmap(NULL, U.npages * U.pg, PROT_READ | PROT_WRITE,
		     MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (U.mem == MAP_FAILED) {
		fprintf(stderr, "stress: mmap: %s\n", strerror(errno));
		vmr_uffd_destroy(uffd);
		vmr_space_destroy(space);
		return 1;
	}
	err = vmr_uffd_map(uffd, U.mem, U.npages * U.pg,
			   VMR_PROT_READ | VMR_PROT_WRITE, 0, mode, &store_ops,
			   sizeof(store_ops), &U);
	if (err) {
		printf("stress: vmr_uffd_map refused (%s): skipping the uffd "
		       "phase\n", strerror(-err));
		vmr_uffd_destroy(uffd);
		vmr_space_destroy(space);
		munmap(U.mem, U.npages * U.pg);
		return 77;
	}
	U.space = space;
	U.uffd = uffd;
	U.mode = mode;
	U.removes = vmr_uffd_features(uffd) & UFFD_FEATURE_EVENT_REMOVE;
	printf("stress: uffd round %u: policy %d, granularity %s, mode %#x, "
	       "features %#" PRIx64 "\n",
	       round_no, (int)cfg.policy,
	       cfg.granularity == VMR_LOCK_REGION ? "region" : "range", mode,
	       vmr_uffd_features(uffd));
	for (unsigned int i = 0; i < nt; i++)
		start(&t[i], &U, i, "uffd toucher", toucher_main);
	start(&t[nt], &U, nt, "uffd zapper", zapper_main);
	stress_watch(seconds);
	atomic_store(&U.stop, true);
	for (unsigned int i = 0; i <= nt; i++) {
		stress_join(t[i].tid, t[i].beat.who);
		stress_beat_unregister(&t[i].beat);
	}

	if (vmr_uffd_stats(uffd, &us, sizeof(us)))
		stress_violation("vmr_uffd_stats failed");
	if (us.store_errors || us.poisoned)
		stress_violation("uffd round %u: %" PRIu64 " store errors, %"
				 PRIu64 " pages poisoned", round_no,
				 us.store_errors, us.poisoned);
	if (atomic_load(&U.touches) && !us.copies)
		stress_violation("uffd round %u: %lu touches, no page copied",
				 round_no, atomic_load(&U.touches));
	if (us.copies > atomic_load(&U.reads))
		stress_violation("uffd round %u: %" PRIu64 " pages copied from "
				 "%lu store reads", round_no, us.copies,
				 atomic_load(&U.reads));
	{
		/* Destroy must return, with the handler threads joined. */
		struct stress_beat b;

		stress_beat_register(&b, "vmr_uffd_destroy", round_no);
		stress_beat_begin(&b, 0);
		vmr_uffd_destroy(uffd);
		stress_beat_end(&b);
		stress_beat_unregister(&b);
	}
	if (vmr_space_stats(space, &st, sizeof(st)))
		stress_violation("vmr_space_stats failed");
	/*
	 * SIGSEGV is legal here: a duplicate message for a page that a
	 * REMOVE then took out of the space finds no region, and the
	 * runtime only wakes it (ENOENT), as lib/uffd_ioctl.c says.
	 */
	if (st.bad_results || st.result_sigbus || st.result_oom)
		stress_violation("uffd round %u: %" PRIu64 " bad results, %"
				 PRIu64 " SIGBUS, %" PRIu64 " OOM", round_no,
				 st.bad_results, st.result_sigbus,
				 st.result_oom);
	if (st.faults != st.result_ok + st.result_nopage +
				 st.result_completed + st.result_sigsegv +
				 st.result_sigbus + st.result_oom +
				 st.result_unfinished)
		stress_violation("uffd round %u: results do not add up to %"
				 PRIu64 " faults", round_no, st.faults);
	if (!vmr_space_lock_is_idle(&space->lock) || vmr_readers_busy(space))
		stress_violation("uffd round %u: a lock is held after "
				 "vmr_uffd_destroy()", round_no);
	err = vmr_space_destroy(space);
	if (err)
		stress_violation("uffd round %u: vmr_space_destroy: %d",
				 round_no, err);
	printf("stress: uffd round %u: %lu touches, %" PRIu64 " faults, %"
	       PRIu64 " copies, %" PRIu64 " coalesced, %" PRIu64 " removes, "
	       "%lu store reads, %lu zaps\n",
	       round_no, atomic_load(&U.touches), us.faults, us.copies,
	       us.coalesced, us.events_remove, atomic_load(&U.reads),
	       atomic_load(&U.zaps));
	munmap(U.mem, U.npages * U.pg);
	return 0;
}

int stress_uffd_phase(void)
{
	double per = stress_opts.seconds / stress_opts.rounds;
	unsigned int ran = 0;
	int ret = 0;

	if (stress_opts.valgrind) {
		printf("stress: VMR_TEST_VALGRIND is set: skipping the uffd "
		       "phase (valgrind serialises threads, and a thread "
		       "faulting on uffd memory would block the handlers)\n");
		return 77;
	}
	signal(SIGBUS, on_sigbus);
	urcu_memb_register_thread();
	for (unsigned int i = 0; i < stress_opts.rounds; i++) {
		ret = run_round(i, per);
		if (ret)
			break;
		ran++;
		if (stress_violations())
			break;
	}
	urcu_memb_unregister_thread();
	if (stress_violations())
		return 1;
	if (ret == 77 && !ran)
		return 77;
	return ret == 77 ? 0 : ret;
}
