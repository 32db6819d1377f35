/* SPDX-License-Identifier: MIT */
/*
 * runtime_heap - a managed runtime's heap on libvmaretry, no userfaultfd.
 *
 * The heap is an arena of NCHUNKS chunks of CHUNK_PAGES pages.  A "GC"
 * thread changes its layout all the time, as a compacting collector does:
 * it maps a chunk (vmr_map(): a new region), makes the second half of a
 * chunk read-only and back (vmr_protect(): the region is split in two and
 * the pieces keep their backing offsets, as a card-marking or compaction
 * step would), and releases a chunk (vmr_unmap()), after which it evicts
 * the chunk's pages and poisons their memory.  Meanwhile --threads mutator
 * threads touch random pages of the arena (a quarter of them writes; they
 * mostly leave released chunks alone, as a runtime's code would) and every
 * touch is a page fault through vmr_handle_fault().
 *
 * The fault handler is the page-wait pattern of <vmaretry/pagewait.h>
 * (the kernel's filemap_fault()): take the page lock or retry; if the page
 * is not up to date, "allocate" it -- tell the engine we are about to
 * block (vmr_fault_release_for_io()), sleep 20 us as a slow allocation
 * would, fill the page -- and then "install" it by copying it into the
 * faulting mutator's buffer.  The same handler runs under each retry
 * policy; only what the engine does around it changes:
 *
 *   retry_space  VMR_RETRY_SPACE: the fault drops its VMA-range lock for
 *                the allocation and retries under the space lock (mainline
 *                Linux, VM_FAULT_RETRY);
 *   retry_vma    VMR_RETRY_VMA: it retries on the VMA-range lock again (the
 *                Nov 2025 RFC, VM_FAULT_RETRY_VMA);
 *   hold_io      VMR_HOLD_IO: it keeps the lock across the allocation, so
 *                the GC's updates of that chunk wait for it.
 *
 * Each policy runs for --seconds in a space of its own, and the program
 * prints the engine's counters side by side.  Every mutator checks what it
 * got: a fault must end in 0, MAJOR or NOPAGE with the right page contents
 * (never the GC's poison), or in SIGSEGV -- and when the GC did not touch
 * the chunk during the fault (a sequence count per chunk tells), the result
 * must be exactly what the chunk's state implies: SIGSEGV if unmapped or a
 * write to its read-only half, success otherwise.  Any violation, or
 * counters that do not add up, makes the program exit 1.
 *
 * Options: --seconds=S (default 2; fractions allowed), --threads=N
 * (mutators, default 4), --range (VMR_LOCK_RANGE: a fault locks only its
 * page, so the GC's protect of one half does not wait for faults in the
 * other), --seed=N.
 *
 * Copy it freely; it compiles as C11 and as C++:
 *
 *   cc -O2 -o runtime_heap runtime_heap.c \
 *      $(pkg-config --cflags --libs libvmaretry) -lpthread
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* nanosleep, clock_gettime under strict C11 */
#endif
#include <vmaretry.h>

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define ARENA ((uintptr_t)0x200000000000ull) /* the heap's first address */
#define NCHUNKS 32
#define CHUNK_PAGES 32
#define NPAGES (NCHUNKS * CHUNK_PAGES)
#define MAX_MUTATORS 64
#define ALLOC_NS 20000 /* the simulated allocation: 20 us */
#define POISON 0xdb

enum chunk_state { UNMAPPED, MAPPED_RW, HALF_RO };

/*
 * What the GC publishes about a chunk.  @seq is odd while the GC changes
 * the chunk: a mutator that reads the same even @seq before and after its
 * fault knows the chunk was in @state for the whole fault.
 */
struct chunk {
	unsigned int seq;
	unsigned int state;
};

struct heap {
	struct vmr_space *space;
	struct vmr_pagemap *map; /* page lock + up-to-date bit per page */
	unsigned char *pages;    /* NPAGES pages of memory: the heap itself */
	size_t page;
	struct chunk chunk[NCHUNKS];
	int stop;
	unsigned long violations; /* found by the handler (atomic) */
};

struct mutator {
	struct heap *heap;
	pthread_t thread;
	uint64_t rng;
	unsigned char *copy; /* the page as "installed" by the last fault */
	size_t copied;       /* which page that was */
	unsigned long faults, ok, segv, checked, violations;
};

struct gc {
	struct heap *heap;
	pthread_t thread;
	uint64_t rng;
	unsigned long ops, evicted, errors;
	double op_ns_total, op_ns_max;
};

static uint64_t xorshift(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}

static double now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static uintptr_t page_addr(const struct heap *h, size_t i)
{
	return ARENA + (uintptr_t)i * h->page;
}

/* The 64-bit word @w of page @i, once allocated: any function of both. */
static uint64_t word_of(size_t i, size_t w)
{
	return ((uint64_t)i << 32 | w) * 0x9e3779b97f4a7c15ull;
}

static void fill_page(struct heap *h, size_t i)
{
	uint64_t *p = (uint64_t *)(void *)(h->pages + i * h->page);
	size_t w;

	for (w = 0; w < h->page / 8; w++)
		p[w] = word_of(i, w);
}

static bool page_is_right(const struct heap *h, const unsigned char *buf,
			  size_t i)
{
	const uint64_t *p = (const uint64_t *)(const void *)buf;
	size_t w;

	for (w = 0; w < h->page / 8; w++)
		if (p[w] != word_of(i, w))
			return false;
	return true;
}

/*
 * The regions' fault handler.  It runs holding the fault's lock (the
 * VMA-range read lock, or the space lock on a fallback), so the region
 * cannot change under it until it releases that lock.
 */
static vmr_fault_t heap_fault(struct vmr_fault *vmf)
{
	struct heap *h = (struct heap *)vmr_region_private(vmf->region);
	struct mutator *m = (struct mutator *)vmf->ctx;
	/* The page of the heap: the region's backing offset (vm_pgoff) plus
	 * the distance into it.  Read it now: after the fault's lock is
	 * released vmf->region must not be used. */
	size_t i = (size_t)((vmr_region_offset(vmf->region) + vmf->address -
			     vmr_region_start(vmf->region)) /
			    h->page);
	struct timespec io = { 0, ALLOC_NS };
	vmr_fault_t ret, major = 0;

	/* Someone else allocating this page?  Then this either waits for it
	 * with the fault's lock released and returns a retry, or (a retry
	 * already, or VMR_HOLD_IO) waits holding the lock and returns 0. */
	ret = vmr_page_lock_or_retry(vmf, h->map, i);
	if (ret)
		return ret;
	if (!vmr_page_uptodate(h->map, i)) {
		/* About to block.  The policy decides: release the lock and
		 * return a retry (RETRY or RETRY | RETRY_VMA), or keep it (0). */
		ret = vmr_fault_release_for_io(vmf);
		nanosleep(&io, NULL); /* the slow part of an allocation */
		fill_page(h, i);
		major = VMR_FAULT_MAJOR; /* accounting, as filemap_fault() */
		if (vmr_page_mark_uptodate(h->map, i) < 0)
			__atomic_fetch_add(&h->violations, 1, __ATOMIC_RELAXED);
		if (ret) {
			/* Our lock is gone: the region may have been unmapped
			 * meanwhile.  Leave the page up to date (one allocation
			 * serves every waiter) and let the retry install it. */
			vmr_page_unlock(h->map, i);
			return ret | VMR_FAULT_MAJOR;
		}
	}
	/* Install: copy the page to the mutator, under the page lock. */
	memcpy(m->copy, h->pages + i * h->page, h->page);
	m->copied = i;
	vmr_page_unlock(h->map, i);
	return major; /* done, lock still held: the engine releases it */
}

static void mutator_check(struct mutator *m, size_t i, bool write, int ret,
			  vmr_fault_t res, unsigned int seq1, unsigned int seq2,
			  unsigned int state)
{
	struct heap *h = m->heap;
	bool ok = ret == 0 &&
		  !(res & ~(vmr_fault_t)(VMR_FAULT_MAJOR | VMR_FAULT_NOPAGE));
	bool segv = ret == 0 && res == VMR_FAULT_SIGSEGV;
	bool second_half = i % CHUNK_PAGES >= CHUNK_PAGES / 2;

	m->faults++;
	if (!ok && !segv) {
		fprintf(stderr, "page %zu: unexpected result %d/%#x\n", i, ret,
			res);
		m->violations++;
		return;
	}
	if (ok) {
		m->ok++;
		if (m->copied != i || !page_is_right(h, m->copy, i)) {
			fprintf(stderr, "page %zu: wrong contents\n", i);
			m->violations++;
		}
	} else {
		m->segv++;
	}
	if (seq1 == seq2 && !(seq1 & 1)) {
		/* The chunk did not change during the fault. */
		bool want_segv = state == UNMAPPED ||
				 (state == HALF_RO && write && second_half);

		m->checked++;
		if (want_segv != segv) {
			fprintf(stderr, "page %zu: %s %s in state %u\n", i,
				write ? "write" : "read",
				segv ? "got SIGSEGV" : "succeeded", state);
			m->violations++;
		}
	}
}

static void *mutator_main(void *arg)
{
	struct mutator *m = (struct mutator *)arg;
	struct heap *h = m->heap;

	vmr_space_register_thread(h->space); /* every faulting thread */
	while (!__atomic_load_n(&h->stop, __ATOMIC_RELAXED)) {
		uint64_t r = xorshift(&m->rng);
		size_t i = (size_t)(r % NPAGES);
		bool write = (r >> 32) % 4 == 0;
		struct chunk *c = &h->chunk[i / CHUNK_PAGES];
		unsigned int seq1, seq2, state;
		unsigned int flags = VMR_FAULT_FLAG_DEFAULT |
				     VMR_FAULT_FLAG_USER;
		vmr_fault_t res = 0;
		int ret;

		if (write)
			flags |= VMR_FAULT_FLAG_WRITE;
		seq1 = __atomic_load_n(&c->seq, __ATOMIC_ACQUIRE);
		state = __atomic_load_n(&c->state, __ATOMIC_RELAXED);
		/* A mutator does not use memory its runtime has released:
		 * skip most released chunks, touch the rest to see SIGSEGV. */
		if (state == UNMAPPED && !(seq1 & 1) && (r >> 48) % 8)
			continue;
		m->copied = (size_t)-1;
		ret = vmr_handle_fault(h->space,
				       page_addr(h, i) + (size_t)(r >> 40) % h->page,
				       flags, m, &res);
		/* Pairs with the fence in gc_begin(): if the fault saw any of
		 * the GC's change, this load sees its odd sequence. */
		__atomic_thread_fence(__ATOMIC_SEQ_CST);
		seq2 = __atomic_load_n(&c->seq, __ATOMIC_RELAXED);
		mutator_check(m, i, write, ret, res, seq1, seq2, state);
	}
	vmr_space_unregister_thread(h->space);
	return NULL;
}

static void gc_begin(struct chunk *c)
{
	__atomic_store_n(&c->seq, c->seq + 1, __ATOMIC_RELAXED);
	__atomic_thread_fence(__ATOMIC_SEQ_CST); /* pairs: mutator_main() */
}

static void gc_end(struct chunk *c, unsigned int state)
{
	__atomic_store_n(&c->state, state, __ATOMIC_RELAXED);
	__atomic_store_n(&c->seq, c->seq + 1, __ATOMIC_RELEASE);
}

static int gc_map(struct heap *h, size_t k)
{
	static struct vmr_region_ops ops; /* zero but for ->fault */
	struct vmr_region_desc desc;

	ops.fault = heap_fault;
	memset(&desc, 0, sizeof(desc));
	desc.start = page_addr(h, k * CHUNK_PAGES);
	desc.len = CHUNK_PAGES * h->page;
	desc.prot = VMR_PROT_READ | VMR_PROT_WRITE;
	desc.offset = (uint64_t)k * CHUNK_PAGES * h->page; /* page index */
	desc.ops = &ops;
	desc.ops_size = sizeof(ops);
	desc.private_data = h; /* pieces cut from it inherit it */
	return vmr_map(h->space, &desc, sizeof(desc), 0);
}

/* Release chunk @k: unmap it, then free (evict and poison) its pages. */
static int gc_unmap(struct gc *g, size_t k)
{
	struct heap *h = g->heap;
	size_t i;
	int ret;

	ret = vmr_unmap(h->space, page_addr(h, k * CHUNK_PAGES),
			CHUNK_PAGES * h->page);
	if (ret < 0)
		return ret;
	/* No fault can reach these pages any more but one that released
	 * its lock to allocate a page and still holds the page lock:
	 * eviction skips locked pages, so it never poisons that one. */
	for (i = k * CHUNK_PAGES; i < (k + 1) * CHUNK_PAGES; i++) {
		if (vmr_page_evict(h->map, i)) {
			memset(h->pages + i * h->page, POISON, h->page);
			g->evicted++;
		}
	}
	return 0;
}

static void *gc_main(void *arg)
{
	struct gc *g = (struct gc *)arg;
	struct heap *h = g->heap;
	struct timespec pause = { 0, 200000 }; /* 200 us between steps */

	vmr_space_register_thread(h->space);
	while (!__atomic_load_n(&h->stop, __ATOMIC_RELAXED)) {
		uint64_t r = xorshift(&g->rng);
		size_t k = (size_t)(r % NCHUNKS);
		struct chunk *c = &h->chunk[k];
		uintptr_t half = page_addr(h, k * CHUNK_PAGES +
						     CHUNK_PAGES / 2);
		size_t half_len = CHUNK_PAGES / 2 * h->page;
		unsigned int state = c->state;
		bool flip = (r >> 32) & 1;
		double t0, t;
		int ret;

		gc_begin(c);
		t0 = now_ns();
		if (state == UNMAPPED) {
			ret = gc_map(h, k);
			state = MAPPED_RW;
		} else if (flip && state == MAPPED_RW) {
			ret = vmr_protect(h->space, half, half_len,
					  VMR_PROT_READ);
			state = HALF_RO;
		} else if (flip) {
			ret = vmr_protect(h->space, half, half_len,
					  VMR_PROT_READ | VMR_PROT_WRITE);
			state = MAPPED_RW;
		} else {
			ret = gc_unmap(g, k);
			state = UNMAPPED;
		}
		t = now_ns() - t0;
		if (ret < 0) {
			fprintf(stderr, "gc: chunk %zu: %s\n", k,
				strerror(-ret));
			g->errors++;
			state = c->state;
		}
		gc_end(c, state);
		g->ops++;
		g->op_ns_total += t;
		if (t > g->op_ns_max)
			g->op_ns_max = t;
		nanosleep(&pause, NULL);
	}
	vmr_space_unregister_thread(h->space);
	return NULL;
}

struct result {
	const char *name;
	struct vmr_stats st;
	double seconds;
	unsigned long faults, ok, segv, checked, violations, gc_ops, evicted;
	double gc_mean_us, gc_max_us;
	double faults_per_s, p50_us, p99_us;
};

static int run_policy(enum vmr_retry_policy policy, bool range,
		      unsigned int nthreads, double seconds, uint64_t seed,
		      struct result *res)
{
	struct mutator mut[MAX_MUTATORS];
	struct vmr_space_config cfg;
	struct heap h;
	struct gc g;
	struct timespec ts;
	double t0;
	size_t k;
	unsigned int t;
	int ret;

	memset(&h, 0, sizeof(h));
	memset(&cfg, 0, sizeof(cfg));
	cfg.policy = policy;
	cfg.granularity = range ? VMR_LOCK_RANGE : VMR_LOCK_REGION;
	cfg.flags = VMR_SPACE_TIME_FAULTS; /* for the latency histogram */
	ret = vmr_space_create(&cfg, sizeof(cfg), &h.space);
	if (ret < 0)
		return ret;
	h.page = vmr_space_page_size(h.space);
	ret = vmr_pagemap_create(h.space, NPAGES, &h.map);
	h.pages = (unsigned char *)malloc(NPAGES * h.page);
	if (ret < 0 || !h.pages) {
		free(h.pages);
		vmr_pagemap_destroy(h.map);
		vmr_space_destroy(h.space);
		return ret < 0 ? ret : -ENOMEM;
	}
	memset(h.pages, POISON, NPAGES * h.page);

	/* The heap starts with every chunk mapped. */
	for (k = 0; k < NCHUNKS; k++) {
		ret = gc_map(&h, k);
		if (ret < 0) {
			fprintf(stderr, "vmr_map: %s\n", strerror(-ret));
			return ret;
		}
		h.chunk[k].state = MAPPED_RW;
	}

	memset(&g, 0, sizeof(g));
	memset(mut, 0, sizeof(mut));
	g.heap = &h;
	g.rng = seed * 2 + 1;
	for (t = 0; t < nthreads; t++) {
		mut[t].heap = &h;
		mut[t].rng = (seed + t + 1) * 0x2545f4914f6cdd1dull | 1;
		mut[t].copy = (unsigned char *)malloc(h.page);
		if (!mut[t].copy ||
		    pthread_create(&mut[t].thread, NULL, mutator_main, &mut[t])) {
			fprintf(stderr, "cannot start mutator %u\n", t);
			exit(1);
		}
	}
	if (pthread_create(&g.thread, NULL, gc_main, &g)) {
		fprintf(stderr, "cannot start the gc\n");
		exit(1);
	}

	t0 = now_ns();
	ts.tv_sec = (time_t)seconds;
	ts.tv_nsec = (long)((seconds - (double)ts.tv_sec) * 1e9);
	nanosleep(&ts, NULL);
	__atomic_store_n(&h.stop, 1, __ATOMIC_RELAXED);
	memset(res, 0, sizeof(*res));
	for (t = 0; t < nthreads; t++) {
		pthread_join(mut[t].thread, NULL);
		res->faults += mut[t].faults;
		res->ok += mut[t].ok;
		res->segv += mut[t].segv;
		res->checked += mut[t].checked;
		res->violations += mut[t].violations;
		free(mut[t].copy);
	}
	res->seconds = (now_ns() - t0) / 1e9;
	pthread_join(g.thread, NULL);
	vmr_space_stats(h.space, &res->st, sizeof(res->st));
	res->violations += h.violations + g.errors;
	res->gc_ops = g.ops;
	res->evicted = g.evicted;
	res->gc_mean_us = g.ops ? g.op_ns_total / (double)g.ops / 1e3 : 0;
	res->gc_max_us = g.op_ns_max / 1e3;
	res->faults_per_s = (double)res->st.faults / res->seconds;
	/* Upper bounds of power-of-two buckets: read them as "at most". */
	res->p50_us = vmr_hist_percentile(res->st.fault_latency_hist, 50) / 1e3;
	res->p99_us = vmr_hist_percentile(res->st.fault_latency_hist, 99) / 1e3;

	/* Teardown: no thread faults any more; page maps go before the space
	 * (vmr_space_destroy() refuses while one exists), which unmaps what
	 * is left and closes its regions. */
	vmr_pagemap_destroy(h.map);
	ret = vmr_space_destroy(h.space);
	free(h.pages);
	return ret;
}

/* The engine's counters must agree with what the mutators saw. */
static unsigned long cross_check(const struct result *r)
{
	const struct vmr_stats *s = &r->st;
	unsigned long bad = 0;

	if (s->faults != r->faults || s->result_sigsegv != r->segv ||
	    s->result_ok + s->result_nopage != r->ok)
		bad++;
	if (s->bad_results || s->result_sigbus || s->result_oom ||
	    s->result_unfinished)
		bad++;
	/* Every fine-grained attempt succeeds, aborts or retries. */
	if (s->vma_lock_success + s->vma_lock_abort + s->vma_lock_retry !=
	    s->faults + s->vma_retries)
		bad++;
	if (bad)
		fprintf(stderr, "%s: the engine's counters do not add up\n",
			r->name);
	return bad;
}

static const char *arg_value(const char *arg, const char *name)
{
	size_t n = strlen(name);

	return strncmp(arg, name, n) == 0 ? arg + n : NULL;
}

int main(int argc, char **argv)
{
	static const enum vmr_retry_policy policies[3] = {
		VMR_RETRY_SPACE, VMR_RETRY_VMA, VMR_HOLD_IO
	};
	static const char *const names[3] = { "retry_space", "retry_vma",
					      "hold_io" };
	struct result res[3];
	unsigned long violations = 0;
	unsigned int nthreads = 4;
	double seconds = 2;
	uint64_t seed = (uint64_t)time(NULL);
	bool range = false;
	const char *v;
	int i, ret;

	for (i = 1; i < argc; i++) {
		if ((v = arg_value(argv[i], "--seconds=")))
			seconds = strtod(v, NULL);
		else if ((v = arg_value(argv[i], "--threads=")))
			nthreads = (unsigned int)strtoul(v, NULL, 0);
		else if ((v = arg_value(argv[i], "--seed=")))
			seed = strtoull(v, NULL, 0);
		else if (strcmp(argv[i], "--range") == 0)
			range = true;
		else {
			fprintf(stderr,
				"usage: %s [--seconds=S] [--threads=N] "
				"[--range] [--seed=N]\n",
				argv[0]);
			return 2;
		}
	}
	if (nthreads < 1 || nthreads > MAX_MUTATORS || !(seconds > 0)) {
		fprintf(stderr, "runtime_heap: --threads is 1 to %d, "
				"--seconds above 0\n",
			MAX_MUTATORS);
		return 2;
	}
	printf("runtime_heap: %u mutators, 1 gc, %d chunks of %d pages, "
	       "%s locks, %.1f s per policy, seed %llu\n",
	       nthreads, NCHUNKS, CHUNK_PAGES, range ? "page-range" : "region",
	       seconds, (unsigned long long)seed);

	vmr_rcu_register_thread(NULL); /* the spaces' flavor: urcu-memb */
	for (i = 0; i < 3; i++) {
		ret = run_policy(policies[i], range, nthreads, seconds, seed,
				 &res[i]);
		res[i].name = names[i];
		if (ret < 0) {
			fprintf(stderr, "%s: %s\n", names[i], strerror(-ret));
			return 1;
		}
		violations += res[i].violations + cross_check(&res[i]);
	}
	vmr_rcu_unregister_thread(NULL);

	printf("\n%-22s %12s %12s %12s\n", "", names[0], names[1], names[2]);
#define ROW(label, expr)                                                       \
	printf("%-22s %12llu %12llu %12llu\n", label,                          \
	       (unsigned long long)(res[0].expr),                              \
	       (unsigned long long)(res[1].expr),                              \
	       (unsigned long long)(res[2].expr))
#define ROWF(label, expr)                                                      \
	printf("%-22s %12.1f %12.1f %12.1f\n", label, (double)(res[0].expr),   \
	       (double)(res[1].expr), (double)(res[2].expr))
	ROW("faults", st.faults);
	ROWF("faults/s", faults_per_s);
	ROW("vma_lock_success", st.vma_lock_success);
	ROW("vma_lock_abort", st.vma_lock_abort);
	ROW("vma_lock_retry", st.vma_lock_retry);
	ROW("vma_lock_miss", st.vma_lock_miss);
	ROW("vma_retries", st.vma_retries);
	ROW("space_lock_faults", st.space_lock_faults);
	ROW("space_retries", st.space_retries);
	ROW("page_wait_sleeps", st.page_wait_sleeps);
	ROW("page_reads", st.page_reads);
	ROW("result_ok", st.result_ok);
	ROW("result_nopage", st.result_nopage);
	ROW("result_major", st.result_major);
	ROW("result_sigsegv", st.result_sigsegv);
	ROW("result_sigbus", st.result_sigbus);
	ROW("result_unfinished", st.result_unfinished);
	ROW("bad_results", st.bad_results);
	ROWF("fault p50 (us, <=)", p50_us);
	ROWF("fault p99 (us, <=)", p99_us);
	ROW("gc ops", gc_ops);
	ROWF("gc op mean (us)", gc_mean_us);
	ROWF("gc op max (us)", gc_max_us);
	ROW("pages freed by gc", evicted);
	ROW("results checked", checked);
	ROW("violations", violations);
	printf("\n%s\n", violations ? "FAILED: see the violations above"
				    : "every fault checked out");
	return violations ? 1 : 0;
}
