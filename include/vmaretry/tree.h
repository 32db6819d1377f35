/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * libvmaretry - the region tree: an RCU-protected ordered map of
 * non-overlapping half-open ranges [start, end) of uintptr_t to entries.
 *
 * This is the user-space counterpart of the kernel's maple tree in RCU mode
 * (lib/maple_tree.c with MT_FLAGS_USE_RCU), the tree every page fault looks
 * its address up in.  Readers run under an RCU read-side critical section of
 * the tree's flavor and take no lock and write no shared memory.  Writers are
 * serialised by a mutex inside the tree; each update is published with one
 * pointer store, so a reader sees the tree entirely before or entirely after
 * it, however many entries it removes and inserts: a split, a merge or a
 * MAP_FIXED-style replacement is never seen half done, with two entries
 * overlapping or a hole the update does not leave.
 *
 * Values are opaque non-NULL pointers (NULL means "no entry", as in the
 * maple tree).  The tree never dereferences them; freeing a removed value
 * after a grace period is the caller's business.
 */
#ifndef VMARETRY_TREE_H
#define VMARETRY_TREE_H

#include <vmaretry/common.h>

VMR_BEGIN_DECLS

/* Opaque; create with vmr_tree_create(). */
struct vmr_tree;

/**
 * struct vmr_tree_entry - one range of the tree and its value, as copied out
 * @start: first address of the range
 * @end: first address after the range (start < end)
 * @value: the caller's pointer; never NULL
 */
struct vmr_tree_entry {
	uintptr_t start;
	uintptr_t end;
	void *value;
};

/* Called once per entry by vmr_tree_replace() and vmr_tree_destroy(). */
typedef void vmr_tree_entry_fn(const struct vmr_tree_entry *entry, void *arg);

/* Deepest tree the iterator can walk; far beyond what memory can hold. */
#define VMR_TREE_MAX_HEIGHT 16

/**
 * struct vmr_tree_iter - a cursor over one snapshot of a tree
 *
 * Lives on the caller's stack; its fields are private.  It walks the
 * version of the tree that was current when vmr_tree_iter_start() ran and
 * is valid only inside the RCU read-side critical section in which it was
 * started (or, for a writer, while it holds every writer out).
 */
struct vmr_tree_iter {
	/* private: */
	const void *root;
	const void *node[VMR_TREE_MAX_HEIGHT];
	uint8_t slot[VMR_TREE_MAX_HEIGHT];
	uint8_t height;
	uint8_t reserved8[7];
	uintptr_t reserved[3];
};

/**
 * vmr_tree_create() - allocate an empty tree
 * @flavor: liburcu flavor its readers use, or NULL for urcu-memb
 *          (vmr_rcu_default_flavor()); kept for the tree's life
 * @treep: where to store the new tree
 *
 * Context: any thread.  May sleep.
 * Ownership: the caller owns the tree and frees it with vmr_tree_destroy().
 * Return: 0; -EINVAL if @treep is NULL; -ENOMEM.
 */
int vmr_tree_create(const struct rcu_flavor_struct *flavor,
		    struct vmr_tree **treep);

/**
 * vmr_tree_destroy() - free a tree and everything it still holds
 * @tree: the tree, or NULL (nothing is done)
 * @fn: if not NULL, called once for each entry still in the tree, in order
 * @arg: passed to @fn
 *
 * Waits for the tree's pending call_rcu() frees (the flavor's rcu_barrier()),
 * then frees every node.  Values are not freed: @fn may free them.
 *
 * Context: a thread registered with the tree's flavor, outside any read-side
 * critical section and not a call_rcu callback.  May sleep.
 * Concurrency: none; no reader may still reach the tree (unpublish it and let
 * a grace period pass first) and no writer may be running.
 * Ownership: the tree is gone on return.
 */
void vmr_tree_destroy(struct vmr_tree *tree, vmr_tree_entry_fn *fn, void *arg);

/**
 * vmr_tree_flavor() - the flavor the tree was created with
 * @tree: the tree
 *
 * Context: any thread.
 * Return: the flavor, to pass to vmr_rcu_read_lock() and friends; NULL if
 * @tree is NULL.
 */
const struct rcu_flavor_struct *vmr_tree_flavor(const struct vmr_tree *tree);

/**
 * vmr_tree_lookup() - find the entry containing an address (mtree_load())
 * @tree: the tree
 * @addr: the address
 * @entry: if not NULL and an entry is found, receives a copy of it
 *
 * Context: inside an RCU read-side critical section of the tree's flavor, or
 * a writer that keeps every other writer out.  Never sleeps, takes no lock,
 * writes no shared memory.  O(log n).
 * Concurrency: any number of readers and one writer.
 * Ordering: sees every update published before the lookup began and none
 * published after it ended; the copy in @entry is of one published version.
 * Ownership: the value stays valid until the end of the read-side critical
 * section, unless the caller's own protocol keeps it longer.
 * Return: the value of the entry with start <= @addr < end, or NULL if none
 * (or @tree is NULL).
 */
void *vmr_tree_lookup(const struct vmr_tree *tree, uintptr_t addr,
		      struct vmr_tree_entry *entry);

/**
 * vmr_tree_find_intersection() - first entry intersecting a range
 *                                (find_vma_intersection())
 * @tree: the tree
 * @start: first address of the range
 * @end: first address after it
 * @entry: if not NULL and an entry is found, receives a copy of it
 *
 * Context, Concurrency, Ordering, Ownership: as vmr_tree_lookup().
 * Return: the value of the lowest entry with start < @end and end > @start,
 * or NULL if there is none, @start >= @end, or @tree is NULL.
 */
void *vmr_tree_find_intersection(const struct vmr_tree *tree, uintptr_t start,
				 uintptr_t end, struct vmr_tree_entry *entry);

/**
 * vmr_tree_count() - number of entries
 * @tree: the tree, or NULL (counts as empty)
 *
 * Context, Concurrency: as vmr_tree_lookup().  O(1).
 * Ordering: the count of one published version.
 * Return: the number of entries.
 */
size_t vmr_tree_count(const struct vmr_tree *tree);

/**
 * vmr_tree_iter_start() - take a snapshot and place a cursor in it
 * @iter: the cursor to set up
 * @tree: the tree, or NULL (the cursor walks an empty tree)
 * @addr: where to place the cursor
 *
 * The cursor sits between two entries: after every entry that ends at or
 * before @addr and before every other one.  So vmr_tree_iter_next() first
 * returns the entry containing @addr, or else the first one above it, and
 * vmr_tree_iter_prev() first returns the last entry ending at or below @addr.
 * Start at 0 to walk forward from the first entry, at UINTPTR_MAX to walk
 * backward from the last.
 *
 * Context, Concurrency: as vmr_tree_lookup().  O(log n).
 * Ordering: the cursor walks the version current when this call loaded it,
 * whatever is published later.
 */
void vmr_tree_iter_start(struct vmr_tree_iter *iter,
			 const struct vmr_tree *tree, uintptr_t addr);

/**
 * vmr_tree_iter_next() - step the cursor over the next entry
 * @iter: a started cursor
 * @entry: receives a copy of the entry stepped over (may be NULL)
 *
 * Context: the read-side critical section the cursor was started in.
 * O(1) amortised, O(log n) at worst.
 * Return: true and the entry, or false at the end (the cursor stays there).
 */
bool vmr_tree_iter_next(struct vmr_tree_iter *iter,
			struct vmr_tree_entry *entry);

/**
 * vmr_tree_iter_prev() - step the cursor back over the previous entry
 * @iter: a started cursor
 * @entry: receives a copy of the entry stepped over (may be NULL)
 *
 * Context: as vmr_tree_iter_next().
 * Return: true and the entry, or false at the start (the cursor stays there).
 */
bool vmr_tree_iter_prev(struct vmr_tree_iter *iter,
			struct vmr_tree_entry *entry);

/**
 * vmr_tree_insert() - add one entry (mtree_insert_range())
 * @tree: the tree
 * @start: first address of the range
 * @end: first address after it
 * @value: the value, not NULL
 *
 * Context: a thread registered with the tree's flavor (the replaced nodes are
 * freed through its call_rcu()), outside any read-side critical section
 * unless the flavor allows call_rcu() there.  May sleep on the writer mutex.
 * O(log n).
 * Concurrency: serialised with every other update by the tree's writer mutex;
 * readers run on.  A caller that must look up and then update atomically
 * holds its own lock around both (the space lock does).
 * Ordering: release: a reader that finds the entry sees every store the
 * caller made before this call.
 * Return: 0; -EINVAL if @tree or @value is NULL or @start >= @end;
 * -EEXIST if the range overlaps an entry; -ENOMEM.  On error the tree is
 * unchanged.
 */
int vmr_tree_insert(struct vmr_tree *tree, uintptr_t start, uintptr_t end,
		    void *value);

/**
 * vmr_tree_remove() - remove the entry that is exactly [@start, @end)
 * @tree: the tree
 * @start: first address of the entry
 * @end: first address after it
 * @valuep: if not NULL, receives the removed value
 *
 * Context, Concurrency, Ordering: as vmr_tree_insert().
 * Ownership: readers may still hold the removed value until a grace period
 * has passed.
 * Return: 0; -EINVAL if @tree is NULL or @start >= @end; -ENOENT if no entry
 * has exactly this range; -ENOMEM (nodes are copied, never edited in place).
 * On error the tree is unchanged.
 */
int vmr_tree_remove(struct vmr_tree *tree, uintptr_t start, uintptr_t end,
		    void **valuep);

/**
 * vmr_tree_replace() - remove a run of entries and insert others, atomically
 * @tree: the tree
 * @start: first address of the span being rewritten
 * @end: first address after it
 * @add: the entries to insert, sorted by start, non-overlapping, each inside
 *       [@start, @end) with a non-NULL value; may be NULL if @nr_add is 0
 * @nr_add: number of entries in @add
 * @removed: if not NULL, called for each removed entry, in order, after the
 *           new version is published and before this call returns; it must
 *           not call back into the tree's update calls
 * @arg: passed to @removed
 *
 * Removes every entry that intersects [@start, @end) (each must lie wholly
 * inside it) and inserts @add, as one update that no reader sees half done.
 * This is how a split, a merge or a MAP_FIXED mapping is published: to split
 * [a, c) at b, replace [a, c) with { [a, b), [b, c) }.
 *
 * Context, Concurrency, Ordering: as vmr_tree_insert().  O((k + m) log n)
 * for k entries removed and m inserted.
 * Ownership: @add is copied; readers may still hold the removed values until
 * a grace period has passed.
 * Return: the number of entries removed (0 or more); -EINVAL if @tree is
 * NULL, @start >= @end, an entry straddles @start or @end, or @add is not
 * as described; -ENOMEM.  On error the tree is unchanged.
 */
int vmr_tree_replace(struct vmr_tree *tree, uintptr_t start, uintptr_t end,
		     const struct vmr_tree_entry *add, size_t nr_add,
		     vmr_tree_entry_fn *removed, void *arg);

VMR_END_DECLS

#endif /* VMARETRY_TREE_H */
