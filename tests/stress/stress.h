/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The stress program's shared parts: its options, a per-thread PRNG, the
 * violation log, and the watchdog's heartbeats.
 *
 * Worker threads never stop the run themselves: a broken invariant is
 * recorded (stress_violation(): a counter and the first message), and the
 * main thread, which checks after each round, fails the run.  The one
 * exception is a hang: a worker stuck in one call longer than
 * STRESS_STUCK_S cannot be joined, so the watchdog prints the seed, the
 * worker and what it was doing, and ends the process at once.
 */
#ifndef VMR_STRESS_H
#define VMR_STRESS_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "vmr_rng.h"

/* A call that has not returned after this long is a hang: 10 s, or a
 * minute under valgrind, which runs one thread at a time some fifty times
 * slower and can leave a runnable thread unscheduled for seconds. */
#define STRESS_STUCK_S (stress_opts.valgrind ? 60.0 : 10.0)

struct stress_opts {
	double seconds;     /* run length */
	uint64_t seed;      /* the run's seed, printed at start */
	unsigned int threads; /* fault threads */
	unsigned int rounds;  /* space teardown cycles */
	bool yield;         /* debug-point yield injection */
	bool uffd;          /* run the userfaultfd phase instead */
	bool hot;           /* uffd phase: few pages, constant zaps */
	bool valgrind;      /* VMR_TEST_VALGRIND is set */
};

extern struct stress_opts stress_opts;

/* Monotonic clock in seconds. */
double stress_now(void);
void stress_sleep(double seconds);

/* Record a broken invariant (any thread); the first message is kept. */
void stress_violation(const char *fmt, ...)
	__attribute__((format(printf, 1, 2)));
/* Violations recorded so far. */
unsigned long stress_violations(void);
/* Print the first violation and the count, with the seed. */
void stress_report(const char *phase);

/*
 * Heartbeats: each worker registers one and marks the start and end of
 * every call that must return (stress_beat_begin/end); the watchdog
 * (stress_watch(), called by the main thread while it waits) ends the
 * run if one call has been under way for STRESS_STUCK_S.
 */
struct stress_beat {
	const char *who;        /* "fault", "writer", ... */
	unsigned int id;
	_Atomic uint64_t since_ns; /* 0: not inside a call */
	_Atomic uintptr_t what;    /* the address, for the message */
	struct stress_beat *next;
};

void stress_beat_register(struct stress_beat *b, const char *who,
			  unsigned int id);
void stress_beat_unregister(struct stress_beat *b);
void stress_beat_begin(struct stress_beat *b, uintptr_t what);
void stress_beat_end(struct stress_beat *b);
/* Sleep @seconds while watching the heartbeats (main thread only). */
void stress_watch(double seconds);
/*
 * Join @t while watching; a thread that has not ended after
 * STRESS_STUCK_S is a hang and ends the run like a stuck call.
 */
void stress_join(pthread_t t, const char *who);

/* The phases; each returns 0 (ran), 1 (violations) or 77 (could not run). */
int stress_engine_phase(void);
int stress_uffd_phase(void);

#endif /* VMR_STRESS_H */
