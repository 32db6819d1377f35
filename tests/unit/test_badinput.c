/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The bad-input sweep: every exported call (lib/libvmaretry.map) with NULL
 * pointers, zero sizes, ranges that wrap, unaligned addresses and lengths,
 * out-of-range values (unknown bits, bad enums, counts too large, size-tagged
 * structs too large with a non-zero tail or too small) and calls made in the
 * wrong context (unlocking what is not held, write-locking without the space
 * write lock, faulting in a shut-down space, destroying what is in use,
 * calling from a thread never registered with RCU, from inside a fault
 * handler, under a read hold of the space lock, after shutdown).
 * Each must return the -errno its header documents and change nothing.
 *
 * "Nothing" is checked against a model of the state, not by spot checks: a
 * snapshot (struct snap) records everything a call could touch: every
 * region of the space with its bounds, protection, offset, policy, private
 * data, ops and write marks (white-box, through lib/mm.h); the space lock's
 * words; the page maps' list; every counter of vmr_space_stats(); each
 * page's lock, up-to-date and pin state in the test's page map; every entry
 * of the test's tree; and the runtime's counters and what the kernel has
 * registered with its userfaultfd (VmFlags in /proc/self/smaps).  A test
 * takes one before the bad call and compares it with one taken after; the
 * comparison names the first field that moved.  The few calls that must
 * take the space lock before they can refuse (map over a region: -EEXIST)
 * are compared with the lock's own words and counters left out.  Each
 * snapshot taken after a bad call is also held against a plain array model
 * of what the fixture mapped (struct model: start, end, prot, offset,
 * private data), read through the public accessors (vmr_region_start() and
 * the rest) as well as white-box, so that a change that happened before the
 * "before" snapshot is caught too.
 *
 * Tables carry the cases: one row per bad argument, each naming itself in
 * the failure message.  Lock misuse is a table too, run as a loop test so
 * that each row gets its own process: built with debug_checks (VMR_DEBUG)
 * misuse aborts, and the row is a signal test; otherwise it returns -EPERM
 * and the row checks that nothing changed.  Calls that are only legal
 * inside a fault handler are made from one (struct probe), which records
 * what it saw; the test thread asserts after the fault returns.
 *
 * The runtime's cases that need a userfaultfd skip, saying so on stderr,
 * where the kernel refuses one (as tests/unit/test_uffd.c does); its
 * argument checks, which must refuse before the kernel is asked, run
 * everywhere.
 */
#include "mm.h"
#include "vmr_test.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/userfaultfd.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#include <urcu/urcu-memb.h>

#define PG 4096u
#define BASE ((uintptr_t)1 << 32)
#define P(n) (BASE + (uintptr_t)(n) * PG)
#define RW (VMR_PROT_READ | VMR_PROT_WRITE)
#define NR_PAGES 8u
#define DEF VMR_FAULT_FLAG_DEFAULT
/* Not a valid pointer to anything: what an out parameter holds before. */
#define SENTINEL ((void *)(uintptr_t)0x5a5a5a5a5a5a5a5aull)
#define FILL 0xa5u

#ifdef VMR_DEBUG
#define MISUSE_ABORTS true
#else
#define MISUSE_ABORTS false
#endif

/* ---- the state under test ----------------------------------------------- */

static struct vmr_space *space;
static struct vmr_pagemap *map;     /* NR_PAGES pages, on @space */
static struct vmr_tree *tree;
static struct vmr_uffd *uffd;       /* the runtime's TCase only */
static unsigned char *area;         /* process memory for the runtime */
static size_t upg;                  /* the system page size */
static int tree_values[3];
static int priv_a, priv_b;

/* ---- the model: what the fixture mapped, in address order -------------- */

#define MODEL_ANY_PRIVATE SENTINEL /* private data not known to the test */

static struct model {
	size_t nr;
	struct {
		uintptr_t start, end;
		unsigned int prot;
		uint64_t offset;
		void *private_data;
	} r[4];
} model;

/* ---- snapshot ----------------------------------------------------------- */

#define SNAP_REGIONS 16
#define SNAP_ENTRIES 16
#define SNAP_PAGES NR_PAGES
#define AREA_PAGES 8u

#define PAGE_LOCKED 0x1u
#define PAGE_UPTODATE 0x2u
#define PAGE_PINNED 0x4u

struct snap_region {
	const struct vmr_region *r;
	uintptr_t start, end;
	unsigned int prot, policy;
	uint64_t offset;
	void *private_data;
	struct vmr_region_ops ops;
	bool detached;
	uint64_t write_seq;
	uintptr_t write_start, write_end;
};

struct snap {
	/* the space */
	size_t nr_regions, count, page_size;
	struct snap_region region[SNAP_REGIONS];
	bool shut_down, write_locked, readers_busy;
	uint32_t lock_state, next_ticket, serving;
	uint64_t lock_seq;
	const void *lock_owner;
	const struct vmr_pagemap *maps;
	uint64_t stats[VMR_NR_COUNTERS];
	/* the page map */
	size_t nr_pages;
	unsigned int page[SNAP_PAGES];
	/* the tree */
	size_t nr_entries, tree_count;
	struct vmr_tree_entry entry[SNAP_ENTRIES];
	const char *tree_broken;
	/* the runtime, and what the kernel registered in @area */
	uint64_t ustats[sizeof(struct vmr_uffd_stats) / sizeof(uint64_t)];
	int ufd;
	uint64_t features;
	bool dead;
	unsigned int kmodes[AREA_PAGES];
};

/* Compare with the space lock's words and counters left out. */
#define ALLOW_LOCK_CYCLE 0x1u

/*
 * The userfaultfd modes registered over @addr: 'um', 'uw' and 'ui' in the
 * VmFlags of its line of /proc/self/smaps (0x1, 0x2, 0x4); 0 where it is
 * not mapped, ~0u where smaps cannot be read.
 */
static unsigned int kernel_modes(uintptr_t addr)
{
	FILE *f = fopen("/proc/self/smaps", "r");
	char line[512];
	bool here = false;
	unsigned int modes = 0;

	if (!f)
		return ~0u;
	while (fgets(line, sizeof(line), f)) {
		unsigned long lo, hi;
		char *tok, *save;

		if (sscanf(line, "%lx-%lx ", &lo, &hi) == 2) {
			here = lo <= addr && addr < hi;
			continue;
		}
		if (!here || strncmp(line, "VmFlags:", 8))
			continue;
		for (tok = strtok_r(line + 8, " \n", &save); tok;
		     tok = strtok_r(NULL, " \n", &save)) {
			if (!strcmp(tok, "um"))
				modes |= 0x1;
			else if (!strcmp(tok, "uw"))
				modes |= 0x2;
			else if (!strcmp(tok, "ui"))
				modes |= 0x4;
		}
		break;
	}
	fclose(f);
	return modes;
}

static void snap_take(struct snap *s)
{
	memset(s, 0, sizeof(*s));
	if (space) {
		struct vmr_tree_iter it;
		struct vmr_tree_entry e;

		vmr_rcu_read_lock(space->flavor);
		vmr_tree_iter_start(&it, space->tree, 0);
		while (vmr_tree_iter_next(&it, &e)) {
			const struct vmr_region *r = e.value;
			struct snap_region *sr;

			ck_assert_uint_lt(s->nr_regions, SNAP_REGIONS);
			sr = &s->region[s->nr_regions++];
			sr->r = r;
			sr->start = r->start;
			sr->end = r->end;
			sr->prot = r->prot;
			sr->policy = r->policy;
			sr->offset = r->offset;
			sr->private_data = r->private_data;
			sr->ops = r->ops;
			sr->detached = atomic_load(&r->detached);
			sr->write_seq = atomic_load(&r->write_seq);
			sr->write_start = atomic_load(&r->write_start);
			sr->write_end = atomic_load(&r->write_end);
			/* The tree's own idea of the bounds must agree, and
			 * so must the public accessors. */
			ck_assert(e.start == r->start && e.end == r->end);
			ck_assert(vmr_region_start(r) == r->start &&
				  vmr_region_end(r) == r->end &&
				  vmr_region_prot(r) == r->prot &&
				  vmr_region_offset(r) == r->offset &&
				  vmr_region_private(r) == r->private_data &&
				  vmr_region_space(r) == space &&
				  !vmr_region_is_detached(r));
			ck_assert(vmr_region_ops(r) != NULL &&
				  vmr_region_ops(r)->fault == r->ops.fault);
			ck_assert_ptr_eq(vmr_space_find_region(space,
							       r->start),
					 r);
		}
		vmr_rcu_read_unlock(space->flavor);
		s->count = vmr_space_count_regions(space);
		s->page_size = vmr_space_page_size(space);
		s->shut_down = vmr_space_is_shut_down(space);
		s->write_locked = vmr_space_is_write_locked(space);
		s->readers_busy = vmr_readers_busy(space);
		s->lock_state = atomic_load(&space->lock.state);
		s->lock_seq = atomic_load(&space->lock.seq);
		s->lock_owner = atomic_load(&space->lock.owner);
		s->next_ticket = atomic_load(&space->lock.next_ticket);
		s->serving = atomic_load(&space->lock.serving);
		pthread_mutex_lock(&space->maps_lock);
		s->maps = space->maps;
		pthread_mutex_unlock(&space->maps_lock);
		ck_assert_int_eq(vmr_space_stats(space,
						 (struct vmr_stats *)s->stats,
						 sizeof(s->stats)),
				 0);
	}
	if (map) {
		s->nr_pages = vmr_pagemap_size(map);
		for (size_t i = 0; i < s->nr_pages && i < SNAP_PAGES; i++) {
			/* Locked: a trylock fails.  If it succeeds, undo it
			 * (no waiter exists to be woken). */
			if (vmr_page_trylock(map, i))
				ck_assert_int_eq(vmr_page_unlock(map, i), 0);
			else
				s->page[i] |= PAGE_LOCKED;
			if (vmr_page_uptodate(map, i))
				s->page[i] |= PAGE_UPTODATE;
			if (vmr_page_pinned(map, i))
				s->page[i] |= PAGE_PINNED;
		}
	}
	if (tree) {
		struct vmr_tree_iter it;
		struct vmr_tree_entry e;

		vmr_rcu_read_lock(vmr_tree_flavor(tree));
		vmr_tree_iter_start(&it, tree, 0);
		while (vmr_tree_iter_next(&it, &e)) {
			ck_assert_uint_lt(s->nr_entries, SNAP_ENTRIES);
			s->entry[s->nr_entries++] = e;
		}
		s->tree_count = vmr_tree_count(tree);
		vmr_rcu_read_unlock(vmr_tree_flavor(tree));
		s->tree_broken = vmr_tree_validate(tree);
	}
	if (uffd) {
		ck_assert_int_eq(vmr_uffd_stats(uffd,
						(struct vmr_uffd_stats *)s->ustats,
						sizeof(s->ustats)),
				 0);
		s->ufd = vmr_uffd_fd(uffd);
		s->features = vmr_uffd_features(uffd);
		s->dead = vmr_uffd_is_dead(uffd);
	}
	if (area)
		for (size_t i = 0; i < AREA_PAGES; i++)
			s->kmodes[i] = kernel_modes((uintptr_t)area + i * upg);
}

static const char *const stat_names[] = {
	"vma_lock_success", "vma_lock_abort", "vma_lock_retry",
	"vma_lock_miss", "faults", "vma_retries", "vma_retries_exhausted",
	"space_lock_faults", "space_retries", "retry_disallowed", "result_ok",
	"result_nopage", "result_major", "result_completed", "result_sigsegv",
	"result_sigbus", "result_oom", "result_unfinished", "bad_results",
	"page_wait_sleeps", "page_reads", "page_rereads", "space_read_locks",
	"space_read_waits", "space_read_wait_ns", "space_write_locks",
	"space_write_waits", "space_write_wait_ns",
};

static const char *stat_name(size_t c)
{
	if (c < VMR_ARRAY_SIZE(stat_names))
		return stat_names[c];
	return c < VMR_STAT(space_write_wait_hist) ? "space_read_wait_hist" :
	       c < VMR_STAT(fault_latency_hist) ? "space_write_wait_hist" :
						   "fault_latency_hist";
}

/* A counter of the space lock's own acquisitions. */
static bool lock_counter(size_t c)
{
	return c >= VMR_STAT(space_read_locks) &&
	       c < VMR_STAT(fault_latency_hist);
}

#define DIFF(cond, ...)                                                        \
	do {                                                                   \
		if (cond) {                                                    \
			snprintf(why, why_size, __VA_ARGS__);                  \
			return true;                                           \
		}                                                              \
	} while (0)

static bool region_diff(const struct snap_region *a,
			const struct snap_region *b, char *why,
			size_t why_size)
{
	DIFF(a->r != b->r, "region [%#" PRIxPTR ", %#" PRIxPTR
			   ") replaced by another object",
	     a->start, a->end);
	DIFF(a->start != b->start || a->end != b->end,
	     "region bounds [%#" PRIxPTR ", %#" PRIxPTR ") became [%#" PRIxPTR
	     ", %#" PRIxPTR ")",
	     a->start, a->end, b->start, b->end);
	DIFF(a->prot != b->prot, "region %#" PRIxPTR " prot %#x became %#x",
	     a->start, a->prot, b->prot);
	DIFF(a->policy != b->policy, "region %#" PRIxPTR " policy changed",
	     a->start);
	DIFF(a->offset != b->offset, "region %#" PRIxPTR " offset changed",
	     a->start);
	DIFF(a->private_data != b->private_data,
	     "region %#" PRIxPTR " private data changed", a->start);
	DIFF(a->ops.fault != b->ops.fault || a->ops.open != b->ops.open ||
		     a->ops.close != b->ops.close,
	     "region %#" PRIxPTR " ops changed", a->start);
	DIFF(a->detached != b->detached, "region %#" PRIxPTR " detached",
	     a->start);
	DIFF(a->write_seq != b->write_seq || a->write_start != b->write_start ||
		     a->write_end != b->write_end,
	     "region %#" PRIxPTR " write-marked", a->start);
	return false;
}

/* Whether @b differs from @a; if so, *@why says in what first. */
static bool snap_diff(const struct snap *a, const struct snap *b,
		      unsigned int allow, char *why, size_t why_size)
{
	DIFF(a->nr_regions != b->nr_regions, "%zu regions became %zu",
	     a->nr_regions, b->nr_regions);
	for (size_t i = 0; i < a->nr_regions; i++)
		if (region_diff(&a->region[i], &b->region[i], why, why_size))
			return true;
	DIFF(a->count != b->count, "region count %zu became %zu", a->count,
	     b->count);
	DIFF(a->page_size != b->page_size, "page size changed");
	DIFF(a->shut_down != b->shut_down, "shut-down state changed");
	DIFF(a->write_locked != b->write_locked, "write hold changed");
	DIFF(a->readers_busy != b->readers_busy,
	     "range read locks held: %d became %d", a->readers_busy,
	     b->readers_busy);
	DIFF(a->lock_state != b->lock_state,
	     "space lock state %#x became %#x", a->lock_state, b->lock_state);
	DIFF(a->lock_owner != b->lock_owner, "space lock owner changed");
	if (!(allow & ALLOW_LOCK_CYCLE)) {
		DIFF(a->lock_seq != b->lock_seq,
		     "space lock seq %" PRIu64 " became %" PRIu64, a->lock_seq,
		     b->lock_seq);
		DIFF(a->next_ticket != b->next_ticket ||
			     a->serving != b->serving,
		     "space lock writer tickets moved");
	}
	DIFF(a->maps != b->maps, "the space's page map list changed");
	for (size_t c = 0; c < VMR_NR_COUNTERS; c++) {
		if ((allow & ALLOW_LOCK_CYCLE) && lock_counter(c))
			continue;
		DIFF(a->stats[c] != b->stats[c],
		     "counter %s (%zu) %" PRIu64 " became %" PRIu64,
		     stat_name(c), c, a->stats[c], b->stats[c]);
	}
	DIFF(a->nr_pages != b->nr_pages, "page map size changed");
	for (size_t i = 0; i < a->nr_pages && i < SNAP_PAGES; i++)
		DIFF(a->page[i] != b->page[i],
		     "page %zu state %#x became %#x (locked 1, up to date 2, "
		     "pinned 4)",
		     i, a->page[i], b->page[i]);
	DIFF(a->nr_entries != b->nr_entries || a->tree_count != b->tree_count,
	     "tree had %zu entries (count %zu), now %zu (count %zu)",
	     a->nr_entries, a->tree_count, b->nr_entries, b->tree_count);
	for (size_t i = 0; i < a->nr_entries; i++)
		DIFF(memcmp(&a->entry[i], &b->entry[i], sizeof(a->entry[i])),
		     "tree entry %zu [%#" PRIxPTR ", %#" PRIxPTR
		     ") became [%#" PRIxPTR ", %#" PRIxPTR ")",
		     i, a->entry[i].start, a->entry[i].end, b->entry[i].start,
		     b->entry[i].end);
	DIFF(b->tree_broken != NULL, "tree broken: %s", b->tree_broken);
	for (size_t c = 0; c < VMR_ARRAY_SIZE(a->ustats); c++)
		DIFF(a->ustats[c] != b->ustats[c],
		     "runtime counter %zu %" PRIu64 " became %" PRIu64, c,
		     a->ustats[c], b->ustats[c]);
	DIFF(a->ufd != b->ufd || a->features != b->features ||
		     a->dead != b->dead,
	     "runtime descriptor, features or liveness changed");
	for (size_t i = 0; i < AREA_PAGES; i++)
		DIFF(a->kmodes[i] != b->kmodes[i],
		     "kernel registration of area page %zu: %#x became %#x", i,
		     a->kmodes[i], b->kmodes[i]);
	return false;
}

#undef DIFF

/* Whether the regions of @s are those of the model; if not, says why. */
static bool model_diff(const struct snap *s, char *why, size_t why_size)
{
	if (!space)
		return false;
	if (s->nr_regions != model.nr || s->count != model.nr) {
		snprintf(why, why_size, "%zu regions (count %zu), model %zu",
			 s->nr_regions, s->count, model.nr);
		return true;
	}
	for (size_t i = 0; i < model.nr; i++) {
		const struct snap_region *r = &s->region[i];

		if (r->start != model.r[i].start || r->end != model.r[i].end ||
		    r->prot != model.r[i].prot ||
		    r->offset != model.r[i].offset ||
		    (model.r[i].private_data != MODEL_ANY_PRIVATE &&
		     r->private_data != model.r[i].private_data)) {
			snprintf(why, why_size,
				 "region %zu [%#" PRIxPTR ", %#" PRIxPTR
				 ") prot %#x offset %" PRIu64
				 " is not the model's [%#" PRIxPTR
				 ", %#" PRIxPTR ") prot %#x offset %" PRIu64,
				 i, r->start, r->end, r->prot, r->offset,
				 model.r[i].start, model.r[i].end,
				 model.r[i].prot, model.r[i].offset);
			return true;
		}
	}
	return false;
}

/*
 * Assert that nothing moved since @before (but what @allow allows), and
 * that the space still holds what the model says.
 */
static void snap_same_as(const struct snap *before, unsigned int allow,
			 const char *what)
{
	struct snap now;
	char why[256];

	snap_take(&now);
	ck_assert_msg(!snap_diff(before, &now, allow, why, sizeof(why)),
		      "%s: %s", what, why);
	ck_assert_msg(!model_diff(&now, why, sizeof(why)), "%s: model: %s",
		      what, why);
}

/*
 * ck_assert that @call returned @want, then that nothing changed but what
 * @allow allows.
 */
#define EXPECT_ALLOWING(allow, before, call, want, what)                       \
	do {                                                                   \
		long long got_ = (long long)(call);                            \
		ck_assert_msg(got_ == (long long)(want),                       \
			      "%s: %s returned %lld, not %lld", (what), #call, \
			      got_, (long long)(want));                        \
		snap_same_as((before), (allow), (what));                       \
	} while (0)
#define EXPECT(before, call, want, what)                                       \
	EXPECT_ALLOWING(0, before, call, want, what)

/* ---- ranges that no update may accept ----------------------------------- */

struct bad_range {
	const char *what;
	uintptr_t start;
	size_t len;
};

#define MAX_BAD_RANGES 8

/* Every way a [start, start + len) range near @base can be bad. */
static size_t bad_ranges(struct bad_range *v, uintptr_t base, size_t pg)
{
	uintptr_t top = UINTPTR_MAX & ~(uintptr_t)(pg - 1);
	size_t n = 0;

	v[n++] = (struct bad_range){ "empty", base, 0 };
	v[n++] = (struct bad_range){ "unaligned start", base + 1, pg };
	v[n++] = (struct bad_range){ "start a byte short of a page",
				     base + pg - 1, pg };
	v[n++] = (struct bad_range){ "unaligned length", base, pg + 1 };
	v[n++] = (struct bad_range){ "half a page", base, pg / 2 };
	v[n++] = (struct bad_range){ "wraps", top, 2 * pg };
	v[n++] = (struct bad_range){ "ends at the top of the address space",
				     top, pg };
	v[n++] = (struct bad_range){ "wraps by most of the address space",
				     base, SIZE_MAX & ~(size_t)(pg - 1) };
	ck_assert_uint_le(n, MAX_BAD_RANGES);
	return n;
}

/* ---- a fault handler that makes bad calls from inside a fault ---------- */

#define MAX_OUTCOMES 96

struct outcome {
	const char *what;
	long long got, want;
	char diff[200];
};

struct probe {
	void (*body)(struct vmr_fault *vmf, struct probe *p);
	vmr_fault_t ret;
	unsigned int calls;
	unsigned int nr;
	struct outcome out[MAX_OUTCOMES];
};

/* Record what a call returned and whether the state moved since @before. */
static void probe_record(struct probe *p, const char *what, long long got,
			 long long want, const struct snap *before)
{
	struct outcome *o;
	struct snap now;

	if (p->nr == MAX_OUTCOMES)
		return;
	o = &p->out[p->nr++];
	o->what = what;
	o->got = got;
	o->want = want;
	o->diff[0] = 0;
	if (before) {
		snap_take(&now);
		if (!snap_diff(before, &now, 0, o->diff, sizeof(o->diff)) &&
		    !model_diff(&now, o->diff, sizeof(o->diff)))
			o->diff[0] = 0;
	}
}

static void probe_assert(const struct probe *p, unsigned int nr_expected)
{
	ck_assert_uint_eq(p->calls, 1);
	ck_assert_uint_eq(p->nr, nr_expected);
	for (unsigned int i = 0; i < p->nr; i++) {
		const struct outcome *o = &p->out[i];

		ck_assert_msg(o->got == o->want, "%s: got %lld, not %lld",
			      o->what, o->got, o->want);
		ck_assert_msg(!o->diff[0], "%s: %s", o->what, o->diff);
	}
}

static vmr_fault_t probe_fault(struct vmr_fault *vmf)
{
	struct probe *p = vmf->ctx;

	p->calls++;
	if (p->body)
		p->body(vmf, p);
	return p->ret;
}

static void probe_open(struct vmr_region *region,
		       const struct vmr_region *from)
{
	(void)region;
	(void)from;
}

static void probe_close(struct vmr_region *region)
{
	(void)region;
}

static const struct vmr_region_ops probe_ops = {
	.fault = probe_fault,
	.open = probe_open,
	.close = probe_close,
};

/* ---- fixtures ------------------------------------------------------------ */

static struct vmr_region_desc desc_a(void)
{
	return (struct vmr_region_desc){ .start = P(0),
					 .len = 4 * PG,
					 .prot = RW,
					 .ops = &probe_ops,
					 .ops_size = sizeof(probe_ops),
					 .private_data = &priv_a };
}

/*
 * Region A: [P(0), P(4)) read-write, with the probe handler.  Region B:
 * [P(6), P(8)) read-only at offset 8 pages, no ops, VMR_HOLD_IO.  A page
 * map of NR_PAGES: page 0 plain, 1 locked, 2 up to date, 3 pinned, 4 up to
 * date and pinned.  A tree of [0x10, 0x20), [0x20, 0x30), [0x40, 0x50).
 */
static void setup(void)
{
	struct vmr_space_config cfg = { .page_size = PG,
					.granularity = VMR_LOCK_RANGE };
	struct vmr_region_desc a = desc_a();
	struct vmr_region_desc b = { .start = P(6),
				     .len = 2 * PG,
				     .prot = VMR_PROT_READ,
				     .offset = 8 * PG,
				     .private_data = &priv_b,
				     .policy = VMR_HOLD_IO };

	urcu_memb_register_thread();
	ck_assert_int_eq(vmr_space_create(&cfg, sizeof(cfg), &space), 0);
	ck_assert_int_eq(vmr_map(space, &a, sizeof(a), 0), 0);
	ck_assert_int_eq(vmr_map(space, &b, sizeof(b), 0), 0);
	model.nr = 2;
	model.r[0].start = a.start;
	model.r[0].end = a.start + a.len;
	model.r[0].prot = a.prot;
	model.r[0].offset = a.offset;
	model.r[0].private_data = a.private_data;
	model.r[1].start = b.start;
	model.r[1].end = b.start + b.len;
	model.r[1].prot = b.prot;
	model.r[1].offset = b.offset;
	model.r[1].private_data = b.private_data;
	ck_assert_int_eq(vmr_pagemap_create(space, NR_PAGES, &map), 0);
	ck_assert(vmr_page_trylock(map, 1));
	ck_assert(vmr_page_trylock(map, 2));
	ck_assert_int_eq(vmr_page_mark_uptodate(map, 2), 0);
	ck_assert_int_eq(vmr_page_unlock(map, 2), 0);
	ck_assert_int_eq(vmr_page_pin(map, 3), 0);
	ck_assert(vmr_page_trylock(map, 4));
	ck_assert_int_eq(vmr_page_mark_uptodate(map, 4), 0);
	ck_assert_int_eq(vmr_page_unlock(map, 4), 0);
	ck_assert_int_eq(vmr_page_pin(map, 4), 0);
	ck_assert_int_eq(vmr_tree_create(NULL, &tree), 0);
	ck_assert_int_eq(vmr_tree_insert(tree, 0x10, 0x20, &tree_values[0]), 0);
	ck_assert_int_eq(vmr_tree_insert(tree, 0x20, 0x30, &tree_values[1]), 0);
	ck_assert_int_eq(vmr_tree_insert(tree, 0x40, 0x50, &tree_values[2]), 0);
}

static void teardown(void)
{
	vmr_tree_destroy(tree, NULL, NULL);
	tree = NULL;
	vmr_pagemap_destroy(map);
	map = NULL;
	/* No bad call may have left a lock held: destroy would refuse. */
	ck_assert_int_eq(vmr_space_destroy(space), 0);
	space = NULL;
	urcu_memb_unregister_thread();
}

/* ---- RCU helpers --------------------------------------------------------- */

START_TEST(test_null_flavor_means_the_default_flavor)
{
	/* No errno to return: NULL is documented as urcu-memb. */
	ck_assert_ptr_eq(vmr_rcu_default_flavor(), &urcu_memb_flavor);
	ck_assert(!urcu_memb_read_ongoing());
	vmr_rcu_read_lock(NULL);
	ck_assert(urcu_memb_read_ongoing());
	vmr_rcu_read_unlock(NULL);
	ck_assert(!urcu_memb_read_ongoing());
	/* The fixture registered this thread: unregister and register
	 * again through NULL, which must be the same flavor. */
	vmr_rcu_unregister_thread(NULL);
	vmr_rcu_register_thread(NULL);
	vmr_rcu_read_lock(vmr_space_flavor(space));
	ck_assert(urcu_memb_read_ongoing());
	vmr_rcu_read_unlock(vmr_space_flavor(space));
	ck_assert_ptr_eq(vmr_tree_flavor(tree), &urcu_memb_flavor);
}
END_TEST

/* ---- the tree ------------------------------------------------------------ */

START_TEST(test_tree_constructor_and_getters_refuse_or_tolerate_null)
{
	struct vmr_tree_entry e = { 1, 2, SENTINEL };
	struct vmr_tree *t = SENTINEL;
	struct vmr_tree_iter it;
	struct snap before;

	snap_take(&before);
	EXPECT(&before, vmr_tree_create(NULL, NULL), -EINVAL,
	       "create with no out pointer");
	EXPECT(&before, vmr_tree_create(vmr_rcu_default_flavor(), NULL),
	       -EINVAL, "create with a flavor and no out pointer");
	ck_assert_ptr_eq(t, SENTINEL);
	vmr_tree_destroy(NULL, NULL, NULL); /* nothing is done */
	ck_assert_ptr_null(vmr_tree_flavor(NULL));
	ck_assert_uint_eq(vmr_tree_count(NULL), 0);
	vmr_rcu_read_lock(NULL);
	ck_assert_ptr_null(vmr_tree_lookup(NULL, 0x10, &e));
	ck_assert_ptr_null(vmr_tree_find_intersection(NULL, 0, UINTPTR_MAX, &e));
	/* A cursor over no tree is empty at both ends. */
	vmr_tree_iter_start(&it, NULL, 0);
	ck_assert(!vmr_tree_iter_next(&it, &e));
	ck_assert(!vmr_tree_iter_prev(&it, &e));
	vmr_rcu_read_unlock(NULL);
	/* Nothing was copied out. */
	ck_assert(e.start == 1 && e.end == 2 && e.value == SENTINEL);
	snap_same_as(&before, 0, "NULL tree getters");
}
END_TEST

START_TEST(test_tree_reads_of_empty_or_inverted_ranges_find_nothing)
{
	static const struct {
		const char *what;
		uintptr_t start, end;
	} cases[] = {
		{ "empty range inside an entry", 0x18, 0x18 },
		{ "inverted range", 0x30, 0x10 },
		{ "inverted over everything", UINTPTR_MAX, 0 },
		{ "a hole", 0x30, 0x40 },
		{ "above every entry", 0x50, UINTPTR_MAX },
	};
	struct vmr_tree_entry e = { 1, 2, SENTINEL };
	struct snap before;

	snap_take(&before);
	vmr_rcu_read_lock(NULL);
	for (size_t i = 0; i < VMR_ARRAY_SIZE(cases); i++)
		ck_assert_msg(!vmr_tree_find_intersection(tree, cases[i].start,
							  cases[i].end, &e),
			      "%s", cases[i].what);
	ck_assert_ptr_null(vmr_tree_lookup(tree, 0x30, &e));
	ck_assert_ptr_null(vmr_tree_lookup(tree, UINTPTR_MAX, &e));
	ck_assert_ptr_null(vmr_tree_lookup(tree, 0, &e));
	vmr_rcu_read_unlock(NULL);
	ck_assert(e.start == 1 && e.end == 2 && e.value == SENTINEL);
	snap_same_as(&before, 0, "tree reads that find nothing");
}
END_TEST

START_TEST(test_tree_cursor_stays_at_its_ends)
{
	struct vmr_tree_entry e;
	struct vmr_tree_iter it;

	vmr_rcu_read_lock(NULL);
	vmr_tree_iter_start(&it, tree, UINTPTR_MAX);
	ck_assert(!vmr_tree_iter_next(&it, NULL));
	ck_assert(!vmr_tree_iter_next(&it, &e));
	ck_assert(vmr_tree_iter_prev(&it, &e));
	ck_assert_uint_eq(e.start, 0x40);
	vmr_tree_iter_start(&it, tree, 0);
	ck_assert(!vmr_tree_iter_prev(&it, NULL));
	ck_assert(!vmr_tree_iter_prev(&it, &e));
	ck_assert(vmr_tree_iter_next(&it, NULL));
	ck_assert(vmr_tree_iter_next(&it, &e));
	ck_assert_uint_eq(e.start, 0x20);
	vmr_rcu_read_unlock(NULL);
}
END_TEST

static int removed_calls;

static void count_removed(const struct vmr_tree_entry *e, void *arg)
{
	(void)e;
	(void)arg;
	removed_calls++;
}

START_TEST(test_tree_updates_refuse_bad_arguments_and_change_nothing)
{
	static int v;
	const struct vmr_tree_entry one = { 0x30, 0x38, &v };
	const struct {
		const char *what;
		struct vmr_tree *t;
		uintptr_t start, end;
		void *value;
		int err;
	} inserts[] = {
		{ "NULL tree", NULL, 0x30, 0x38, &v, -EINVAL },
		{ "NULL value", tree, 0x30, 0x38, NULL, -EINVAL },
		{ "empty range", tree, 0x30, 0x30, &v, -EINVAL },
		{ "inverted range", tree, 0x38, 0x30, &v, -EINVAL },
		{ "inverted over everything", tree, UINTPTR_MAX, 0, &v,
		  -EINVAL },
		{ "overlaps an entry's end", tree, 0x1f, 0x21, &v, -EEXIST },
		{ "covers an entry", tree, 0x30, 0x60, &v, -EEXIST },
		{ "inside an entry", tree, 0x41, 0x42, &v, -EEXIST },
		{ "everything", tree, 0, UINTPTR_MAX, &v, -EEXIST },
	};
	const struct {
		const char *what;
		struct vmr_tree *t;
		uintptr_t start, end;
		int err;
	} removes[] = {
		{ "NULL tree", NULL, 0x10, 0x20, -EINVAL },
		{ "empty range", tree, 0x10, 0x10, -EINVAL },
		{ "inverted range", tree, 0x20, 0x10, -EINVAL },
		{ "a hole", tree, 0x30, 0x40, -ENOENT },
		{ "part of an entry", tree, 0x10, 0x18, -ENOENT },
		{ "more than an entry", tree, 0x10, 0x28, -ENOENT },
		{ "two entries", tree, 0x10, 0x30, -ENOENT },
		{ "an entry and a hole", tree, 0x40, 0x60, -ENOENT },
	};
	struct vmr_tree_entry straddle = { 0x18, 0x20, &v };
	struct vmr_tree_entry nullval = { 0x30, 0x38, NULL };
	struct vmr_tree_entry empty = { 0x30, 0x30, &v };
	struct vmr_tree_entry outside = { 0x28, 0x38, &v };
	struct vmr_tree_entry unsorted[2] = { { 0x34, 0x38, &v },
					      { 0x30, 0x34, &v } };
	struct vmr_tree_entry overlapping[2] = { { 0x30, 0x36, &v },
						 { 0x34, 0x38, &v } };
	const struct {
		const char *what;
		struct vmr_tree *t;
		uintptr_t start, end;
		const struct vmr_tree_entry *add;
		size_t nr;
	} replaces[] = {
		{ "NULL tree", NULL, 0x30, 0x38, &one, 1 },
		{ "empty span", tree, 0x30, 0x30, NULL, 0 },
		{ "inverted span", tree, 0x38, 0x30, &one, 1 },
		{ "NULL entries with a count", tree, 0x30, 0x38, NULL, 1 },
		{ "NULL entries with a huge count", tree, 0x30, 0x38, NULL,
		  SIZE_MAX },
		{ "an entry straddles the start", tree, 0x18, 0x38, &one, 1 },
		{ "an entry straddles the end", tree, 0x30, 0x48, &one, 1 },
		{ "new entry with a NULL value", tree, 0x30, 0x38, &nullval,
		  1 },
		{ "new entry empty", tree, 0x30, 0x38, &empty, 1 },
		{ "new entry outside the span", tree, 0x30, 0x38, &outside,
		  1 },
		{ "new entries unsorted", tree, 0x30, 0x38, unsorted, 2 },
		{ "new entries overlapping", tree, 0x30, 0x38, overlapping, 2 },
		{ "removes part of an entry", tree, 0x18, 0x20, &straddle, 1 },
	};
	struct snap before;
	void *got = SENTINEL;

	snap_take(&before);
	for (size_t i = 0; i < VMR_ARRAY_SIZE(inserts); i++)
		EXPECT(&before,
		       vmr_tree_insert(inserts[i].t, inserts[i].start,
				       inserts[i].end, inserts[i].value),
		       inserts[i].err, inserts[i].what);
	for (size_t i = 0; i < VMR_ARRAY_SIZE(removes); i++) {
		EXPECT(&before,
		       vmr_tree_remove(removes[i].t, removes[i].start,
				       removes[i].end, &got),
		       removes[i].err, removes[i].what);
		ck_assert_msg(got == SENTINEL, "%s: value written",
			      removes[i].what);
	}
	removed_calls = 0;
	for (size_t i = 0; i < VMR_ARRAY_SIZE(replaces); i++)
		EXPECT(&before,
		       vmr_tree_replace(replaces[i].t, replaces[i].start,
					replaces[i].end, replaces[i].add,
					replaces[i].nr, count_removed, NULL),
		       -EINVAL, replaces[i].what);
	ck_assert_int_eq(removed_calls, 0);
}
END_TEST

/* ---- the space: life cycle and getters --------------------------------- */

START_TEST(test_space_create_refuses_bad_configs_and_makes_nothing)
{
	struct {
		struct vmr_space_config c;
		uint64_t tail[2];
	} big;
	struct row {
		const char *what;
		struct vmr_space_config c;
		size_t size;
		bool null_config, null_out, dirty_tail;
		int err;
	} rows[] = {
		{ "no out pointer", { 0 }, sizeof(big.c), 0, 1, 0, -EINVAL },
		{ "NULL config with a size", { 0 }, sizeof(big.c), 1, 0, 0,
		  -EINVAL },
		{ "page size not a power of two", { .page_size = 3000 },
		  sizeof(big.c), 0, 0, 0, -EINVAL },
		{ "page size three pages", { .page_size = 3 * PG },
		  sizeof(big.c), 0, 0, 0, -EINVAL },
		{ "page size all ones", { .page_size = SIZE_MAX },
		  sizeof(big.c), 0, 0, 0, -EINVAL },
		{ "granularity 2",
		  { .granularity = (enum vmr_lock_granularity)2 },
		  sizeof(big.c), 0, 0, 0, -EINVAL },
		{ "granularity -1",
		  { .granularity = (enum vmr_lock_granularity)-1 },
		  sizeof(big.c), 0, 0, 0, -EINVAL },
		{ "barrier 3", { .barrier = (enum vmr_reader_barrier)3 },
		  sizeof(big.c), 0, 0, 0, -EINVAL },
		{ "barrier -1", { .barrier = (enum vmr_reader_barrier)-1 },
		  sizeof(big.c), 0, 0, 0, -EINVAL },
		{ "policy 4", { .policy = (enum vmr_retry_policy)4 },
		  sizeof(big.c), 0, 0, 0, -EINVAL },
		{ "policy -1", { .policy = (enum vmr_retry_policy)-1 },
		  sizeof(big.c), 0, 0, 0, -EINVAL },
		{ "flag 0x2", { .flags = 0x2 }, sizeof(big.c), 0, 0, 0,
		  -EINVAL },
		{ "flag high bit", { .flags = 0x80000000u }, sizeof(big.c), 0,
		  0, 0, -EINVAL },
		{ "larger struct, tail set", { 0 }, sizeof(big), 0, 0, 1,
		  -E2BIG },
		{ "larger struct, tail set, page size bad",
		  { .page_size = 3000 }, sizeof(big), 0, 0, 1, -E2BIG },
	};
	struct snap before;

	snap_take(&before);
	for (size_t i = 0; i < VMR_ARRAY_SIZE(rows); i++) {
		struct vmr_space *out = SENTINEL;

		memset(&big, 0, sizeof(big));
		big.c = rows[i].c;
		big.tail[1] = rows[i].dirty_tail ? 1 : 0;
		EXPECT(&before,
		       vmr_space_create(rows[i].null_config ? NULL : &big.c,
					rows[i].size,
					rows[i].null_out ? NULL : &out),
		       rows[i].err, rows[i].what);
		ck_assert_msg(out == SENTINEL, "%s: out pointer written",
			      rows[i].what);
	}
}
END_TEST

START_TEST(test_space_create_takes_defaults_for_what_a_smaller_config_lacks)
{
	struct {
		struct vmr_space_config c;
		uint64_t tail[2];
	} big;
	struct vmr_space_config cfg = { .page_size = 3000 };
	struct vmr_space *s = NULL;

	/* The boundaries of the refusals above: all accepted. */
	ck_assert_int_eq(vmr_space_create(NULL, 0, &s), 0);
	ck_assert_uint_eq(vmr_space_page_size(s), (size_t)sysconf(_SC_PAGESIZE));
	ck_assert_int_eq(vmr_space_destroy(s), 0);
	/* Size 0: the struct is not read at all. */
	ck_assert_int_eq(vmr_space_create(&cfg, 0, &s), 0);
	ck_assert_int_eq(vmr_space_destroy(s), 0);
	memset(&big, 0, sizeof(big));
	big.c.page_size = 2 * PG;
	ck_assert_int_eq(vmr_space_create(&big.c, sizeof(big), &s), 0);
	ck_assert_uint_eq(vmr_space_page_size(s), 2 * PG);
	ck_assert_int_eq(vmr_space_destroy(s), 0);
	/* A config that ends before @granularity: that takes its default. */
	memset(&big, 0xff, sizeof(big));
	big.c.page_size = PG;
	big.c.flavor = NULL;
	ck_assert_int_eq(vmr_space_create(&big.c,
					  offsetof(struct vmr_space_config,
						   granularity),
					  &s),
			 0);
	ck_assert_int_eq(s->granularity, VMR_LOCK_REGION);
	ck_assert_int_eq(vmr_space_destroy(s), 0);
}
END_TEST

START_TEST(test_space_getters_and_destroy_tolerate_null)
{
	struct snap before;

	snap_take(&before);
	EXPECT(&before, vmr_space_destroy(NULL), 0, "destroy(NULL)");
	ck_assert_ptr_null(vmr_space_flavor(NULL));
	ck_assert_uint_eq(vmr_space_page_size(NULL), 0);
	ck_assert_ptr_null(vmr_space_find_region(NULL, P(0)));
	ck_assert_uint_eq(vmr_space_count_regions(NULL), 0);
	ck_assert(!vmr_space_is_shut_down(NULL));
	ck_assert(!vmr_space_is_write_locked(NULL));
	EXPECT(&before, vmr_space_register_thread(NULL), -EINVAL,
	       "register_thread(NULL)");
	EXPECT(&before, vmr_space_unregister_thread(NULL), -EINVAL,
	       "unregister_thread(NULL)");
	EXPECT(&before, vmr_space_shutdown(NULL), -EINVAL, "shutdown(NULL)");
	ck_assert(!vmr_space_is_shut_down(space));
	/* Lookups outside every region, at the ends of the address space. */
	vmr_rcu_read_lock(NULL);
	ck_assert_ptr_null(vmr_space_find_region(space, 0));
	ck_assert_ptr_null(vmr_space_find_region(space, UINTPTR_MAX));
	ck_assert_ptr_null(vmr_space_find_region(space, P(4)));
	vmr_rcu_read_unlock(NULL);
	snap_same_as(&before, 0, "NULL space getters");
}
END_TEST

/* What a destroy must refuse: a lock held, in each way one can be. */
START_TEST(test_destroy_of_a_space_in_use_is_refused_with_ebusy)
{
	struct vmr_range_lock l;
	struct snap before;

	ck_assert_int_eq(vmr_space_write_lock(space), 0);
	snap_take(&before);
	EXPECT(&before, vmr_space_destroy(space), -EBUSY,
	       "destroy under the write lock");
	ck_assert_int_eq(vmr_space_write_unlock(space), 0);

	ck_assert_int_eq(vmr_space_read_lock(space), 0);
	snap_take(&before);
	EXPECT(&before, vmr_space_destroy(space), -EBUSY,
	       "destroy under a read lock");
	ck_assert_int_eq(vmr_space_write_trylock(space), false);
	ck_assert_int_eq(vmr_space_read_unlock(space), 0);

	ck_assert_int_eq(vmr_range_read_lock(space, P(1), 1, &l), 0);
	snap_take(&before);
	EXPECT(&before, vmr_space_destroy(space), -EBUSY,
	       "destroy under a range read lock");
	ck_assert_int_eq(vmr_range_read_unlock(&l), 0);
}
END_TEST

/* ---- map, unmap, protect ------------------------------------------------- */

START_TEST(test_map_refuses_bad_descriptors_and_changes_nothing)
{
	struct bad_range r[MAX_BAD_RANGES];
	size_t nr = bad_ranges(r, P(10), PG);
	const size_t size_0_1 = offsetof(struct vmr_region_desc, private_data) +
				sizeof(void *);
	struct {
		struct vmr_region_desc d;
		uint64_t tail[2];
	} big;
	struct {
		struct vmr_region_ops o;
		void (*future)(void);
	} big_ops;
	struct row {
		const char *what;
		struct vmr_region_desc d;
		size_t size;
		unsigned int flags;
		int err;
	} rows[40];
	struct vmr_region_desc ok = desc_a();
	struct snap before;
	size_t n = 0;

	ok.start = P(10);
	for (size_t i = 0; i < nr; i++) {
		rows[n] = (struct row){ r[i].what, ok, sizeof(ok), 0, -EINVAL };
		rows[n].d.start = r[i].start;
		rows[n++].d.len = r[i].len;
	}
#define ROW(name, field, value, size_, flags_, err_)                           \
	do {                                                                   \
		rows[n] = (struct row){ name, ok, size_, flags_, err_ };       \
		rows[n++].d.field = value;                                     \
	} while (0)
	ROW("no desc size", start, P(10), 0, 0, -EINVAL);
	ROW("desc size one byte short of 0.1's", start, P(10), size_0_1 - 1,
	    0, -EINVAL);
	ROW("desc size of a pointer", start, P(10), sizeof(void *), 0,
	    -EINVAL);
	ROW("unaligned offset", offset, 1, sizeof(ok), 0, -EINVAL);
	ROW("half-page offset", offset, PG / 2, sizeof(ok), 0, -EINVAL);
	ROW("offset all ones", offset, UINT64_MAX, sizeof(ok), 0, -EINVAL);
	ROW("prot 0x8", prot, 0x8, sizeof(ok), 0, -EINVAL);
	ROW("prot high bit", prot, RW | 0x80000000u, sizeof(ok), 0, -EINVAL);
	ROW("policy 4", policy, (enum vmr_retry_policy)4, sizeof(ok), 0,
	    -EINVAL);
	ROW("policy -1", policy, (enum vmr_retry_policy)-1, sizeof(ok), 0,
	    -EINVAL);
	ROW("flags 0x2", start, P(10), sizeof(ok), 0x2, -EINVAL);
	ROW("flags high bit", start, P(10), sizeof(ok), 0x80000000u, -EINVAL);
	ROW("replace and 0x2", start, P(10), sizeof(ok), VMR_MAP_REPLACE | 0x2,
	    -EINVAL);
	ROW("NULL ops with a size", ops, NULL, sizeof(ok), 0, -EINVAL);
#undef ROW
	ck_assert_uint_le(n, VMR_ARRAY_SIZE(rows));

	snap_take(&before);
	EXPECT(&before, vmr_map(NULL, &ok, sizeof(ok), 0), -EINVAL,
	       "NULL space");
	EXPECT(&before, vmr_map(space, NULL, sizeof(ok), 0), -EINVAL,
	       "NULL desc");
	EXPECT(&before, vmr_map(space, NULL, 0, 0), -EINVAL,
	       "NULL desc, size 0");
	for (size_t i = 0; i < n; i++)
		EXPECT(&before,
		       vmr_map(space, &rows[i].d, rows[i].size, rows[i].flags),
		       rows[i].err, rows[i].what);

	/* Size-tagged structs larger than ours, with a tail set. */
	memset(&big, 0, sizeof(big));
	big.d = ok;
	big.tail[1] = 1;
	EXPECT(&before, vmr_map(space, &big.d, sizeof(big), 0), -E2BIG,
	       "larger desc, tail set");
	big.tail[1] = 0;
	memset(&big_ops, 0, sizeof(big_ops));
	big_ops.o = probe_ops;
	big_ops.future = (void (*)(void))probe_close;
	big.d.ops = &big_ops.o;
	big.d.ops_size = sizeof(big_ops);
	EXPECT(&before, vmr_map(space, &big.d, sizeof(big), 0), -E2BIG,
	       "larger ops, tail set");
}
END_TEST

START_TEST(test_map_over_a_region_is_refused_with_eexist)
{
	static const struct {
		const char *what;
		uintptr_t start;
		size_t pages;
	} rows[] = {
		{ "the same range", P(0), 4 },
		{ "the first page", P(0), 1 },
		{ "across a region's end", P(3), 2 },
		{ "across a region's start", P(5), 2 },
		{ "over a hole and both regions", P(2), 6 },
		{ "inside a region", P(1), 2 },
	};
	struct vmr_region_desc d = desc_a();
	struct snap before;

	snap_take(&before);
	for (size_t i = 0; i < VMR_ARRAY_SIZE(rows); i++) {
		d.start = rows[i].start;
		d.len = rows[i].pages * PG;
		ck_assert_int_eq(vmr_map(space, &d, sizeof(d), 0), -EEXIST);
		/* It took the write lock to find out: that may count. */
		snap_same_as(&before, ALLOW_LOCK_CYCLE, rows[i].what);
	}
}
END_TEST

START_TEST(test_unmap_and_protect_refuse_bad_ranges_and_change_nothing)
{
	struct bad_range r[MAX_BAD_RANGES];
	size_t nr = bad_ranges(r, P(0), PG);
	static const unsigned int bad_prot[] = { 0x8, 0x10, 0x80000000u,
						 RW | 0x8 };
	struct snap before;
	char what[128];

	snap_take(&before);
	EXPECT(&before, vmr_unmap(NULL, P(0), PG), -EINVAL,
	       "unmap NULL space");
	EXPECT(&before, vmr_protect(NULL, P(0), PG, VMR_PROT_READ), -EINVAL,
	       "protect NULL space");
	for (size_t i = 0; i < nr; i++) {
		snprintf(what, sizeof(what), "unmap: %s", r[i].what);
		EXPECT(&before, vmr_unmap(space, r[i].start, r[i].len),
		       -EINVAL, what);
		snprintf(what, sizeof(what), "protect: %s", r[i].what);
		EXPECT(&before,
		       vmr_protect(space, r[i].start, r[i].len,
				   VMR_PROT_READ),
		       -EINVAL, what);
	}
	for (size_t i = 0; i < VMR_ARRAY_SIZE(bad_prot); i++) {
		snprintf(what, sizeof(what), "protect with prot %#x",
			 bad_prot[i]);
		EXPECT(&before, vmr_protect(space, P(0), PG, bad_prot[i]),
		       -EINVAL, what);
	}
}
END_TEST

START_TEST(test_protect_over_a_hole_is_refused_with_enomem)
{
	static const struct {
		const char *what;
		uintptr_t start;
		size_t pages;
	} rows[] = {
		{ "a region and the hole after it", P(0), 5 },
		{ "the hole between the regions", P(4), 2 },
		{ "both regions and the hole", P(0), 8 },
		{ "past the last region", P(6), 3 },
		{ "nothing mapped at all", P(20), 1 },
	};
	struct snap before;

	snap_take(&before);
	for (size_t i = 0; i < VMR_ARRAY_SIZE(rows); i++) {
		ck_assert_int_eq(vmr_protect(space, rows[i].start,
					     rows[i].pages * PG,
					     VMR_PROT_NONE),
				 -ENOMEM);
		snap_same_as(&before, ALLOW_LOCK_CYCLE, rows[i].what);
	}
}
END_TEST

START_TEST(test_updates_under_the_callers_own_write_lock_fail_with_edeadlk)
{
	struct vmr_region_desc d = desc_a();
	struct snap before;

	d.start = P(10);
	ck_assert_int_eq(vmr_space_write_lock(space), 0);
	snap_take(&before);
	EXPECT(&before, vmr_map(space, &d, sizeof(d), 0), -EDEADLK,
	       "map under the write lock");
	EXPECT(&before, vmr_map(space, &d, sizeof(d), VMR_MAP_REPLACE),
	       -EDEADLK, "map-replace under the write lock");
	EXPECT(&before, vmr_unmap(space, P(0), PG), -EDEADLK,
	       "unmap under the write lock");
	EXPECT(&before, vmr_protect(space, P(0), PG, VMR_PROT_READ), -EDEADLK,
	       "protect under the write lock");
	EXPECT(&before, vmr_space_read_lock(space), -EDEADLK,
	       "read lock under the write lock");
	EXPECT(&before, vmr_space_write_lock(space), -EDEADLK,
	       "write lock under the write lock");
	EXPECT(&before, vmr_space_read_trylock(space), false,
	       "read trylock under the write lock");
	EXPECT(&before, vmr_space_write_trylock(space), false,
	       "write trylock under the write lock");
	ck_assert_int_eq(vmr_space_write_unlock(space), 0);
}
END_TEST

/* ---- the space lock and the range lock --------------------------------- */

START_TEST(test_space_lock_calls_refuse_a_null_space)
{
	struct snap before;

	snap_take(&before);
	EXPECT(&before, vmr_space_read_lock(NULL), -EINVAL, "read lock");
	EXPECT(&before, vmr_space_read_trylock(NULL), false, "read trylock");
	EXPECT(&before, vmr_space_read_unlock(NULL), -EINVAL, "read unlock");
	EXPECT(&before, vmr_space_write_lock(NULL), -EINVAL, "write lock");
	EXPECT(&before, vmr_space_write_trylock(NULL), false,
	       "write trylock");
	EXPECT(&before, vmr_space_write_unlock(NULL), -EINVAL,
	       "write unlock");
	EXPECT(&before, vmr_space_write_downgrade(NULL), -EINVAL,
	       "downgrade");
	EXPECT(&before, vmr_space_is_write_locked(NULL), false,
	       "is_write_locked");
}
END_TEST

START_TEST(test_range_read_lock_refuses_bad_arguments_and_holds_nothing)
{
	static const struct {
		const char *what;
		uintptr_t addr;
		size_t len;
		int err;
	} rows[] = {
		{ "wraps", P(1), SIZE_MAX, -EINVAL },
		{ "wraps from the last byte", UINTPTR_MAX, 2, -EINVAL },
		{ "wraps by a page", UINTPTR_MAX - PG + 2, PG, -EINVAL },
		{ "the last byte of the address space", UINTPTR_MAX, 1,
		  -ENOENT },
		{ "the last byte, length 0", UINTPTR_MAX, 0, -ENOENT },
		{ "address 0", 0, 1, -ENOENT },
		{ "a hole", P(4), 1, -ENOENT },
		{ "past a region's end", P(3), 2 * PG, -ENOENT },
		{ "across two regions and a hole", P(3), 4 * PG, -ENOENT },
	};
	struct vmr_range_lock l, held;
	struct snap before;

	snap_take(&before);
	EXPECT(&before, vmr_range_read_lock(NULL, P(0), 1, &l), -EINVAL,
	       "NULL space");
	EXPECT(&before, vmr_range_read_lock(space, P(0), 1, NULL), -EINVAL,
	       "NULL lock");
	EXPECT(&before, vmr_range_read_unlock(NULL), -EINVAL, "unlock NULL");
	for (size_t i = 0; i < VMR_ARRAY_SIZE(rows); i++)
		EXPECT(&before,
		       vmr_range_read_lock(space, rows[i].addr, rows[i].len,
					   &l),
		       rows[i].err, rows[i].what);

	/* A second read lock of this thread in the space: -EBUSY (ABORT). */
	ck_assert_int_eq(vmr_range_read_lock(space, P(0), 1, &held), 0);
	snap_take(&before);
	EXPECT(&before, vmr_range_read_lock(space, P(6), 1, &l), -EBUSY,
	       "a second lock in the same thread");
	ck_assert_int_eq(vmr_range_read_unlock(&held), 0);
}
END_TEST

START_TEST(test_range_write_lock_refuses_bad_ranges_and_marks_nothing)
{
	struct bad_range r[MAX_BAD_RANGES];
	size_t nr = bad_ranges(r, P(0), PG);
	struct snap before;
	char what[128];

	ck_assert_int_eq(vmr_space_write_lock(space), 0);
	snap_take(&before);
	EXPECT(&before, vmr_range_write_lock(NULL, P(0), P(1)), -EINVAL,
	       "NULL space");
	EXPECT(&before, vmr_range_write_lock(space, P(2), P(1)), -EINVAL,
	       "inverted");
	EXPECT(&before,
	       vmr_range_write_lock(space, UINTPTR_MAX & ~(uintptr_t)(PG - 1),
				    0),
	       -EINVAL, "to the end of the address space (end 0)");
	for (size_t i = 0; i < nr; i++) {
		/* [start, start + len) as (start, end), wrapping as it may. */
		snprintf(what, sizeof(what), "write lock: %s", r[i].what);
		EXPECT(&before,
		       vmr_range_write_lock(space, r[i].start,
					    r[i].start + r[i].len),
		       -EINVAL, what);
	}
	/* The arguments are checked before the context: no misuse here. */
	ck_assert_int_eq(vmr_space_write_unlock(space), 0);
	snap_take(&before);
	EXPECT(&before, vmr_range_write_lock(space, P(1), P(1)), -EINVAL,
	       "empty range without the write lock");
}
END_TEST

/* ---- counters ------------------------------------------------------------ */

START_TEST(test_stats_refuse_bad_sizes_and_write_nothing)
{
	static const size_t bad_sizes[] = { 1, 4, 7, 12, sizeof(struct vmr_stats) - 1,
					    sizeof(struct vmr_stats) + 4 };
	struct {
		struct vmr_stats s;
		uint64_t tail[2];
	} buf;
	unsigned char ref[sizeof(buf)];
	struct snap before;

	memset(ref, FILL, sizeof(ref));
	memset(&buf, FILL, sizeof(buf));
	snap_take(&before);
	EXPECT(&before, vmr_space_stats(NULL, &buf.s, sizeof(buf.s)), -EINVAL,
	       "NULL space");
	EXPECT(&before, vmr_space_stats(space, NULL, sizeof(buf.s)), -EINVAL,
	       "NULL stats");
	EXPECT(&before, vmr_space_stats(space, NULL, 0), -EINVAL,
	       "NULL stats, size 0");
	for (size_t i = 0; i < VMR_ARRAY_SIZE(bad_sizes); i++)
		EXPECT(&before, vmr_space_stats(space, &buf.s, bad_sizes[i]),
		       -EINVAL, "size not a multiple of 8");
	EXPECT(&before, vmr_space_stats_reset(NULL), -EINVAL, "reset(NULL)");
	ck_assert(!memcmp(&buf, ref, sizeof(buf)));
	/* Size 0 is a (useless) valid size: nothing is written. */
	EXPECT(&before, vmr_space_stats(space, &buf.s, 0), 0, "size 0");
	ck_assert(!memcmp(&buf, ref, sizeof(buf)));
	/* A larger struct: what this library does not have reads 0. */
	EXPECT(&before, vmr_space_stats(space, &buf.s, sizeof(buf)), 0,
	       "larger struct");
	ck_assert_uint_eq(buf.tail[0], 0);
	ck_assert_uint_eq(buf.tail[1], 0);
	ck_assert_uint_eq(buf.s.page_reads, 2); /* the fixture's reads */
}
END_TEST

START_TEST(test_hist_percentile_clamps_what_is_out_of_range)
{
	uint64_t hist[VMR_HIST_BUCKETS] = { 0 };
	uint64_t copy[VMR_HIST_BUCKETS];

	hist[3] = 1;   /* [8, 16) ns */
	hist[10] = 1;  /* [1024, 2048) ns */
	memcpy(copy, hist, sizeof(hist));
	ck_assert_uint_eq(vmr_hist_percentile(NULL, 50), 0);
	ck_assert_uint_eq(vmr_hist_percentile(hist, 0), 16);
	ck_assert_uint_eq(vmr_hist_percentile(hist, 100), 2048);
	ck_assert_uint_eq(vmr_hist_percentile(hist, -5), 16);
	ck_assert_uint_eq(vmr_hist_percentile(hist, -INFINITY), 16);
	ck_assert_uint_eq(vmr_hist_percentile(hist, 1000), 2048);
	ck_assert_uint_eq(vmr_hist_percentile(hist, INFINITY), 2048);
	ck_assert_uint_eq(vmr_hist_percentile(hist, NAN), 16);
	ck_assert(!memcmp(hist, copy, sizeof(hist)));
	memset(hist, 0, sizeof(hist));
	ck_assert_uint_eq(vmr_hist_percentile(hist, NAN), 0);
}
END_TEST

/* ---- the fault engine ---------------------------------------------------- */

START_TEST(test_handle_fault_refuses_bad_arguments_and_counts_nothing)
{
	static const struct {
		const char *what;
		unsigned int flags;
	} rows[] = {
		{ "flag bit 1", DEF | (1u << 1) },
		{ "flag bit 7", DEF | (1u << 7) },
		{ "flag bit 10", DEF | (1u << 10) },
		{ "flag bit 11", DEF | (1u << 11) },
		{ "VMA_LOCK, the engine's own", DEF | VMR_FAULT_FLAG_VMA_LOCK },
		{ "flag bit 31", DEF | 0x80000000u },
		{ "TRIED without ALLOW_RETRY", VMR_FAULT_FLAG_TRIED },
		{ "TRIED | WRITE | KILLABLE without ALLOW_RETRY",
		  VMR_FAULT_FLAG_TRIED | VMR_FAULT_FLAG_WRITE |
			  VMR_FAULT_FLAG_KILLABLE },
	};
	struct probe p = { 0 };
	vmr_fault_t res = 0xdead;
	struct snap before;

	snap_take(&before);
	EXPECT(&before, vmr_handle_fault(NULL, P(0), DEF, &p, &res), -EINVAL,
	       "NULL space");
	EXPECT(&before, vmr_handle_fault(space, P(0), DEF, &p, NULL), -EINVAL,
	       "NULL result");
	for (size_t i = 0; i < VMR_ARRAY_SIZE(rows); i++)
		EXPECT(&before,
		       vmr_handle_fault(space, P(0), rows[i].flags, &p, &res),
		       -EINVAL, rows[i].what);
	ck_assert_uint_eq(res, 0xdead); /* untouched */
	ck_assert_uint_eq(p.calls, 0);
	EXPECT(&before, vmr_fault_release(NULL), -EINVAL, "release(NULL)");
	EXPECT(&before, vmr_fault_release_for_io(NULL), 0,
	       "release_for_io(NULL)");
}
END_TEST

START_TEST(test_a_fault_in_a_shut_down_space_ends_unfinished_at_once)
{
	struct probe p = { 0 };
	vmr_fault_t res = 0xdead;
	struct snap before;

	ck_assert_int_eq(vmr_space_shutdown(space), 0);
	ck_assert(vmr_space_is_shut_down(space));
	/* Shutting down twice is allowed and changes nothing more. */
	snap_take(&before);
	EXPECT(&before, vmr_space_shutdown(space), 0, "second shutdown");
	ck_assert_int_eq(vmr_handle_fault(space, P(0), DEF, &p, &res), 0);
	ck_assert_uint_eq(res, VMR_FAULT_RETRY);
	ck_assert_uint_eq(p.calls, 0);
	/* Counted as a fault with an unfinished result, nothing else. */
	before.stats[VMR_STAT(faults)]++;
	before.stats[VMR_STAT(result_unfinished)]++;
	snap_same_as(&before, 0, "fault in a shut-down space");
}
END_TEST

START_TEST(test_a_fault_under_the_callers_write_lock_fails_with_edeadlk)
{
	static const struct {
		const char *what;
		uintptr_t addr;
		unsigned int flags;
	} rows[] = {
		{ "in a region", P(0), DEF },
		{ "in a region, no-wait", P(0), DEF | VMR_FAULT_FLAG_RETRY_NOWAIT },
		{ "in a hole", P(4), DEF },
		{ "read-only region, write", P(6), DEF | VMR_FAULT_FLAG_WRITE },
	};
	struct probe p = { 0 };
	vmr_fault_t res = 0xdead;
	struct snap before;

	ck_assert_int_eq(vmr_space_write_lock(space), 0);
	snap_take(&before);
	for (size_t i = 0; i < VMR_ARRAY_SIZE(rows); i++)
		EXPECT(&before,
		       vmr_handle_fault(space, rows[i].addr, rows[i].flags, &p,
					&res),
		       -EDEADLK, rows[i].what);
	ck_assert_uint_eq(res, 0xdead);
	ck_assert_uint_eq(p.calls, 0);
	ck_assert_int_eq(vmr_space_write_unlock(space), 0);
}
END_TEST

/* From inside a handler holding its VMA lock: each bad call, recorded. */
static void bad_calls_in_a_handler(struct vmr_fault *vmf, struct probe *p)
{
	struct snap before;
	size_t index = 77;

	snap_take(&before);
	probe_record(p, "held lock on entry", vmf->lock, VMR_FAULT_LOCK_VMA,
		     NULL);
	probe_record(p, "release(NULL)", vmr_fault_release(NULL), -EINVAL,
		     &before);
	probe_record(p, "release_for_io(NULL)", vmr_fault_release_for_io(NULL),
		     0, &before);
	probe_record(p, "lock_or_retry(NULL vmf)",
		     vmr_page_lock_or_retry(NULL, map, 0), VMR_FAULT_SIGBUS,
		     &before);
	probe_record(p, "lock_or_retry(NULL map)",
		     vmr_page_lock_or_retry(vmf, NULL, 0), VMR_FAULT_SIGBUS,
		     &before);
	probe_record(p, "lock_or_retry(index = size)",
		     vmr_page_lock_or_retry(vmf, map, NR_PAGES),
		     VMR_FAULT_SIGBUS, &before);
	probe_record(p, "lock_or_retry(index = SIZE_MAX)",
		     vmr_page_lock_or_retry(vmf, map, SIZE_MAX),
		     VMR_FAULT_SIGBUS, &before);
	probe_record(p, "fault's lock kept after SIGBUS", vmf->lock,
		     VMR_FAULT_LOCK_VMA, NULL);
	probe_record(p, "pin_page(NULL vmf)", vmr_fault_pin_page(NULL, map, 0),
		     -EINVAL, &before);
	/* A pin the bad calls below must not move. */
	probe_record(p, "pin_page(page 5)", vmr_fault_pin_page(vmf, map, 5), 0,
		     NULL);
	snap_take(&before);
	probe_record(p, "pin_page(NULL map)", vmr_fault_pin_page(vmf, NULL, 0),
		     -EINVAL, &before);
	probe_record(p, "pin_page(index = size)",
		     vmr_fault_pin_page(vmf, map, NR_PAGES), -EINVAL, &before);
	probe_record(p, "pin_page(index = SIZE_MAX)",
		     vmr_fault_pin_page(vmf, map, SIZE_MAX), -EINVAL, &before);
	probe_record(p, "pinned_page(NULL vmf)",
		     vmr_fault_pinned_page(NULL, map, &index), false, &before);
	probe_record(p, "index untouched", (long long)index, 77, NULL);
	probe_record(p, "pinned_page(another map)",
		     vmr_fault_pinned_page(vmf, NULL, &index), false, &before);
	probe_record(p, "pinned_page(its map)",
		     vmr_fault_pinned_page(vmf, map, &index), true, &before);
	probe_record(p, "the pin did not move", (long long)index, 5, NULL);
}

START_TEST(test_fault_calls_refuse_bad_arguments_from_inside_a_handler)
{
	struct probe p = { .body = bad_calls_in_a_handler };
	vmr_fault_t res = 0xdead;

	ck_assert_int_eq(vmr_handle_fault(space, P(0), DEF, &p, &res), 0);
	ck_assert_uint_eq(res, 0);
	probe_assert(&p, 18);
	/* The engine dropped the fault's pin when the fault ended. */
	ck_assert(!vmr_page_pinned(map, 5));
	ck_assert(!vmr_readers_busy(space));
}
END_TEST

/* Released already: release_for_io must keep nothing and say 0. */
static void release_then_ask_for_io(struct vmr_fault *vmf, struct probe *p)
{
	struct snap before;

	probe_record(p, "release", vmr_fault_release(vmf), 0, NULL);
	snap_take(&before);
	probe_record(p, "release_for_io with no lock",
		     vmr_fault_release_for_io(vmf), 0, &before);
	probe_record(p, "lock_or_retry(NULL map) with no lock",
		     vmr_page_lock_or_retry(vmf, NULL, 0), VMR_FAULT_SIGBUS,
		     &before);
	probe_record(p, "lock still none", vmf->lock, VMR_FAULT_LOCK_NONE,
		     NULL);
}

START_TEST(test_release_for_io_without_the_lock_does_nothing)
{
	struct probe p = { .body = release_then_ask_for_io,
			   .ret = VMR_FAULT_COMPLETED };
	vmr_fault_t res = 0xdead;

	ck_assert_int_eq(vmr_handle_fault(space, P(0), DEF, &p, &res), 0);
	ck_assert_uint_eq(res, VMR_FAULT_COMPLETED);
	probe_assert(&p, 4);
	ck_assert(!vmr_readers_busy(space));
}
END_TEST

/* ---- page wait ----------------------------------------------------------- */

START_TEST(test_pagemap_create_refuses_bad_sizes_and_makes_nothing)
{
	static const struct {
		const char *what;
		size_t nr;
	} rows[] = {
		{ "no pages", 0 },
		{ "2^32 + 1 pages", ((size_t)1 << 32) + 1 },
		{ "2^40 pages", (size_t)1 << 40 },
		{ "SIZE_MAX pages", SIZE_MAX },
	};
	struct vmr_pagemap *out = SENTINEL;
	struct snap before;

	snap_take(&before);
	EXPECT(&before, vmr_pagemap_create(space, 1, NULL), -EINVAL,
	       "no out pointer");
	EXPECT(&before, vmr_pagemap_create(NULL, 1, NULL), -EINVAL,
	       "no space, no out pointer");
	for (size_t i = 0; i < VMR_ARRAY_SIZE(rows); i++) {
		EXPECT(&before, vmr_pagemap_create(space, rows[i].nr, &out),
		       -EINVAL, rows[i].what);
		EXPECT(&before, vmr_pagemap_create(NULL, rows[i].nr, &out),
		       -EINVAL, rows[i].what);
	}
	ck_assert_ptr_eq(out, SENTINEL);
	vmr_pagemap_destroy(NULL);
	ck_assert_uint_eq(vmr_pagemap_size(NULL), 0);
	snap_same_as(&before, 0, "pagemap NULL calls");
}
END_TEST

typedef int page_int_fn(struct vmr_pagemap *m, size_t i);
typedef bool page_bool_fn(struct vmr_pagemap *m, size_t i);

static int page_lock_0(struct vmr_pagemap *m, size_t i)
{
	return vmr_page_lock(m, i, 0);
}

static int page_wait_killable(struct vmr_pagemap *m, size_t i)
{
	return vmr_page_wait_unlocked(m, i, VMR_FAULT_FLAG_KILLABLE);
}

static bool page_uptodate(struct vmr_pagemap *m, size_t i)
{
	return vmr_page_uptodate(m, i);
}

static bool page_pinned(struct vmr_pagemap *m, size_t i)
{
	return vmr_page_pinned(m, i);
}

START_TEST(test_page_calls_refuse_a_null_map_or_an_index_out_of_range)
{
	static const struct {
		const char *what;
		page_int_fn *fn;
	} int_calls[] = {
		{ "lock", page_lock_0 },
		{ "wait_unlocked", page_wait_killable },
		{ "unlock", vmr_page_unlock },
		{ "mark_uptodate", vmr_page_mark_uptodate },
		{ "pin", vmr_page_pin },
		{ "unpin", vmr_page_unpin },
	};
	static const struct {
		const char *what;
		page_bool_fn *fn;
	} bool_calls[] = {
		{ "trylock", vmr_page_trylock },
		{ "uptodate", page_uptodate },
		{ "evict", vmr_page_evict },
		{ "pinned", page_pinned },
	};
	const struct {
		const char *what;
		struct vmr_pagemap *m;
		size_t i;
	} args[] = {
		{ "NULL map", NULL, 0 },
		{ "NULL map, index out of range", NULL, SIZE_MAX },
		{ "index = size", map, NR_PAGES },
		{ "index = size + 1", map, NR_PAGES + 1 },
		{ "index 2^32", map, (size_t)1 << 32 },
		{ "index SIZE_MAX", map, SIZE_MAX },
	};
	struct snap before;
	char what[128];

	snap_take(&before);
	for (size_t a = 0; a < VMR_ARRAY_SIZE(args); a++) {
		for (size_t f = 0; f < VMR_ARRAY_SIZE(int_calls); f++) {
			snprintf(what, sizeof(what), "%s: %s",
				 int_calls[f].what, args[a].what);
			EXPECT(&before, int_calls[f].fn(args[a].m, args[a].i),
			       -EINVAL, what);
		}
		for (size_t f = 0; f < VMR_ARRAY_SIZE(bool_calls); f++) {
			snprintf(what, sizeof(what), "%s: %s",
				 bool_calls[f].what, args[a].what);
			EXPECT(&before, bool_calls[f].fn(args[a].m, args[a].i),
			       false, what);
		}
	}
}
END_TEST

START_TEST(test_page_waits_refuse_unknown_flag_bits)
{
	static const unsigned int bad[] = { 1u << 1, 1u << 7, 1u << 10,
					    1u << 13, 0x80000000u };
	struct snap before;
	char what[128];

	snap_take(&before);
	for (size_t i = 0; i < VMR_ARRAY_SIZE(bad); i++) {
		/* Page 0 is unlocked: a bad call would take it. */
		snprintf(what, sizeof(what), "lock with flags %#x", bad[i]);
		EXPECT(&before, vmr_page_lock(map, 0, bad[i] | DEF), -EINVAL,
		       what);
		snprintf(what, sizeof(what), "wait_unlocked with flags %#x",
			 bad[i]);
		EXPECT(&before, vmr_page_wait_unlocked(map, 0, bad[i]), -EINVAL,
		       what);
	}
	/* A fault's own flags are all known bits: a handler may pass them. */
	ck_assert_int_eq(vmr_page_lock(map, 0,
				       DEF | VMR_FAULT_FLAG_WRITE |
					       VMR_FAULT_FLAG_USER |
					       VMR_FAULT_FLAG_INSTRUCTION |
					       VMR_FAULT_FLAG_TRIED |
					       VMR_FAULT_FLAG_RETRY_NOWAIT |
					       VMR_FAULT_FLAG_VMA_LOCK),
			 0);
	ck_assert_int_eq(vmr_page_unlock(map, 0), 0);
	snap_same_as(&before, 0, "lock and unlock with a fault's flags");
}
END_TEST

/* Page 6 is at its pin limit: a fault's pin there fails, its pin on page
 * 5 stays where it was. */
static void pin_past_the_limit(struct vmr_fault *vmf, struct probe *p)
{
	struct snap before;
	size_t index = 77;

	probe_record(p, "pin page 5", vmr_fault_pin_page(vmf, map, 5), 0,
		     NULL);
	snap_take(&before);
	probe_record(p, "move the pin to page 6",
		     vmr_fault_pin_page(vmf, map, 6), -EOVERFLOW, &before);
	probe_record(p, "pinned_page", vmr_fault_pinned_page(vmf, map, &index),
		     true, &before);
	probe_record(p, "the pin is on page 5", (long long)index, 5, NULL);
	probe_record(p, "pinned_page, no index wanted",
		     vmr_fault_pinned_page(vmf, map, NULL), true, &before);
}

START_TEST(test_page_pin_past_its_limit_fails_with_eoverflow)
{
	const unsigned int pin_max = (1u << 24) - 1;
	struct probe p = { .body = pin_past_the_limit };
	vmr_fault_t res = 0xdead;
	struct snap before;
	int err = 0;

	for (unsigned int n = 0; n < pin_max && !err; n++)
		err = vmr_page_pin(map, 6);
	ck_assert_int_eq(err, 0);
	snap_take(&before);
	EXPECT(&before, vmr_page_pin(map, 6), -EOVERFLOW, "pin 2^24");
	EXPECT(&before, vmr_page_pin(map, 6), -EOVERFLOW, "pin 2^24 again");
	ck_assert_int_eq(vmr_handle_fault(space, P(0), DEF, &p, &res), 0);
	ck_assert_uint_eq(res, 0);
	probe_assert(&p, 5);
	/* The fault's pin on page 5 went with the fault. */
	ck_assert(!vmr_page_pinned(map, 5));
	/* The count did not spill over into its neighbour or the state. */
	ck_assert(!vmr_page_pinned(map, 7));
	ck_assert(!vmr_page_uptodate(map, 6));
	ck_assert_int_eq(vmr_page_unpin(map, 6), 0);
	ck_assert_int_eq(vmr_page_pin(map, 6), 0);
}
END_TEST

START_TEST(test_killable_page_waits_in_a_shut_down_space_end_with_eintr)
{
	struct snap before;

	ck_assert_int_eq(vmr_space_shutdown(space), 0);
	snap_take(&before);
	/* Page 1 is locked: each would sleep; shut down, none does. */
	EXPECT(&before, vmr_page_lock(map, 1, VMR_FAULT_FLAG_KILLABLE), -EINTR,
	       "killable lock");
	EXPECT(&before, vmr_page_lock(map, 1, VMR_FAULT_FLAG_INTERRUPTIBLE),
	       -EINTR, "interruptible lock");
	EXPECT(&before, vmr_page_wait_unlocked(map, 1, DEF), -EINTR,
	       "killable wait");
	/* An unlocked page is still taken: there is nothing to wait for. */
	ck_assert_int_eq(vmr_page_lock(map, 0, VMR_FAULT_FLAG_KILLABLE), 0);
	ck_assert_int_eq(vmr_page_unlock(map, 0), 0);
}
END_TEST

START_TEST(test_a_page_map_outlives_its_space)
{
	struct vmr_pagemap *m;
	struct snap before;

	ck_assert_int_eq(vmr_pagemap_create(space, 2, &m), 0);
	vmr_pagemap_destroy(map);
	map = NULL;
	ck_assert_int_eq(vmr_space_destroy(space), 0);
	space = NULL;
	/* Documented: the map goes on without it (nothing counts). */
	ck_assert(vmr_page_trylock(m, 0));
	ck_assert_int_eq(vmr_page_mark_uptodate(m, 0), 0);
	ck_assert_int_eq(vmr_page_unlock(m, 0), 0);
	ck_assert_int_eq(vmr_page_lock(m, 0, VMR_FAULT_FLAG_KILLABLE), 0);
	ck_assert_int_eq(vmr_page_pin(m, 0), 0);
	ck_assert(!vmr_page_evict(m, 0));
	ck_assert_int_eq(vmr_page_unpin(m, 0), 0);
	ck_assert_int_eq(vmr_page_unlock(m, 0), 0);
	ck_assert(vmr_page_evict(m, 0));
	ck_assert_int_eq(vmr_page_lock(m, 2, 0), -EINVAL);
	vmr_pagemap_destroy(m);
	/* For the teardown: a fresh, empty space. */
	ck_assert_int_eq(vmr_space_create(NULL, 0, &space), 0);
	model.nr = 0;
	snap_take(&before);
	snap_same_as(&before, 0, "the fresh space");
}
END_TEST

/* ---- the same refusals in every context --------------------------------- */

/*
 * Bad arguments are refused before anything else is looked at: whether the
 * thread is registered, what it holds, whether the space was shut down.
 * bad_args() makes one call of each kind with an argument no context can
 * make good and records what it returned (no assertion: it also runs on
 * threads other than the test thread); the caller snapshots around it.
 */
#define REC(p, call, want) probe_record((p), #call, (long long)(call), \
					(long long)(want), NULL)

static void bad_args(struct probe *p)
{
	static int v;
	struct vmr_region_desc d = desc_a();
	struct vmr_space_config bad_cfg = { .page_size = 3000 };
	struct vmr_range_lock l;
	struct vmr_stats st;
	struct vmr_space *s_out = SENTINEL;
	struct vmr_pagemap *m_out = SENTINEL;
	struct vmr_uffd *u_out = SENTINEL;
	vmr_fault_t res = 0xdead;
	size_t index = 77;

	d.start = P(10) + 1; /* unaligned */
	REC(p, vmr_map(NULL, &d, sizeof(d), 0), -EINVAL);
	REC(p, vmr_map(space, &d, sizeof(d), 0), -EINVAL);
	REC(p, vmr_map(space, &d, 0, 0), -EINVAL);
	REC(p, vmr_unmap(space, P(0), 0), -EINVAL);
	REC(p, vmr_unmap(space, P(0), SIZE_MAX & ~(size_t)(PG - 1)), -EINVAL);
	REC(p, vmr_protect(space, P(0), PG, 0x8), -EINVAL);
	REC(p, vmr_protect(space, P(0) + 1, PG, VMR_PROT_READ), -EINVAL);
	REC(p, vmr_space_read_lock(NULL), -EINVAL);
	REC(p, vmr_space_read_trylock(NULL), false);
	REC(p, vmr_space_read_unlock(NULL), -EINVAL);
	REC(p, vmr_space_write_lock(NULL), -EINVAL);
	REC(p, vmr_space_write_trylock(NULL), false);
	REC(p, vmr_space_write_unlock(NULL), -EINVAL);
	REC(p, vmr_space_write_downgrade(NULL), -EINVAL);
	REC(p, vmr_range_read_lock(NULL, P(0), 1, &l), -EINVAL);
	REC(p, vmr_range_read_lock(space, P(0), 1, NULL), -EINVAL);
	REC(p, vmr_range_read_lock(space, UINTPTR_MAX, 2, &l), -EINVAL);
	REC(p, vmr_range_read_unlock(NULL), -EINVAL);
	REC(p, vmr_range_write_lock(NULL, P(0), P(1)), -EINVAL);
	REC(p, vmr_range_write_lock(space, P(1), P(1)), -EINVAL);
	REC(p, vmr_handle_fault(NULL, P(0), DEF, NULL, &res), -EINVAL);
	REC(p, vmr_handle_fault(space, P(0), DEF, NULL, NULL), -EINVAL);
	REC(p, vmr_handle_fault(space, P(0), VMR_FAULT_FLAG_TRIED, NULL, &res),
	    -EINVAL);
	REC(p, res, 0xdead);
	REC(p, vmr_fault_release(NULL), -EINVAL);
	REC(p, vmr_fault_release_for_io(NULL), 0);
	REC(p, vmr_fault_policy(NULL), VMR_POLICY_DEFAULT);
	REC(p, vmr_fault_allow_retry_first(NULL), false);
	REC(p, vmr_fault_pin_page(NULL, map, 0), -EINVAL);
	REC(p, vmr_fault_pinned_page(NULL, map, &index), false);
	REC(p, index, 77);
	REC(p, vmr_page_lock_or_retry(NULL, map, 0), VMR_FAULT_SIGBUS);
	REC(p, vmr_page_lock(map, NR_PAGES, 0), -EINVAL);
	REC(p, vmr_page_lock(map, 0, 1u << 1), -EINVAL);
	REC(p, vmr_page_wait_unlocked(map, SIZE_MAX, 0), -EINVAL);
	REC(p, vmr_page_unlock(NULL, 0), -EINVAL);
	REC(p, vmr_page_mark_uptodate(map, NR_PAGES), -EINVAL);
	REC(p, vmr_page_pin(map, SIZE_MAX), -EINVAL);
	REC(p, vmr_page_unpin(NULL, 0), -EINVAL);
	REC(p, vmr_page_trylock(map, NR_PAGES), false);
	REC(p, vmr_page_evict(map, NR_PAGES), false);
	REC(p, vmr_pagemap_create(space, 0, &m_out), -EINVAL);
	REC(p, vmr_space_stats(space, &st, 7), -EINVAL);
	REC(p, vmr_space_stats_reset(NULL), -EINVAL);
	REC(p, vmr_hist_percentile(NULL, 50), 0);
	REC(p, vmr_tree_create(NULL, NULL), -EINVAL);
	REC(p, vmr_tree_insert(tree, 0x30, 0x30, &v), -EINVAL);
	REC(p, vmr_tree_insert(tree, 0x30, 0x38, NULL), -EINVAL);
	REC(p, vmr_tree_remove(NULL, 0x10, 0x20, NULL), -EINVAL);
	REC(p, vmr_tree_replace(tree, 0x38, 0x30, NULL, 0, NULL, NULL),
	    -EINVAL);
	REC(p, vmr_space_create(&bad_cfg, sizeof(bad_cfg), &s_out), -EINVAL);
	REC(p, vmr_space_destroy(NULL), 0);
	REC(p, vmr_space_register_thread(NULL), -EINVAL);
	REC(p, vmr_space_unregister_thread(NULL), -EINVAL);
	REC(p, vmr_space_shutdown(NULL), -EINVAL);
	REC(p, vmr_uffd_create(NULL, NULL, 0, &u_out), -EINVAL);
	REC(p, vmr_uffd_map(NULL, area, PG, RW, 0, VMR_UFFD_MISSING, NULL, 0,
			    NULL),
	    -EINVAL);
	REC(p, vmr_uffd_unmap(NULL, area, PG), -EINVAL);
	REC(p, vmr_uffd_stats(NULL, NULL, 0), -EINVAL);
	REC(p, s_out == SENTINEL && m_out == SENTINEL && u_out == SENTINEL,
	    true);
}

#undef REC

/* Every row of @p as probe_assert() says, with no count expected. */
static void outcomes_assert(const struct probe *p, const char *context)
{
	ck_assert_uint_lt(p->nr, MAX_OUTCOMES); /* none was dropped */
	for (unsigned int i = 0; i < p->nr; i++) {
		const struct outcome *o = &p->out[i];

		ck_assert_msg(o->got == o->want, "%s: %s: got %lld, not %lld",
			      context, o->what, o->got, o->want);
		ck_assert_msg(!o->diff[0], "%s: %s: %s", context, o->what,
			      o->diff);
	}
}

START_TEST(test_bad_arguments_are_refused_alike_on_the_test_thread)
{
	struct probe p = { 0 };
	struct snap before;

	snap_take(&before);
	bad_args(&p);
	outcomes_assert(&p, "registered thread, no lock");
	snap_same_as(&before, 0, "bad arguments");
}
END_TEST

static void *unregistered_main(void *arg)
{
	/* Never registered with any flavor: no RCU may be used here. */
	bad_args(arg);
	return NULL;
}

START_TEST(test_bad_arguments_are_refused_alike_on_an_unregistered_thread)
{
	struct probe p = { 0 };
	struct snap before;
	pthread_t t;

	snap_take(&before);
	ck_assert_int_eq(pthread_create(&t, NULL, unregistered_main, &p), 0);
	ck_assert_int_eq(vmr_test_join(t, 20.0), 0);
	outcomes_assert(&p, "unregistered thread");
	snap_same_as(&before, 0, "bad arguments on an unregistered thread");
}
END_TEST

START_TEST(test_bad_arguments_are_refused_alike_after_shutdown)
{
	struct probe p = { 0 };
	struct snap before;

	ck_assert_int_eq(vmr_space_shutdown(space), 0);
	snap_take(&before);
	bad_args(&p);
	outcomes_assert(&p, "after shutdown");
	snap_same_as(&before, 0, "bad arguments after shutdown");
}
END_TEST

START_TEST(test_bad_arguments_are_refused_alike_under_a_read_hold)
{
	struct vmr_range_lock l;
	struct probe p = { 0 };
	struct snap before;

	ck_assert_int_eq(vmr_space_read_lock(space), 0);
	snap_take(&before);
	bad_args(&p);
	outcomes_assert(&p, "under a read hold");
	snap_same_as(&before, 0, "bad arguments under a read hold");
	/* A hold of the space lock is no VMA-range read lock: one can still
	 * be had (not -EBUSY). */
	ck_assert_int_eq(vmr_range_read_lock(space, P(0), 1, &l), 0);
	ck_assert_int_eq(vmr_range_read_unlock(&l), 0);
	ck_assert_int_eq(vmr_space_read_unlock(space), 0);
}
END_TEST

/*
 * Inside a handler: the refusals above, then what only a handler's context
 * makes wrong: a second VMA-range read lock of the thread (-EBUSY, ABORT),
 * destroying the space its fault holds (-EBUSY).
 */
static void bad_args_in_a_handler(struct vmr_fault *vmf, struct probe *p)
{
	struct vmr_range_lock l;
	struct snap before;

	probe_record(p, "the fault's lock", vmf->lock,
		     vmf->flags & VMR_FAULT_FLAG_RETRY_NOWAIT ?
			     VMR_FAULT_LOCK_SPACE :
			     VMR_FAULT_LOCK_VMA,
		     NULL);
	snap_take(&before);
	bad_args(p);
	/* Region A and the space both say VMR_POLICY_DEFAULT. */
	probe_record(p, "policy of the fault", vmr_fault_policy(vmf),
		     VMR_RETRY_VMA, NULL);
	probe_record(p, "destroy of the space a fault holds",
		     vmr_space_destroy(space), -EBUSY, &before);
	if (vmf->lock == VMR_FAULT_LOCK_VMA)
		probe_record(p, "a second range read lock",
			     vmr_range_read_lock(space, P(6), 1, &l), -EBUSY,
			     &before);
	/* The whole batch moved nothing the snapshot sees. */
	probe_record(p, "the batch", 0, 0, &before);
}

START_TEST(test_bad_arguments_are_refused_alike_inside_a_handler)
{
	static const struct {
		const char *what;
		unsigned int flags;
		size_t path; /* the counter of the fault's path */
	} rows[] = {
		{ "on the VMA lock", DEF, VMR_STAT(vma_lock_success) },
		{ "on the space lock", DEF | VMR_FAULT_FLAG_RETRY_NOWAIT,
		  VMR_STAT(space_lock_faults) },
	};

	for (size_t i = 0; i < VMR_ARRAY_SIZE(rows); i++) {
		struct probe p = { .body = bad_args_in_a_handler };
		vmr_fault_t res = 0xdead;
		struct snap before;

		snap_take(&before);
		ck_assert_int_eq(vmr_handle_fault(space, P(0), rows[i].flags,
						  &p, &res),
				 0);
		ck_assert_uint_eq(res, 0);
		ck_assert_uint_eq(p.calls, 1);
		outcomes_assert(&p, rows[i].what);
		/* The fault itself counted; nothing else moved. */
		before.stats[VMR_STAT(faults)]++;
		before.stats[VMR_STAT(result_ok)]++;
		before.stats[rows[i].path]++;
		snap_same_as(&before, ALLOW_LOCK_CYCLE, rows[i].what);
	}
}
END_TEST

/* ---- lock misuse: -EPERM, or an abort with debug_checks ----------------- */

static struct vmr_range_lock misuse_lock;

/* Another thread that holds the write lock until told to let go. */
static struct {
	pthread_t thread;
	atomic_int state; /* 0 starting, 1 holding, 2 let go */
} writer;

static void *writer_main(void *arg)
{
	(void)arg;
	urcu_memb_register_thread();
	vmr_space_write_lock(space);
	atomic_store(&writer.state, 1);
	while (atomic_load(&writer.state) != 2)
		vmr_test_sleep(0.001);
	vmr_space_write_unlock(space);
	urcu_memb_unregister_thread();
	return NULL;
}

static void nothing(void)
{
}

static void take_read(void)
{
	ck_assert_int_eq(vmr_space_read_lock(space), 0);
}

static void drop_read(void)
{
	ck_assert_int_eq(vmr_space_read_unlock(space), 0);
}

static void take_write(void)
{
	ck_assert_int_eq(vmr_space_write_lock(space), 0);
}

static void drop_write(void)
{
	ck_assert_int_eq(vmr_space_write_unlock(space), 0);
}

static void lock_then_unlock_range(void)
{
	ck_assert_int_eq(vmr_range_read_lock(space, P(0), 1, &misuse_lock), 0);
	ck_assert_int_eq(vmr_range_read_unlock(&misuse_lock), 0);
}

static void zero_range_lock(void)
{
	memset(&misuse_lock, 0, sizeof(misuse_lock));
}

static void other_thread_writes(void)
{
	bool ok;

	atomic_store(&writer.state, 0);
	ck_assert_int_eq(pthread_create(&writer.thread, NULL, writer_main,
					NULL),
			 0);
	VMR_WAIT_FOR(ok, atomic_load(&writer.state) == 1, 20.0);
	ck_assert(ok);
}

static void other_thread_lets_go(void)
{
	atomic_store(&writer.state, 2);
	ck_assert_int_eq(vmr_test_join(writer.thread, 20.0), 0);
}

static int read_unlock(void)
{
	return vmr_space_read_unlock(space);
}

static int write_unlock(void)
{
	return vmr_space_write_unlock(space);
}

static int downgrade(void)
{
	return vmr_space_write_downgrade(space);
}

static int range_unlock(void)
{
	return vmr_range_read_unlock(&misuse_lock);
}

static int range_write_lock(void)
{
	return vmr_range_write_lock(space, P(0), P(1));
}

static int unlock_page_0(void)
{
	return vmr_page_unlock(map, 0);
}

static int mark_page_2_uptodate(void)
{
	return vmr_page_mark_uptodate(map, 2);
}

static int unpin_page_0(void)
{
	return vmr_page_unpin(map, 0);
}

static const struct misuse {
	const char *what;
	void (*before)(void);
	int (*call)(void);
	void (*after)(void);
	int err;
} misuses[] = {
	{ "space read unlock with no reader", nothing, read_unlock, nothing,
	  -EPERM },
	{ "space read unlock by the writer", take_write, read_unlock,
	  drop_write, -EPERM },
	{ "space write unlock of a free lock", nothing, write_unlock, nothing,
	  -EPERM },
	{ "space write unlock of a read hold", take_read, write_unlock,
	  drop_read, -EPERM },
	{ "space write unlock by a thread not the writer",
	  other_thread_writes, write_unlock, other_thread_lets_go, -EPERM },
	{ "downgrade of a free lock", nothing, downgrade, nothing, -EPERM },
	{ "downgrade of a read hold", take_read, downgrade, drop_read,
	  -EPERM },
	{ "downgrade by a thread not the writer", other_thread_writes,
	  downgrade, other_thread_lets_go, -EPERM },
	{ "range read unlock of a lock released already",
	  lock_then_unlock_range, range_unlock, nothing, -EPERM },
	{ "range read unlock of a lock never taken", zero_range_lock,
	  range_unlock, nothing, -EPERM },
	{ "range write lock without the space lock", nothing,
	  range_write_lock, nothing, -EPERM },
	{ "range write lock under a read hold", take_read, range_write_lock,
	  drop_read, -EPERM },
	{ "page unlock of an unlocked page", nothing, unlock_page_0, nothing,
	  -EPERM },
	{ "page marked up to date unlocked", nothing, mark_page_2_uptodate,
	  nothing, -EPERM },
	{ "page unpin of an unpinned page", nothing, unpin_page_0, nothing,
	  -EPERM },
};

START_TEST(test_lock_misuse_is_refused_and_changes_nothing)
{
	const struct misuse *m = &misuses[_i];
	struct snap before;
	int got;

	m->before();
	snap_take(&before);
	got = m->call();
	/* Built with debug_checks, the call above aborted. */
	ck_assert_msg(!MISUSE_ABORTS, "%s: returned instead of aborting",
		      m->what);
	ck_assert_msg(got == m->err, "%s: returned %d, not %d", m->what, got,
		      m->err);
	snap_same_as(&before, 0, m->what);
	m->after();
}
END_TEST

/* A second release inside a handler: -EINVAL, as the header says. */
static void release_twice(struct vmr_fault *vmf, struct probe *p)
{
	struct snap before;

	probe_record(p, "first release", vmr_fault_release(vmf), 0, NULL);
	snap_take(&before);
	probe_record(p, "second release", vmr_fault_release(vmf), -EINVAL,
		     &before);
}

START_TEST(test_releasing_a_fault_lock_twice_is_refused)
{
	struct probe p = { .body = release_twice, .ret = VMR_FAULT_COMPLETED };
	vmr_fault_t res = 0xdead;

	ck_assert_int_eq(vmr_handle_fault(space, P(0), DEF, &p, &res), 0);
	ck_assert_msg(!MISUSE_ABORTS, "returned instead of aborting");
	ck_assert_uint_eq(res, VMR_FAULT_COMPLETED);
	probe_assert(&p, 2);
}
END_TEST

/* ---- the userfaultfd runtime ------------------------------------------- */

static int store_read(void *store, uint64_t offset, void *buf, size_t len)
{
	(void)store;
	(void)offset;
	memset(buf, 0x11, len);
	return 0;
}

static const struct vmr_uffd_store_ops store_ops = { .read = store_read };

static bool uffd_refused;

static void make_uffd_space(void)
{
	urcu_memb_register_thread();
	upg = (size_t)sysconf(_SC_PAGESIZE);
	ck_assert_int_eq(vmr_space_create(NULL, 0, &space), 0);
	model.nr = 0;
}

/* Just a space of the system's page size: the runtime's argument checks. */
static void setup_uffd_args(void)
{
	make_uffd_space();
}

static void teardown_uffd_args(void)
{
	ck_assert_int_eq(vmr_space_destroy(space), 0);
	space = NULL;
	urcu_memb_unregister_thread();
}

/*
 * A runtime with one handler thread, and AREA_PAGES of process memory of
 * which pages 0 and 1 are mapped (MISSING) through it.  The test thread
 * never touches the area: a fault there would wait for the runtime.
 */
static void setup_uffd(void)
{
	struct vmr_uffd_config cfg = { .threads = 1, .fd = -1 };
	void *mem;
	int err;

	make_uffd_space();
	err = vmr_uffd_create(space, &cfg, sizeof(cfg), &uffd);
	uffd_refused = err == -ENOSYS || err == -EPERM;
	if (uffd_refused) {
		uffd = NULL;
		return;
	}
	ck_assert_int_eq(err, 0);
	mem = mmap(NULL, AREA_PAGES * upg, PROT_READ | PROT_WRITE,
		   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	ck_assert(mem != MAP_FAILED);
	area = mem;
	ck_assert_int_eq(vmr_uffd_map(uffd, area, 2 * upg, RW, 0,
				      VMR_UFFD_MISSING, &store_ops,
				      sizeof(store_ops), NULL),
			 0);
	model.nr = 1;
	model.r[0].start = (uintptr_t)area;
	model.r[0].end = (uintptr_t)area + 2 * upg;
	model.r[0].prot = RW;
	model.r[0].offset = 0;
	model.r[0].private_data = MODEL_ANY_PRIVATE; /* the runtime's own */
}

static void teardown_uffd(void)
{
	ck_assert_int_eq(vmr_uffd_destroy(uffd), 0);
	uffd = NULL;
	if (area)
		munmap(area, AREA_PAGES * upg);
	area = NULL;
	teardown_uffd_args();
}

#define UFFD_OR_SKIP()                                                         \
	do {                                                                   \
		if (uffd_refused) {                                            \
			fprintf(stderr,                                        \
				"%s: the kernel refuses userfaultfd: "         \
				"skipped\n",                                   \
				__func__);                                     \
			return;                                                \
		}                                                              \
	} while (0)

START_TEST(test_uffd_create_refuses_bad_arguments_before_the_kernel)
{
	struct {
		struct vmr_uffd_config c;
		uint64_t tail[2];
	} big;
	struct row {
		const char *what;
		struct vmr_uffd_config c;
		size_t size;
		bool null_space, null_out, null_config, dirty_tail;
		int err;
	} rows[] = {
		{ "NULL space", { .fd = -1 }, sizeof(big.c), 1, 0, 0, 0,
		  -EINVAL },
		{ "no out pointer", { .fd = -1 }, sizeof(big.c), 0, 1, 0, 0,
		  -EINVAL },
		{ "NULL config with a size", { .fd = -1 }, sizeof(big.c), 0, 0,
		  1, 0, -EINVAL },
		{ "1025 threads", { .threads = 1025, .fd = -1 }, sizeof(big.c),
		  0, 0, 0, 0, -EINVAL },
		{ "UINT_MAX threads", { .threads = UINT32_MAX, .fd = -1 },
		  sizeof(big.c), 0, 0, 0, 0, -EINVAL },
		{ "batch 4097", { .batch = 4097, .fd = -1 }, sizeof(big.c), 0,
		  0, 0, 0, -EINVAL },
		{ "flag 0x8", { .flags = 0x8, .fd = -1 }, sizeof(big.c), 0, 0,
		  0, 0, -EINVAL },
		{ "NO_REMOVE, REMOVE asked for",
		  { .flags = VMR_UFFD_NO_REMOVE, .fd = -1,
		    .features = UFFD_FEATURE_EVENT_REMOVE },
		  sizeof(big.c), 0, 0, 0, 0, -EINVAL },
		{ "flag high bit", { .flags = 0x80000000u, .fd = -1 },
		  sizeof(big.c), 0, 0, 0, 0, -EINVAL },
		{ "larger struct, tail set", { .fd = -1 }, sizeof(big), 0, 0,
		  0, 1, -E2BIG },
	};
	struct vmr_space_config two = { .page_size = 2 * upg };
	struct vmr_space *other;
	struct vmr_uffd *out = SENTINEL;
	struct snap before;

	snap_take(&before);
	for (size_t i = 0; i < VMR_ARRAY_SIZE(rows); i++) {
		memset(&big, 0, sizeof(big));
		big.c = rows[i].c;
		big.tail[0] = rows[i].dirty_tail ? 1 : 0;
		EXPECT(&before,
		       vmr_uffd_create(rows[i].null_space ? NULL : space,
				       rows[i].null_config ? NULL : &big.c,
				       rows[i].size,
				       rows[i].null_out ? NULL : &out),
		       rows[i].err, rows[i].what);
	}
	ck_assert_ptr_eq(out, SENTINEL);
	/* A space whose page is not the system's. */
	ck_assert_int_eq(vmr_space_create(&two, sizeof(two), &other), 0);
	ck_assert_int_eq(vmr_uffd_create(other, NULL, 0, &out), -EINVAL);
	ck_assert_int_eq(vmr_space_destroy(other), 0);
	ck_assert_ptr_eq(out, SENTINEL);
}
END_TEST

START_TEST(test_uffd_create_refuses_descriptors_that_are_not_userfaultfds)
{
	struct vmr_uffd_config cfg = { .threads = 1 };
	struct vmr_uffd *out = SENTINEL;
	int fd;

	/* A descriptor number that is not open. */
	fd = dup(0);
	ck_assert_int_ge(fd, 0);
	close(fd);
	cfg.fd = fd;
	ck_assert_int_eq(vmr_uffd_create(space, &cfg, sizeof(cfg), &out),
			 -EBADF);
	cfg.flags = VMR_UFFD_FD_READY;
	ck_assert_int_eq(vmr_uffd_create(space, &cfg, sizeof(cfg), &out),
			 -EBADF);
	/* An open descriptor of something else. */
	fd = open("/dev/null", O_RDWR | O_CLOEXEC);
	ck_assert_int_ge(fd, 0);
	cfg.fd = fd;
	cfg.flags = 0;
	ck_assert_int_eq(vmr_uffd_create(space, &cfg, sizeof(cfg), &out),
			 -ENOTTY);
	close(fd);
	ck_assert_ptr_eq(out, SENTINEL);
}
END_TEST

START_TEST(test_uffd_calls_on_a_null_runtime_are_refused_or_tolerated)
{
	struct vmr_uffd_stats st;
	unsigned char ref[sizeof(st)];
	unsigned char mem[64];
	struct snap before;

	memset(&st, FILL, sizeof(st));
	memcpy(ref, &st, sizeof(st));
	snap_take(&before);
	EXPECT(&before, vmr_uffd_destroy(NULL), 0, "destroy(NULL)");
	EXPECT(&before, vmr_uffd_fd(NULL), -1, "fd(NULL)");
	EXPECT(&before, vmr_uffd_features(NULL), 0, "features(NULL)");
	ck_assert_ptr_null(vmr_uffd_space(NULL));
	EXPECT(&before, vmr_uffd_is_dead(NULL), false, "is_dead(NULL)");
	EXPECT(&before, vmr_uffd_stats(NULL, &st, sizeof(st)), -EINVAL,
	       "stats(NULL)");
	ck_assert(!memcmp(&st, ref, sizeof(st)));
	EXPECT(&before,
	       vmr_uffd_map(NULL, mem, upg, RW, 0, VMR_UFFD_MISSING,
			    &store_ops, sizeof(store_ops), NULL),
	       -EINVAL, "map(NULL)");
	EXPECT(&before, vmr_uffd_unmap(NULL, mem, upg), -EINVAL,
	       "unmap(NULL)");
}
END_TEST

START_TEST(test_uffd_create_refuses_unknown_features)
{
	struct vmr_uffd_config cfg = { .threads = 1,
				       .fd = -1,
				       .features = 1ull << 62 };
	struct vmr_uffd *out = SENTINEL;
	int err;

	err = vmr_uffd_create(space, &cfg, sizeof(cfg), &out);
	if (err == -ENOSYS || err == -EPERM) {
		fprintf(stderr, "%s: the kernel refuses userfaultfd: skipped\n",
			__func__);
		return;
	}
	/* Only the kernel knows its features: it is asked, and says no. */
	ck_assert_int_eq(err, -EINVAL);
	ck_assert_ptr_eq(out, SENTINEL);
}
END_TEST

START_TEST(test_uffd_map_refuses_bad_arguments_and_registers_nothing)
{
	struct bad_range r[MAX_BAD_RANGES];
	size_t nr;
	struct {
		struct vmr_uffd_store_ops o;
		void (*future)(void);
	} big_ops;
	const struct vmr_uffd_store_ops no_read = { 0 };
	struct snap before;
	char what[128];
	unsigned char *free4;

	UFFD_OR_SKIP();
	free4 = area + 4 * upg;
	nr = bad_ranges(r, (uintptr_t)free4, upg);
	snap_take(&before);
	ck_assert_uint_eq(before.kmodes[0], 0x1);
	ck_assert_uint_eq(before.kmodes[4], 0);
	for (size_t i = 0; i < nr; i++) {
		snprintf(what, sizeof(what), "map: %s", r[i].what);
		EXPECT(&before,
		       vmr_uffd_map(uffd, (void *)r[i].start, r[i].len, RW, 0,
				    VMR_UFFD_MISSING, &store_ops,
				    sizeof(store_ops), NULL),
		       -EINVAL, what);
	}
#define MAP(addr, len, prot, off, mode, ops, size)                             \
	vmr_uffd_map(uffd, addr, len, prot, off, mode, ops, size, NULL)
	EXPECT(&before,
	       MAP(NULL, upg, RW, 0, VMR_UFFD_MISSING, &store_ops,
		   sizeof(store_ops)),
	       -EINVAL, "NULL address");
	EXPECT(&before, MAP(free4, upg, RW, 0, 0, &store_ops, sizeof(store_ops)),
	       -EINVAL, "mode 0");
	EXPECT(&before,
	       MAP(free4, upg, RW, 0, VMR_UFFD_FAST_STORE, &store_ops,
		   sizeof(store_ops)),
	       -EINVAL, "FAST_STORE alone");
	EXPECT(&before,
	       MAP(free4, upg, RW, 0, VMR_UFFD_WP, &store_ops,
		   sizeof(store_ops)),
	       -EINVAL, "WP alone");
	EXPECT(&before,
	       MAP(free4, upg, RW, 0, VMR_UFFD_MINOR | VMR_UFFD_WP, &store_ops,
		   sizeof(store_ops)),
	       -EINVAL, "MINOR | WP");
	EXPECT(&before,
	       MAP(free4, upg, RW, 0, VMR_UFFD_MISSING | VMR_UFFD_MINOR,
		   &store_ops, sizeof(store_ops)),
	       -EINVAL, "MISSING | MINOR");
	EXPECT(&before,
	       MAP(free4, upg, RW, 0, VMR_UFFD_MISSING | 0x10, &store_ops,
		   sizeof(store_ops)),
	       -EINVAL, "mode bit 0x10");
	EXPECT(&before,
	       MAP(free4, upg, RW, 0, VMR_UFFD_MISSING | 0x80000000u,
		   &store_ops, sizeof(store_ops)),
	       -EINVAL, "mode high bit");
	EXPECT(&before, MAP(free4, upg, RW, 0, VMR_UFFD_MISSING, NULL, 0),
	       -EINVAL, "no ops: no read()");
	EXPECT(&before,
	       MAP(free4, upg, RW, 0, VMR_UFFD_MISSING, NULL,
		   sizeof(store_ops)),
	       -EINVAL, "NULL ops with a size");
	EXPECT(&before,
	       MAP(free4, upg, RW, 0, VMR_UFFD_MISSING, &no_read,
		   sizeof(no_read)),
	       -EINVAL, "ops without read()");
	EXPECT(&before,
	       MAP(free4, upg, RW, 0, VMR_UFFD_MISSING, &store_ops,
		   offsetof(struct vmr_uffd_store_ops, read)),
	       -EINVAL, "ops too small to hold read()");
	memset(&big_ops, 0, sizeof(big_ops));
	big_ops.o = store_ops;
	big_ops.future = (void (*)(void))probe_close;
	EXPECT(&before,
	       MAP(free4, upg, RW, 0, VMR_UFFD_MISSING, &big_ops.o,
		   sizeof(big_ops)),
	       -E2BIG, "larger ops, tail set");
	EXPECT(&before,
	       MAP(free4, upg, 0x8, 0, VMR_UFFD_MISSING, &store_ops,
		   sizeof(store_ops)),
	       -EINVAL, "prot 0x8");
	EXPECT(&before,
	       MAP(free4, upg, RW, 1, VMR_UFFD_MISSING, &store_ops,
		   sizeof(store_ops)),
	       -EINVAL, "unaligned offset");
	/* Too many pages for one page map (2^32): refused before the space
	 * or the kernel is asked.  The range need not be mapped for that. */
	EXPECT(&before,
	       MAP(free4, (((size_t)1 << 32) + 1) * upg, RW, 0,
		   VMR_UFFD_MISSING, &store_ops, sizeof(store_ops)),
	       -ENOMEM, "2^32 + 1 pages");
	/* The space's write lock is taken to find these out. */
	EXPECT_ALLOWING(ALLOW_LOCK_CYCLE, &before,
			MAP(area, upg, RW, 0, VMR_UFFD_MISSING, &store_ops,
			    sizeof(store_ops)),
			-EEXIST, "over a mapped range");
	EXPECT_ALLOWING(ALLOW_LOCK_CYCLE, &before,
			MAP(area + upg, 2 * upg, RW, 0, VMR_UFFD_MISSING,
			    &store_ops, sizeof(store_ops)),
			-EEXIST, "across a mapped range's end");
#undef MAP
}
END_TEST

START_TEST(test_uffd_calls_under_the_space_write_lock_fail_with_edeadlk)
{
	struct snap before;

	UFFD_OR_SKIP();
	ck_assert_int_eq(vmr_space_write_lock(space), 0);
	snap_take(&before);
	EXPECT(&before,
	       vmr_uffd_map(uffd, area + 4 * upg, upg, RW, 0, VMR_UFFD_MISSING,
			    &store_ops, sizeof(store_ops), NULL),
	       -EDEADLK, "map under the write lock");
	/* Unregistering first would leave the region in the space: refused
	 * before the kernel is asked. */
	EXPECT(&before, vmr_uffd_unmap(uffd, area, 2 * upg), -EDEADLK,
	       "unmap under the write lock");
	ck_assert_int_eq(vmr_space_write_unlock(space), 0);
}
END_TEST

START_TEST(test_uffd_unmap_and_stats_refuse_bad_arguments)
{
	struct bad_range r[MAX_BAD_RANGES];
	size_t nr;
	struct vmr_uffd_stats st;
	unsigned char ref[sizeof(st)];
	struct snap before;
	char what[128];

	UFFD_OR_SKIP();
	nr = bad_ranges(r, (uintptr_t)area, upg);
	snap_take(&before);
	for (size_t i = 0; i < nr; i++) {
		snprintf(what, sizeof(what), "unmap: %s", r[i].what);
		EXPECT(&before, vmr_uffd_unmap(uffd, (void *)r[i].start,
					       r[i].len),
		       -EINVAL, what);
	}
	memset(&st, FILL, sizeof(st));
	memcpy(ref, &st, sizeof(st));
	EXPECT(&before, vmr_uffd_stats(uffd, NULL, sizeof(st)), -EINVAL,
	       "stats NULL");
	EXPECT(&before, vmr_uffd_stats(uffd, &st, 4), -EINVAL, "stats size 4");
	EXPECT(&before, vmr_uffd_stats(uffd, &st, sizeof(st) - 1), -EINVAL,
	       "stats size - 1");
	ck_assert(!memcmp(&st, ref, sizeof(st)));
	ck_assert_ptr_eq(vmr_uffd_space(uffd), space);
}
END_TEST

/* ---- the suite ----------------------------------------------------------- */

static Suite *badinput_suite(void)
{
	Suite *s = suite_create("badinput");
	TCase *tc;

	tc = tcase_create("rcu");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, test_null_flavor_means_the_default_flavor);
	suite_add_tcase(s, tc);

	tc = tcase_create("tree");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc,
		       test_tree_constructor_and_getters_refuse_or_tolerate_null);
	tcase_add_test(tc,
		       test_tree_reads_of_empty_or_inverted_ranges_find_nothing);
	tcase_add_test(tc, test_tree_cursor_stays_at_its_ends);
	tcase_add_test(tc,
		       test_tree_updates_refuse_bad_arguments_and_change_nothing);
	suite_add_tcase(s, tc);

	tc = tcase_create("space life cycle");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc,
		       test_space_create_refuses_bad_configs_and_makes_nothing);
	tcase_add_test(
		tc,
		test_space_create_takes_defaults_for_what_a_smaller_config_lacks);
	tcase_add_test(tc, test_space_getters_and_destroy_tolerate_null);
	tcase_add_test(tc, test_destroy_of_a_space_in_use_is_refused_with_ebusy);
	suite_add_tcase(s, tc);

	tc = tcase_create("updates");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, test_map_refuses_bad_descriptors_and_changes_nothing);
	tcase_add_test(tc, test_map_over_a_region_is_refused_with_eexist);
	tcase_add_test(
		tc, test_unmap_and_protect_refuse_bad_ranges_and_change_nothing);
	tcase_add_test(tc, test_protect_over_a_hole_is_refused_with_enomem);
	tcase_add_test(
		tc,
		test_updates_under_the_callers_own_write_lock_fail_with_edeadlk);
	suite_add_tcase(s, tc);

	tc = tcase_create("locks");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, test_space_lock_calls_refuse_a_null_space);
	tcase_add_test(
		tc, test_range_read_lock_refuses_bad_arguments_and_holds_nothing);
	tcase_add_test(tc,
		       test_range_write_lock_refuses_bad_ranges_and_marks_nothing);
	suite_add_tcase(s, tc);

	tc = tcase_create("stats");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, test_stats_refuse_bad_sizes_and_write_nothing);
	tcase_add_test(tc, test_hist_percentile_clamps_what_is_out_of_range);
	suite_add_tcase(s, tc);

	tc = tcase_create("fault engine");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc,
		       test_handle_fault_refuses_bad_arguments_and_counts_nothing);
	tcase_add_test(tc,
		       test_a_fault_in_a_shut_down_space_ends_unfinished_at_once);
	tcase_add_test(
		tc, test_a_fault_under_the_callers_write_lock_fails_with_edeadlk);
	tcase_add_test(
		tc, test_fault_calls_refuse_bad_arguments_from_inside_a_handler);
	tcase_add_test(tc, test_release_for_io_without_the_lock_does_nothing);
	suite_add_tcase(s, tc);

	tc = tcase_create("page wait");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc,
		       test_pagemap_create_refuses_bad_sizes_and_makes_nothing);
	tcase_add_test(
		tc, test_page_calls_refuse_a_null_map_or_an_index_out_of_range);
	tcase_add_test(tc, test_page_waits_refuse_unknown_flag_bits);
	tcase_add_test(tc, test_page_pin_past_its_limit_fails_with_eoverflow);
	tcase_add_test(
		tc, test_killable_page_waits_in_a_shut_down_space_end_with_eintr);
	tcase_add_test(tc, test_a_page_map_outlives_its_space);
	suite_add_tcase(s, tc);

	/* One process per row: with debug_checks each one aborts. */
	tc = tcase_create("lock misuse");
	tcase_add_checked_fixture(tc, setup, teardown);
#ifdef VMR_DEBUG
	tcase_add_loop_test_raise_signal(
		tc, test_lock_misuse_is_refused_and_changes_nothing, SIGABRT, 0,
		(int)VMR_ARRAY_SIZE(misuses));
	tcase_add_test_raise_signal(
		tc, test_releasing_a_fault_lock_twice_is_refused, SIGABRT);
#else
	tcase_add_loop_test(tc, test_lock_misuse_is_refused_and_changes_nothing,
			    0, (int)VMR_ARRAY_SIZE(misuses));
	tcase_add_test(tc, test_releasing_a_fault_lock_twice_is_refused);
#endif
	suite_add_tcase(s, tc);

	tc = tcase_create("contexts");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, test_bad_arguments_are_refused_alike_on_the_test_thread);
	tcase_add_test(
		tc,
		test_bad_arguments_are_refused_alike_on_an_unregistered_thread);
	tcase_add_test(tc, test_bad_arguments_are_refused_alike_after_shutdown);
	tcase_add_test(tc,
		       test_bad_arguments_are_refused_alike_under_a_read_hold);
	tcase_add_test(tc,
		       test_bad_arguments_are_refused_alike_inside_a_handler);
	suite_add_tcase(s, tc);

	tc = tcase_create("uffd arguments");
	tcase_add_checked_fixture(tc, setup_uffd_args, teardown_uffd_args);
	tcase_add_test(tc,
		       test_uffd_create_refuses_bad_arguments_before_the_kernel);
	tcase_add_test(
		tc, test_uffd_create_refuses_descriptors_that_are_not_userfaultfds);
	tcase_add_test(tc,
		       test_uffd_calls_on_a_null_runtime_are_refused_or_tolerated);
	tcase_add_test(tc, test_uffd_create_refuses_unknown_features);
	suite_add_tcase(s, tc);

	tc = tcase_create("uffd runtime");
	tcase_add_checked_fixture(tc, setup_uffd, teardown_uffd);
	tcase_add_test(tc,
		       test_uffd_map_refuses_bad_arguments_and_registers_nothing);
	tcase_add_test(
		tc, test_uffd_calls_under_the_space_write_lock_fail_with_edeadlk);
	tcase_add_test(tc, test_uffd_unmap_and_stats_refuse_bad_arguments);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	return vmr_test_run(badinput_suite());
}
