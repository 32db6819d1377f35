/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * libvmaretry - definitions shared by the library's own files.
 *
 * The library is built with -fvisibility=hidden: only the declarations of
 * the public headers, included here under default visibility, can be
 * exported, and lib/libvmaretry.map picks which of them are.  Everything
 * declared below is internal: white-box tests reach it through the internal
 * static library, callers of the shared library never see it.
 */
#ifndef VMR_INTERNAL_H
#define VMR_INTERNAL_H

#pragma GCC visibility push(default)
#include "vmaretry.h"
#pragma GCC visibility pop

#include <stddef.h>

#include "debugpoint.h"

/*
 * Our thread-local variables are few and small: the initial-exec model
 * makes each access one instruction instead of a __tls_get_addr() call in
 * position-independent code (glibc keeps static TLS room for libraries
 * loaded later, which these fit in).
 */
#define VMR_TLS_MODEL __attribute__((tls_model("initial-exec")))

#define VMR_ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

#if defined(__GNUC__)
#define vmr_likely(x) __builtin_expect(!!(x), 1)
#define vmr_unlikely(x) __builtin_expect(!!(x), 0)
#else
#define vmr_likely(x) (x)
#define vmr_unlikely(x) (x)
#endif

/*
 * A broken internal invariant, never bad input: print file:line and the
 * message on stderr and abort, as liburcu's urcu_die() does.
 */
_Noreturn void vmr_die_at(const char *file, int line, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
#define vmr_die(...) vmr_die_at(__FILE__, __LINE__, __VA_ARGS__)
#define VMR_BUG_ON(cond)                                                      \
	do {                                                                  \
		if (vmr_unlikely(cond))                                       \
			vmr_die("BUG: %s", #cond);                            \
	} while (0)

/*
 * Lock misuse by the caller (unlocking what is not held, ...): -EPERM, or,
 * built with debug_checks (VMR_DEBUG), an abort that says @what.
 */
int vmr_misuse(const char *what);

/*
 * Allocation for every path of the library: nothing else calls malloc()
 * or free().  It can be made to fail on purpose (vmr_alloc_fail_after())
 * so that tests reach each -ENOMEM path and check that it leaves
 * everything unchanged.  It never waits for a fork() in flight
 * (forkguard.c): so a thread holding a lock of ours may allocate.
 */
void *vmr_alloc(size_t size);
void vmr_free(void *ptr);
/* For objects with cache-line-aligned members; vmr_free() frees it. */
#define VMR_ALLOC_ALIGN 64
void *vmr_alloc_aligned(size_t size);
/* Aligned to @align, a power of two. */
void *vmr_alloc_align(size_t size, size_t align);
/* Without failure injection: for allocators that inject their own. */
void *vmr_alloc_plain(size_t size, size_t align);
/* realloc() that copies the @used bytes we know of (no injection): NULL,
 * and @ptr untouched, on failure. */
void *vmr_realloc(void *ptr, size_t used, size_t size);

/*
 * The fork guard (forkguard.c).  vmr_fork_guard_init() installs its
 * pthread_atfork() handlers once (0 or -ENOMEM); every space does it.
 * vmr_fork_enter() is true when the caller may call into malloc() (or
 * anything else that takes glibc's fork-time locks, as pthread_create()
 * does) until vmr_fork_leave(): no fork() holds them, nor will until then.
 * False: one is in flight, and the caller must not, nor wait for it.
 */
int vmr_fork_guard_init(void);
bool vmr_fork_enter(void);
void vmr_fork_leave(void);
/* Free @ptr (a malloc() block) once no fork() is in flight. */
void vmr_fork_defer_free(void *ptr);
bool vmr_fork_in_flight(void);

/*
 * membarrier(PRIVATE_EXPEDITED) (membarrier.c): vmr_membarrier_register()
 * returns 0, or -ENOSYS where the kernel lacks it; once it returned 0,
 * vmr_membarrier() is a full barrier on every running thread of the
 * process (it dies if the kernel refuses it then).
 */
int vmr_membarrier_register(void);
void vmr_membarrier(void);

/* Memory without malloc() (pool.c), for when vmr_fork_enter() refuses. */
void *vmr_pool_alloc(size_t size, size_t align);
void vmr_pool_free(void *ptr);
bool vmr_pool_owns(const void *ptr);
void vmr_pool_after_fork_child(void);

/*
 * For allocators of the library's own (a recycled-node pool) that must fail
 * exactly when vmr_alloc() would: true if this allocation is to fail.
 */
bool vmr_alloc_injected_failure(void);

/*
 * Test hook: let the next @n allocations succeed and fail the ones after,
 * until vmr_alloc_fail_after(-1) switches failure injection off again.
 */
void vmr_alloc_fail_after(long n);

/*
 * Copy a caller's size-tagged struct (config, descriptor, ops) into ours:
 * fields the caller's version lacks are zero; a caller's larger version must
 * be zero past the end of ours (-E2BIG otherwise); NULL @src with a non-zero
 * size is -EINVAL, with size 0 it means all defaults.
 */
int vmr_copy_sized(void *dst, size_t dst_size, const void *src,
		   size_t src_size);

/* @flavor, or liburcu's urcu-memb flavor when it is NULL. */
const struct rcu_flavor_struct *
vmr_flavor_or_default(const struct rcu_flavor_struct *flavor);

/*
 * Make @flavor's call_rcu thread now, if this process has not yet, so that
 * no later call_rcu() allocates (see rcu.c): 0, -EAGAIN or -ENOMEM.
 */
int vmr_rcu_warm(const struct rcu_flavor_struct *flavor);

/*
 * White-box check of a tree's structural invariants (I1-I4 of tree.c) on
 * its current version.  Writers must be kept out.  Returns NULL if they
 * hold, else a description of the first one broken.
 */
const char *vmr_tree_validate(const struct vmr_tree *tree);

#endif /* VMR_INTERNAL_H */
