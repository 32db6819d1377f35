/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * libvmaretry - futex wait and wake on a 32-bit atomic word.
 *
 * Every sleeping wait of the library is one of these: no mutex or condition
 * variable per object.  Waits are process-private and may return early
 * (EINTR, EAGAIN when the word already differs, spurious wakeups): every
 * caller re-checks its condition in a loop.
 */
#ifndef VMR_FUTEX_H
#define VMR_FUTEX_H

#include <linux/futex.h>
#include <limits.h>
#include <stdatomic.h>
#include <stdint.h>
#include <sys/syscall.h>
#include <unistd.h>

/* Sleep while *@word == @expect (checked atomically by the kernel). */
static inline void vmr_futex_wait(_Atomic uint32_t *word, uint32_t expect)
{
	syscall(SYS_futex, (uint32_t *)word, FUTEX_WAIT_PRIVATE, expect, NULL,
		NULL, 0);
}

/* Wake up to @n sleepers on @word (INT_MAX: all). */
static inline void vmr_futex_wake(_Atomic uint32_t *word, int n)
{
	syscall(SYS_futex, (uint32_t *)word, FUTEX_WAKE_PRIVATE, n, NULL, NULL,
		0);
}

/*
 * The sleeper-flag protocol.  A word whose owner alone clears its busy
 * state carries a flag bit (@waiter) that says someone sleeps on it:
 *
 *   waiter: vmr_futex_mark_wait(word, v, waiter) with v the busy value it
 *           read: adds the flag by CAS, only to the word still equal to
 *           v, and sleeps while the word is v | waiter;
 *   owner:  vmr_futex_exchange_wake(word, val, waiter) replaces the word
 *           and wakes every sleeper if the old value had the flag.
 *
 * Either the owner's exchange comes after the CAS, sees the flag and
 * wakes, or it comes first and the CAS fails (or the sleep finds the word
 * changed): no wake-up is lost.  The waiter re-reads the word and its
 * condition after each call, whatever happened.
 */
static inline void vmr_futex_mark_wait(_Atomic uint32_t *word, uint32_t v,
				       uint32_t waiter)
{
	if (!(v & waiter) &&
	    !atomic_compare_exchange_weak_explicit(word, &v, v | waiter,
						   memory_order_relaxed,
						   memory_order_relaxed))
		return;
	vmr_futex_wait(word, v | waiter);
}

/* Store @val (release), waking every sleeper if the old word had @waiter;
 * returns the old word. */
static inline uint32_t vmr_futex_exchange_wake(_Atomic uint32_t *word,
					       uint32_t val, uint32_t waiter)
{
	uint32_t old = atomic_exchange_explicit(word, val,
						memory_order_release);

	if (__builtin_expect(!!(old & waiter), 0))
		vmr_futex_wake(word, INT_MAX);
	return old;
}

#endif /* VMR_FUTEX_H */
