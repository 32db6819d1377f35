/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * libvmaretry - the address space, its regions and its space lock.
 *
 * A space (struct mm_struct) holds regions (struct vm_area_struct) in a
 * region tree, a space lock (mmap_lock) and the VMA-range locks of
 * <vmaretry/rangelock.h>.  Regions are created and changed only by
 * vmr_map(), vmr_unmap() and vmr_protect(), each of which takes the space
 * lock for write, write-locks the address range it changes, and publishes
 * its new regions in one atomic tree update.
 *
 * A region's bounds, protection and offset never change once it is mapped:
 * an update that changes part of a region replaces it by new regions (each
 * announced to its ops' open() callback) and detaches the old one, which is
 * closed once no fault can reach it any more.  So a region found under RCU
 * or held by a lock can be read without further locking.
 */
#ifndef VMARETRY_SPACE_H
#define VMARETRY_SPACE_H

#include <vmaretry/common.h>

VMR_BEGIN_DECLS

struct vmr_space;  /* opaque: vmr_space_create() */
struct vmr_region; /* opaque: made by vmr_map(), vmr_unmap(), vmr_protect() */
struct vmr_fault;  /* the fault descriptor of the fault engine */

/* What a fault handler returns: VMR_FAULT_* reasons (the kernel's
 * vm_fault_t). */
typedef unsigned int vmr_fault_t;

/* Region protection, as PROT_* of mmap(2). */
#define VMR_PROT_NONE 0x0u
#define VMR_PROT_READ 0x1u
#define VMR_PROT_WRITE 0x2u
#define VMR_PROT_EXEC 0x4u

/**
 * enum vmr_lock_granularity - what a fault's VMA-range read lock covers
 * @VMR_LOCK_REGION: the whole region, as the kernel's per-VMA lock: a writer
 *                   that changes any part of a region waits for every fault
 *                   in it
 * @VMR_LOCK_RANGE: only the pages the fault asked for: a writer waits only
 *                  for the faults whose pages overlap what it changes
 */
enum vmr_lock_granularity {
	VMR_LOCK_REGION = 0,
	VMR_LOCK_RANGE = 1,
};

/**
 * enum vmr_reader_barrier - how a fault's read lock is ordered against writers
 * @VMR_BARRIER_AUTO: the default, VMR_BARRIER_FENCE (which measured better
 *                    overall: see lib/rangelock.c)
 * @VMR_BARRIER_FENCE: each read lock executes one full barrier (a locked
 *                     instruction on x86); writers need no system call
 * @VMR_BARRIER_MEMBARRIER: read locks execute no barrier; each write lock
 *                     calls membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED),
 *                     which interrupts every CPU running a thread of the
 *                     process.  vmr_space_create() fails with -ENOSYS where
 *                     the kernel lacks it.
 *
 * See lib/rangelock.c for the protocol and the measurements behind the
 * default.
 */
enum vmr_reader_barrier {
	VMR_BARRIER_AUTO = 0,
	VMR_BARRIER_FENCE = 1,
	VMR_BARRIER_MEMBARRIER = 2,
};

/**
 * enum vmr_retry_policy - what a fault that must wait for I/O does with its
 *                         lock (see <vmaretry/fault.h>)
 * @VMR_POLICY_DEFAULT: for a space, VMR_RETRY_VMA; for a region, its
 *                      space's policy
 * @VMR_RETRY_SPACE: release it and retry under the space lock (mainline
 *                   Linux: VM_FAULT_RETRY)
 * @VMR_RETRY_VMA: release it and retry on the fine-grained lock (the RFC's
 *                 VM_FAULT_RETRY_VMA), falling back only when that fails
 * @VMR_HOLD_IO: keep it across the I/O (the alternative raised in the RFC
 *               thread): writers of the range wait for the I/O
 */
enum vmr_retry_policy {
	VMR_POLICY_DEFAULT = 0,
	VMR_RETRY_SPACE = 1,
	VMR_RETRY_VMA = 2,
	VMR_HOLD_IO = 3,
};

/* struct vmr_space_config.flags */
#define VMR_SPACE_TIME_FAULTS 0x1u /* time whole faults: fault_latency_hist */

/**
 * struct vmr_space_config - how a space is built
 * @page_size: granule of every address and length, a power of two; 0 for
 *             the system page size
 * @flavor: liburcu flavor of the space's readers; NULL for urcu-memb
 * @granularity: what fault read locks cover; see enum vmr_lock_granularity
 * @barrier: see enum vmr_reader_barrier
 * @policy: the retry policy of the space's regions (each may override it)
 * @vma_retry_max: RETRY_VMA results a fault follows on the fine-grained
 *                 lock before it falls back to the space lock; 0 for 3
 * @space_retry_max: RETRY results a fault retries under the space lock
 *                   before the engine clears ALLOW_RETRY, so that the
 *                   handler must finish; 0 for 8
 * @flags: VMR_SPACE_* flags
 *
 * Passed with its size (vmr_space_create()): fields a caller's older
 * definition lacks take their defaults, so fields can be added later.
 * Zero-initialise it and set what you need.
 */
struct vmr_space_config {
	size_t page_size;
	const struct rcu_flavor_struct *flavor;
	enum vmr_lock_granularity granularity;
	enum vmr_reader_barrier barrier;
	enum vmr_retry_policy policy;
	unsigned int vma_retry_max;
	unsigned int space_retry_max;
	unsigned int flags;
};

/**
 * struct vmr_region_ops - what a region's owner is told (vm_operations_struct)
 * @fault: handles a fault in the region (->fault); called by the fault
 *         engine, never by the calls of this header; may be NULL until then
 * @open: a new region was made from @from by an update that split or changed
 *        it (->open on a vm_area_dup()'d VMA): @region starts with @from's
 *        private data, and open() may give it its own.  Called with the
 *        space lock held for write, before @region is published.  May be
 *        NULL.
 * @close: @region is gone: unmapped or replaced, no fault holds or can find
 *         it any more, and it is about to be freed (->close).  Runs exactly
 *         once per region, with no lock of the space held: from liburcu's
 *         call_rcu thread, from vmr_space_destroy(), or, for a piece cut by
 *         an update that then failed (and so never published), from that
 *         update's caller before it returns.  It must not call the space's
 *         update calls.  May be NULL.
 *
 * Passed with its size (struct vmr_region_desc): members past a caller's
 * older definition are taken as NULL.
 */
struct vmr_region_ops {
	vmr_fault_t (*fault)(struct vmr_fault *vmf);
	void (*open)(struct vmr_region *region, const struct vmr_region *from);
	void (*close)(struct vmr_region *region);
};

/**
 * struct vmr_region_desc - a region to map
 * @start: first address, aligned to the space's page size
 * @len: length in bytes, a non-zero multiple of the page size; start + len
 *       must not wrap
 * @prot: VMR_PROT_* bits
 * @offset: offset in the backing store of @start (vm_pgoff, in bytes),
 *          page-aligned; a region cut from this one keeps the offset of
 *          its own start
 * @ops: callbacks, or NULL; copied
 * @ops_size: sizeof(*@ops) as the caller compiled it
 * @private_data: the owner's pointer (vm_private_data)
 * @policy: the region's retry policy; VMR_POLICY_DEFAULT for the space's.
 *          Pieces cut from the region keep it.
 */
struct vmr_region_desc {
	uintptr_t start;
	size_t len;
	unsigned int prot;
	uint64_t offset;
	const struct vmr_region_ops *ops;
	size_t ops_size;
	void *private_data;
	enum vmr_retry_policy policy;
};

/* vmr_map() flags */
#define VMR_MAP_REPLACE 0x1u /* MAP_FIXED: unmap whatever the range meets */

/**
 * vmr_space_create() - make an empty address space (mm_alloc())
 * @config: how to build it, or NULL for every default
 * @config_size: sizeof(*@config) as the caller compiled it
 * @spacep: where to store the space
 *
 * Context: any thread.  May sleep.  The first space made in a process
 * installs the library's pthread_atfork() handlers (so that no thread of
 * the library ever waits for malloc() while a fork() is in flight); the
 * first space of each RCU flavor makes that flavor's call_rcu thread, from
 * a short-lived thread of the library's that registers with the flavor.
 * Ownership: the caller owns the space; vmr_space_destroy() frees it.
 * Return: 0; -EINVAL if @spacep is NULL, @config is NULL with a non-zero
 * size, or a field is out of range (page size not a power of two, unknown
 * granularity, barrier, policy or flag); -E2BIG if @config_size is larger
 * than this library's struct and the extra bytes are not zero; -ENOSYS if
 * VMR_BARRIER_MEMBARRIER was asked for and the kernel lacks it; -EAGAIN if
 * that first thread could not be made; -ENOMEM.
 */
int vmr_space_create(const struct vmr_space_config *config, size_t config_size,
		     struct vmr_space **spacep);

/**
 * vmr_space_destroy() - unmap every region and free the space (mmput())
 * @space: the space, or NULL (returns 0)
 *
 * Refuses while anything is in flight: the space lock held or waited for,
 * or a VMA-range read lock held.  Page maps made for the space that are
 * still alive afterwards go on without it (no counting, no shutdown).
 * Otherwise closes every region (ops close) and waits for the space's
 * pending frees.
 *
 * Context: a thread registered with the space's flavor, outside any
 * read-side critical section.  May sleep.
 * Concurrency: no other call on the space may run or start; destroy cannot
 * tell a call that is about to start from one that never will.
 * Return: 0 (the space is gone); -EBUSY, and nothing changed.
 */
int vmr_space_destroy(struct vmr_space *space);

/**
 * vmr_space_flavor() - the liburcu flavor of a space's readers
 * @space: the space
 *
 * Return: the flavor, or NULL if @space is NULL.
 */
const struct rcu_flavor_struct *vmr_space_flavor(const struct vmr_space *space);

/**
 * vmr_space_page_size() - the space's page size
 * @space: the space
 *
 * Return: the page size, or 0 if @space is NULL.
 */
size_t vmr_space_page_size(const struct vmr_space *space);

/**
 * vmr_space_register_thread() - register the calling thread for a space
 * @space: the space
 *
 * Registers the thread with the space's RCU flavor, which every thread that
 * faults in, locks, or updates the space must have done; the same as
 * vmr_rcu_register_thread(vmr_space_flavor(space)).  Register once per
 * flavor, not once per space.
 *
 * Context: any thread, once per flavor.  May sleep.
 * Return: 0; -EINVAL if @space is NULL.
 */
int vmr_space_register_thread(const struct vmr_space *space);

/**
 * vmr_space_unregister_thread() - undo vmr_space_register_thread()
 * @space: the space
 *
 * Context: a registered thread holding no lock of the space.  May sleep.
 * Return: 0; -EINVAL if @space is NULL.
 */
int vmr_space_unregister_thread(const struct vmr_space *space);

/**
 * vmr_map() - map a new region (do_mmap())
 * @space: the space
 * @desc: the region
 * @desc_size: sizeof(*@desc) as the caller compiled it
 * @flags: 0, or VMR_MAP_REPLACE to replace what the range meets (MAP_FIXED)
 *
 * Takes the space lock for write.  With VMR_MAP_REPLACE, regions the range
 * meets are cut (their pieces outside it stay, as new regions) and those
 * inside it are unmapped, all in the same atomic update as the insertion.
 *
 * Context: a registered thread, not holding the space lock (a write hold is
 * refused with -EDEADLK; a read hold cannot be told and deadlocks), nor a
 * VMA-range read lock over the range (the update would wait for it
 * forever).  May sleep: waits for faults whose read locks overlap what is
 * replaced.
 * Ordering: release: a fault that finds the region sees every store made
 * before the call.
 * Return: 0; -EINVAL if @space or @desc is NULL, @desc_size is too small,
 * the range is empty, unaligned or wraps, the offset is unaligned, @prot or
 * @flags has unknown bits, @policy is unknown, or @ops is NULL with a
 * non-zero @ops_size; -E2BIG if @desc_size or
 * @desc->ops_size is larger than this library's struct with non-zero extra
 * bytes; -EEXIST if
 * the range overlaps a region and VMR_MAP_REPLACE is not set; -EDEADLK if
 * the caller holds the space lock for write; -ENOMEM.  On error nothing
 * changed.
 */
int vmr_map(struct vmr_space *space, const struct vmr_region_desc *desc,
	    size_t desc_size, unsigned int flags);

/**
 * vmr_unmap() - unmap a range (do_munmap())
 * @space: the space
 * @start: first address, page-aligned
 * @len: length, a non-zero multiple of the page size
 *
 * Regions inside the range are unmapped; regions it cuts are replaced by
 * their pieces outside it, with the offsets those pieces had.  Holes in the
 * range are not an error, as with munmap(2).
 *
 * Context, Ordering: as vmr_map().
 * Return: 0; -EINVAL if @space is NULL or the range is empty, unaligned or
 * wraps; -EDEADLK if the caller holds the space lock for write; -ENOMEM.
 * On error nothing changed.
 */
int vmr_unmap(struct vmr_space *space, uintptr_t start, size_t len);

/**
 * vmr_protect() - change the protection of a range (mprotect_fixup())
 * @space: the space
 * @start: first address, page-aligned
 * @len: length, a non-zero multiple of the page size
 * @prot: new VMR_PROT_* bits
 *
 * Regions the range cuts are split; the part inside the range gets @prot.
 * Regions that already have @prot are left as they are.
 *
 * Context, Ordering: as vmr_map().
 * Return: 0; -EINVAL if @space is NULL, the range is empty, unaligned or
 * wraps, or @prot has unknown bits; -ENOMEM if part of the range is not
 * mapped (as mprotect(2)) or memory ran out; -EDEADLK if the caller holds
 * the space lock for write.  On error nothing changed.
 */
int vmr_protect(struct vmr_space *space, uintptr_t start, size_t len,
		unsigned int prot);

/**
 * vmr_space_find_region() - the region containing an address (vma_lookup())
 * @space: the space
 * @addr: the address
 *
 * Context: with the space lock held (either way), or inside a read-side
 * critical section of the space's flavor.
 * Ownership: under the space lock the region stays mapped until the lock is
 * dropped; under RCU it stays readable until the section ends, but may be
 * replaced meanwhile (see <vmaretry/rangelock.h> to hold it).
 * Return: the region, or NULL if none contains @addr or @space is NULL.
 */
struct vmr_region *vmr_space_find_region(const struct vmr_space *space,
					 uintptr_t addr);

/**
 * vmr_space_count_regions() - number of regions mapped
 * @space: the space
 *
 * Context: as vmr_space_find_region().
 * Return: the count (0 if @space is NULL).
 */
size_t vmr_space_count_regions(const struct vmr_space *space);

/*
 * Region accessors.  A region is immutable once mapped; these are valid
 * while the region is reachable: under the space lock, under RCU, or while
 * a VMA-range read lock holds it.  @region must not be NULL.
 */
uintptr_t vmr_region_start(const struct vmr_region *region);
uintptr_t vmr_region_end(const struct vmr_region *region);
unsigned int vmr_region_prot(const struct vmr_region *region);
uint64_t vmr_region_offset(const struct vmr_region *region);
void *vmr_region_private(const struct vmr_region *region);
struct vmr_space *vmr_region_space(const struct vmr_region *region);
const struct vmr_region_ops *vmr_region_ops(const struct vmr_region *region);

/**
 * vmr_region_set_private() - give a region its own private data
 * @region: the region
 * @private_data: the new pointer
 *
 * Only from the owner's open() callback, before the region is published:
 * faults read the private data without a lock, so it never changes after.
 */
void vmr_region_set_private(struct vmr_region *region, void *private_data);

/**
 * vmr_region_is_detached() - whether a region has been unmapped or replaced
 * @region: the region
 *
 * Return: true once an update has removed it from its space's tree.
 */
bool vmr_region_is_detached(const struct vmr_region *region);

/*
 * The space lock (mmap_lock): a reader-writer lock that prefers writers.
 * Faults take it only when their VMA-range read lock cannot be had; the
 * update calls above take it for write.  Releasing it for write (unlock or
 * downgrade) releases every VMA-range write lock taken under it at once, as
 * vma_end_write_all() does.  It sleeps on futexes; it is not recursive.
 */

/**
 * vmr_space_read_lock() - take the space lock for read (mmap_read_lock())
 * @space: the space
 *
 * Waits while a writer holds or waits for the lock.
 * Context: any thread.  May sleep.
 * Return: 0; -EINVAL if @space is NULL; -EDEADLK if the caller holds it for
 * write.
 */
int vmr_space_read_lock(struct vmr_space *space);

/**
 * vmr_space_read_trylock() - take the space lock for read if no writer is
 *                            around (mmap_read_trylock())
 * @space: the space
 *
 * Return: true if taken.  False if @space is NULL.
 */
bool vmr_space_read_trylock(struct vmr_space *space);

/**
 * vmr_space_read_unlock() - release a read hold (mmap_read_unlock())
 * @space: the space
 *
 * Ordering: release.
 * Return: 0; -EINVAL if @space is NULL; -EPERM if the lock is not held for
 * read by anyone (a debug build aborts instead).  A read hold is not owned
 * by a thread: one thread may release what another took.
 */
int vmr_space_read_unlock(struct vmr_space *space);

/**
 * vmr_space_write_lock() - take the space lock for write (mmap_write_lock())
 * @space: the space
 *
 * New readers wait from the moment a writer arrives; the writer waits for
 * the readers it found.
 * Context: any thread.  May sleep.
 * Return: 0; -EINVAL if @space is NULL; -EDEADLK if the caller already
 * holds it for write.
 */
int vmr_space_write_lock(struct vmr_space *space);

/**
 * vmr_space_write_trylock() - take the space lock for write if it is free
 * @space: the space
 *
 * Return: true if taken.  False if @space is NULL.
 */
bool vmr_space_write_trylock(struct vmr_space *space);

/**
 * vmr_space_write_unlock() - release the write hold (mmap_write_unlock())
 * @space: the space
 *
 * Also releases every VMA-range write lock taken under this hold.
 * Ordering: release.
 * Return: 0; -EINVAL if @space is NULL; -EPERM if the caller does not hold
 * it for write (a debug build aborts instead).
 */
int vmr_space_write_unlock(struct vmr_space *space);

/**
 * vmr_space_write_downgrade() - turn the write hold into a read hold,
 *                               letting no writer in between
 *                               (mmap_write_downgrade())
 * @space: the space
 *
 * Releases every VMA-range write lock taken under the write hold.
 * Return: 0; -EINVAL if @space is NULL; -EPERM if the caller does not hold
 * it for write (a debug build aborts instead).
 */
int vmr_space_write_downgrade(struct vmr_space *space);

/**
 * vmr_space_is_write_locked() - whether the caller holds the space lock
 *                               for write (mmap_assert_write_locked())
 * @space: the space
 *
 * Return: true if the calling thread holds it for write; false if @space is
 * NULL.
 */
bool vmr_space_is_write_locked(const struct vmr_space *space);

VMR_END_DECLS

#endif /* VMARETRY_SPACE_H */
