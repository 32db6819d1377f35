/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The fault engine: a table of scripted handler behaviours run under each
 * retry policy, asserting for every handler call the lock it held and the
 * flags it saw, the final result, and the counters; bad handler results;
 * bad arguments; shutdown; and pagers faulting through page wait while
 * writers unmap and protect, checking that no handler runs on what it must
 * not and that every page is read once unless it was dropped.
 */
#include "mm.h"
#include "vmr_test.h"

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <urcu/urcu-memb.h>

#define PG 4096u
#define BASE ((uintptr_t)1 << 32)
#define DEF VMR_FAULT_FLAG_DEFAULT
#define ALLOW VMR_FAULT_FLAG_ALLOW_RETRY
#define TRIED VMR_FAULT_FLAG_TRIED
#define VMA VMR_FAULT_FLAG_VMA_LOCK
#define NOWAIT VMR_FAULT_FLAG_RETRY_NOWAIT
#define RETRY VMR_FAULT_RETRY
#define RVMA VMR_FAULT_RETRY_VMA
#define MAJOR VMR_FAULT_MAJOR
#define L_NONE VMR_FAULT_LOCK_NONE
#define L_VMA VMR_FAULT_LOCK_VMA
#define L_SPACE VMR_FAULT_LOCK_SPACE

static struct vmr_space *space;

static void make(unsigned int policy)
{
	struct vmr_space_config cfg = { .page_size = PG, .policy = policy };

	urcu_memb_register_thread();
	ck_assert_int_eq(vmr_space_create(&cfg, sizeof(cfg), &space), 0);
}

static void teardown(void)
{
	/* No fault may have left a lock behind. */
	ck_assert(vmr_space_lock_is_idle(&space->lock));
	ck_assert_int_eq(vmr_space_destroy(space), 0);
	urcu_memb_unregister_thread();
}

static void map(uintptr_t start, size_t pages, unsigned int prot,
		const struct vmr_region_ops *ops)
{
	struct vmr_region_desc d = { .start = start, .len = pages * PG,
				     .prot = prot, .ops = ops,
				     .ops_size = ops ? sizeof(*ops) : 0 };

	ck_assert_int_eq(vmr_map(space, &d, sizeof(d), 0), 0);
}

/* ---- scripted handlers -------------------------------------------------- */

/* What a scripted handler does on one call. */
enum act {
	RET,         /* return .ret, lock untouched */
	IO,          /* vmr_fault_release_for_io(); if it released, return
		      * its reason | .ret, else return .otherwise */
	RELEASE,     /* vmr_fault_release(), return .ret */
	UNTIL_FINAL, /* RELEASE + return RETRY (| RETRY_VMA on the VMA lock
		      * under VMR_RETRY_VMA) while ALLOW_RETRY, else .ret:
		      * the way handle_userfault() retries */
	UNMAP_IO,    /* IO, and unmap the region while the lock is dropped */
	IO_DONE,     /* vmr_fault_release_for_io(); if it released, finish
		      * without the lock: return COMPLETED | .ret */
};

struct step {
	enum act act;
	vmr_fault_t ret;
	vmr_fault_t otherwise;
};

#define MAX_CALLS 32

struct script {
	const struct step *steps; /* the last one repeats */
	unsigned int nr_steps;
	unsigned int calls;
	unsigned int lock[MAX_CALLS];  /* vmf->lock on entry */
	unsigned int flags[MAX_CALLS]; /* vmf->flags on entry */
	uintptr_t data[MAX_CALLS];     /* vmf->handler_data on entry */
};

static vmr_fault_t scripted(struct vmr_fault *vmf)
{
	struct script *s = vmf->ctx;
	unsigned int n = s->calls++;
	const struct step *st = &s->steps[n < s->nr_steps ? n :
							    s->nr_steps - 1];
	vmr_fault_t why;

	if (n < MAX_CALLS) {
		s->lock[n] = vmf->lock;
		s->flags[n] = vmf->flags;
		s->data[n] = vmf->handler_data;
	}
	vmf->handler_data++;
	switch (st->act) {
	case RET:
		return st->ret;
	case IO:
	case UNMAP_IO:
		why = vmr_fault_release_for_io(vmf);
		if (!why)
			return st->otherwise;
		if (st->act == UNMAP_IO && vmf->lock == L_NONE)
			vmr_unmap(vmf->space, vmf->address, PG);
		return why | st->ret;
	case IO_DONE:
		if (!vmr_fault_release_for_io(vmf))
			return st->otherwise;
		return VMR_FAULT_COMPLETED | st->ret;
	case RELEASE:
		vmr_fault_release(vmf);
		return st->ret;
	case UNTIL_FINAL:
		if (!(vmf->flags & ALLOW))
			return st->ret;
		why = vmf->lock == L_VMA &&
				      vmr_fault_policy(vmf) == VMR_RETRY_VMA ?
			      RETRY | RVMA :
			      RETRY;
		vmr_fault_release(vmf);
		return why;
	}
	return VMR_FAULT_SIGBUS;
}

static const struct vmr_region_ops scripted_ops = { .fault = scripted };

/* One row of the table: a handler script and what must come of it. */
struct expect {
	vmr_fault_t result;
	unsigned int calls;
	unsigned int lock[MAX_CALLS];
	unsigned int flags[MAX_CALLS];
	/* counters */
	uint64_t success, retry, abort, vma_retries, space_locks,
		space_retries;
};

struct row {
	const char *what;
	unsigned int policy;
	unsigned int flags; /* for vmr_handle_fault() */
	struct step steps[3];
	unsigned int nr_steps;
	struct expect e;
};

/* Flags the first fine-grained call sees. */
#define F0 (DEF | VMA)

static const struct row rows[] = {
	/* Plain results: one call on the fine-grained lock. */
	{ "0", VMR_RETRY_SPACE, DEF, { { RET, 0, 0 } }, 1,
	  { 0, 1, { L_VMA }, { F0 }, 1, 0, 0, 0, 0, 0 } },
	{ "nopage", VMR_RETRY_VMA, DEF, { { RET, VMR_FAULT_NOPAGE, 0 } }, 1,
	  { VMR_FAULT_NOPAGE, 1, { L_VMA }, { F0 }, 1, 0, 0, 0, 0, 0 } },
	{ "major", VMR_HOLD_IO, DEF, { { RET, MAJOR, 0 } }, 1,
	  { MAJOR, 1, { L_VMA }, { F0 }, 1, 0, 0, 0, 0, 0 } },
	{ "sigbus", VMR_RETRY_VMA, DEF, { { RET, VMR_FAULT_SIGBUS, 0 } }, 1,
	  { VMR_FAULT_SIGBUS, 1, { L_VMA }, { F0 }, 1, 0, 0, 0, 0, 0 } },
	{ "oom", VMR_RETRY_VMA, DEF, { { RET, VMR_FAULT_OOM, 0 } }, 1,
	  { VMR_FAULT_OOM, 1, { L_VMA }, { F0 }, 1, 0, 0, 0, 0, 0 } },

	/* I/O then done: mainline retries under the space lock with TRIED
	 * (the result had MAJOR), the RFC on the fine-grained lock, hold-IO
	 * does the I/O holding the lock. */
	{ "io retry_space", VMR_RETRY_SPACE, DEF,
	  { { IO, MAJOR, 0 }, { RET, 0, 0 } }, 2,
	  { 0, 2, { L_VMA, L_SPACE }, { F0, DEF | TRIED },
	    0, 1, 0, 0, 1, 0 } },
	{ "io retry_vma", VMR_RETRY_VMA, DEF,
	  { { IO, MAJOR, 0 }, { RET, 0, 0 } }, 2,
	  { 0, 2, { L_VMA, L_VMA }, { F0, F0 | TRIED }, 1, 1, 0, 1, 0, 0 } },
	{ "io hold_io", VMR_HOLD_IO, DEF,
	  { { IO, MAJOR, MAJOR }, { RET, 0, 0 } }, 2,
	  { MAJOR, 1, { L_VMA }, { F0 }, 1, 0, 0, 0, 0, 0 } },
	/* Without MAJOR, TRIED is not set on the way out of the VMA path. */
	{ "minor io retry_space", VMR_RETRY_SPACE, DEF,
	  { { IO, 0, 0 }, { IO, 0, 0 }, { RET, 0, 0 } }, 3,
	  { 0, 3, { L_VMA, L_SPACE, L_SPACE }, { F0, DEF, DEF | TRIED },
	    0, 1, 0, 0, 2, 1 } },

	/* COMPLETED: the lock was dropped and the fault is done. */
	{ "completed", VMR_RETRY_SPACE, DEF, { { IO_DONE, MAJOR, 0 } }, 1,
	  { VMR_FAULT_COMPLETED | MAJOR, 1, { L_VMA }, { F0 },
	    1, 0, 0, 0, 0, 0 } },
	{ "release and complete", VMR_RETRY_VMA, DEF,
	  { { RELEASE, VMR_FAULT_COMPLETED, 0 } }, 1,
	  { VMR_FAULT_COMPLETED, 1, { L_VMA }, { F0 }, 1, 0, 0, 0, 0, 0 } },

	/* A handler that keeps returning RETRY while it may (uffd): the
	 * fine-grained loop is bounded (3), then the space-lock loop (8),
	 * then it runs without ALLOW_RETRY and must finish. */
	{ "retry until final, retry_vma", VMR_RETRY_VMA, DEF,
	  { { UNTIL_FINAL, 0, 0 } }, 1,
	  { 0, 13,
	    { L_VMA, L_VMA, L_VMA, L_VMA, L_SPACE, L_SPACE, L_SPACE, L_SPACE,
	      L_SPACE, L_SPACE, L_SPACE, L_SPACE, L_SPACE },
	    { F0, F0, F0, F0, DEF, DEF | TRIED, DEF | TRIED, DEF | TRIED,
	      DEF | TRIED, DEF | TRIED, DEF | TRIED, DEF | TRIED,
	      DEF & ~ALLOW },
	    0, 4, 0, 3, 9, 8 } },
	{ "retry until final, retry_space", VMR_RETRY_SPACE, DEF,
	  { { UNTIL_FINAL, 0, 0 } }, 1,
	  { 0, 10,
	    { L_VMA, L_SPACE, L_SPACE, L_SPACE, L_SPACE, L_SPACE, L_SPACE,
	      L_SPACE, L_SPACE, L_SPACE },
	    { F0, DEF, DEF | TRIED, DEF | TRIED, DEF | TRIED, DEF | TRIED,
	      DEF | TRIED, DEF | TRIED, DEF | TRIED, DEF & ~ALLOW },
	    0, 1, 0, 0, 9, 8 } },

	/* RETRY_NOWAIT: straight to the space lock; RETRY with it held
	 * means "would wait", and the fault ends unfinished. */
	{ "nowait would wait", VMR_RETRY_VMA, DEF | NOWAIT,
	  { { IO, MAJOR, 0 } }, 1,
	  { RETRY | MAJOR, 1, { L_SPACE }, { DEF | NOWAIT },
	    0, 0, 0, 0, 1, 0 } },
	{ "nowait fine", VMR_RETRY_VMA, DEF | NOWAIT, { { RET, 0, 0 } }, 1,
	  { 0, 1, { L_SPACE }, { DEF | NOWAIT }, 0, 0, 0, 0, 1, 0 } },

	/* No retry allowed by the caller: the handler must finish. */
	{ "no allow_retry", VMR_RETRY_VMA, VMR_FAULT_FLAG_KILLABLE,
	  { { IO, 0, MAJOR } }, 1,
	  { MAJOR, 1, { L_VMA }, { VMR_FAULT_FLAG_KILLABLE | VMA },
	    1, 0, 0, 0, 0, 0 } },
	/* A handler that needs the space lock: plain RETRY from the VMA. */
	{ "needs the space lock", VMR_RETRY_VMA, DEF,
	  { { RELEASE, RETRY, 0 }, { RET, 0, 0 } }, 2,
	  { 0, 2, { L_VMA, L_SPACE }, { F0, DEF }, 0, 1, 0, 0, 1, 0 } },
};

static void run_row(const struct row *row)
{
	struct script s = { .steps = row->steps, .nr_steps = row->nr_steps };
	struct vmr_stats st;
	vmr_fault_t res = 0xdead;
	const struct expect *e = &row->e;

	make(row->policy);
	map(BASE, 16, VMR_PROT_READ | VMR_PROT_WRITE, &scripted_ops);
	ck_assert_int_eq(vmr_handle_fault(space, BASE + 5 * PG + 3, row->flags,
					  &s, &res),
			 0);
	ck_assert_msg(res == e->result, "%s: result %#x, want %#x", row->what,
		      res, e->result);
	ck_assert_msg(s.calls == e->calls, "%s: %u calls, want %u", row->what,
		      s.calls, e->calls);
	for (unsigned int i = 0; i < e->calls; i++) {
		ck_assert_msg(s.lock[i] == e->lock[i],
			      "%s: call %u held %u, want %u", row->what, i,
			      s.lock[i], e->lock[i]);
		ck_assert_msg(s.flags[i] == e->flags[i],
			      "%s: call %u saw flags %#x, want %#x", row->what,
			      i, s.flags[i], e->flags[i]);
		ck_assert_msg(s.data[i] == i, "%s: handler_data %lu at call %u",
			      row->what, (unsigned long)s.data[i], i);
	}
	ck_assert_int_eq(vmr_space_stats(space, &st, sizeof(st)), 0);
	ck_assert_uint_eq(st.faults, 1);
	{
		ck_assert_msg(st.vma_lock_success == e->success,
			      "%s: success %lu", row->what,
			      (unsigned long)st.vma_lock_success);
		ck_assert_msg(st.vma_lock_retry == e->retry, "%s: retry %lu",
			      row->what, (unsigned long)st.vma_lock_retry);
		ck_assert_uint_eq(st.vma_lock_abort, e->abort);
		ck_assert_msg(st.vma_retries == e->vma_retries,
			      "%s: vma retries %lu", row->what,
			      (unsigned long)st.vma_retries);
		ck_assert_msg(st.space_lock_faults == e->space_locks,
			      "%s: space locks %lu", row->what,
			      (unsigned long)st.space_lock_faults);
		ck_assert_msg(st.space_retries == e->space_retries,
			      "%s: space retries %lu", row->what,
			      (unsigned long)st.space_retries);
	}
	ck_assert_uint_eq(st.bad_results, 0);
	teardown();
}

START_TEST(test_state_machine_follows_the_kernel)
{
	run_row(&rows[_i]);
}
END_TEST

/* ---- access checks ------------------------------------------------------ */

START_TEST(test_forbidden_accesses_are_sigsegv_without_the_handler)
{
	static const struct {
		unsigned int prot, flags;
		vmr_fault_t want;
	} cases[] = {
		{ VMR_PROT_READ, VMR_FAULT_FLAG_WRITE, VMR_FAULT_SIGSEGV },
		{ VMR_PROT_READ, VMR_FAULT_FLAG_INSTRUCTION, VMR_FAULT_SIGSEGV },
		{ VMR_PROT_NONE, 0, VMR_FAULT_SIGSEGV },
		{ VMR_PROT_WRITE, 0, 0 }, /* readable, as on x86 */
		{ VMR_PROT_EXEC, VMR_FAULT_FLAG_INSTRUCTION, 0 },
		{ VMR_PROT_WRITE, VMR_FAULT_FLAG_WRITE, 0 },
	};
	static const struct step ok[] = { { RET, 0, 0 } };

	make(VMR_RETRY_VMA);
	for (size_t i = 0; i < VMR_ARRAY_SIZE(cases); i++) {
		struct script s = { .steps = ok, .nr_steps = 1 };
		vmr_fault_t res;

		map(BASE + i * 16 * PG, 16, cases[i].prot, &scripted_ops);
		ck_assert_int_eq(vmr_handle_fault(space, BASE + i * 16 * PG,
						  DEF | cases[i].flags, &s,
						  &res),
				 0);
		ck_assert_msg(res == cases[i].want, "case %zu: %#x", i, res);
		ck_assert_uint_eq(s.calls, cases[i].want ? 0 : 1);
	}
	teardown();
}
END_TEST

START_TEST(test_no_region_is_sigsegv_after_an_abort)
{
	struct vmr_stats st;
	vmr_fault_t res;

	make(VMR_RETRY_VMA);
	ck_assert_int_eq(vmr_handle_fault(space, BASE, DEF, NULL, &res), 0);
	ck_assert_uint_eq(res, VMR_FAULT_SIGSEGV);
	vmr_space_stats(space, &st, sizeof(st));
	ck_assert_uint_eq(st.vma_lock_abort, 1);
	ck_assert_uint_eq(st.space_lock_faults, 1);
	ck_assert_uint_eq(st.result_sigsegv, 1);
	teardown();
}
END_TEST

START_TEST(test_a_region_without_a_handler_is_sigbus)
{
	vmr_fault_t res;

	make(VMR_RETRY_VMA);
	map(BASE, 4, VMR_PROT_READ, NULL);
	ck_assert_int_eq(vmr_handle_fault(space, BASE, DEF, NULL, &res), 0);
	ck_assert_uint_eq(res, VMR_FAULT_SIGBUS);
	teardown();
}
END_TEST

START_TEST(test_a_region_unmapped_during_io_ends_in_sigsegv)
{
	static const struct step steps[] = { { UNMAP_IO, MAJOR, 0 } };
	struct script s = { .steps = steps, .nr_steps = 1 };
	vmr_fault_t res;

	make((unsigned int)_i);
	map(BASE, 4, VMR_PROT_READ, &scripted_ops);
	ck_assert_int_eq(vmr_handle_fault(space, BASE + PG, DEF, &s, &res), 0);
	ck_assert_uint_eq(res, VMR_FAULT_SIGSEGV);
	ck_assert_uint_eq(s.calls, 1);
	ck_assert_ptr_null(vmr_space_find_region(space, BASE + PG));
	teardown();
}
END_TEST

/* ---- bad results and bad arguments ------------------------------------ */

static const struct {
	const char *what;
	struct step steps[2];
	unsigned int nr;
} bad[] = {
	{ "unknown bit", { { RET, 0x10000, 0 } }, 1 },
	{ "retry_vma without retry", { { RELEASE, RVMA, 0 } }, 1 },
	{ "retry with the lock held", { { RET, RETRY, 0 } }, 1 },
	{ "completed with the lock held", { { RET, VMR_FAULT_COMPLETED, 0 } },
	  1 },
	{ "released, then success", { { RELEASE, 0, 0 } }, 1 },
	{ "retry with an error", { { RELEASE, RETRY | VMR_FAULT_SIGBUS, 0 } },
	  1 },
	{ "retry_vma from the space lock",
	  { { RELEASE, RETRY, 0 }, { RELEASE, RETRY | RVMA, 0 } }, 2 },
};

START_TEST(test_bad_results_end_in_sigbus_with_no_lock_left)
{
	struct script s = { .steps = bad[_i].steps, .nr_steps = bad[_i].nr };
	struct vmr_stats st;
	vmr_fault_t res = 0;

	make(VMR_RETRY_VMA);
	map(BASE, 4, VMR_PROT_READ, &scripted_ops);
	ck_assert_int_eq(vmr_handle_fault(space, BASE, DEF, &s, &res), 0);
	/* Only reached in a build without debug checks. */
	ck_assert_msg(res == VMR_FAULT_SIGBUS, "%s: %#x", bad[_i].what, res);
	vmr_space_stats(space, &st, sizeof(st));
	ck_assert_uint_eq(st.bad_results, 1);
	ck_assert_uint_eq(st.result_sigbus, 1);
	ck_assert(!vmr_readers_busy(space));
	teardown();
}
END_TEST

START_TEST(test_bad_fault_arguments_are_refused)
{
	vmr_fault_t res = 0x1234;

	make(VMR_RETRY_VMA);
	ck_assert_int_eq(vmr_handle_fault(NULL, BASE, DEF, NULL, &res),
			 -EINVAL);
	ck_assert_int_eq(vmr_handle_fault(space, BASE, DEF, NULL, NULL),
			 -EINVAL);
	ck_assert_int_eq(vmr_handle_fault(space, BASE, DEF | VMA, NULL, &res),
			 -EINVAL);
	ck_assert_int_eq(vmr_handle_fault(space, BASE, DEF | (1u << 1), NULL,
					  &res),
			 -EINVAL);
	ck_assert_int_eq(vmr_handle_fault(space, BASE, 1u << 31, NULL, &res),
			 -EINVAL);
	/* TRIED without ALLOW_RETRY is illegal in the kernel too. */
	ck_assert_int_eq(vmr_handle_fault(space, BASE, TRIED, NULL, &res),
			 -EINVAL);
	ck_assert_uint_eq(res, 0x1234);
	ck_assert_int_eq(vmr_fault_release(NULL), -EINVAL);
	ck_assert_int_eq(vmr_space_shutdown(NULL), -EINVAL);
	ck_assert(!vmr_space_is_shut_down(NULL));
	teardown();
}
END_TEST

START_TEST(test_fault_descriptor_size_is_pinned)
{
	ck_assert_uint_eq(sizeof(struct vmr_fault),
			  4 * sizeof(void *) + 2 * sizeof(unsigned int) +
				  2 * sizeof(void *) +
				  sizeof(struct vmr_range_lock) +
				  2 * sizeof(unsigned int) + 2 * sizeof(void *) +
				  4 * sizeof(uintptr_t));
}
END_TEST

/* ---- shutdown ----------------------------------------------------------- */

START_TEST(test_shut_down_space_refuses_new_faults)
{
	static const struct step ok[] = { { RET, 0, 0 } };
	struct script s = { .steps = ok, .nr_steps = 1 };
	struct vmr_stats st;
	vmr_fault_t res;

	make(VMR_RETRY_VMA);
	map(BASE, 4, VMR_PROT_READ, &scripted_ops);
	ck_assert(!vmr_space_is_shut_down(space));
	ck_assert_int_eq(vmr_space_shutdown(space), 0);
	ck_assert(vmr_space_is_shut_down(space));
	ck_assert_int_eq(vmr_handle_fault(space, BASE, DEF, &s, &res), 0);
	ck_assert_uint_eq(res, RETRY);
	ck_assert_uint_eq(s.calls, 0);
	vmr_space_stats(space, &st, sizeof(st));
	ck_assert_uint_eq(st.result_unfinished, 1);
	teardown();
}
END_TEST

/* ---- counters ------------------------------------------------------------ */

static void fault_n_times(int n)
{
	static const struct step ok[] = { { RET, 0, 0 } };
	struct script sc = { .steps = ok, .nr_steps = 1 };
	vmr_fault_t res;

	for (int i = 0; i < n; i++)
		vmr_handle_fault(space, BASE, DEF, &sc, &res);
}

static void *fault_100_times(void *arg)
{
	(void)arg;
	urcu_memb_register_thread();
	fault_n_times(100);
	urcu_memb_unregister_thread();
	return NULL;
}

START_TEST(test_counts_survive_their_threads_and_reset_to_zero)
{
	struct vmr_stats st;
	pthread_t t;

	make(VMR_RETRY_VMA);
	map(BASE, 4, VMR_PROT_READ, &scripted_ops);
	for (int i = 0; i < 3; i++) {
		ck_assert_int_eq(pthread_create(&t, NULL, fault_100_times,
						NULL),
				 0);
		pthread_join(t, NULL);
	}
	ck_assert_int_eq(vmr_space_stats(space, &st, sizeof(st)), 0);
	ck_assert_uint_eq(st.faults, 300);
	ck_assert_uint_eq(st.vma_lock_success, 300);
	ck_assert_uint_eq(st.result_ok, 300);
	ck_assert_int_eq(vmr_space_stats_reset(space), 0);
	ck_assert_int_eq(vmr_space_stats(space, &st, sizeof(st)), 0);
	ck_assert_uint_eq(st.faults, 0);
	fault_n_times(7);
	ck_assert_int_eq(vmr_space_stats(space, &st, sizeof(st)), 0);
	ck_assert_uint_eq(st.faults, 7);
	teardown();
}
END_TEST

START_TEST(test_stats_copy_what_the_caller_knows)
{
	struct vmr_stats st;
	uint64_t two[3] = { 0, 0, 0xfeed };

	make(VMR_RETRY_VMA);
	ck_assert_int_eq(vmr_space_stats(NULL, &st, sizeof(st)), -EINVAL);
	ck_assert_int_eq(vmr_space_stats(space, NULL, sizeof(st)), -EINVAL);
	ck_assert_int_eq(vmr_space_stats(space, &st, 7), -EINVAL);
	ck_assert_int_eq(vmr_space_stats_reset(NULL), -EINVAL);
	/* An older, shorter struct: only its counters are written. */
	ck_assert_int_eq(vmr_space_stats(space, (struct vmr_stats *)two,
					 2 * sizeof(uint64_t)),
			 0);
	ck_assert_uint_eq(two[2], 0xfeed);
	teardown();
}
END_TEST

START_TEST(test_percentiles_come_from_bucket_bounds)
{
	uint64_t h[VMR_HIST_BUCKETS] = { 0 };

	ck_assert_uint_eq(vmr_hist_percentile(h, 50), 0);
	ck_assert_uint_eq(vmr_hist_percentile(NULL, 50), 0);
	h[3] = 90; /* [8, 16) ns */
	h[10] = 10; /* [1024, 2048) ns */
	ck_assert_uint_eq(vmr_hist_percentile(h, 50), 16);
	ck_assert_uint_eq(vmr_hist_percentile(h, 90), 16);
	ck_assert_uint_eq(vmr_hist_percentile(h, 99), 2048);
	ck_assert_uint_eq(vmr_hist_percentile(h, 100), 2048);
	ck_assert_uint_eq(vmr_hist_percentile(h, 0), 16);
}
END_TEST

/* ---- pagers under fire -------------------------------------------------- */

/*
 * Regions over [BASE, BASE + NPAGES pages), offsets equal to the distance
 * from BASE, so that page i is always backing page i whatever splits the
 * writers make.  The handler reads a page through page wait from a slow
 * store (once; again only if it was evicted) and "installs" it by checking
 * its contents.  Writers protect random ranges and remap (MAP_REPLACE)
 * random ranges with the same offsets, evicting what they remapped.
 */
#define NPAGES 128

struct pager {
	struct vmr_pagemap *map;
	uint32_t contents[NPAGES];
	atomic_uint reads[NPAGES], drops[NPAGES];
	atomic_ulong violations, faults, handled;
	atomic_bool stop;
	bool region_mode;
	uint64_t seed;
};

static struct pager *pager;

static void pager_check(struct vmr_fault *vmf)
{
	const struct vmr_region *r = vmf->region, *now;
	uintptr_t a = vmf->real_address;

	if (a < vmr_region_start(r) || a >= vmr_region_end(r) ||
	    vmr_region_offset(r) != vmr_region_start(r) - BASE)
		atomic_fetch_add(&pager->violations, 1);
	if (vmf->lock != L_VMA)
		return;
	if (pager->region_mode) {
		/* Holding the whole region: nobody may remove it. */
		if (vmr_region_is_detached(r))
			atomic_fetch_add(&pager->violations, 1);
		return;
	}
	/* Holding its page: whatever maps it now maps it the same way. */
	vmr_rcu_read_lock(NULL);
	now = vmr_space_find_region(vmf->space, a);
	if (!now || vmr_region_prot(now) != vmr_region_prot(r))
		atomic_fetch_add(&pager->violations, 1);
	vmr_rcu_read_unlock(NULL);
}

static vmr_fault_t pager_fault(struct vmr_fault *vmf)
{
	size_t i = (vmr_region_offset(vmf->region) + vmf->address -
		    vmr_region_start(vmf->region)) / PG;
	vmr_fault_t ret;

	pager_check(vmf);
	ret = vmr_page_lock_or_retry(vmf, pager->map, i);
	if (ret)
		return ret;
	if (!vmr_page_uptodate(pager->map, i)) {
		ret = vmr_fault_release_for_io(vmf);
		usleep(200); /* the store */
		pager->contents[i] = (uint32_t)i * 2654435761u;
		atomic_fetch_add(&pager->reads[i], 1);
		vmr_page_mark_uptodate(pager->map, i);
		if (ret) {
			vmr_page_unlock(pager->map, i);
			return ret | MAJOR;
		}
	}
	if (pager->contents[i] != (uint32_t)i * 2654435761u)
		atomic_fetch_add(&pager->violations, 1);
	pager_check(vmf);
	atomic_fetch_add(&pager->handled, 1);
	vmr_page_unlock(pager->map, i);
	return 0;
}

static const struct vmr_region_ops pager_ops = { .fault = pager_fault };

static void *pager_thread(void *arg)
{
	static atomic_uint ids;
	struct vmr_rng r;

	(void)arg;
	vmr_rng_init(&r, pager->seed + atomic_fetch_add(&ids, 1));
	urcu_memb_register_thread();
	while (!atomic_load_explicit(&pager->stop, memory_order_relaxed)) {
		uintptr_t a = BASE + vmr_rng_below(&r, NPAGES * PG);
		unsigned int f = DEF | (vmr_rng_below(&r, 4) ?
						0 : VMR_FAULT_FLAG_WRITE);
		vmr_fault_t res;

		if (vmr_handle_fault(space, a, f, NULL, &res) ||
		    (res & ~(MAJOR | VMR_FAULT_SIGSEGV)))
			atomic_fetch_add(&pager->violations, 1);
		atomic_fetch_add(&pager->faults, 1);
	}
	urcu_memb_unregister_thread();
	return NULL;
}

static void *pager_writer(void *arg)
{
	struct vmr_rng r;

	(void)arg;
	vmr_rng_init(&r, pager->seed ^ 0xabc);
	urcu_memb_register_thread();
	while (!atomic_load_explicit(&pager->stop, memory_order_relaxed)) {
		size_t p = vmr_rng_below(&r, NPAGES - 1);
		size_t n = 1 + vmr_rng_below(&r, 8);
		struct vmr_region_desc d = {
			.start = BASE + p * PG, .prot = VMR_PROT_READ,
			.offset = p * PG, .ops = &pager_ops,
			.ops_size = sizeof(pager_ops),
		};

		if (p + n > NPAGES)
			n = NPAGES - p;
		d.len = n * PG;
		if (vmr_rng_below(&r, 2)) {
			vmr_protect(space, d.start, d.len,
				    VMR_PROT_READ |
					    (vmr_rng_below(&r, 2) ?
						     VMR_PROT_WRITE : 0));
		} else {
			if (vmr_map(space, &d, sizeof(d), VMR_MAP_REPLACE))
				atomic_fetch_add(&pager->violations, 1);
			/* The old mapping's pages are dropped. */
			for (size_t q = p; q < p + n; q++)
				if (vmr_page_evict(pager->map, q))
					atomic_fetch_add(&pager->drops[q], 1);
		}
		usleep(500);
	}
	urcu_memb_unregister_thread();
	return NULL;
}

static void pagers(unsigned int policy, enum vmr_lock_granularity g)
{
	struct vmr_space_config cfg = { .page_size = PG, .policy = policy,
					.granularity = g };
	struct pager *p = calloc(1, sizeof(*p));
	unsigned long violations, handled;
	struct vmr_stats st;
	pthread_t t[5];
	double end;

	ck_assert_ptr_nonnull(p);
	pager = p;
	p->region_mode = g == VMR_LOCK_REGION;
	p->seed = vmr_test_seed() ^ policy ^ ((uint64_t)g << 8);
	urcu_memb_register_thread();
	ck_assert_int_eq(vmr_space_create(&cfg, sizeof(cfg), &space), 0);
	ck_assert_int_eq(vmr_pagemap_create(space, NPAGES, &p->map), 0);
	map(BASE, NPAGES, VMR_PROT_READ | VMR_PROT_WRITE, &pager_ops);
	for (int i = 0; i < 4; i++)
		ck_assert_int_eq(pthread_create(&t[i], NULL, pager_thread,
						NULL),
				 0);
	ck_assert_int_eq(pthread_create(&t[4], NULL, pager_writer, NULL), 0);
	end = vmr_test_now() + vmr_test_seconds();
	while (vmr_test_now() < end)
		usleep(10000);
	atomic_store(&p->stop, true);
	for (int i = 0; i < 5; i++)
		pthread_join(t[i], NULL);

	violations = atomic_load(&p->violations);
	handled = atomic_load(&p->handled);
	ck_assert_uint_eq(violations, 0);
	ck_assert_uint_gt(handled, 100);
	for (size_t i = 0; i < NPAGES; i++) {
		unsigned int reads = atomic_load(&p->reads[i]);
		unsigned int drops = atomic_load(&p->drops[i]);

		/* Read once, and once more per drop at most. */
		ck_assert_msg(reads <= 1 + drops, "page %zu read %u times, "
			      "dropped %u", i, reads, drops);
	}
	/* The counters add up. */
	ck_assert_int_eq(vmr_space_stats(space, &st, sizeof(st)), 0);
	ck_assert_uint_eq(st.faults, atomic_load(&p->faults));
	ck_assert_uint_eq(st.result_ok + st.result_nopage + st.result_completed +
				  st.result_sigsegv + st.result_sigbus +
				  st.result_oom + st.result_unfinished,
			  st.faults);
	ck_assert_uint_eq(st.bad_results, 0);
	ck_assert_uint_eq(st.result_unfinished, 0);
	if (policy == VMR_RETRY_VMA)
		ck_assert_uint_gt(st.vma_retries, 0);
	ck_assert_uint_le(st.page_rereads, st.page_reads);
	vmr_pagemap_destroy(p->map);
	ck_assert(vmr_space_lock_is_idle(&space->lock));
	ck_assert_int_eq(vmr_space_destroy(space), 0);
	urcu_memb_unregister_thread();
	free(p);
}

START_TEST(test_pagers_under_writers_retry_space)
{
	pagers(VMR_RETRY_SPACE, _i ? VMR_LOCK_RANGE : VMR_LOCK_REGION);
}
END_TEST

START_TEST(test_pagers_under_writers_retry_vma)
{
	pagers(VMR_RETRY_VMA, _i ? VMR_LOCK_RANGE : VMR_LOCK_REGION);
}
END_TEST

START_TEST(test_pagers_under_writers_hold_io)
{
	pagers(VMR_HOLD_IO, _i ? VMR_LOCK_RANGE : VMR_LOCK_REGION);
}
END_TEST

static Suite *fault_suite(void)
{
	Suite *s = suite_create("fault");
	TCase *tc;

	tc = tcase_create("state machine");
	tcase_add_loop_test(tc, test_state_machine_follows_the_kernel, 0,
			    (int)VMR_ARRAY_SIZE(rows));
	tcase_add_test(tc, test_fault_descriptor_size_is_pinned);
	suite_add_tcase(s, tc);

	tc = tcase_create("access and regions");
	tcase_add_test(tc,
		       test_forbidden_accesses_are_sigsegv_without_the_handler);
	tcase_add_test(tc, test_no_region_is_sigsegv_after_an_abort);
	tcase_add_test(tc, test_a_region_without_a_handler_is_sigbus);
	tcase_add_loop_test(tc,
			    test_a_region_unmapped_during_io_ends_in_sigsegv,
			    VMR_RETRY_SPACE, VMR_HOLD_IO);
	suite_add_tcase(s, tc);

	tc = tcase_create("bad results");
#ifdef VMR_DEBUG
	tcase_add_loop_test_raise_signal(
		tc, test_bad_results_end_in_sigbus_with_no_lock_left, SIGABRT,
		0, (int)VMR_ARRAY_SIZE(bad));
#else
	tcase_add_loop_test(tc,
			    test_bad_results_end_in_sigbus_with_no_lock_left,
			    0, (int)VMR_ARRAY_SIZE(bad));
#endif
	tcase_add_test(tc, test_bad_fault_arguments_are_refused);
	tcase_add_test(tc, test_shut_down_space_refuses_new_faults);
	suite_add_tcase(s, tc);

	tc = tcase_create("counters");
	tcase_add_test(tc, test_counts_survive_their_threads_and_reset_to_zero);
	tcase_add_test(tc, test_stats_copy_what_the_caller_knows);
	tcase_add_test(tc, test_percentiles_come_from_bucket_bounds);
	suite_add_tcase(s, tc);

	tc = tcase_create("pagers under writers");
	tcase_set_timeout(tc, vmr_test_seconds() * 3 + 60);
	tcase_add_loop_test(tc, test_pagers_under_writers_retry_space, 0, 2);
	tcase_add_loop_test(tc, test_pagers_under_writers_retry_vma, 0, 2);
	tcase_add_loop_test(tc, test_pagers_under_writers_hold_io, 0, 2);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	return vmr_test_run(fault_suite());
}
