/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The stress program: command line, seed, yield injection, the violation
 * log and the watchdog; the phases are in stress_engine.c (synthetic
 * faults, updates, readers and teardowns on a vmr_space) and
 * stress_uffd.c (the userfaultfd runtime on real memory).
 *
 *   stress [--seconds N] [--seed S] [--threads N] [--rounds N] [--yield]
 *          [--uffd [--hot]]
 *
 * --seconds defaults to $VMR_TEST_SECONDS, else 2; --seed to a fresh one;
 * --threads (fault threads, or uffd touchers) to 4; --rounds (space
 * teardowns) to two per second of run, at least two.  --yield installs the
 * debug-point yield injector (its rate and sleep length drawn from the
 * seed) where the library has debug points, and says so where it has not.
 * --uffd runs the userfaultfd phase instead of the engine phase (the test
 * suite runs each as its own test); --hot makes that phase work a few
 * pages hard (stress_uffd.c).
 * The seed is always printed first ("stress: seed S"), so that any run can
 * be replayed with --seed S (as far as the scheduler allows: the seed
 * fixes every random choice of the program and of the yield injector, not
 * the interleaving).  Exit status: 0 clean, 1 on a broken invariant (each
 * printed with the seed), 77 if nothing could run (the uffd phase where
 * the kernel refuses userfaultfd, or under valgrind).
 *
 * It is a plain program rather than a Check suite: one long randomized run
 * with its own watchdog, whose output must name the seed, not a set of
 * forked test cases.
 */
#include "stress.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"

struct stress_opts stress_opts;

double stress_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

void stress_sleep(double seconds)
{
	struct timespec ts;

	if (seconds <= 0)
		return;
	ts.tv_sec = (time_t)seconds;
	ts.tv_nsec = (long)((seconds - (double)ts.tv_sec) * 1e9);
	while (nanosleep(&ts, &ts) && errno == EINTR)
		;
}

/* ---- violations ---------------------------------------------------------- */

static atomic_ulong violations;
static pthread_mutex_t first_lock = PTHREAD_MUTEX_INITIALIZER;
static char first[512];

void stress_violation(const char *fmt, ...)
{
	va_list ap;

	if (atomic_fetch_add(&violations, 1))
		return;
	pthread_mutex_lock(&first_lock);
	va_start(ap, fmt);
	vsnprintf(first, sizeof(first), fmt, ap);
	va_end(ap);
	pthread_mutex_unlock(&first_lock);
}

unsigned long stress_violations(void)
{
	return atomic_load(&violations);
}

void stress_report(const char *phase)
{
	unsigned long n = stress_violations();

	if (!n)
		return;
	pthread_mutex_lock(&first_lock);
	fprintf(stderr,
		"stress: FAIL (%s, seed %" PRIu64 "): %lu violation(s); "
		"first: %s\n"
		"stress: replay with --seed %" PRIu64 "\n",
		phase, stress_opts.seed, n, first, stress_opts.seed);
	pthread_mutex_unlock(&first_lock);
}

/* ---- heartbeats and the watchdog ----------------------------------------- */

static pthread_mutex_t beats_lock = PTHREAD_MUTEX_INITIALIZER;
static struct stress_beat *beats;

void stress_beat_register(struct stress_beat *b, const char *who,
			  unsigned int id)
{
	b->who = who;
	b->id = id;
	atomic_init(&b->since_ns, 0);
	atomic_init(&b->what, 0);
	pthread_mutex_lock(&beats_lock);
	b->next = beats;
	beats = b;
	pthread_mutex_unlock(&beats_lock);
}

void stress_beat_unregister(struct stress_beat *b)
{
	pthread_mutex_lock(&beats_lock);
	for (struct stress_beat **p = &beats; *p; p = &(*p)->next) {
		if (*p == b) {
			*p = b->next;
			break;
		}
	}
	pthread_mutex_unlock(&beats_lock);
}

void stress_beat_begin(struct stress_beat *b, uintptr_t what)
{
	atomic_store_explicit(&b->what, what, memory_order_relaxed);
	atomic_store_explicit(&b->since_ns, now_ns(), memory_order_release);
}

void stress_beat_end(struct stress_beat *b)
{
	atomic_store_explicit(&b->since_ns, 0, memory_order_release);
}

static _Noreturn void hang(const char *who, unsigned int id, uintptr_t what,
			   double secs)
{
	stress_report("before the hang");
	fprintf(stderr,
		"stress: FAIL (seed %" PRIu64 "): %s %u stuck for %.1f s "
		"(at %#" PRIxPTR "): a call did not return\n"
		"stress: replay with --seed %" PRIu64 "\n",
		stress_opts.seed, who, id, secs, what, stress_opts.seed);
	fflush(stderr);
	_exit(1);
}

static void check_beats(void)
{
	uint64_t now = now_ns();

	pthread_mutex_lock(&beats_lock);
	for (struct stress_beat *b = beats; b; b = b->next) {
		uint64_t since = atomic_load_explicit(&b->since_ns,
						      memory_order_acquire);

		if (!since || now <= since ||
		    (double)(now - since) * 1e-9 <= STRESS_STUCK_S)
			continue;
		/* Say what every other worker was doing, then fail. */
		for (struct stress_beat *o = beats; o; o = o->next) {
			uint64_t os = atomic_load(&o->since_ns);

			if (o != b && os && now > os)
				fprintf(stderr,
					"stress: meanwhile %s %u in a call "
					"for %.3f s (at %#" PRIxPTR ")\n",
					o->who, o->id,
					(double)(now - os) * 1e-9,
					atomic_load(&o->what));
		}
		hang(b->who, b->id, atomic_load(&b->what),
		     (double)(now - since) * 1e-9);
	}
	pthread_mutex_unlock(&beats_lock);
}

void stress_watch(double seconds)
{
	double end = stress_now() + seconds;

	for (;;) {
		double left = end - stress_now();

		check_beats();
		if (left <= 0)
			return;
		stress_sleep(left < 0.01 ? left : 0.01);
	}
}

void stress_join(pthread_t t, const char *who)
{
	double start = stress_now();

	for (;;) {
		struct timespec ts;
		int err;

		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_nsec += 10 * 1000 * 1000;
		if (ts.tv_nsec >= 1000000000) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000;
		}
		err = pthread_timedjoin_np(t, NULL, &ts);
		if (!err)
			return;
		if (err != ETIMEDOUT && err != EINTR) {
			fprintf(stderr, "stress: join %s: %s\n", who,
				strerror(err));
			exit(1);
		}
		check_beats();
		if (stress_now() - start > STRESS_STUCK_S)
			hang(who, 0, 0, stress_now() - start);
	}
}

/* ---- command line -------------------------------------------------------- */

static _Noreturn void usage(const char *bad)
{
	fprintf(stderr,
		"stress: bad argument '%s'\n"
		"usage: stress [--seconds N] [--seed S] [--threads N] "
		"[--rounds N] [--yield] [--uffd [--hot]]\n",
		bad);
	exit(2);
}

static uint64_t parse_u64(const char *s, const char *opt)
{
	char *end;
	unsigned long long v;

	if (!s)
		usage(opt);
	errno = 0;
	v = strtoull(s, &end, 0);
	if (errno || !*s || *end)
		usage(s);
	return v;
}

static uint64_t fresh_seed(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return ((uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 20) ^
		((uint64_t)getpid() << 40)) &
	       0xffffffffffffull;
}

static void parse(int argc, char **argv)
{
	const char *env = getenv("VMR_TEST_SECONDS");
	bool seeded = false;

	stress_opts.seconds = env && atof(env) > 0 ? atof(env) : 2.0;
	stress_opts.threads = 4;
	stress_opts.rounds = 0; /* derived from the length below */
	stress_opts.valgrind = getenv("VMR_TEST_VALGRIND") != NULL;
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];

		if (!strcmp(a, "--seconds")) {
			char *end;

			if (i + 1 >= argc)
				usage(a);
			stress_opts.seconds = strtod(argv[++i], &end);
			if (*end || !(stress_opts.seconds > 0))
				usage(argv[i]);
		} else if (!strcmp(a, "--seed")) {
			stress_opts.seed = parse_u64(argv[++i], a);
			seeded = true;
		} else if (!strcmp(a, "--threads")) {
			stress_opts.threads =
				(unsigned int)parse_u64(argv[++i], a);
			if (!stress_opts.threads || stress_opts.threads > 256)
				usage(argv[i]);
		} else if (!strcmp(a, "--rounds")) {
			stress_opts.rounds =
				(unsigned int)parse_u64(argv[++i], a);
			if (!stress_opts.rounds)
				usage(argv[i]);
		} else if (!strcmp(a, "--yield")) {
			stress_opts.yield = true;
		} else if (!strcmp(a, "--uffd")) {
			stress_opts.uffd = true;
		} else if (!strcmp(a, "--hot")) {
			stress_opts.hot = true;
		} else {
			usage(a);
		}
	}
	if (!seeded)
		stress_opts.seed = fresh_seed();
	/* About one teardown every half second, at least two. */
	if (!stress_opts.rounds) {
		double r = stress_opts.seconds * 2;

		stress_opts.rounds = r < 2 ? 2 : r > 1000 ? 1000 :
						       (unsigned int)r;
	}
}

int main(int argc, char **argv)
{
	int ret;

	parse(argc, argv);
	setvbuf(stdout, NULL, _IOLBF, 0);
	printf("stress: seed %" PRIu64 "\n", stress_opts.seed);
	printf("stress: %.1f s, %u fault threads, %u rounds, yield %s, "
	       "phase %s\n",
	       stress_opts.seconds, stress_opts.threads, stress_opts.rounds,
	       stress_opts.yield ? "on" : "off",
	       stress_opts.uffd ? "uffd" : "engine");
	fflush(stdout);
	if (stress_opts.yield) {
		if (!vmr_debug_points_built()) {
			printf("stress: the library was built without debug "
			       "points (-Ddebug_points=true): running "
			       "without yield injection\n");
			stress_opts.yield = false;
		} else {
			/*
			 * Every point; how often and how long the seed says,
			 * from a yield at every other point to an
			 * occasional one (sleeps are a quarter of them).
			 */
			static const unsigned int one_in[] = { 2, 8, 16, 64 };
			static const unsigned int sleep_us[] = { 5, 50, 200 };
			struct vmr_rng rng;
			unsigned int n, us;
			int err;

			vmr_rng_init(&rng, stress_opts.seed ^ 0x9e1d);
			n = one_in[vmr_rng_below(&rng, 4)];
			us = sleep_us[vmr_rng_below(&rng, 3)];
			printf("stress: yield at every debug point, one time "
			       "in %u, sleeps up to %u us\n", n, us);
			err = vmr_debug_yield((1u << VMR_DEBUG_POINTS_NR) - 1,
					      n, us, stress_opts.seed);
			if (err) {
				fprintf(stderr,
					"stress: vmr_debug_yield: %s\n",
					strerror(-err));
				return 1;
			}
		}
	}
	ret = stress_opts.uffd ? stress_uffd_phase() : stress_engine_phase();
	if (stress_opts.yield)
		vmr_debug_set(NULL, NULL);
	if (ret == 0 && stress_violations())
		ret = 1;
	if (ret == 1)
		stress_report(stress_opts.uffd ? "uffd" : "engine");
	else if (ret == 0)
		printf("stress: ok (seed %" PRIu64 ")\n", stress_opts.seed);
	return ret;
}
