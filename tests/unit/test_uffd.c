/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The userfaultfd runtime, on real userfaultfd: creation and its
 * arguments, features and handed-in descriptors; destroy, alone, across a
 * store read and during a fault storm; map and unmap and their refusals;
 * page contents under many faulting threads, handler counts, retry policies
 * and lock granularities, with the space's and the runtime's counters;
 * duplicate faults on one page; REMOVE, UNMAP, REMAP and FORK events racing
 * faults; EEXIST, EAGAIN and ENOENT forced on purpose; store errors and
 * forbidden accesses, which end in SIGBUS.
 *
 * Where the kernel refuses userfaultfd (vmr_uffd_create() answers -ENOSYS
 * or -EPERM) each test says so on stderr and passes: Check has no skip.
 *
 * Pages are only ever touched by worker threads (struct toucher), never by
 * the test thread, unless they are known to be present: a fault the
 * runtime never resolves would hang the test.  Touchers record what each
 * page held (struct seen); the test thread joins them with a deadline and
 * asserts.  The store's contents are a function of (offset, word) with no
 * zero byte, so a page from the wrong offset, a zero page, a torn page or
 * garbage all show; a page may also hold the test's own MARKER.
 *
 * A store read can be held at a gate (struct store), so that a test knows
 * where the runtime is: a fault is under way, its handler thread busy.
 * Waits that must end are bounded (vmr_test_join(), VMR_WAIT_FOR(), the
 * store gate's own limit), and each TCase has a timeout as a last resort.
 *
 * The store, the areas, the look at a page and the runtime's helpers are
 * shared with test_uffd_race.c: uffd_harness.h.
 */
#include "mm.h"
#include "uffd_harness.h"
#include "vmr_test.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <urcu/urcu-memb.h>

#ifndef UFFD_USER_MODE_ONLY
#define UFFD_USER_MODE_ONLY 1
#endif
#ifndef UFFD_FEATURE_POISON
#define UFFD_FEATURE_POISON (1ull << 14)
#endif

/* The events the runtime asks for wherever the kernel has them. */
#define EVENTS                                                                 \
	(UFFD_FEATURE_EVENT_REMOVE | UFFD_FEATURE_EVENT_UNMAP |               \
	 UFFD_FEATURE_EVENT_REMAP)
/* How long a thread or a wait that must end may take. */
#define DEADLINE_S 20.0
/* How long a wake the test expects within milliseconds may take. */
#define QUICK_S 2.0
/* Long enough for a started thread to reach its sleep. */
#define SETTLE_S 0.05

static const enum vmr_retry_policy policies[] = {
	VMR_RETRY_SPACE,
	VMR_RETRY_VMA,
	VMR_HOLD_IO,
};
#define NR_POLICIES ((int)VMR_ARRAY_SIZE(policies))

/* ---- the store's gate and failures ------------------------------------- */

static bool store_fails(uint64_t off)
{
	return store.fail_every && (off / pg) % store.fail_every == 0;
}

/* Hold reads of the page at store offset @off at the gate. */
static void close_gate(uint64_t off)
{
	store.gate_off = off;
	atomic_store(&store.gate_open, false);
	atomic_store(&store.at_gate, 0);
}

/* Wait until @n reads reached the gate. */
static void wait_at_gate(unsigned int n)
{
	bool ok;

	VMR_WAIT_FOR(ok, atomic_load(&store.at_gate) >= n, DEADLINE_S);
	ck_assert_msg(ok, "the store read never reached its gate");
}

static void open_gate(void)
{
	atomic_store(&store.gate_open, true);
}

/* ---- areas: what a page may read ----------------------------------------- */

/* Record @a's removals (remover_main() marks a page before it removes it);
 * teardown frees the marks. */
static void track_removals(struct area *a)
{
	a->removed = calloc(a->pages, sizeof(*a->removed));
	ck_assert_ptr_nonnull(a->removed);
}

/* Whether @v is a view page @i of @a may show. */
static bool allowed(const struct area *a, size_t i, enum view v)
{
	uint64_t off = a->offset + i * pg;
	bool removed = a->removed && atomic_load(&a->removed[i]);
	bool poison = can_poison;

	switch (v) {
	case VIEW_STORE:
		return !store_fails(off);
	case VIEW_ZERO:
		/* Where the kernel cannot poison, a failed page is zero. */
		return removed || a->may_zero || (store_fails(off) && !poison);
	case VIEW_MIXED:
		return removed;
	case VIEW_MARKER:
		return a->marker_ok;
	case VIEW_SIGBUS:
		return (store_fails(off) && poison) || a->poison_ok == i + 1;
	default:
		return false;
	}
}

/* ---- touchers ------------------------------------------------------------ */

struct target {
	struct area *a;
	size_t page;
};

/* What touchers saw; the test thread reads it after the join. */
struct seen {
	uint64_t views[NR_VIEWS];
	uint64_t wrong; /* views not allowed() */
	uintptr_t wrong_addr;
	enum view wrong_view;
};

/*
 * What touchers do: each touches every target (in its own random order if
 * @shuffle; every other touch a write if @writes), meeting the others
 * before each target if @lockstep; once, or until @stop is set.
 */
struct plan {
	const struct target *targets;
	size_t nr;
	bool shuffle;
	bool writes;
	pthread_barrier_t *lockstep;
	atomic_bool *stop;
};

struct toucher {
	pthread_t thread;
	const struct plan *plan;
	uint64_t seed;
	atomic_bool done;
	struct seen seen;
};

static void record(struct seen *s, const struct target *t, enum view v)
{
	s->views[v]++;
	if (!allowed(t->a, t->page, v)) {
		if (!s->wrong++) {
			s->wrong_addr = page_addr(t->a, t->page);
			s->wrong_view = v;
		}
	}
}

static void touch(struct seen *s, const struct target *t, bool write)
{
	record(s, t,
	       look(page_addr(t->a, t->page), t->a->offset + t->page * pg,
		    write));
}

static void *toucher_main(void *arg)
{
	struct toucher *t = arg;
	const struct plan *p = t->plan;
	struct target *order = malloc(p->nr * sizeof(*order));
	struct vmr_rng rng;

	vmr_rng_init(&rng, t->seed);
	if (!order) {
		t->seen.wrong++;
		atomic_store(&t->done, true);
		return NULL;
	}
	memcpy(order, p->targets, p->nr * sizeof(*order));
	do {
		for (size_t i = p->nr; p->shuffle && i > 1; i--) {
			size_t j = vmr_rng_below(&rng, i);
			struct target x = order[i - 1];

			order[i - 1] = order[j];
			order[j] = x;
		}
		for (size_t i = 0; i < p->nr; i++) {
			if (p->lockstep)
				pthread_barrier_wait(p->lockstep);
			touch(&t->seen, &order[i], p->writes && (i & 1));
		}
	} while (p->stop && !atomic_load(p->stop));
	free(order);
	atomic_store(&t->done, true);
	return NULL;
}

static void start_touchers(struct toucher *t, size_t n, const struct plan *p)
{
	for (size_t i = 0; i < n; i++) {
		memset(&t[i], 0, sizeof(t[i]));
		t[i].plan = p;
		t[i].seed = vmr_test_seed() * 31 + i;
		atomic_init(&t[i].done, false);
		ck_assert_int_eq(pthread_create(&t[i].thread, NULL,
						toucher_main, &t[i]),
				 0);
	}
}

/* Join @n touchers within @seconds in all; add up what they saw. */
static struct seen join_touchers(struct toucher *t, size_t n, double seconds)
{
	double end = vmr_test_now() + seconds;
	struct seen sum;

	memset(&sum, 0, sizeof(sum));
	for (size_t i = 0; i < n; i++) {
		int err = vmr_test_join(t[i].thread, end - vmr_test_now());

		ck_assert_msg(!err,
			      "toucher %zu still faulting after %.0f s "
			      "(error %d): a fault was never resolved",
			      i, seconds, err);
		for (int v = 0; v < NR_VIEWS; v++)
			sum.views[v] += t[i].seen.views[v];
		if (t[i].seen.wrong && !sum.wrong) {
			sum.wrong_addr = t[i].seen.wrong_addr;
			sum.wrong_view = t[i].seen.wrong_view;
		}
		sum.wrong += t[i].seen.wrong;
	}
	return sum;
}

static void assert_seen_right(const struct seen *s)
{
	ck_assert_msg(!s->wrong,
		      "%llu pages read wrong; the first, at %#lx, read %s",
		      (unsigned long long)s->wrong,
		      (unsigned long)s->wrong_addr,
		      view_names[s->wrong_view]);
}

/* Targets: pages [@first, @first + @count) of @a, appended to @v. */
static size_t add_targets(struct target *v, size_t n, struct area *a,
			  size_t first, size_t count)
{
	for (size_t i = 0; i < count; i++)
		v[n + i] = (struct target){ .a = a, .page = first + i };
	return n + count;
}

static struct target *alloc_targets(size_t n)
{
	struct target *v = calloc(n, sizeof(*v));

	ck_assert_ptr_nonnull(v);
	return v;
}

/* One toucher, one pass over @n targets; what it saw, all of it right. */
static struct seen touch_all(const struct target *v, size_t n, bool writes)
{
	struct plan p = { .targets = v, .nr = n, .writes = writes };
	struct toucher t;
	struct seen s;

	start_touchers(&t, 1, &p);
	s = join_touchers(&t, 1, DEADLINE_S);
	assert_seen_right(&s);
	return s;
}

/* touch_all() over pages [@first, @first + @count) of @a. */
static struct seen touch_range(struct area *a, size_t first, size_t count)
{
	struct target *v = alloc_targets(count);
	struct seen s;

	add_targets(v, 0, a, first, count);
	s = touch_all(v, count, false);
	free(v);
	return s;
}

/* ---- the runtime ----------------------------------------------------------- */

#define RUNTIME_OR_SKIP(...)                                                   \
	do {                                                                   \
		struct rt_opts o_ = { __VA_ARGS__ };                           \
		if (!open_runtime(&o_, __func__))                              \
			return;                                                \
	} while (0)

/* Wait until the runtime's counter @field reaches @n. */
#define WAIT_FOR_COUNT(field, n)                                               \
	do {                                                                   \
		bool ok_;                                                      \
		VMR_WAIT_FOR(ok_, ustats().field >= (n), DEADLINE_S);          \
		ck_assert_msg(ok_, #field " is %llu, never reached %llu",      \
			      (unsigned long long)ustats().field,              \
			      (unsigned long long)(n));                        \
	} while (0)

/* A userfaultfd of the test's own; -errno if refused. */
static int open_own_uffd(void)
{
	int fd = (int)syscall(SYS_userfaultfd,
			      O_CLOEXEC | O_NONBLOCK | UFFD_USER_MODE_ONLY);

	return fd < 0 ? -errno : fd;
}

static int uffd_api(int fd, uint64_t features)
{
	struct uffdio_api a = { .api = UFFD_API, .features = features };

	return ioctl(fd, UFFDIO_API, &a) ? -errno : 0;
}

/* Whether @fd is an open userfaultfd. */
static bool is_open_uffd(int fd)
{
	char path[64], link[128];
	ssize_t n;

	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	n = readlink(path, link, sizeof(link) - 1);
	if (n < 0)
		return false;
	link[n] = 0;
	return strstr(link, "userfaultfd") != NULL;
}

static size_t count_threads(void)
{
	DIR *d = opendir("/proc/self/task");
	struct dirent *e;
	size_t n = 0;

	ck_assert_ptr_nonnull(d);
	while ((e = readdir(d)))
		if (e->d_name[0] != '.')
			n++;
	closedir(d);
	return n;
}

/* A thread's scheduler state letter from /proc ('S', 'D', 'R'...), or 0. */
static char thread_state(pid_t tid)
{
	char path[64], buf[512], *p;
	ssize_t n;
	int fd;

	snprintf(path, sizeof(path), "/proc/self/task/%d/stat", (int)tid);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return 0;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return 0;
	buf[n] = 0;
	p = strrchr(buf, ')');
	return p && p[1] == ' ' ? p[2] : 0;
}

/* ---- fixture ------------------------------------------------------------ */

static void setup(void)
{
	harness_setup(DEADLINE_S);
}

static void teardown(void)
{
	ck_assert_int_eq(vmr_uffd_destroy(uffd), 0);
	uffd = NULL;
	harness_teardown();
}

/* ---- create and destroy ---------------------------------------------------- */

static void *no_op(void *arg)
{
	return arg;
}

START_TEST(test_the_default_config_runs_a_handler_thread_per_cpu)
{
	long cpus = sysconf(_SC_NPROCESSORS_ONLN);
	size_t before;
	pthread_t t;
	int err;

	make_space(VMR_POLICY_DEFAULT, VMR_LOCK_REGION);
	/* A sanitizer may start a thread of its own at the first
	 * pthread_create() (TSan does): let that happen before counting. */
	ck_assert_int_eq(pthread_create(&t, NULL, no_op, NULL), 0);
	ck_assert_int_eq(pthread_join(t, NULL), 0);
	before = count_threads();
	err = vmr_uffd_create(space, NULL, 0, &uffd);
	if (refused(err, __func__))
		return;
	ck_assert_int_eq(err, 0);
	ck_assert_uint_eq(count_threads() - before, (size_t)cpus);
	ck_assert_ptr_eq(vmr_uffd_space(uffd), space);
	ck_assert_int_ge(vmr_uffd_fd(uffd), 0);
	ck_assert(is_open_uffd(vmr_uffd_fd(uffd)));
	ck_assert(!vmr_uffd_is_dead(uffd));
	/* The queries answer for no runtime too. */
	ck_assert_int_eq(vmr_uffd_fd(NULL), -1);
	ck_assert_uint_eq(vmr_uffd_features(NULL), 0);
	ck_assert_ptr_null(vmr_uffd_space(NULL));
	ck_assert(!vmr_uffd_is_dead(NULL));
	ck_assert_int_eq(vmr_uffd_destroy(NULL), 0);
}
END_TEST

START_TEST(test_bad_create_arguments_are_refused)
{
	static char untouched;
	struct vmr_uffd *sentinel = (struct vmr_uffd *)(void *)&untouched;
	struct vmr_uffd *u = sentinel;
	struct vmr_space *big = NULL;
	struct vmr_space_config big_cfg;
	struct vmr_uffd_config cfg;
	struct {
		struct vmr_uffd_config cfg;
		uint64_t extra;
	} longer;

	make_space(VMR_RETRY_VMA, VMR_LOCK_REGION);
	memset(&cfg, 0, sizeof(cfg));
	cfg.fd = -1;
	ck_assert_int_eq(vmr_uffd_create(NULL, &cfg, sizeof(cfg), &u),
			 -EINVAL);
	ck_assert_int_eq(vmr_uffd_create(space, &cfg, sizeof(cfg), NULL),
			 -EINVAL);
	ck_assert_int_eq(vmr_uffd_create(space, NULL, sizeof(cfg), &u),
			 -EINVAL);
	cfg.threads = 1025;
	ck_assert_int_eq(vmr_uffd_create(space, &cfg, sizeof(cfg), &u),
			 -EINVAL);
	cfg.threads = 1;
	cfg.batch = 4097;
	ck_assert_int_eq(vmr_uffd_create(space, &cfg, sizeof(cfg), &u),
			 -EINVAL);
	cfg.batch = 0;
	cfg.flags = VMR_UFFD_NO_REMOVE << 1; /* the first unknown bit */
	ck_assert_int_eq(vmr_uffd_create(space, &cfg, sizeof(cfg), &u),
			 -EINVAL);
	cfg.flags = 0x80000000u;
	ck_assert_int_eq(vmr_uffd_create(space, &cfg, sizeof(cfg), &u),
			 -EINVAL);
	cfg.flags = 0;
	/* A longer struct from a newer caller: its extra bytes must be 0. */
	memset(&longer, 0, sizeof(longer));
	longer.cfg.fd = -1;
	longer.extra = 1;
	ck_assert_int_eq(vmr_uffd_create(space, &longer.cfg, sizeof(longer),
					 &u),
			 -E2BIG);
	ck_assert_ptr_eq(u, sentinel);
	/* A space whose pages are not the system's. */
	memset(&big_cfg, 0, sizeof(big_cfg));
	big_cfg.page_size = pg * 2;
	ck_assert_int_eq(vmr_space_create(&big_cfg, sizeof(big_cfg), &big), 0);
	ck_assert_int_eq(vmr_uffd_create(big, &cfg, sizeof(cfg), &u), -EINVAL);
	ck_assert_int_eq(vmr_space_destroy(big), 0);
	ck_assert_ptr_eq(u, sentinel);
}
END_TEST

START_TEST(test_the_largest_batch_and_a_longer_config_are_accepted)
{
	struct vmr_uffd_config cfg = { .threads = 2, .batch = 4096, .fd = -1 };
	struct {
		struct vmr_uffd_config cfg;
		uint64_t extra; /* zero: a newer caller's unused field */
	} longer;
	int err;

	make_space(VMR_RETRY_VMA, VMR_LOCK_REGION);
	err = vmr_uffd_create(space, &cfg, sizeof(cfg), &uffd);
	if (refused(err, __func__))
		return;
	ck_assert_int_eq(err, 0);
	ck_assert_int_eq(vmr_uffd_destroy(uffd), 0);
	memset(&longer, 0, sizeof(longer));
	longer.cfg.threads = 1;
	longer.cfg.fd = -1;
	ck_assert_int_eq(vmr_uffd_create(space, &longer.cfg, sizeof(longer),
					 &uffd),
			 0);
	/* teardown destroys it. */
}
END_TEST

START_TEST(test_features_include_the_runtime_events)
{
	struct vmr_uffd_config cfg = { .threads = 1, .fd = -1 };
	struct vmr_uffd *quiet;
	uint64_t f;

	RUNTIME_OR_SKIP(.threads = 1);
	f = vmr_uffd_features(uffd);
	ck_assert_msg((f & EVENTS) == EVENTS,
		      "features %#llx lack REMOVE, UNMAP or REMAP",
		      (unsigned long long)f);
	/* EVENT_FORK needs CAP_SYS_PTRACE, which root has. */
	if (geteuid() == 0)
		ck_assert_msg(f & UFFD_FEATURE_EVENT_FORK,
			      "features %#llx lack FORK though we are root",
			      (unsigned long long)f);
	/* Asked for: added to the runtime's own. */
	cfg.features = UFFD_FEATURE_THREAD_ID;
	ck_assert_int_eq(vmr_uffd_create(space, &cfg, sizeof(cfg), &quiet), 0);
	f = vmr_uffd_features(quiet);
	ck_assert(f & UFFD_FEATURE_THREAD_ID);
	ck_assert((f & EVENTS) == EVENTS);
	ck_assert_int_eq(vmr_uffd_destroy(quiet), 0);
	/* And none of them with VMR_UFFD_NO_EVENTS. */
	cfg.features = 0;
	cfg.flags = VMR_UFFD_NO_EVENTS;
	ck_assert_int_eq(vmr_uffd_create(space, &cfg, sizeof(cfg), &quiet), 0);
	f = vmr_uffd_features(quiet);
	ck_assert_uint_eq(f & (EVENTS | UFFD_FEATURE_EVENT_FORK), 0);
	ck_assert_int_eq(vmr_uffd_destroy(quiet), 0);
	/* All but REMOVE with VMR_UFFD_NO_REMOVE (test_badinput refuses it
	 * with REMOVE asked for in @features). */
	cfg.flags = VMR_UFFD_NO_REMOVE;
	ck_assert_int_eq(vmr_uffd_create(space, &cfg, sizeof(cfg), &quiet), 0);
	f = vmr_uffd_features(quiet);
	ck_assert_uint_eq(f & EVENTS, EVENTS & ~UFFD_FEATURE_EVENT_REMOVE);
	if (geteuid() == 0)
		ck_assert(f & UFFD_FEATURE_EVENT_FORK);
	ck_assert_int_eq(vmr_uffd_destroy(quiet), 0);
	/* VMR_UFFD_NO_EVENTS wins. */
	cfg.flags = VMR_UFFD_NO_REMOVE | VMR_UFFD_NO_EVENTS;
	ck_assert_int_eq(vmr_uffd_create(space, &cfg, sizeof(cfg), &quiet), 0);
	f = vmr_uffd_features(quiet);
	ck_assert_uint_eq(f & (EVENTS | UFFD_FEATURE_EVENT_FORK), 0);
	ck_assert_int_eq(vmr_uffd_destroy(quiet), 0);
}
END_TEST

/* _i: 0, the runtime does UFFDIO_API; 1, the test did (VMR_UFFD_FD_READY). */
START_TEST(test_a_handed_in_descriptor_serves_faults_and_stays_open)
{
	const bool ready = _i;
	struct vmr_uffd_config cfg = { .threads = 2 };
	struct area *a;
	int fd, err;

	make_space(VMR_RETRY_VMA, VMR_LOCK_REGION);
	fd = open_own_uffd();
	if (refused(fd < 0 ? fd : 0, __func__))
		return;
	ck_assert_int_ge(fd, 0);
	cfg.fd = fd;
	if (ready) {
		ck_assert_int_eq(uffd_api(fd, EVENTS), 0);
		cfg.flags = VMR_UFFD_FD_READY;
		cfg.features = EVENTS;
	}
	err = vmr_uffd_create(space, &cfg, sizeof(cfg), &uffd);
	ck_assert_int_eq(err, 0);
	ck_assert_int_eq(vmr_uffd_fd(uffd), fd);
	if (ready)
		ck_assert_uint_eq(vmr_uffd_features(uffd), EVENTS);
	else
		ck_assert((vmr_uffd_features(uffd) & EVENTS) == EVENTS);
	a = new_area(64, 1000);
	map_area(a);
	touch_range(a, 0, a->pages);
	ck_assert_uint_eq(settled_ustats().copies, 64);
	ck_assert_int_eq(vmr_uffd_destroy(uffd), 0);
	uffd = NULL;
	/* Not the runtime's to close. */
	ck_assert(is_open_uffd(fd));
	ck_assert_int_eq(close(fd), 0);
}
END_TEST

START_TEST(test_a_runtime_without_mappings_is_destroyed_at_once)
{
	struct destroyer d;

	RUNTIME_OR_SKIP(.threads = 4);
	start_destroy(&d);
	join_destroy(&d, DESTROY_S);
}
END_TEST

/* Destroy while a fault waits for its store read, under policies[_i]. */
START_TEST(test_destroy_waits_for_a_store_read_and_ends_its_fault)
{
	struct destroyer d;
	struct toucher t;
	struct target v;
	struct plan p = { .targets = &v, .nr = 1 };
	struct area *a;
	struct seen s;

	RUNTIME_OR_SKIP(.policy = policies[_i], .threads = 2);
	a = new_area(8, 50);
	map_area(a);
	/* Installed by the runtime, or zero once it is gone. */
	a->may_zero = true;
	v = (struct target){ .a = a, .page = 3 };
	close_gate(a->offset + 3 * pg);
	start_touchers(&t, 1, &p);
	wait_at_gate(1);
	start_destroy(&d);
	vmr_test_sleep(SETTLE_S);
	ck_assert_msg(!atomic_load(&d.done),
		      "destroy returned with a store read in flight");
	open_gate();
	join_destroy(&d, DEADLINE_S);
	s = join_touchers(&t, 1, DEADLINE_S);
	assert_seen_right(&s);
	/* The space has nothing in flight: teardown destroys it. */
}
END_TEST

START_TEST(test_create_without_memory_fails_with_enomem)
{
	struct vmr_uffd_config cfg = { .threads = 2, .fd = -1 };
	int err = -ENOMEM;

	make_space(VMR_RETRY_VMA, VMR_LOCK_REGION);
	for (long n = 0; n < 64 && err == -ENOMEM; n++) {
		vmr_alloc_fail_after(n);
		err = vmr_uffd_create(space, &cfg, sizeof(cfg), &uffd);
		vmr_alloc_fail_after(-1);
		if (n == 0 && refused(err, __func__))
			return;
		ck_assert_msg(err == -ENOMEM || err == 0,
			      "failing allocation %ld: %d", n, err);
	}
	/* It succeeded once allocations did; teardown destroys it. */
	ck_assert_int_eq(err, 0);
}
END_TEST

/* Fill the descriptor table but for @free; the descriptors taken. */
static int fill_fd_table(int *fds, int max, int free)
{
	int n = 0;

	while (n < max && (fds[n] = open("/dev/null", O_RDONLY | O_CLOEXEC)) >= 0)
		n++;
	ck_assert_int_eq(errno, EMFILE);
	for (int i = 0; i < free; i++)
		close(fds[--n]);
	return n;
}

/*
 * With no descriptor free create fails with -EMFILE, and so with a few;
 * with enough it succeeds.  Nothing leaks either way.
 */
START_TEST(test_create_without_file_descriptors_fails_with_emfile)
{
	struct vmr_uffd_config cfg = { .threads = 1, .fd = -1 };
	struct rlimit old, low;
	int fds[64], n, err = -EMFILE, free;

	make_space(VMR_RETRY_VMA, VMR_LOCK_REGION);
	ck_assert_int_eq(getrlimit(RLIMIT_NOFILE, &old), 0);
	low = old;
	low.rlim_cur = 64;
	ck_assert_int_eq(setrlimit(RLIMIT_NOFILE, &low), 0);
	for (free = 0; free < 16 && err == -EMFILE; free++) {
		n = fill_fd_table(fds, 64, free);
		err = vmr_uffd_create(space, &cfg, sizeof(cfg), &uffd);
		while (n)
			close(fds[--n]);
		if (refused(err, __func__)) {
			setrlimit(RLIMIT_NOFILE, &old);
			return;
		}
		ck_assert_msg(err == -EMFILE || (err == 0 && free > 0),
			      "%d descriptors free: %d", free, err);
	}
	ck_assert_int_eq(setrlimit(RLIMIT_NOFILE, &old), 0);
	ck_assert_int_eq(err, 0);
	/* teardown destroys it. */
}
END_TEST

/* ---- map and unmap -------------------------------------------------------- */

START_TEST(test_bad_map_arguments_are_refused)
{
	static const unsigned int bad_modes[] = {
		0,
		VMR_UFFD_WP,
		0x80,
		VMR_UFFD_MISSING | VMR_UFFD_MINOR,
		VMR_UFFD_MISSING | 0x80,
		VMR_UFFD_WP | VMR_UFFD_MINOR,
	};
	const struct vmr_uffd_store_ops no_read = { .read = NULL };
	struct {
		struct vmr_uffd_store_ops ops;
		uint64_t extra;
	} longer = { .ops = { .read = store_read }, .extra = 1 };
	struct area *a;
	unsigned char *b;
	size_t len;

	RUNTIME_OR_SKIP(.threads = 1);
	a = new_area(16, 0);
	b = a->base;
	len = a->pages * pg;
	ck_assert_int_eq(vmr_uffd_map(NULL, b, len, PROT_RW, 0,
				      VMR_UFFD_MISSING, &store_ops,
				      sizeof(store_ops), &store),
			 -EINVAL);
	ck_assert_int_eq(vmr_uffd_map(uffd, NULL, len, PROT_RW, 0,
				      VMR_UFFD_MISSING, &store_ops,
				      sizeof(store_ops), &store),
			 -EINVAL);
	ck_assert_int_eq(vmr_uffd_map(uffd, b + 1, len - pg, PROT_RW, 0,
				      VMR_UFFD_MISSING, &store_ops,
				      sizeof(store_ops), &store),
			 -EINVAL);
	ck_assert_int_eq(vmr_uffd_map(uffd, b, len - 1, PROT_RW, 0,
				      VMR_UFFD_MISSING, &store_ops,
				      sizeof(store_ops), &store),
			 -EINVAL);
	ck_assert_int_eq(vmr_uffd_map(uffd, b, 0, PROT_RW, 0,
				      VMR_UFFD_MISSING, &store_ops,
				      sizeof(store_ops), &store),
			 -EINVAL);
	for (size_t m = 0; m < VMR_ARRAY_SIZE(bad_modes); m++)
		ck_assert_int_eq(vmr_uffd_map(uffd, b, len, PROT_RW, 0,
					      bad_modes[m], &store_ops,
					      sizeof(store_ops), &store),
				 -EINVAL);
	ck_assert_int_eq(vmr_uffd_map(uffd, b, len, PROT_RW, 0,
				      VMR_UFFD_MISSING, &no_read,
				      sizeof(no_read), &store),
			 -EINVAL);
	ck_assert_int_eq(vmr_uffd_map(uffd, b, len, PROT_RW, 0,
				      VMR_UFFD_MISSING, NULL,
				      sizeof(store_ops), &store),
			 -EINVAL);
	ck_assert_int_eq(vmr_uffd_map(uffd, b, len, PROT_RW, 0,
				      VMR_UFFD_MISSING, &longer.ops,
				      sizeof(longer), &store),
			 -E2BIG);
	/* A mode this memory does not support: MINOR on anonymous pages. */
	ck_assert_int_eq(vmr_uffd_map(uffd, b, len, PROT_RW, 0, VMR_UFFD_MINOR,
				      &store_ops, sizeof(store_ops), &store),
			 -EINVAL);
	/* A protection with unknown bits. */
	ck_assert_int_eq(vmr_uffd_map(uffd, b, len, 0x80, 0, VMR_UFFD_MISSING,
				      &store_ops, sizeof(store_ops), &store),
			 -EINVAL);
	ck_assert_uint_eq(vmr_space_count_regions(space), 0);
	/* Unmap's arguments. */
	ck_assert_int_eq(vmr_uffd_unmap(NULL, b, len), -EINVAL);
	ck_assert_int_eq(vmr_uffd_unmap(uffd, b + 1, len - pg), -EINVAL);
	ck_assert_int_eq(vmr_uffd_unmap(uffd, b, len - 1), -EINVAL);
	ck_assert_int_eq(vmr_uffd_unmap(uffd, b, 0), -EINVAL);
	/* Nothing was registered: the range is plain memory, and reads 0. */
	a->may_zero = true;
	ck_assert_uint_eq(touch_range(a, 0, a->pages).views[VIEW_ZERO],
			  a->pages);
	ck_assert_uint_eq(settled_ustats().faults, 0);
}
END_TEST

START_TEST(test_a_range_the_process_has_not_mapped_is_refused)
{
	/* Below vm.mmap_min_addr: nothing is ever mapped there (a hole
	 * made with munmap() could be filled by another thread's mmap). */
	void *nowhere = (void *)(uintptr_t)(4 * pg);
	struct area *a;

	RUNTIME_OR_SKIP(.threads = 1);
	ck_assert_int_eq(vmr_uffd_map(uffd, nowhere, 4 * pg, PROT_RW, 0,
				      VMR_UFFD_MISSING, &store_ops,
				      sizeof(store_ops), &store),
			 -EINVAL);
	ck_assert_uint_eq(vmr_space_count_regions(space), 0);
	/* Nothing changed: a mapped range is served. */
	a = new_area(8, 0);
	map_area(a);
	touch_range(a, 0, 8);
}
END_TEST

START_TEST(test_an_overlapping_map_is_refused_with_eexist)
{
	struct area *a;

	RUNTIME_OR_SKIP(.threads = 2);
	a = new_area(32, 4000);
	ck_assert_int_eq(map_pages(a, 0, 16, PROT_RW), 0);
	ck_assert_int_eq(map_pages(a, 8, 16, PROT_RW), -EEXIST);
	ck_assert_int_eq(map_pages(a, 15, 1, PROT_RW), -EEXIST);
	ck_assert_uint_eq(vmr_space_count_regions(space), 1);
	ck_assert(!region_at(page_addr(a, 16), NULL));
	/* The neighbour is free, and both serve their pages. */
	ck_assert_int_eq(map_pages(a, 16, 16, PROT_RW), 0);
	touch_range(a, 0, 32);
	ck_assert_uint_eq(settled_ustats().copies, 32);
}
END_TEST

START_TEST(test_a_range_of_another_userfaultfd_is_refused_with_ebusy)
{
	struct uffdio_register reg;
	struct area *a;
	int fd;

	RUNTIME_OR_SKIP(.threads = 1);
	a = new_area(16, 0);
	fd = open_own_uffd();
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(uffd_api(fd, 0), 0);
	memset(&reg, 0, sizeof(reg));
	reg.range.start = page_addr(a, 4);
	reg.range.len = 4 * pg;
	reg.mode = UFFDIO_REGISTER_MODE_MISSING;
	ck_assert_int_eq(ioctl(fd, UFFDIO_REGISTER, &reg), 0);
	ck_assert_int_eq(map_pages(a, 0, 16, PROT_RW), -EBUSY);
	ck_assert_uint_eq(vmr_space_count_regions(space), 0);
	ck_assert(!region_at(page_addr(a, 0), NULL));
	/* Closing the other one frees the range. */
	ck_assert_int_eq(close(fd), 0);
	map_area(a);
	touch_range(a, 0, 16);
}
END_TEST

START_TEST(test_a_range_can_be_mapped_unmapped_and_mapped_again)
{
	struct vmr_uffd_stats st;
	struct area *a;

	RUNTIME_OR_SKIP(.threads = 2);
	a = new_area(64, 7000);
	map_area(a);
	touch_range(a, 0, 32);
	ck_assert_int_eq(vmr_uffd_unmap(uffd, a->base, a->pages * pg), 0);
	ck_assert_uint_eq(vmr_space_count_regions(space), 0);
	/* Unmapping what is not mapped is no error (as munmap(2)). */
	ck_assert_int_eq(vmr_uffd_unmap(uffd, a->base, a->pages * pg), 0);
	/* Unregistered: discarding it sends no event, and it reads zero. */
	ck_assert_int_eq(madvise(a->base, a->pages * pg, MADV_DONTNEED), 0);
	a->may_zero = true;
	ck_assert_uint_eq(touch_range(a, 0, 4).views[VIEW_ZERO], 4);
	ck_assert_int_eq(madvise(a->base, a->pages * pg, MADV_DONTNEED), 0);
	/* Again, at another store offset. */
	a->may_zero = false;
	a->offset = 9000 * pg;
	map_area(a);
	ck_assert_uint_eq(vmr_space_count_regions(space), 1);
	touch_range(a, 0, a->pages);
	st = settled_ustats();
	ck_assert_uint_eq(st.copies, 32 + 64);
	ck_assert_uint_eq(st.events_remove, 0);
}
END_TEST

/* Handler thread counts the tests loop over. */
static const unsigned int handler_counts[] = { 1, 2, 4 };

/*
 * Without REMOVE events the runtime never hears of a discard: a page
 * dropped with MADV_DONTNEED faults again and finds itself "installed" in
 * the runtime's page map.  It must be read and installed again, not only
 * woken (its thread would fault forever).  _i: handler threads 1, 2; then
 * the same with every event but REMOVE.
 */
START_TEST(test_without_remove_events_a_discarded_page_is_read_again)
{
	struct vmr_uffd_stats st;
	struct area *a;

	RUNTIME_OR_SKIP(.threads = handler_counts[_i % 2],
			.flags = _i < 2 ? VMR_UFFD_NO_EVENTS :
					  VMR_UFFD_NO_REMOVE);
	ck_assert_uint_eq(vmr_uffd_features(uffd) & UFFD_FEATURE_EVENT_REMOVE,
			  0);
	a = new_area(16, 7100);
	map_area(a);
	ck_assert_uint_eq(touch_range(a, 0, 16).views[VIEW_STORE], 16);
	ck_assert_int_eq(madvise(a->base, 8 * pg, MADV_DONTNEED), 0);
	/* Pages 0-7 fault again; 8-15 are still there. */
	ck_assert_uint_eq(touch_range(a, 0, 16).views[VIEW_STORE], 16);
	st = settled_ustats();
	ck_assert_uint_eq(st.faults, 16 + 8);
	ck_assert_uint_eq(st.copies, 16 + 8);
	ck_assert_uint_eq(st.coalesced + st.eexist, 0);
	ck_assert_uint_eq(atomic_load(&store.reads), 16 + 8);
	ck_assert_uint_eq(st.events_remove, 0);
}
END_TEST

/* ---- contents ------------------------------------------------------------ */

#define C_AREAS 4
#define C_PAGES 2048
#define C_TOUCHERS 8

/*
 * C_TOUCHERS threads touch every page of C_AREAS areas (far apart in the
 * store) in their own random orders, every other touch a write; every
 * page must read its store contents, and the counters must add up.  The
 * runtime has @threads handler threads.
 */
static void every_page_reads_its_store(unsigned int threads)
{
	const size_t n = C_AREAS * C_PAGES;
	struct toucher t[C_TOUCHERS];
	struct vmr_uffd_stats u;
	struct target *v = alloc_targets(n);
	struct plan p = { .targets = v, .nr = n, .shuffle = true,
			  .writes = true };
	struct vmr_stats st;
	struct seen s;

	for (size_t i = 0, k = 0; i < C_AREAS; i++) {
		struct area *a = new_area(C_PAGES, 100000 * (C_AREAS - i) + i);

		map_area(a);
		k = add_targets(v, k, a, 0, C_PAGES);
	}
	start_touchers(t, C_TOUCHERS, &p);
	s = join_touchers(t, C_TOUCHERS, DEADLINE_S);
	free(v);
	assert_seen_right(&s);
	ck_assert_uint_eq(s.views[VIEW_STORE], C_TOUCHERS * n);
	u = settled_ustats();
	st = sstats();
	/* Each page was installed once; every other fault was a duplicate
	 * (without REMOVE events, a late one reads the page again and finds
	 * it there: EEXIST). */
	ck_assert_uint_eq(u.copies, n);
	ck_assert_uint_eq(u.faults, u.copies + u.coalesced + u.eexist);
	if (vmr_uffd_features(uffd) & UFFD_FEATURE_EVENT_REMOVE)
		ck_assert_uint_eq(u.eexist, 0);
	ck_assert_uint_eq(u.messages, u.faults);
	ck_assert_uint_ge(u.batches, 1);
	ck_assert_uint_le(u.batches, u.messages);
	/* The config names no batch: with several threads, each read takes
	 * one message. */
	if (threads > 1)
		ck_assert_uint_eq(u.batches, u.messages);
	ck_assert_uint_ge(u.wakes, u.coalesced);
	ck_assert_uint_ge(atomic_load(&store.reads), n);
	ck_assert_uint_eq(u.eagain + u.enoent + u.esrch, 0);
	ck_assert_uint_eq(u.poisoned + u.store_errors + u.zeropages +
				  u.continues + u.wp_resolved,
			  0);
	ck_assert_uint_eq(u.events_remove + u.events_unmap + u.events_remap +
				  u.events_fork,
			  0);
	/* The engine saw each message as one fault, each ending NOPAGE. */
	ck_assert_uint_eq(st.faults, u.faults);
	ck_assert_uint_eq(st.result_nopage, u.faults);
	ck_assert_uint_eq(st.bad_results, 0);
	ck_assert_uint_eq(st.result_sigbus + st.result_sigsegv +
				  st.result_oom + st.result_unfinished,
			  0);
	ck_assert_uint_eq(st.page_reads, n);
	ck_assert_uint_eq(st.page_rereads, 0);
	switch (space->policy) {
	case VMR_RETRY_SPACE:
		/* Each read dropped the VMA lock and retried on the space's. */
		ck_assert_uint_ge(st.vma_lock_retry, n);
		ck_assert_uint_ge(st.space_lock_faults, n);
		break;
	case VMR_RETRY_VMA:
		ck_assert_uint_ge(st.vma_retries, n);
		break;
	case VMR_HOLD_IO:
		ck_assert_uint_eq(st.vma_lock_retry, 0);
		ck_assert_uint_eq(st.space_lock_faults, 0);
		break;
	default:
		break;
	}
}

/* _i: handler threads 1, 2, 4; then the same without events, whose
 * handler threads read and install in parallel; then with every event but
 * REMOVE, whose reads are ordered but run beside installs. */
START_TEST(test_every_page_reads_its_store_contents)
{
	static const struct {
		unsigned int flags;
		uint64_t events; /* those of EVENTS it gets */
	} cfgs[] = {
		{ 0, EVENTS },
		{ VMR_UFFD_NO_EVENTS, 0 },
		{ VMR_UFFD_NO_REMOVE, EVENTS & ~UFFD_FEATURE_EVENT_REMOVE },
	};
	const int n = (int)VMR_ARRAY_SIZE(handler_counts);

	RUNTIME_OR_SKIP(.policy = VMR_RETRY_VMA,
			.threads = handler_counts[_i % n],
			.flags = cfgs[_i / n].flags);
	ck_assert_uint_eq(vmr_uffd_features(uffd) & EVENTS,
			  cfgs[_i / n].events);
	every_page_reads_its_store(handler_counts[_i % n]);
}
END_TEST

/* ---- how many messages a read takes ------------------------------------ */

#define B_HELD 2   /* handler threads, each held in a store read */
#define B_QUEUED 6 /* faults queued behind them */

static atomic_uint b_entered;
static atomic_bool b_release;

/* store.on_read: the first B_HELD reads wait for b_release. */
static void hold_first_reads(uint64_t off)
{
	bool released;

	(void)off;
	if (atomic_fetch_add(&b_entered, 1) >= B_HELD)
		return;
	VMR_WAIT_FOR(released, atomic_load(&b_release), DEADLINE_S);
	(void)released;
}

/* Page faults queued on the runtime's descriptor and not read yet. */
static long unread_faults(void)
{
	char path[64], line[128];
	long n = -1;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/self/fdinfo/%d",
		 vmr_uffd_fd(uffd));
	f = fopen(path, "r");
	if (!f)
		return -1;
	while (n < 0 && fgets(line, sizeof(line), f))
		if (sscanf(line, "pending: %ld", &n) != 1)
			n = -1;
	fclose(f);
	return n;
}

/*
 * _i: 0, the default batch; 1, a batch of 64 named in the config.  Two
 * handler threads are held in their store reads while B_QUEUED more
 * faults queue up; once let go, the default reads them one at a time, a
 * named batch in one read.
 */
START_TEST(test_several_threads_read_one_message_unless_a_batch_is_named)
{
	const unsigned int batch = _i ? 64 : 0;
	struct toucher t[B_HELD + B_QUEUED];
	struct target v[B_HELD + B_QUEUED];
	struct plan p[B_HELD + B_QUEUED];
	struct vmr_uffd_stats u;
	struct area *a;
	struct seen s;
	bool ok;

	atomic_store(&b_entered, 0);
	atomic_store(&b_release, false);
	/* Before the handler threads start: they read it unsynchronised. */
	store.on_read = hold_first_reads;
	RUNTIME_OR_SKIP(.policy = VMR_RETRY_VMA, .threads = B_HELD,
			.batch = batch);
	a = new_area(B_HELD + B_QUEUED, 0);
	map_area(a);
	for (size_t i = 0; i < B_HELD + B_QUEUED; i++) {
		add_targets(v, i, a, i, 1);
		p[i] = (struct plan){ .targets = &v[i], .nr = 1 };
		start_touchers(&t[i], 1, &p[i]);
		if (i >= B_HELD)
			continue;
		/* One fault at a time, so that each thread takes one. */
		VMR_WAIT_FOR(ok, atomic_load(&b_entered) > i, DEADLINE_S);
		ck_assert_msg(ok, "no handler thread read fault %zu", i);
	}
	VMR_WAIT_FOR(ok, unread_faults() == B_QUEUED, DEADLINE_S);
	ck_assert_msg(ok, "%ld faults queued, not %d", unread_faults(),
		      B_QUEUED);
	atomic_store(&b_release, true);
	s = join_touchers(t, B_HELD + B_QUEUED, DEADLINE_S);
	assert_seen_right(&s);
	u = settled_ustats();
	ck_assert_uint_eq(u.messages, B_HELD + B_QUEUED);
	if (batch)
		/* The queued faults came in one read. */
		ck_assert_uint_eq(u.batches, B_HELD + 1);
	else
		ck_assert_uint_eq(u.batches, u.messages);
}
END_TEST

/* ---- duplicates ---------------------------------------------------------- */

#define D_PAGES 256
#define D_TOUCHERS 8

/*
 * D_TOUCHERS threads fault on each of D_PAGES pages at once (they meet at
 * a barrier before each), with a slow store: many messages per page.
 */
static struct seen fault_together(void)
{
	struct toucher t[D_TOUCHERS];
	struct target *v = alloc_targets(D_PAGES);
	pthread_barrier_t meet;
	struct plan p = { .targets = v, .nr = D_PAGES, .lockstep = &meet };
	struct area *a = new_area(D_PAGES, 300);
	struct seen s;

	store.slow_every = 1;
	store.delay_us = 200;
	map_area(a);
	add_targets(v, 0, a, 0, D_PAGES);
	ck_assert_int_eq(pthread_barrier_init(&meet, NULL, D_TOUCHERS), 0);
	start_touchers(t, D_TOUCHERS, &p);
	s = join_touchers(t, D_TOUCHERS, DEADLINE_S);
	pthread_barrier_destroy(&meet);
	free(v);
	assert_seen_right(&s);
	ck_assert_uint_eq(s.views[VIEW_STORE], D_TOUCHERS * D_PAGES);
	return s;
}

/* _i: handler threads 1, 2, 4. */
START_TEST(test_concurrent_faults_on_a_page_install_it_once)
{
	struct vmr_uffd_stats u;

	RUNTIME_OR_SKIP(.policy = VMR_RETRY_VMA,
			.threads = handler_counts[_i]);
	fault_together();
	u = settled_ustats();
	ck_assert_uint_eq(u.copies, D_PAGES);
	ck_assert_uint_eq(u.faults, u.copies + u.coalesced + u.eexist);
	ck_assert_msg(u.faults > u.copies,
		      "%llu faults for %d pages: no duplicates to coalesce",
		      (unsigned long long)u.faults, D_PAGES);
	ck_assert_uint_eq(u.poisoned, 0);
}
END_TEST

/*
 * The header's claim: "duplicate messages for a page in flight coalesce on
 * the page's lock: the second finds it installed and only wakes" -- so the
 * store is read once per page, under policies[_i].
 */
START_TEST(test_concurrent_faults_on_a_page_read_its_store_once)
{
	RUNTIME_OR_SKIP(.policy = policies[_i], .threads = 4);
	fault_together();
	ck_assert_uint_eq(settled_ustats().copies, D_PAGES);
	ck_assert_msg(atomic_load(&store.reads) == D_PAGES,
		      "%lu store reads for %d pages: duplicates re-read",
		      atomic_load(&store.reads), D_PAGES);
}
END_TEST

/*
 * Without REMOVE events a message for an installed page is taken for a
 * duplicate only if it was read before the install: it waited for the
 * page's lock, or came after the installing fault in one batch.  Any other
 * reads the page again and finds it present (EEXIST).  Duplicates in
 * flight still coalesce, then: with a slow store nearly all of them do.
 * Here none read the store again in three runs; with the lock-wait rule
 * removed, about 290 of 1750 did, and with only that rule (no same-batch
 * rule), 1545 of 1620.
 */
START_TEST(test_without_events_duplicates_in_flight_still_coalesce)
{
	struct vmr_uffd_stats u;
	unsigned long reads;

	RUNTIME_OR_SKIP(.policy = VMR_RETRY_VMA, .threads = 4,
			.flags = VMR_UFFD_NO_EVENTS);
	fault_together();
	u = settled_ustats();
	reads = atomic_load(&store.reads);
	fprintf(stderr, "%s: %llu faults, %llu coalesced, %llu eexist, "
			"%lu store reads\n",
		__func__, (unsigned long long)u.faults,
		(unsigned long long)u.coalesced, (unsigned long long)u.eexist,
		reads);
	ck_assert_uint_eq(u.copies, D_PAGES);
	ck_assert_uint_eq(u.faults, u.copies + u.coalesced + u.eexist);
	ck_assert_uint_eq(reads, D_PAGES + u.eexist);
	ck_assert_msg(u.eexist < u.coalesced / 10,
		      "%llu duplicates coalesced, %llu read the store again",
		      (unsigned long long)u.coalesced,
		      (unsigned long long)u.eexist);
}
END_TEST

/* ---- events racing faults ----------------------------------------------- */

#define E_PAGES 4096
#define E_TOUCHERS 4

/* Removes random ranges of @a while touchers run; then stops them. */
struct remover {
	pthread_t thread;
	struct area *a;
	uint64_t seed;
	atomic_bool *stop;
	unsigned int rounds;
	unsigned int failed; /* madvise() calls that failed */
};

static void *remover_main(void *arg)
{
	struct remover *r = arg;
	struct vmr_rng rng;

	vmr_rng_init(&rng, r->seed);
	for (unsigned int n = 0; n < r->rounds; n++) {
		size_t len = 1 + vmr_rng_below(&rng, 32);
		size_t first = vmr_rng_below(&rng, r->a->pages - len + 1);

		/* Marked first: a toucher that sees zero sees the mark. */
		for (size_t i = first; i < first + len; i++)
			atomic_store(&r->a->removed[i], 1);
		if (madvise(r->a->base + first * pg, len * pg, MADV_DONTNEED))
			r->failed++;
		vmr_test_sleep(0.0005);
	}
	atomic_store(r->stop, true);
	return NULL;
}

/*
 * Removes random ranges with MADV_DONTNEED while touchers fault them (two
 * handler threads, @policy).  With REMOVE events a removed page reads zero
 * once its event is applied, and leaves the space.  With
 * VMR_UFFD_NO_REMOVE (@no_remove) the runtime never hears of it: the page
 * faults in from the store again, and none ever reads zero, not even when
 * a copy races its discard.
 */
static void remove_while_faulting(unsigned int policy, bool no_remove)
{
	struct toucher t[E_TOUCHERS];
	struct target *v = alloc_targets(E_PAGES);
	atomic_bool stop;
	struct plan p = { .targets = v, .nr = E_PAGES, .shuffle = true,
			  .writes = true, .stop = &stop };
	struct vmr_uffd_stats u;
	struct remover r;
	struct area *a;
	struct seen s;
	size_t removed = 0;
	bool ok;

	RUNTIME_OR_SKIP(.policy = policy, .threads = 2,
			.flags = no_remove ? VMR_UFFD_NO_REMOVE : 0);
	a = new_area(E_PAGES, 20000);
	track_removals(a);
	map_area(a);
	add_targets(v, 0, a, 0, E_PAGES);
	atomic_init(&stop, false);
	r = (struct remover){ .a = a, .seed = vmr_test_seed(), .stop = &stop,
			      .rounds = 150 };
	start_touchers(t, E_TOUCHERS, &p);
	ck_assert_int_eq(pthread_create(&r.thread, NULL, remover_main, &r),
			 0);
	ck_assert_int_eq(vmr_test_join(r.thread, DEADLINE_S), 0);
	s = join_touchers(t, E_TOUCHERS, DEADLINE_S);
	assert_seen_right(&s);
	ck_assert_uint_eq(r.failed, 0);
	if (no_remove)
		ck_assert_uint_eq(s.views[VIEW_ZERO] + s.views[VIEW_MIXED], 0);
	/* Afterwards too: every page reads as allowed, and removed pages
	 * that were in before their removal read zero now (or, without
	 * REMOVE events, their store contents again). */
	s = touch_all(v, E_PAGES, false);
	if (no_remove)
		ck_assert_uint_eq(s.views[VIEW_STORE], E_PAGES);
	else
		ck_assert_uint_gt(s.views[VIEW_ZERO], 0);
	free(v);
	u = settled_ustats();
	if (no_remove) {
		ck_assert_uint_eq(u.events_remove, 0);
		/* Discarded pages were installed again. */
		ck_assert_uint_gt(u.copies, E_PAGES);
	} else {
		ck_assert_uint_gt(u.events_remove, 0);
	}
	/* Removed ranges left the space (once their events are applied);
	 * unheard of, they stay. */
	for (size_t i = 0; i < E_PAGES; i++) {
		bool gone = atomic_load(&a->removed[i]);

		removed += gone;
		if (!gone || no_remove) {
			ck_assert(region_at(page_addr(a, i), NULL));
			continue;
		}
		VMR_WAIT_FOR(ok, !region_at(page_addr(a, i), NULL),
			     DEADLINE_S);
		ck_assert_msg(ok, "removed page %zu still in the space", i);
	}
	ck_assert_uint_gt(removed, 0);
}

/* Removes under policies[_i]. */
START_TEST(test_removed_pages_read_zero_or_their_contents)
{
	remove_while_faulting(policies[_i], false);
}
END_TEST

/* The same without REMOVE events: installs run beside reads. */
START_TEST(test_without_remove_events_discarded_pages_read_their_contents)
{
	remove_while_faulting(policies[_i], true);
}
END_TEST

/* Unmaps pieces of an area, one after another, while touchers run. */
struct unmapper {
	pthread_t thread;
	struct area *a;
	size_t pieces, every, len; /* piece k: pages [k * every, + len) */
	unsigned int failed;
};

static void *unmapper_main(void *arg)
{
	struct unmapper *u = arg;

	for (size_t k = 0; k < u->pieces; k++) {
		vmr_test_sleep(0.002);
		if (munmap(u->a->base + k * u->every * pg, u->len * pg))
			u->failed++;
	}
	return NULL;
}

/* _i: 0, every event; 1, every event but REMOVE (installs beside reads). */
START_TEST(test_unmapped_pieces_leave_the_space_while_others_fault)
{
	enum { PIECES = 8, EVERY = E_PAGES / PIECES, LEN = 64 };
	struct toucher t[E_TOUCHERS];
	struct target *v = alloc_targets(E_PAGES);
	struct plan p = { .targets = v, .shuffle = true, .writes = true };
	struct unmapper um;
	struct area *a;
	struct seen s;
	bool ok;

	RUNTIME_OR_SKIP(.policy = VMR_RETRY_VMA, .threads = 2,
			.flags = _i ? VMR_UFFD_NO_REMOVE : 0);
	a = new_area(E_PAGES, 30000);
	map_area(a);
	/* Touchers keep off the pieces: an access there is SIGSEGV. */
	for (size_t k = 0; k < PIECES; k++)
		p.nr = add_targets(v, p.nr, a, k * EVERY + LEN, EVERY - LEN);
	um = (struct unmapper){ .a = a, .pieces = PIECES, .every = EVERY,
				.len = LEN };
	start_touchers(t, E_TOUCHERS, &p);
	ck_assert_int_eq(pthread_create(&um.thread, NULL, unmapper_main, &um),
			 0);
	ck_assert_int_eq(vmr_test_join(um.thread, DEADLINE_S), 0);
	s = join_touchers(t, E_TOUCHERS, DEADLINE_S);
	assert_seen_right(&s);
	ck_assert_uint_eq(um.failed, 0);
	WAIT_FOR_COUNT(events_unmap, PIECES);
	ck_assert_uint_eq(settled_ustats().events_unmap, PIECES);
	for (size_t i = 0; i < E_PAGES; i++) {
		if (i % EVERY < LEN) {
			VMR_WAIT_FOR(ok, !region_at(page_addr(a, i), NULL),
				     DEADLINE_S);
			ck_assert_msg(ok, "unmapped page %zu still mapped", i);
		} else {
			ck_assert(region_at(page_addr(a, i), NULL));
		}
	}
	/* The rest is still served. */
	touch_all(v, p.nr, false);
	free(v);
	for (size_t k = 0; k < PIECES; k++)
		munmap(a->base + (k * EVERY + LEN) * pg, (EVERY - LEN) * pg);
	forget_memory(a->base);
}
END_TEST

/* Moves pages [@from, + @len) of @a to @to while touchers run. */
struct mover {
	pthread_t thread;
	struct area *a;
	size_t from, len;
	void *to;
	void *ret;
};

static void *mover_main(void *arg)
{
	struct mover *m = arg;

	vmr_test_sleep(0.002);
	m->ret = mremap(m->a->base + m->from * pg, m->len * pg, m->len * pg,
			MREMAP_MAYMOVE | MREMAP_FIXED, m->to);
	return NULL;
}

/* _i: 0, every event; 1, every event but REMOVE (installs beside reads). */
START_TEST(test_a_moved_range_reads_its_store_contents_at_its_new_address)
{
	enum { PAGES = 2048, FROM = 1024, LEN = 512 };
	struct toucher t[E_TOUCHERS];
	struct target *v = alloc_targets(PAGES);
	struct plan p = { .targets = v, .shuffle = true, .writes = true };
	struct area *a, *moved;
	struct mover m;
	uint64_t off;
	struct seen s;
	bool ok;

	RUNTIME_OR_SKIP(.policy = VMR_RETRY_VMA, .threads = 2,
			.flags = _i ? VMR_UFFD_NO_REMOVE : 0);
	a = new_area(PAGES, 40000);
	map_area(a);
	/* Half the pages that move are present before, half are not. */
	touch_range(a, FROM, LEN / 2);
	/* The new home: reserved, then replaced by the move. */
	moved = new_area(LEN, 0);
	moved->offset = a->offset + FROM * pg;
	ck_assert_int_eq(mprotect(moved->base, LEN * pg, PROT_NONE), 0);
	p.nr = add_targets(v, 0, a, 0, FROM);
	p.nr = add_targets(v, p.nr, a, FROM + LEN, PAGES - FROM - LEN);
	m = (struct mover){ .a = a, .from = FROM, .len = LEN,
			    .to = moved->base };
	start_touchers(t, E_TOUCHERS, &p);
	ck_assert_int_eq(pthread_create(&m.thread, NULL, mover_main, &m), 0);
	ck_assert_int_eq(vmr_test_join(m.thread, DEADLINE_S), 0);
	s = join_touchers(t, E_TOUCHERS, DEADLINE_S);
	assert_seen_right(&s);
	ck_assert_ptr_eq(m.ret, moved->base);
	WAIT_FOR_COUNT(events_remap, 1);
	ck_assert_uint_eq(settled_ustats().events_remap, 1);
	/* The space followed: the region is at the new address, same offsets. */
	VMR_WAIT_FOR(ok, !region_at(page_addr(a, FROM), NULL), DEADLINE_S);
	ck_assert_msg(ok, "the old range is still in the space");
	ck_assert(!region_at(page_addr(a, FROM + LEN - 1), NULL));
	ck_assert(region_at(page_addr(a, FROM - 1), NULL));
	ck_assert(region_at(page_addr(a, FROM + LEN), NULL));
	ck_assert(region_at(page_addr(moved, 0), &off));
	ck_assert_uint_eq(off, moved->offset);
	ck_assert(region_at(page_addr(moved, LEN - 1), &off));
	ck_assert_uint_eq(off, moved->offset + (LEN - 1) * pg);
	/* Moved pages kept their contents; missing ones come from the store. */
	s = touch_range(moved, 0, LEN);
	ck_assert_uint_eq(s.views[VIEW_STORE], LEN);
	free(v);
	munmap(a->base, FROM * pg);
	munmap(a->base + (FROM + LEN) * pg, (PAGES - FROM - LEN) * pg);
	forget_memory(a->base);
}
END_TEST

/* ---- fork --------------------------------------------------------------- */

/* Fork; the child touches every page of @a (the last first if
 * @backwards); the status it ended with. */
static int fork_and_touch(const struct area *a, bool backwards)
{
	pid_t pid = fork();

	ck_assert_int_ge(pid, 0);
	if (pid == 0)
		_exit(child_touch(a, backwards));
	return wait_child(pid);
}

START_TEST(test_a_forked_child_is_served_by_a_runtime_of_its_own)
{
	enum { PAGES = 512 };
	struct vmr_uffd_stats u;
	struct target v[PAGES / 2];
	struct area *a;
	size_t n = 0;

	RUNTIME_OR_SKIP(.policy = VMR_RETRY_VMA, .threads = 2);
	if (!need_fork_events(__func__))
		return;
	a = new_area(PAGES, 50000);
	map_area(a);
	/* The parent has the even pages, the child faults on the odd ones. */
	for (size_t i = 0; i < PAGES; i += 2)
		n = add_targets(v, n, a, i, 1);
	touch_all(v, n, false);
	assert_child_read_right(fork_and_touch(a, false));
	u = settled_ustats();
	ck_assert_uint_eq(u.events_fork, 1);
	/* The child's faults were not the parent's runtime's to serve. */
	ck_assert_uint_eq(u.copies, PAGES / 2);
	/* The parent's odd pages are still missing, and still served. */
	for (size_t i = 0; i < n; i++)
		v[i].page++;
	touch_all(v, n, false);
	ck_assert_uint_eq(settled_ustats().copies, PAGES);
}
END_TEST

/*
 * A child may fault at once after fork() returns: its runtime must have
 * its regions before it reads the child's first fault.  Many regions make
 * copying them take a while; the child touches the last one first.
 */
START_TEST(test_a_forked_child_finds_its_regions_at_its_first_fault)
{
	enum { PAGES = 2048, FORKS = 4 };
	struct area *a;

	RUNTIME_OR_SKIP(.policy = VMR_RETRY_VMA, .threads = 2);
	if (!need_fork_events(__func__))
		return;
	/* A region per page: copied in address order, the last page last. */
	a = new_area(PAGES, 60000);
	for (size_t i = 0; i < PAGES; i++)
		ck_assert_int_eq(map_pages(a, i, 1, PROT_RW), 0);
	for (int f = 0; f < FORKS; f++)
		assert_child_read_right(fork_and_touch(a, true));
	ck_assert_uint_eq(settled_ustats().events_fork, FORKS);
}
END_TEST

/* ---- forced outcomes -------------------------------------------------- */

/*
 * A second resolver installs page 3 while the runtime reads it: the
 * runtime's copy finds it there (EEXIST) and wakes the faulter.  _i / 2:
 * the policy (of the first two, and HOLD_IO); _i % 2: whether the second
 * resolver wakes the faulter itself, or leaves it to the runtime.
 */
START_TEST(test_a_page_installed_behind_the_runtimes_back_is_eexist)
{
	const bool dontwake = _i % 2;
	struct toucher t;
	struct target v;
	struct plan p = { .targets = &v, .nr = 1 };
	struct vmr_uffd_stats u;
	struct area *a;
	struct seen s;

	RUNTIME_OR_SKIP(.policy = policies[_i / 2], .threads = 1);
	a = new_area(8, 70);
	a->marker_ok = true;
	map_area(a);
	v = (struct target){ .a = a, .page = 3 };
	close_gate(a->offset + 3 * pg);
	start_touchers(&t, 1, &p);
	wait_at_gate(1);
	ck_assert_int_eq(copy_marker(vmr_uffd_fd(uffd), page_addr(a, 3),
				     dontwake),
			 0);
	if (dontwake) {
		vmr_test_sleep(SETTLE_S);
		ck_assert_msg(!atomic_load(&t.done),
			      "the faulter woke without a wake");
	}
	open_gate();
	s = join_touchers(&t, 1, DEADLINE_S);
	assert_seen_right(&s);
	ck_assert_uint_eq(s.views[VIEW_MARKER], 1);
	WAIT_FOR_COUNT(eexist, 1);
	u = settled_ustats();
	ck_assert_uint_eq(u.eexist, 1);
	ck_assert_uint_eq(u.copies, 0);
	ck_assert_uint_eq(u.poisoned, 0);
	/* The page stays the second resolver's; the others are served. */
	s = touch_range(a, 0, 8);
	ck_assert_uint_eq(s.views[VIEW_MARKER], 1);
	ck_assert_uint_eq(s.views[VIEW_STORE], 7);
}
END_TEST

/*
 * A thread removing a range (MADV_DONTNEED), which sleeps until a handler
 * thread reads its REMOVE event.
 */
struct remover1 {
	pthread_t thread;
	void *addr;
	size_t len;
	atomic_int tid;
	atomic_bool done;
	int ret;
};

static void *remover1_main(void *arg)
{
	struct remover1 *r = arg;

	atomic_store(&r->tid, (int)syscall(SYS_gettid));
	r->ret = madvise(r->addr, r->len, MADV_DONTNEED);
	atomic_store(&r->done, true);
	return NULL;
}

/* Start @r; return once it sleeps in the kernel for its event's reader. */
static void start_remover1(struct remover1 *r, void *addr, size_t len)
{
	bool asleep;

	memset(r, 0, sizeof(*r));
	r->addr = addr;
	r->len = len;
	atomic_init(&r->tid, 0);
	atomic_init(&r->done, false);
	ck_assert_int_eq(pthread_create(&r->thread, NULL, remover1_main, r),
			 0);
	/* userfaultfd_event_wait_completion() sleeps TASK_KILLABLE: 'D'. */
	VMR_WAIT_FOR(asleep,
		     atomic_load(&r->tid) && !atomic_load(&r->done) &&
			     thread_state(atomic_load(&r->tid)) == 'D',
		     DEADLINE_S);
	ck_assert_msg(asleep, "madvise did not wait for its REMOVE to be read");
}

/*
 * With the only handler thread held in a store read, a thread removes a
 * range and sleeps until its REMOVE is read (mmap_changing); faults queue
 * meanwhile.  Then the read ends: the copy is refused (EAGAIN) until the
 * event is read, and every fault must still resolve.  Under policies[_i].
 */
START_TEST(test_faults_refused_while_an_event_is_pending_all_resolve)
{
	enum { PAGES = 64 };
	struct toucher first, rest[3];
	struct target v0, *v = alloc_targets(2 * PAGES);
	struct plan p0 = { .targets = &v0, .nr = 1 };
	struct plan p = { .targets = v, .shuffle = true };
	struct remover1 rm;
	struct area *a, *b;
	struct seen s;

	RUNTIME_OR_SKIP(.policy = policies[_i], .threads = 1);
	a = new_area(PAGES, 80000);
	b = new_area(PAGES, 90000);
	track_removals(b);
	map_area(a);
	map_area(b);
	close_gate(a->offset);
	v0 = (struct target){ .a = a, .page = 0 };
	start_touchers(&first, 1, &p0);
	wait_at_gate(1);
	/* Remove the second half of b; nobody reads the event yet. */
	for (size_t i = PAGES / 2; i < PAGES; i++)
		atomic_store(&b->removed[i], 1);
	start_remover1(&rm, b->base + PAGES / 2 * pg, PAGES / 2 * pg);
	/* Faults on the rest of a and on b's first half queue up. */
	p.nr = add_targets(v, 0, a, 1, PAGES - 1);
	p.nr = add_targets(v, p.nr, b, 0, PAGES / 2);
	start_touchers(rest, 3, &p);
	vmr_test_sleep(SETTLE_S);
	open_gate();
	s = join_touchers(&first, 1, DEADLINE_S);
	assert_seen_right(&s);
	ck_assert_uint_eq(s.views[VIEW_STORE], 1);
	s = join_touchers(rest, 3, DEADLINE_S);
	assert_seen_right(&s);
	ck_assert_int_eq(vmr_test_join(rm.thread, DEADLINE_S), 0);
	ck_assert_int_eq(rm.ret, 0);
	free(v);
	ck_assert_uint_ge(settled_ustats().eagain, 1);
	WAIT_FOR_COUNT(events_remove, 1);
	ck_assert_uint_eq(settled_ustats().events_remove, 1);
	ck_assert_uint_eq(settled_ustats().poisoned, 0);
	ck_assert(!region_at(page_addr(b, PAGES / 2), NULL));
	ck_assert(region_at(page_addr(b, 0), NULL));
}
END_TEST

/* munmap() on another thread: it returns once a handler read its UNMAP. */
struct munmapper {
	pthread_t thread;
	void *addr;
	size_t len;
	int ret;
};

static void *munmapper_main(void *arg)
{
	struct munmapper *u = arg;

	u->ret = munmap(u->addr, u->len);
	return NULL;
}

/*
 * A fault whose page is unmapped while the runtime reads it, holding the
 * fault's lock (HOLD_IO): the other handler thread reads the UNMAP, and
 * its vmr_unmap() waits for that lock, so the copy finds no VMA (ENOENT)
 * with the region still in the space.  Nothing unregistered the range, so
 * nothing woke the faulter: the runtime must, and the faulter then gets
 * SIGSEGV as on any unmapped address.
 */
START_TEST(test_a_fault_whose_page_is_unmapped_under_it_is_woken)
{
	struct toucher t;
	struct target v;
	struct plan p = { .targets = &v, .nr = 1 };
	struct uffdio_range r;
	struct munmapper um;
	struct area *a;
	int err;

	RUNTIME_OR_SKIP(.policy = VMR_HOLD_IO, .threads = 2);
	a = new_area(16, 85000);
	map_area(a);
	v = (struct target){ .a = a, .page = 5 };
	close_gate(a->offset + 5 * pg);
	start_touchers(&t, 1, &p);
	wait_at_gate(1);
	um = (struct munmapper){ .addr = a->base, .len = a->pages * pg };
	ck_assert_int_eq(pthread_create(&um.thread, NULL, munmapper_main, &um),
			 0);
	ck_assert_int_eq(vmr_test_join(um.thread, DEADLINE_S), 0);
	ck_assert_int_eq(um.ret, 0);
	forget_memory(a->base);
	open_gate();
	err = vmr_test_join(t.thread, QUICK_S);
	if (err) {
		/* Wake it ourselves, so that the test ends. */
		r.start = page_addr(a, 5);
		r.len = pg;
		ioctl(vmr_uffd_fd(uffd), UFFDIO_WAKE, &r);
		vmr_test_join(t.thread, DEADLINE_S);
	}
	ck_assert_msg(!err,
		      "the faulter was left asleep after its page was "
		      "unmapped (enoent %llu, wakes %llu)",
		      (unsigned long long)ustats().enoent,
		      (unsigned long long)ustats().wakes);
	/* Woken, it faults again: SIGSEGV, or whatever another thread has
	 * mapped at the address since (it is free for reuse). */
	ck_assert_uint_eq(t.seen.views[VIEW_SIGSEGV] + t.seen.views[VIEW_ZERO] +
				  t.seen.views[VIEW_WRONG],
			  1);
	ck_assert_uint_eq(settled_ustats().events_unmap, 1);
}
END_TEST

/*
 * Unmap a range while the runtime reads one of its pages with the fault's
 * lock dropped (RETRY_VMA): the read, and the install after it, must not
 * use what the unmap freed (the mapping, its page map).  Run under
 * AddressSanitizer to see it.
 */
START_TEST(test_a_store_read_outlives_the_unmap_of_its_range)
{
	struct toucher t;
	struct target v;
	struct plan p = { .targets = &v, .nr = 1 };
	struct area *a;
	struct seen s;

	bool ended;

	RUNTIME_OR_SKIP(.policy = VMR_RETRY_VMA, .threads = 1);
	a = new_area(16, 86000);
	a->may_zero = true;
	map_area(a);
	v = (struct target){ .a = a, .page = 5 };
	close_gate(a->offset + 5 * pg);
	start_touchers(&t, 1, &p);
	wait_at_gate(1);
	/* Unregisters (the faulter wakes, and reads zero) and unmaps. */
	ck_assert_int_eq(vmr_uffd_unmap(uffd, a->base, a->pages * pg), 0);
	s = join_touchers(&t, 1, DEADLINE_S);
	assert_seen_right(&s);
	ck_assert_uint_eq(s.views[VIEW_ZERO], 1);
	/* Let the unmapped region's grace period pass and its close run. */
	for (int n = 0; n < 4; n++) {
		vmr_space_flavor(space)->barrier();
		vmr_test_sleep(0.01);
	}
	open_gate();
	/* The handler ends its fault (the engine counts it at the end). */
	VMR_WAIT_FOR(ended, sstats().faults >= 1, DEADLINE_S);
	ck_assert_msg(ended, "the handler never finished its fault");
	ck_assert_uint_eq(vmr_space_count_regions(space), 0);
}
END_TEST

/* ---- store errors and forbidden accesses -------------------------------- */

START_TEST(test_a_page_whose_store_read_fails_gets_sigbus)
{
	enum { PAGES = 256, EVERY = 5 };
	const size_t failing = (PAGES + EVERY - 1) / EVERY;
	struct toucher t[4];
	struct target *v = alloc_targets(PAGES);
	struct plan p = { .targets = v, .nr = PAGES, .shuffle = true,
			  .writes = true };
	struct vmr_uffd_stats u;
	struct area *a;
	struct seen s;

	RUNTIME_OR_SKIP(.policy = policies[_i], .threads = 2);
	store.fail_every = EVERY;
	a = new_area(PAGES, 0); /* store page 0 fails: pages 0, 5, 10... */
	map_area(a);
	add_targets(v, 0, a, 0, PAGES);
	start_touchers(t, 4, &p);
	s = join_touchers(t, 4, DEADLINE_S);
	assert_seen_right(&s);
	/* Again: a poisoned page stays poisoned; the others stay right. */
	s = touch_all(v, PAGES, false);
	free(v);
	u = settled_ustats();
	/* Each failing page was read (maybe twice: see "duplicate faults")
	 * and poisoned once; the others were installed once. */
	ck_assert_uint_ge(u.store_errors, failing);
	ck_assert_uint_eq(u.poisoned, failing);
	ck_assert_uint_eq(u.copies, PAGES - failing);
	if (vmr_uffd_features(uffd) & UFFD_FEATURE_POISON)
		ck_assert_uint_eq(s.views[VIEW_SIGBUS], failing);
	else
		ck_assert_uint_eq(u.zeropages, failing);
	ck_assert_uint_eq(s.views[VIEW_STORE], PAGES - failing);
}
END_TEST

START_TEST(test_a_write_to_a_read_only_mapping_gets_sigbus)
{
	struct target v[2];
	struct area *a;
	struct seen s;

	RUNTIME_OR_SKIP(.policy = VMR_RETRY_VMA, .threads = 1);
	if (!can_poison) {
		fprintf(stderr, "%s: no UFFD_FEATURE_POISON: skipped\n",
			__func__);
		return;
	}
	a = new_area(4, 95000);
	ck_assert_int_eq(map_pages(a, 0, 4, VMR_PROT_READ), 0);
	/* A read of page 0, then a write to page 2 (writes go second). */
	v[0] = (struct target){ .a = a, .page = 0 };
	v[1] = (struct target){ .a = a, .page = 2 };
	a->poison_ok = 2 + 1;
	s = touch_all(v, 2, true);
	ck_assert_uint_eq(s.views[VIEW_STORE], 1);
	ck_assert_uint_eq(s.views[VIEW_SIGBUS], 1);
	ck_assert_uint_eq(settled_ustats().poisoned, 1);
	ck_assert_uint_eq(sstats().result_sigsegv, 1);
}
END_TEST

/*
 * A fault the runtime has no region for, on a range registered with its
 * descriptor before it was handed in (the Firecracker and CRIU model): the
 * header says such a page is poisoned; it must not be left asleep, nor
 * woken to fault again forever.
 */
START_TEST(test_a_fault_outside_every_region_gets_sigbus)
{
	struct vmr_uffd_config cfg = { .threads = 1,
				       .flags = VMR_UFFD_FD_READY };
	struct uffdio_register reg;
	struct toucher t;
	struct target v;
	struct plan p = { .targets = &v, .nr = 1 };
	struct area *a;
	int fd, err;

	make_space(VMR_RETRY_VMA, VMR_LOCK_REGION);
	fd = open_own_uffd();
	if (refused(fd < 0 ? fd : 0, __func__))
		return;
	cfg.features = EVENTS | UFFD_FEATURE_POISON;
	if (uffd_api(fd, cfg.features)) {
		/* No POISON here (and UFFDIO_API is once per descriptor). */
		close(fd);
		fd = open_own_uffd();
		ck_assert_int_ge(fd, 0);
		cfg.features = EVENTS;
		ck_assert_int_eq(uffd_api(fd, cfg.features), 0);
	}
	a = new_area(4, 96000);
	memset(&reg, 0, sizeof(reg));
	reg.range.start = page_addr(a, 0);
	reg.range.len = a->pages * pg;
	reg.mode = UFFDIO_REGISTER_MODE_MISSING;
	ck_assert_int_eq(ioctl(fd, UFFDIO_REGISTER, &reg), 0);
	cfg.fd = fd;
	ck_assert_int_eq(vmr_uffd_create(space, &cfg, sizeof(cfg), &uffd), 0);
	can_poison = cfg.features & UFFD_FEATURE_POISON;
	a->poison_ok = 1 + 1;
	a->may_zero = !can_poison;
	v = (struct target){ .a = a, .page = 1 };
	start_touchers(&t, 1, &p);
	err = vmr_test_join(t.thread, QUICK_S);
	if (err) {
		/* Make it plain memory (which wakes it), so the test ends. */
		ioctl(fd, UFFDIO_UNREGISTER, &reg.range);
		vmr_test_join(t.thread, DEADLINE_S);
	}
	ck_assert_msg(!err,
		      "the faulter never got its page nor SIGBUS "
		      "(%llu messages, %llu wakes, %llu poisoned)",
		      (unsigned long long)ustats().messages,
		      (unsigned long long)ustats().wakes,
		      (unsigned long long)ustats().poisoned);
	assert_seen_right(&t.seen);
	ck_assert_uint_eq(settled_ustats().poisoned, 1);
	ck_assert_int_eq(vmr_uffd_destroy(uffd), 0);
	uffd = NULL;
	ck_assert_int_eq(close(fd), 0);
}
END_TEST

/* ---- shutdown during a fault storm ------------------------------------- */

START_TEST(test_destroy_during_a_fault_storm_ends_every_fault)
{
	enum { AREAS = 2, PAGES = 1024, TOUCHERS = 8 };
	struct toucher t[TOUCHERS];
	struct target *v = alloc_targets(AREAS * PAGES);
	struct plan p = { .targets = v, .shuffle = true, .writes = true };
	struct destroyer d;
	struct seen s;

	RUNTIME_OR_SKIP(.policy = policies[_i], .threads = 2);
	store.slow_every = 1;
	store.delay_us = 300;
	for (size_t k = 0; k < AREAS; k++) {
		struct area *a = new_area(PAGES, 110000 + k * 3 * PAGES);

		a->may_zero = true;
		map_area(a);
		p.nr = add_targets(v, p.nr, a, 0, PAGES);
	}
	start_touchers(t, TOUCHERS, &p);
	vmr_test_sleep(0.1);
	start_destroy(&d);
	join_destroy(&d, DESTROY_S);
	s = join_touchers(t, TOUCHERS, DEADLINE_S);
	free(v);
	assert_seen_right(&s);
	ck_assert_uint_eq(s.views[VIEW_STORE] + s.views[VIEW_ZERO],
			  TOUCHERS * AREAS * PAGES);
	ck_assert_uint_gt(s.views[VIEW_ZERO], 0);
	/* Nothing of the runtime is left in flight on the space. */
	ck_assert_int_eq(vmr_space_destroy(space), 0);
	space = NULL;
}
END_TEST

/* ---- policies and lock granularities --------------------------------- */

/* _i: policies[_i / 2], granularity _i % 2. */
START_TEST(test_every_page_reads_its_store_contents_under_each_policy)
{
	const unsigned int threads = 2;

	RUNTIME_OR_SKIP(.policy = policies[_i / 2],
			.granularity = (enum vmr_lock_granularity)(_i % 2),
			.threads = threads);
	/* Some reads are slow, so that faults meet them under way. */
	store.slow_every = 16;
	store.delay_us = 100;
	every_page_reads_its_store(threads);
}
END_TEST

/* ---- the suite ---------------------------------------------------------- */

static Suite *uffd_suite(void)
{
	Suite *s = suite_create("uffd");
	const int nr_handlers = (int)VMR_ARRAY_SIZE(handler_counts);
	TCase *tc;

	tc = add_tcase(s, "create and destroy", 60, setup, teardown);
	tcase_add_test(tc,
		       test_the_default_config_runs_a_handler_thread_per_cpu);
	tcase_add_test(tc, test_bad_create_arguments_are_refused);
	tcase_add_test(tc,
		       test_the_largest_batch_and_a_longer_config_are_accepted);
	tcase_add_test(tc, test_features_include_the_runtime_events);
	tcase_add_loop_test(
		tc, test_a_handed_in_descriptor_serves_faults_and_stays_open, 0,
		2);
	tcase_add_test(tc, test_a_runtime_without_mappings_is_destroyed_at_once);
	tcase_add_loop_test(tc,
			    test_destroy_waits_for_a_store_read_and_ends_its_fault,
			    0, NR_POLICIES);
	tcase_add_test(tc, test_create_without_memory_fails_with_enomem);
	tcase_add_test(tc, test_create_without_file_descriptors_fails_with_emfile);

	tc = add_tcase(s, "map and unmap", 60, setup, teardown);
	tcase_add_test(tc, test_bad_map_arguments_are_refused);
	tcase_add_test(tc, test_a_range_the_process_has_not_mapped_is_refused);
	tcase_add_test(tc, test_an_overlapping_map_is_refused_with_eexist);
	tcase_add_test(tc,
		       test_a_range_of_another_userfaultfd_is_refused_with_ebusy);
	tcase_add_test(tc,
		       test_a_range_can_be_mapped_unmapped_and_mapped_again);
	tcase_add_loop_test(
		tc, test_without_remove_events_a_discarded_page_is_read_again,
		0, 4);

	tc = add_tcase(s, "contents", 120, setup, teardown);
	tcase_add_loop_test(tc, test_every_page_reads_its_store_contents, 0,
			    3 * nr_handlers);

	tcase_add_loop_test(
		tc, test_several_threads_read_one_message_unless_a_batch_is_named,
		0, 2);

	tc = add_tcase(s, "duplicate faults", 60, setup, teardown);
	tcase_add_loop_test(tc, test_concurrent_faults_on_a_page_install_it_once,
			    0, nr_handlers);
	tcase_add_loop_test(tc,
			    test_concurrent_faults_on_a_page_read_its_store_once,
			    0, NR_POLICIES);
	tcase_add_test(tc,
		       test_without_events_duplicates_in_flight_still_coalesce);

	tc = add_tcase(s, "REMOVE racing faults", 60, setup, teardown);
	tcase_add_loop_test(tc, test_removed_pages_read_zero_or_their_contents,
			    0, NR_POLICIES);
	tcase_add_loop_test(
		tc,
		test_without_remove_events_discarded_pages_read_their_contents,
		0, NR_POLICIES);

	tc = add_tcase(s, "UNMAP and REMAP racing faults", 60, setup, teardown);
	tcase_add_loop_test(
		tc, test_unmapped_pieces_leave_the_space_while_others_fault, 0,
		2);
	tcase_add_loop_test(
		tc,
		test_a_moved_range_reads_its_store_contents_at_its_new_address,
		0, 2);

	tc = add_tcase(s, "fork", 60, setup, teardown);
	tcase_add_test(tc, test_a_forked_child_is_served_by_a_runtime_of_its_own);
	tcase_add_test(tc,
		       test_a_forked_child_finds_its_regions_at_its_first_fault);

	tc = add_tcase(s, "forced ioctl outcomes", 60, setup, teardown);
	tcase_add_loop_test(
		tc, test_a_page_installed_behind_the_runtimes_back_is_eexist, 0,
		2 * NR_POLICIES);
	tcase_add_loop_test(
		tc, test_faults_refused_while_an_event_is_pending_all_resolve,
		0, NR_POLICIES);
	tcase_add_test(tc, test_a_fault_whose_page_is_unmapped_under_it_is_woken);
	tcase_add_test(tc, test_a_store_read_outlives_the_unmap_of_its_range);

	tc = add_tcase(s, "store errors and forbidden accesses", 60, setup,
		       teardown);
	tcase_add_loop_test(tc, test_a_page_whose_store_read_fails_gets_sigbus,
			    0, NR_POLICIES);
	tcase_add_test(tc, test_a_write_to_a_read_only_mapping_gets_sigbus);
	tcase_add_test(tc, test_a_fault_outside_every_region_gets_sigbus);

	tc = add_tcase(s, "shutdown during a fault storm", 60, setup, teardown);
	tcase_add_loop_test(tc, test_destroy_during_a_fault_storm_ends_every_fault,
			    0, NR_POLICIES);

	tc = add_tcase(s, "policies and lock granularities", 120, setup,
		       teardown);
	tcase_add_loop_test(
		tc, test_every_page_reads_its_store_contents_under_each_policy,
		0, 2 * NR_POLICIES);
	return s;
}

int main(void)
{
	if (vmr_test_valgrind()) {
		/* A thread faulting on registered memory would block inside
		 * valgrind's lock, and the handler could never run. */
		printf("test_uffd: skipped under valgrind (it runs one thread "
		       "at a time)\n");
		return 77;
	}
	return vmr_test_run(uffd_suite());
}
