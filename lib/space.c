/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * libvmaretry - the address space: creation, teardown, lookups.
 *
 * A space is a region tree, a space lock and its threads' states (read
 * locks and counters, lib/thread.c).  Teardown refuses while anything is in
 * flight (the space lock held or slept on, a range read lock held) rather
 * than waiting: a caller that tears down a space must have stopped its
 * threads first, and a -EBUSY tells it that it has not, where waiting would
 * hide the bug until a thread touched freed memory.  Otherwise it unmaps
 * everything, which retires every region, and waits until every retirement
 * has closed its region.
 */
#include "mm.h"

#include <errno.h>
#include <string.h>
#include <unistd.h>
#include <urcu/flavor.h>

int vmr_copy_sized(void *dst, size_t dst_size, const void *src,
		   size_t src_size)
{
	const unsigned char *bytes = src;

	memset(dst, 0, dst_size);
	if (!src)
		return src_size ? -EINVAL : 0;
	for (size_t i = dst_size; i < src_size; i++)
		if (bytes[i])
			return -E2BIG;
	memcpy(dst, src, src_size < dst_size ? src_size : dst_size);
	return 0;
}

int vmr_space_create(const struct vmr_space_config *config, size_t config_size,
		     struct vmr_space **spacep)
{
	struct vmr_space_config cfg;
	struct vmr_space *space;
	long sys_page;
	int err;

	if (!spacep)
		return -EINVAL;
	err = vmr_copy_sized(&cfg, sizeof(cfg), config, config_size);
	if (err)
		return err;
	if (!cfg.page_size) {
		sys_page = sysconf(_SC_PAGESIZE);
		cfg.page_size = sys_page > 0 ? (size_t)sys_page : 4096;
	}
	if (cfg.page_size & (cfg.page_size - 1) ||
	    (cfg.granularity != VMR_LOCK_REGION &&
	     cfg.granularity != VMR_LOCK_RANGE) ||
	    (unsigned int)cfg.barrier > VMR_BARRIER_MEMBARRIER ||
	    (unsigned int)cfg.policy > VMR_HOLD_IO ||
	    (cfg.flags & ~VMR_SPACE_TIME_FAULTS))
		return -EINVAL;
	if (cfg.barrier == VMR_BARRIER_AUTO)
		cfg.barrier = VMR_BARRIER_FENCE;
	if (cfg.policy == VMR_POLICY_DEFAULT)
		cfg.policy = VMR_RETRY_VMA;

	/* Before any lock of ours can be held: see forkguard.c. */
	err = vmr_fork_guard_init();
	if (!err)
		err = vmr_rcu_warm(cfg.flavor);
	if (err)
		return err;
	space = vmr_alloc_aligned(sizeof(*space));
	if (!space)
		return -ENOMEM;
	memset(space, 0, sizeof(*space));
	space->flavor = vmr_flavor_or_default(cfg.flavor);
	space->id = vmr_space_id_new();
	space->page_mask = cfg.page_size - 1;
	space->granularity = cfg.granularity;
	space->membarrier = cfg.barrier == VMR_BARRIER_MEMBARRIER;
	space->time_faults = cfg.flags & VMR_SPACE_TIME_FAULTS;
	space->policy = cfg.policy;
	space->vma_retry_max = cfg.vma_retry_max ? cfg.vma_retry_max : 3;
	space->space_retry_max = cfg.space_retry_max ? cfg.space_retry_max : 8;
	atomic_init(&space->dying, false);
	atomic_init(&space->zombies, 0);
	err = vmr_membarrier_register();
	if (err && space->membarrier)
		goto free_space;
	/* With membarrier() available, a read unlock needs no atomic. */
	space->lean_unlock = !err;
	err = 0;
	err = vmr_tree_create(space->flavor, &space->tree);
	if (err)
		goto free_space;
	err = vmr_space_lock_init(&space->lock);
	if (err)
		goto free_tree;
	err = vmr_tstates_init(&space->tstates);
	if (err)
		goto free_lock;
	err = -pthread_mutex_init(&space->stats_lock, NULL);
	if (err)
		goto free_tstates;
	err = -pthread_mutex_init(&space->maps_lock, NULL);
	if (err)
		goto free_stats;
	*spacep = space;
	return 0;

free_stats:
	pthread_mutex_destroy(&space->stats_lock);
free_tstates:
	vmr_tstates_fini(space);
free_lock:
	vmr_space_lock_fini(&space->lock);
free_tree:
	vmr_tree_destroy(space->tree, NULL, NULL);
free_space:
	vmr_free(space);
	return err;
}

static void retire_entry(const struct vmr_tree_entry *e, void *arg)
{
	vmr_retire_add(arg, e->value);
}

int vmr_space_destroy(struct vmr_space *space)
{
	struct vmr_retire_batch batch;

	if (!space)
		return 0;
	if (!vmr_space_lock_is_idle(&space->lock) || vmr_readers_busy(space))
		return -EBUSY;
	/*
	 * Nothing runs on the space any more: no reader can reach the tree,
	 * so it is freed directly and each region retired (no allocation,
	 * so teardown cannot fail half way).
	 */
	vmr_retire_init(&batch, space);
	vmr_tree_destroy(space->tree, retire_entry, &batch);
	vmr_retire_submit(&batch);
	/* Retirements may re-queue themselves: wait until all have closed. */
	while (atomic_load_explicit(&space->zombies, memory_order_acquire))
		space->flavor->barrier();
	/* Page maps outliving the space go on without it. */
	vmr_pagemaps_detach_all(space);
	pthread_mutex_destroy(&space->maps_lock);
	pthread_mutex_destroy(&space->stats_lock);
	vmr_tstates_fini(space);
	vmr_space_lock_fini(&space->lock);
	vmr_free(space);
	return 0;
}

const struct rcu_flavor_struct *vmr_space_flavor(const struct vmr_space *space)
{
	return space ? space->flavor : NULL;
}

size_t vmr_space_page_size(const struct vmr_space *space)
{
	return space ? space->page_mask + 1 : 0;
}

int vmr_space_register_thread(const struct vmr_space *space)
{
	if (!space)
		return -EINVAL;
	space->flavor->register_thread();
	return 0;
}

int vmr_space_unregister_thread(const struct vmr_space *space)
{
	if (!space)
		return -EINVAL;
	space->flavor->unregister_thread();
	return 0;
}

struct vmr_region *vmr_space_find_region(const struct vmr_space *space,
					 uintptr_t addr)
{
	return space ? vmr_tree_lookup(space->tree, addr, NULL) : NULL;
}

size_t vmr_space_count_regions(const struct vmr_space *space)
{
	return space ? vmr_tree_count(space->tree) : 0;
}
