/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * libvmaretry - the userfaultfd runtime: what a read of messages and an
 * install hold.
 *
 * The read mutex.  Where events come and there are several handler
 * threads (serial_reads()), read() runs under a mutex, so that each batch
 * gets its sequence number in the order the kernel handed the batches out
 * (uffd_event.c orders events and faults by it).  It is held across one
 * read(), about a microsecond: glibc's adaptive mutex spins that long
 * before it sleeps (see vmr_uffd_read_lock_init()).
 *
 * Installs and reads.  The kernel refuses an install (EAGAIN) only while an
 * event is unread; once a REMOVE is read, madvise() zaps the range at once,
 * and a copy landing before the event is applied would leave stale data in
 * discarded memory.  So no install may be in flight across a read(), and
 * an install proceeds only if every event read so far is applied (else it
 * is deferred, as for EAGAIN: uffd_fault.c).  Only REMOVE needs the
 * exclusion: an unmap, a move or a fork changes the mapping under the mmap
 * write lock, installs are refused from before the change until its event
 * is read, and one after that finds the old range gone (ENOENT).  Since
 * Linux 6.8 a REMOVE also waits, before it raises the count that refuses
 * installs, for the installs already in the kernel (map_changing_lock:
 * written there, read across each install).  That covers an install the
 * kernel has begun, not one between the handler's check and the kernel's:
 * a read that completes the REMOVE in that gap lets the zap run before it,
 * so the exclusion is kept on every kernel.  A descriptor without REMOVE
 * events (VMR_UFFD_NO_REMOVE) orders its reads but lets its installs run
 * beside them: a discarded page then faults in from the store again, and a
 * copy racing its discard leaves the same contents ("Installed pages" in
 * uffd_fault.c).  With one handler thread the reader is the installer:
 * neither side runs, and a fault pays no fence.
 *
 * The protocol is Dekker's, so that an install writes only its own
 * thread's line: the installer sets its handler's installing flag, fences,
 * and backs off while u->reading is set; the reader sets u->reading,
 * fences, and waits until no other handler is installing.  With both
 * fences seq_cst, at least one side sees the other's store.  An installer
 * that finds no reader reads last_event_seq after its acquire of
 * u->reading, which pairs with the release that ended the last read: it
 * sees the value every read before it left.
 * Progress: the reader holds only the read mutex and waits only for
 * installs in progress; an install waits for nothing the reader holds
 * (UFFDIO_COPY takes the mmap lock, which no event holds while it waits
 * to be read): no deadlock.  Each side waits for the other across one
 * system call, so it spins a few microseconds before it sleeps
 * (wait_clear()); past the spin it sleeps on the flag's futex, and the
 * flag's owner clears it with an exchange that tells it whether to wake
 * anyone (futex.h's sleeper-flag protocol, as in the range lock's fence
 * mode and the space lock, with the argument that no wake-up is lost).
 * Only the copy itself needs the exclusion, not the wake-up of the thread
 * it resolves (a cross-CPU one as a rule): inside the exclusion a copy is
 * made with UFFDIO_COPY_MODE_DONTWAKE, and UFFDIO_WAKE follows
 * vmr_uffd_install_end().
 *
 * Measured with bench_uffd --store=zero --pages=32768 on a 2-vCPU VM,
 * alternating runs of the two builds; ratios are ours / the minimal
 * handler, medians; the choices against what they replaced:
 *  - a shared rwlock, one read-side atomic per install and sleeps behind
 *    the reader, cost a third of the throughput at two handler threads;
 *  - yielding at once instead of spinning left two handlers at 0.72-0.79,
 *    against 0.83-0.96 with the spin (six rounds each);
 *  - waiting by sched_yield() rather than on the futex took the CPU the
 *    owner needed with more handlers than CPUs: at four handlers 0.685
 *    (quartiles 0.63-0.72) with yields, 0.76 (0.74-0.76) with the futex;
 *    at eight 0.87 against 0.96 (four runs); at two 0.865 against 0.81,
 *    and 0.84 for the futex in fourteen later runs: noise (--reps=3,
 *    sixteen runs, 2026-12-07).
 *    Pinned to one CPU and with the sleeping store, no difference above
 *    the noise.  Yielding four times before sleeping was no better at two
 *    handlers (0.82) and worse at four (0.69 against 0.75, fourteen runs);
 *  - waking inside the copy took two handlers from 0.78 to 0.68 and four
 *    from 0.76 to 0.61 (--reps=1, ten runs, 2026-12-07): the extra
 *    UFFDIO_WAKE a page is the better side of the trade;
 *  - a longer spin helps one count or the other, not both: 2048 spins
 *    read 0.83 against 0.77 at two handlers but 0.72 against 0.74 at
 *    four, 8192 read 0.83 and 0.69 (twelve runs each);
 *  - going back to epoll_wait() after a short batch instead of an
 *    excluded empty read: 0.79 and 0.76 against 0.75 and 0.74, noise;
 *  - a reader that finds an install still running after its spin, and
 *    lets go of the read mutex and its flag to wait for it holding
 *    nothing: 69.9k against 71.9k pages/s (not a ratio) at two handlers,
 *    61.5k against 61.7k at four (eight runs).
 * The runtime with REMOVE events is measured against a hand-written
 * handler that keeps the same exclusion with a rwlock (bench_uffd's
 * minimal_remove).
 */
#include "uffd_internal.h"
#include "futex.h"

#include <urcu/arch.h>

/* Spins (cpu_relax) before a wait for the other side sleeps: a few us. */
#define WAIT_SPINS 128

/*
 * The two sides' flags (a handler's installing, the runtime's reading):
 * BUSY while the side is in its system call, WAITER once the other side
 * sleeps on it (futex.h's sleeper-flag protocol).  Only the owner sets or
 * clears BUSY; waiters only add WAITER, to a word that is BUSY.
 */
#define EXCL_BUSY 0x1u
#define EXCL_WAITER 0x2u

/*
 * Wait until @word is not BUSY (acquire).  The other side holds it across
 * one system call (a read() of messages, an installing ioctl), a few
 * microseconds: spin that long first, then sleep on the word (its owner
 * may be descheduled, and with more handler threads than CPUs a spinning
 * or yielding waiter takes the CPU the owner needs).
 */
static void wait_clear(_Atomic uint32_t *word)
{
	unsigned int spins = 0;
	uint32_t v;

	while ((v = atomic_load_explicit(word, memory_order_acquire)) &
	       EXCL_BUSY) {
		if (spins < WAIT_SPINS) {
			spins++;
			caa_cpu_relax();
			continue;
		}
		vmr_futex_mark_wait(word, v, EXCL_WAITER);
	}
}

/* Clear @word (release), waking whoever sleeps on it. */
static void clear_wake(_Atomic uint32_t *word)
{
	vmr_futex_exchange_wake(word, 0, EXCL_WAITER);
}

/*
 * Enter an install: no read() of messages runs until
 * vmr_uffd_install_end().  Returns whether it excludes reads (not with one
 * handler thread, nor without REMOVE events).
 */
bool vmr_uffd_install_begin(struct uffd_handler *h)
{
	if (!excl_reads(h->uffd))
		return false;
	for (;;) {
		atomic_store_explicit(&h->installing, EXCL_BUSY,
				      memory_order_relaxed);
		/* Pairs with the fence in vmr_uffd_read_begin(). */
		atomic_thread_fence(memory_order_seq_cst);
		/* Acquire: the batch's last_event_seq is seen. */
		if (!(atomic_load_explicit(&h->uffd->reading,
					   memory_order_acquire) &
		      EXCL_BUSY))
			return true;
		clear_wake(&h->installing);
		wait_clear(&h->uffd->reading);
	}
}

void vmr_uffd_install_end(struct uffd_handler *h)
{
	if (excl_reads(h->uffd))
		clear_wake(&h->installing);
}

/*
 * Begin a read of messages: in batch order (under read_lock) and, where
 * REMOVE events come, with no install in flight.  Without events to order,
 * reads run in parallel.
 */
void vmr_uffd_read_begin(struct uffd_handler *h)
{
	struct vmr_uffd *u = h->uffd;

	if (!serial_reads(u))
		return;
	pthread_mutex_lock(&u->read_lock);
	if (!excl_reads(u))
		return;
	atomic_store_explicit(&u->reading, EXCL_BUSY, memory_order_relaxed);
	/* Pairs with the fence in vmr_uffd_install_begin(). */
	atomic_thread_fence(memory_order_seq_cst);
	for (unsigned int i = 0; i < u->nr_threads; i++)
		if (&u->handlers[i] != h)
			wait_clear(&u->handlers[i].installing);
}

void vmr_uffd_read_end(struct vmr_uffd *u)
{
	if (!serial_reads(u))
		return;
	if (excl_reads(u))
		clear_wake(&u->reading);
	pthread_mutex_unlock(&u->read_lock);
}

/*
 * The read mutex is held across one read() of messages, about a
 * microsecond; a thread that finds it taken would sleep and be woken by a
 * futex, unless it spins that long first (glibc's adaptive mutex).
 * bench_uffd --store=zero --reps=3 --pages=32768 --max-handlers=4 on 2
 * vCPUs, eight alternating runs of each build (2026-12-07), ours over
 * minimal, medians: at two handler threads 0.96 against 0.90 without
 * REMOVE events, 0.80 against 0.79 with them; at four 0.87 against 0.86
 * and 0.75 against 0.70; without events, which take no read mutex, 0.92
 * and 0.89 for both builds.
 */
void vmr_uffd_read_lock_init(pthread_mutex_t *m)
{
#ifdef __GLIBC__
	pthread_mutexattr_t a;

	if (!pthread_mutexattr_init(&a)) {
		pthread_mutexattr_settype(&a, PTHREAD_MUTEX_ADAPTIVE_NP);
		pthread_mutex_init(m, &a);
		pthread_mutexattr_destroy(&a);
		return;
	}
#endif
	pthread_mutex_init(m, NULL);
}
