/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * libvmaretry - allocation with failure injection for tests.
 *
 * Failure injection is one relaxed atomic counter: -1 (the default) means
 * never fail.  It is only ever armed by white-box tests; in a program that
 * never arms it the cost is one load per allocation, and allocations happen
 * only on update paths, never on a lookup or a fault's fast path.
 */
#include "internal.h"

#include <stdatomic.h>
#include <stdlib.h>

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

void *vmr_alloc(size_t size)
{
	return vmr_alloc_injected_failure() ? NULL : malloc(size);
}

void *vmr_alloc_aligned(size_t size)
{
	void *p;

	if (vmr_alloc_injected_failure() ||
	    posix_memalign(&p, VMR_ALLOC_ALIGN, size))
		return NULL;
	return p;
}

void vmr_free(void *ptr)
{
	free(ptr);
}
