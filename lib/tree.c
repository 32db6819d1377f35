/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * libvmaretry - the region tree.
 *
 * Algorithm
 * ---------
 * A B+tree of wide nodes (16 slots: 16 entries in a leaf, 16 children in an
 * inner node, as the maple tree's range64 node) updated by copy-on-write:
 * an update never edits a node a reader can reach.  It copies every node it
 * changes together with the path above it, builds the new version privately
 * and publishes it with one release store of the root pointer (a persistent
 * tree published Bonsai-style, Clements, Kaashoek & Zeldovich, ASPLOS'12).
 * The maple tree publishes each rewritten subtree into its parent slot and
 * makes readers restart when they meet a dead node; publishing only at the
 * root costs a few more node copies per update (height - 1 extra, at most a
 * few hundred bytes each) but buys two things the region tree needs: any
 * number of removals and insertions become visible in one step, and a
 * reader never restarts: it walks one immutable snapshot.
 *
 * An update is a transaction.  Each one gets a new generation number; nodes
 * allocated by it carry that number and are mutable until it ends, all older
 * nodes are immutable.  node_cow() returns a private copy of an old node and
 * puts the old one on the transaction's retired list; a node the
 * transaction drops (a merged-away sibling, a collapsed root) is retired if
 * it is old, or marked dead if the transaction made it.  At the end:
 *   commit: store the new root (release), then hand the retired list to
 *           call_rcu() as one batch (one callback per update, not per node),
 *           and free the dead private nodes at once (no reader saw them);
 *   abort:  free every private node; the old version was never touched, so
 *           a failed allocation anywhere leaves the tree exactly as it was.
 * The call_rcu() callback does not free the batch: it pushes it on the
 * tree's recycle stack, from which the writer takes nodes before it calls
 * malloc().  Copy-on-write allocates and retires a few nodes per update;
 * recycling them keeps the writer out of the allocator, whose arena lock it
 * would otherwise share with the call_rcu thread freeing the last batch
 * (a third of an update's cycles went to that lock's futex in bench_tree).
 * The stack has one consumer (the writer, under its mutex) that takes it
 * whole with an exchange, so pushes need no ABA care; the writer keeps at
 * most SPARE_MAX nodes and frees the rest.
 *
 * Invariants (of every published version)
 *  I1. Leaf entries are sorted by start and do not overlap: e[j].end <=
 *      e[j+1].start, across leaves too.  So ends are sorted as well.
 *  I2. For child i of an inner node, every entry below it has
 *      pivot[i] <= start (i > 0) and end <= pivot[i+1] (i + 1 < count).
 *      The second half matters: after deletions a separator is only a
 *      bound, and an insertion whose range runs past the separator above
 *      its child raises that separator to its end while descending (legal:
 *      no entry of the next subtree starts below that end, or it would
 *      overlap).  With I2 a lookup of addr descends to the one leaf that
 *      can hold an entry containing addr, and a cursor placed at addr has
 *      every entry ending at or before addr behind it.
 *  I3. Every node but the root holds at least 8 slots; the root holds at
 *      least one entry or two children; an empty tree has a NULL root.  So
 *      the height is O(log n) and at most VMR_TREE_MAX_HEIGHT for any tree
 *      that fits in memory.
 *  I4. A published node is never written again, except its link and rcu
 *      fields, which readers never read, once it is retired.
 *
 * Ordering
 * --------
 * The root store is a release; readers load it with acquire (load_root()).
 * Everything a reader then reads was written before that store, or before
 * the store that published an older version still shared by this one (the
 * writer mutex orders successive writers), so plain loads suffice below the
 * root.  Retired nodes are passed to call_rcu() only after the root store,
 * so a reader that can still reach one is inside a read-side critical
 * section that began before it was unpublished: it is freed after that
 * section ends.  Dead private nodes were never published.
 *
 * Progress
 * --------
 * Readers are wait-free: a lookup is one descent (height <= 16, 16 slots a
 * node), a cursor step is O(1) amortised and O(height) at worst, and
 * neither ever retries.  Writers are serialised by a mutex and never wait
 * for readers (no synchronize_rcu() on an update).
 */
#include "internal.h"
#include "tsan.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <urcu/call-rcu.h>
#include <urcu/compiler.h>
#include <urcu/flavor.h>

#define SLOTS 16
#define MIN_FILL (SLOTS / 2)
#define SPARE_MAX 512 /* recycled nodes the writer keeps: ~230 KiB */

struct node {
	uint8_t leaf;
	uint8_t count;   /* entries (leaf) or children (inner) */
	uint8_t dead;    /* private to its transaction and dropped by it */
	uint64_t gen;    /* the transaction that allocated it */
	size_t size;     /* entries in the whole tree: meaningful on the root */
	union {
		struct {
			/* Searched first: see leaf_slot(). */
			uintptr_t end[SLOTS];
			uintptr_t start[SLOTS];
			void *value[SLOTS];
		} l;
		struct {
			/* pivot[0] is unused by searches. */
			uintptr_t pivot[SLOTS];
			struct node *child[SLOTS];
		} in;
	};
	/* Below: writer-only (I4).  node_cow() copies the fields above. */
	struct node *link; /* created, retired, recycled or spare list */
	struct vmr_tree *owner; /* set on the head of a retired batch */
	struct rcu_head rcu;
};

struct vmr_tree {
	/* Read by every lookup: nothing a writer stores often shares it. */
	_Atomic(struct node *) root;
	const struct rcu_flavor_struct *flavor;
	/* Pushed by call_rcu callbacks, taken whole by the writer. */
	_Atomic(struct node *) recycled __attribute__((aligned(64)));
	/* Writer side. */
	pthread_mutex_t lock __attribute__((aligned(64)));
	uint64_t gen;
	unsigned int height;
	unsigned int nr_spare;
	struct node *spare;
};

struct txn {
	struct vmr_tree *tree;
	struct node *root;
	uint64_t gen;
	size_t size;
	unsigned int height;
	struct node *created;
	struct node *retired;
};

/* Pairs with the release store in txn_commit(). */
static inline const struct node *load_root(const struct vmr_tree *tree)
{
	return atomic_load_explicit((_Atomic(struct node *) *)&tree->root,
				    memory_order_acquire);
}

/*
 * The searches below are plain loops whose exit depends on the keys, and
 * valgrind's branch simulator counts 7.4 mispredicted branches per lookup
 * in a 10000-region tree.  Branch-free searches were measured and lost
 * (bench_fault, bare_lookup at one thread, 2-vCPU VM, 2026-12-07):
 * a binary search with conditional moves took 149-150 ns against 96-104
 * ns with these loops, and a count of all sixteen compares 157-161 ns
 * against 98-99.  Our reading: a predicted branch lets the walk load the
 * next level before the compare is known, while a branch-free step must
 * wait for it.
 */

/* Index of the child of @n whose key range holds @key (I2). */
static inline unsigned int inner_slot(const struct node *n, uintptr_t key)
{
	unsigned int i = 1;

	while (i < n->count && n->in.pivot[i] <= key)
		i++;
	return i - 1;
}

/* Index of the first entry of leaf @n that ends above @addr, or count. */
static inline unsigned int leaf_slot(const struct node *n, uintptr_t addr)
{
	unsigned int j = 0;

	while (j < n->count && n->l.end[j] <= addr)
		j++;
	return j;
}

static inline void leaf_get(const struct node *n, unsigned int j,
			    struct vmr_tree_entry *entry)
{
	if (entry) {
		entry->start = n->l.start[j];
		entry->end = n->l.end[j];
		entry->value = n->l.value[j];
	}
}

void *vmr_tree_lookup(const struct vmr_tree *tree, uintptr_t addr,
		      struct vmr_tree_entry *entry)
{
	const struct node *n;
	unsigned int j;

	if (vmr_unlikely(!tree))
		return NULL;
	n = load_root(tree);
	if (!n)
		return NULL;
	while (!n->leaf) {
		n = n->in.child[inner_slot(n, addr)];
		VMR_DEBUG_POINT(VMR_DP_TREE_DESCEND, addr);
	}
	j = leaf_slot(n, addr);
	if (j == n->count || n->l.start[j] > addr)
		return NULL;
	leaf_get(n, j, entry);
	return n->l.value[j];
}

size_t vmr_tree_count(const struct vmr_tree *tree)
{
	const struct node *root = tree ? load_root(tree) : NULL;

	return root ? root->size : 0;
}

/* ---- cursor ------------------------------------------------------------ */

/*
 * The cursor is a path from the root to a leaf; slot[] holds the child taken
 * at each inner level and, at the leaf, the index of the entry after the gap
 * the cursor sits in (0..count).
 */
static void iter_seek(struct vmr_tree_iter *it, const struct node *root,
		      uintptr_t addr)
{
	const struct node *n = root;
	unsigned int h = 0;

	it->root = root;
	while (n) {
		VMR_BUG_ON(h == VMR_TREE_MAX_HEIGHT);
		it->node[h] = n;
		if (n->leaf) {
			it->slot[h++] = (uint8_t)leaf_slot(n, addr);
			break;
		}
		it->slot[h] = (uint8_t)inner_slot(n, addr);
		n = n->in.child[it->slot[h++]];
	}
	it->height = (uint8_t)h;
}

void vmr_tree_iter_start(struct vmr_tree_iter *iter,
			 const struct vmr_tree *tree, uintptr_t addr)
{
	iter_seek(iter, tree ? load_root(tree) : NULL, addr);
}

/* Move to the neighbouring leaf (dir +1 or -1); false if there is none. */
static bool iter_step_leaf(struct vmr_tree_iter *it, int dir)
{
	int top = it->height - 1, lvl;
	const struct node *n;

	/* Never true (iter_seek() bounds it); gcc -O3 cannot see that and
	 * warns of a write past it->slot[] below. */
	if (it->height > VMR_TREE_MAX_HEIGHT)
		return false;
	for (lvl = top - 1; lvl >= 0; lvl--) {
		n = it->node[lvl];
		if (dir > 0 ? it->slot[lvl] + 1 < n->count : it->slot[lvl] > 0)
			break;
	}
	if (lvl < 0)
		return false;
	it->slot[lvl] = (uint8_t)(it->slot[lvl] + dir);
	for (; lvl < top; lvl++) {
		n = ((const struct node *)it->node[lvl])
			    ->in.child[it->slot[lvl]];
		it->node[lvl + 1] = n;
		it->slot[lvl + 1] = dir > 0 ? 0 :
			(uint8_t)(n->leaf ? n->count : n->count - 1);
	}
	return true;
}

bool vmr_tree_iter_next(struct vmr_tree_iter *iter,
			struct vmr_tree_entry *entry)
{
	const struct node *leaf;
	unsigned int top;

	if (!iter->height)
		return false;
	top = iter->height - 1u;
	leaf = iter->node[top];
	if (iter->slot[top] == leaf->count) {
		if (!iter_step_leaf(iter, 1))
			return false;
		leaf = iter->node[top];
	}
	leaf_get(leaf, iter->slot[top], entry);
	iter->slot[top]++;
	return true;
}

bool vmr_tree_iter_prev(struct vmr_tree_iter *iter,
			struct vmr_tree_entry *entry)
{
	const struct node *leaf;
	unsigned int top;

	if (!iter->height)
		return false;
	top = iter->height - 1u;
	if (iter->slot[top] == 0) {
		if (!iter_step_leaf(iter, -1))
			return false;
	}
	leaf = iter->node[top];
	iter->slot[top]--;
	leaf_get(leaf, iter->slot[top], entry);
	return true;
}

void *vmr_tree_find_intersection(const struct vmr_tree *tree, uintptr_t start,
				 uintptr_t end, struct vmr_tree_entry *entry)
{
	struct vmr_tree_iter it;
	struct vmr_tree_entry e;

	if (!tree || start >= end)
		return NULL;
	vmr_tree_iter_start(&it, tree, start);
	if (!vmr_tree_iter_next(&it, &e) || e.start >= end)
		return NULL;
	if (entry)
		*entry = e;
	return e.value;
}

/* ---- transactions ------------------------------------------------------ */

static void txn_begin(struct txn *t, struct vmr_tree *tree)
{
	t->tree = tree;
	t->root = (struct node *)load_root(tree);
	t->gen = ++tree->gen;
	t->size = t->root ? t->root->size : 0;
	t->height = tree->height;
	t->created = NULL;
	t->retired = NULL;
}

/* A node from the spare list, refilled from the recycle stack, or malloc. */
static struct node *node_alloc(struct vmr_tree *tree)
{
	struct node *n;

	if (vmr_alloc_injected_failure())
		return NULL;
	if (!tree->spare) {
		/* Pairs with the release in recycle_batch(). */
		n = atomic_exchange_explicit(&tree->recycled, NULL,
					     memory_order_acquire);
		for (struct node *next; n; n = next) {
			next = n->link;
			if (tree->nr_spare >= SPARE_MAX) {
				vmr_free(n);
				continue;
			}
			n->link = tree->spare;
			tree->spare = n;
			tree->nr_spare++;
		}
	}
	n = tree->spare;
	if (!n)
		return vmr_alloc_plain(sizeof(*n), 0);
	tree->spare = n->link;
	tree->nr_spare--;
	return n;
}

/* Give back a node no reader has seen (or none can see any more). */
static void node_free(struct vmr_tree *tree, struct node *n)
{
	if (tree->nr_spare >= SPARE_MAX) {
		vmr_free(n);
		return;
	}
	n->link = tree->spare;
	tree->spare = n;
	tree->nr_spare++;
}

static struct node *node_new(struct txn *t, bool leaf)
{
	struct node *n = node_alloc(t->tree);

	if (!n)
		return NULL;
	n->leaf = leaf;
	n->count = 0;
	n->dead = 0;
	n->gen = t->gen;
	n->size = 0;
	n->link = t->created;
	t->created = n;
	return n;
}

/* A node no longer in the version being built. */
static void node_drop(struct txn *t, struct node *n)
{
	if (n->gen == t->gen) {
		n->dead = 1;
	} else {
		n->link = t->retired;
		t->retired = n;
	}
}

/* @n itself if this transaction made it, else a private copy of it. */
static struct node *node_cow(struct txn *t, struct node *n)
{
	struct node *c;

	if (n->gen == t->gen)
		return n;
	c = node_alloc(t->tree);
	if (!c)
		return NULL;
	memcpy(c, n, offsetof(struct node, link));
	c->gen = t->gen;
	c->link = t->created;
	t->created = c;
	node_drop(t, n);
	return c;
}

/* call_rcu callback: a grace period has passed, readers are gone. */
static void recycle_batch(struct rcu_head *head)
{
	struct node *first = caa_container_of(head, struct node, rcu);
	struct node *last = first, *top;
	struct vmr_tree *tree;

	vmr_tsan_callback_enter(head);
	tree = first->owner;
	while (last->link)
		last = last->link;
	top = atomic_load_explicit(&tree->recycled, memory_order_relaxed);
	do {
		last->link = top;
		/* Pairs with the acquire exchange in node_alloc(). */
	} while (!atomic_compare_exchange_weak_explicit(
		&tree->recycled, &top, first, memory_order_release,
		memory_order_relaxed));
}

static void txn_abort(struct txn *t)
{
	struct node *n, *next;

	for (n = t->created; n; n = next) {
		next = n->link;
		node_free(t->tree, n);
	}
}

static void txn_commit(struct txn *t)
{
	struct vmr_tree *tree = t->tree;

	if (t->root) {
		/* I4: only a node of this transaction may be written. */
		VMR_BUG_ON(t->root->gen != t->gen);
		t->root->size = t->size;
	}
	/* Pairs with the acquire in load_root(). */
	atomic_store_explicit(&tree->root, t->root, memory_order_release);
	tree->height = t->height;
}

/* After txn_commit() and after any last look at the old version. */
static void txn_release(struct txn *t)
{
	struct node *n, *next;

	for (n = t->created; n; n = next) {
		next = n->link;
		if (n->dead)
			node_free(t->tree, n);
	}
	if (t->retired) {
		t->retired->owner = t->tree;
		vmr_call_rcu(t->tree->flavor, &t->retired->rcu,
			     recycle_batch);
	}
}

/* ---- insertion --------------------------------------------------------- */

static void leaf_put(struct node *n, unsigned int j,
		     const struct vmr_tree_entry *e)
{
	unsigned int tail = n->count - j;

	memmove(&n->l.end[j + 1], &n->l.end[j], tail * sizeof(uintptr_t));
	memmove(&n->l.start[j + 1], &n->l.start[j], tail * sizeof(uintptr_t));
	memmove(&n->l.value[j + 1], &n->l.value[j], tail * sizeof(void *));
	n->l.start[j] = e->start;
	n->l.end[j] = e->end;
	n->l.value[j] = e->value;
	n->count++;
}

static void inner_put(struct node *n, unsigned int i, uintptr_t pivot,
		      struct node *child)
{
	unsigned int tail = n->count - i;

	memmove(&n->in.pivot[i + 1], &n->in.pivot[i], tail * sizeof(uintptr_t));
	memmove(&n->in.child[i + 1], &n->in.child[i], tail * sizeof(void *));
	n->in.pivot[i] = pivot;
	n->in.child[i] = child;
	n->count++;
}

/* Move slots [from, count) of @n to the front of the empty node @r. */
static void move_tail(struct node *n, struct node *r, unsigned int from)
{
	unsigned int k = n->count - from;

	if (n->leaf) {
		memcpy(r->l.end, &n->l.end[from], k * sizeof(uintptr_t));
		memcpy(r->l.start, &n->l.start[from], k * sizeof(uintptr_t));
		memcpy(r->l.value, &n->l.value[from], k * sizeof(void *));
	} else {
		memcpy(r->in.pivot, &n->in.pivot[from], k * sizeof(uintptr_t));
		memcpy(r->in.child, &n->in.child[from], k * sizeof(void *));
	}
	r->count = (uint8_t)k;
	n->count = (uint8_t)from;
}

/* Lowest key of @n: its first start, or the bound kept in pivot[0]. */
static uintptr_t node_low(const struct node *n)
{
	return n->leaf ? n->l.start[0] : n->in.pivot[0];
}

struct split {
	struct node *right; /* new right sibling, or NULL if no split */
	uintptr_t sep;      /* its lower bound */
};

/*
 * Put slot @pos (an entry, or a child with its pivot) into the writable node
 * @n, splitting it in two when it is full.
 */
static int node_put(struct txn *t, struct node *n, unsigned int pos,
		    const struct vmr_tree_entry *e, uintptr_t pivot,
		    struct node *child, struct split *sp)
{
	struct node *dst = n;

	sp->right = NULL;
	if (n->count == SLOTS) {
		sp->right = node_new(t, n->leaf);
		if (!sp->right)
			return -ENOMEM;
		move_tail(n, sp->right, MIN_FILL);
		if (pos > MIN_FILL) {
			dst = sp->right;
			pos -= MIN_FILL;
		}
	}
	if (dst->leaf)
		leaf_put(dst, pos, e);
	else
		inner_put(dst, pos, pivot, child);
	if (sp->right)
		sp->sep = node_low(sp->right);
	return 0;
}

static int insert_rec(struct txn *t, struct node *n,
		      const struct vmr_tree_entry *e, struct split *sp)
{
	struct split csp;
	struct node *c;
	unsigned int i;
	int err;

	if (n->leaf)
		return node_put(t, n, leaf_slot(n, e->start), e, 0, NULL, sp);

	i = inner_slot(n, e->start);
	/* I2: the separator above child i must not fall inside the entry. */
	if (i + 1 < n->count && n->in.pivot[i + 1] < e->end)
		n->in.pivot[i + 1] = e->end;
	c = node_cow(t, n->in.child[i]);
	if (!c)
		return -ENOMEM;
	n->in.child[i] = c;
	err = insert_rec(t, c, e, &csp);
	if (err || !csp.right) {
		sp->right = NULL;
		return err;
	}
	return node_put(t, n, i + 1, NULL, csp.sep, csp.right, sp);
}

/* Insert @e, which overlaps nothing in the version being built. */
static int txn_insert(struct txn *t, const struct vmr_tree_entry *e)
{
	struct node *root, *top;
	struct split sp;
	int err;

	if (!t->root) {
		root = node_new(t, true);
		if (!root)
			return -ENOMEM;
		leaf_put(root, 0, e);
		t->root = root;
		t->height = 1;
		t->size++;
		return 0;
	}
	root = node_cow(t, t->root);
	if (!root)
		return -ENOMEM;
	t->root = root;
	err = insert_rec(t, root, e, &sp);
	if (err)
		return err;
	if (sp.right) {
		/* Unreachable for any tree that fits in memory (I3). */
		VMR_BUG_ON(t->height == VMR_TREE_MAX_HEIGHT);
		top = node_new(t, false);
		if (!top)
			return -ENOMEM;
		top->count = 2;
		top->in.pivot[0] = node_low(root);
		top->in.child[0] = root;
		top->in.pivot[1] = sp.sep;
		top->in.child[1] = sp.right;
		t->root = top;
		t->height++;
	}
	t->size++;
	return 0;
}

/* ---- deletion ---------------------------------------------------------- */

static void slot_remove(struct node *n, unsigned int j)
{
	unsigned int tail = n->count - j - 1u;

	if (n->leaf) {
		memmove(&n->l.end[j], &n->l.end[j + 1],
			tail * sizeof(uintptr_t));
		memmove(&n->l.start[j], &n->l.start[j + 1],
			tail * sizeof(uintptr_t));
		memmove(&n->l.value[j], &n->l.value[j + 1],
			tail * sizeof(void *));
	} else {
		memmove(&n->in.pivot[j], &n->in.pivot[j + 1],
			tail * sizeof(uintptr_t));
		memmove(&n->in.child[j], &n->in.child[j + 1],
			tail * sizeof(void *));
	}
	n->count--;
}

/* Append every slot of @r to @l; @sep is the bound between them. */
static void node_append(struct node *l, const struct node *r, uintptr_t sep)
{
	unsigned int k = r->count, at = l->count;

	if (l->leaf) {
		memcpy(&l->l.end[at], r->l.end, k * sizeof(uintptr_t));
		memcpy(&l->l.start[at], r->l.start, k * sizeof(uintptr_t));
		memcpy(&l->l.value[at], r->l.value, k * sizeof(void *));
	} else {
		memcpy(&l->in.pivot[at], r->in.pivot, k * sizeof(uintptr_t));
		memcpy(&l->in.child[at], r->in.child, k * sizeof(void *));
		l->in.pivot[at] = sep;
	}
	l->count = (uint8_t)(at + k);
}

/*
 * Move one slot between the writable siblings @l and @r (children i and
 * i + 1 of @n): the last of @l to the front of @r if @to_right, else the
 * first of @r to the back of @l.  Keeps I2 by moving the separator.
 */
static void shift_slot(struct node *n, unsigned int i, struct node *l,
		       struct node *r, bool to_right)
{
	struct vmr_tree_entry e = { 0, 0, NULL };
	uintptr_t *sep = &n->in.pivot[i + 1];

	if (to_right) {
		unsigned int last = l->count - 1u;

		if (l->leaf) {
			leaf_get(l, last, &e);
			leaf_put(r, 0, &e);
			*sep = e.start;
		} else {
			/* The bound of r's old first child. */
			r->in.pivot[0] = *sep;
			inner_put(r, 0, l->in.pivot[last], l->in.child[last]);
			*sep = l->in.pivot[last];
		}
		l->count--;
	} else {
		if (l->leaf) {
			leaf_get(r, 0, &e);
			leaf_put(l, l->count, &e);
		} else {
			inner_put(l, l->count, *sep, r->in.child[0]);
		}
		slot_remove(r, 0);
		*sep = node_low(r);
	}
}

/*
 * Child @i of the writable inner node @n is writable and one slot short of
 * MIN_FILL: borrow a slot from a sibling that has one to spare, or merge it
 * with a sibling.
 */
static int rebalance(struct txn *t, struct node *n, unsigned int i)
{
	unsigned int li = i > 0 ? i - 1 : i; /* the pair is li, li + 1 */
	struct node *l, *r;
	bool left_spare = i > 0 && n->in.child[i - 1]->count > MIN_FILL;
	bool right_spare = i + 1 < n->count &&
			   n->in.child[i + 1]->count > MIN_FILL;

	if (!left_spare && right_spare)
		li = i;
	if (left_spare || right_spare) {
		l = node_cow(t, n->in.child[li]);
		r = l ? node_cow(t, n->in.child[li + 1]) : NULL;
		if (!r)
			return -ENOMEM;
		n->in.child[li] = l;
		n->in.child[li + 1] = r;
		shift_slot(n, li, l, r, li < i);
		return 0;
	}
	/* Both together fit: (MIN_FILL - 1) + MIN_FILL < SLOTS. */
	l = node_cow(t, n->in.child[li]);
	if (!l)
		return -ENOMEM;
	n->in.child[li] = l;
	r = n->in.child[li + 1];
	node_append(l, r, n->in.pivot[li + 1]);
	node_drop(t, r);
	slot_remove(n, li + 1);
	return 0;
}

static int delete_rec(struct txn *t, struct node *n, uintptr_t start)
{
	struct node *c;
	unsigned int i;
	int err;

	if (n->leaf) {
		i = leaf_slot(n, start);
		VMR_BUG_ON(i == n->count || n->l.start[i] != start);
		slot_remove(n, i);
		return 0;
	}
	i = inner_slot(n, start);
	c = node_cow(t, n->in.child[i]);
	if (!c)
		return -ENOMEM;
	n->in.child[i] = c;
	err = delete_rec(t, c, start);
	if (err || c->count >= MIN_FILL)
		return err;
	return rebalance(t, n, i);
}

/* Delete the entry that starts at @start, which is in the version built. */
static int txn_delete(struct txn *t, uintptr_t start)
{
	struct node *root = node_cow(t, t->root);
	int err;

	if (!root)
		return -ENOMEM;
	t->root = root;
	err = delete_rec(t, root, start);
	if (err)
		return err;
	if (!root->leaf && root->count == 1) {
		/* The survivor of a merge: private to this transaction. */
		t->root = root->in.child[0];
		node_drop(t, root);
		t->height--;
	} else if (root->leaf && root->count == 0) {
		t->root = NULL;
		node_drop(t, root);
		t->height = 0;
	}
	t->size--;
	return 0;
}

/* ---- updates ----------------------------------------------------------- */

enum update_mode {
	UPDATE_INSERT,  /* the span must hold no entry: -EEXIST */
	UPDATE_REMOVE,  /* the span must be exactly one entry: -ENOENT */
	UPDATE_REPLACE, /* entries in the span must not straddle it: -EINVAL */
};

/* Check the run of entries meeting [start, end) against @mode. */
static int check_run(const struct node *root, uintptr_t start, uintptr_t end,
		     enum update_mode mode)
{
	struct vmr_tree_iter it;
	struct vmr_tree_entry e;
	size_t n = 0;

	iter_seek(&it, root, start);
	while (vmr_tree_iter_next(&it, &e) && e.start < end) {
		if (mode == UPDATE_INSERT)
			return -EEXIST;
		if (mode == UPDATE_REMOVE &&
		    (e.start != start || e.end != end))
			return -ENOENT;
		if (e.start < start || e.end > end)
			return -EINVAL;
		n++;
	}
	if (mode == UPDATE_REMOVE && n == 0)
		return -ENOENT;
	return 0;
}

/*
 * Every update: remove the run of entries inside [start, end), insert @add
 * (already validated), publish, report what was removed.
 */
static int tree_update(struct vmr_tree *tree, uintptr_t start, uintptr_t end,
		       const struct vmr_tree_entry *add, size_t nr_add,
		       enum update_mode mode, vmr_tree_entry_fn *removed,
		       void *arg)
{
	struct vmr_tree_iter it;
	struct vmr_tree_entry e;
	const struct node *old;
	struct txn t;
	int err, nr_removed = 0;
	size_t k;

	pthread_mutex_lock(&tree->lock);
	old = load_root(tree);
	err = check_run(old, start, end, mode);
	if (err)
		goto out;

	/* The old version stays intact (I4): walk it while building. */
	txn_begin(&t, tree);
	iter_seek(&it, old, start);
	while (vmr_tree_iter_next(&it, &e) && e.start < end) {
		err = txn_delete(&t, e.start);
		if (err)
			goto abort;
		nr_removed++;
	}
	for (k = 0; k < nr_add; k++) {
		err = txn_insert(&t, &add[k]);
		if (err)
			goto abort;
	}
	VMR_DEBUG_POINT(VMR_DP_TREE_PUBLISH, start);
	if (t.root != old)
		txn_commit(&t);
	if (removed) {
		/* Retired nodes are not queued for freeing yet. */
		iter_seek(&it, old, start);
		while (vmr_tree_iter_next(&it, &e) && e.start < end)
			removed(&e, arg);
	}
	VMR_DEBUG_POINT(VMR_DP_TREE_RETIRE, start);
	txn_release(&t);
	err = nr_removed;
	goto out;
abort:
	txn_abort(&t);
out:
	pthread_mutex_unlock(&tree->lock);
	return err;
}

int vmr_tree_insert(struct vmr_tree *tree, uintptr_t start, uintptr_t end,
		    void *value)
{
	struct vmr_tree_entry e = { start, end, value };

	if (!tree || !value || start >= end)
		return -EINVAL;
	return tree_update(tree, start, end, &e, 1, UPDATE_INSERT, NULL, NULL);
}

static void take_value(const struct vmr_tree_entry *e, void *arg)
{
	*(void **)arg = e->value;
}

int vmr_tree_remove(struct vmr_tree *tree, uintptr_t start, uintptr_t end,
		    void **valuep)
{
	int ret;

	if (!tree || start >= end)
		return -EINVAL;
	ret = tree_update(tree, start, end, NULL, 0, UPDATE_REMOVE,
			  valuep ? take_value : NULL, valuep);
	return ret < 0 ? ret : 0;
}

int vmr_tree_replace(struct vmr_tree *tree, uintptr_t start, uintptr_t end,
		     const struct vmr_tree_entry *add, size_t nr_add,
		     vmr_tree_entry_fn *removed, void *arg)
{
	size_t k;

	if (!tree || start >= end || (nr_add && !add))
		return -EINVAL;
	for (k = 0; k < nr_add; k++) {
		if (!add[k].value || add[k].start >= add[k].end ||
		    add[k].start < start || add[k].end > end ||
		    (k > 0 && add[k - 1].end > add[k].start))
			return -EINVAL;
	}
	return tree_update(tree, start, end, add, nr_add, UPDATE_REPLACE,
			   removed, arg);
}

/* ---- white-box validation --------------------------------------------- */

struct validate {
	unsigned int leaf_depth;
	size_t entries;
	uintptr_t prev_end;
	bool any;
};

/* Entries below @n must lie in [lo, hi] (hi inclusive: UINTPTR_MAX ends). */
static const char *validate_rec(const struct node *n, uintptr_t lo,
				uintptr_t hi, unsigned int depth, bool root,
				struct validate *v)
{
	const char *why;
	unsigned int i;

	if (n->count > SLOTS)
		return "node over full";
	if (!root && n->count < MIN_FILL)
		return "non-root node under MIN_FILL (I3)";
	if (root && n->count < (n->leaf ? 1u : 2u))
		return "root too small (I3)";
	if (n->dead)
		return "dead node published";
	if (n->leaf) {
		if (v->leaf_depth && v->leaf_depth != depth)
			return "leaves at different depths";
		v->leaf_depth = depth;
		for (i = 0; i < n->count; i++) {
			if (n->l.start[i] >= n->l.end[i])
				return "empty or inverted entry";
			if (!n->l.value[i])
				return "NULL value";
			if (v->any && n->l.start[i] < v->prev_end)
				return "entries overlap or out of order (I1)";
			if (n->l.start[i] < lo || n->l.end[i] > hi)
				return "entry outside its separators (I2)";
			v->prev_end = n->l.end[i];
			v->any = true;
			v->entries++;
		}
		return NULL;
	}
	for (i = 0; i < n->count; i++) {
		uintptr_t clo = i ? n->in.pivot[i] : lo;
		uintptr_t chi = i + 1u < n->count ? n->in.pivot[i + 1] : hi;

		if (i && (n->in.pivot[i] < lo || n->in.pivot[i] > hi))
			return "separator outside parent bounds (I2)";
		if (i + 1u < n->count && n->in.pivot[i] >= n->in.pivot[i + 1] &&
		    i)
			return "separators not increasing";
		why = validate_rec(n->in.child[i], clo, chi, depth + 1, false,
				   v);
		if (why)
			return why;
	}
	return NULL;
}

const char *vmr_tree_validate(const struct vmr_tree *tree)
{
	const struct node *root = load_root(tree);
	struct validate v = { 0, 0, 0, false };
	const char *why;

	if (!root)
		return tree->height ? "empty tree with a height" : NULL;
	why = validate_rec(root, 0, UINTPTR_MAX, 1, true, &v);
	if (why)
		return why;
	if (v.leaf_depth != tree->height)
		return "height out of date";
	if (v.entries != root->size)
		return "count out of date";
	return NULL;
}

/* ---- life cycle -------------------------------------------------------- */

int vmr_tree_create(const struct rcu_flavor_struct *flavor,
		    struct vmr_tree **treep)
{
	struct vmr_tree *tree;
	int err;

	if (!treep)
		return -EINVAL;
	tree = vmr_alloc_aligned(sizeof(*tree));
	if (!tree)
		return -ENOMEM;
	memset(tree, 0, sizeof(*tree));
	err = pthread_mutex_init(&tree->lock, NULL);
	if (err) {
		vmr_free(tree);
		return -err;
	}
	atomic_init(&tree->root, NULL);
	tree->flavor = vmr_flavor_or_default(flavor);
	*treep = tree;
	return 0;
}

static void free_nodes(struct node *n)
{
	unsigned int i;

	if (!n->leaf) {
		for (i = 0; i < n->count; i++)
			free_nodes(n->in.child[i]);
	}
	vmr_free(n);
}

static void free_list(struct node *n)
{
	for (struct node *next; n; n = next) {
		next = n->link;
		vmr_free(n);
	}
}

void vmr_tree_destroy(struct vmr_tree *tree, vmr_tree_entry_fn *fn, void *arg)
{
	struct node *root;
	struct vmr_tree_iter it;
	struct vmr_tree_entry e;

	if (!tree)
		return;
	/* Recycling queued by earlier updates must be done with the tree. */
	tree->flavor->barrier();
	root = atomic_load_explicit(&tree->root, memory_order_relaxed);
	if (fn) {
		iter_seek(&it, root, 0);
		while (vmr_tree_iter_next(&it, &e))
			fn(&e, arg);
	}
	if (root)
		free_nodes(root);
	/* Pairs with the release in recycle_batch(). */
	free_list(atomic_load_explicit(&tree->recycled, memory_order_acquire));
	free_list(tree->spare);
	pthread_mutex_destroy(&tree->lock);
	vmr_free(tree);
}

const struct rcu_flavor_struct *vmr_tree_flavor(const struct vmr_tree *tree)
{
	return tree ? tree->flavor : NULL;
}
