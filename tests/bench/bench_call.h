/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The fault of the benchmarks' baselines (bench_fault, bench_scenarios):
 * what a pager that holds its own lock does once it holds it, done the way
 * the engine does it (the same tree walk, access check and reads of the
 * region) so that only the locking around it differs.  The no-op handler
 * is the one every fast-path run calls.
 */
#ifndef VMR_BENCH_CALL_H
#define VMR_BENCH_CALL_H

#include <vmaretry.h>

#include "mm.h"

#include <stdbool.h>
#include <stdint.h>
#include <string.h>

static vmr_fault_t bench_nop_fault(struct vmr_fault *vmf)
{
	(void)vmf;
	return 0;
}

static const struct vmr_region_ops bench_nop_ops = {
	.fault = bench_nop_fault,
};

/*
 * The access check and the handler of region @r (NULL: no region) at @a,
 * through the region's ops, with a descriptor as the engine's for a fault
 * with @flags that holds @lock (VMR_FAULT_LOCK_*).
 */
static inline vmr_fault_t
bench_call_fault(struct vmr_space *space, struct vmr_region *r, uintptr_t a,
		 uintptr_t page_mask, unsigned int flags, unsigned int lock)
{
	struct vmr_fault vmf;

	if (!r || vmr_access_error(r, flags))
		return VMR_FAULT_SIGSEGV;
	memset(&vmf, 0, sizeof(vmf));
	vmf.space = space;
	vmf.region = r;
	vmf.address = a & ~page_mask;
	vmf.real_address = a;
	vmf.flags = flags |
		    (lock == VMR_FAULT_LOCK_VMA ? VMR_FAULT_FLAG_VMA_LOCK : 0);
	vmf.lock = lock;
	return r->ops.fault(&vmf);
}

/* The engine's lookup of the region that contains @a (NULL: none). */
static inline struct vmr_region *bench_lookup(const struct vmr_space *space,
					      uintptr_t a)
{
	return vmr_tree_lookup(space->tree, a, NULL);
}

/* bench_call_fault() on the region that contains @a, if any. */
static inline vmr_fault_t bench_lookup_fault(struct vmr_space *space,
					     uintptr_t a, uintptr_t page_mask,
					     unsigned int flags,
					     unsigned int lock)
{
	return bench_call_fault(space, bench_lookup(space, a), a, page_mask,
				flags, lock);
}

#endif /* VMR_BENCH_CALL_H */
