/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The region tree: every call's success and errors, boundaries, order,
 * large trees against a reference model, allocation failure at every
 * point, and readers racing a writer that re-partitions a covered span.
 */
#include "internal.h"
#include "vmr_test.h"

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <urcu/urcu-memb.h>

#include "tsan.h" /* after the flavor header */

static struct vmr_tree *tree;

/* Distinct non-NULL values that say which entry they belong to. */
#define VAL(n) ((void *)(uintptr_t)(((uintptr_t)(n) << 4) | 8))

static void setup(void)
{
	urcu_memb_register_thread();
	ck_assert_int_eq(vmr_tree_create(NULL, &tree), 0);
}

static void teardown(void)
{
	ck_assert_ptr_null(vmr_tree_validate(tree));
	vmr_tree_destroy(tree, NULL, NULL);
	tree = NULL;
	urcu_memb_unregister_thread();
}

#define ck_tree_valid(t) ck_assert_msg(!vmr_tree_validate(t), "%s", \
				       vmr_tree_validate(t))

/* ---- snapshots: a tree's whole content, to show nothing changed --------- */

struct snap {
	size_t n;
	struct vmr_tree_entry *e;
};

static struct snap snap_take(const struct vmr_tree *t)
{
	struct snap s = { 0, NULL };
	struct vmr_tree_iter it;
	size_t cap = vmr_tree_count(t) + 1;

	s.e = malloc(cap * sizeof(*s.e));
	ck_assert_ptr_nonnull(s.e);
	vmr_tree_iter_start(&it, t, 0);
	while (s.n < cap && vmr_tree_iter_next(&it, &s.e[s.n]))
		s.n++;
	ck_assert_uint_eq(s.n, vmr_tree_count(t));
	return s;
}

static void snap_same(struct snap *s, const struct vmr_tree *t)
{
	struct snap now = snap_take(t);

	ck_assert_uint_eq(now.n, s->n);
	ck_assert(memcmp(now.e, s->e, s->n * sizeof(*s->e)) == 0);
	free(now.e);
	free(s->e);
	s->e = NULL;
}

static void fill(struct vmr_tree *t, uintptr_t base, uintptr_t step,
		 uintptr_t len, int n)
{
	for (int i = 0; i < n; i++)
		ck_assert_int_eq(vmr_tree_insert(t, base + i * step,
						 base + i * step + len,
						 VAL(i)),
				 0);
}

/* ---- create / destroy --------------------------------------------------- */

START_TEST(test_create_without_out_pointer_is_refused)
{
	ck_assert_int_eq(vmr_tree_create(NULL, NULL), -EINVAL);
}
END_TEST

START_TEST(test_null_flavor_means_urcu_memb)
{
	ck_assert_ptr_eq(vmr_tree_flavor(tree), vmr_rcu_default_flavor());
	ck_assert_ptr_eq(vmr_tree_flavor(tree), &urcu_memb_flavor);
	ck_assert_ptr_null(vmr_tree_flavor(NULL));
}
END_TEST

START_TEST(test_new_tree_is_empty)
{
	struct vmr_tree_iter it;

	ck_assert_uint_eq(vmr_tree_count(tree), 0);
	ck_assert_uint_eq(vmr_tree_count(NULL), 0);
	ck_assert_ptr_null(vmr_tree_lookup(tree, 0, NULL));
	ck_assert_ptr_null(vmr_tree_lookup(tree, UINTPTR_MAX, NULL));
	ck_assert_ptr_null(vmr_tree_find_intersection(tree, 0, UINTPTR_MAX,
						      NULL));
	vmr_tree_iter_start(&it, tree, 0);
	ck_assert(!vmr_tree_iter_next(&it, NULL));
	ck_assert(!vmr_tree_iter_prev(&it, NULL));
}
END_TEST

struct collect {
	size_t n;
	struct vmr_tree_entry e[64];
};

static void collect_fn(const struct vmr_tree_entry *e, void *arg)
{
	struct collect *c = arg;

	if (c->n < VMR_ARRAY_SIZE(c->e))
		c->e[c->n] = *e;
	c->n++;
}

START_TEST(test_destroy_reports_every_entry_in_order)
{
	struct vmr_tree *t;
	struct collect c = { 0 };

	ck_assert_int_eq(vmr_tree_create(&urcu_memb_flavor, &t), 0);
	fill(t, 1000, 100, 50, 40);
	vmr_tree_destroy(t, collect_fn, &c);
	ck_assert_uint_eq(c.n, 40);
	for (size_t i = 0; i < c.n; i++) {
		ck_assert_uint_eq(c.e[i].start, 1000 + i * 100);
		ck_assert_uint_eq(c.e[i].end, 1000 + i * 100 + 50);
		ck_assert_ptr_eq(c.e[i].value, VAL(i));
	}
	vmr_tree_destroy(NULL, collect_fn, &c);
}
END_TEST

START_TEST(test_iter_size_is_pinned)
{
	/* Part of the ABI: callers keep it on their stack. */
	ck_assert_uint_eq(sizeof(struct vmr_tree_iter),
			  sizeof(void *) * (1 + VMR_TREE_MAX_HEIGHT) +
				  VMR_TREE_MAX_HEIGHT + 8 +
				  3 * sizeof(uintptr_t));
	ck_assert_uint_eq(sizeof(struct vmr_tree_entry),
			  2 * sizeof(uintptr_t) + sizeof(void *));
}
END_TEST

/* ---- insert ------------------------------------------------------------- */

START_TEST(test_inserted_range_is_found_at_both_ends_only)
{
	struct vmr_tree_entry e;

	ck_assert_int_eq(vmr_tree_insert(tree, 0x1000, 0x3000, VAL(1)), 0);
	ck_assert_ptr_eq(vmr_tree_lookup(tree, 0x1000, &e), VAL(1));
	ck_assert_uint_eq(e.start, 0x1000);
	ck_assert_uint_eq(e.end, 0x3000);
	ck_assert_ptr_eq(e.value, VAL(1));
	ck_assert_ptr_eq(vmr_tree_lookup(tree, 0x2fff, NULL), VAL(1));
	ck_assert_ptr_null(vmr_tree_lookup(tree, 0x0fff, NULL));
	ck_assert_ptr_null(vmr_tree_lookup(tree, 0x3000, NULL));
	ck_assert_uint_eq(vmr_tree_count(tree), 1);
}
END_TEST

START_TEST(test_extreme_addresses_are_usable)
{
	ck_assert_int_eq(vmr_tree_insert(tree, 0, 1, VAL(1)), 0);
	ck_assert_int_eq(vmr_tree_insert(tree, UINTPTR_MAX - 1, UINTPTR_MAX,
					 VAL(2)),
			 0);
	ck_assert_ptr_eq(vmr_tree_lookup(tree, 0, NULL), VAL(1));
	ck_assert_ptr_null(vmr_tree_lookup(tree, 1, NULL));
	ck_assert_ptr_eq(vmr_tree_lookup(tree, UINTPTR_MAX - 1, NULL), VAL(2));
	ck_assert_ptr_null(vmr_tree_lookup(tree, UINTPTR_MAX, NULL));
	ck_assert_ptr_null(vmr_tree_lookup(tree, UINTPTR_MAX - 2, NULL));
	/* The whole space, once the ends are gone. */
	ck_assert_int_eq(vmr_tree_replace(tree, 0, UINTPTR_MAX, NULL, 0, NULL,
					  NULL),
			 2);
	ck_assert_int_eq(vmr_tree_insert(tree, 0, UINTPTR_MAX, VAL(3)), 0);
	ck_assert_ptr_eq(vmr_tree_lookup(tree, 0, NULL), VAL(3));
	ck_assert_ptr_eq(vmr_tree_lookup(tree, UINTPTR_MAX - 1, NULL), VAL(3));
}
END_TEST

START_TEST(test_adjacent_ranges_share_an_end_without_overlap)
{
	ck_assert_int_eq(vmr_tree_insert(tree, 100, 200, VAL(1)), 0);
	ck_assert_int_eq(vmr_tree_insert(tree, 200, 300, VAL(2)), 0);
	ck_assert_int_eq(vmr_tree_insert(tree, 0, 100, VAL(0)), 0);
	ck_assert_ptr_eq(vmr_tree_lookup(tree, 99, NULL), VAL(0));
	ck_assert_ptr_eq(vmr_tree_lookup(tree, 100, NULL), VAL(1));
	ck_assert_ptr_eq(vmr_tree_lookup(tree, 199, NULL), VAL(1));
	ck_assert_ptr_eq(vmr_tree_lookup(tree, 200, NULL), VAL(2));
	ck_assert_ptr_null(vmr_tree_lookup(tree, 300, NULL));
	ck_assert_uint_eq(vmr_tree_count(tree), 3);
}
END_TEST

START_TEST(test_overlapping_insert_is_refused)
{
	static const uintptr_t cases[][2] = {
		{ 100, 200 }, /* same */
		{ 120, 180 }, /* inside */
		{ 50, 101 },  /* over the start */
		{ 199, 250 }, /* over the end */
		{ 50, 250 },  /* around */
		{ 0, 1000 },  /* around several */
		{ 250, 301 }, /* into the next one */
	};
	struct snap s;

	ck_assert_int_eq(vmr_tree_insert(tree, 100, 200, VAL(1)), 0);
	ck_assert_int_eq(vmr_tree_insert(tree, 300, 400, VAL(2)), 0);
	s = snap_take(tree);
	for (size_t i = 0; i < VMR_ARRAY_SIZE(cases); i++)
		ck_assert_int_eq(vmr_tree_insert(tree, cases[i][0],
						 cases[i][1], VAL(9)),
				 -EEXIST);
	snap_same(&s, tree);
}
END_TEST

START_TEST(test_bad_insert_is_refused_and_changes_nothing)
{
	struct snap s;

	fill(tree, 0, 10, 5, 30);
	s = snap_take(tree);
	ck_assert_int_eq(vmr_tree_insert(NULL, 1000, 2000, VAL(1)), -EINVAL);
	ck_assert_int_eq(vmr_tree_insert(tree, 1000, 2000, NULL), -EINVAL);
	ck_assert_int_eq(vmr_tree_insert(tree, 2000, 2000, VAL(1)), -EINVAL);
	ck_assert_int_eq(vmr_tree_insert(tree, 2001, 2000, VAL(1)), -EINVAL);
	ck_assert_int_eq(vmr_tree_insert(tree, UINTPTR_MAX, 0, VAL(1)),
			 -EINVAL);
	snap_same(&s, tree);
}
END_TEST

/* ---- remove ------------------------------------------------------------- */

START_TEST(test_remove_takes_out_exactly_that_entry)
{
	void *v = NULL;

	fill(tree, 0, 10, 10, 50);
	ck_assert_int_eq(vmr_tree_remove(tree, 200, 210, &v), 0);
	ck_assert_ptr_eq(v, VAL(20));
	ck_assert_ptr_null(vmr_tree_lookup(tree, 205, NULL));
	ck_assert_ptr_eq(vmr_tree_lookup(tree, 199, NULL), VAL(19));
	ck_assert_ptr_eq(vmr_tree_lookup(tree, 210, NULL), VAL(21));
	ck_assert_uint_eq(vmr_tree_count(tree), 49);
	ck_assert_int_eq(vmr_tree_remove(tree, 0, 10, NULL), 0);
	ck_assert_ptr_null(vmr_tree_lookup(tree, 0, NULL));
}
END_TEST

START_TEST(test_removing_what_is_not_there_is_refused)
{
	struct snap s;

	fill(tree, 100, 100, 50, 20);
	s = snap_take(tree);
	ck_assert_int_eq(vmr_tree_remove(tree, 150, 200, NULL), -ENOENT);
	ck_assert_int_eq(vmr_tree_remove(tree, 100, 149, NULL), -ENOENT);
	ck_assert_int_eq(vmr_tree_remove(tree, 101, 150, NULL), -ENOENT);
	ck_assert_int_eq(vmr_tree_remove(tree, 100, 250, NULL), -ENOENT);
	ck_assert_int_eq(vmr_tree_remove(tree, 0, 50, NULL), -ENOENT);
	ck_assert_int_eq(vmr_tree_remove(tree, 100, 100, NULL), -EINVAL);
	ck_assert_int_eq(vmr_tree_remove(NULL, 100, 150, NULL), -EINVAL);
	snap_same(&s, tree);
	ck_assert_int_eq(vmr_tree_remove(tree, 100, 150, NULL), 0);
	ck_assert_int_eq(vmr_tree_remove(tree, 100, 150, NULL), -ENOENT);
}
END_TEST

START_TEST(test_removing_everything_leaves_an_empty_tree)
{
	fill(tree, 0, 10, 10, 500);
	for (int i = 499; i >= 0; i--)
		ck_assert_int_eq(vmr_tree_remove(tree, i * 10, i * 10 + 10,
						 NULL),
				 0);
	ck_tree_valid(tree);
	ck_assert_uint_eq(vmr_tree_count(tree), 0);
	ck_assert_ptr_null(vmr_tree_lookup(tree, 0, NULL));
	fill(tree, 0, 10, 10, 5);
	ck_assert_uint_eq(vmr_tree_count(tree), 5);
}
END_TEST

/* ---- replace ------------------------------------------------------------ */

START_TEST(test_replace_splits_an_entry)
{
	struct vmr_tree_entry add[2] = { { 0x1000, 0x1800, VAL(1) },
					 { 0x1800, 0x3000, VAL(2) } };
	struct collect c = { 0 };

	ck_assert_int_eq(vmr_tree_insert(tree, 0x1000, 0x3000, VAL(9)), 0);
	ck_assert_int_eq(vmr_tree_replace(tree, 0x1000, 0x3000, add, 2,
					  collect_fn, &c),
			 1);
	ck_assert_uint_eq(c.n, 1);
	ck_assert_ptr_eq(c.e[0].value, VAL(9));
	ck_assert_ptr_eq(vmr_tree_lookup(tree, 0x17ff, NULL), VAL(1));
	ck_assert_ptr_eq(vmr_tree_lookup(tree, 0x1800, NULL), VAL(2));
	ck_assert_uint_eq(vmr_tree_count(tree), 2);
}
END_TEST

START_TEST(test_replace_merges_neighbours)
{
	struct vmr_tree_entry add = { 100, 700, VAL(7) };
	struct collect c = { 0 };

	fill(tree, 0, 100, 100, 10);
	ck_assert_int_eq(vmr_tree_replace(tree, 100, 700, &add, 1, collect_fn,
					  &c),
			 6);
	ck_assert_uint_eq(c.n, 6);
	for (size_t i = 0; i < 6; i++)
		ck_assert_ptr_eq(c.e[i].value, VAL(i + 1));
	ck_assert_ptr_eq(vmr_tree_lookup(tree, 100, NULL), VAL(7));
	ck_assert_ptr_eq(vmr_tree_lookup(tree, 699, NULL), VAL(7));
	ck_assert_ptr_eq(vmr_tree_lookup(tree, 700, NULL), VAL(7 + 0));
	ck_assert_ptr_eq(vmr_tree_lookup(tree, 99, NULL), VAL(0));
	ck_assert_uint_eq(vmr_tree_count(tree), 5);
}
END_TEST

START_TEST(test_replace_can_fill_holes_and_only_insert)
{
	struct vmr_tree_entry add[3] = { { 0, 50, VAL(1) },
					 { 60, 70, VAL(2) },
					 { 90, 100, VAL(3) } };

	ck_assert_int_eq(vmr_tree_replace(tree, 0, 100, add, 3, NULL, NULL), 0);
	ck_assert_uint_eq(vmr_tree_count(tree), 3);
	ck_assert_ptr_null(vmr_tree_lookup(tree, 55, NULL));
	/* A span with nothing in it and nothing to add changes nothing. */
	ck_assert_int_eq(vmr_tree_replace(tree, 200, 300, NULL, 0, NULL, NULL),
			 0);
	ck_assert_uint_eq(vmr_tree_count(tree), 3);
}
END_TEST

START_TEST(test_bad_replace_is_refused_and_changes_nothing)
{
	struct vmr_tree_entry ok = { 100, 200, VAL(1) };
	struct vmr_tree_entry unsorted[2] = { { 150, 200, VAL(1) },
					      { 100, 150, VAL(2) } };
	struct vmr_tree_entry overlapping[2] = { { 100, 160, VAL(1) },
						 { 150, 200, VAL(2) } };
	struct vmr_tree_entry outside = { 50, 150, VAL(1) };
	struct vmr_tree_entry empty = { 120, 120, VAL(1) };
	struct vmr_tree_entry nullval = { 100, 200, NULL };
	struct snap s;

	fill(tree, 0, 100, 100, 5); /* [0,100) .. [400,500) */
	s = snap_take(tree);
	ck_assert_int_eq(vmr_tree_replace(NULL, 100, 200, &ok, 1, NULL, NULL),
			 -EINVAL);
	ck_assert_int_eq(vmr_tree_replace(tree, 200, 100, &ok, 1, NULL, NULL),
			 -EINVAL);
	ck_assert_int_eq(vmr_tree_replace(tree, 100, 200, NULL, 1, NULL, NULL),
			 -EINVAL);
	ck_assert_int_eq(vmr_tree_replace(tree, 100, 200, unsorted, 2, NULL,
					  NULL),
			 -EINVAL);
	ck_assert_int_eq(vmr_tree_replace(tree, 100, 200, overlapping, 2, NULL,
					  NULL),
			 -EINVAL);
	ck_assert_int_eq(vmr_tree_replace(tree, 100, 200, &outside, 1, NULL,
					  NULL),
			 -EINVAL);
	ck_assert_int_eq(vmr_tree_replace(tree, 100, 200, &empty, 1, NULL,
					  NULL),
			 -EINVAL);
	ck_assert_int_eq(vmr_tree_replace(tree, 100, 200, &nullval, 1, NULL,
					  NULL),
			 -EINVAL);
	/* The span cuts an entry at either end. */
	ck_assert_int_eq(vmr_tree_replace(tree, 150, 200, NULL, 0, NULL, NULL),
			 -EINVAL);
	ck_assert_int_eq(vmr_tree_replace(tree, 100, 250, NULL, 0, NULL, NULL),
			 -EINVAL);
	snap_same(&s, tree);
}
END_TEST

/* ---- read side: intersection and iteration ------------------------------ */

START_TEST(test_intersection_finds_the_lowest_entry_meeting_the_range)
{
	struct vmr_tree_entry e;

	fill(tree, 100, 100, 50, 10); /* [100,150) [200,250) ... */
	ck_assert_ptr_eq(vmr_tree_find_intersection(tree, 0, 101, &e), VAL(0));
	ck_assert_uint_eq(e.start, 100);
	ck_assert_ptr_null(vmr_tree_find_intersection(tree, 0, 100, NULL));
	ck_assert_ptr_eq(vmr_tree_find_intersection(tree, 149, 150, NULL),
			 VAL(0));
	ck_assert_ptr_null(vmr_tree_find_intersection(tree, 150, 200, NULL));
	ck_assert_ptr_eq(vmr_tree_find_intersection(tree, 150, 201, NULL),
			 VAL(1));
	ck_assert_ptr_eq(vmr_tree_find_intersection(tree, 160, UINTPTR_MAX,
						    NULL),
			 VAL(1));
	ck_assert_ptr_null(vmr_tree_find_intersection(tree, 1050, UINTPTR_MAX,
						      NULL));
	ck_assert_ptr_null(vmr_tree_find_intersection(tree, 300, 300, NULL));
	ck_assert_ptr_null(vmr_tree_find_intersection(NULL, 0, 1000, NULL));
}
END_TEST

START_TEST(test_iteration_visits_every_entry_in_order_both_ways)
{
	struct vmr_tree_iter it;
	struct vmr_tree_entry e;
	int n = 1000, i;

	fill(tree, 0, 10, 7, n);
	vmr_tree_iter_start(&it, tree, 0);
	for (i = 0; vmr_tree_iter_next(&it, &e); i++) {
		ck_assert_uint_eq(e.start, (uintptr_t)i * 10);
		ck_assert_ptr_eq(e.value, VAL(i));
	}
	ck_assert_int_eq(i, n);
	/* At the end it stays at the end, and can turn back. */
	ck_assert(!vmr_tree_iter_next(&it, &e));
	ck_assert(vmr_tree_iter_prev(&it, &e));
	ck_assert_uint_eq(e.start, (uintptr_t)(n - 1) * 10);

	vmr_tree_iter_start(&it, tree, UINTPTR_MAX);
	for (i = n - 1; vmr_tree_iter_prev(&it, &e); i--)
		ck_assert_uint_eq(e.start, (uintptr_t)i * 10);
	ck_assert_int_eq(i, -1);
	ck_assert(!vmr_tree_iter_prev(&it, &e));
	ck_assert(vmr_tree_iter_next(&it, &e));
	ck_assert_uint_eq(e.start, 0);
}
END_TEST

START_TEST(test_cursor_sits_before_the_entry_holding_its_address)
{
	struct vmr_tree_iter it;
	struct vmr_tree_entry e;

	fill(tree, 0, 10, 7, 300); /* [0,7) [10,17) ... */
	for (uintptr_t a = 0; a < 3000; a++) {
		uintptr_t k = a / 10, in = a % 10 < 7;
		uintptr_t after = in ? k : k + 1; /* entry after the cursor */

		vmr_tree_iter_start(&it, tree, a);
		if (after < 300) {
			ck_assert(vmr_tree_iter_next(&it, &e));
			ck_assert_uint_eq(e.start, after * 10);
			ck_assert(vmr_tree_iter_prev(&it, &e));
			ck_assert_uint_eq(e.start, after * 10);
		} else {
			ck_assert(!vmr_tree_iter_next(&it, &e));
		}
		vmr_tree_iter_start(&it, tree, a);
		if (in && k == 0) {
			ck_assert(!vmr_tree_iter_prev(&it, &e));
		} else {
			ck_assert(vmr_tree_iter_prev(&it, &e));
			ck_assert_uint_eq(e.start, (in ? k - 1 : k) * 10);
		}
	}
}
END_TEST

START_TEST(test_cursor_keeps_its_snapshot_across_updates)
{
	struct vmr_tree_iter it;
	struct vmr_tree_entry e;
	int i;

	fill(tree, 0, 10, 10, 200);
	vmr_rcu_read_lock(NULL);
	vmr_tree_iter_start(&it, tree, 0);
	for (i = 0; i < 100; i++)
		ck_assert(vmr_tree_iter_next(&it, &e));
	ck_assert_int_eq(vmr_tree_replace(tree, 0, 2000, NULL, 0, NULL, NULL),
			 200);
	ck_assert_uint_eq(vmr_tree_count(tree), 0);
	for (; vmr_tree_iter_next(&it, &e); i++)
		ck_assert_uint_eq(e.start, (uintptr_t)i * 10);
	vmr_rcu_read_unlock(NULL);
	ck_assert_int_eq(i, 200);
}
END_TEST

/* ---- large trees against a reference model ------------------------------ */

/*
 * The model: addresses are cells of a grid; owner[c] is the id of the entry
 * covering cell c, or 0.  Entry ids index start/end arrays.
 */
#define CELL 16u

struct model {
	size_t cells;
	uint32_t *owner;
	uintptr_t *start, *end;
	uint32_t next_id;
	size_t count;
};

static void model_init(struct model *m, size_t cells, size_t ids)
{
	m->cells = cells;
	m->owner = calloc(cells, sizeof(*m->owner));
	m->start = calloc(ids + 1, sizeof(*m->start));
	m->end = calloc(ids + 1, sizeof(*m->end));
	ck_assert(m->owner && m->start && m->end);
	m->next_id = 1;
	m->count = 0;
}

static void model_fini(struct model *m)
{
	free(m->owner);
	free(m->start);
	free(m->end);
}

static bool model_free(const struct model *m, size_t c0, size_t c1)
{
	for (size_t c = c0; c < c1; c++)
		if (m->owner[c])
			return false;
	return true;
}

static void model_set(struct model *m, uint32_t id, size_t c0, size_t c1)
{
	for (size_t c = c0; c < c1; c++)
		m->owner[c] = id;
}

/* The whole tree against the model: iteration, lookups, count. */
static void model_check(const struct model *m, const struct vmr_tree *t,
			struct vmr_rng *r, int lookups)
{
	struct vmr_tree_iter it;
	struct vmr_tree_entry e;
	size_t n = 0, c = 0;

	ck_tree_valid(t);
	vmr_tree_iter_start(&it, t, 0);
	while (vmr_tree_iter_next(&it, &e)) {
		uint32_t id = (uint32_t)((uintptr_t)e.value >> 4);

		ck_assert_uint_eq(e.start, m->start[id]);
		ck_assert_uint_eq(e.end, m->end[id]);
		/* Nothing in the model between the previous entry and this. */
		ck_assert(model_free(m, c, e.start / CELL));
		c = e.end / CELL;
		n++;
	}
	ck_assert(model_free(m, c, m->cells));
	ck_assert_uint_eq(n, m->count);
	ck_assert_uint_eq(vmr_tree_count(t), m->count);
	for (int i = 0; i < lookups; i++) {
		uintptr_t a = vmr_rng_below(r, m->cells * CELL);
		uint32_t id = m->owner[a / CELL];
		void *v = vmr_tree_lookup(t, a, &e);

		ck_assert_ptr_eq(v, id ? VAL(id) : NULL);
		if (id)
			ck_assert_uint_eq(e.start, m->start[id]);
	}
}

/* One random operation, applied to both; returns the tree's result. */
static int model_step(struct model *m, struct vmr_tree *t, struct vmr_rng *r)
{
	size_t c0 = vmr_rng_below(r, m->cells - 8);
	size_t c1 = c0 + 1 + vmr_rng_below(r, 4);
	uintptr_t s = c0 * CELL, e = c1 * CELL;
	struct vmr_tree_entry lo, hi, add[4];
	unsigned int op = (unsigned int)vmr_rng_below(r, 10);
	int ret, nr_add = 0;

	if (op < 5) { /* insert */
		uint32_t id = m->next_id++;

		ret = vmr_tree_insert(t, s, e, VAL(id));
		if (ret == 0) {
			ck_assert(model_free(m, c0, c1));
			model_set(m, id, c0, c1);
			m->start[id] = s;
			m->end[id] = e;
			m->count++;
		} else {
			ck_assert_int_eq(ret, -EEXIST);
			ck_assert(!model_free(m, c0, c1));
		}
		return ret;
	}
	if (op < 7) { /* remove the entry at a random address, if any */
		uint32_t id = m->owner[c0];

		if (!id)
			return vmr_tree_remove(t, s, e, NULL) == -ENOENT ? 0 :
									  -1;
		ret = vmr_tree_remove(t, m->start[id], m->end[id], NULL);
		if (ret == 0) {
			model_set(m, 0, m->start[id] / CELL,
				  m->end[id] / CELL);
			m->count--;
		}
		return ret;
	}
	/*
	 * replace: widen [s, e) to whole entries, then re-partition it into
	 * up to four new entries with random holes.
	 */
	if (vmr_tree_lookup(t, s, &lo))
		s = lo.start;
	if (vmr_tree_lookup(t, e - 1, &hi))
		e = hi.end;
	for (uintptr_t a = s; a < e && nr_add < 4;) {
		uintptr_t len = CELL * (1 + vmr_rng_below(r, 3));
		uintptr_t gap = CELL * vmr_rng_below(r, 2);

		if (a + gap + len > e)
			break;
		add[nr_add].start = a + gap;
		add[nr_add].end = a + gap + len;
		add[nr_add].value = VAL(m->next_id + (uint32_t)nr_add);
		a += gap + len;
		nr_add++;
	}
	ret = vmr_tree_replace(t, s, e, add, (size_t)nr_add, NULL, NULL);
	if (ret >= 0) {
		size_t removed = 0;

		for (size_t c = s / CELL; c < e / CELL; c++) {
			uint32_t id = m->owner[c];

			if (id && m->start[id] == c * CELL)
				removed++;
			m->owner[c] = 0;
		}
		ck_assert_int_eq(ret, (int)removed);
		m->count -= removed;
		for (int k = 0; k < nr_add; k++) {
			uint32_t id = m->next_id++;

			m->start[id] = add[k].start;
			m->end[id] = add[k].end;
			model_set(m, id, add[k].start / CELL,
				  add[k].end / CELL);
			m->count++;
		}
		ret = 0;
	}
	return ret;
}

START_TEST(test_hundred_thousand_random_entries_match_the_model)
{
	const size_t n = vmr_test_count(100000), cells = 4 * n;
	const size_t steps = vmr_test_count(300000);
	struct vmr_rng r;
	struct model m;
	size_t *perm;

	vmr_rng_init(&r, vmr_test_seed() ^ 1);
	model_init(&m, cells, n + 5 * steps);
	/* Insert n one-cell entries at every fourth cell, in random order. */
	perm = malloc(n * sizeof(*perm));
	ck_assert_ptr_nonnull(perm);
	for (size_t i = 0; i < n; i++)
		perm[i] = i;
	for (size_t i = n - 1; i > 0; i--) {
		size_t j = vmr_rng_below(&r, i + 1), tmp = perm[i];

		perm[i] = perm[j];
		perm[j] = tmp;
	}
	for (size_t i = 0; i < n; i++) {
		uint32_t id = m.next_id++;
		size_t c = perm[i] * 4;

		m.start[id] = c * CELL;
		m.end[id] = (c + 1) * CELL;
		model_set(&m, id, c, c + 1);
		m.count++;
		ck_assert_int_eq(vmr_tree_insert(tree, m.start[id], m.end[id],
						 VAL(id)),
				 0);
	}
	free(perm);
	model_check(&m, tree, &r, 100000);
	/* Then random inserts, removes and replaces, checked as they go. */
	for (size_t i = 0; i < steps; i++) {
		ck_assert_int_ne(model_step(&m, tree, &r), -1);
		if (i % 50000 == 0)
			model_check(&m, tree, &r, 1000);
	}
	model_check(&m, tree, &r, 100000);
	model_fini(&m);
}
END_TEST

START_TEST(test_small_trees_stay_valid_through_every_shape)
{
	struct vmr_rng r;
	struct model m;

	/* Few cells: the tree grows and shrinks through every height. */
	vmr_rng_init(&r, vmr_test_seed() ^ 2);
	model_init(&m, 600, 2000000);
	for (size_t i = 0; i < vmr_test_count(200000); i++) {
		ck_assert_int_ne(model_step(&m, tree, &r), -1);
		if (i % 97 == 0)
			model_check(&m, tree, &r, 50);
	}
	model_fini(&m);
}
END_TEST

/* ---- allocation failure ------------------------------------------------- */

/*
 * Run @op with 0, 1, 2, ... allocations allowed until it succeeds; every
 * failing run must return -ENOMEM and leave the tree exactly as it was.
 */
#define ENOMEM_SWEEP(op, expect)                                              \
	do {                                                                  \
		for (long budget = 0;; budget++) {                            \
			struct snap s = snap_take(tree);                      \
			int ret;                                              \
			vmr_alloc_fail_after(budget);                         \
			ret = (op);                                           \
			vmr_alloc_fail_after(-1);                             \
			if (ret != -ENOMEM) {                                 \
				ck_assert_int_eq(ret, (expect));              \
				free(s.e);                                    \
				break;                                        \
			}                                                     \
			ck_tree_valid(tree);                                  \
			snap_same(&s, tree);                                  \
		}                                                             \
		ck_tree_valid(tree);                                          \
	} while (0)

static int nonneg_to_zero(int ret)
{
	return ret > 0 ? 0 : ret;
}

START_TEST(test_allocation_failure_changes_nothing)
{
	struct vmr_tree_entry add[40];
	struct vmr_rng r;

	vmr_rng_init(&r, vmr_test_seed() ^ 3);
	/* Enough entries for three levels, so splits and merges cascade. */
	for (int i = 0; i < 3000; i++)
		ENOMEM_SWEEP(vmr_tree_insert(tree, (uintptr_t)i * 100,
					     (uintptr_t)i * 100 + 50, VAL(i)),
			     0);
	for (int round = 0; round < 60; round++) {
		uintptr_t base = vmr_rng_below(&r, 2900) * 100;
		int k = 1 + (int)vmr_rng_below(&r, 40);

		for (int i = 0; i < k; i++) {
			add[i].start = base + (uintptr_t)i * 100 + 10;
			add[i].end = add[i].start + 80;
			add[i].value = VAL(100000 + i);
		}
		if (round % 3 == 0) {
			int expect = vmr_tree_lookup(tree, base, NULL) ?
					     0 : -ENOENT;

			ENOMEM_SWEEP(vmr_tree_remove(tree, base, base + 50,
						     NULL),
				     expect);
			continue;
		}
		/* Replace a run of k entries (or what is left of it) by k. */
		ENOMEM_SWEEP(nonneg_to_zero(vmr_tree_replace(
				     tree, base, base + (uintptr_t)k * 100, add,
				     (size_t)(round % 3 == 1 ? k : 1), NULL,
				     NULL)),
			     0);
	}
	/* Creation too. */
	{
		struct vmr_tree *t2 = NULL;

		vmr_alloc_fail_after(0);
		ck_assert_int_eq(vmr_tree_create(NULL, &t2), -ENOMEM);
		vmr_alloc_fail_after(-1);
		ck_assert_ptr_null(t2);
	}
}
END_TEST

/* ---- concurrency -------------------------------------------------------- */

/*
 * A span [0, SPAN) stays fully covered while a writer re-partitions random
 * runs of it with vmr_tree_replace().  Readers look up and iterate; no
 * address may ever be uncovered or covered twice, and every value a reader
 * finds must still be alive and describe its own range (values are freed
 * through call_rcu once replaced, so ASan catches a read after free).
 */
#define SPAN (1u << 20)

struct region_val {
	uintptr_t start, end;
	struct rcu_head rcu;
};

struct race {
	atomic_bool stop;
	atomic_ulong lookups, walks, errors, replaces;
	uint64_t seed;
};

static void val_free_rcu(struct rcu_head *h)
{
	vmr_tsan_callback_enter(h);
	free(caa_container_of(h, struct region_val, rcu));
}

static void val_retire(const struct vmr_tree_entry *e, void *arg)
{
	struct region_val *v = e->value;

	(void)arg;
	vmr_call_rcu(&urcu_memb_flavor, &v->rcu, val_free_rcu);
}

static struct region_val *val_new(uintptr_t s, uintptr_t e)
{
	struct region_val *v = malloc(sizeof(*v));

	ck_assert_ptr_nonnull(v);
	v->start = s;
	v->end = e;
	return v;
}

static void *race_reader(void *arg)
{
	struct race *race = arg;
	struct vmr_rng r;
	unsigned long errors = 0, lookups = 0, walks = 0;
	static atomic_uint ids;

	vmr_rng_init(&r, race->seed + atomic_fetch_add(&ids, 1) + 100);
	urcu_memb_register_thread();
	while (!atomic_load_explicit(&race->stop, memory_order_relaxed)) {
		struct vmr_tree_entry e;
		struct region_val *v;

		vmr_rcu_read_lock(NULL);
		for (int i = 0; i < 64; i++, lookups++) {
			uintptr_t a = vmr_rng_below(&r, SPAN);

			v = vmr_tree_lookup(tree, a, &e);
			if (!v || e.start > a || e.end <= a ||
			    v->start != e.start || v->end != e.end)
				errors++;
		}
		if (vmr_rng_below(&r, 8) == 0) {
			struct vmr_tree_iter it;
			uintptr_t expect = 0;

			vmr_tree_iter_start(&it, tree, 0);
			while (vmr_tree_iter_next(&it, &e)) {
				v = e.value;
				if (e.start != expect || v->start != e.start ||
				    v->end != e.end)
					errors++;
				expect = e.end;
			}
			if (expect != SPAN)
				errors++;
			walks++;
		}
		vmr_rcu_read_unlock(NULL);
		if (vmr_rng_below(&r, 16) == 0)
			sched_yield();
	}
	urcu_memb_unregister_thread();
	atomic_fetch_add(&race->errors, errors);
	atomic_fetch_add(&race->lookups, lookups);
	atomic_fetch_add(&race->walks, walks);
	return NULL;
}

static void *race_writer(void *arg)
{
	struct race *race = arg;
	struct vmr_tree_entry add[12], lo, hi;
	unsigned long replaces = 0, errors = 0;
	struct vmr_rng r;

	vmr_rng_init(&r, race->seed);
	urcu_memb_register_thread();
	while (!atomic_load_explicit(&race->stop, memory_order_relaxed)) {
		uintptr_t a = vmr_rng_below(&r, SPAN);
		uintptr_t b = a + 1 + vmr_rng_below(&r, SPAN / 16);
		uintptr_t s, e;
		int n = 1 + (int)vmr_rng_below(&r, 12);

		if (b > SPAN)
			b = SPAN;
		/* The writer is alone: no read-side section needed. */
		if (!vmr_tree_lookup(tree, a, &lo) ||
		    !vmr_tree_lookup(tree, b - 1, &hi)) {
			errors++;
			break;
		}
		s = lo.start;
		e = hi.end;
		/* n pieces that exactly cover [s, e), cut at jittered points. */
		if ((uintptr_t)n > e - s)
			n = (int)(e - s);
		for (int i = 0; i < n; i++) {
			uintptr_t step = (e - s) / (uintptr_t)n;

			add[i].start = i ? add[i - 1].end : s;
			add[i].end = i == n - 1 ? e :
				     s + step * (uintptr_t)(i + 1) +
					     vmr_rng_below(&r, step);
			add[i].value = val_new(add[i].start, add[i].end);
		}
		if (vmr_tree_replace(tree, s, e, add, (size_t)n, val_retire,
				     NULL) < 1)
			errors++;
		replaces++;
		if (vmr_rng_below(&r, 4) == 0)
			sched_yield();
	}
	urcu_memb_unregister_thread();
	atomic_fetch_add(&race->errors, errors);
	atomic_fetch_add(&race->replaces, replaces);
	return NULL;
}

static void free_val(const struct vmr_tree_entry *e, void *arg)
{
	(void)arg;
	free(e->value);
}

START_TEST(test_readers_never_see_a_hole_or_an_overlap)
{
	const int readers = 3;
	struct race race = { .seed = vmr_test_seed() ^ 4 };
	pthread_t rd[3], wr;
	unsigned long errors, replaces, lookups, walks;
	double end;

	for (uintptr_t s = 0; s < SPAN; s += SPAN / 64)
		ck_assert_int_eq(vmr_tree_insert(tree, s, s + SPAN / 64,
						 val_new(s, s + SPAN / 64)),
				 0);
	for (int i = 0; i < readers; i++)
		ck_assert_int_eq(pthread_create(&rd[i], NULL, race_reader,
						&race),
				 0);
	ck_assert_int_eq(pthread_create(&wr, NULL, race_writer, &race), 0);
	end = vmr_test_now() + vmr_test_seconds();
	while (vmr_test_now() < end)
		usleep(10000);
	atomic_store(&race.stop, true);
	pthread_join(wr, NULL);
	for (int i = 0; i < readers; i++)
		pthread_join(rd[i], NULL);

	errors = atomic_load(&race.errors);
	replaces = atomic_load(&race.replaces);
	lookups = atomic_load(&race.lookups);
	walks = atomic_load(&race.walks);
	ck_assert_uint_eq(errors, 0);
	ck_assert_uint_gt(replaces, 100);
	ck_assert_uint_gt(lookups, 1000);
	ck_assert_uint_gt(walks, 10);
	ck_tree_valid(tree);
	urcu_memb_barrier();
	/* Free what is left through destroy's callback, then a fresh tree. */
	vmr_tree_destroy(tree, free_val, NULL);
	ck_assert_int_eq(vmr_tree_create(NULL, &tree), 0);
}
END_TEST

static Suite *tree_suite(void)
{
	Suite *s = suite_create("tree");
	TCase *tc;

	tc = tcase_create("life cycle");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, test_create_without_out_pointer_is_refused);
	tcase_add_test(tc, test_null_flavor_means_urcu_memb);
	tcase_add_test(tc, test_new_tree_is_empty);
	tcase_add_test(tc, test_destroy_reports_every_entry_in_order);
	tcase_add_test(tc, test_iter_size_is_pinned);
	suite_add_tcase(s, tc);

	tc = tcase_create("insert");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, test_inserted_range_is_found_at_both_ends_only);
	tcase_add_test(tc, test_extreme_addresses_are_usable);
	tcase_add_test(tc, test_adjacent_ranges_share_an_end_without_overlap);
	tcase_add_test(tc, test_overlapping_insert_is_refused);
	tcase_add_test(tc, test_bad_insert_is_refused_and_changes_nothing);
	suite_add_tcase(s, tc);

	tc = tcase_create("remove");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, test_remove_takes_out_exactly_that_entry);
	tcase_add_test(tc, test_removing_what_is_not_there_is_refused);
	tcase_add_test(tc, test_removing_everything_leaves_an_empty_tree);
	suite_add_tcase(s, tc);

	tc = tcase_create("replace");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, test_replace_splits_an_entry);
	tcase_add_test(tc, test_replace_merges_neighbours);
	tcase_add_test(tc, test_replace_can_fill_holes_and_only_insert);
	tcase_add_test(tc, test_bad_replace_is_refused_and_changes_nothing);
	suite_add_tcase(s, tc);

	tc = tcase_create("read side");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc,
		       test_intersection_finds_the_lowest_entry_meeting_the_range);
	tcase_add_test(tc, test_iteration_visits_every_entry_in_order_both_ways);
	tcase_add_test(tc,
		       test_cursor_sits_before_the_entry_holding_its_address);
	tcase_add_test(tc, test_cursor_keeps_its_snapshot_across_updates);
	suite_add_tcase(s, tc);

	tc = tcase_create("model");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 300);
	tcase_add_test(tc, test_hundred_thousand_random_entries_match_the_model);
	tcase_add_test(tc, test_small_trees_stay_valid_through_every_shape);
	tcase_add_test(tc, test_allocation_failure_changes_nothing);
	suite_add_tcase(s, tc);

	tc = tcase_create("concurrent");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, vmr_test_seconds() * 3 + 60);
	tcase_add_test(tc, test_readers_never_see_a_hole_or_an_overlap);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	return vmr_test_run(tree_suite());
}
