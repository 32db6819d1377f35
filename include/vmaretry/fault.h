/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * libvmaretry - the fault engine: the kernel's fault reasons and flags, the
 * fault descriptor, and the retry state machine of its arch fault handler
 * (do_user_addr_fault() + handle_mm_fault()), with the RETRY_VMA extension
 * of the Nov 2025 linux-mm RFC ("mm: continue using per-VMA lock when
 * retrying page faults after I/O").
 *
 * A fault is handled by vmr_handle_fault(): it looks the address up and
 * read-locks the region's range under RCU (lock_vma_under_rcu()), checks
 * the access against the region's protection, and calls the region's
 * ->fault handler with VMR_FAULT_FLAG_VMA_LOCK set.  A handler that must
 * wait for I/O calls vmr_fault_release_for_io() (or waits through page
 * wait, <vmaretry/pagewait.h>), which releases the fault's lock when the
 * policy says so and tells it what to return; the engine then retries as
 * the kernel does: under the space lock (RETRY, mainline), on the
 * fine-grained lock again (RETRY | RETRY_VMA, the RFC), or not at all
 * (VMR_HOLD_IO: the lock was kept across the I/O).
 *
 * Who releases which lock is the kernel's rule: after a handler returns,
 * the engine releases the fault's lock unless the result has RETRY or
 * COMPLETED, which mean the handler released it already.  The one
 * exception is RETRY with VMR_FAULT_FLAG_RETRY_NOWAIT, which means "would
 * have to wait" with the lock still held, as in __folio_lock_or_retry();
 * so, as the kernel's sanitize_fault_flags() demands, a no-wait fault never
 * runs on the fine-grained lock (there RETRY must always mean released).
 */
#ifndef VMARETRY_FAULT_H
#define VMARETRY_FAULT_H

#include <vmaretry/rangelock.h>

VMR_BEGIN_DECLS

/*
 * Fault reasons: the kernel's enum vm_fault_reason with the RFC applied
 * (RETRY_VMA takes 0x000800 and the bits above RETRY move up by one).
 */
#define VMR_FAULT_OOM 0x000001u       /* out of memory */
#define VMR_FAULT_SIGBUS 0x000002u    /* bad access: SIGBUS */
#define VMR_FAULT_MAJOR 0x000004u     /* the page had to be read (accounting) */
#define VMR_FAULT_SIGSEGV 0x000040u   /* no region, or a forbidden access */
#define VMR_FAULT_NOPAGE 0x000100u    /* handled; the handler installed it */
#define VMR_FAULT_LOCKED 0x000200u    /* the handler returns with a page lock */
#define VMR_FAULT_RETRY 0x000400u     /* lock released; fault again */
#define VMR_FAULT_RETRY_VMA 0x000800u /* with RETRY: on the fine-grained lock */
#define VMR_FAULT_COMPLETED 0x008000u /* lock released, and the fault is done */
#define VMR_FAULT_ERROR                                                        \
	(VMR_FAULT_OOM | VMR_FAULT_SIGBUS | VMR_FAULT_SIGSEGV)

/* Fault flags: the kernel's enum fault_flag. */
#define VMR_FAULT_FLAG_WRITE (1u << 0)
#define VMR_FAULT_FLAG_ALLOW_RETRY (1u << 2)   /* may drop the lock, RETRY */
#define VMR_FAULT_FLAG_RETRY_NOWAIT (1u << 3)  /* ...but not wait: RETRY held */
#define VMR_FAULT_FLAG_KILLABLE (1u << 4)      /* waits end at shutdown */
#define VMR_FAULT_FLAG_TRIED (1u << 5)         /* retried at least once */
#define VMR_FAULT_FLAG_USER (1u << 6)
#define VMR_FAULT_FLAG_INSTRUCTION (1u << 8)
#define VMR_FAULT_FLAG_INTERRUPTIBLE (1u << 9) /* waits end at shutdown */
#define VMR_FAULT_FLAG_VMA_LOCK (1u << 12)     /* set by the engine only */
/* What the arch handlers start with (FAULT_FLAG_DEFAULT). */
#define VMR_FAULT_FLAG_DEFAULT                                                 \
	(VMR_FAULT_FLAG_ALLOW_RETRY | VMR_FAULT_FLAG_KILLABLE |               \
	 VMR_FAULT_FLAG_INTERRUPTIBLE)

/* The lock a fault holds (struct vmr_fault.lock). */
enum vmr_fault_lock {
	VMR_FAULT_LOCK_NONE = 0,  /* released (by the handler, for I/O) */
	VMR_FAULT_LOCK_VMA = 1,   /* the VMA-range read lock */
	VMR_FAULT_LOCK_SPACE = 2, /* the space lock, for read */
};

struct vmr_pagemap;

/**
 * struct vmr_fault - one fault (struct vm_fault), as a handler sees it
 * @space: the space
 * @region: the region: valid while @lock is not VMR_FAULT_LOCK_NONE
 * @address: the faulting address rounded down to the page
 * @real_address: the faulting address
 * @flags: VMR_FAULT_FLAG_* of this attempt
 * @lock: which lock the fault holds now (enum vmr_fault_lock)
 * @ctx: the caller's pointer, as given to vmr_handle_fault()
 * @handler_data: the handler's own: zero at the first attempt and kept
 *                across every retry of this fault, unlike the kernel's,
 *                which rebuilds its vm_fault on every attempt
 *
 * The engine builds it on its stack and passes it to every attempt of one
 * fault.  The handler reads the fields above and writes only
 * @handler_data; the others are private.  Size pinned by the tests.
 */
struct vmr_fault {
	struct vmr_space *space;
	struct vmr_region *region;
	uintptr_t address;
	uintptr_t real_address;
	unsigned int flags;
	unsigned int lock;
	void *ctx;
	uintptr_t handler_data;
	/* private: */
	struct vmr_range_lock range;
	unsigned int policy;
	unsigned int pin_held;
	struct vmr_pagemap *pin_map;
	size_t pin_index;
	uintptr_t reserved[4];
};

/**
 * vmr_handle_fault() - handle a fault (do_user_addr_fault() +
 *                      handle_mm_fault())
 * @space: the space
 * @address: the faulting address
 * @flags: VMR_FAULT_FLAG_* (usually VMR_FAULT_FLAG_DEFAULT, with WRITE,
 *         INSTRUCTION and USER as the access was); not VMA_LOCK, which the
 *         engine sets; not TRIED without ALLOW_RETRY (illegal in the kernel)
 * @ctx: passed to the handler in struct vmr_fault.ctx
 * @result: receives the final result: 0 or a combination of VMR_FAULT_*
 *
 * The retry state machine, step by step as the kernel's arch handler:
 *  1. unless RETRY_NOWAIT: take the VMA-range read lock
 *     (vmr_range_read_lock()); if it cannot be had (ABORT), go to step 4;
 *  2. check the access: no region, a write to a region without
 *     VMR_PROT_WRITE, an instruction fetch without VMR_PROT_EXEC, or any
 *     access to a VMR_PROT_NONE region gives SIGSEGV without calling the
 *     handler; otherwise call ->fault with VMA_LOCK set;
 *  3. result without RETRY: done (VMA_LOCK_SUCCESS); with RETRY: set TRIED
 *     if the result had MAJOR (VMA_LOCK_RETRY), then with RETRY_VMA go back
 *     to step 1 (the RFC's retry_vma label) unless the space's
 *     vma_retry_max such returns have been followed, else go to step 4;
 *  4. take the space lock for read, look the region up again, check the
 *     access, call ->fault without VMA_LOCK; on RETRY set TRIED and repeat
 *     this step; after space_retry_max repetitions clear ALLOW_RETRY (and
 *     TRIED), so that the handler must finish under the lock.
 * COMPLETED ends the fault at once.  A result the handler could not
 * legally return (unknown bits, RETRY_VMA without RETRY or from the space
 * lock, RETRY or COMPLETED with the lock still held, a lock released with
 * a result saying it was not, an error bit with RETRY) is counted in
 * bad_results, its lock is released if the handler left it, and it ends
 * the fault with SIGBUS (a debug build aborts, naming the result).
 * A region without ->fault gives SIGBUS, as a VMA without one does.
 *
 * Context: a thread registered with the space's flavor, holding no lock of
 * the space.  May sleep (space lock, page waits, the handler).
 * Concurrency: any number of faults, with updates of the space.
 * Return: 0 and *@result: the handler's final result, SIGSEGV as above, or
 * a result with RETRY (as the handler returned it, RETRY_VMA or MAJOR
 * included) when the fault ended unresolved: RETRY_NOWAIT forbade waiting,
 * or the space was shut down (vmr_space_shutdown()), in which case a fault
 * not yet started gets RETRY alone; in every case no lock is held on
 * return.  -EINVAL, with *@result untouched, if @space or @result
 * is NULL or @flags has unknown or illegal bits; -EDEADLK, the same, if
 * the caller holds the space lock for write.
 */
int vmr_handle_fault(struct vmr_space *space, uintptr_t address,
		     unsigned int flags, void *ctx, vmr_fault_t *result);

/**
 * vmr_fault_release_for_io() - the fault must wait for I/O: release its
 *                              lock if the policy says so
 *                              (maybe_unlock_mmap_for_io())
 * @vmf: the fault
 *
 * Handlers are written once for every policy: call this before waiting for
 * I/O, then return what it returned if it was not 0.
 *  - Retry allowed and first try (ALLOW_RETRY, not TRIED, not
 *    RETRY_NOWAIT), policy VMR_RETRY_SPACE: the lock is released; returns
 *    RETRY (retry under the space lock).
 *  - Same, policy VMR_RETRY_VMA, on the fine-grained lock: released;
 *    returns RETRY | RETRY_VMA.  (On the space lock: RETRY.)
 *  - Not a first try, or retry not allowed: the lock is kept; returns 0:
 *    do the I/O holding it and finish.
 *  - First try with RETRY_NOWAIT: the lock is kept; returns RETRY: return
 *    it without waiting (the engine releases the lock).
 *  - First try, policy VMR_HOLD_IO: the lock is kept; returns 0.
 * After a release, @vmf->region must not be used; the handler may wait for
 * its I/O, and return the reason (or COMPLETED if it finished the fault
 * without the lock, MAJOR may be or'ed in).
 *
 * Context: inside the handler of @vmf, holding the fault's lock.
 * Return: 0 or the reason to return, as above; 0 also if @vmf is NULL or
 * holds no lock (there is nothing to release).
 */
vmr_fault_t vmr_fault_release_for_io(struct vmr_fault *vmf);

/**
 * vmr_fault_release() - release the fault's lock now (release_fault_lock())
 * @vmf: the fault
 *
 * For handlers that must return RETRY for reasons of their own (work that
 * needs the space lock: return RETRY from the fine-grained attempt) or
 * that finish without the lock (return COMPLETED).
 *
 * Context: inside the handler of @vmf, holding the fault's lock.
 * Return: 0; -EINVAL if @vmf is NULL or holds no lock (a debug build aborts).
 */
int vmr_fault_release(struct vmr_fault *vmf);

/**
 * vmr_fault_policy() - the retry policy of a fault (its region's, or its
 *                      space's)
 * @vmf: the fault
 *
 * Return: VMR_RETRY_SPACE, VMR_RETRY_VMA or VMR_HOLD_IO;
 * VMR_POLICY_DEFAULT if @vmf is NULL.
 */
unsigned int vmr_fault_policy(const struct vmr_fault *vmf);

/**
 * vmr_fault_allow_retry_first() - whether the fault may still drop its lock
 *                                 (fault_flag_allow_retry_first())
 * @vmf: the fault
 *
 * Return: true if ALLOW_RETRY is set and TRIED is not; false if @vmf is
 * NULL.
 */
bool vmr_fault_allow_retry_first(const struct vmr_fault *vmf);

/**
 * vmr_space_shutdown() - cancel every fault of a space
 * @space: the space
 *
 * From now on vmr_handle_fault() returns RETRY (unfinished) at once, and
 * every KILLABLE or INTERRUPTIBLE page wait of a fault in the space ends:
 * its fault returns RETRY with no lock held.  Faults already running their
 * handler finish it.  Call it before stopping the threads that fault and
 * then vmr_space_destroy().  There is no way back.
 *
 * Context: any thread.  Never sleeps.
 * Return: 0; -EINVAL if @space is NULL.
 */
int vmr_space_shutdown(struct vmr_space *space);

/**
 * vmr_space_is_shut_down() - whether vmr_space_shutdown() was called
 * @space: the space
 *
 * Return: true if it was; false if @space is NULL.
 */
bool vmr_space_is_shut_down(const struct vmr_space *space);

VMR_END_DECLS

#endif /* VMARETRY_FAULT_H */
