/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * libvmaretry - the space lock: mmap_lock for user space.
 *
 * Algorithm
 * ---------
 * A writer-preferring reader-writer lock on futexes, plus the kernel's
 * mm_lock_seq.  One word, @state, holds the reader count, a WRITER bit
 * (a writer holds the lock or is waiting for the readers it found to
 * leave) and a SLEEPERS bit (some reader sleeps on @state).  Writers are
 * serialised among themselves by a ticket lock (take a ticket, sleep on
 * @serving until it comes up): first come, first served, so that a writer
 * cannot be overtaken again and again by later ones, as it was behind a
 * pthread mutex (map/unmap p99 of tens of milliseconds with 64 threads in
 * bench_scenarios).  The writer whose ticket is served sets WRITER,
 * which turns every later reader away, and sleeps on @drain until the
 * reader count it found has dropped to zero.
 *
 *   read lock:    CAS count+1 while WRITER is clear; else set SLEEPERS and
 *                 sleep on @state.
 *   read unlock:  count-1; the reader that takes it to zero with WRITER set
 *                 bumps @drain and wakes the writer.
 *   write lock:   mutex; fetch_or WRITER; sleep on @drain until count == 0;
 *                 seq += 1 (odd: "write locked").
 *   write unlock: seq += 1 (even), which releases every VMA-range write lock
 *                 taken under this hold at once (vma_end_write_all());
 *                 state = 0; wake @state's sleepers if SLEEPERS was set;
 *                 unlock the mutex.
 *   downgrade:    the same, but state = 1 (the writer is now a reader).
 *
 * Invariants
 *  - WRITER is set iff the served writer is past its fetch_or; while it is
 *    set the count only falls.
 *  - SLEEPERS is only set while WRITER is set, and cleared with it.
 *  - seq is odd iff a write hold exists; it only grows (64 bits do not wrap).
 *
 * Ordering and progress
 * ---------------------
 * A reader's successful CAS (acquire) and a writer's fetch_or (seq_cst) are
 * both read-modify-writes of @state, so one of them sees the other: a
 * reader either got in before the writer's mark (and is counted) or sees
 * WRITER.  The last reader decrements @state (release) before it bumps
 * @drain; the writer reads @drain before it reads the count, then sleeps
 * only if @drain is unchanged, so the wakeup cannot be lost.  Read unlock
 * and write unlock are releases and the lock paths acquires: the lock
 * orders what its holders do.
 * Writers cannot be starved by readers (new readers wait once WRITER is
 * set); readers are not starved by a stream of writers either, because the
 * unlocking writer wakes the sleeping readers before it lets the next
 * writer take the mutex, and that writer must then wait for them.
 */
#include "mm.h"
#include "futex.h"

#include <errno.h>

#define READERS 0x3fffffffu
#define WRITER 0x40000000u
#define SLEEPERS 0x80000000u

static _Thread_local char thread_token VMR_TLS_MODEL;

const void *vmr_thread_self(void)
{
	return &thread_token;
}

int vmr_space_lock_init(struct vmr_space_lock *lock)
{
	atomic_init(&lock->seq, 0);
	atomic_init(&lock->state, 0);
	atomic_init(&lock->drain, 0);
	atomic_init(&lock->owner, NULL);
	atomic_init(&lock->next_ticket, 0);
	atomic_init(&lock->serving, 0);
	return 0;
}

void vmr_space_lock_fini(struct vmr_space_lock *lock)
{
	(void)lock;
}

/* Wait for a writer's turn; returns when it started waiting (0: no wait). */
static uint64_t writers_enter(struct vmr_space_lock *lock)
{
	/* Seq_cst: the ticket before the look at @serving, against
	 * writers_leave()'s @serving before its look at @next_ticket. */
	uint32_t ticket = atomic_fetch_add(&lock->next_ticket, 1);
	uint64_t start = 0;
	uint32_t s;

	while ((s = atomic_load(&lock->serving)) != ticket) {
		if (!start)
			start = vmr_now_ns();
		vmr_futex_wait(&lock->serving, s);
	}
	return start;
}

static bool writers_tryenter(struct vmr_space_lock *lock)
{
	uint32_t s = atomic_load_explicit(&lock->serving, memory_order_acquire);
	uint32_t t = s;

	return atomic_compare_exchange_strong_explicit(
		&lock->next_ticket, &t, s + 1, memory_order_acquire,
		memory_order_relaxed);
}

static void writers_leave(struct vmr_space_lock *lock)
{
	uint32_t s = atomic_fetch_add(&lock->serving, 1) + 1;

	/* Someone took a ticket: wake; every waiter checks its own. */
	if (atomic_load(&lock->next_ticket) != s)
		vmr_futex_wake(&lock->serving, INT_MAX);
}

bool vmr_space_lock_is_idle(struct vmr_space_lock *lock)
{
	return atomic_load(&lock->state) == 0;
}

bool vmr_space_lock_is_owner(const struct vmr_space_lock *lock)
{
	return atomic_load_explicit((_Atomic(const void *) *)&lock->owner,
				    memory_order_relaxed) == vmr_thread_self();
}

static bool read_trylock(struct vmr_space_lock *lock)
{
	uint32_t s = atomic_load_explicit(&lock->state, memory_order_relaxed);

	while (!(s & WRITER)) {
		/* Pairs with the release in read_unlock()/write unlock. */
		if (atomic_compare_exchange_weak_explicit(
			    &lock->state, &s, s + 1, memory_order_acquire,
			    memory_order_relaxed))
			return true;
	}
	return false;
}

/* Count an acquisition that began waiting at @start_ns (0: no wait). */
static void count_acquire(struct vmr_space *space, bool write,
			  uint64_t start_ns)
{
	struct vmr_tstate *ts = vmr_tstate_get(space);
	uint64_t ns;

	if (!ts)
		return;
	vmr_count(ts, write ? VMR_STAT(space_write_locks) :
			      VMR_STAT(space_read_locks), 1);
	if (!start_ns)
		return;
	ns = vmr_now_ns() - start_ns;
	vmr_count(ts, write ? VMR_STAT(space_write_waits) :
			      VMR_STAT(space_read_waits), 1);
	vmr_count(ts, write ? VMR_STAT(space_write_wait_ns) :
			      VMR_STAT(space_read_wait_ns), ns);
	vmr_count_hist(ts, write ? VMR_STAT(space_write_wait_hist) :
				   VMR_STAT(space_read_wait_hist), ns);
}

int vmr_space_read_lock(struct vmr_space *space)
{
	struct vmr_space_lock *lock;
	uint64_t start = 0;
	uint32_t s;

	if (!space)
		return -EINVAL;
	lock = &space->lock;
	if (vmr_space_lock_is_owner(lock))
		return -EDEADLK;
	while (!read_trylock(lock)) {
		if (!start)
			start = vmr_now_ns();
		s = atomic_load_explicit(&lock->state, memory_order_relaxed);
		if (s & WRITER)
			vmr_futex_mark_wait(&lock->state, s, SLEEPERS);
	}
	count_acquire(space, false, start);
	return 0;
}

bool vmr_space_read_trylock(struct vmr_space *space)
{
	if (!space || !read_trylock(&space->lock))
		return false;
	count_acquire(space, false, 0);
	return true;
}

int vmr_space_read_unlock(struct vmr_space *space)
{
	struct vmr_space_lock *lock;
	uint32_t s;

	if (!space)
		return -EINVAL;
	lock = &space->lock;
	s = atomic_load_explicit(&lock->state, memory_order_relaxed);
	do {
		if (!(s & READERS))
			return vmr_misuse("space read unlock with no reader");
		/* Pairs with the acquire of the next writer's drain wait. */
	} while (!atomic_compare_exchange_weak_explicit(
		&lock->state, &s, s - 1, memory_order_release,
		memory_order_relaxed));
	if ((s & READERS) == 1 && (s & WRITER)) {
		atomic_fetch_add_explicit(&lock->drain, 1,
					  memory_order_release);
		vmr_futex_wake(&lock->drain, 1);
	}
	return 0;
}

/*
 * With the writers' turn: announce, wait for readers, own.  Returns
 * when it started to wait, or 0 if it did not.
 */
static uint64_t write_acquire(struct vmr_space_lock *lock, uint64_t start)
{
	uint32_t d;

	atomic_fetch_or_explicit(&lock->state, WRITER, memory_order_seq_cst);
	for (;;) {
		/* Pairs with the bump in vmr_space_read_unlock(). */
		d = atomic_load_explicit(&lock->drain, memory_order_acquire);
		if (!(atomic_load_explicit(&lock->state, memory_order_acquire) &
		      READERS))
			break;
		if (!start)
			start = vmr_now_ns();
		vmr_futex_wait(&lock->drain, d);
	}
	/* Odd: regions marked with this value are write-locked. */
	atomic_fetch_add_explicit(&lock->seq, 1, memory_order_seq_cst);
	atomic_store_explicit(&lock->owner, vmr_thread_self(),
			      memory_order_relaxed);
	return start;
}

int vmr_space_write_lock(struct vmr_space *space)
{
	uint64_t start = 0;

	if (!space)
		return -EINVAL;
	if (vmr_space_lock_is_owner(&space->lock))
		return -EDEADLK;
	start = writers_enter(&space->lock);
	count_acquire(space, true, write_acquire(&space->lock, start));
	return 0;
}

bool vmr_space_write_trylock(struct vmr_space *space)
{
	struct vmr_space_lock *lock;
	uint32_t s = 0;

	if (!space)
		return false;
	lock = &space->lock;
	if (vmr_space_lock_is_owner(lock) || !writers_tryenter(lock))
		return false;
	if (!atomic_compare_exchange_strong_explicit(&lock->state, &s, WRITER,
						     memory_order_seq_cst,
						     memory_order_relaxed)) {
		writers_leave(lock);
		return false;
	}
	atomic_fetch_add_explicit(&lock->seq, 1, memory_order_seq_cst);
	atomic_store_explicit(&lock->owner, vmr_thread_self(),
			      memory_order_relaxed);
	count_acquire(space, true, 0);
	return true;
}

/* End the write hold, leaving @readers readers (0, or 1 to downgrade). */
static int write_release(struct vmr_space *space, uint32_t readers,
			 const char *what)
{
	struct vmr_space_lock *lock;

	if (!space)
		return -EINVAL;
	lock = &space->lock;
	if (!vmr_space_lock_is_owner(lock))
		return vmr_misuse(what);
	atomic_store_explicit(&lock->owner, NULL, memory_order_relaxed);
	/* Even: every range write lock of this hold is released. */
	atomic_fetch_add_explicit(&lock->seq, 1, memory_order_release);
	vmr_futex_exchange_wake(&lock->state, readers, SLEEPERS);
	writers_leave(lock);
	return 0;
}

int vmr_space_write_unlock(struct vmr_space *space)
{
	return write_release(space, 0,
			     "space write unlock by a thread not the writer");
}

int vmr_space_write_downgrade(struct vmr_space *space)
{
	return write_release(space, 1,
			     "space downgrade by a thread not the writer");
}

bool vmr_space_is_write_locked(const struct vmr_space *space)
{
	return space && vmr_space_lock_is_owner(&space->lock);
}
