/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * libvmaretry - the fault engine: the retry state machine of the kernel's
 * arch fault handler (arch/x86/mm/fault.c do_user_addr_fault(), arm64's
 * do_page_fault()), with the RFC's retry_vma label.
 *
 * State machine (one struct vmr_fault lives across all attempts):
 *
 *   retry_vma:  VMA-range read lock under RCU (lock_vma_under_rcu());
 *               failed -> ABORT, to lock_space
 *               access error -> unlock, SIGSEGV (VMA_LOCK_SUCCESS, as
 *               since Linux 6.10)
 *               ->fault(VMA_LOCK); unlock unless RETRY/COMPLETED
 *               no RETRY -> done (VMA_LOCK_SUCCESS)
 *               RETRY -> VMA_LOCK_RETRY; TRIED if MAJOR; shut down -> done;
 *               RETRY_VMA and under vma_retry_max -> retry_vma
 *   lock_space: space read lock (lock_mm_and_find_vma()); no region or an
 *               access error -> unlock, SIGSEGV
 *               ->fault(); unlock unless RETRY/COMPLETED
 *               RETRY -> TRIED, and after space_retry_max retries also
 *               clear ALLOW_RETRY; shut down or RETRY_NOWAIT -> done;
 *               else lock_space again
 *
 * Progress: every path that loops is bounded.  The fine-grained loop by
 * vma_retry_max; the space-lock loop by space_retry_max, after which the
 * handler runs without ALLOW_RETRY and must finish (a RETRY then is a bad
 * result and ends the fault).  A writer can make the fine-grained lock fail
 * (-EBUSY) but then holds the space lock for write, which the fault waits
 * for and then gets: a writer delays a fault, never starves it.
 *
 * Handler results are checked against what the handler did with its lock
 * (struct vmr_fault.lock, which only the release calls clear): impossible
 * combinations release whatever lock is left, count bad_results and end
 * the fault with SIGBUS, so no lock leaks whatever a handler returns.
 *
 * Counters go to the calling thread's tstate (lib/stats.c): plain stores,
 * no shared line.  The commonest fault (fine-grained lock, result 0) makes
 * one store, to the tstate line its lock writes anyway.  With
 * VMR_SPACE_TIME_FAULTS each fault also reads the clock twice for the
 * latency histogram.
 */
/* The range lock's read side is inlined (lib/rangelock.h). */
#define _LGPL_SOURCE
#include <urcu/urcu-memb.h>

#include "rangelock.h"

#include <errno.h>

#define KNOWN_RESULTS                                                          \
	(VMR_FAULT_OOM | VMR_FAULT_SIGBUS | VMR_FAULT_MAJOR |                 \
	 VMR_FAULT_SIGSEGV | VMR_FAULT_NOPAGE | VMR_FAULT_LOCKED |            \
	 VMR_FAULT_RETRY | VMR_FAULT_RETRY_VMA | VMR_FAULT_COMPLETED)

static inline void count(struct vmr_tstate *ts, size_t idx)
{
	if (ts)
		vmr_count(ts, idx, 1);
}

unsigned int vmr_fault_policy(const struct vmr_fault *vmf)
{
	if (!vmf)
		return VMR_POLICY_DEFAULT;
	if (vmf->region && vmf->region->policy)
		return vmf->region->policy;
	return vmf->space->policy;
}

bool vmr_fault_allow_retry_first(const struct vmr_fault *vmf)
{
	return vmf && (vmf->flags & (VMR_FAULT_FLAG_ALLOW_RETRY |
				     VMR_FAULT_FLAG_TRIED)) ==
			      VMR_FAULT_FLAG_ALLOW_RETRY;
}

/* Release the lock the fault holds (it holds one). */
static inline void fault_unlock(struct vmr_fault *vmf)
{
	if (vmr_likely(vmf->lock == VMR_FAULT_LOCK_VMA))
		vmr_range_read_unlock_held(vmf->space, &vmf->range);
	else
		vmr_space_read_unlock(vmf->space);
	vmf->lock = VMR_FAULT_LOCK_NONE;
}

int vmr_fault_release(struct vmr_fault *vmf)
{
	if (!vmf)
		return -EINVAL;
	if (vmf->lock == VMR_FAULT_LOCK_NONE)
		return vmr_misuse("fault lock released twice") ? -EINVAL : 0;
	fault_unlock(vmf);
	return 0;
}

vmr_fault_t vmr_fault_release_for_io(struct vmr_fault *vmf)
{
	unsigned int policy;
	bool was_vma;

	if (!vmf || vmf->lock == VMR_FAULT_LOCK_NONE ||
	    !vmr_fault_allow_retry_first(vmf))
		return 0;
	if (vmf->flags & VMR_FAULT_FLAG_RETRY_NOWAIT)
		return VMR_FAULT_RETRY; /* lock held: "would wait" */
	policy = vmr_fault_policy(vmf);
	if (policy == VMR_HOLD_IO)
		return 0;
	was_vma = vmf->lock == VMR_FAULT_LOCK_VMA;
	vmr_fault_release(vmf);
	if (was_vma && policy == VMR_RETRY_VMA)
		return VMR_FAULT_RETRY | VMR_FAULT_RETRY_VMA;
	return VMR_FAULT_RETRY;
}

static bool shut_down(const struct vmr_space *space)
{
	return atomic_load_explicit(&space->dying, memory_order_acquire);
}

/* Was @res a result the handler could return, given what it did? */
static bool result_is_bad(const struct vmr_fault *vmf, vmr_fault_t res,
			  unsigned int held_before)
{
	bool released = vmf->lock == VMR_FAULT_LOCK_NONE;
	bool retry = res & VMR_FAULT_RETRY;

	if (res & ~KNOWN_RESULTS)
		return true;
	if ((res & VMR_FAULT_RETRY_VMA) &&
	    (!retry || held_before != VMR_FAULT_LOCK_VMA))
		return true;
	if (retry && (res & VMR_FAULT_ERROR))
		return true;
	/* Without ALLOW_RETRY only a wait ended by shutdown may retry
	 * (__folio_lock_or_retry() on a fatal signal). */
	if (retry && !(vmf->flags & VMR_FAULT_FLAG_ALLOW_RETRY) &&
	    !(released && shut_down(vmf->space)))
		return true;
	if (retry && (vmf->flags & VMR_FAULT_FLAG_RETRY_NOWAIT))
		return false; /* lock held or not: both are legal */
	if (res & (VMR_FAULT_RETRY | VMR_FAULT_COMPLETED))
		return !released;
	return released;
}

/*
 * One call of the handler with the fault's lock held; returns its result
 * with the kernel's unlock rule applied: on return the lock is released
 * unless the result is RETRY with RETRY_NOWAIT (then still held).
 */
static inline __attribute__((always_inline)) vmr_fault_t
call_handler(struct vmr_fault *vmf, struct vmr_tstate *ts)
{
	const struct vmr_region *r = vmf->region;
	unsigned int held_before = vmf->lock;
	vmr_fault_t res;

	VMR_DEBUG_POINT(VMR_DP_FAULT_LOCKED, vmf->address);
	res = r->ops.fault ? r->ops.fault(vmf) : VMR_FAULT_SIGBUS;
	/* The common case: finished, lock still held. */
	if (vmr_likely(!(res & ~(VMR_FAULT_MAJOR | VMR_FAULT_NOPAGE |
				 VMR_FAULT_LOCKED)) &&
		       vmf->lock != VMR_FAULT_LOCK_NONE)) {
		fault_unlock(vmf);
		return res;
	}
	if (vmr_unlikely(result_is_bad(vmf, res, held_before))) {
		count(ts, VMR_STAT(bad_results));
#ifdef VMR_DEBUG
		vmr_die("fault handler returned %#x (flags %#x, lock %u -> %u)",
			res, vmf->flags, held_before, vmf->lock);
#endif
		if (vmf->lock != VMR_FAULT_LOCK_NONE)
			vmr_fault_release(vmf);
		return VMR_FAULT_SIGBUS;
	}
	if (!(res & (VMR_FAULT_RETRY | VMR_FAULT_COMPLETED)))
		vmr_fault_release(vmf);
	return res;
}

static void count_result(struct vmr_tstate *ts, vmr_fault_t res,
			 unsigned int flags)
{
	size_t idx;

	if (!ts)
		return;
	if (vmr_likely(!res))
		idx = VMR_STAT(result_ok);
	else if (res & VMR_FAULT_SIGSEGV)
		idx = VMR_STAT(result_sigsegv);
	else if (res & VMR_FAULT_SIGBUS)
		idx = VMR_STAT(result_sigbus);
	else if (res & VMR_FAULT_OOM)
		idx = VMR_STAT(result_oom);
	else if (res & VMR_FAULT_RETRY)
		idx = VMR_STAT(result_unfinished);
	else if (res & VMR_FAULT_COMPLETED)
		idx = VMR_STAT(result_completed);
	else if (res & VMR_FAULT_NOPAGE)
		idx = VMR_STAT(result_nopage);
	else
		idx = VMR_STAT(result_ok);
	vmr_count(ts, idx, 1); /* the sum of these is stats.faults */
	/* mm_account_fault(): a retried fault that finished was major. */
	if (!(res & (VMR_FAULT_ERROR | VMR_FAULT_RETRY)) &&
	    ((res & VMR_FAULT_MAJOR) || (flags & VMR_FAULT_FLAG_TRIED)))
		vmr_count(ts, VMR_STAT(result_major), 1);
}

/* How the fine-grained attempts ended. */
enum vma_outcome {
	VMA_FALLBACK, /* go on under the space lock */
	VMA_DONE,     /* done, *res set and counted */
	VMA_DONE_OK,  /* done with result 0 and no TRIED: count it fast */
};

/* The fine-grained attempts (*@res set when done). */
static enum vma_outcome fault_on_vma_lock(struct vmr_fault *vmf,
					  struct vmr_tstate *ts,
					  unsigned int *flags, vmr_fault_t *res)
{
	struct vmr_space *space = vmf->space;
	unsigned int misses, tries = 0;
	int err;

	for (;;) {
		misses = 0;
		err = vmr_range_read_lock_ts(space, ts, vmf->real_address, 1,
					     &vmf->range, &misses);
		if (misses)
			vmr_count(ts, VMR_STAT(vma_lock_miss), misses);
		if (err) {
			count(ts, VMR_STAT(vma_lock_abort));
			return VMA_FALLBACK;
		}
		vmf->region = vmf->range.region;
		vmf->lock = VMR_FAULT_LOCK_VMA;
		vmf->flags = *flags | VMR_FAULT_FLAG_VMA_LOCK;
		if (vmr_access_error(vmf->region, *flags)) {
			vmr_fault_release(vmf);
			count(ts, VMR_STAT(vma_lock_success));
			*res = VMR_FAULT_SIGSEGV;
			return VMA_DONE;
		}
		*res = call_handler(vmf, ts);
		if (vmr_likely(!*res && !(*flags & VMR_FAULT_FLAG_TRIED)))
			return VMA_DONE_OK;
		/* "COMPLETED ends the fault at once", RETRY or not. */
		if (!(*res & VMR_FAULT_RETRY) || (*res & VMR_FAULT_COMPLETED)) {
			count(ts, VMR_STAT(vma_lock_success));
			return VMA_DONE;
		}
		count(ts, VMR_STAT(vma_lock_retry));
		VMR_DEBUG_POINT(VMR_DP_FAULT_RETRY, vmf->address);
		if (*res & VMR_FAULT_MAJOR)
			*flags |= VMR_FAULT_FLAG_TRIED;
		if (shut_down(space))
			return VMA_DONE;
		if (!(*res & VMR_FAULT_RETRY_VMA))
			return VMA_FALLBACK;
		if (tries == space->vma_retry_max) {
			count(ts, VMR_STAT(vma_retries_exhausted));
			return VMA_FALLBACK;
		}
		tries++;
		count(ts, VMR_STAT(vma_retries));
	}
}

/* The attempts under the space lock; sets *@res, updates *@flagsp. */
static void fault_on_space_lock(struct vmr_fault *vmf, struct vmr_tstate *ts,
				unsigned int *flagsp, vmr_fault_t *res)
{
	struct vmr_space *space = vmf->space;
	unsigned int tries = 0, flags = *flagsp;

	for (;;) {
		vmr_space_read_lock(space);
		count(ts, VMR_STAT(space_lock_faults));
		vmf->lock = VMR_FAULT_LOCK_SPACE;
		vmf->region = vmr_tree_lookup(space->tree, vmf->real_address,
					      NULL);
		vmf->flags = flags;
		if (!vmf->region || vmr_access_error(vmf->region, flags)) {
			vmr_fault_release(vmf);
			*res = VMR_FAULT_SIGSEGV;
			return;
		}
		*res = call_handler(vmf, ts);
		/* Keep TRIED once a call had it, though retry_disallowed
		 * clears it below: result_major counts faults "retried with
		 * TRIED" (mm_account_fault() sees it; the kernel never
		 * clears it). */
		*flagsp = flags | (*flagsp & VMR_FAULT_FLAG_TRIED);
		if (!(*res & VMR_FAULT_RETRY))
			return;
		if (flags & VMR_FAULT_FLAG_RETRY_NOWAIT) {
			/* "Would have waited": end it, lock released. */
			if (vmf->lock != VMR_FAULT_LOCK_NONE)
				vmr_fault_release(vmf);
			return;
		}
		/* "COMPLETED ends the fault at once", RETRY or not. */
		if (*res & VMR_FAULT_COMPLETED)
			return;
		if (shut_down(space))
			return;
		flags |= VMR_FAULT_FLAG_TRIED;
		count(ts, VMR_STAT(space_retries));
		VMR_DEBUG_POINT(VMR_DP_FAULT_RETRY, vmf->address);
		if (++tries >= space->space_retry_max) {
			/* The handler must finish now (and (!ALLOW & TRIED)
			 * is illegal). */
			flags &= ~(VMR_FAULT_FLAG_ALLOW_RETRY |
				   VMR_FAULT_FLAG_TRIED);
			count(ts, VMR_STAT(retry_disallowed));
		}
	}
}

int vmr_handle_fault(struct vmr_space *space, uintptr_t address,
		     unsigned int flags, void *ctx, vmr_fault_t *result)
{
	struct vmr_fault vmf;
	struct vmr_tstate *ts;
	uint64_t start = 0;
	vmr_fault_t res = VMR_FAULT_RETRY;
	enum vma_outcome out = VMA_FALLBACK;

	if (!space || !result || (flags & ~VMR_FAULT_CALLER_FLAGS) ||
	    (flags & (VMR_FAULT_FLAG_TRIED | VMR_FAULT_FLAG_ALLOW_RETRY)) ==
		    VMR_FAULT_FLAG_TRIED)
		return -EINVAL;
	/* The write holder would fault under its own write lock and then
	 * "release" a read hold it never got.  An even seq (no write hold:
	 * the line every range lock reads anyway) spares the owner load. */
	if (vmr_unlikely(atomic_load_explicit(&space->lock.seq,
					      memory_order_relaxed) & 1) &&
	    vmr_space_lock_is_owner(&space->lock))
		return -EDEADLK;
	ts = vmr_tstate_get(space);
	if (space->time_faults)
		start = vmr_now_ns();
	/* Every field a handler or the engine reads before writing it. */
	vmf.space = space;
	vmf.region = NULL;
	vmf.address = address & ~space->page_mask;
	vmf.real_address = address;
	vmf.flags = flags;
	vmf.lock = VMR_FAULT_LOCK_NONE;
	vmf.ctx = ctx;
	vmf.handler_data = 0;
	vmf.range.slot = NULL;
	vmf.pin_held = 0;
	if (!shut_down(space)) {
		/* sanitize_fault_flags(): never VMA_LOCK with RETRY_NOWAIT. */
		if (!(flags & VMR_FAULT_FLAG_RETRY_NOWAIT) && ts)
			out = fault_on_vma_lock(&vmf, ts, &flags, &res);
		if (out == VMA_FALLBACK)
			fault_on_space_lock(&vmf, ts, &flags, &res);
	}
	if (vmr_unlikely(vmf.pin_held))
		vmr_fault_unpin(&vmf);
	if (vmr_likely(out == VMA_DONE_OK))
		vmr_count_add(&ts->fast_faults, 1);
	else
		count_result(ts, res, flags);
	if (start)
		vmr_count_hist(ts, VMR_STAT(fault_latency_hist),
			       vmr_now_ns() - start);
	*result = res;
	return 0;
}

int vmr_space_shutdown(struct vmr_space *space)
{
	if (!space)
		return -EINVAL;
	atomic_store_explicit(&space->dying, true, memory_order_seq_cst);
	vmr_pagemaps_wake_all(space);
	return 0;
}

bool vmr_space_is_shut_down(const struct vmr_space *space)
{
	return space && shut_down(space);
}
