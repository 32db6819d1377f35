/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * libvmaretry - telling ThreadSanitizer about liburcu's ordering.
 *
 * Our own publish and consume are C11 atomics (a tree version is published
 * with a release store and loaded with acquire; a range lock is released
 * with a release store that the reclaimer's scan loads), which TSan sees.
 * Two orderings come from liburcu instead, whose barriers are inline asm
 * and whose queues use asm exchanges, so TSan sees neither:
 *
 *   1. the grace period: a callback queued with call_rcu() runs after
 *      every read-side critical section that could have seen the object
 *      has ended;
 *   2. the hand-off of the callback's rcu_head: what the updater wrote
 *      before call_rcu() is visible to the callback.
 *
 * Without them TSan reports the reclaimer's free() against a reader's load
 * and the callback's reads against the updater's writes: orderings that
 * hold, only unseen.  We state them with TSan's own annotations, not with
 * suppressions, so that a real race in the same code is still reported:
 *
 *   - every read-side critical section that the library ends (the fault
 *     path, vmr_rcu_read_unlock()) releases on one sync object, the grace
 *     period, just before it ends;
 *   - vmr_call_rcu() releases on the rcu_head before queueing it;
 *   - every callback acquires the rcu_head and the grace period first.
 *
 * So each reader's accesses happen-before every callback that runs after
 * the reader's section ended: the grace period's guarantee, slightly
 * stronger (a section that began after call_rcu() is ordered too, which
 * can only hide a report, never invent one).  A section ended by calling
 * liburcu directly (urcu_memb_read_unlock()) is invisible to TSan: code
 * that wants TSan to check it ends its sections with vmr_rcu_read_unlock().
 *
 * Without TSan all of this compiles to nothing.  Include this header after
 * any liburcu flavor header (urcu/flavor.h, which it includes, must not
 * come before the flavor's name map).
 */
#ifndef VMR_TSAN_H
#define VMR_TSAN_H

#include <urcu/flavor.h>

#if defined(__SANITIZE_THREAD__)
#define VMR_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define VMR_TSAN 1
#endif
#endif

#ifdef VMR_TSAN
void __tsan_acquire(void *addr);
void __tsan_release(void *addr);

/* The sync object that stands for the grace period. */
extern char vmr_tsan_grace_period;

static inline void vmr_tsan_reader_exit(void)
{
	__tsan_release(&vmr_tsan_grace_period);
}

static inline void vmr_tsan_callback_enter(struct rcu_head *head)
{
	__tsan_acquire(head);
	__tsan_acquire(&vmr_tsan_grace_period);
}

static inline void vmr_tsan_call_rcu(struct rcu_head *head)
{
	__tsan_release(head);
}
#else
static inline void vmr_tsan_reader_exit(void)
{
}

static inline void vmr_tsan_callback_enter(struct rcu_head *head)
{
	(void)head;
}

static inline void vmr_tsan_call_rcu(struct rcu_head *head)
{
	(void)head;
}
#endif

/*
 * call_rcu() through @flavor, with the hand-off annotated; @fn must begin
 * with vmr_tsan_callback_enter(head).
 */
static inline void vmr_call_rcu(const struct rcu_flavor_struct *flavor,
				struct rcu_head *head,
				void (*fn)(struct rcu_head *head))
{
	vmr_tsan_call_rcu(head);
	flavor->update_call_rcu(head, fn);
}

#endif /* VMR_TSAN_H */
