/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The fuzz target's reference model: what libvmaretry must do, written as
 * plainly as possible from the contracts of include/vmaretry/ headers, so that
 * the fuzzer (fuzz_space.c) can check the library against it call by call.
 *
 * An address space is modelled as an array of pages over a window of
 * M_PAGES pages (each page names the region slot it belongs to, or none),
 * not as a tree or a sorted list: a split, a cut or a replacement is then
 * just a loop over pages, with nothing to get wrong.  The region tree is
 * modelled as a sorted array scanned linearly.  The fault engine is the
 * retry state machine of vmr_handle_fault()'s kernel-doc, step by step,
 * with the handler's legal results as that comment lists them.  Errors are
 * modelled as the set of -errno values the contract allows for a call
 * (several may apply at once and the contract does not rank them); the
 * library must return one of them and leave the model's state unchanged.
 *
 * Regions carry an id in their private data.  Regions of ops with open()
 * get a fresh id in every piece cut from them (the fuzz target's open()
 * hands them out), so the model learns which pieces were cut from the log
 * of open() calls and checks that log against the pieces the update must
 * have cut: exactly one open() per piece, from the right region.
 */
#ifndef FZ_MODEL_H
#define FZ_MODEL_H

#include <vmaretry.h>

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Pages in the window every region of a fuzzed space lies in. */
#define M_PAGES 512

/* Sets of return values (bit per value): what the contract allows. */
#define M_OK (1u << 0)
#define M_EINVAL (1u << 1)
#define M_E2BIG (1u << 2)
#define M_EEXIST (1u << 3)
#define M_ENOMEM (1u << 4)
#define M_EDEADLK (1u << 5)
#define M_EPERM (1u << 6)
#define M_ENOENT (1u << 7)
#define M_EBUSY (1u << 8)
#define M_EAGAIN (1u << 9)
#define M_ENOSYS (1u << 10)
#define M_OTHER (1u << 31)

unsigned int m_errbit(int rc);
/* "0", "-EINVAL", ...: for messages. */
const char *m_errname(int rc);
/* "{0,-ENOMEM}": for messages; a static buffer. */
const char *m_setname(unsigned int set);

/* What a region's ops are (decides fault, open and close). */
enum m_ops_kind {
	M_OPS_NONE = 0,  /* no ops: a fault gives SIGBUS */
	M_OPS_FAULT = 1, /* ->fault only: pieces keep their id */
	M_OPS_FULL = 2,  /* ->fault, ->open, ->close: pieces get new ids */
};

struct m_region {
	uintptr_t start, end;
	unsigned int prot;
	uint64_t offset;
	unsigned int policy; /* the region's own; 0: the space's */
	unsigned int ops;    /* enum m_ops_kind */
	uintptr_t id;        /* private data */
};

/* One open() call, as the fuzz target logged it. */
struct m_open {
	uintptr_t start, end;   /* the new piece */
	uint64_t offset;        /* its offset when open() ran */
	uintptr_t from_id;      /* private data of the region cut */
	uintptr_t initial_id;   /* the piece's private data on entry */
	uintptr_t new_id;       /* the id open() gave it */
	bool write_locked;      /* the space lock was held for write */
	bool published;         /* the piece was findable already */
};

/* An update: map, unmap or protect, with its argument variants. */
enum m_upd_op { U_MAP = 0, U_UNMAP = 1, U_PROTECT = 2 };

/* How vmr_map() is handed its descriptor (struct vmr_region_desc). */
enum m_desc_size {
	D_FULL = 0,  /* sizeof */
	D_OLD = 1,   /* up to private_data: policy taken as default */
	D_SHORT = 2, /* too small: -EINVAL */
	D_BIG0 = 3,  /* larger, zero tail: fine */
	D_BIGX = 4,  /* larger, non-zero tail: -E2BIG */
};

/* How the ops of a map are given. */
enum m_ops_arg {
	O_NONE = 0,       /* NULL, size 0 */
	O_NULL_SIZED = 1, /* NULL, size sizeof: "or NULL" */
	O_FULL = 2,       /* fault+open+close */
	O_FAULT = 3,      /* fault only */
	O_FULL_SHORT = 4, /* fault+open+close, size covering fault only */
	O_FULL_ZERO = 5,  /* fault+open+close, size 0 */
	O_BIG0 = 6,       /* fault+open+close, larger with a zero tail */
	O_BIGX = 7,       /* larger with a non-zero tail: -E2BIG */
	O_NR
};

struct m_update {
	unsigned int op; /* enum m_upd_op */
	uintptr_t start;
	size_t len;
	unsigned int prot;
	/* U_MAP: */
	uint64_t offset;
	unsigned int policy;
	unsigned int ops_arg;   /* enum m_ops_arg */
	unsigned int desc_size; /* enum m_desc_size */
	unsigned int flags;
	uintptr_t id; /* private data given */
	bool null_space;
	bool null_desc;
};

/* The space lock as held by the (only) fuzzing thread. */
enum m_lock_state { L_FREE = 0, L_READ = 1, L_WRITE = 2 };

/* A VMA-range read lock handle the fuzz target keeps (struct copies). */
struct m_handle {
	bool slot;      /* lock->slot is set */
	uint32_t gen;   /* the hold it was filled by */
};

#define M_HANDLES 3 /* the lock itself, a copy, a zeroed one */

struct m_space {
	uintptr_t base; /* first address of the window */
	size_t pg;      /* page size */
	unsigned int granularity;
	unsigned int policy; /* resolved: never VMR_POLICY_DEFAULT */
	unsigned int vma_retry_max, space_retry_max; /* resolved */
	bool time_faults;
	bool shut_down;

	int16_t page[M_PAGES]; /* slot, or -1 */
	bool used[M_PAGES];
	struct m_region slot[M_PAGES];

	/* Locks held by the fuzzing thread. */
	unsigned int lock;    /* enum m_lock_state */
	unsigned int readers; /* read holds, if L_READ */
	bool marked[M_PAGES]; /* region slot write-locked in this hold */
	uintptr_t mark_start[M_PAGES], mark_end[M_PAGES];
	bool rl_held;
	uint32_t rl_gen; /* hold count: bumps on every range lock */
	uintptr_t rl_start, rl_end;
	struct m_handle handle[M_HANDLES];

	/* What the counters must say. */
	struct vmr_stats st;
	/* Counters the model can only bound: see m_update(). */
	bool resync_write_locks;

	/* Scratch for planning an update. */
	size_t nr_cuts;
	struct m_region cuts[M_PAGES + 2];
	int16_t cut_from[M_PAGES + 2];
};

struct m_config {
	uintptr_t base;
	size_t pg;
	unsigned int granularity, policy; /* policy as given: 0 = default */
	unsigned int vma_retry_max, space_retry_max; /* as given: 0 = default */
	bool time_faults;
};

void m_space_init(struct m_space *m, const struct m_config *c);

/* The region slot containing @addr, or -1. */
int m_find(const struct m_space *m, uintptr_t addr);
/* Regions, in address order, into @out (up to M_PAGES); returns the count. */
size_t m_regions(const struct m_space *m, const struct m_region **out);

/*
 * vmr_space_create(): the set of results the contract allows for a config
 * given as @cfg (or NULL) of @size bytes, @extra_nonzero meaning a caller's
 * larger struct with non-zero bytes past ours.
 */
unsigned int m_create_expect(const struct vmr_space_config *cfg, size_t size,
			     bool extra_nonzero, bool null_spacep,
			     bool injecting);

/*
 * Whether an update can be represented (a map that may succeed must lie in
 * the window); the fuzz target skips those that cannot.
 */
bool m_update_representable(const struct m_space *m, const struct m_update *u);
/*
 * Whether running @u now would deadlock the fuzzing thread (it holds the
 * space lock for read, or a range read lock overlapping @u's range): such
 * calls are outside the contract and never made.
 */
bool m_update_would_deadlock(const struct m_space *m, const struct m_update *u);
/*
 * Check an update the library returned @rc for, given the open() calls it
 * made, and apply it to the model if it succeeded.  NULL, or what is wrong.
 */
const char *m_update(struct m_space *m, const struct m_update *u, int rc,
		     const struct m_open *opens, size_t nr_opens,
		     bool injecting);

/* ---- the space lock and VMA-range locks -------------------------------- */

enum m_lock_op {
	K_READ_LOCK,
	K_READ_TRYLOCK,
	K_READ_UNLOCK,
	K_WRITE_LOCK,
	K_WRITE_TRYLOCK,
	K_WRITE_UNLOCK,
	K_DOWNGRADE,
	K_IS_WRITE_LOCKED,
	K_NR
};

/* The call would deadlock (outside the contract): never made. */
bool m_lock_would_deadlock(const struct m_space *m, unsigned int op);
/*
 * The result the call must give (an -errno, or 0/1 for bool calls), then
 * applies it.  @null: called with a NULL space.
 */
int m_lock(struct m_space *m, unsigned int op, bool null);

/*
 * vmr_range_read_lock(@addr, @len) into handle @h: the result, and on
 * success the held range in *@start, *@end and the slot in *@slot.
 */
int m_range_read_lock(struct m_space *m, uintptr_t addr, size_t len,
		      unsigned int h, bool null_space, bool null_lock,
		      uintptr_t *start, uintptr_t *end, int *slot);
/* vmr_range_read_unlock() of handle @h (or NULL). */
int m_range_read_unlock(struct m_space *m, unsigned int h, bool null);
/* vmr_range_write_lock(): would it deadlock (wait for our own lock)? */
bool m_range_write_would_deadlock(const struct m_space *m, uintptr_t start,
				  uintptr_t end);
int m_range_write_lock(struct m_space *m, uintptr_t start, uintptr_t end,
		       bool null_space);
/* vmr_space_destroy(): would it refuse (-EBUSY)? */
bool m_busy(const struct m_space *m);

/* ---- the fault engine --------------------------------------------------- */

/* What a scripted handler does on one call (fz_act.kind). */
enum fz_act_kind {
	A_RET,     /* return .ret, lock untouched */
	A_IO,      /* r = release_for_io(); return r ? r | .ret : .alt */
	A_IO_DONE, /* r = release_for_io(); return r ? COMPLETED | .ret : .alt */
	A_REL,     /* vmr_fault_release(); return .ret */
	A_REL2,    /* vmr_fault_release() twice (misuse); return .ret */
	A_SHUT,    /* vmr_space_shutdown(); release if .release; return .ret */
	A_NR
};

struct fz_act {
	unsigned int kind;
	vmr_fault_t ret, alt;
	bool release; /* A_SHUT */
	bool probe;   /* first try vmr_range_read_lock() at the address */
	bool update;  /* then, if the lock is released, run .upd */
	struct m_update upd;
};

#define FZ_MAX_ACTS 6

/* A handler script: call n runs act[min(n, nr - 1)]. */
struct fz_script {
	unsigned int nr;
	struct fz_act act[FZ_MAX_ACTS];
};

/* One handler call as seen from inside the handler. */
struct fz_call {
	unsigned int flags, lock;
	uintptr_t address, real_address, handler_data;
	unsigned int policy;
	bool allow_first;
	bool ctx_ok, space_ok;
	struct m_region region; /* what vmf->region says (lock held) */
	int probe_rc;
	vmr_fault_t io_ret;
	int rel_rc, rel2_rc;
	int upd_rc;
	bool upd_run;
	size_t open_first, nr_opens; /* the update's open() calls */
	unsigned int lock_after;
	vmr_fault_t ret;
};

#define FZ_MAX_CALLS 32

struct fz_log {
	unsigned int nr;
	struct fz_call call[FZ_MAX_CALLS];
	bool overflow;
};

/*
 * What a handler call does to its lock and the space: the fuzz target runs
 * the script on the library through one of these, the model on itself.
 */
struct fz_env {
	void *arg;
	unsigned int (*lock_now)(void *arg);
	vmr_fault_t (*release_for_io)(void *arg);
	int (*release)(void *arg);
	void (*shutdown)(void *arg);
	int (*probe)(void *arg);
	/* Runs the update; logs its open() calls in *first, *nr. */
	int (*update)(void *arg, const struct m_update *u, size_t *first,
		      size_t *nr);
};

/* Run one action of a script in @env, filling the rest of @call. */
void fz_run_act(const struct fz_act *a, const struct fz_env *env,
		struct fz_call *call);

/* The results the model's handler call refuses (bad results). */
bool m_result_is_bad(vmr_fault_t res, unsigned int flags,
		     unsigned int held_before, unsigned int lock_after,
		     bool shut_down);

struct m_fault_out {
	int rc;             /* vmr_handle_fault()'s return */
	vmr_fault_t result; /* *result */
	struct fz_log log;  /* the handler calls */
	bool bad;           /* some call returned a bad result */
	const char *err;    /* a mismatch found while replaying updates */
};

/*
 * vmr_handle_fault(@addr, @flags) on the model, the handler running
 * @script.  The updates a handler makes are checked against the open()
 * calls the library logged for the same call of its handler (@lib_log,
 * @opens): NULL while predicting only (then ids are made up).
 */
void m_fault(struct m_space *m, uintptr_t addr, unsigned int flags,
	     const struct fz_script *script, const struct fz_log *lib_log,
	     const struct m_open *opens, size_t nr_opens,
	     struct m_fault_out *out);

/* ---- the region tree ---------------------------------------------------- */

#define MT_MAX 1100

struct mt_entry {
	uintptr_t start, end;
	void *value;
};

struct m_tree {
	size_t n;
	struct mt_entry e[MT_MAX];
};

/* The entry containing @addr, or -1. */
long mt_lookup(const struct m_tree *t, uintptr_t addr);
/* The first entry meeting [start, end), or -1. */
long mt_intersect(const struct m_tree *t, uintptr_t start, uintptr_t end);
/* Where a cursor started at @addr sits: entries before it. */
size_t mt_cursor(const struct m_tree *t, uintptr_t addr);
/* The expected result of each update (applied on success). */
int mt_insert(struct m_tree *t, uintptr_t start, uintptr_t end, void *value);
int mt_remove(struct m_tree *t, uintptr_t start, uintptr_t end, void **value);
/*
 * vmr_tree_replace(): returns the count removed or -EINVAL; on success the
 * removed entries are copied to @removed (room for MT_MAX).
 */
int mt_replace(struct m_tree *t, uintptr_t start, uintptr_t end,
	       const struct vmr_tree_entry *add, size_t nr_add,
	       struct mt_entry *removed);
/* Would the update fit the model's array? */
bool mt_room(const struct m_tree *t, size_t nr_add);

#endif /* FZ_MODEL_H */
