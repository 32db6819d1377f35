/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The address space: creation and its config, the three updates (map,
 * unmap, protect) with the layout each leaves (bounds, protection, offset
 * of every region), every error and that it changes nothing, the owner's
 * open() and close() callbacks (once per piece, once per region, never for
 * a region still mapped, not before the faults holding it let go),
 * teardown, and allocation failure at every point of every update.
 *
 * Regions are mapped with "life" ops: each region's private data is a
 * record of its life (which region it was cut from, how often it was
 * closed), so a test can tell which regions were opened and closed.
 */
#include <urcu/urcu-memb.h> /* before mm.h: its call-rcu.h needs the map */

#include "mm.h"
#include "vmr_test.h"

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#if defined(__SANITIZE_ADDRESS__)
#define VMR_TEST_LSAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define VMR_TEST_LSAN 1
#endif
#endif
#ifdef VMR_TEST_LSAN
#include <sanitizer/lsan_interface.h>
#endif

#define PAGE ((uintptr_t)4096)
#define BASE ((uintptr_t)0x10000000)
#define P(n) (BASE + (uintptr_t)(n) * PAGE) /* address of page n */
#define OFF(n) ((uint64_t)(n) * PAGE)      /* offset of page n */
#define NONE VMR_PROT_NONE
#define R VMR_PROT_READ
#define RW (VMR_PROT_READ | VMR_PROT_WRITE)
#define RX (VMR_PROT_READ | VMR_PROT_EXEC)

static struct vmr_space *space;

/* Stored in an out pointer beforehand, to show a failed call left it. */
static char sentinel_mem;
#define SENTINEL ((struct vmr_space *)&sentinel_mem)

/* ---- lives: what the owner's callbacks saw ------------------------------ */

struct life {
	const struct life *from; /* region it was cut from; NULL if mapped */
	void *private_at_open;   /* the piece's private data open() found */
	uintptr_t start, end;
	bool locked_at_open;     /* the space lock was held for write */
	bool published_at_open;  /* a lookup already found the piece */
	atomic_int closes;
};

#define LIVES_MAX 4096
static struct life lives[LIVES_MAX];
static atomic_uint nr_lives, nr_opens, nr_closes;
static atomic_uint closes_under_space_lock;

static struct life *life_new(uintptr_t start, uintptr_t end)
{
	unsigned int i = atomic_fetch_add(&nr_lives, 1);

	ck_assert_uint_lt(i, LIVES_MAX);
	lives[i].start = start;
	lives[i].end = end;
	return &lives[i];
}

static void life_open(struct vmr_region *r, const struct vmr_region *from)
{
	struct life *l = life_new(vmr_region_start(r), vmr_region_end(r));
	struct vmr_space *s = vmr_region_space(r);

	l->from = vmr_region_private(from);
	l->private_at_open = vmr_region_private(r);
	l->locked_at_open = vmr_space_is_write_locked(s);
	l->published_at_open = vmr_space_find_region(s, l->start) == r;
	vmr_region_set_private(r, l);
	atomic_fetch_add(&nr_opens, 1);
}

/* Runs on liburcu's call_rcu thread: records only. */
static void life_close(struct vmr_region *r)
{
	struct life *l = vmr_region_private(r);

	if (vmr_space_is_write_locked(vmr_region_space(r)))
		atomic_fetch_add(&closes_under_space_lock, 1);
	atomic_fetch_add(&l->closes, 1);
	atomic_fetch_add(&nr_closes, 1);
}

static vmr_fault_t fault_stub(struct vmr_fault *vmf)
{
	(void)vmf;
	return 0;
}

static const struct vmr_region_ops life_ops = {
	.fault = fault_stub,
	.open = life_open,
	.close = life_close,
};

static unsigned int lives_made(void)
{
	return atomic_load(&nr_lives);
}

static int closes_of(struct life *l)
{
	return atomic_load(&l->closes);
}

static unsigned int opens_total(void)
{
	return atomic_load(&nr_opens);
}

static unsigned int closes_total(void)
{
	return atomic_load(&nr_closes);
}

static unsigned int closes_under_lock(void)
{
	return atomic_load(&closes_under_space_lock);
}

/* Let retired regions be closed: a few grace periods and callback runs. */
static void flush_closes(void)
{
	for (int i = 0; i < 4; i++)
		urcu_memb_barrier();
}

static void assert_no_leaks(void)
{
#ifdef VMR_TEST_LSAN
	ck_assert_msg(!__lsan_do_recoverable_leak_check(),
		      "memory leaked (report on stderr)");
#endif
}

/* ---- fixtures ----------------------------------------------------------- */

static struct vmr_space *space_make(enum vmr_lock_granularity granularity)
{
	struct vmr_space_config cfg = {
		.page_size = PAGE,
		.granularity = granularity,
	};
	struct vmr_space *s = NULL;

	ck_assert_int_eq(vmr_space_create(&cfg, sizeof(cfg), &s), 0);
	ck_assert_ptr_nonnull(s);
	return s;
}

static void setup_thread(void)
{
	urcu_memb_register_thread();
}

static void teardown_thread(void)
{
	urcu_memb_unregister_thread();
}

static void setup_region_space(void)
{
	setup_thread();
	space = space_make(VMR_LOCK_REGION);
}

static void setup_range_space(void)
{
	setup_thread();
	space = space_make(VMR_LOCK_RANGE);
}

/* Tests that destroy the space themselves set it to NULL. */
static void teardown_space(void)
{
	ck_assert_int_eq(vmr_space_destroy(space), 0);
	space = NULL;
	teardown_thread();
}

/* ---- mapping helpers ---------------------------------------------------- */

static struct vmr_region_desc desc_of(uintptr_t start, uintptr_t end,
				      unsigned int prot, uint64_t offset,
				      void *private_data)
{
	return (struct vmr_region_desc){
		.start = start,
		.len = end - start,
		.prot = prot,
		.offset = offset,
		.ops = &life_ops,
		.ops_size = sizeof(life_ops),
		.private_data = private_data,
	};
}

/* vmr_map() of [start, end) with life ops and a fresh life. */
static int map_ret(uintptr_t start, uintptr_t end, unsigned int prot,
		   uint64_t offset, unsigned int flags)
{
	struct vmr_region_desc d =
		desc_of(start, end, prot, offset, life_new(start, end));

	return vmr_map(space, &d, sizeof(d), flags);
}

/*
 * vmr_space_find_region() in a read-side critical section, as its contract
 * asks.  The region stays valid after it: only the test thread updates.
 */
static struct vmr_region *find(uintptr_t addr)
{
	struct vmr_region *r;

	vmr_rcu_read_lock(NULL);
	r = vmr_space_find_region(space, addr);
	vmr_rcu_read_unlock(NULL);
	return r;
}

/* Map [start, end), which must succeed; returns the region's life. */
static struct life *map_at(uintptr_t start, uintptr_t end, unsigned int prot,
			   uint64_t offset)
{
	ck_assert_int_eq(map_ret(start, end, prot, offset, 0), 0);
	return vmr_region_private(find(start));
}

static struct vmr_region *region_at(uintptr_t addr)
{
	struct vmr_region *r = find(addr);

	ck_assert_msg(r, "no region at %#lx", (unsigned long)addr);
	return r;
}

static struct life *life_at(uintptr_t addr)
{
	return vmr_region_private(region_at(addr));
}

static void ck_region(const struct vmr_region *r, uintptr_t start,
		      uintptr_t end, unsigned int prot, uint64_t offset)
{
	ck_assert_ptr_nonnull(r);
	ck_assert_uint_eq(vmr_region_start(r), start);
	ck_assert_uint_eq(vmr_region_end(r), end);
	ck_assert_uint_eq(vmr_region_prot(r), prot);
	ck_assert_uint_eq(vmr_region_offset(r), offset);
	ck_assert_ptr_eq(vmr_region_space(r), space);
}

/* ---- layouts: the whole space, to compare or to check ------------------- */

struct piece {
	uintptr_t start, end;
	unsigned int prot;
	uint64_t offset;
	const struct vmr_region *region;
};

#define LAYOUT_MAX 64
struct layout {
	size_t n;
	struct piece p[LAYOUT_MAX];
};

static void layout_take(struct layout *l)
{
	struct vmr_tree_iter it;
	struct vmr_tree_entry e;
	size_t bad = 0;

	l->n = 0;
	vmr_rcu_read_lock(NULL);
	vmr_tree_iter_start(&it, space->tree, 0);
	while (l->n < LAYOUT_MAX && vmr_tree_iter_next(&it, &e)) {
		const struct vmr_region *r = e.value;

		/* The tree's range is the region's own. */
		if (e.start != vmr_region_start(r) ||
		    e.end != vmr_region_end(r) || vmr_region_is_detached(r))
			bad++;
		l->p[l->n++] = (struct piece){ vmr_region_start(r),
					       vmr_region_end(r),
					       vmr_region_prot(r),
					       vmr_region_offset(r), r };
	}
	vmr_rcu_read_unlock(NULL);
	ck_assert_uint_eq(bad, 0);
	ck_assert_uint_eq(l->n, vmr_space_count_regions(space));
	ck_assert_ptr_null(vmr_tree_validate(space->tree));
}

/* No region still mapped has been closed (life ops regions only). */
static void assert_mapped_never_closed(const struct layout *l)
{
	flush_closes();
	for (size_t i = 0; i < l->n; i++) {
		const struct vmr_region *r = l->p[i].region;
		struct life *lf = vmr_region_private(r);

		if (vmr_region_ops(r)->close == life_close)
			ck_assert_msg(closes_of(lf) == 0,
				      "mapped region %zu was closed", i);
	}
}

static bool piece_same(const struct piece *a, const struct piece *b)
{
	return a->start == b->start && a->end == b->end &&
	       a->prot == b->prot && a->offset == b->offset &&
	       a->region == b->region;
}

/* The layout is exactly @was: same regions, same objects. */
static void layout_same(const struct layout *was)
{
	struct layout now;

	layout_take(&now);
	ck_assert_uint_eq(now.n, was->n);
	for (size_t i = 0; i < now.n; i++)
		ck_assert_msg(piece_same(&now.p[i], &was->p[i]),
			      "region %zu changed", i);
	assert_mapped_never_closed(&now);
}

struct want {
	uintptr_t start, end;
	unsigned int prot;
	uint64_t offset;
};

static void expect_layout(const struct want *w, size_t n)
{
	struct layout now;

	layout_take(&now);
	ck_assert_uint_eq(now.n, n);
	for (size_t i = 0; i < n; i++) {
		const struct piece *p = &now.p[i];

		ck_assert_msg(p->start == w[i].start && p->end == w[i].end &&
				      p->prot == w[i].prot &&
				      p->offset == w[i].offset,
			      "region %zu is [%#lx, %#lx) prot %u offset %#llx,"
			      " want [%#lx, %#lx) prot %u offset %#llx",
			      i, (unsigned long)p->start,
			      (unsigned long)p->end, p->prot,
			      (unsigned long long)p->offset,
			      (unsigned long)w[i].start,
			      (unsigned long)w[i].end, w[i].prot,
			      (unsigned long long)w[i].offset);
	}
	assert_mapped_never_closed(&now);
}

#define EXPECT_LAYOUT(...)                                                    \
	expect_layout((const struct want[]){ __VA_ARGS__ },                   \
		      sizeof((const struct want[]){ __VA_ARGS__ }) /          \
			      sizeof(struct want))

/* Counts of callbacks, to show an update made none. */
struct calls {
	unsigned int opens, closes;
};

static struct calls calls_now(void)
{
	flush_closes();
	return (struct calls){ opens_total(),
			       closes_total() };
}

static void calls_same(struct calls was)
{
	struct calls now = calls_now();

	ck_assert_uint_eq(now.opens, was.opens);
	ck_assert_uint_eq(now.closes, was.closes);
}

/* ---- vmr_space_create --------------------------------------------------- */

START_TEST(test_null_config_gives_every_default)
{
	struct vmr_space_config zero = { 0 };
	struct vmr_space *s = NULL;

	ck_assert_int_eq(vmr_space_create(NULL, 0, &s), 0);
	ck_assert_uint_eq(vmr_space_page_size(s),
			  (size_t)sysconf(_SC_PAGESIZE));
	ck_assert_ptr_eq(vmr_space_flavor(s), &urcu_memb_flavor);
	ck_assert_int_eq(s->granularity, VMR_LOCK_REGION);
	ck_assert(!s->membarrier);
	ck_assert_uint_eq(vmr_space_count_regions(s), 0);
	ck_assert_ptr_null(vmr_space_find_region(s, 0));
	ck_assert_ptr_null(vmr_space_find_region(s, UINTPTR_MAX));
	ck_assert_int_eq(vmr_space_destroy(s), 0);

	/* A zeroed config says the same. */
	s = NULL;
	ck_assert_int_eq(vmr_space_create(&zero, sizeof(zero), &s), 0);
	ck_assert_uint_eq(vmr_space_page_size(s),
			  (size_t)sysconf(_SC_PAGESIZE));
	ck_assert_int_eq(vmr_space_destroy(s), 0);
}
END_TEST

START_TEST(test_queries_of_a_null_space_answer_nothing)
{
	ck_assert_uint_eq(vmr_space_page_size(NULL), 0);
	ck_assert_ptr_null(vmr_space_flavor(NULL));
	ck_assert_uint_eq(vmr_space_count_regions(NULL), 0);
	ck_assert_ptr_null(vmr_space_find_region(NULL, 0));
	ck_assert_int_eq(vmr_space_register_thread(NULL), -EINVAL);
	ck_assert_int_eq(vmr_space_unregister_thread(NULL), -EINVAL);
}
END_TEST

START_TEST(test_config_out_of_range_is_refused_with_einval)
{
	static const struct {
		const char *what;
		struct vmr_space_config cfg;
	} cases[] = {
		{ "page size 3", { .page_size = 3 } },
		{ "page size 4097", { .page_size = 4097 } },
		{ "page size 3 pages", { .page_size = 3 * 4096 } },
		{ "granularity 2",
		  { .granularity = (enum vmr_lock_granularity)2 } },
		{ "granularity -1",
		  { .granularity = (enum vmr_lock_granularity)-1 } },
		{ "barrier 3", { .barrier = (enum vmr_reader_barrier)3 } },
		{ "barrier -1", { .barrier = (enum vmr_reader_barrier)-1 } },
	};
	struct vmr_space_config ok = { 0 };
	struct vmr_space *s = SENTINEL;

	ck_assert_int_eq(vmr_space_create(&ok, sizeof(ok), NULL), -EINVAL);
	for (size_t i = 0; i < VMR_ARRAY_SIZE(cases); i++) {
		int ret = vmr_space_create(&cases[i].cfg, sizeof(cases[i].cfg),
					   &s);

		ck_assert_msg(ret == -EINVAL, "%s: %d", cases[i].what, ret);
		ck_assert_ptr_eq(s, SENTINEL);
	}
}
END_TEST

START_TEST(test_null_config_with_a_size_is_refused_with_einval)
{
	struct vmr_space *s = SENTINEL;

	ck_assert_int_eq(vmr_space_create(NULL, sizeof(struct vmr_space_config),
					  &s),
			 -EINVAL);
	ck_assert_ptr_eq(s, SENTINEL);
}
END_TEST

START_TEST(test_config_size_follows_the_callers_definition)
{
	struct {
		struct vmr_space_config cfg;
		uint64_t future[2];
	} big;
	struct vmr_space_config older = {
		.page_size = 8192,
		.granularity = VMR_LOCK_RANGE,
	};
	struct vmr_space *s;

	/* A newer caller's larger config: fine while the tail is zero. */
	memset(&big, 0, sizeof(big));
	big.cfg.page_size = 16384;
	s = NULL;
	ck_assert_int_eq(vmr_space_create(&big.cfg, sizeof(big), &s), 0);
	ck_assert_uint_eq(vmr_space_page_size(s), 16384);
	ck_assert_int_eq(vmr_space_destroy(s), 0);
	big.future[1] = 1;
	s = SENTINEL;
	ck_assert_int_eq(vmr_space_create(&big.cfg, sizeof(big), &s), -E2BIG);
	ck_assert_ptr_eq(s, SENTINEL);

	/* An older caller's shorter config: what it lacks is default. */
	s = NULL;
	ck_assert_int_eq(vmr_space_create(&older,
					  offsetof(struct vmr_space_config,
						   granularity),
					  &s),
			 0);
	ck_assert_uint_eq(vmr_space_page_size(s), 8192);
	ck_assert_int_eq(s->granularity, VMR_LOCK_REGION);
	ck_assert_int_eq(vmr_space_destroy(s), 0);
}
END_TEST

START_TEST(test_membarrier_barrier_works_where_the_kernel_has_it)
{
	struct vmr_space_config cfg = {
		.page_size = PAGE,
		.granularity = VMR_LOCK_RANGE,
		.barrier = VMR_BARRIER_MEMBARRIER,
	};
	struct vmr_range_lock lock;
	int ret;

	space = NULL;
	ret = vmr_space_create(&cfg, sizeof(cfg), &space);
	if (ret == -ENOSYS) {
		fprintf(stderr, "membarrier(PRIVATE_EXPEDITED) unavailable: "
				"VMR_BARRIER_MEMBARRIER not checked\n");
		ck_assert_ptr_null(space);
		return;
	}
	ck_assert_int_eq(ret, 0);
	ck_assert(space->membarrier);
	/* Updates (whose write locks run membarrier) and a fault's lock. */
	map_at(P(0), P(4), RW, 0);
	ck_assert_int_eq(vmr_range_read_lock(space, P(0), 1, &lock), 0);
	ck_assert_int_eq(vmr_unmap(space, P(2), PAGE), 0);
	ck_assert_int_eq(vmr_protect(space, P(3), PAGE, R), 0);
	ck_assert_int_eq(vmr_range_read_unlock(&lock), 0);
	EXPECT_LAYOUT({ P(0), P(2), RW, OFF(0) }, { P(3), P(4), R, OFF(3) });
	ck_assert_int_eq(vmr_space_destroy(space), 0);
	space = NULL;
}
END_TEST

START_TEST(test_create_out_of_memory_leaves_nothing_allocated)
{
	struct vmr_space_config cfg = { .granularity = VMR_LOCK_RANGE };
	struct vmr_space *s;
	long budget;
	int ret;

	for (budget = 0;; budget++) {
		s = SENTINEL;
		vmr_alloc_fail_after(budget);
		ret = vmr_space_create(&cfg, sizeof(cfg), &s);
		vmr_alloc_fail_after(-1);
		if (ret != -ENOMEM)
			break;
		ck_assert_ptr_eq(s, SENTINEL);
		assert_no_leaks();
	}
	ck_assert_int_eq(ret, 0);
	/* The space and its tree each failed once. */
	ck_assert_int_ge(budget, 2);
	ck_assert_int_eq(vmr_space_destroy(s), 0);
	assert_no_leaks();
}
END_TEST

/* ---- vmr_map ------------------------------------------------------------ */

START_TEST(test_mapped_region_is_found_with_every_attribute)
{
	struct vmr_region_ops ops = life_ops;
	struct life *l = life_new(P(1), P(4));
	struct vmr_region_desc d = {
		.start = P(1),
		.len = 3 * PAGE,
		.prot = RX,
		.offset = OFF(7),
		.ops = &ops,
		.ops_size = sizeof(ops),
		.private_data = l,
	};
	struct vmr_region *r;

	ck_assert_int_eq(vmr_map(space, &d, sizeof(d), 0), 0);
	r = find(P(1));
	ck_region(r, P(1), P(4), RX, OFF(7));
	ck_assert_ptr_eq(vmr_region_private(r), l);
	ck_assert(!vmr_region_is_detached(r));
	ck_assert_uint_eq(vmr_space_count_regions(space), 1);
	/* Found from its first byte to its last, and nowhere else. */
	ck_assert_ptr_eq(find(P(4) - 1), r);
	ck_assert_ptr_null(find(P(1) - 1));
	ck_assert_ptr_null(find(P(4)));
	/* The ops were copied: the caller's struct is its own again. */
	ops.close = NULL;
	ck_assert_ptr_ne(vmr_region_ops(r), &ops);
	ck_assert(vmr_region_ops(r)->fault == fault_stub);
	ck_assert(vmr_region_ops(r)->open == life_open);
	ck_assert(vmr_region_ops(r)->close == life_close);
}
END_TEST

START_TEST(test_region_without_ops_has_no_callbacks)
{
	struct vmr_region_desc d = desc_of(P(0), P(4), RW, 0, &sentinel_mem);
	const struct vmr_region_ops *ops;

	d.ops = NULL;
	d.ops_size = 0;
	ck_assert_int_eq(vmr_map(space, &d, sizeof(d), 0), 0);
	ops = vmr_region_ops(region_at(P(0)));
	ck_assert(!ops->fault && !ops->open && !ops->close);
	/* Its pieces keep its private data: there is no open() to change it. */
	ck_assert_int_eq(vmr_unmap(space, P(1), PAGE), 0);
	ck_assert_ptr_eq(vmr_region_private(region_at(P(0))), &sentinel_mem);
	ck_assert_ptr_eq(vmr_region_private(region_at(P(2))), &sentinel_mem);
	ck_assert_uint_eq(vmr_space_count_regions(space), 2);
}
END_TEST

START_TEST(test_adjacent_maps_touch_without_overlapping)
{
	map_at(P(2), P(4), RW, OFF(0));
	map_at(P(0), P(2), NONE, OFF(9));
	map_at(P(4), P(5), R, OFF(3));
	EXPECT_LAYOUT({ P(0), P(2), NONE, OFF(9) },
		      { P(2), P(4), RW, OFF(0) },
		      { P(4), P(5), R, OFF(3) });
}
END_TEST

START_TEST(test_overlapping_map_is_refused_and_changes_nothing)
{
	static const uintptr_t cases[][2] = {
		{ P(2), P(4) }, /* the same range */
		{ P(2), P(3) }, /* inside */
		{ P(1), P(3) }, /* over the start */
		{ P(3), P(5) }, /* over the end */
		{ P(1), P(5) }, /* around */
		{ P(0), P(9) }, /* around both */
		{ P(5), P(7) }, /* from a hole into the next */
	};
	struct layout before;
	struct calls calls;

	map_at(P(2), P(4), RW, 0);
	map_at(P(6), P(8), R, 0);
	layout_take(&before);
	calls = calls_now();
	for (size_t i = 0; i < VMR_ARRAY_SIZE(cases); i++) {
		int ret = map_ret(cases[i][0], cases[i][1], RW, 0, 0);

		ck_assert_msg(ret == -EEXIST, "case %zu: %d", i, ret);
	}
	layout_same(&before);
	calls_same(calls);
}
END_TEST

START_TEST(test_replacing_map_cuts_the_regions_at_both_ends)
{
	struct life *a = map_at(P(0), P(4), RW, OFF(0));
	struct life *b = map_at(P(4), P(8), R, OFF(100));

	ck_assert_int_eq(map_ret(P(2), P(6), RX, OFF(50), VMR_MAP_REPLACE), 0);
	EXPECT_LAYOUT({ P(0), P(2), RW, OFF(0) },
		      { P(2), P(6), RX, OFF(50) },
		      { P(6), P(8), R, OFF(102) });
	ck_assert_ptr_eq(life_at(P(0))->from, a);
	ck_assert_ptr_eq(life_at(P(6))->from, b);
	ck_assert_ptr_null(life_at(P(2))->from); /* the new one */
	ck_assert_int_eq(closes_of(a), 1);
	ck_assert_int_eq(closes_of(b), 1);
}
END_TEST

START_TEST(test_replacing_map_unmaps_the_regions_inside)
{
	struct life *in[3];
	struct calls calls;

	in[0] = map_at(P(1), P(2), R, 0);
	in[1] = map_at(P(3), P(4), RW, 0);
	in[2] = map_at(P(5), P(7), RX, 0);
	map_at(P(9), P(10), R, OFF(9));
	calls = calls_now();
	ck_assert_int_eq(map_ret(P(0), P(8), RW, OFF(40), VMR_MAP_REPLACE), 0);
	EXPECT_LAYOUT({ P(0), P(8), RW, OFF(40) },
		      { P(9), P(10), R, OFF(9) });
	for (int i = 0; i < 3; i++)
		ck_assert_int_eq(closes_of(in[i]), 1);
	calls.closes += 3; /* and nothing was cut */
	calls_same(calls);
}
END_TEST

START_TEST(test_replacing_map_into_a_hole_just_maps)
{
	struct calls calls;

	map_at(P(0), P(1), R, 0);
	calls = calls_now();
	ck_assert_int_eq(map_ret(P(2), P(3), RW, OFF(5), VMR_MAP_REPLACE), 0);
	EXPECT_LAYOUT({ P(0), P(1), R, 0 }, { P(2), P(3), RW, OFF(5) });
	calls_same(calls);
}
END_TEST

START_TEST(test_bad_map_is_refused_with_einval_and_changes_nothing)
{
	const struct vmr_region_desc ok = {
		.start = P(4), .len = PAGE, .prot = R,
	};
	const uintptr_t top = UINTPTR_MAX & ~(PAGE - 1);
	struct {
		const char *what;
		struct vmr_region_desc d;
		size_t size;
		unsigned int flags;
	} cases[] = {
		{ "size 0", ok, 0, 0 },
		{ "size one short of version 0.1's", ok,
		  offsetof(struct vmr_region_desc, private_data) +
			  sizeof(void *) - 1, 0 },
		{ "size without private_data", ok,
		  offsetof(struct vmr_region_desc, private_data), 0 },
		{ "empty", ok, sizeof(ok), 0 },
		{ "unaligned start", ok, sizeof(ok), 0 },
		{ "unaligned length", ok, sizeof(ok), 0 },
		{ "half a page", ok, sizeof(ok), 0 },
		{ "wraps", ok, sizeof(ok), 0 },
		{ "ends at the top of the address space", ok, sizeof(ok), 0 },
		{ "unaligned offset", ok, sizeof(ok), 0 },
		{ "half-page offset", ok, sizeof(ok), 0 },
		{ "prot 0x8", ok, sizeof(ok), 0 },
		{ "prot high bit", ok, sizeof(ok), 0 },
		{ "flags 0x2", ok, sizeof(ok), 0x2 },
		{ "flags high bit", ok, sizeof(ok), 0x80000000u },
		{ "replace and 0x2", ok, sizeof(ok), VMR_MAP_REPLACE | 0x2 },
		{ "ops NULL with a size", ok, sizeof(ok), 0 },
	};
	struct layout before;
	int i = 3;

	cases[i++].d.len = 0;
	cases[i++].d.start += 1;
	cases[i++].d.len += 1;
	cases[i++].d.len = PAGE / 2;
	cases[i].d.start = top;
	cases[i++].d.len = 2 * PAGE;
	cases[i].d.start = top;
	cases[i++].d.len = PAGE; /* start + len is 0 */
	cases[i++].d.offset = 1;
	cases[i++].d.offset = PAGE / 2;
	cases[i++].d.prot = 0x8;
	cases[i++].d.prot = 0x80000000u;
	i += 3; /* the flags */
	cases[i++].d.ops_size = sizeof(struct vmr_region_ops);
	ck_assert_int_eq(i, (int)VMR_ARRAY_SIZE(cases));

	map_at(P(0), P(8), RW, 0); /* also overlaps: EINVAL comes first */
	layout_take(&before);
	ck_assert_int_eq(vmr_map(NULL, &ok, sizeof(ok), 0), -EINVAL);
	ck_assert_int_eq(vmr_map(space, NULL, sizeof(ok), 0), -EINVAL);
	for (size_t k = 0; k < VMR_ARRAY_SIZE(cases); k++) {
		int ret = vmr_map(space, &cases[k].d, cases[k].size,
				  cases[k].flags);

		ck_assert_msg(ret == -EINVAL, "%s: %d", cases[k].what, ret);
	}
	layout_same(&before);
}
END_TEST

START_TEST(test_larger_desc_or_ops_is_refused_only_if_its_tail_is_set)
{
	struct {
		struct vmr_region_desc d;
		uint64_t future[2];
	} big;
	struct {
		struct vmr_region_ops ops;
		void (*future)(void);
	} big_ops;
	struct layout before;

	memset(&big, 0, sizeof(big));
	big.d = desc_of(P(0), P(1), R, 0, life_new(P(0), P(1)));
	big.future[1] = 1;
	ck_assert_int_eq(vmr_map(space, &big.d, sizeof(big), 0), -E2BIG);
	ck_assert_uint_eq(vmr_space_count_regions(space), 0);
	big.future[1] = 0;
	ck_assert_int_eq(vmr_map(space, &big.d, sizeof(big), 0), 0);
	ck_region(region_at(P(0)), P(0), P(1), R, 0);

	/* The ops are size-tagged the same way. */
	memset(&big_ops, 0, sizeof(big_ops));
	big_ops.ops = life_ops;
	big_ops.future = (void (*)(void))fault_stub;
	big.d.start = P(1);
	big.d.private_data = life_new(P(1), P(2));
	big.d.ops = &big_ops.ops;
	big.d.ops_size = sizeof(big_ops);
	layout_take(&before);
	ck_assert_int_eq(vmr_map(space, &big.d, sizeof(big), 0), -E2BIG);
	layout_same(&before);
	big_ops.future = NULL;
	ck_assert_int_eq(vmr_map(space, &big.d, sizeof(big), 0), 0);
	ck_assert(vmr_region_ops(region_at(P(1)))->fault == fault_stub);
}
END_TEST

/* ---- updates by the space lock's write holder --------------------------- */

START_TEST(test_updates_by_the_write_holder_are_refused_with_edeadlk)
{
	struct layout before;
	struct calls calls;

	map_at(P(0), P(4), RW, 0);
	layout_take(&before);
	calls = calls_now();
	ck_assert_int_eq(vmr_space_write_lock(space), 0);
	ck_assert_int_eq(map_ret(P(8), P(9), R, 0, 0), -EDEADLK);
	ck_assert_int_eq(map_ret(P(1), P(2), R, 0, VMR_MAP_REPLACE), -EDEADLK);
	ck_assert_int_eq(vmr_unmap(space, P(1), PAGE), -EDEADLK);
	ck_assert_int_eq(vmr_protect(space, P(1), PAGE, R), -EDEADLK);
	/* Still the caller's, and still whole. */
	ck_assert(vmr_space_is_write_locked(space));
	ck_assert_int_eq(vmr_space_write_unlock(space), 0);
	layout_same(&before);
	calls_same(calls);
}
END_TEST

/* ---- vmr_unmap ---------------------------------------------------------- */

START_TEST(test_unmap_of_the_middle_leaves_two_pieces_with_their_offsets)
{
	struct life *l = map_at(P(0), P(8), RW, OFF(10));

	ck_assert_int_eq(vmr_unmap(space, P(3), 2 * PAGE), 0);
	/* The right piece's offset: OFF(10) + (P(5) - P(0)). */
	EXPECT_LAYOUT({ P(0), P(3), RW, OFF(10) }, { P(5), P(8), RW, OFF(15) });
	ck_assert_ptr_null(find(P(3)));
	ck_assert_ptr_null(find(P(5) - 1));
	ck_assert_int_eq(closes_of(l), 1);
}
END_TEST

START_TEST(test_unmap_of_the_head_leaves_the_tail)
{
	map_at(P(0), P(8), RW, OFF(10));
	ck_assert_int_eq(vmr_unmap(space, P(0), 2 * PAGE), 0);
	EXPECT_LAYOUT({ P(2), P(8), RW, OFF(12) });
}
END_TEST

START_TEST(test_unmap_of_the_tail_leaves_the_head)
{
	map_at(P(0), P(8), RW, OFF(10));
	ck_assert_int_eq(vmr_unmap(space, P(6), 2 * PAGE), 0);
	EXPECT_LAYOUT({ P(0), P(6), RW, OFF(10) });
}
END_TEST

START_TEST(test_unmap_across_regions_and_holes_removes_what_it_covers)
{
	map_at(P(0), P(2), R, OFF(0));
	map_at(P(3), P(5), RW, OFF(30));
	map_at(P(6), P(7), RX, OFF(60));
	map_at(P(8), P(10), RW, OFF(80));
	map_at(P(11), P(12), R, OFF(110));
	ck_assert_int_eq(vmr_unmap(space, P(1), 8 * PAGE), 0);
	EXPECT_LAYOUT({ P(0), P(1), R, OFF(0) },
		      { P(9), P(10), RW, OFF(81) },
		      { P(11), P(12), R, OFF(110) });
	/* And all of it, from address 0 to far above. */
	ck_assert_int_eq(vmr_unmap(space, 0, P(1000)), 0);
	expect_layout(NULL, 0);
}
END_TEST

START_TEST(test_unmap_of_a_hole_succeeds_and_changes_nothing)
{
	struct layout before;
	struct calls calls;

	map_at(P(0), P(2), R, 0);
	map_at(P(4), P(6), RW, 0);
	layout_take(&before);
	calls = calls_now();
	ck_assert_int_eq(vmr_unmap(space, P(2), 2 * PAGE), 0);
	ck_assert_int_eq(vmr_unmap(space, P(100), PAGE), 0);
	ck_assert_int_eq(vmr_unmap(space, 0, P(0)), 0);
	layout_same(&before);
	calls_same(calls);
}
END_TEST

START_TEST(test_bad_unmap_is_refused_with_einval_and_changes_nothing)
{
	const uintptr_t top = UINTPTR_MAX & ~(PAGE - 1);
	struct layout before;

	map_at(P(0), P(4), RW, 0);
	layout_take(&before);
	ck_assert_int_eq(vmr_unmap(NULL, P(0), PAGE), -EINVAL);
	ck_assert_int_eq(vmr_unmap(space, P(0), 0), -EINVAL);
	ck_assert_int_eq(vmr_unmap(space, P(0) + 1, PAGE), -EINVAL);
	ck_assert_int_eq(vmr_unmap(space, P(0), PAGE + 1), -EINVAL);
	ck_assert_int_eq(vmr_unmap(space, P(0), PAGE / 2), -EINVAL);
	ck_assert_int_eq(vmr_unmap(space, top, 2 * PAGE), -EINVAL);
	ck_assert_int_eq(vmr_unmap(space, P(0), SIZE_MAX & ~(PAGE - 1)),
			 -EINVAL);
	layout_same(&before);
}
END_TEST

/* ---- vmr_protect -------------------------------------------------------- */

START_TEST(test_protect_of_the_middle_splits_into_three)
{
	struct life *l = map_at(P(0), P(6), RW, OFF(4));

	ck_assert_int_eq(vmr_protect(space, P(2), 2 * PAGE, R), 0);
	EXPECT_LAYOUT({ P(0), P(2), RW, OFF(4) },
		      { P(2), P(4), R, OFF(6) },
		      { P(4), P(6), RW, OFF(8) });
	for (uintptr_t a = P(0); a < P(6); a += 2 * PAGE)
		ck_assert_ptr_eq(life_at(a)->from, l);
	ck_assert_int_eq(closes_of(l), 1);
}
END_TEST

START_TEST(test_protect_across_regions_changes_only_the_range)
{
	map_at(P(0), P(2), RW, OFF(0));
	map_at(P(2), P(4), RX, OFF(20));
	map_at(P(4), P(6), NONE, OFF(40));
	ck_assert_int_eq(vmr_protect(space, P(1), 4 * PAGE, R), 0);
	EXPECT_LAYOUT({ P(0), P(1), RW, OFF(0) },
		      { P(1), P(2), R, OFF(1) },
		      { P(2), P(4), R, OFF(20) },
		      { P(4), P(5), R, OFF(40) },
		      { P(5), P(6), NONE, OFF(41) });
}
END_TEST

START_TEST(test_protect_over_a_hole_is_refused_with_enomem)
{
	static const uintptr_t cases[][2] = {
		{ P(0), P(3) }, /* hole at the start */
		{ P(1), P(6) }, /* hole in the middle */
		{ P(4), P(7) }, /* hole at the end */
		{ P(8), P(9) }, /* nothing there at all */
		{ P(0), P(9) }, /* everything and the holes */
	};
	struct layout before;
	struct calls calls;

	map_at(P(1), P(3), RW, 0);
	map_at(P(3), P(4), RX, 0); /* adjacent: no hole between */
	map_at(P(5), P(6), RW, 0);
	layout_take(&before);
	calls = calls_now();
	for (size_t i = 0; i < VMR_ARRAY_SIZE(cases); i++) {
		int ret = vmr_protect(space, cases[i][0],
				      cases[i][1] - cases[i][0], R);

		ck_assert_msg(ret == -ENOMEM, "case %zu: %d", i, ret);
	}
	layout_same(&before);
	calls_same(calls);
	/* Without the hole it works. */
	ck_assert_int_eq(vmr_protect(space, P(1), 3 * PAGE, R), 0);
}
END_TEST

START_TEST(test_region_that_already_has_the_protection_is_kept)
{
	struct vmr_region *kept;
	struct layout before;
	struct calls calls;
	struct life *changed;

	map_at(P(0), P(4), R, 0);
	changed = map_at(P(4), P(8), RW, OFF(4));
	kept = region_at(P(0));
	layout_take(&before);
	calls = calls_now();
	/* Inside it: nothing to do, not even a split. */
	ck_assert_int_eq(vmr_protect(space, P(1), PAGE, R), 0);
	layout_same(&before);
	calls_same(calls);
	/* Across it and the next: only the next is split. */
	ck_assert_int_eq(vmr_protect(space, P(2), 4 * PAGE, R), 0);
	EXPECT_LAYOUT({ P(0), P(4), R, 0 },
		      { P(4), P(6), R, OFF(4) },
		      { P(6), P(8), RW, OFF(6) });
	ck_assert_ptr_eq(region_at(P(0)), kept);
	ck_assert(!vmr_region_is_detached(kept));
	calls.opens += 2;
	calls.closes += 1;
	calls_same(calls);
	ck_assert_int_eq(closes_of(changed), 1);
}
END_TEST

START_TEST(test_bad_protect_is_refused_with_einval_and_changes_nothing)
{
	const uintptr_t top = UINTPTR_MAX & ~(PAGE - 1);
	struct layout before;

	map_at(P(0), P(4), RW, 0);
	layout_take(&before);
	ck_assert_int_eq(vmr_protect(NULL, P(0), PAGE, R), -EINVAL);
	ck_assert_int_eq(vmr_protect(space, P(0), 0, R), -EINVAL);
	ck_assert_int_eq(vmr_protect(space, P(0) + 1, PAGE, R), -EINVAL);
	ck_assert_int_eq(vmr_protect(space, P(0), PAGE - 1, R), -EINVAL);
	ck_assert_int_eq(vmr_protect(space, top, 2 * PAGE, R), -EINVAL);
	ck_assert_int_eq(vmr_protect(space, P(0), PAGE, 0x8), -EINVAL);
	ck_assert_int_eq(vmr_protect(space, P(0), PAGE, 0x80000000u), -EINVAL);
	layout_same(&before);
}
END_TEST

/* ---- the owner's callbacks ---------------------------------------------- */

START_TEST(test_each_piece_is_opened_once_starting_with_its_regions_data)
{
	struct life *whole = map_at(P(0), P(9), RW, OFF(0));
	unsigned int first = lives_made();

	ck_assert_int_eq(vmr_unmap(space, P(3), 3 * PAGE), 0);
	ck_assert_uint_eq(opens_total(), 2);
	ck_assert_uint_eq(lives_made() - first, 2);
	for (unsigned int i = first; i < lives_made(); i++) {
		const struct life *l = &lives[i];

		ck_assert_ptr_eq(l->from, whole);
		ck_assert_ptr_eq(l->private_at_open, whole);
		ck_assert(l->locked_at_open);
		ck_assert(!l->published_at_open);
	}
	/* Each piece kept the private data its open() gave it. */
	ck_assert_ptr_eq(life_at(P(0)), &lives[first]);
	ck_assert_ptr_eq(life_at(P(6)), &lives[first + 1]);
	ck_assert_uint_eq(lives[first].start, P(0));
	ck_assert_uint_eq(lives[first].end, P(3));
	ck_assert_uint_eq(lives[first + 1].start, P(6));
	ck_assert_uint_eq(lives[first + 1].end, P(9));
}
END_TEST

START_TEST(test_close_runs_once_for_each_region_gone_and_never_for_one_mapped)
{
	struct life *a = map_at(P(0), P(4), RW, 0);
	struct life *b = map_at(P(4), P(8), RW, 0);
	struct life *c = map_at(P(10), P(12), RW, 0);

	ck_assert_int_eq(vmr_protect(space, P(1), PAGE, R), 0);      /* a */
	ck_assert_int_eq(map_ret(P(4), P(8), R, 0, VMR_MAP_REPLACE), 0); /* b */
	ck_assert_int_eq(vmr_unmap(space, P(10), 2 * PAGE), 0);      /* c */
	/* expect_layout() also checks no mapped region was closed. */
	EXPECT_LAYOUT({ P(0), P(1), RW, 0 },
		      { P(1), P(2), R, OFF(1) },
		      { P(2), P(4), RW, OFF(2) },
		      { P(4), P(8), R, 0 });
	ck_assert_int_eq(closes_of(a), 1);
	ck_assert_int_eq(closes_of(b), 1);
	ck_assert_int_eq(closes_of(c), 1);
	ck_assert_uint_eq(closes_total(), 3);
	/* Once, not once per grace period. */
	flush_closes();
	ck_assert_uint_eq(closes_total(), 3);
	ck_assert_uint_eq(closes_under_lock(), 0);
}
END_TEST

START_TEST(test_destroy_closes_every_region_once)
{
	map_at(P(0), P(4), RW, 0);
	map_at(P(6), P(8), RX, 0);
	ck_assert_int_eq(vmr_unmap(space, P(1), PAGE), 0);
	ck_assert_int_eq(vmr_protect(space, P(6), PAGE, R), 0);
	/* Some retired regions may not be closed yet: destroy waits. */
	ck_assert_int_eq(vmr_space_destroy(space), 0);
	space = NULL;
	ck_assert_uint_eq(lives_made(), 2 + 2 + 2);
	for (unsigned int i = 0; i < lives_made(); i++)
		ck_assert_msg(closes_of(&lives[i]) == 1,
			      "life %u closed %d times", i,
			      closes_of(&lives[i]));
	flush_closes();
	ck_assert_uint_eq(closes_total(), lives_made());
}
END_TEST

static atomic_int hidden_close_calls;

static void hidden_close(struct vmr_region *r)
{
	(void)r;
	atomic_fetch_add(&hidden_close_calls, 1);
}

static int hidden_closes(void)
{
	return atomic_load(&hidden_close_calls);
}

START_TEST(test_ops_shorter_than_ours_have_no_close)
{
	/* An older caller's ops end before .close: it must read as NULL. */
	const struct vmr_region_ops ops = {
		.fault = fault_stub,
		.open = life_open,
		.close = hidden_close,
	};
	struct vmr_region_desc d = desc_of(P(0), P(6), RW, 0, NULL);
	const struct vmr_region_ops *got;

	d.ops = &ops;
	d.ops_size = offsetof(struct vmr_region_ops, close);
	d.private_data = life_new(P(0), P(6));
	ck_assert_int_eq(vmr_map(space, &d, sizeof(d), 0), 0);
	got = vmr_region_ops(region_at(P(0)));
	ck_assert(got->fault == fault_stub);
	ck_assert(got->open == life_open);
	ck_assert(!got->close);
	/* Cuts still call open(); nothing ever calls the hidden close. */
	ck_assert_int_eq(vmr_unmap(space, P(2), PAGE), 0);
	ck_assert_uint_eq(opens_total(), 2);
	ck_assert(!vmr_region_ops(region_at(P(0)))->close);
	ck_assert_int_eq(vmr_space_destroy(space), 0);
	space = NULL;
	ck_assert_int_eq(hidden_closes(), 0);
	ck_assert_uint_eq(closes_total(), 0);
}
END_TEST

/* ---- close waits for the faults holding a region ------------------------ */

/* A fault that read-locks one page and holds it until told to let go. */
struct fault_holder {
	pthread_t thread;
	uintptr_t addr;
	struct vmr_range_lock lock;
	atomic_int lock_ret, unlock_ret;
	atomic_bool holding, release;
};

static void *fault_holder_main(void *arg)
{
	struct fault_holder *f = arg;
	int ret;

	vmr_space_register_thread(space);
	ret = vmr_range_read_lock(space, f->addr, 1, &f->lock);
	atomic_store(&f->lock_ret, ret);
	atomic_store(&f->holding, true);
	while (!atomic_load(&f->release))
		usleep(1000);
	if (ret == 0)
		atomic_store(&f->unlock_ret, vmr_range_read_unlock(&f->lock));
	vmr_space_unregister_thread(space);
	return NULL;
}

static bool holding(struct fault_holder *f)
{
	return atomic_load(&f->holding);
}

START_TEST(test_replaced_region_is_not_closed_while_a_fault_holds_it)
{
	struct fault_holder f = { .addr = P(0) };
	struct vmr_region *held;
	int lock_ret, unlock_ret;
	struct life *l;
	double deadline;

	l = map_at(P(0), P(4), RW, 0);
	held = region_at(P(0));
	ck_assert_int_eq(pthread_create(&f.thread, NULL, fault_holder_main, &f),
			 0);
	deadline = vmr_test_now() + 10;
	while (!holding(&f) && vmr_test_now() < deadline)
		usleep(1000);
	lock_ret = atomic_load(&f.lock_ret);
	ck_assert(holding(&f));
	ck_assert_int_eq(lock_ret, 0);
	ck_assert_ptr_eq(f.lock.region, held);

	/* Another page of the region: no wait, the region is replaced. */
	ck_assert_int_eq(vmr_unmap(space, P(2), PAGE), 0);
	ck_assert(vmr_region_is_detached(held));
	ck_assert_ptr_ne(region_at(P(0)), held);
	EXPECT_LAYOUT({ P(0), P(2), RW, 0 }, { P(3), P(4), RW, OFF(3) });
	flush_closes();
	flush_closes();
	ck_assert_int_eq(closes_of(l), 0);

	atomic_store(&f.release, true);
	pthread_join(f.thread, NULL);
	unlock_ret = atomic_load(&f.unlock_ret);
	ck_assert_int_eq(unlock_ret, 0);
	flush_closes();
	ck_assert_int_eq(closes_of(l), 1);
	flush_closes();
	ck_assert_int_eq(closes_of(l), 1);
}
END_TEST

/* ---- vmr_space_destroy -------------------------------------------------- */

START_TEST(test_destroy_is_refused_while_a_range_read_lock_is_held)
{
	struct vmr_range_lock lock;
	struct layout before;
	struct calls calls;

	map_at(P(0), P(4), RW, 0);
	map_at(P(4), P(5), R, 0);
	layout_take(&before);
	calls = calls_now();
	ck_assert_int_eq(vmr_range_read_lock(space, P(1), 1, &lock), 0);
	ck_assert_int_eq(vmr_space_destroy(space), -EBUSY);
	layout_same(&before);
	calls_same(calls);
	ck_assert_int_eq(vmr_range_read_unlock(&lock), 0);
	ck_assert_int_eq(vmr_space_destroy(space), 0);
	space = NULL;
	ck_assert_uint_eq(closes_total(), 2);
}
END_TEST

START_TEST(test_destroy_is_refused_while_the_space_lock_is_held)
{
	struct layout before;
	struct calls calls;

	map_at(P(0), P(4), RW, 0);
	layout_take(&before);
	calls = calls_now();
	ck_assert_int_eq(vmr_space_read_lock(space), 0);
	ck_assert_int_eq(vmr_space_destroy(space), -EBUSY);
	ck_assert_int_eq(vmr_space_read_unlock(space), 0);
	ck_assert_int_eq(vmr_space_write_lock(space), 0);
	ck_assert_int_eq(vmr_space_destroy(space), -EBUSY);
	ck_assert_int_eq(vmr_space_write_unlock(space), 0);
	layout_same(&before);
	calls_same(calls);
	ck_assert_int_eq(vmr_space_destroy(space), 0);
	space = NULL;
	ck_assert_uint_eq(closes_total(), 1);
}
END_TEST

START_TEST(test_destroy_of_null_succeeds)
{
	ck_assert_int_eq(vmr_space_destroy(NULL), 0);
}
END_TEST

/* ---- allocation failure ------------------------------------------------- */

/*
 * Run @update with 0, 1, 2, ... allocations allowed until it succeeds.
 * Every failing run returns -ENOMEM and leaves the layout as it was (same
 * region objects, none of them closed), and every piece it opened was
 * closed again.  At least @min_failures runs must fail: one for each
 * object the update is known to allocate (the new region, each piece).
 */
static void sweep_enomem(int (*update)(void), long min_failures)
{
	long budget;
	int ret;

	for (budget = 0;; budget++) {
		unsigned int first = lives_made();
		struct layout before;

		layout_take(&before);
		vmr_alloc_fail_after(budget);
		ret = update();
		vmr_alloc_fail_after(-1);
		if (ret != -ENOMEM)
			break;
		layout_same(&before);
		for (unsigned int i = first; i < lives_made(); i++)
			ck_assert_msg(closes_of(&lives[i]) ==
					      (lives[i].from ? 1 : 0),
				      "budget %ld: life %u closed %d times",
				      budget, i,
				      closes_of(&lives[i]));
	}
	ck_assert_int_eq(ret, 0);
	ck_assert_int_ge(budget, min_failures);
	assert_no_leaks();
}

static int map_into_a_hole(void)
{
	return map_ret(P(3), P(5), RX, OFF(3), 0);
}

START_TEST(test_map_out_of_memory_changes_nothing)
{
	map_at(P(0), P(3), RW, 0);
	map_at(P(5), P(8), RW, OFF(5));
	sweep_enomem(map_into_a_hole, 1);
	EXPECT_LAYOUT({ P(0), P(3), RW, 0 },
		      { P(3), P(5), RX, OFF(3) },
		      { P(5), P(8), RW, OFF(5) });
}
END_TEST

static int replace_across_three(void)
{
	return map_ret(P(1), P(7), RX, OFF(50), VMR_MAP_REPLACE);
}

START_TEST(test_replacing_map_out_of_memory_changes_nothing)
{
	map_at(P(0), P(2), RW, 0);
	map_at(P(3), P(4), R, 0);
	map_at(P(5), P(8), RW, OFF(5));
	sweep_enomem(replace_across_three, 3);
	EXPECT_LAYOUT({ P(0), P(1), RW, 0 },
		      { P(1), P(7), RX, OFF(50) },
		      { P(7), P(8), RW, OFF(7) });
}
END_TEST

static int unmap_the_middle(void)
{
	return vmr_unmap(space, P(3), 2 * PAGE);
}

START_TEST(test_unmap_out_of_memory_changes_nothing)
{
	map_at(P(0), P(8), RW, OFF(10));
	sweep_enomem(unmap_the_middle, 2);
	EXPECT_LAYOUT({ P(0), P(3), RW, OFF(10) }, { P(5), P(8), RW, OFF(15) });
}
END_TEST

static int protect_across_three(void)
{
	return vmr_protect(space, P(1), 6 * PAGE, R);
}

START_TEST(test_protect_out_of_memory_changes_nothing)
{
	map_at(P(0), P(3), RW, 0);
	map_at(P(3), P(5), RX, OFF(30));
	map_at(P(5), P(8), RW, OFF(50));
	sweep_enomem(protect_across_three, 5);
	EXPECT_LAYOUT({ P(0), P(1), RW, 0 },
		      { P(1), P(3), R, OFF(1) },
		      { P(3), P(5), R, OFF(30) },
		      { P(5), P(7), R, OFF(50) },
		      { P(7), P(8), RW, OFF(52) });
}
END_TEST

START_TEST(test_close_of_a_discarded_piece_runs_without_the_space_lock)
{
	long budget;

	/*
	 * close() runs "with no lock of the space held" (space.h).  Fail an
	 * unmap after it has cut its pieces, so that they are discarded.
	 */
	map_at(P(0), P(8), RW, OFF(10));
	for (budget = 0; closes_total() == 0; budget++) {
		vmr_alloc_fail_after(budget);
		ck_assert_int_eq(unmap_the_middle(), -ENOMEM);
		vmr_alloc_fail_after(-1);
		flush_closes();
	}
	ck_assert_uint_eq(closes_under_lock(), 0);
}
END_TEST

static Suite *space_suite(void)
{
	Suite *s = suite_create("space");
	TCase *tc;

	tc = tcase_create("create");
	tcase_add_checked_fixture(tc, setup_thread, teardown_thread);
	tcase_add_test(tc, test_null_config_gives_every_default);
	tcase_add_test(tc, test_queries_of_a_null_space_answer_nothing);
	tcase_add_test(tc, test_config_out_of_range_is_refused_with_einval);
	tcase_add_test(tc, test_null_config_with_a_size_is_refused_with_einval);
	tcase_add_test(tc, test_config_size_follows_the_callers_definition);
	tcase_add_test(tc, test_membarrier_barrier_works_where_the_kernel_has_it);
	tcase_add_test(tc, test_create_out_of_memory_leaves_nothing_allocated);
	suite_add_tcase(s, tc);

	tc = tcase_create("map");
	tcase_add_checked_fixture(tc, setup_region_space, teardown_space);
	tcase_add_test(tc, test_mapped_region_is_found_with_every_attribute);
	tcase_add_test(tc, test_region_without_ops_has_no_callbacks);
	tcase_add_test(tc, test_adjacent_maps_touch_without_overlapping);
	tcase_add_test(tc, test_overlapping_map_is_refused_and_changes_nothing);
	tcase_add_test(tc, test_replacing_map_cuts_the_regions_at_both_ends);
	tcase_add_test(tc, test_replacing_map_unmaps_the_regions_inside);
	tcase_add_test(tc, test_replacing_map_into_a_hole_just_maps);
	tcase_add_test(tc,
		       test_bad_map_is_refused_with_einval_and_changes_nothing);
	tcase_add_test(tc,
		       test_larger_desc_or_ops_is_refused_only_if_its_tail_is_set);
	suite_add_tcase(s, tc);

	tc = tcase_create("updates under the space lock");
	tcase_add_checked_fixture(tc, setup_region_space, teardown_space);
	tcase_add_test(tc,
		       test_updates_by_the_write_holder_are_refused_with_edeadlk);
	suite_add_tcase(s, tc);

	tc = tcase_create("unmap");
	tcase_add_checked_fixture(tc, setup_region_space, teardown_space);
	tcase_add_test(tc,
		       test_unmap_of_the_middle_leaves_two_pieces_with_their_offsets);
	tcase_add_test(tc, test_unmap_of_the_head_leaves_the_tail);
	tcase_add_test(tc, test_unmap_of_the_tail_leaves_the_head);
	tcase_add_test(tc,
		       test_unmap_across_regions_and_holes_removes_what_it_covers);
	tcase_add_test(tc, test_unmap_of_a_hole_succeeds_and_changes_nothing);
	tcase_add_test(tc,
		       test_bad_unmap_is_refused_with_einval_and_changes_nothing);
	suite_add_tcase(s, tc);

	tc = tcase_create("protect");
	tcase_add_checked_fixture(tc, setup_region_space, teardown_space);
	tcase_add_test(tc, test_protect_of_the_middle_splits_into_three);
	tcase_add_test(tc, test_protect_across_regions_changes_only_the_range);
	tcase_add_test(tc, test_protect_over_a_hole_is_refused_with_enomem);
	tcase_add_test(tc, test_region_that_already_has_the_protection_is_kept);
	tcase_add_test(tc,
		       test_bad_protect_is_refused_with_einval_and_changes_nothing);
	suite_add_tcase(s, tc);

	tc = tcase_create("open and close");
	tcase_add_checked_fixture(tc, setup_region_space, teardown_space);
	tcase_add_test(tc,
		       test_each_piece_is_opened_once_starting_with_its_regions_data);
	tcase_add_test(tc,
		       test_close_runs_once_for_each_region_gone_and_never_for_one_mapped);
	tcase_add_test(tc, test_destroy_closes_every_region_once);
	tcase_add_test(tc, test_ops_shorter_than_ours_have_no_close);
	suite_add_tcase(s, tc);

	tc = tcase_create("close waits for faults");
	tcase_add_checked_fixture(tc, setup_range_space, teardown_space);
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc,
		       test_replaced_region_is_not_closed_while_a_fault_holds_it);
	suite_add_tcase(s, tc);

	tc = tcase_create("destroy");
	tcase_add_checked_fixture(tc, setup_region_space, teardown_space);
	tcase_add_test(tc,
		       test_destroy_is_refused_while_a_range_read_lock_is_held);
	tcase_add_test(tc, test_destroy_is_refused_while_the_space_lock_is_held);
	tcase_add_test(tc, test_destroy_of_null_succeeds);
	suite_add_tcase(s, tc);

	tc = tcase_create("allocation failure");
	tcase_add_checked_fixture(tc, setup_region_space, teardown_space);
	tcase_add_test(tc, test_map_out_of_memory_changes_nothing);
	tcase_add_test(tc, test_replacing_map_out_of_memory_changes_nothing);
	tcase_add_test(tc, test_unmap_out_of_memory_changes_nothing);
	tcase_add_test(tc, test_protect_out_of_memory_changes_nothing);
	tcase_add_test(tc,
		       test_close_of_a_discarded_piece_runs_without_the_space_lock);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	return vmr_test_run(space_suite());
}
