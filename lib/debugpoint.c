/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * libvmaretry - debug points (see debugpoint.h).
 *
 * The hook and its argument are two atomics: vmr_debug_set() stores the
 * argument, then the hook with release; a point loads the hook with
 * acquire, then the argument, so a hook never sees the argument of an
 * older installation.  (A swap while points run may pair the new hook with
 * a newer argument, never with an older one.)  The yield injector's
 * settings are atomics read relaxed: a point that reads a mix of old and
 * new settings only yields more or less often.
 */
#include "internal.h"
#include "debugpoint.h"

#include <errno.h>
#include <sched.h>
#include <time.h>

static const char *const names[VMR_DEBUG_POINTS_NR] = {
	[VMR_DP_TREE_PUBLISH] = "tree_publish",
	[VMR_DP_TREE_RETIRE] = "tree_retire",
	[VMR_DP_TREE_DESCEND] = "tree_descend",
	[VMR_DP_RANGE_LOOKUP] = "range_lookup",
	[VMR_DP_RANGE_CHECK] = "range_check",
	[VMR_DP_RANGE_UNLOCK] = "range_unlock",
	[VMR_DP_RANGE_MARK] = "range_mark",
	[VMR_DP_SPACE_DETACH] = "space_detach",
	[VMR_DP_FAULT_LOCKED] = "fault_locked",
	[VMR_DP_FAULT_RETRY] = "fault_retry",
	[VMR_DP_PAGE_WAIT] = "page_wait",
	[VMR_DP_PAGE_UNLOCK] = "page_unlock",
	[VMR_DP_UFFD_FAULT] = "uffd_fault",
	[VMR_DP_UFFD_READ] = "uffd_read",
	[VMR_DP_UFFD_RESOLVE] = "uffd_resolve",
	[VMR_DP_UFFD_INSTALL] = "uffd_install",
	[VMR_DP_UFFD_EVENT] = "uffd_event",
};

const char *vmr_debug_point_name(enum vmr_debug_point point)
{
	if ((unsigned int)point >= VMR_DEBUG_POINTS_NR)
		return "?";
	return names[point];
}

#ifdef VMR_DEBUG_POINTS

_Atomic(vmr_debug_fn *) vmr_debug_hook;
static _Atomic(void *) hook_arg;

bool vmr_debug_points_built(void)
{
	return true;
}

void vmr_debug_call(vmr_debug_fn *fn, enum vmr_debug_point point,
		    uintptr_t addr)
{
	fn(point, addr, atomic_load_explicit(&hook_arg, memory_order_relaxed));
}

int vmr_debug_set(vmr_debug_fn *fn, void *arg)
{
	atomic_store_explicit(&hook_arg, arg, memory_order_relaxed);
	atomic_store_explicit(&vmr_debug_hook, fn, memory_order_release);
	return 0;
}

/* ---- the yield injector ------------------------------------------------ */

static _Atomic uint32_t yield_mask;
static _Atomic unsigned int yield_one_in, yield_max_us;
static _Atomic uint64_t yield_seed;
static _Atomic uint64_t yield_threads;

static __thread uint64_t rng VMR_TLS_MODEL;

static uint64_t rng_next(void)
{
	if (!rng) {
		/* A thread's stream: the run's seed and its arrival order. */
		uint64_t n = atomic_fetch_add_explicit(&yield_threads, 1,
						       memory_order_relaxed);

		rng = (atomic_load_explicit(&yield_seed, memory_order_relaxed) ^
		       (n + 1) * 0x9e3779b97f4a7c15ull) |
		      1;
	}
	rng ^= rng >> 12;
	rng ^= rng << 25;
	rng ^= rng >> 27;
	return rng * 0x2545f4914f6cdd1dull;
}

static void yield_hook(enum vmr_debug_point point, uintptr_t addr, void *arg)
{
	unsigned int one_in, max_us;
	uint64_t r;

	(void)addr;
	(void)arg;
	if (!(atomic_load_explicit(&yield_mask, memory_order_relaxed) &
	      (1u << point)))
		return;
	one_in = atomic_load_explicit(&yield_one_in, memory_order_relaxed);
	r = rng_next();
	if (!one_in || r % one_in)
		return;
	max_us = atomic_load_explicit(&yield_max_us, memory_order_relaxed);
	if (max_us && (r >> 32) % 4 == 0) {
		long ns = (long)((r >> 40) % max_us + 1) * 1000;
		struct timespec ts = { ns / 1000000000, ns % 1000000000 };

		nanosleep(&ts, NULL);
	} else {
		sched_yield();
	}
}

int vmr_debug_yield(uint32_t mask, unsigned int one_in,
		    unsigned int max_sleep_us, uint64_t seed)
{
	if (!one_in)
		return -EINVAL;
	atomic_store_explicit(&yield_mask, mask, memory_order_relaxed);
	atomic_store_explicit(&yield_one_in, one_in, memory_order_relaxed);
	atomic_store_explicit(&yield_max_us, max_sleep_us,
			      memory_order_relaxed);
	atomic_store_explicit(&yield_seed, seed, memory_order_relaxed);
	return vmr_debug_set(yield_hook, NULL);
}

#else /* !VMR_DEBUG_POINTS */

bool vmr_debug_points_built(void)
{
	return false;
}

int vmr_debug_set(vmr_debug_fn *fn, void *arg)
{
	(void)fn;
	(void)arg;
	return -ENOSYS;
}

int vmr_debug_yield(uint32_t mask, unsigned int one_in,
		    unsigned int max_sleep_us, uint64_t seed)
{
	(void)mask;
	(void)max_sleep_us;
	(void)seed;
	return one_in ? -ENOSYS : -EINVAL;
}

#endif /* VMR_DEBUG_POINTS */
