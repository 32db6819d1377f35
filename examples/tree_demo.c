/* SPDX-License-Identifier: MIT */
/*
 * tree_demo - the region tree under concurrent readers.
 *
 * The main thread maps eight 1 MiB regions, then splits, unmaps, remaps and
 * merges them, each change one atomic vmr_tree_replace().  Two reader
 * threads look up random addresses the whole time, as page faults would,
 * and check what they find: an address must never be covered by an entry
 * that does not contain it, and the layout a reader walks must never show
 * two entries overlapping.  At the end each reader says what it saw.
 *
 * Copy it freely: it uses only the public API (no liburcu header needed:
 * the vmr_rcu_* helpers call the tree's flavor).  It compiles as C11 and
 * as C++.
 *
 *   cc -o tree_demo tree_demo.c $(pkg-config --cflags --libs libvmaretry)
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* rand_r(), nanosleep() under -std=c11 */
#endif
#include <vmaretry.h>

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MIB ((uintptr_t)1 << 20)
#define BASE ((uintptr_t)0x7f0000000000ull)
#define NREGIONS 8
#define NREADERS 2

/* What a region's value points at: its name and the range it was made for. */
struct region {
	char name[24];
	uintptr_t start, end;
};

/*
 * Values live until the end of the program here, so readers may keep using
 * what they found.  A real program frees a replaced value after an RCU grace
 * period (liburcu's call_rcu()).
 */
static struct region pool[256];
static unsigned int pool_used;

static struct region *region_new(const char *name, uintptr_t start,
				 uintptr_t end)
{
	struct region *r = &pool[pool_used++];

	snprintf(r->name, sizeof(r->name), "%s", name);
	r->start = start;
	r->end = end;
	return r;
}

static struct vmr_tree *tree;
static int stop;

struct reader_stats {
	unsigned long lookups, hits, walks, bad;
	unsigned int seed;
};

static void *reader(void *arg)
{
	struct reader_stats *st = (struct reader_stats *)arg;
	const struct rcu_flavor_struct *flavor = vmr_tree_flavor(tree);

	vmr_rcu_register_thread(flavor);
	while (!__atomic_load_n(&stop, __ATOMIC_RELAXED)) {
		struct vmr_tree_entry e;
		struct vmr_tree_iter it;
		uintptr_t addr, prev_end = 0;
		struct region *r;

		addr = BASE + (uintptr_t)rand_r(&st->seed) % (NREGIONS * MIB);
		vmr_rcu_read_lock(flavor);
		r = (struct region *)vmr_tree_lookup(tree, addr, &e);
		st->lookups++;
		if (r) {
			st->hits++;
			if (addr < e.start || addr >= e.end ||
			    r->start != e.start || r->end != e.end)
				st->bad++;
		}
		if (st->lookups % 64 == 0) {
			vmr_tree_iter_start(&it, tree, 0);
			while (vmr_tree_iter_next(&it, &e)) {
				if (e.start < prev_end)
					st->bad++;
				prev_end = e.end;
			}
			st->walks++;
		}
		vmr_rcu_read_unlock(flavor);
	}
	vmr_rcu_unregister_thread(flavor);
	return NULL;
}

static void show(const char *what)
{
	const struct rcu_flavor_struct *flavor = vmr_tree_flavor(tree);
	struct vmr_tree_entry e;
	struct vmr_tree_iter it;

	printf("%-34s %zu regions:", what, vmr_tree_count(tree));
	vmr_rcu_read_lock(flavor);
	vmr_tree_iter_start(&it, tree, 0);
	while (vmr_tree_iter_next(&it, &e))
		printf(" %s", ((struct region *)e.value)->name);
	vmr_rcu_read_unlock(flavor);
	printf("\n");
}

static void check(int ret, const char *what)
{
	if (ret < 0) {
		fprintf(stderr, "tree_demo: %s: %s\n", what, strerror(-ret));
		exit(1);
	}
}

static void pause_a_little(void)
{
	struct timespec ts = { 0, 20 * 1000 * 1000 };

	nanosleep(&ts, NULL);
}

/* Split region [s, e) into three, as an mprotect of its middle would. */
static void split3(uintptr_t s, uintptr_t a, uintptr_t b, uintptr_t e,
		   const char *name)
{
	struct vmr_tree_entry add[3];
	char buf[24];
	int i;

	add[0].start = s;
	add[0].end = a;
	add[1].start = a;
	add[1].end = b;
	add[2].start = b;
	add[2].end = e;
	for (i = 0; i < 3; i++) {
		snprintf(buf, sizeof(buf), "%s.%d", name, i);
		add[i].value = region_new(buf, add[i].start, add[i].end);
	}
	check(vmr_tree_replace(tree, s, e, add, 3, NULL, NULL), "split");
}

int main(void)
{
	struct reader_stats stats[NREADERS];
	pthread_t threads[NREADERS];
	struct vmr_tree_entry merged;
	char name[24];
	int i, ret;

	ret = vmr_tree_create(NULL, &tree);
	check(ret, "vmr_tree_create");
	vmr_rcu_register_thread(vmr_tree_flavor(tree));

	for (i = 0; i < NREGIONS; i++) {
		uintptr_t s = BASE + (uintptr_t)i * MIB;

		snprintf(name, sizeof(name), "r%d", i);
		check(vmr_tree_insert(tree, s, s + MIB,
				      region_new(name, s, s + MIB)),
		      "map");
	}
	show("mapped:");

	memset(stats, 0, sizeof(stats));
	for (i = 0; i < NREADERS; i++) {
		stats[i].seed = 1234u + (unsigned int)i;
		if (pthread_create(&threads[i], NULL, reader, &stats[i])) {
			fprintf(stderr, "tree_demo: pthread_create failed\n");
			return 1;
		}
	}

	pause_a_little();
	split3(BASE + 2 * MIB, BASE + 2 * MIB + 256 * 1024,
	       BASE + 2 * MIB + 768 * 1024, BASE + 3 * MIB, "r2");
	show("split r2 in three:");

	pause_a_little();
	check(vmr_tree_remove(tree, BASE + 5 * MIB, BASE + 6 * MIB, NULL),
	      "unmap");
	show("unmapped r5:");

	pause_a_little();
	check(vmr_tree_insert(tree, BASE + 5 * MIB, BASE + 6 * MIB,
			      region_new("r5'", BASE + 5 * MIB,
					 BASE + 6 * MIB)),
	      "remap");
	show("mapped r5' in the hole:");

	ret = vmr_tree_insert(tree, BASE + 5 * MIB, BASE + 7 * MIB,
			      region_new("x", 0, 0));
	printf("%-34s %s (as expected)\n", "mapping over r5' and r6:",
	       strerror(-ret));

	pause_a_little();
	merged.start = BASE;
	merged.end = BASE + 4 * MIB;
	merged.value = region_new("r0-3", merged.start, merged.end);
	ret = vmr_tree_replace(tree, BASE, BASE + 4 * MIB, &merged, 1, NULL,
			       NULL);
	check(ret, "merge");
	printf("merged %d regions into one:\n", ret);
	show("");

	pause_a_little();
	__atomic_store_n(&stop, 1, __ATOMIC_RELAXED);
	for (i = 0; i < NREADERS; i++) {
		pthread_join(threads[i], NULL);
		printf("reader %d: %lu lookups (%lu hits), %lu layout walks, "
		       "%lu inconsistencies\n",
		       i, stats[i].lookups, stats[i].hits, stats[i].walks,
		       stats[i].bad);
		if (stats[i].bad)
			ret = -1;
	}

	vmr_tree_destroy(tree, NULL, NULL);
	vmr_rcu_unregister_thread(NULL);
	return ret < 0 ? 1 : 0;
}
