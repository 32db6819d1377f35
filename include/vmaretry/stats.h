/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * libvmaretry - a space's counters: the kernel's per-VMA lock events
 * (/proc/vmstat vma_lock_*), the fault engine's retries and results, page
 * waits and re-reads, the space lock's acquisitions and waits, and latency
 * histograms.
 *
 * Each thread counts into its own part of the space (no atomic
 * instruction, no shared cache line); vmr_space_stats() sums the parts, at
 * any time, without stopping anything.  A sum taken while faults run is
 * not a snapshot of one instant: each counter is exact as of some moment
 * during the call.
 */
#ifndef VMARETRY_STATS_H
#define VMARETRY_STATS_H

#include <vmaretry/space.h>

VMR_BEGIN_DECLS

/* Histogram buckets: bucket b counts durations in [2^b, 2^(b+1)) ns
 * (bucket 0 also counts 0 ns; the last one everything above). */
#define VMR_HIST_BUCKETS 40

/**
 * struct vmr_stats - counters of a space since creation or the last reset
 * @vma_lock_success: faults finished on the fine-grained lock, without the
 *                    space lock (VMA_LOCK_SUCCESS; COMPLETED and access
 *                    errors found under the fine-grained lock included)
 * @vma_lock_abort: fine-grained lock attempts that gave up and fell back to
 *                  the space lock: no region, a writer's range, no free
 *                  reader state (VMA_LOCK_ABORT)
 * @vma_lock_retry: fine-grained attempts whose handler returned RETRY
 *                  (VMA_LOCK_RETRY)
 * @vma_lock_miss: lookups repeated because the region was replaced
 *                 between lookup and lock (VMA_LOCK_MISS)
 * @faults: faults handled by vmr_handle_fault()
 * @vma_retries: RETRY_VMA results followed on the fine-grained lock again
 * @vma_retries_exhausted: faults that hit the bound on those and fell back
 * @space_lock_faults: space lock read acquisitions made by the fault path
 * @space_retries: RETRY results retried under the space lock
 * @retry_disallowed: retries run without ALLOW_RETRY because the second
 *                    bound was reached
 * @result_ok: faults whose result had no bit below other than MAJOR
 * @result_nopage: ... with NOPAGE
 * @result_major: faults that finished (no error, no RETRY) and were major:
 *                the result had MAJOR or the fault was retried with TRIED,
 *                as the kernel's mm_account_fault() counts them (counted
 *                besides ok/nopage/completed)
 * @result_completed: ... with COMPLETED
 * @result_sigsegv: ... with SIGSEGV (no region, or an access the region's
 *                  protection forbids; the handler is not called)
 * @result_sigbus: ... with SIGBUS (handler errors and bad handler results)
 * @result_oom: ... with OOM
 * @result_unfinished: faults returned with RETRY: not resolved because
 *                     RETRY_NOWAIT forbade waiting or the space was shut
 *                     down
 * @bad_results: handler results the engine refused (impossible bit
 *               combinations, locks not released or released twice)
 * @page_wait_sleeps: sleeps on a page's lock or I/O (page wait)
 * @page_reads: pages made up to date
 * @page_rereads: of those, pages that had been up to date before (read
 *                again because they were evicted)
 * @space_read_locks: space lock read acquisitions (by anyone)
 * @space_read_waits: of those, acquisitions that had to wait
 * @space_read_wait_ns: total time waited for them
 * @space_write_locks: space lock write acquisitions
 * @space_write_waits: of those, acquisitions that had to wait
 * @space_write_wait_ns: total time waited for them
 * @space_read_wait_hist: waits of read acquisitions that waited, by bucket
 * @space_write_wait_hist: the same for write acquisitions
 * @fault_latency_hist: whole vmr_handle_fault() calls, by bucket; counted
 *                      only in spaces created with fault timing on
 *
 * Only uint64_t members, so that it can grow at the end; pass its size.
 */
struct vmr_stats {
	uint64_t vma_lock_success;
	uint64_t vma_lock_abort;
	uint64_t vma_lock_retry;
	uint64_t vma_lock_miss;
	uint64_t faults;
	uint64_t vma_retries;
	uint64_t vma_retries_exhausted;
	uint64_t space_lock_faults;
	uint64_t space_retries;
	uint64_t retry_disallowed;
	uint64_t result_ok;
	uint64_t result_nopage;
	uint64_t result_major;
	uint64_t result_completed;
	uint64_t result_sigsegv;
	uint64_t result_sigbus;
	uint64_t result_oom;
	uint64_t result_unfinished;
	uint64_t bad_results;
	uint64_t page_wait_sleeps;
	uint64_t page_reads;
	uint64_t page_rereads;
	uint64_t space_read_locks;
	uint64_t space_read_waits;
	uint64_t space_read_wait_ns;
	uint64_t space_write_locks;
	uint64_t space_write_waits;
	uint64_t space_write_wait_ns;
	uint64_t space_read_wait_hist[VMR_HIST_BUCKETS];
	uint64_t space_write_wait_hist[VMR_HIST_BUCKETS];
	uint64_t fault_latency_hist[VMR_HIST_BUCKETS];
};

/**
 * vmr_space_stats() - copy out a space's counters
 * @space: the space
 * @stats: where to copy them
 * @size: sizeof(*@stats) as the caller compiled it; counters past it are
 *        not copied
 *
 * Context: any thread; takes no lock the fault path takes.
 * Concurrency: faults and updates go on; see the header comment.
 * Return: 0; -EINVAL if @space or @stats is NULL or @size is not a multiple
 * of 8.
 */
int vmr_space_stats(const struct vmr_space *space, struct vmr_stats *stats,
		    size_t size);

/**
 * vmr_space_stats_reset() - start counting from zero again
 * @space: the space
 *
 * Later vmr_space_stats() calls report what happened after this one.
 *
 * Context, Concurrency: as vmr_space_stats(); resets are serialised with
 * each other.
 * Return: 0; -EINVAL if @space is NULL.
 */
int vmr_space_stats_reset(struct vmr_space *space);

/**
 * vmr_hist_percentile() - a percentile read off a histogram
 * @hist: VMR_HIST_BUCKETS buckets
 * @pct: the percentile, 0 to 100 (below 0 or NaN counts as 0, above 100
 *       as 100)
 *
 * Return: the upper bound in ns of the bucket holding it (2^(b+1)), or 0
 * if the histogram is empty or @hist is NULL.
 */
uint64_t vmr_hist_percentile(const uint64_t *hist, double pct);

VMR_END_DECLS

#endif /* VMARETRY_STATS_H */
