/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * bench_uffd - userfaultfd page-in throughput: the libvmaretry runtime
 * against the floor (a hand-written handler that does nothing but the
 * kernel round trip) and a UMap-style handler.
 *
 * What is measured
 * ----------------
 * Pages per second of first-touch page-in through userfaultfd.  Each run
 * maps --pages anonymous private pages (MAP_NORESERVE, MADV_NOHUGEPAGE)
 * and registers them MISSING with the implementation's userfaultfd; then
 * --app-threads "application" threads touch every page once, each touch a
 * one-byte read, in a random order (one shuffle of all the pages, drawn
 * before any clock starts, cut into one contiguous share per thread; the
 * same order in every run).  Every touch faults, the kernel queues a
 * message on the userfaultfd and puts the thread to sleep, a handler
 * thread reads the message, asks the store for the page and installs it
 * with UFFDIO_COPY, which wakes the thread.  The app threads start
 * together on a barrier and each times itself; pages_per_s is the number
 * of pages over the span from the first start to the last finish.  Setting
 * up (mmap, the userfaultfd, the handler threads) and tearing down are not
 * timed.
 *
 * Implementations, each with the same store callback and --batch messages
 * per read() when it is given; by default the hand-written ones read 64,
 * and vmr leaves it to the runtime (64 with one handler thread, one with
 * several: lib/uffd_handler.c, DEFAULT_BATCH, says why and what the minimal
 * handler gains with --batch=1):
 *
 *   vmr        the library: vmr_space_create() + vmr_uffd_create() with
 *              .threads = n (everything else default: the runtime opens the
 *              userfaultfd with UFFD_USER_MODE_ONLY and asks for the
 *              non-cooperative events) + vmr_uffd_map(area, len,
 *              READ|WRITE, 0, VMR_UFFD_MISSING, store ops; with
 *              VMR_UFFD_FAST_STORE for the zero store, which never
 *              blocks, so the read is not retried around), so each fault
 *              goes through the region tree, the VMA-range lock, the page
 *              lock, the fault engine and the runtime's counters;
 *   vmr_no_events  the same with VMR_UFFD_NO_EVENTS: the runtime asks
 *              for no non-cooperative events (minimal and umap_like ask
 *              for none either), and so neither orders its reads nor
 *              keeps them out of installs (<vmaretry/uffd.h>, struct
 *              vmr_uffd_config): the like-for-like comparison with the
 *              two below;
 *   vmr_no_remove  the same with VMR_UFFD_NO_REMOVE: every event but
 *              REMOVE, so reads are still ordered but run beside
 *              installs (a discarded page reads the store again);
 *   minimal    the floor: n threads each poll() the one O_NONBLOCK
 *              userfaultfd (and a stop eventfd) and read() batches from
 *              it; for each page-fault message: the store read into a
 *              per-thread page buffer, UFFDIO_COPY (EEXIST: done, then
 *              UFFDIO_WAKE; EAGAIN: again), nothing else: no region
 *              lookup, no lock, no shared write of our own;
 *   minimal_remove  minimal made safe for REMOVE events the plain way,
 *              the hand-written counterpart of vmr, which asks for them:
 *              it asks for UFFD_FEATURE_EVENT_REMOVE, and a pthread rwlock
 *              (writers preferred) keeps reads and copies apart: a read()
 *              of messages holds it for writing and unregisters the range
 *              of each REMOVE it read before letting go, each copy holds
 *              it for reading (why: lib/uffd_excl.c);
 *              EAGAIN and ENOENT wake the faulting thread;
 *   umap_like  LLNL UMap v2's shape (reference/uffd.md 1.3-1.4): ONE
 *              reader thread polls and reads batches, aligns, sorts and
 *              dedups the addresses, looks each up in a sorted array of
 *              regions under one mutex (UMap's std::map + m_mutex, taken
 *              per fault), then under the one buffer mutex checks the
 *              page's state (absent: mark it filling and queue a work item
 *              on the one mutex+condvar queue of the fill workers, while
 *              still holding the buffer mutex, as UMap's
 *              process_page_event() does; filling: drop the duplicate,
 *              the COPY in flight wakes its thread; present: UFFDIO_WAKE);
 *              n fill workers pop work items, do the store read and
 *              UFFDIO_COPY (EEXIST: wake; EAGAIN: again) and mark the page
 *              present under the buffer mutex.  So handlers=n is n
 *              workers plus the reader.  It is kinder than UMap: no
 *              eviction, no page descriptors, a byte per page instead of
 *              an unordered_map, and no blocking wait on a filling page.
 *
 * minimal and umap_like open their userfaultfd the way the runtime does:
 * userfaultfd(O_CLOEXEC | O_NONBLOCK | UFFD_USER_MODE_ONLY), without
 * UFFD_USER_MODE_ONLY on kernels that refuse it, else /dev/userfaultfd;
 * UFFDIO_API asks for no features.
 *
 * Stores:
 *   zero   read() returns at once and writes nothing: the page is whatever
 *          the handler's buffer holds.  The figure is the round trip.
 *   sleep  read() sleeps --sleep-us (default 20) with nanosleep(), like a
 *          fast device, then writes the page's store offset into the first
 *          8 bytes of the buffer.  The whole process runs with a timer
 *          slack of 1 ns (PR_SET_TIMERSLACK, inherited by every thread,
 *          the runtime's too), so a 20 us sleep is not stretched by the
 *          default 50 us slack (on the development VMs it still takes
 *          about 50 us: timers are slow in the guest).  After each sleep
 *          run, untimed, every page is checked to hold its own offset: a
 *          wrong page kills the benchmark.
 *
 * Handler counts are 1, 2, 4, ... up to --max-handlers (default 8), which
 * is also counted if it is not a power of two.
 *
 * Pinning
 * -------
 * The 2-vCPU development VMs halt an idle vCPU at once, so waking a thread
 * on the other vCPU costs tens of microseconds (DESIGN.md, "Measuring
 * userfaultfd on these machines").  With --pin the whole process is pinned
 * to CPU 0 (the first CPU it may use) before any thread exists, as
 * `taskset -c 0` would, so every thread, the runtime's included, inherits
 * it; the app threads are never pinned individually.  Every line carries
 * pinned=0 or pinned=1: compare implementations only within one of them.
 *
 * Where the time goes at one pinned handler (2-vCPU VM, 2026-12-07; perf
 * record -e cpu-clock -F 20000, which samples in this guest where the
 * hardware counters do not, over --pin --max-handlers=1 --store=zero
 * --reps=5 --pages=32768 --impl=NAME; one sample is 0.3 ns a page): vmr
 * took 36366 samples where minimal took 34441 (5.6 % more; before the
 * page-word prefetch).  Kernel symbols moved both ways (the copy from the
 * handler's buffer +277, the context switch -302); the library's own
 * functions take about 1550 samples (470 ns a page), spread over the engine
 * (vmr_handle_fault() 89 ns, the range lock 45, the handler call 20, the
 * thread's state 20), the runtime (uffd_fault() 79, the message loop 77)
 * and the page lock (32 after the prefetch of the page word, 135 before
 * it).  The counters are not it: with every counter cut out by hand the
 * library's samples were 1504 against 1553 (medians of seven runs).
 * Minimal makes more system calls than vmr (a poll() and a read() per
 * batch, where vmr's handlers read until a read finds nothing).
 *
 * The overhead figure is noisier than the overhead.  Sixteen alternating
 * pairs of runs (--pin --max-handlers=1 --pages=32768 --store=zero,
 * --reps=9 then --reps=5; 2-vCPU VM, 2026-12-07) of the build before and
 * after prefetching a whole batch's page words (lib/uffd_fault.c, hint_set())
 * read overhead_pct_vs_minimal_1handler medians of 2.58 % (range -5.8 to
 * 6.3) before and 2.73 % (-3.1 to 5.1) after for vmr, 1.58 % and 2.02 %
 * for vmr_no_events, while perf counted the prefetch saving about 0.6 % of
 * the samples.  A change of a percent or less shows in perf samples, not
 * in pages per second.
 *
 * How
 * ---
 * Every figure is the median of --reps repetitions (default 3).  Each
 * repetition runs every store, handler count and implementation once, the
 * implementations in an order rotated by one at each repetition.  Each run
 * uses a fresh mapping, a fresh userfaultfd and fresh handler threads (for
 * vmr, a fresh space and runtime).  A watchdog thread bounds every run,
 * set-up and teardown included, by --timeout seconds (default 30): past
 * it, it prints what the run was doing, how many pages were touched and
 * the runtime's counters, and aborts the program.
 *
 * Output: one line per figure, e.g. (one line each)
 *   BENCH bench=uffd impl=vmr store=zero handlers=2 pinned=0
 *         metric=pages_per_s value=1.2e+05
 *   BENCH bench=uffd impl=vmr store=zero handlers=2 pinned=0
 *         metric=ratio_vs_minimal value=0.97
 *   ... metric=ratio_vs_minimal_remove, metric=ratio_vs_umap_like
 *   BENCH bench=uffd impl=minimal store=zero pinned=0
 *         metric=us_per_page_1handler value=8.1
 *   BENCH bench=uffd impl=vmr store=zero pinned=0
 *         metric=overhead_pct_vs_minimal_1handler value=1.5
 * where ratio_vs_<impl> is vmr's (or vmr_no_events', vmr_no_remove's)
 * pages/s over <impl>'s (medians): above 1 means the library wins;
 * us_per_page_1handler is the median of 1e6 / pages_per_s at one handler
 * (with several app threads faulting, the time one handler spends per
 * page, i.e. the amortised round trip); and
 * overhead_pct_vs_minimal_1handler is vmr's (vmr_no_events',
 * vmr_no_remove's) us_per_page_1handler over minimal's, minus 1, in
 * percent.  A progress line per repetition and a summary of each
 * implementation's counters go to stderr.
 *
 * Options: --pages=N (default 16384: 64 MiB, so that the default run takes
 * about 35 s on the development VMs; 65536, 256 MiB, takes about 2.5
 * minutes there, most of it in the sleep store), --app-threads=N
 * (4), --max-handlers=N (8), --reps=N (3), --sleep-us=N (20), --batch=N
 * (0: each implementation's own, see above), --timeout=S (30), --seed=N,
 * --pin, --impl=NAME (run only that implementation: no ratios),
 * --store=NAME (run only that store).  If
 * userfaultfd is refused (ENOSYS, EPERM) the program says so and exits 0
 * without figures.
 */
#include <vmaretry.h>
#include <vmaretry/uffd.h>

#include "bench.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#ifndef UFFD_USER_MODE_ONLY
#define UFFD_USER_MODE_ONLY 1
#endif
#ifndef USERFAULTFD_IOC_NEW
#define USERFAULTFD_IOC_NEW _IO(0xAA, 0x00)
#endif

#define CACHELINE 64

#define MAX_APPS 64
#define MAX_HANDLERS 64
#define MAX_REPS 64
#define MAX_COUNTS 8 /* 1, 2, 4, ... 64, and one more */
#define MAX_BATCH 1024
#define HW_BATCH 64 /* the hand-written handlers' batch by default */

/* ---- stores -------------------------------------------------------------- */

enum store_kind { STORE_ZERO, STORE_SLEEP, NR_STORES };

static const char *const store_names[NR_STORES] = { "zero", "sleep" };

struct store {
	enum store_kind kind;
	struct timespec sleep;
};

/* The store callback of every implementation (struct vmr_uffd_store_ops). */
static int store_read(void *opaque, uint64_t offset, void *buf, size_t len)
{
	struct store *s = opaque;
	struct timespec left;

	(void)len;
	if (s->kind == STORE_ZERO)
		return 0;
	left = s->sleep;
	while (nanosleep(&left, &left) && errno == EINTR)
		;
	memcpy(buf, &offset, sizeof(offset));
	return 0;
}

/* ---- the world: options and the touch order ------------------------------ */

struct world {
	size_t page;
	size_t pages;
	unsigned int apps;
	unsigned int batch;
	long timeout_s;
	bool pinned;
	uint32_t *order; /* every page index once, shuffled */
	struct store store[NR_STORES];
};

/* ---- one run ------------------------------------------------------------- */

struct run;

/* One application thread; padded so that no two share a cache line. */
struct app {
	pthread_t tid;
	struct run *run;
	const uint32_t *pages;
	size_t nr;
	uint64_t t0, t1;
	_Atomic size_t done; /* pages touched, for the watchdog */
} __attribute__((aligned(CACHELINE)));

/* What the hand-written handlers count; the runtime has its own. */
struct hw_counts {
	uint64_t messages;
	uint64_t batches;
	uint64_t empty; /* read() found nothing: another reader took it */
	uint64_t faults;
	uint64_t dups; /* umap_like: duplicates dropped by the reader */
	uint64_t copies;
	uint64_t eexist;
	uint64_t eagain;
	uint64_t wakes;
};

struct impl;

struct run {
	struct world *w;
	const struct impl *impl;
	struct store *store;
	unsigned int handlers;
	char *area;
	size_t len;
	pthread_barrier_t start;
	struct app app[MAX_APPS];
	void *priv;               /* the implementation's state */
	struct hw_counts counts;  /* minimal, umap_like: summed at teardown */
	struct vmr_uffd_stats st; /* vmr: read before teardown */
};

struct impl {
	const char *name;
	/* Register run->area and start the handlers; 0, or -errno. */
	int (*setup)(struct run *r);
	/* Stop the handlers and unregister; the area stays mapped. */
	void (*teardown)(struct run *r);
	unsigned int uffd_flags; /* ours: vmr_uffd_config.flags */
};

static bool refused(int err)
{
	return err == ENOSYS || err == EPERM;
}

static _Noreturn void exit_refused(const char *who, int err)
{
	fprintf(stderr,
		"bench_uffd: userfaultfd is refused here (%s: %s); "
		"no figures\n", who, strerror(err));
	exit(0);
}

/* One page, page-aligned: a handler's copy buffer. */
static void *page_alloc(size_t page)
{
	void *p = NULL;

	if (posix_memalign(&p, page, page))
		bench_die("posix_memalign", ENOMEM);
	memset(p, 0, page);
	return p;
}

/* ---- the watchdog -------------------------------------------------------- */

/*
 * One thread for the whole program, sleeping on a condvar: the main thread
 * arms it for each run and disarms it after the run's teardown; if a run
 * is still armed at its deadline, the watchdog prints what it was doing
 * and aborts.
 */
struct watchdog {
	pthread_mutex_t lock;
	pthread_cond_t cond; /* CLOCK_MONOTONIC */
	pthread_t tid;
	bool armed, quit;
	uint64_t start_ns, deadline_ns;
	const char *phase;
	char label[128];
	struct run *run;
	struct vmr_uffd *uffd; /* vmr runs, between create and destroy */
};

static struct watchdog wd;

static void wd_report(void)
{
	struct vmr_uffd_stats st;
	struct run *r = wd.run;
	size_t touched = 0;
	unsigned int t;

	for (t = 0; r && t < r->w->apps; t++)
		touched += atomic_load_explicit(&r->app[t].done,
						memory_order_relaxed);
	fprintf(stderr,
		"bench_uffd: FATAL: run %s is still going after %.1f s "
		"(limit %.0f s), in %s; %zu of %zu pages touched\n",
		wd.label, (double)(bench_now_ns() - wd.start_ns) / 1e9,
		(double)(wd.deadline_ns - wd.start_ns) / 1e9, wd.phase,
		touched, r ? r->w->pages : (size_t)0);
	if (wd.uffd && !vmr_uffd_stats(wd.uffd, &st, sizeof(st)))
		fprintf(stderr,
			"bench_uffd: runtime counters: messages=%llu "
			"batches=%llu faults=%llu coalesced=%llu copies=%llu "
			"zeropages=%llu poisoned=%llu wakes=%llu eexist=%llu "
			"eagain=%llu enoent=%llu esrch=%llu store_errors=%llu "
			"dead=%d\n",
			(unsigned long long)st.messages,
			(unsigned long long)st.batches,
			(unsigned long long)st.faults,
			(unsigned long long)st.coalesced,
			(unsigned long long)st.copies,
			(unsigned long long)st.zeropages,
			(unsigned long long)st.poisoned,
			(unsigned long long)st.wakes,
			(unsigned long long)st.eexist,
			(unsigned long long)st.eagain,
			(unsigned long long)st.enoent,
			(unsigned long long)st.esrch,
			(unsigned long long)st.store_errors,
			vmr_uffd_is_dead(wd.uffd));
	fprintf(stderr, "bench_uffd: aborting rather than hanging\n");
	abort();
}

static void *wd_main(void *arg)
{
	struct timespec ts;
	uint64_t now;

	(void)arg;
	pthread_mutex_lock(&wd.lock);
	while (!wd.quit) {
		if (!wd.armed) {
			pthread_cond_wait(&wd.cond, &wd.lock);
			continue;
		}
		now = bench_now_ns();
		if (now >= wd.deadline_ns)
			wd_report(); /* does not return */
		ts.tv_sec = (time_t)(wd.deadline_ns / 1000000000u);
		ts.tv_nsec = (long)(wd.deadline_ns % 1000000000u);
		pthread_cond_timedwait(&wd.cond, &wd.lock, &ts);
	}
	pthread_mutex_unlock(&wd.lock);
	return NULL;
}

static void wd_start(void)
{
	pthread_condattr_t attr;
	int err;

	pthread_mutex_init(&wd.lock, NULL);
	err = pthread_condattr_init(&attr);
	if (!err)
		err = pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
	if (!err)
		err = pthread_cond_init(&wd.cond, &attr);
	if (err)
		bench_die("pthread_cond_init", err);
	pthread_condattr_destroy(&attr);
	err = pthread_create(&wd.tid, NULL, wd_main, NULL);
	if (err)
		bench_die("pthread_create (watchdog)", err);
}

static void wd_stop(void)
{
	pthread_mutex_lock(&wd.lock);
	wd.quit = true;
	pthread_cond_signal(&wd.cond);
	pthread_mutex_unlock(&wd.lock);
	pthread_join(wd.tid, NULL);
}

static void wd_arm(struct run *r, int rep, long timeout_s)
{
	pthread_mutex_lock(&wd.lock);
	snprintf(wd.label, sizeof(wd.label),
		 "impl=%s store=%s handlers=%u (repetition %d)", r->impl->name,
		 store_names[r->store->kind], r->handlers, rep + 1);
	wd.run = r;
	wd.uffd = NULL;
	wd.phase = "set-up";
	wd.start_ns = bench_now_ns();
	wd.deadline_ns = wd.start_ns + (uint64_t)timeout_s * 1000000000u;
	wd.armed = true;
	pthread_cond_signal(&wd.cond);
	pthread_mutex_unlock(&wd.lock);
}

static void wd_phase(const char *phase)
{
	pthread_mutex_lock(&wd.lock);
	wd.phase = phase;
	pthread_mutex_unlock(&wd.lock);
}

static void wd_set_uffd(struct vmr_uffd *uffd)
{
	pthread_mutex_lock(&wd.lock);
	wd.uffd = uffd;
	pthread_mutex_unlock(&wd.lock);
}

static void wd_disarm(void)
{
	pthread_mutex_lock(&wd.lock);
	wd.armed = false;
	wd.run = NULL;
	wd.uffd = NULL;
	pthread_mutex_unlock(&wd.lock);
}

/* ---- a raw userfaultfd (minimal, umap_like) ------------------------------ */

/* Open as the runtime does; a descriptor, or -errno. */
static int uffd_open(void)
{
	int flags = O_CLOEXEC | O_NONBLOCK, fd, dev, err;

	fd = (int)syscall(SYS_userfaultfd, flags | UFFD_USER_MODE_ONLY);
	if (fd < 0 && errno == EINVAL) /* before 5.11 */
		fd = (int)syscall(SYS_userfaultfd, flags);
	if (fd >= 0 || !refused(errno))
		return fd >= 0 ? fd : -errno;
	err = errno;
	dev = open("/dev/userfaultfd", O_RDWR | O_CLOEXEC);
	if (dev < 0)
		return -err;
	fd = ioctl(dev, USERFAULTFD_IOC_NEW, flags | UFFD_USER_MODE_ONLY);
	if (fd < 0)
		fd = ioctl(dev, USERFAULTFD_IOC_NEW, flags);
	if (fd < 0)
		err = errno;
	close(dev);
	return fd >= 0 ? fd : -err;
}

/*
 * A userfaultfd after UFFDIO_API asking for @features; a descriptor, or
 * -errno (-EOPNOTSUPP if the kernel lacks one of them).
 */
static int uffd_create(uint64_t features)
{
	struct uffdio_api api;
	int fd = uffd_open(), err;

	if (fd < 0)
		return fd;
	memset(&api, 0, sizeof(api));
	api.api = UFFD_API;
	api.features = features;
	err = ioctl(fd, UFFDIO_API, &api) ? errno : 0;
	if (!err && (api.features & features) != features)
		err = EOPNOTSUPP;
	if (err) {
		close(fd);
		return -err;
	}
	return fd;
}

static void uffd_register(int fd, void *addr, size_t len)
{
	struct uffdio_register reg;

	memset(&reg, 0, sizeof(reg));
	reg.range.start = (uintptr_t)addr;
	reg.range.len = len;
	reg.mode = UFFDIO_REGISTER_MODE_MISSING;
	if (ioctl(fd, UFFDIO_REGISTER, &reg))
		bench_die("UFFDIO_REGISTER", errno);
	if (!(reg.ioctls & (1ull << _UFFDIO_COPY)))
		bench_die("UFFDIO_REGISTER: no UFFDIO_COPY here", EOPNOTSUPP);
}

static void uffd_unregister(int fd, void *addr, size_t len)
{
	struct uffdio_range range = { (uintptr_t)addr, len };

	if (ioctl(fd, UFFDIO_UNREGISTER, &range))
		bench_die("UFFDIO_UNREGISTER", errno);
}

static void uffd_wake(int fd, uintptr_t addr, size_t len, struct hw_counts *c)
{
	struct uffdio_range range = { addr, len };

	if (ioctl(fd, UFFDIO_WAKE, &range))
		bench_die("UFFDIO_WAKE", errno);
	c->wakes++;
}

/*
 * Install one page: UFFDIO_COPY, which wakes the faulting threads.  EEXIST:
 * another copy got there first; wake, in case a thread still sleeps.
 * EAGAIN (the layout is changing; the copy field is 0 or -EAGAIN): without
 * @excl again (no events are asked for, so nothing is left to read
 * first).  With @excl (minimal_remove) the copy holds it for reading, and
 * EAGAIN means an event is unread, which only a read under @excl for
 * writing takes: wake the thread, which faults again, rather than retry
 * (with one handler thread nobody else would read); ENOENT (a REMOVE
 * unregistered the range) wakes too, in case nothing did.
 */
static void uffd_copy(int fd, uintptr_t dst, const void *src, size_t len,
		      pthread_rwlock_t *excl, struct hw_counts *c)
{
	struct uffdio_copy cp;
	int ret, err;

	for (;;) {
		cp.dst = dst;
		cp.src = (uintptr_t)src;
		cp.len = len;
		cp.mode = 0;
		cp.copy = 0;
		if (excl)
			pthread_rwlock_rdlock(excl);
		ret = ioctl(fd, UFFDIO_COPY, &cp);
		err = errno;
		if (excl)
			pthread_rwlock_unlock(excl);
		if (!ret) {
			c->copies++;
			return;
		}
		if (err == EEXIST) {
			c->eexist++;
			break;
		}
		if (err == EAGAIN)
			c->eagain++;
		else if (err != ENOENT || !excl)
			bench_die("UFFDIO_COPY", err);
		if (excl)
			break;
	}
	uffd_wake(fd, dst, len, c);
}

/*
 * A REMOVE: unregister the range, so that the discarded memory reads zero
 * and copies for it fail (ENOENT); the kernel wakes its faulters.
 */
static void uffd_remove(int fd, const struct uffd_msg *msg)
{
	struct uffdio_range range = {
		.start = msg->arg.remove.start,
		.len = msg->arg.remove.end - msg->arg.remove.start,
	};

	if (ioctl(fd, UFFDIO_UNREGISTER, &range) && errno != ENOENT)
		bench_die("UFFDIO_UNREGISTER (REMOVE)", errno);
}

/*
 * Wait for messages or the stop eventfd, read a batch; the number of
 * messages, 0 if another reader took them, -1 to stop.  With @excl
 * (minimal_remove), the read() holds it for writing and so do the
 * REMOVEs it read, applied before it lets go.
 */
static int uffd_read_batch(int fd, int stopfd, struct uffd_msg *msgs,
			   unsigned int batch, pthread_rwlock_t *excl,
			   struct hw_counts *c)
{
	struct pollfd pfd[2] = {
		{ .fd = fd, .events = POLLIN },
		{ .fd = stopfd, .events = POLLIN },
	};
	ssize_t n, i;
	int err;

	if (poll(pfd, 2, -1) < 0) {
		if (errno == EINTR)
			return 0;
		bench_die("poll", errno);
	}
	if (pfd[1].revents)
		return -1;
	if (pfd[0].revents & (POLLERR | POLLNVAL))
		bench_die("poll: userfaultfd error", EIO);
	if (excl)
		pthread_rwlock_wrlock(excl);
	n = read(fd, msgs, batch * sizeof(*msgs));
	err = errno;
	if (excl) {
		for (i = 0; i < n / (ssize_t)sizeof(*msgs); i++)
			if (msgs[i].event == UFFD_EVENT_REMOVE)
				uffd_remove(fd, &msgs[i]);
		pthread_rwlock_unlock(excl);
	}
	if (n < 0) {
		if (err == EAGAIN || err == EINTR) {
			c->empty++;
			return 0;
		}
		bench_die("read (userfaultfd)", err);
	}
	if (n % (ssize_t)sizeof(*msgs))
		bench_die("read (userfaultfd): a partial message", EIO);
	c->batches++;
	c->messages += (uint64_t)n / sizeof(*msgs);
	return (int)((size_t)n / sizeof(*msgs));
}

/* State shared by minimal, minimal_remove and umap_like. */
struct hw;

enum hw_kind { HW_MINIMAL, HW_MINIMAL_REMOVE, HW_UMAP_LIKE };

struct hw_thread {
	pthread_t tid;
	struct hw *hw;
	void *buf;             /* one page: the store reads into it */
	struct uffd_msg *msgs; /* --batch messages */
	uintptr_t *addrs;      /* umap_like reader: the batch's pages */
	struct hw_counts c;
} __attribute__((aligned(CACHELINE)));

/* umap_like: a region of the region map. */
struct ul_region {
	uintptr_t start, end;
	uint64_t offset;
};

/* umap_like page states, one byte per page (UMap's Buffer). */
enum { PAGE_ABSENT, PAGE_FILLING, PAGE_PRESENT };

struct hw {
	enum hw_kind kind;
	int fd, stopfd;
	uintptr_t base;
	size_t page;
	unsigned int batch;
	unsigned int nr_threads;
	struct store *store;
	struct hw_thread *th;

	/* minimal_remove only: read() exclusive, copies shared */
	pthread_rwlock_t excl;

	/* umap_like only */
	pthread_mutex_t region_lock; /* UMap's RegionManager::m_mutex */
	struct ul_region *regions;   /* sorted by start */
	size_t nr_regions;
	pthread_mutex_t queue_lock; /* the fill workers' WorkQueue */
	pthread_cond_t queue_cond;
	uintptr_t *queue; /* ring of page addresses */
	size_t qhead, qtail, qcap;
	unsigned int idle;
	bool stop;
	pthread_mutex_t buffer_lock; /* UMap's Buffer mutex */
	uint8_t *pstate;
};

static void hw_store_read(struct hw *hw, uintptr_t addr, void *buf)
{
	if (store_read(hw->store, addr - hw->base, buf, hw->page))
		bench_die("store read", EIO);
}

/* ---- minimal and minimal_remove ------------------------------------------ */

/*
 * minimal: read a batch, read each fault's page from the store and copy it
 * in.  minimal_remove: the same, made safe for REMOVE events the plain
 * way: a read() of messages holds a rwlock for writing and applies the
 * batch's REMOVEs before it lets go, and each copy holds it for reading,
 * so no copy is in flight when a REMOVE is read (after which madvise()
 * zaps the range: a copy landing then would leave store data in discarded
 * memory), and every fault read after a REMOVE finds its range
 * unregistered.  Writers are preferred, or a stream of copies could keep
 * the reads out.
 */
static void *minimal_main(void *arg)
{
	struct hw_thread *th = arg;
	struct hw *hw = th->hw;
	bool removes = hw->kind == HW_MINIMAL_REMOVE;
	uintptr_t mask = ~(uintptr_t)(hw->page - 1), addr;
	int n, i;

	while ((n = uffd_read_batch(hw->fd, hw->stopfd, th->msgs, hw->batch,
				    removes ? &hw->excl : NULL,
				    &th->c)) >= 0) {
		for (i = 0; i < n; i++) {
			if (removes &&
			    th->msgs[i].event == UFFD_EVENT_REMOVE)
				continue; /* applied by the read */
			if (th->msgs[i].event != UFFD_EVENT_PAGEFAULT)
				bench_die("unexpected userfaultfd event",
					  EPROTO);
			th->c.faults++;
			addr = (uintptr_t)th->msgs[i].arg.pagefault.address &
			       mask;
			hw_store_read(hw, addr, th->buf);
			uffd_copy(hw->fd, addr, th->buf, hw->page,
				  removes ? &hw->excl : NULL, &th->c);
		}
	}
	return NULL;
}

/* ---- umap_like ----------------------------------------------------------- */

/* UMap's RegionManager::containing_region(): a lookup under the map's mutex. */
static const struct ul_region *ul_containing_region(struct hw *hw,
						    uintptr_t addr)
{
	const struct ul_region *found = NULL;
	size_t lo = 0, hi, mid;

	pthread_mutex_lock(&hw->region_lock);
	hi = hw->nr_regions;
	while (lo < hi) {
		mid = lo + (hi - lo) / 2;
		if (addr < hw->regions[mid].start) {
			hi = mid;
		} else if (addr >= hw->regions[mid].end) {
			lo = mid + 1;
		} else {
			found = &hw->regions[mid];
			break;
		}
	}
	pthread_mutex_unlock(&hw->region_lock);
	/* UMap, too, uses the pointer after unlocking (no unmap here). */
	return found;
}

static int cmp_uintptr(const void *a, const void *b)
{
	uintptr_t x = *(const uintptr_t *)a, y = *(const uintptr_t *)b;

	return x < y ? -1 : x > y;
}

/* Buffer::process_page_event(): the page's state, then a work item. */
static void ul_page_event(struct hw *hw, struct hw_thread *th, uintptr_t addr)
{
	size_t pg = (addr - hw->base) / hw->page;
	bool wake = false;

	pthread_mutex_lock(&hw->buffer_lock);
	switch (hw->pstate[pg]) {
	case PAGE_ABSENT:
		hw->pstate[pg] = PAGE_FILLING;
		/* WorkQueue::enqueue(), under the buffer mutex as in UMap. */
		pthread_mutex_lock(&hw->queue_lock);
		if (hw->qtail - hw->qhead == hw->qcap)
			bench_die("umap_like: work queue overflow", ENOSPC);
		hw->queue[hw->qtail++ % hw->qcap] = addr;
		if (hw->idle)
			pthread_cond_signal(&hw->queue_cond);
		pthread_mutex_unlock(&hw->queue_lock);
		break;
	case PAGE_FILLING:
		th->c.dups++; /* the copy in flight wakes its thread */
		break;
	default:
		wake = true; /* present already: a late duplicate */
		break;
	}
	pthread_mutex_unlock(&hw->buffer_lock);
	if (wake)
		uffd_wake(hw->fd, addr, hw->page, &th->c);
}

/* The one fault-monitor thread. */
static void *ul_reader_main(void *arg)
{
	struct hw_thread *th = arg;
	struct hw *hw = th->hw;
	uintptr_t mask = ~(uintptr_t)(hw->page - 1);
	int n, i, k;

	while ((n = uffd_read_batch(hw->fd, hw->stopfd, th->msgs, hw->batch,
				    NULL, &th->c)) >= 0) {
		for (i = k = 0; i < n; i++) {
			if (th->msgs[i].event != UFFD_EVENT_PAGEFAULT)
				bench_die("unexpected userfaultfd event",
					  EPROTO);
			th->addrs[k++] =
				(uintptr_t)th->msgs[i].arg.pagefault.address &
				mask;
		}
		th->c.faults += (uint64_t)k;
		qsort(th->addrs, (size_t)k, sizeof(*th->addrs), cmp_uintptr);
		for (i = 0; i < k; i++) {
			if (i && th->addrs[i] == th->addrs[i - 1]) {
				th->c.dups++;
				continue;
			}
			if (!ul_containing_region(hw, th->addrs[i]))
				bench_die("umap_like: a fault outside "
					  "every region", EFAULT);
			ul_page_event(hw, th, th->addrs[i]);
		}
	}
	return NULL;
}

/* A fill worker: WorkQueue::dequeue(), read, copy, mark present. */
static void *ul_worker_main(void *arg)
{
	struct hw_thread *th = arg;
	struct hw *hw = th->hw;
	uintptr_t addr;

	for (;;) {
		pthread_mutex_lock(&hw->queue_lock);
		while (hw->qhead == hw->qtail && !hw->stop) {
			hw->idle++;
			pthread_cond_wait(&hw->queue_cond, &hw->queue_lock);
			hw->idle--;
		}
		if (hw->qhead == hw->qtail) {
			pthread_mutex_unlock(&hw->queue_lock);
			return NULL;
		}
		addr = hw->queue[hw->qhead++ % hw->qcap];
		pthread_mutex_unlock(&hw->queue_lock);

		hw_store_read(hw, addr, th->buf);
		uffd_copy(hw->fd, addr, th->buf, hw->page, NULL, &th->c);
		pthread_mutex_lock(&hw->buffer_lock);
		hw->pstate[(addr - hw->base) / hw->page] = PAGE_PRESENT;
		pthread_mutex_unlock(&hw->buffer_lock);
	}
}

/* ---- set-up and teardown of the hand-written handlers -------------------- */

static int hw_setup(struct run *r, enum hw_kind kind)
{
	struct world *w = r->w;
	bool umap_like = kind == HW_UMAP_LIKE;
	unsigned int t, n = r->handlers + umap_like;
	pthread_rwlockattr_t attr;
	struct hw *hw;
	int err;

	hw = bench_alloc(sizeof(*hw));
	memset(hw, 0, sizeof(*hw));
	hw->kind = kind;
	hw->fd = uffd_create(kind == HW_MINIMAL_REMOVE ?
				     UFFD_FEATURE_EVENT_REMOVE : 0);
	if (hw->fd < 0) {
		err = hw->fd;
		free(hw);
		return err;
	}
	hw->stopfd = eventfd(0, EFD_CLOEXEC);
	if (hw->stopfd < 0)
		bench_die("eventfd", errno);
	hw->base = (uintptr_t)r->area;
	hw->page = w->page;
	hw->batch = w->batch ? w->batch : HW_BATCH;
	hw->store = r->store;
	hw->nr_threads = n;
	uffd_register(hw->fd, r->area, r->len);

	if (kind == HW_MINIMAL_REMOVE) {
		pthread_rwlockattr_init(&attr);
#ifdef __GLIBC__
		pthread_rwlockattr_setkind_np(
			&attr, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
#endif
		pthread_rwlock_init(&hw->excl, &attr);
		pthread_rwlockattr_destroy(&attr);
	}
	if (umap_like) {
		pthread_mutex_init(&hw->region_lock, NULL);
		pthread_mutex_init(&hw->queue_lock, NULL);
		pthread_cond_init(&hw->queue_cond, NULL);
		pthread_mutex_init(&hw->buffer_lock, NULL);
		hw->nr_regions = 1;
		hw->regions = bench_alloc(sizeof(*hw->regions));
		hw->regions[0].start = hw->base;
		hw->regions[0].end = hw->base + r->len;
		hw->regions[0].offset = 0;
		hw->qcap = w->pages; /* a page is queued at most once */
		hw->queue = bench_alloc(hw->qcap * sizeof(*hw->queue));
		hw->pstate = bench_alloc(w->pages);
		memset(hw->pstate, PAGE_ABSENT, w->pages);
	}

	hw->th = bench_alloc(n * sizeof(*hw->th));
	memset(hw->th, 0, n * sizeof(*hw->th));
	for (t = 0; t < n; t++) {
		hw->th[t].hw = hw;
		hw->th[t].buf = page_alloc(w->page);
		hw->th[t].msgs =
			bench_alloc(hw->batch * sizeof(struct uffd_msg));
		if (umap_like && t == 0)
			hw->th[t].addrs =
				bench_alloc(hw->batch * sizeof(uintptr_t));
	}
	r->priv = hw;
	for (t = 0; t < n; t++) {
		void *(*fn)(void *) = minimal_main;

		if (umap_like)
			fn = t == 0 ? ul_reader_main : ul_worker_main;
		err = pthread_create(&hw->th[t].tid, NULL, fn, &hw->th[t]);
		if (err)
			bench_die("pthread_create (handler)", err);
	}
	return 0;
}

static void hw_teardown(struct run *r)
{
	struct hw *hw = r->priv;
	uint64_t one = 1;
	unsigned int t;

	/* Wakes every poll() for good: the eventfd is never read. */
	if (write(hw->stopfd, &one, sizeof(one)) != (ssize_t)sizeof(one))
		bench_die("write (eventfd)", errno);
	if (hw->queue) {
		pthread_mutex_lock(&hw->queue_lock);
		hw->stop = true;
		pthread_cond_broadcast(&hw->queue_cond);
		pthread_mutex_unlock(&hw->queue_lock);
	}
	memset(&r->counts, 0, sizeof(r->counts));
	for (t = 0; t < hw->nr_threads; t++) {
		struct hw_counts *c = &hw->th[t].c;

		pthread_join(hw->th[t].tid, NULL);
		r->counts.messages += c->messages;
		r->counts.batches += c->batches;
		r->counts.empty += c->empty;
		r->counts.faults += c->faults;
		r->counts.dups += c->dups;
		r->counts.copies += c->copies;
		r->counts.eexist += c->eexist;
		r->counts.eagain += c->eagain;
		r->counts.wakes += c->wakes;
		free(hw->th[t].buf);
		free(hw->th[t].msgs);
		free(hw->th[t].addrs);
	}
	uffd_unregister(hw->fd, r->area, r->len);
	close(hw->fd);
	if (hw->kind == HW_MINIMAL_REMOVE)
		pthread_rwlock_destroy(&hw->excl);
	close(hw->stopfd);
	if (hw->queue) {
		pthread_mutex_destroy(&hw->region_lock);
		pthread_mutex_destroy(&hw->queue_lock);
		pthread_cond_destroy(&hw->queue_cond);
		pthread_mutex_destroy(&hw->buffer_lock);
		free(hw->regions);
		free(hw->queue);
		free(hw->pstate);
	}
	free(hw->th);
	free(hw);
	r->priv = NULL;
}

static int minimal_setup(struct run *r)
{
	return hw_setup(r, HW_MINIMAL);
}

static int minimal_remove_setup(struct run *r)
{
	return hw_setup(r, HW_MINIMAL_REMOVE);
}

static int umap_like_setup(struct run *r)
{
	return hw_setup(r, HW_UMAP_LIKE);
}

/* ---- vmr ----------------------------------------------------------------- */

struct vmr_state {
	struct vmr_space *space;
	struct vmr_uffd *uffd;
};

static const struct vmr_uffd_store_ops store_ops = {
	.read = store_read,
};

static int vmr_setup(struct run *r)
{
	const struct rcu_flavor_struct *flavor;
	struct vmr_uffd_config cfg;
	struct vmr_state *vs;
	int err;

	vs = bench_alloc(sizeof(*vs));
	memset(vs, 0, sizeof(*vs));
	err = vmr_space_create(NULL, 0, &vs->space);
	if (err)
		bench_die("vmr_space_create", -err);
	err = vmr_space_register_thread(vs->space);
	if (err)
		bench_die("vmr_space_register_thread", -err);
	memset(&cfg, 0, sizeof(cfg));
	cfg.threads = r->handlers;
	cfg.batch = r->w->batch; /* 0: the runtime's default */
	cfg.fd = -1;
	cfg.flags = r->impl->uffd_flags;
	err = vmr_uffd_create(vs->space, &cfg, sizeof(cfg), &vs->uffd);
	if (err) {
		if (!refused(-err))
			bench_die("vmr_uffd_create", -err);
		flavor = vmr_space_flavor(vs->space);
		vmr_space_destroy(vs->space);
		vmr_rcu_unregister_thread(flavor);
		free(vs);
		return err;
	}
	wd_set_uffd(vs->uffd);
	/* A store that never blocks says so: no retry around its read. */
	err = vmr_uffd_map(vs->uffd, r->area, r->len,
			   VMR_PROT_READ | VMR_PROT_WRITE, 0,
			   VMR_UFFD_MISSING |
				   (r->store->kind == STORE_ZERO ?
					    VMR_UFFD_FAST_STORE : 0),
			   &store_ops, sizeof(store_ops), r->store);
	if (err)
		bench_die("vmr_uffd_map", -err);
	r->priv = vs;
	return 0;
}

static void vmr_teardown(struct run *r)
{
	struct vmr_state *vs = r->priv;
	const struct rcu_flavor_struct *flavor = vmr_space_flavor(vs->space);
	int err;

	err = vmr_uffd_stats(vs->uffd, &r->st, sizeof(r->st));
	if (err)
		bench_die("vmr_uffd_stats", -err);
	wd_set_uffd(NULL);
	err = vmr_uffd_destroy(vs->uffd);
	if (err)
		bench_die("vmr_uffd_destroy", -err);
	err = vmr_space_destroy(vs->space);
	if (err)
		bench_die("vmr_space_destroy", -err);
	vmr_rcu_unregister_thread(flavor); /* the space is gone */
	free(vs);
	r->priv = NULL;
}

/* Ours (the library's) first, NR_OURS of them: every ratio is of one of
 * them over one of the others. */
static const struct impl impls[] = {
	{ "vmr", vmr_setup, vmr_teardown, 0 },
	{ "vmr_no_events", vmr_setup, vmr_teardown, VMR_UFFD_NO_EVENTS },
	{ "vmr_no_remove", vmr_setup, vmr_teardown, VMR_UFFD_NO_REMOVE },
	{ "minimal", minimal_setup, hw_teardown, 0 },
	{ "minimal_remove", minimal_remove_setup, hw_teardown, 0 },
	{ "umap_like", umap_like_setup, hw_teardown, 0 },
};

#define NR_IMPLS (sizeof(impls) / sizeof(impls[0]))
#define NR_OURS 3u
#define IMPL_MINIMAL 3u

/* ---- running one repetition ---------------------------------------------- */

static void *app_main(void *arg)
{
	struct app *a = arg;
	const size_t page = a->run->w->page;
	const char *area = a->run->area;
	size_t i;

	pthread_barrier_wait(&a->run->start);
	a->t0 = bench_now_ns();
	for (i = 0; i < a->nr; i++) {
		(void)*(const volatile char *)(area +
					       (size_t)a->pages[i] * page);
		atomic_store_explicit(&a->done, i + 1, memory_order_relaxed);
	}
	a->t1 = bench_now_ns();
	return NULL;
}

/* store=sleep: every page holds its own store offset (untimed). */
static void check_contents(const struct run *r)
{
	size_t pg, bad = 0, first = 0;
	uint64_t v, first_v = 0;

	if (r->store->kind != STORE_SLEEP)
		return;
	for (pg = 0; pg < r->w->pages; pg++) {
		memcpy(&v, r->area + pg * r->w->page, sizeof(v));
		if (v == (uint64_t)pg * r->w->page)
			continue;
		if (!bad++) {
			first = pg;
			first_v = v;
		}
	}
	if (bad) {
		fprintf(stderr,
			"bench_uffd: impl=%s store=sleep handlers=%u: %zu "
			"pages hold the wrong contents (first: page %zu holds "
			"%#llx, not %#llx)\n",
			r->impl->name, r->handlers, bad, first,
			(unsigned long long)first_v,
			(unsigned long long)first * r->w->page);
		exit(1);
	}
}

/*
 * The runtime's error counters must stay 0 in this benchmark, and no page
 * is installed twice.  (copies may read one or two short of the pages: the
 * counters are read once the app threads are done, and a handler counts
 * its last copy after the ioctl that woke the last app thread returned.)
 */
static void check_vmr_stats(const struct run *r)
{
	const struct vmr_uffd_stats *st = &r->st;

	if (st->poisoned || st->store_errors || st->enoent || st->esrch ||
	    st->copies > r->w->pages)
		fprintf(stderr,
			"bench_uffd: WARNING: impl=%s store=%s handlers=%u: "
			"poisoned=%llu store_errors=%llu enoent=%llu "
			"esrch=%llu copies=%llu (pages=%zu)\n",
			r->impl->name, store_names[r->store->kind], r->handlers,
			(unsigned long long)st->poisoned,
			(unsigned long long)st->store_errors,
			(unsigned long long)st->enoent,
			(unsigned long long)st->esrch,
			(unsigned long long)st->copies, r->w->pages);
}

/**
 * run_rep() - one timed run of one implementation
 * @w: the world
 * @impl: the implementation
 * @store: the store
 * @handlers: handler threads
 * @rep: the repetition, for messages
 * @r: the run (caller's storage: big); receives the counters
 *
 * Return: pages per second.  Exits the program if userfaultfd is refused.
 */
static double run_rep(struct world *w, const struct impl *impl,
		      struct store *store, unsigned int handlers, int rep,
		      struct run *r)
{
	uint64_t first = UINT64_MAX, last = 0;
	size_t share = w->pages / w->apps, at = 0;
	unsigned int t;
	int err;

	memset(r, 0, sizeof(*r));
	r->w = w;
	r->impl = impl;
	r->store = store;
	r->handlers = handlers;
	r->len = w->pages * w->page;
	wd_arm(r, rep, w->timeout_s);

	r->area = mmap(NULL, r->len, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (r->area == MAP_FAILED)
		bench_die("mmap", errno);
	madvise(r->area, r->len, MADV_NOHUGEPAGE); /* 4 KiB faults only */
	err = impl->setup(r);
	if (err) {
		if (refused(-err))
			exit_refused(impl->name, -err);
		bench_die("set-up", -err);
	}

	err = pthread_barrier_init(&r->start, NULL, w->apps + 1);
	if (err)
		bench_die("pthread_barrier_init", err);
	for (t = 0; t < w->apps; t++) {
		struct app *a = &r->app[t];

		a->run = r;
		a->pages = w->order + at;
		a->nr = t + 1 == w->apps ? w->pages - at : share;
		at += a->nr;
		atomic_init(&a->done, 0);
		err = pthread_create(&a->tid, NULL, app_main, a);
		if (err)
			bench_die("pthread_create (app)", err);
	}
	wd_phase("touching pages");
	pthread_barrier_wait(&r->start);
	for (t = 0; t < w->apps; t++) {
		pthread_join(r->app[t].tid, NULL);
		first = r->app[t].t0 < first ? r->app[t].t0 : first;
		last = r->app[t].t1 > last ? r->app[t].t1 : last;
	}
	pthread_barrier_destroy(&r->start);

	wd_phase("checking contents");
	check_contents(r);
	wd_phase("teardown");
	impl->teardown(r);
	if (munmap(r->area, r->len))
		bench_die("munmap", errno);
	wd_disarm();
	if (impl < impls + NR_OURS)
		check_vmr_stats(r);
	if (last <= first)
		bench_die("a run took no time", EIO);
	return (double)w->pages * 1e9 / (double)(last - first);
}

/* ---- figures ------------------------------------------------------------- */

struct results {
	unsigned int nr_counts;
	unsigned int counts[MAX_COUNTS];
	int reps;
	bool on[NR_IMPLS];
	bool store_on[NR_STORES];
	double pps[NR_STORES][MAX_COUNTS][NR_IMPLS][MAX_REPS];
	/* counters summed over every run of an implementation */
	struct hw_counts hw[NR_IMPLS];
	struct vmr_uffd_stats st[NR_OURS];
	uint64_t runs[NR_IMPLS];
};

static double cell_median(const struct results *res, unsigned int s,
			  unsigned int k, unsigned int i)
{
	double v[MAX_REPS];
	int rep;

	for (rep = 0; rep < res->reps; rep++)
		v[rep] = res->pps[s][k][i][rep];
	return bench_median(v, (size_t)res->reps);
}

/* Median over the repetitions of 1e6 / pages_per_s at one handler. */
static double us_per_page_1(const struct results *res, unsigned int s,
			    unsigned int i)
{
	double v[MAX_REPS];
	int rep;

	for (rep = 0; rep < res->reps; rep++)
		v[rep] = 1e6 / res->pps[s][0][i][rep];
	return bench_median(v, (size_t)res->reps);
}

static void print_figures(const struct world *w, const struct results *res)
{
	char keys[64], metric[64];
	double m[MAX_COUNTS][NR_IMPLS];
	unsigned int s, k, i, o;

	for (s = 0; s < NR_STORES; s++) {
		if (!res->store_on[s])
			continue;
		for (k = 0; k < res->nr_counts; k++) {
			snprintf(keys, sizeof(keys),
				 "store=%s handlers=%u pinned=%d",
				 store_names[s], res->counts[k], w->pinned);
			for (i = 0; i < NR_IMPLS; i++) {
				if (!res->on[i])
					continue;
				m[k][i] = cell_median(res, s, k, i);
				bench_print("uffd", impls[i].name, keys,
					    "pages_per_s", m[k][i]);
			}
			for (o = 0; o < NR_OURS; o++) {
				for (i = NR_OURS; i < NR_IMPLS; i++) {
					if (!res->on[o] || !res->on[i])
						continue;
					snprintf(metric, sizeof(metric),
						 "ratio_vs_%s", impls[i].name);
					bench_print("uffd", impls[o].name, keys,
						    metric, m[k][o] / m[k][i]);
				}
			}
		}
	}
	/* Only the 1-handler runs, when 1 is a count (it always is). */
	for (s = 0; s < NR_STORES; s++) {
		if (!res->store_on[s])
			continue;
		snprintf(keys, sizeof(keys), "store=%s pinned=%d",
			 store_names[s], w->pinned);
		for (i = 0; i < NR_IMPLS; i++) {
			if (res->on[i])
				bench_print("uffd", impls[i].name, keys,
					    "us_per_page_1handler",
					    us_per_page_1(res, s, i));
		}
		for (o = 0; o < NR_OURS; o++) {
			if (!res->on[o] || !res->on[IMPL_MINIMAL])
				continue;
			bench_print("uffd", impls[o].name, keys,
				    "overhead_pct_vs_minimal_1handler",
				    (us_per_page_1(res, s, o) /
					     us_per_page_1(res, s,
							   IMPL_MINIMAL) -
				     1) * 100);
		}
	}
}

static void print_counters(const struct results *res)
{
	const struct vmr_uffd_stats *st;
	const struct hw_counts *c;
	unsigned int i;

	for (i = 0; i < NR_OURS; i++) {
		if (!res->on[i])
			continue;
		st = &res->st[i];
		fprintf(stderr,
			"bench_uffd: impl=%s counters over %llu runs: "
			"messages=%llu batches=%llu faults=%llu coalesced=%llu "
			"copies=%llu zeropages=%llu poisoned=%llu wakes=%llu "
			"eexist=%llu eagain=%llu enoent=%llu esrch=%llu "
			"store_errors=%llu\n",
			impls[i].name, (unsigned long long)res->runs[i],
			(unsigned long long)st->messages,
			(unsigned long long)st->batches,
			(unsigned long long)st->faults,
			(unsigned long long)st->coalesced,
			(unsigned long long)st->copies,
			(unsigned long long)st->zeropages,
			(unsigned long long)st->poisoned,
			(unsigned long long)st->wakes,
			(unsigned long long)st->eexist,
			(unsigned long long)st->eagain,
			(unsigned long long)st->enoent,
			(unsigned long long)st->esrch,
			(unsigned long long)st->store_errors);
	}
	for (i = NR_OURS; i < NR_IMPLS; i++) {
		if (!res->on[i])
			continue;
		c = &res->hw[i];
		fprintf(stderr,
			"bench_uffd: impl=%s counters over %llu runs: "
			"messages=%llu batches=%llu empty_reads=%llu "
			"faults=%llu dups=%llu copies=%llu wakes=%llu "
			"eexist=%llu eagain=%llu\n",
			impls[i].name, (unsigned long long)res->runs[i],
			(unsigned long long)c->messages,
			(unsigned long long)c->batches,
			(unsigned long long)c->empty,
			(unsigned long long)c->faults,
			(unsigned long long)c->dups,
			(unsigned long long)c->copies,
			(unsigned long long)c->wakes,
			(unsigned long long)c->eexist,
			(unsigned long long)c->eagain);
	}
}

static void add_counters(struct results *res, unsigned int i,
			 const struct run *r)
{
	struct hw_counts *c = &res->hw[i];
	struct vmr_uffd_stats *st;

	res->runs[i]++;
	if (i < NR_OURS) {
		st = &res->st[i];
		st->messages += r->st.messages;
		st->batches += r->st.batches;
		st->faults += r->st.faults;
		st->coalesced += r->st.coalesced;
		st->copies += r->st.copies;
		st->zeropages += r->st.zeropages;
		st->poisoned += r->st.poisoned;
		st->wakes += r->st.wakes;
		st->eexist += r->st.eexist;
		st->eagain += r->st.eagain;
		st->enoent += r->st.enoent;
		st->esrch += r->st.esrch;
		st->store_errors += r->st.store_errors;
		return;
	}
	c->messages += r->counts.messages;
	c->batches += r->counts.batches;
	c->empty += r->counts.empty;
	c->faults += r->counts.faults;
	c->dups += r->counts.dups;
	c->copies += r->counts.copies;
	c->eexist += r->counts.eexist;
	c->eagain += r->counts.eagain;
	c->wakes += r->counts.wakes;
}

/*
 * Each repetition runs every store, handler count and implementation once;
 * the implementations' order rotates by one per repetition.
 */
static void measure(struct world *w, struct results *res)
{
	struct run *r = bench_alloc(sizeof(*r));
	unsigned int s, k, j, i;
	uint64_t t0;
	int rep;

	for (rep = 0; rep < res->reps; rep++) {
		t0 = bench_now_ns();
		for (s = 0; s < NR_STORES; s++) {
			if (!res->store_on[s])
				continue;
			for (k = 0; k < res->nr_counts; k++) {
				for (j = 0; j < NR_IMPLS; j++) {
					i = (j + (unsigned int)rep) % NR_IMPLS;
					if (!res->on[i])
						continue;
					res->pps[s][k][i][rep] = run_rep(
						w, &impls[i], &w->store[s],
						res->counts[k], rep, r);
					add_counters(res, i, r);
				}
			}
		}
		fprintf(stderr, "bench_uffd: repetition %d/%d took %.1f s\n",
			rep + 1, res->reps,
			(double)(bench_now_ns() - t0) / 1e9);
	}
	free(r);
}

int main(int argc, char **argv)
{
	long pages = bench_opt(argc, argv, "pages", 16384);
	long apps = bench_opt(argc, argv, "app-threads", 4);
	long max_handlers = bench_opt(argc, argv, "max-handlers", 8);
	long reps = bench_opt(argc, argv, "reps", 3);
	long sleep_us = bench_opt(argc, argv, "sleep-us", 20);
	long batch = bench_opt(argc, argv, "batch", 0);
	long timeout_s = bench_opt(argc, argv, "timeout", 30);
	uint64_t rng = (uint64_t)bench_opt(argc, argv, "seed", 0x0ffd5eed);
	const char *only = bench_opt_str(argc, argv, "impl", NULL);
	const char *only_store = bench_opt_str(argc, argv, "store", NULL);
	long sys_page = sysconf(_SC_PAGESIZE);
	struct results *res;
	struct world w;
	unsigned int n, i;
	size_t p, q;
	uint32_t tmp;
	int fd, cpu;

	memset(&w, 0, sizeof(w));
	w.pinned = bench_flag(argc, argv, "pin");
	if (pages < 1 || pages > UINT32_MAX || apps < 1 || apps > MAX_APPS ||
	    apps > pages || max_handlers < 1 || max_handlers > MAX_HANDLERS ||
	    reps < 1 || reps > MAX_REPS || sleep_us < 0 || batch < 0 ||
	    batch > MAX_BATCH || timeout_s < 1) {
		fprintf(stderr,
			"usage: %s [--pages=N] [--app-threads=1..%d] "
			"[--max-handlers=1..%d] [--reps=1..%d] "
			"[--sleep-us=N] [--batch=0..%d] [--timeout=S] "
			"[--seed=N] [--pin] [--impl=NAME] "
			"[--store=zero|sleep]\n",
			argv[0], MAX_APPS, MAX_HANDLERS, MAX_REPS, MAX_BATCH);
		return 2;
	}
	res = bench_alloc(sizeof(*res));
	memset(res, 0, sizeof(*res));
	for (i = 0; i < NR_IMPLS; i++)
		res->on[i] = !only || !strcmp(only, impls[i].name);
	for (i = 0; i < NR_IMPLS && !res->on[i]; i++)
		;
	if (i == NR_IMPLS) {
		fprintf(stderr, "bench_uffd: no implementation named %s\n",
			only);
		return 2;
	}
	for (i = 0; i < NR_STORES; i++)
		res->store_on[i] = !only_store ||
				   !strcmp(only_store, store_names[i]);
	for (i = 0; i < NR_STORES && !res->store_on[i]; i++)
		;
	if (i == NR_STORES) {
		fprintf(stderr, "bench_uffd: no store named %s\n",
			only_store);
		return 2;
	}

	/* Before any thread exists, so that every thread inherits both. */
	if (w.pinned) {
		cpu = bench_pin_process(0);
		if (cpu < 0)
			bench_die("pinning to CPU 0", -cpu);
		fprintf(stderr, "bench_uffd: pinned to CPU %d\n", cpu);
	}
	if (prctl(PR_SET_TIMERSLACK, 1ul, 0ul, 0ul, 0ul))
		bench_die("prctl(PR_SET_TIMERSLACK)", errno);

	fd = uffd_create(0);
	if (fd < 0) {
		if (refused(-fd))
			exit_refused("userfaultfd", -fd);
		bench_die("userfaultfd", -fd);
	}
	close(fd);

	w.page = sys_page > 0 ? (size_t)sys_page : 4096;
	w.pages = (size_t)pages;
	w.apps = (unsigned int)apps;
	w.batch = (unsigned int)batch;
	w.timeout_s = timeout_s;
	w.store[STORE_ZERO].kind = STORE_ZERO;
	w.store[STORE_SLEEP].kind = STORE_SLEEP;
	w.store[STORE_SLEEP].sleep.tv_sec = sleep_us / 1000000;
	w.store[STORE_SLEEP].sleep.tv_nsec = sleep_us % 1000000 * 1000;
	w.order = bench_alloc(w.pages * sizeof(*w.order));
	for (p = 0; p < w.pages; p++)
		w.order[p] = (uint32_t)p;
	for (p = w.pages - 1; p > 0; p--) { /* Fisher-Yates */
		q = (size_t)(bench_rand(&rng) % (p + 1));
		tmp = w.order[p];
		w.order[p] = w.order[q];
		w.order[q] = tmp;
	}

	res->reps = (int)reps;
	for (n = 1; n < (unsigned int)max_handlers; n *= 2)
		res->counts[res->nr_counts++] = n;
	res->counts[res->nr_counts++] = (unsigned int)max_handlers;

	wd_start();
	measure(&w, res);
	wd_stop();
	print_figures(&w, res);
	print_counters(res);
	free(w.order);
	free(res);
	return 0;
}
