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

#endif /* VMR_FUTEX_H */
