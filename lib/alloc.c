/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * libvmaretry - the library's allocations: failure injection for tests,
 * and no wait for malloc() while a fork() is in flight (forkguard.c).
 *
 * Failure injection is one relaxed atomic counter: -1 (the default) means
 * never fail.  It is only ever armed by white-box tests; in a program that
 * never arms it the cost is one load per allocation, and allocations happen
 * only on update paths, never on a lookup or a fault's fast path.
 */
#include "internal.h"

#include <stdalign.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

static atomic_long fail_budget = -1;

void vmr_alloc_fail_after(long n)
{
	atomic_store_explicit(&fail_budget, n < 0 ? -1 : n,
			      memory_order_relaxed);
}

bool vmr_alloc_injected_failure(void)
{
	long budget = atomic_load_explicit(&fail_budget, memory_order_relaxed);

	if (vmr_likely(budget < 0))
		return false;
	/* Armed: spend one unit of budget, fail once it is gone. */
	do {
		if (budget == 0)
			return true;
	} while (!atomic_compare_exchange_weak_explicit(
		&fail_budget, &budget, budget - 1, memory_order_relaxed,
		memory_order_relaxed));
	return false;
}

/*
 * malloc() inside the fork guard (forkguard.c), the pool outside it.  The
 * size is at least a pointer: a block freed while a fork is in flight
 * keeps its link in itself.
 */
void *vmr_alloc_plain(size_t size, size_t align)
{
	void *p = NULL;

	if (size < sizeof(void *))
		size = sizeof(void *);
	if (!vmr_fork_enter())
		return vmr_pool_alloc(size, align);
	if (align <= alignof(max_align_t))
		p = malloc(size);
	else if (posix_memalign(&p, align, size))
		p = NULL;
	vmr_fork_leave();
	return p;
}

static void *alloc(size_t size, size_t align)
{
	return vmr_alloc_injected_failure() ? NULL :
					      vmr_alloc_plain(size, align);
}

void *vmr_alloc(size_t size)
{
	return alloc(size, 0);
}

void *vmr_alloc_aligned(size_t size)
{
	return alloc(size, VMR_ALLOC_ALIGN);
}

void *vmr_alloc_align(size_t size, size_t align)
{
	return alloc(size, align);
}

void *vmr_realloc(void *ptr, size_t used, size_t size)
{
	void *p = vmr_alloc_plain(size, 0);

	if (!p)
		return NULL;
	if (used)
		memcpy(p, ptr, used);
	vmr_free(ptr);
	return p;
}

void vmr_free(void *ptr)
{
	if (!ptr)
		return;
	if (vmr_pool_owns(ptr)) {
		vmr_pool_free(ptr);
		return;
	}
	if (!vmr_fork_enter()) {
		vmr_fork_defer_free(ptr);
		return;
	}
	free(ptr);
	vmr_fork_leave();
}
