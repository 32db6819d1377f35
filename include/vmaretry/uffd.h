/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * libvmaretry - the userfaultfd runtime: the handler loop every pager
 * writes by hand, done once.
 *
 * A runtime owns (or is handed) a userfaultfd, registers ranges of a
 * process's memory with it, and runs a pool of handler threads that read
 * its messages (in batches where there is one thread: see @batch in
 * struct vmr_uffd_config).  Each page fault becomes a vmr_handle_fault()
 * call on a space that mirrors the registered ranges, so a fault holds the
 * VMA-range lock of its pages while it reads the backing store and
 * installs the page, and the space's retry policy decides whether that
 * lock is kept across the read.  Non-cooperative events (REMOVE, UNMAP,
 * REMAP, FORK) update the space under its write lock, which waits for the
 * faults installing pages in the range, before any fault read after the
 * event is resolved.  Every ioctl outcome is classified (EEXIST: already
 * there, wake; EAGAIN: the layout is changing, read the pending events
 * first, then retry; ENOENT: the range is gone; ESRCH: the process exited),
 * and every path that does not install a page wakes the thread waiting for
 * it, so no faulting thread is left asleep.
 *
 * Duplicate messages for a page in flight coalesce on the page's lock
 * (<vmaretry/pagewait.h>): the second finds the page installed and wakes.
 */
#ifndef VMARETRY_UFFD_H
#define VMARETRY_UFFD_H

#include <vmaretry/fault.h>

VMR_BEGIN_DECLS

struct vmr_uffd; /* opaque: vmr_uffd_create() */

/**
 * struct vmr_uffd_store_ops - a mapping's backing store
 * @read: fill @buf (@len bytes: one page) with the contents of the store at
 *        @offset (the region's backing offset of the page).  May block: the
 *        space's retry policy decides whether the fault keeps its lock
 *        across it.  Returns 0, or a negative errno: the page is then
 *        poisoned (UFFDIO_POISON: the access gets SIGBUS), or zero-filled
 *        where the kernel cannot poison.  Called from handler threads, at
 *        most once per fault attempt, concurrently for different pages.
 * @dirty: optional; a write-protect fault on a present page of a
 *         VMR_UFFD_WP mapping, about to be made writable (the page at
 *         @offset is being dirtied).  Must not block long.
 *
 * Passed with its size (vmr_uffd_map()).
 */
struct vmr_uffd_store_ops {
	int (*read)(void *store, uint64_t offset, void *buf, size_t len);
	void (*dirty)(void *store, uint64_t offset);
};

/* vmr_uffd_map() modes */
#define VMR_UFFD_MISSING 0x1u /* resolve missing pages from the store (COPY) */
#define VMR_UFFD_WP 0x2u      /* also track writes (UFFDIO_WRITEPROTECT) */
#define VMR_UFFD_MINOR 0x4u   /* shmem/hugetlbfs: pages exist, map them
			       * (UFFDIO_CONTINUE) instead of copying */
#define VMR_UFFD_FAST_STORE 0x8u /* the store's read() never blocks (memory,
				  * zeroes): read it holding the fault's lock,
				  * whatever the policy, and save the retry */

/* struct vmr_uffd_config.flags */
#define VMR_UFFD_FD_READY 0x1u /* @fd has had UFFDIO_API already */
#define VMR_UFFD_NO_EVENTS 0x2u /* ask for no non-cooperative events */
#define VMR_UFFD_NO_REMOVE 0x4u /* every event but REMOVE: a discarded page
				 * is read again from the store */

/**
 * struct vmr_uffd_config - how a runtime is built
 * @threads: handler threads; 0 for one per online CPU
 * @batch: the most messages a handler thread reads at once; 0 for 64
 *         with one thread and 1 with several (a thread resolves what it
 *         read one fault after another: with several, the faults it
 *         would hold back go to the threads woken for them instead)
 * @fd: -1 to open a userfaultfd (the syscall with UFFD_USER_MODE_ONLY,
 *      falling back to /dev/userfaultfd); else a userfaultfd handed in, for
 *      instance by the process whose memory is paged (the Firecracker and
 *      CRIU model); the runtime sets O_NONBLOCK on it.  The runtime closes
 *      the fds it opened, never @fd.
 * @flags: VMR_UFFD_* config flags
 * @features: UFFD_FEATURE_* bits wanted besides the runtime's own (which
 *            are EVENT_REMOVE, EVENT_UNMAP, EVENT_REMAP and EVENT_FORK,
 *            those the kernel and the caller's privileges allow); with
 *            VMR_UFFD_FD_READY, the bits @fd was given, events included
 *
 * Passed with its size; zero-initialise it and set what you need.
 *
 * Events cost something even when none comes: so that a fault read after
 * an event is resolved on the changed layout, the handler threads read one
 * at a time, and no read runs while another thread installs a page (a
 * REMOVE read then would let its madvise() discard the range before the
 * copy lands).  With VMR_UFFD_NO_EVENTS (or a descriptor without events)
 * the threads read and install in parallel, as a hand-written handler
 * does; the difference shows from two handler threads on (bench_uffd's
 * vmr and vmr_no_events).  The runtime then never hears of the process's
 * madvise(MADV_DONTNEED), munmap() or mremap() of registered memory.  A
 * discarded page faults in again from the store (and a duplicate message
 * read after its page was installed costs a store read, then EEXIST).  But
 * a discard racing a fault on its pages may leave the store's page in
 * place, and unmapped or moved ranges stay in the space until
 * vmr_uffd_unmap(): keep those apart from faults yourself.
 *
 * Only REMOVE events need reads kept out of installs: the kernel refuses or
 * fails an install that crosses an unmap, a move or a fork, but it discards
 * a range after its REMOVE is read.  VMR_UFFD_NO_REMOVE asks for every
 * event but REMOVE (@features must not ask for it either; with
 * VMR_UFFD_NO_EVENTS, which wins, it changes nothing): unmapped and moved
 * ranges are followed, forks served, reads still ordered, and the threads
 * install while another reads.  A page the process discards (MADV_DONTNEED,
 * MADV_REMOVE) then reads the store's contents again, as a private file
 * mapping's page reads its file's: it faults in from the store, or a copy
 * that raced the discard left the same contents in place.  Choose it where
 * the store is what a discarded page should read (a file pager); keep
 * REMOVE where discarded memory must read zero (a heap that frees with
 * MADV_DONTNEED, a balloon).
 *
 * Forking with EVENT_FORK: fork() in the paged process waits in the kernel
 * until a handler thread reads the FORK message, and glibc holds malloc's
 * locks across that wait.  The library never waits for those locks while
 * a fork() is in flight: its allocations then come from memory of its own,
 * its frees wait for the fork to end, and a forked child's handler threads
 * start after it (see lib/forkguard.c).  What it cannot see is the
 * store's: a read() callback that allocates, or takes a lock the forking
 * thread holds, can still deadlock with it.  Keep stores to preallocated
 * memory, or pass VMR_UFFD_NO_EVENTS.  The forked child itself must not
 * call the library (as after any fork() of a threaded process, only
 * async-signal-safe calls are safe in it until it calls exec()).
 */
struct vmr_uffd_config {
	unsigned int threads;
	unsigned int batch;
	int fd;
	unsigned int flags;
	uint64_t features;
};

/**
 * struct vmr_uffd_stats - a runtime's counters (next to the space's)
 * @messages: messages read
 * @batches: read() calls that returned messages
 * @faults: page-fault messages
 * @coalesced: faults whose page another fault installed (duplicates)
 * @copies: pages installed with UFFDIO_COPY
 * @zeropages: pages installed with UFFDIO_ZEROPAGE
 * @continues: pages mapped with UFFDIO_CONTINUE
 * @wp_resolved: write-protect faults resolved
 * @poisoned: pages poisoned after a store error or a fault outside any
 *            region (or zero-filled where POISON is not supported)
 * @wakes: UFFDIO_WAKE calls
 * @eexist: ioctls that found the page present already
 * @eagain: ioctls refused while the layout changed; each was retried
 * @enoent: ioctls on a range no longer registered
 * @esrch: ioctls that found the process gone
 * @events_remove, @events_unmap, @events_remap, @events_fork: events applied
 * @store_errors: store reads that failed
 */
struct vmr_uffd_stats {
	uint64_t messages;
	uint64_t batches;
	uint64_t faults;
	uint64_t coalesced;
	uint64_t copies;
	uint64_t zeropages;
	uint64_t continues;
	uint64_t wp_resolved;
	uint64_t poisoned;
	uint64_t wakes;
	uint64_t eexist;
	uint64_t eagain;
	uint64_t enoent;
	uint64_t esrch;
	uint64_t events_remove;
	uint64_t events_unmap;
	uint64_t events_remap;
	uint64_t events_fork;
	uint64_t store_errors;
};

/**
 * vmr_uffd_create() - open a userfaultfd and start handler threads
 * @space: the space mirroring the registered ranges; its policy, lock
 *         granularity and counters apply to the faults.  Its page size must
 *         be the system page size.  It must outlive the runtime.
 * @config: how to build it, or NULL for the defaults
 * @config_size: sizeof(*@config) as the caller compiled it
 * @uffdp: where to store the runtime
 *
 * Negotiates features at run time: probes what the kernel supports on a
 * throw-away descriptor (UFFDIO_API can be called once per descriptor),
 * then asks for what is both wanted and supported.
 *
 * Context: a thread registered with @space's flavor.  May sleep.
 * Return: 0; -EINVAL for a NULL @space or @uffdp, a bad config (unknown
 * flags, VMR_UFFD_NO_REMOVE with UFFD_FEATURE_EVENT_REMOVE in @features)
 * or page size; -E2BIG as for struct vmr_space_config; -ENOSYS if the
 * kernel has no userfaultfd; -EPERM if it is forbidden
 * (vm.unprivileged_userfaultfd, seccomp, /dev/userfaultfd permissions);
 * -EMFILE, -ENFILE; -ENOMEM;
 * -EAGAIN if a thread could not be started; -EBADF if @fd is not open;
 * -ENOTTY if it is not a userfaultfd (with VMR_UFFD_FD_READY the caller
 * vouches that it is, and that is not checked).
 */
int vmr_uffd_create(struct vmr_space *space,
		    const struct vmr_uffd_config *config, size_t config_size,
		    struct vmr_uffd **uffdp);

/**
 * vmr_uffd_destroy() - stop the handler threads and free the runtime
 * @uffd: the runtime, or NULL
 *
 * Shuts the space's faults down (vmr_space_shutdown()), wakes and joins
 * the handler threads, unregisters every range still registered (which
 * wakes any thread still waiting for a page: it then faults as on plain
 * memory) and closes the descriptor if the runtime opened it.  Regions
 * stay in the space; destroy the space afterwards.
 *
 * Context: a thread registered with the space's flavor, not a handler
 * thread of @uffd.  May sleep (store reads in flight finish first).
 * Return: 0.
 */
int vmr_uffd_destroy(struct vmr_uffd *uffd);

/**
 * vmr_uffd_map() - register a range and back it with a store
 * @uffd: the runtime
 * @addr: start of the range, page-aligned, already mapped by the process
 * @len: length, a multiple of the page size
 * @prot: VMR_PROT_* of the mapping (faults that break it are not resolved
 *        from the store; they are poisoned)
 * @offset: the store offset of @addr (page-aligned)
 * @mode: VMR_UFFD_MISSING, optionally | VMR_UFFD_WP; or VMR_UFFD_MINOR;
 *        either optionally | VMR_UFFD_FAST_STORE
 * @ops: the store's callbacks
 * @ops_size: sizeof(*@ops) as the caller compiled it
 * @store: passed to @ops
 *
 * Maps a region in the space (vmr_map()) and registers the range with the
 * userfaultfd, in that order, so that the first fault finds its region.
 *
 * Context: any registered thread but a handler thread.  May sleep.
 * Return: 0; -EINVAL for bad arguments or a mode the kernel does not
 * support for this memory; -E2BIG as for vmr_map(); -EEXIST if the range
 * overlaps a mapped region; -EBUSY if the range is registered with another
 * userfaultfd; -EDEADLK if the caller holds the space lock for write;
 * -ENOMEM (also for a range of more than 2^32 pages); -ESRCH if the
 * process has exited.  On error nothing changed.
 */
int vmr_uffd_map(struct vmr_uffd *uffd, void *addr, size_t len,
		 unsigned int prot, uint64_t offset, unsigned int mode,
		 const struct vmr_uffd_store_ops *ops, size_t ops_size,
		 void *store);

/**
 * vmr_uffd_unmap() - unregister a range and unmap it from the space
 * @uffd: the runtime
 * @addr: start, page-aligned
 * @len: length, a multiple of the page size
 *
 * Unregisters first (which wakes faults waiting in the range; they then
 * fault as on plain memory), then unmaps the regions, which waits for the
 * faults installing pages there.  The memory itself stays mapped in the
 * process; unmap it afterwards if wanted.
 *
 * Context: as vmr_uffd_map().
 * Return: 0; -EINVAL for a NULL runtime or a bad range (empty, unaligned,
 * wrapping); -EDEADLK, with nothing unregistered, if the caller holds the
 * space lock for write; -ENOMEM.
 */
int vmr_uffd_unmap(struct vmr_uffd *uffd, void *addr, size_t len);

/**
 * vmr_uffd_fd() - the runtime's userfaultfd (-1 if @uffd is NULL)
 */
int vmr_uffd_fd(const struct vmr_uffd *uffd);

/**
 * vmr_uffd_features() - the UFFD_FEATURE_* bits in force (0 if @uffd is NULL)
 */
uint64_t vmr_uffd_features(const struct vmr_uffd *uffd);

/**
 * vmr_uffd_space() - the runtime's space (NULL if @uffd is NULL)
 */
struct vmr_space *vmr_uffd_space(const struct vmr_uffd *uffd);

/**
 * vmr_uffd_is_dead() - whether the paged process has exited (ESRCH); false
 *                      if @uffd is NULL
 */
bool vmr_uffd_is_dead(const struct vmr_uffd *uffd);

/**
 * vmr_uffd_stats() - copy out a runtime's counters
 * @uffd: the runtime
 * @stats: where to copy them
 * @size: sizeof(*@stats) as the caller compiled it
 *
 * Context: any thread, at any time.
 * Return: 0; -EINVAL if an argument is NULL or @size is not a multiple of 8.
 */
int vmr_uffd_stats(const struct vmr_uffd *uffd, struct vmr_uffd_stats *stats,
		   size_t size);

VMR_END_DECLS

#endif /* VMARETRY_UFFD_H */
