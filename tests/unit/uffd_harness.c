/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The harness the two userfaultfd suites share (uffd_harness.h says what
 * it provides and its rules): one copy of the store, the areas, the look
 * at a page, the runtime's opening, counters and destroy, the forked
 * child's touch, and the fixture's common part.
 *
 * Where the two suites' copies differed, the one here serves both: the
 * store has test_uffd.c's gate, failures and per-page delay, and the race
 * suite's injection as a hook (@on_read); areas come from one pool and
 * their memory from one list unmapped at teardown (the race suite also maps
 * plain memory, and forgets what a REMAP moved away); copy_marker() takes
 * the descriptor and never asserts, since the race suite calls it on a
 * handler thread; waits that were bounded by each suite's DEADLINE_S are
 * bounded by the deadline harness_setup() is given.
 */
#include "uffd_harness.h"

#include "mm.h"

#include <errno.h>
#include <linux/userfaultfd.h>
#include <setjmp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>
#include <urcu/urcu-memb.h>

#ifndef UFFD_FEATURE_POISON
#define UFFD_FEATURE_POISON (1ull << 14)
#endif

/* The longest a store read waits at its gate. */
#define GATE_MAX_S 30.0
#define MAX_AREAS 8
#define MAX_MAPS 8

size_t pg;
struct vmr_space *space;
struct vmr_uffd *uffd;
bool can_poison;
struct store store;

/* The suite's DEADLINE_S, from harness_setup(). */
static double deadline_s;

/* ---- the backing store --------------------------------------------------- */

/* Word @j of the store's page at @off: no byte is zero. */
static uint64_t store_word(uint64_t off, size_t j)
{
	uint64_t x = (off >> 12) * 0x9e3779b97f4a7c15ull +
		     (uint64_t)j * 0xbf58476d1ce4e5b9ull + 1;

	x ^= x >> 31;
	x *= 0x94d049bb133111ebull;
	x ^= x >> 29;
	return x | 0x0101010101010101ull;
}

static void fill_page(void *buf, uint64_t off)
{
	uint64_t *w = buf;

	for (size_t j = 0; j < pg / 8; j++)
		w[j] = store_word(off, j);
}

int store_read(void *arg, uint64_t off, void *buf, size_t len)
{
	struct store *s = arg;

	atomic_fetch_add(&s->reads, 1);
	if (s->on_read)
		s->on_read(off);
	if (off == atomic_load_explicit(&s->gate_off, memory_order_relaxed)) {
		bool open;

		atomic_fetch_add(&s->at_gate, 1);
		VMR_WAIT_FOR(open, atomic_load(&s->gate_open), GATE_MAX_S);
		(void)open;
	}
	if (s->delay_us && s->slow_every && (off / pg) % s->slow_every == 0)
		usleep(s->delay_us);
	if (len != pg || (s->fail_every && (off / pg) % s->fail_every == 0))
		return -EIO;
	fill_page(buf, off);
	return 0;
}

const struct vmr_uffd_store_ops store_ops = { .read = store_read };

int copy_marker(int fd, uintptr_t addr, bool dontwake)
{
	struct uffdio_copy c;
	uint64_t *buf;
	int ret;

	if (posix_memalign((void **)&buf, pg, pg))
		return -ENOMEM;
	for (size_t j = 0; j < pg / 8; j++)
		buf[j] = MARKER;
	memset(&c, 0, sizeof(c));
	c.dst = addr;
	c.src = (uintptr_t)buf;
	c.len = pg;
	c.mode = dontwake ? UFFDIO_COPY_MODE_DONTWAKE : 0;
	ret = ioctl(fd, UFFDIO_COPY, &c) ? -errno : 0;
	free(buf);
	return ret;
}

/* ---- areas: the process's memory the tests register -------------------- */

/* What the test mapped, unmapped at teardown (a zero @len: forgotten). */
static struct {
	void *addr;
	size_t len;
} maps[MAX_MAPS];
static size_t nr_maps;

static struct area areas[MAX_AREAS];
static size_t nr_areas;

void *map_memory(size_t pages, int prot)
{
	void *p = mmap(NULL, pages * pg, prot,
		       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);

	ck_assert_ptr_ne(p, MAP_FAILED);
	/* userfaultfd resolves base pages; keep THP out of the way. */
	madvise(p, pages * pg, MADV_NOHUGEPAGE);
	ck_assert_uint_lt(nr_maps, MAX_MAPS);
	maps[nr_maps].addr = p;
	maps[nr_maps].len = pages * pg;
	nr_maps++;
	return p;
}

void forget_memory(void *addr)
{
	for (size_t i = 0; i < nr_maps; i++)
		if (maps[i].addr == addr)
			maps[i].len = 0;
}

struct area *new_area(size_t pages, uint64_t store_page)
{
	struct area *a;

	ck_assert_uint_lt(nr_areas, MAX_AREAS);
	a = &areas[nr_areas++];
	memset(a, 0, sizeof(*a));
	a->base = map_memory(pages, PROT_READ | PROT_WRITE);
	a->pages = pages;
	a->offset = store_page * pg;
	return a;
}

uintptr_t page_addr(const struct area *a, size_t i)
{
	return (uintptr_t)a->base + i * pg;
}

uint64_t page_off(const struct area *a, size_t i)
{
	return a->offset + i * pg;
}

int map_pages(struct area *a, size_t first, size_t count, unsigned int prot)
{
	return vmr_uffd_map(uffd, a->base + first * pg, count * pg, prot,
			    a->offset + first * pg, VMR_UFFD_MISSING,
			    &store_ops, sizeof(store_ops), &store);
}

void map_area(struct area *a)
{
	ck_assert_int_eq(map_pages(a, 0, a->pages, PROT_RW), 0);
}

bool region_at(uintptr_t addr, uint64_t *offset)
{
	struct vmr_region *r;

	vmr_space_read_lock(space);
	r = vmr_space_find_region(space, addr);
	if (r && offset)
		*offset = vmr_region_offset(r) + (addr - vmr_region_start(r));
	vmr_space_read_unlock(space);
	return r != NULL;
}

/* ---- signals: touchers survive SIGBUS and SIGSEGV ----------------------- */

static _Thread_local sigjmp_buf *jump_on_signal;

static void on_signal(int sig)
{
	if (jump_on_signal)
		siglongjmp(*jump_on_signal, sig);
	/* Not a toucher's: the access faults again and kills us. */
	signal(sig, SIG_DFL);
}

static void catch_signals(void)
{
	struct sigaction sa;

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal;
	sigemptyset(&sa.sa_mask);
	ck_assert_int_eq(sigaction(SIGBUS, &sa, NULL), 0);
	ck_assert_int_eq(sigaction(SIGSEGV, &sa, NULL), 0);
}

/* ---- looking at a page ------------------------------------------------- */

const char *const view_names[NR_VIEWS] = {
	"store", "zero", "store and zero", "marker", "wrong",
	"SIGBUS", "SIGSEGV",
};

static enum view classify(const volatile uint64_t *w, uint64_t off)
{
	bool stored = false, zero = false, marker = true;

	for (size_t j = 0; j < pg / 8; j++) {
		/* Atomic: other touchers write the page meanwhile (their
		 * write faults are atomic adds). */
		uint64_t x = __atomic_load_n(&w[j], __ATOMIC_RELAXED);

		if (x != MARKER)
			marker = false;
		if (x == store_word(off, j))
			stored = true;
		else if (!x)
			zero = true;
		else if (!marker)
			return VIEW_WRONG;
	}
	if (marker)
		return VIEW_MARKER;
	return stored && zero ? VIEW_MIXED : zero ? VIEW_ZERO : VIEW_STORE;
}

enum view look(uintptr_t addr, uint64_t off, bool write)
{
	/* Volatile: live across sigsetjmp(). */
	volatile uint64_t *volatile w = (volatile uint64_t *)addr;
	volatile uint64_t o = off;
	volatile bool wr = write;
	sigjmp_buf jb;
	enum view v;
	int sig;

	sig = sigsetjmp(jb, 1);
	if (sig) {
		jump_on_signal = NULL;
		return sig == SIGBUS ? VIEW_SIGBUS : VIEW_SIGSEGV;
	}
	jump_on_signal = &jb;
	if (wr)
		__atomic_fetch_add(w, 0, __ATOMIC_RELAXED);
	v = classify(w, o);
	jump_on_signal = NULL;
	return v;
}

/* ---- forked children -------------------------------------------------- */

int child_touch(const struct area *a, bool backwards)
{
	for (size_t n = 0; n < a->pages; n++) {
		size_t i = backwards ? a->pages - 1 - n : n;
		enum view v = look(page_addr(a, i), page_off(a, i), i & 1);

		if (v != VIEW_STORE)
			return 10 + (int)v;
	}
	return 0;
}

pid_t reap_child(pid_t pid, double end, int *status)
{
	pid_t w;

	while ((w = waitpid(pid, status, WNOHANG)) == 0 &&
	       vmr_test_now() < end)
		vmr_test_sleep(0.001);
	if (w == 0) {
		kill(pid, SIGKILL);
		waitpid(pid, status, 0);
	}
	return w;
}

int wait_child(pid_t pid)
{
	int status = 0;
	pid_t w = reap_child(pid, vmr_test_now() + deadline_s, &status);

	if (w == 0)
		ck_abort_msg("the forked child still faulting after %.0f s",
			     deadline_s);
	ck_assert_int_eq(w, pid);
	return status;
}

void assert_child_read_right(int status)
{
	ck_assert_msg(!WIFSIGNALED(status), "the child died of signal %d",
		      WTERMSIG(status));
	ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0,
		      "the child read a page wrong: %s",
		      WEXITSTATUS(status) >= 10 &&
				      WEXITSTATUS(status) < 10 + NR_VIEWS ?
			      view_names[WEXITSTATUS(status) - 10] :
			      "exit status");
}

/* ---- the runtime ----------------------------------------------------------- */

bool refused(int err, const char *test)
{
	if (err != -ENOSYS && err != -EPERM)
		return false;
	fprintf(stderr, "%s: the kernel refuses userfaultfd (%s): skipped\n",
		test, strerror(-err));
	return true;
}

void make_space(enum vmr_retry_policy policy,
		enum vmr_lock_granularity granularity)
{
	struct vmr_space_config cfg = { .policy = policy,
					.granularity = granularity };

	ck_assert_int_eq(vmr_space_create(&cfg, sizeof(cfg), &space), 0);
}

bool open_runtime(const struct rt_opts *o, const char *test)
{
	struct vmr_uffd_config cfg = { .threads = o->threads,
				       .batch = o->batch,
				       .fd = -1,
				       .flags = o->flags };
	int err;

	make_space(o->policy, o->granularity);
	err = vmr_uffd_create(space, &cfg, sizeof(cfg), &uffd);
	if (refused(err, test))
		return false;
	ck_assert_int_eq(err, 0);
	can_poison = vmr_uffd_features(uffd) & UFFD_FEATURE_POISON;
	return true;
}

bool need_fork_events(const char *test)
{
	if (VMR_TEST_TSAN) {
		fprintf(stderr, "%s: fork() with EVENT_FORK under TSan: "
				"skipped\n",
			test);
		return false;
	}
	if (vmr_uffd_features(uffd) & UFFD_FEATURE_EVENT_FORK)
		return true;
	fprintf(stderr, "%s: no EVENT_FORK (needs CAP_SYS_PTRACE): skipped\n",
		test);
	return false;
}

struct vmr_uffd_stats ustats(void)
{
	struct vmr_uffd_stats st;

	ck_assert_int_eq(vmr_uffd_stats(uffd, &st, sizeof(st)), 0);
	return st;
}

struct vmr_stats sstats(void)
{
	struct vmr_stats st;

	ck_assert_int_eq(vmr_space_stats(space, &st, sizeof(st)), 0);
	return st;
}

struct vmr_uffd_stats settled_ustats(void)
{
	struct vmr_uffd_stats was = ustats(), now;
	uint64_t faults = sstats().faults;
	double end = vmr_test_now() + deadline_s;
	int still = 0;

	while (still < 5) {
		ck_assert_msg(vmr_test_now() < end,
			      "the runtime's counters never held still");
		vmr_test_sleep(0.002);
		now = ustats();
		if (!memcmp(&now, &was, sizeof(now)) &&
		    sstats().faults == faults) {
			still++;
		} else {
			still = 0;
			faults = sstats().faults;
		}
		was = now;
	}
	return now;
}

static void *destroyer_main(void *arg)
{
	struct destroyer *d = arg;

	urcu_memb_register_thread();
	d->ret = vmr_uffd_destroy(d->u);
	urcu_memb_unregister_thread();
	atomic_store(&d->done, true);
	return NULL;
}

void start_destroy(struct destroyer *d)
{
	memset(d, 0, sizeof(*d));
	d->u = uffd;
	atomic_init(&d->done, false);
	ck_assert_int_eq(pthread_create(&d->thread, NULL, destroyer_main, d),
			 0);
}

void join_destroy(struct destroyer *d, double seconds)
{
	int err = vmr_test_join(d->thread, seconds);

	ck_assert_msg(!err, "vmr_uffd_destroy() still running after %.1f s",
		      seconds);
	ck_assert_int_eq(d->ret, 0);
	uffd = NULL;
}

/* ---- the fixture -------------------------------------------------------- */

void harness_setup(double deadline)
{
	urcu_memb_register_thread();
	pg = (size_t)sysconf(_SC_PAGESIZE);
	deadline_s = deadline;
	memset(&store, 0, sizeof(store));
	store.gate_off = UINT64_MAX;
	atomic_init(&store.gate_open, true);
	atomic_init(&store.at_gate, 0);
	atomic_init(&store.reads, 0);
	nr_areas = 0;
	nr_maps = 0;
	space = NULL;
	uffd = NULL;
	catch_signals();
}

void harness_teardown(void)
{
	/* Nothing of the runtime's is left in flight on the space. */
	ck_assert_int_eq(vmr_space_destroy(space), 0);
	space = NULL;
	for (size_t i = 0; i < nr_maps; i++)
		if (maps[i].len)
			munmap(maps[i].addr, maps[i].len);
	nr_maps = 0;
	for (size_t i = 0; i < nr_areas; i++)
		free(areas[i].removed);
	nr_areas = 0;
	urcu_memb_unregister_thread();
}

TCase *add_tcase(Suite *s, const char *name, double timeout, SFun setup,
		 SFun teardown)
{
	TCase *tc = tcase_create(name);

	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, timeout);
	suite_add_tcase(s, tc);
	return tc;
}
