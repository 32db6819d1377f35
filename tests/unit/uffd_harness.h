/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The harness the two userfaultfd suites share: test_uffd.c (the runtime's
 * behaviour on real userfaultfd) and test_uffd_race.c (events and installs
 * landed at chosen points of one fault).  Both need the same pieces: a
 * backing store whose pages tell where they came from, anonymous areas of
 * the process to register, a way to look at a page that survives SIGBUS
 * and SIGSEGV, a runtime to open (or a skip where the kernel refuses it),
 * its counters once idle, a destroy on a thread of its own, forked
 * children that touch pages, and the fixture that resets all of it.  One
 * copy of each lives here; what only one suite uses stays in that suite.
 *
 * Rules, as in every suite (vmr_test.h):
 *  - Worker threads (touchers, destroyers, handler threads in the store)
 *    only record; the test thread asserts, after joining them.  Nothing
 *    here that may run on a worker thread asserts: look(), store_read()
 *    and copy_marker() return what happened.
 *  - Everything that must end is bounded: threads are joined with
 *    vmr_test_join(), waits poll with VMR_WAIT_FOR(), a store read waits
 *    at its gate for GATE_MAX_S at most, and the harness's own waits
 *    (settled_ustats(), wait_child()) end after the suite's deadline,
 *    handed to harness_setup().  Each TCase has a timeout as a last resort.
 *  - The state below is file-scope and one per test: Check runs each test
 *    in a process of its own (fork mode), and harness_setup() resets it.
 */
#ifndef UFFD_HARNESS_H
#define UFFD_HARNESS_H

#include "vmr_test.h"

#include <check.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <vmaretry.h>

#define PROT_RW (VMR_PROT_READ | VMR_PROT_WRITE)
/* The bound on vmr_uffd_destroy() with faults in flight. */
#define DESTROY_S 5.0
/* Every 8-byte word of a test MARKER page. */
#define MARKER 0xa5a5a5a5a5a5a5a5ull

/* ---- the test's state: set up by harness_setup(), one per test -------- */

/* The system page size. */
extern size_t pg;
/* The space and the runtime over it (NULL until opened; a test that
 * destroys either itself sets it to NULL, and teardown skips it). */
extern struct vmr_space *space;
extern struct vmr_uffd *uffd;
/* The runtime poisons pages (UFFD_FEATURE_POISON): set by
 * open_runtime(); test_uffd.c's views depend on it. */
extern bool can_poison;

/* ---- the backing store ------------------------------------------------ */

/*
 * What the store does.  Its page at offset @off holds a function of (@off,
 * word) with no zero byte, so a page from the wrong offset, a zero page, a
 * torn page or garbage all show.  Reads of pages whose number (offset /
 * page size) is a multiple of @fail_every fail with -EIO (0: none); those
 * of a multiple of @slow_every sleep @delay_us first (0: none); a read of
 * @gate_off waits until @gate_open (at most GATE_MAX_S), so that a test
 * knows a fault is under way and its handler thread busy.  @on_read, if
 * set, runs first in every read, on the handler thread (the race suite's
 * AT_STORE injection).  All of it set by the test thread before the faults.
 */
struct store {
	uint64_t fail_every;
	uint64_t slow_every;
	unsigned int delay_us;
	void (*on_read)(uint64_t off);
	_Atomic uint64_t gate_off; /* set before the fault: ordered by the
				    * kernel, which TSan cannot see */
	atomic_bool gate_open;
	atomic_uint at_gate; /* reads that reached the gate */
	atomic_ulong reads;
};

extern struct store store;
/* The store's ops, to map with &store as the argument. */
extern const struct vmr_uffd_store_ops store_ops;

/* The store's read callback: runs on a handler thread, never asserts. */
int store_read(void *arg, uint64_t off, void *buf, size_t len);

/*
 * UFFDIO_COPY of a MARKER page to @addr on @fd, as a second resolver
 * behind the runtime's back (leaving the wake to it if @dontwake): 0 or
 * -errno.  May run on a handler thread: never asserts.
 */
int copy_marker(int fd, uintptr_t addr, bool dontwake);

/* ---- areas: the process's memory the tests register ------------------- */

/*
 * One anonymous mapping of the process, its page 0 at store offset
 * @offset.  The rest says what test_uffd.c's touchers may see there (the
 * race suite leaves it zero): a page may read zero where it was removed
 * (@removed, per page, allocated by the test, freed at teardown) or where
 * the runtime went away (@may_zero), the test's MARKER where @marker_ok,
 * SIGBUS on page @poison_ok - 1.
 */
struct area {
	unsigned char *base;
	size_t pages;
	uint64_t offset;	/* store offset of page 0 */
	atomic_uchar *removed;	/* per page: removed once; NULL if never */
	bool may_zero;
	bool marker_ok;
	size_t poison_ok;	/* page + 1 that may get SIGBUS; 0 if none */
};

/*
 * @pages pages of anonymous memory (THP off: userfaultfd resolves base
 * pages), unmapped at teardown unless forget_memory() said otherwise.
 */
void *map_memory(size_t pages, int prot);
/* The range at @addr is no longer the test's to unmap: the test unmapped
 * it, or a REMAP moved it away and someone else may have mapped the hole
 * since. */
void forget_memory(void *addr);
/* A new area of @pages pages whose page 0 is at store page @store_page;
 * not registered with the runtime yet (map_area()). */
struct area *new_area(size_t pages, uint64_t store_page);
uintptr_t page_addr(const struct area *a, size_t i);
uint64_t page_off(const struct area *a, size_t i);
/* vmr_uffd_map() of pages [@first, @first + @count) of @a. */
int map_pages(struct area *a, size_t first, size_t count, unsigned int prot);
/* All of @a, read-write; asserts that the runtime took it. */
void map_area(struct area *a);
/* Whether the space has a region at @addr, and its offset there. */
bool region_at(uintptr_t addr, uint64_t *offset);

/* ---- looking at a page ------------------------------------------------ */

enum view {
	VIEW_STORE,  /* the store's contents at its offset */
	VIEW_ZERO,   /* all zero */
	VIEW_MIXED,  /* store words and zero words: removed while looked at */
	VIEW_MARKER, /* the test's MARKER */
	VIEW_WRONG,  /* anything else */
	VIEW_SIGBUS,
	VIEW_SIGSEGV,
	NR_VIEWS
};

extern const char *const view_names[NR_VIEWS];

/*
 * Touch the page at @addr (a write, of nothing, if @write) and look at it
 * as the store's page at @off; a signal the access got is the view (the
 * handlers harness_setup() installs jump back here).  Any thread.
 */
enum view look(uintptr_t addr, uint64_t off, bool write);

/* In a forked child: touch every page of @a (the last first if
 * @backwards), every other one with a write; 0 if all read their store
 * contents, else 10 + the first wrong view (the child's exit status). */
int child_touch(const struct area *a, bool backwards);
/*
 * Reap the forked child @pid, killed (SIGKILL) if it is still running at
 * @end (vmr_test_now()'s clock): waitpid()'s answer, @pid, or 0 where it
 * was killed, or -1; its status in @status.  Never asserts: the race
 * suite's forker calls it on a worker thread.
 */
pid_t reap_child(pid_t pid, double end, int *status);
/* The exit status of the forked child @pid, which must end within the
 * suite's deadline (it is killed if not, and the test fails). */
int wait_child(pid_t pid);
/* A child_touch() status says every page read right. */
void assert_child_read_right(int status);

/* ---- the runtime ------------------------------------------------------ */

/* A space's policy and lock granularity, a runtime's threads and flags;
 * zero fields are the defaults of a zeroed config. */
struct rt_opts {
	enum vmr_retry_policy policy;
	enum vmr_lock_granularity granularity;
	unsigned int threads;
	unsigned int batch;
	unsigned int flags;
};

/* Whether @err says the kernel refuses userfaultfd; if so, say on stderr
 * that @test is skipped (Check has no skip: it passes). */
bool refused(int err, const char *test);
/* space = a new space under @policy and @granularity. */
void make_space(enum vmr_retry_policy policy,
		enum vmr_lock_granularity granularity);
/* A space and a runtime over it (can_poison set from its features);
 * false, said on stderr, where userfaultfd is refused. */
bool open_runtime(const struct rt_opts *o, const char *test);
/* Whether the runtime has EVENT_FORK and the build can fork with it (not
 * under TSan); if not, say on stderr that @test is skipped. */
bool need_fork_events(const char *test);

struct vmr_uffd_stats ustats(void);
struct vmr_stats sstats(void);
/*
 * The runtime's counters once it is idle.  A handler thread counts a copy
 * after the ioctl that woke the faulter, and the engine counts a fault when
 * it returns, so counters read as soon as the touchers are joined may lag:
 * wait (at most the suite's deadline) until they and the engine's fault
 * count hold still for a while.
 */
struct vmr_uffd_stats settled_ustats(void);

/* vmr_uffd_destroy() on another thread, which may take the time it needs. */
struct destroyer {
	pthread_t thread;
	struct vmr_uffd *u;
	int ret;
	atomic_bool done;
};

/* Destroy the runtime (uffd) on @d's thread. */
void start_destroy(struct destroyer *d);
/* Join it within @seconds; it returned 0, and uffd is NULL now. */
void join_destroy(struct destroyer *d, double seconds);

/* ---- the fixture -------------------------------------------------------- */

/*
 * The shared part of each suite's setup: register the thread with RCU,
 * reset the state above and the store (gate open, no failures, no delay,
 * no hook), and catch SIGBUS and SIGSEGV for look().  @deadline bounds
 * the harness's own waits: the suite's DEADLINE_S.
 */
void harness_setup(double deadline);
/*
 * The shared part of each suite's teardown, once the suite has destroyed
 * the runtime its own way: destroy the space (nothing of the runtime's may
 * be left in flight on it), unmap the test's memory, unregister.
 */
void harness_teardown(void);
/* A TCase of @s named @name, under @setup and @teardown (checked: in the
 * test's process), that fails after @timeout seconds. */
TCase *add_tcase(Suite *s, const char *name, double timeout, SFun setup,
		 SFun teardown);

#endif /* UFFD_HARNESS_H */
