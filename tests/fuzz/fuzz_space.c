/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The fuzz target: LLVMFuzzerTestOneInput() decodes its bytes into a
 * sequence of API calls on a fresh object, makes each call on libvmaretry
 * and on the reference model (model.c), and abort()s with a message at the
 * first result the model does not allow, so that libFuzzer (or the replay
 * driver, replay.c) reports it as a crash with the input that caused it.
 *
 * The first byte picks the object: a space (vmr_space_create() from a
 * decoded config, then maps, unmaps, protects, lookups, space and range
 * locks, and faults whose handler runs a script decoded from the input:
 * results, release_for_io, release, shutdown, probes and updates from
 * inside the handler) or a bare region tree (insert, remove, replace,
 * lookup, intersection, iteration both ways).  After every call the whole
 * region list (every page of the model's window, the region count) and
 * the statistics counters are compared with the model's.  Each input ends
 * by releasing what it holds and destroying the object, and checks that
 * every region with a close() callback was closed exactly once: so each
 * input is independent, deterministic and leaves nothing behind.
 *
 * Everything runs on one thread, so the model never has to guess an
 * interleaving; concurrency is the stress tests' job.  Calls outside the
 * contract (ones that would deadlock the only thread) are never made.
 * Lock misuse returns -EPERM in a normal build and aborts by design in a
 * debug_checks build (VMR_DEBUG): there the target makes only the misuse
 * calls that return an error without being misuse (NULL arguments) and
 * fz_run_act() turns the handler results the engine would abort on into
 * legal ones (see model.c).
 */
#include "internal.h" /* vmr_alloc_fail_after(): allocation failures */
#include "mm.h"       /* vmr_space_lock_is_idle(): the space lock's state */
#include "model.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* ---- input decoding ---------------------------------------------------- */

struct rd {
	const uint8_t *p;
	size_t n;
};

static unsigned int get8(struct rd *r)
{
	if (!r->n)
		return 0;
	r->n--;
	return *r->p++;
}

static unsigned int get16(struct rd *r)
{
	unsigned int lo = get8(r);

	return lo | get8(r) << 8;
}

static uint64_t get64(struct rd *r)
{
	uint64_t v = 0;

	for (int i = 0; i < 8; i++)
		v |= (uint64_t)get8(r) << (8 * i);
	return v;
}

static void fail(const char *fmt, ...)
	__attribute__((format(printf, 1, 2), noreturn));

static void fail(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "fuzz_space: model mismatch: ");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	abort();
}

#define CHECK(cond, ...)                                                       \
	do {                                                                  \
		if (!(cond))                                                  \
			fail(__VA_ARGS__);                                    \
	} while (0)

/* ---- state of one input ------------------------------------------------ */

#define MAX_OPS 64
#define MAX_OPENS 8192
/* Region ids: one per map and per open(); bounded by the ops' budget. */
#define MAX_IDS (1u << 16)

struct fz {
	struct rd rd;
	struct vmr_space *space;
	struct m_space m;
	struct vmr_range_lock lk[M_HANDLES];
	struct fz_script script;
	struct fz_log log;
	struct vmr_fault *vmf; /* the fault whose handler runs */
	struct m_open opens[MAX_OPENS];
	size_t nr_opens;
	uintptr_t next_id;
	bool logging; /* open() calls are expected: log them */
};

static struct fz fz;

/* FZ_TRACE=1 in the environment: name each op (to read a reproducer). */
static bool trace;

/*
 * close() runs on liburcu's call_rcu thread, on the destroying thread or
 * on the updating one: counts are kept under a mutex.
 */
static pthread_mutex_t close_mu = PTHREAD_MUTEX_INITIALIZER;
static uint8_t closes[MAX_IDS];
static bool must_close[MAX_IDS];
static uintptr_t close_bad_id; /* an id out of range or closed twice */

static uintptr_t close_error(void)
{
	uintptr_t id;

	pthread_mutex_lock(&close_mu);
	id = close_bad_id;
	pthread_mutex_unlock(&close_mu);
	return id;
}

static unsigned int closes_of(uintptr_t id)
{
	unsigned int c;

	pthread_mutex_lock(&close_mu);
	c = closes[id];
	pthread_mutex_unlock(&close_mu);
	return c;
}

/* ---- region callbacks ---------------------------------------------------- */

static vmr_fault_t fz_fault(struct vmr_fault *vmf);

static void fz_open(struct vmr_region *region, const struct vmr_region *from)
{
	struct m_open *o;
	struct vmr_space *space = vmr_region_space(region);
	const struct rcu_flavor_struct *fl = vmr_space_flavor(space);
	uintptr_t id = fz.next_id++;

	if (!fz.logging || fz.nr_opens == MAX_OPENS || id >= MAX_IDS)
		fail("open() of [%#lx, %#lx) outside an update, or too many",
		     (unsigned long)vmr_region_start(region),
		     (unsigned long)vmr_region_end(region));
	o = &fz.opens[fz.nr_opens++];
	o->start = vmr_region_start(region);
	o->end = vmr_region_end(region);
	o->offset = vmr_region_offset(region);
	o->from_id = (uintptr_t)vmr_region_private(from);
	o->initial_id = (uintptr_t)vmr_region_private(region);
	o->new_id = id;
	o->write_locked = vmr_space_is_write_locked(space);
	vmr_rcu_read_lock(fl);
	o->published = vmr_space_find_region(space, o->start) == region;
	vmr_rcu_read_unlock(fl);
	vmr_region_set_private(region, (void *)id);
}

static void fz_close(struct vmr_region *region)
{
	uintptr_t id = (uintptr_t)vmr_region_private(region);

	pthread_mutex_lock(&close_mu);
	if (id == 0 || id >= MAX_IDS || closes[id])
		close_bad_id = id ? id : (uintptr_t)-1;
	else
		closes[id]++;
	pthread_mutex_unlock(&close_mu);
}

static const struct vmr_region_ops ops_full = {
	.fault = fz_fault, .open = fz_open, .close = fz_close,
};
static const struct vmr_region_ops ops_fault = { .fault = fz_fault };

/* A caller's newer ops struct: one more member, zero or not. */
struct big_ops {
	struct vmr_region_ops ops;
	void (*extra)(void);
};

static void not_called(void)
{
	abort();
}

static const struct big_ops ops_big0 = {
	{ .fault = fz_fault, .open = fz_open, .close = fz_close }, NULL
};
static const struct big_ops ops_bigx = {
	{ .fault = fz_fault, .open = fz_open, .close = fz_close }, not_called
};

/* A caller's newer descriptor. */
struct big_desc {
	struct vmr_region_desc d;
	uint64_t extra;
};

/* ---- addresses, lengths, updates --------------------------------------- */

/*
 * Decoders: most byte values give a valid argument near the start of the
 * window, so that regions meet and cut each other; the top values give the
 * bad ones (unaligned, zero, wrapping, unknown bits, far away).  Uniform
 * decoding made almost every map fail its argument checks.
 */
static uintptr_t dec_addr(struct rd *r, const struct m_space *m)
{
	unsigned int k = get8(r);
	long idx = (long)(k % 72) - 4;

	if (k < 0xf0)
		return m->base + (uintptr_t)idx * m->pg;
	switch (k & 15) {
	case 10:
		return m->base + (uintptr_t)idx * m->pg + 1 +
		       get8(r) % (m->pg > 1 ? m->pg - 1 : 1); /* unaligned */
	case 11:
		return 0;
	case 12:
		return UINTPTR_MAX - (uintptr_t)(get8(r) % 4) * m->pg -
		       (m->pg - 1); /* a top page */
	case 13:
		return UINTPTR_MAX - get8(r);
	default: /* anywhere in the window, or just around it */
		idx = (long)(get16(r) % (M_PAGES + 16)) - 8;
		return m->base + (uintptr_t)idx * m->pg;
	}
}

static size_t dec_len(struct rd *r, const struct m_space *m)
{
	unsigned int k = get8(r);

	if (k < 0xe0)
		return (size_t)(k % 16 + 1) * m->pg;
	switch (k & 7) {
	case 0:
		return 0;
	case 1:
		return (size_t)(get8(r) % 8 + 1) * m->pg + 1 + get8(r) % 7;
	case 2:
		return SIZE_MAX - (size_t)(get8(r) % 4) * m->pg - (m->pg - 1);
	default: /* up to the whole window and a little more */
		return (size_t)(get16(r) % (M_PAGES + 16)) * m->pg;
	}
}

static unsigned int dec_prot(struct rd *r)
{
	unsigned int p = get8(r);

	return p < 0xf8 ? p & 7 : p; /* rarely an unknown bit */
}

static const unsigned char good_ops[8] = {
	O_NONE, O_FULL, O_FULL, O_FAULT, O_FULL_SHORT, O_FULL_ZERO, O_BIG0,
	O_FULL,
};

static void dec_update(struct rd *r, const struct m_space *m,
		       struct m_update *u, bool in_handler)
{
	unsigned int v;

	memset(u, 0, sizeof(*u));
	u->op = get8(r) % 3;
	u->start = dec_addr(r, m);
	u->len = dec_len(r, m);
	u->prot = dec_prot(r);
	v = get8(r);
	u->null_space = !in_handler && v == 0xff;
	if (u->op != U_MAP)
		return;
	u->null_desc = !in_handler && v == 0xfe;
	u->flags = v & VMR_MAP_REPLACE;
	if (v >= 0xf8)
		u->flags |= 1u << (v % 4 + 1); /* unknown */
	v = get8(r);
	if (v < 0xf0)
		u->offset = (uint64_t)(v % 32) * m->pg;
	else if (v < 0xf8)
		u->offset = get64(r) & ~(uint64_t)(m->pg - 1); /* may wrap */
	else
		u->offset = get64(r) | 1; /* unaligned */
	v = get8(r);
	u->policy = v < 0xf8 ? v % 4 : 4 + v % 4;
	v = get8(r);
	u->ops_arg = v < 0xf0 ? good_ops[v % 8] : v % O_NR;
	v = get8(r);
	u->desc_size = v < 0xf0 ? (v % 8 == 0 ? D_OLD : v % 8 == 1 ? D_BIG0 :
							 D_FULL) :
				  v % 5;
	u->id = fz.next_id++;
}

/* Run @u on the library; log its open() calls. */
static int lib_update(const struct m_update *u, size_t *first, size_t *nr)
{
	struct vmr_space *s = u->null_space ? NULL : fz.space;
	struct big_desc bd;
	const struct vmr_region_ops *ops = NULL;
	size_t ops_size = 0, dsize;
	int rc;

	*first = fz.nr_opens;
	fz.logging = true;
	switch (u->op) {
	case U_UNMAP:
		rc = vmr_unmap(s, u->start, u->len);
		break;
	case U_PROTECT:
		rc = vmr_protect(s, u->start, u->len, u->prot);
		break;
	default:
		switch (u->ops_arg) {
		case O_NULL_SIZED: ops_size = sizeof(*ops); break;
		case O_FULL: ops = &ops_full; ops_size = sizeof(*ops); break;
		case O_FAULT: ops = &ops_fault; ops_size = sizeof(*ops); break;
		case O_FULL_SHORT:
			ops = &ops_full;
			ops_size = offsetof(struct vmr_region_ops, open);
			break;
		case O_FULL_ZERO: ops = &ops_full; break;
		case O_BIG0: ops = &ops_big0.ops; ops_size = sizeof(ops_big0); break;
		case O_BIGX: ops = &ops_bigx.ops; ops_size = sizeof(ops_bigx); break;
		default: break;
		}
		memset(&bd, 0, sizeof(bd));
		bd.d = (struct vmr_region_desc){
			.start = u->start, .len = u->len, .prot = u->prot,
			.offset = u->offset, .ops = ops, .ops_size = ops_size,
			.private_data = (void *)u->id, .policy = u->policy,
		};
		switch (u->desc_size) {
		case D_OLD:
			dsize = offsetof(struct vmr_region_desc, private_data) +
				sizeof(void *);
			bd.d.policy = 7; /* past the caller's struct: unread */
			break;
		case D_SHORT:
			dsize = offsetof(struct vmr_region_desc, ops_size);
			break;
		case D_BIG0: dsize = sizeof(bd); break;
		case D_BIGX: dsize = sizeof(bd); bd.extra = 1; break;
		default: dsize = sizeof(bd.d); break;
		}
		rc = vmr_map(s, u->null_desc ? NULL : &bd.d, dsize, u->flags);
		break;
	}
	fz.logging = false;
	*nr = fz.nr_opens - *first;
	if (trace)
		fprintf(stderr, "fuzz_space: %s [%#lx, +%#zx) prot %#x flags %#x "
			"ops %u: %d, %zu open() calls\n",
			u->op == U_MAP ? "map" : u->op == U_UNMAP ? "unmap" :
							       "protect",
			(unsigned long)u->start, u->len, u->prot, u->flags,
			u->ops_arg, rc, *nr);
	return rc;
}

/* Ids of FULL-ops regions the model holds must all be closed in the end. */
static void note_must_close(void)
{
	const struct m_region *rs[M_PAGES];
	size_t n = m_regions(&fz.m, rs);

	for (size_t i = 0; i < n; i++)
		if (rs[i]->ops == M_OPS_FULL && rs[i]->id < MAX_IDS)
			must_close[rs[i]->id] = true;
}

/* ---- whole-state comparison --------------------------------------------- */

static void check_region(const struct vmr_region *r, const struct m_region *e,
			 const char *what, uintptr_t addr)
{
	CHECK(r, "%s %#lx: no region, model has [%#lx, %#lx)", what,
	      (unsigned long)addr, (unsigned long)e->start,
	      (unsigned long)e->end);
	CHECK(vmr_region_start(r) == e->start && vmr_region_end(r) == e->end &&
		      vmr_region_prot(r) == e->prot &&
		      vmr_region_offset(r) == e->offset &&
		      (uintptr_t)vmr_region_private(r) == e->id &&
		      !vmr_region_is_detached(r),
	      "%s %#lx: region [%#lx, %#lx) prot %u offset %#llx id %lu, "
	      "model [%#lx, %#lx) prot %u offset %#llx id %lu",
	      what, (unsigned long)addr, (unsigned long)vmr_region_start(r),
	      (unsigned long)vmr_region_end(r), vmr_region_prot(r),
	      (unsigned long long)vmr_region_offset(r),
	      (unsigned long)(uintptr_t)vmr_region_private(r),
	      (unsigned long)e->start, (unsigned long)e->end, e->prot,
	      (unsigned long long)e->offset, (unsigned long)e->id);
}

static void check_find(uintptr_t addr, const char *what)
{
	const struct vmr_region *r = vmr_space_find_region(fz.space, addr);
	int sl = m_find(&fz.m, addr);

	if (sl < 0)
		CHECK(!r, "%s %#lx: region [%#lx, %#lx) where the model has none",
		      what, (unsigned long)addr,
		      (unsigned long)vmr_region_start(r),
		      (unsigned long)vmr_region_end(r));
	else
		check_region(r, &fz.m.slot[sl], what, addr);
}

static void check_stats(void)
{
	struct vmr_stats st, *e = &fz.m.st;
	uint64_t hist = 0;

	CHECK(vmr_space_stats(fz.space, &st, sizeof(st)) == 0, "stats failed");
	if (fz.m.resync_write_locks) {
		/* An injected -ENOMEM: the model cannot tell whether the
		 * update got as far as the space lock. */
		CHECK(st.space_write_locks >= e->space_write_locks,
		      "space_write_locks went down");
		e->space_write_locks = st.space_write_locks;
		fz.m.resync_write_locks = false;
	}
	for (unsigned int i = 0; i < VMR_HIST_BUCKETS; i++)
		hist += st.fault_latency_hist[i];
#define F(f)                                                                   \
	CHECK(st.f == e->f, "stats: " #f " %llu, model %llu",                 \
	      (unsigned long long)st.f, (unsigned long long)e->f)
	F(vma_lock_success);
	F(vma_lock_abort);
	F(vma_lock_retry);
	F(vma_lock_miss);
	F(faults);
	F(vma_retries);
	F(vma_retries_exhausted);
	F(space_lock_faults);
	F(space_retries);
	F(retry_disallowed);
	F(result_ok);
	F(result_nopage);
	F(result_major);
	F(result_completed);
	F(result_sigsegv);
	F(result_sigbus);
	F(result_oom);
	F(result_unfinished);
	F(bad_results);
	F(page_wait_sleeps);
	F(page_reads);
	F(space_read_locks);
	F(space_write_locks);
#undef F
	CHECK(hist == e->fault_latency_hist[0],
	      "stats: %llu faults timed, model %llu", (unsigned long long)hist,
	      (unsigned long long)e->fault_latency_hist[0]);
}

/* Every page of the window (and a little around it), and the count. */
static void check_space(void)
{
	const struct rcu_flavor_struct *fl = vmr_space_flavor(fz.space);
	const struct m_region *rs[M_PAGES];
	size_t n = m_regions(&fz.m, rs);

	vmr_rcu_read_lock(fl);
	for (long i = -2; i < M_PAGES + 2; i++)
		check_find(fz.m.base + (uintptr_t)i * fz.m.pg, "page");
	for (size_t i = 0; i < n; i++)
		check_find(rs[i]->end - 1, "last byte");
	CHECK(vmr_space_count_regions(fz.space) == n,
	      "%zu regions, model %zu", vmr_space_count_regions(fz.space), n);
	vmr_rcu_read_unlock(fl);
	/* No hold may leak or vanish: the next update would hang on it. */
	CHECK(vmr_space_is_write_locked(fz.space) == (fz.m.lock == L_WRITE) &&
		      vmr_space_lock_is_idle(&fz.space->lock) ==
			      (fz.m.lock == L_FREE),
	      "space lock: write-locked %d, idle %d; model state %u",
	      vmr_space_is_write_locked(fz.space),
	      vmr_space_lock_is_idle(&fz.space->lock), fz.m.lock);
	CHECK(vmr_space_is_shut_down(fz.space) == fz.m.shut_down,
	      "shut down: library %d, model %d",
	      vmr_space_is_shut_down(fz.space), fz.m.shut_down);
	CHECK(close_error() == 0, "close() of region id %ld: twice or unknown",
	      (long)close_error());
	check_stats();
}

/* ---- ops on a space ------------------------------------------------------ */

static void op_update(struct rd *r)
{
	struct m_update u;
	unsigned int inj = get8(r);
	bool injecting = inj >= 0xe0;
	size_t first, nr;
	const char *err;
	int rc;

	dec_update(r, &fz.m, &u, false);
	if (!m_update_representable(&fz.m, &u) ||
	    m_update_would_deadlock(&fz.m, &u))
		return;
	if (injecting)
		vmr_alloc_fail_after(inj & 7);
	rc = lib_update(&u, &first, &nr);
	if (injecting)
		vmr_alloc_fail_after(-1);
	err = m_update(&fz.m, &u, rc, fz.opens + first, nr, injecting);
	CHECK(!err, "%s", err);
	if (rc) {
		/* "a piece cut by an update that then failed ... from that
		 * update's caller before it returns" */
		for (size_t i = first; i < first + nr; i++)
			CHECK(closes_of(fz.opens[i].new_id) == 1,
			      "piece [%#lx, %#lx) of a failed update not closed",
			      (unsigned long)fz.opens[i].start,
			      (unsigned long)fz.opens[i].end);
	}
	/* The new region of a failed map was never a region: it may or may
	 * not have been closed, but not twice (close_bad_id). */
	note_must_close();
}

/* Whether the lock call would be misuse (-EPERM): aborts under VMR_DEBUG. */
static bool lock_misuse(unsigned int op)
{
	switch (op) {
	case K_READ_UNLOCK: return fz.m.lock != L_READ;
	case K_WRITE_UNLOCK:
	case K_DOWNGRADE: return fz.m.lock != L_WRITE;
	default: return false;
	}
}

static void op_lock(struct rd *r)
{
	unsigned int op = get8(r) % K_NR;
	bool null = get8(r) >= 0xf0;
	struct vmr_space *s = null ? NULL : fz.space;
	int rc = 0, want;

	if (m_lock_would_deadlock(&fz.m, op))
		return;
#ifdef VMR_DEBUG
	if (!null && lock_misuse(op))
		return;
#else
	(void)lock_misuse;
#endif
	switch (op) {
	case K_READ_LOCK: rc = vmr_space_read_lock(s); break;
	case K_READ_TRYLOCK: rc = vmr_space_read_trylock(s); break;
	case K_READ_UNLOCK: rc = vmr_space_read_unlock(s); break;
	case K_WRITE_LOCK: rc = vmr_space_write_lock(s); break;
	case K_WRITE_TRYLOCK: rc = vmr_space_write_trylock(s); break;
	case K_WRITE_UNLOCK: rc = vmr_space_write_unlock(s); break;
	case K_DOWNGRADE: rc = vmr_space_write_downgrade(s); break;
	case K_IS_WRITE_LOCKED: rc = vmr_space_is_write_locked(s); break;
	}
	want = m_lock(&fz.m, op, null);
	CHECK(rc == want, "space lock op %u%s: %d, model %d", op,
	      null ? " (NULL)" : "", rc, want);
}

static bool handle_live(unsigned int h)
{
	return fz.m.handle[h].slot && fz.m.rl_held &&
	       fz.m.handle[h].gen == fz.m.rl_gen;
}

static void op_range(struct rd *r)
{
	unsigned int k = get8(r) % 4, h = get8(r) % M_HANDLES;
	bool null = get8(r) >= 0xf0, null_lock;
	struct vmr_range_lock tmp;
	uintptr_t addr, s, e;
	size_t len;
	int rc, want, sl = -1;

	switch (k) {
	case 0: /* read lock */
		addr = dec_addr(r, &fz.m);
		len = get8(r) & 1 ? dec_len(r, &fz.m) : get8(r);
		null_lock = get8(r) == 0xff;
		memset(&tmp, 0, sizeof(tmp));
		rc = vmr_range_read_lock(null ? NULL : fz.space, addr, len,
					 null_lock ? NULL : &tmp);
		want = m_range_read_lock(&fz.m, addr, len, 0, null, null_lock,
					 &s, &e, &sl);
		CHECK(rc == want, "range read lock %#lx+%zu: %s, model %s",
		      (unsigned long)addr, len, m_errname(rc),
		      m_errname(want));
		if (rc == 0) {
			CHECK(tmp.start == s && tmp.end == e,
			      "range read lock holds [%#lx, %#lx), model "
			      "[%#lx, %#lx)",
			      (unsigned long)tmp.start, (unsigned long)tmp.end,
			      (unsigned long)s, (unsigned long)e);
			check_region(tmp.region, &fz.m.slot[sl],
				     "range read lock", addr);
			fz.lk[0] = tmp;
		}
		break;
	case 1: /* a copy of the handle */
		fz.lk[1] = fz.lk[0];
		fz.m.handle[1] = fz.m.handle[0];
		break;
	case 2: /* unlock (handle 2 is never filled) */
#ifdef VMR_DEBUG
		if (!null && !handle_live(h))
			return;
#endif
		rc = vmr_range_read_unlock(null ? NULL : &fz.lk[h]);
		want = m_range_read_unlock(&fz.m, h, null);
		CHECK(rc == want, "range read unlock of handle %u: %s, model %s",
		      h, m_errname(rc), m_errname(want));
		break;
	default: /* write lock */
		s = dec_addr(r, &fz.m);
		e = get8(r) & 1 ? dec_addr(r, &fz.m) : s + dec_len(r, &fz.m);
		if (m_range_write_would_deadlock(&fz.m, s, e))
			return;
#ifdef VMR_DEBUG
		if (!null && s < e && s % fz.m.pg == 0 && e % fz.m.pg == 0 &&
		    fz.m.lock != L_WRITE)
			return;
#endif
		rc = vmr_range_write_lock(null ? NULL : fz.space, s, e);
		want = m_range_write_lock(&fz.m, s, e, null);
		CHECK(rc == want, "range write lock [%#lx, %#lx): %s, model %s",
		      (unsigned long)s, (unsigned long)e, m_errname(rc),
		      m_errname(want));
		break;
	}
}

static void op_lookup(struct rd *r)
{
	const struct rcu_flavor_struct *fl = vmr_space_flavor(fz.space);
	unsigned int n = get8(r) % 8 + 1;
	struct vmr_stats st;

	CHECK(vmr_space_find_region(NULL, 0) == NULL &&
		      vmr_space_count_regions(NULL) == 0 &&
		      vmr_space_page_size(NULL) == 0 &&
		      vmr_space_page_size(fz.space) == fz.m.pg,
	      "NULL space lookups");
	CHECK(vmr_space_flavor(NULL) == NULL &&
		      vmr_space_register_thread(NULL) == -EINVAL &&
		      vmr_space_unregister_thread(NULL) == -EINVAL &&
		      vmr_space_destroy(NULL) == 0 &&
		      vmr_space_shutdown(NULL) == -EINVAL &&
		      !vmr_space_is_shut_down(NULL) &&
		      vmr_fault_release_for_io(NULL) == 0 &&
		      vmr_space_stats(NULL, &st, sizeof(st)) == -EINVAL &&
		      vmr_space_stats(fz.space, NULL, sizeof(st)) == -EINVAL &&
		      vmr_space_stats(fz.space, &st, 7) == -EINVAL &&
		      vmr_space_stats_reset(NULL) == -EINVAL,
	      "NULL space calls");
	if (n == 8) { /* now and then, reset the counters */
		CHECK(vmr_space_stats_reset(fz.space) == 0, "stats reset");
		memset(&fz.m.st, 0, sizeof(fz.m.st));
		fz.m.resync_write_locks = false;
	}
	vmr_rcu_read_lock(fl);
	for (unsigned int i = 0; i < n; i++)
		check_find(dec_addr(r, &fz.m), "lookup");
	vmr_rcu_read_unlock(fl);
}

/* ---- faults ------------------------------------------------------------- */

static unsigned int env_lock_now(void *arg)
{
	return ((struct vmr_fault *)arg)->lock;
}

static vmr_fault_t env_release_for_io(void *arg)
{
	return vmr_fault_release_for_io(arg);
}

static int env_release(void *arg)
{
	return vmr_fault_release(arg);
}

static void env_shutdown(void *arg)
{
	vmr_space_shutdown(((struct vmr_fault *)arg)->space);
}

static int env_probe(void *arg)
{
	struct vmr_fault *vmf = arg;
	struct vmr_range_lock l;
	int rc = vmr_range_read_lock(vmf->space, vmf->real_address, 0, &l);

	if (rc == 0)
		CHECK(vmr_range_read_unlock(&l) == 0, "probe unlock failed");
	return rc;
}

static int env_update(void *arg, const struct m_update *u, size_t *first,
		      size_t *nr)
{
	(void)arg;
	return lib_update(u, first, nr);
}

static vmr_fault_t fz_fault(struct vmr_fault *vmf)
{
	struct fz_call *call;
	const struct fz_env env = {
		.arg = vmf,
		.lock_now = env_lock_now,
		.release_for_io = env_release_for_io,
		.release = env_release,
		.shutdown = env_shutdown,
		.probe = env_probe,
		.update = env_update,
	};
	unsigned int k = fz.log.nr;

	if (k == FZ_MAX_CALLS) { /* as the model: end it, lock held */
		fz.log.overflow = true;
		return VMR_FAULT_SIGBUS;
	}
	fz.log.nr++;
	call = &fz.log.call[k];
	memset(call, 0, sizeof(*call));
	call->flags = vmf->flags;
	call->lock = vmf->lock;
	call->address = vmf->address;
	call->real_address = vmf->real_address;
	call->handler_data = vmf->handler_data;
	vmf->handler_data = k + 1;
	call->policy = vmr_fault_policy(vmf);
	call->allow_first = vmr_fault_allow_retry_first(vmf);
	call->ctx_ok = vmf->ctx == &fz;
	call->space_ok = vmf->space == fz.space;
	if (vmf->lock != VMR_FAULT_LOCK_NONE && vmf->region) {
		call->region.start = vmr_region_start(vmf->region);
		call->region.end = vmr_region_end(vmf->region);
		call->region.prot = vmr_region_prot(vmf->region);
		call->region.offset = vmr_region_offset(vmf->region);
		call->region.id = (uintptr_t)vmr_region_private(vmf->region);
	}
	fz_run_act(&fz.script.act[k < fz.script.nr ? k : fz.script.nr - 1],
		   &env, call);
	return call->ret;
}

static const vmr_fault_t results[] = {
	0,
	VMR_FAULT_NOPAGE,
	VMR_FAULT_MAJOR,
	VMR_FAULT_NOPAGE | VMR_FAULT_MAJOR,
	VMR_FAULT_LOCKED,
	VMR_FAULT_RETRY,
	VMR_FAULT_RETRY | VMR_FAULT_RETRY_VMA,
	VMR_FAULT_RETRY | VMR_FAULT_MAJOR,
	VMR_FAULT_RETRY | VMR_FAULT_RETRY_VMA | VMR_FAULT_MAJOR,
	VMR_FAULT_COMPLETED,
	VMR_FAULT_COMPLETED | VMR_FAULT_MAJOR,
	VMR_FAULT_SIGBUS,
	VMR_FAULT_SIGSEGV,
	VMR_FAULT_OOM,
	VMR_FAULT_RETRY_VMA,                     /* bad: without RETRY */
	VMR_FAULT_RETRY | VMR_FAULT_SIGBUS,      /* bad: error with RETRY */
	0x10000u,                                /* bad: unknown bit */
	VMR_FAULT_COMPLETED | VMR_FAULT_NOPAGE,
};

static vmr_fault_t dec_result(struct rd *r)
{
	return results[get8(r) % (sizeof(results) / sizeof(*results))];
}

static void dec_script(struct rd *r)
{
	struct fz_script *s = &fz.script;

	memset(s, 0, sizeof(*s));
	s->nr = get8(r) % FZ_MAX_ACTS + 1;
	for (unsigned int i = 0; i < s->nr; i++) {
		struct fz_act *a = &s->act[i];
		unsigned int v = get8(r);

		a->kind = v % A_NR;
#ifdef VMR_DEBUG
		if (a->kind == A_REL2) /* the second release aborts */
			a->kind = A_REL;
#endif
		a->ret = dec_result(r);
		a->alt = dec_result(r);
		a->release = v & 0x10;
		a->probe = v & 0x20;
		a->update = (v & 0xc0) == 0xc0;
		if (a->update) {
			dec_update(r, &fz.m, &a->upd, true);
			/* A map outside the model's window: not made. */
			a->update = m_update_representable(&fz.m, &a->upd);
		}
	}
}

static const unsigned int flag_sets[] = {
	VMR_FAULT_FLAG_DEFAULT,
	VMR_FAULT_FLAG_DEFAULT | VMR_FAULT_FLAG_WRITE,
	VMR_FAULT_FLAG_DEFAULT | VMR_FAULT_FLAG_INSTRUCTION,
	VMR_FAULT_FLAG_DEFAULT | VMR_FAULT_FLAG_USER | VMR_FAULT_FLAG_WRITE,
	VMR_FAULT_FLAG_DEFAULT | VMR_FAULT_FLAG_RETRY_NOWAIT,
	VMR_FAULT_FLAG_DEFAULT | VMR_FAULT_FLAG_TRIED,
	VMR_FAULT_FLAG_KILLABLE,
	0,
	VMR_FAULT_FLAG_WRITE,
	VMR_FAULT_FLAG_TRIED,                            /* illegal */
	VMR_FAULT_FLAG_DEFAULT | VMR_FAULT_FLAG_VMA_LOCK, /* the engine's */
	VMR_FAULT_FLAG_DEFAULT | (1u << 20),             /* unknown */
};

static void op_fault(struct rd *r)
{
	uintptr_t addr = dec_addr(r, &fz.m);
	unsigned int v = get8(r);
	unsigned int flags = flag_sets[v % (sizeof(flag_sets) /
					     sizeof(*flag_sets))];
	unsigned int nul = get8(r);
	vmr_fault_t res = 0xdeadu;
	struct m_fault_out out;
	int rc;

	if (v & 0x80)
		flags ^= VMR_FAULT_FLAG_WRITE;
	if (v & 0x40)
		addr += get8(r) % fz.m.pg; /* not page-aligned */
	/* "holding no lock of the space" */
	if (fz.m.lock != L_FREE || fz.m.rl_held)
		return;
	dec_script(r);
	memset(&fz.log, 0, sizeof(fz.log));
	rc = vmr_handle_fault(nul == 0xff ? NULL : fz.space, addr, flags, &fz,
			      nul == 0xfe ? NULL : &res);
	if (trace) {
		fprintf(stderr, "fuzz_space: fault %#lx flags %#x: rc %d result "
			"%#x\n", (unsigned long)addr, flags, rc, res);
		for (unsigned int i = 0; i < fz.log.nr && i < FZ_MAX_CALLS; i++) {
			const struct fz_call *c = &fz.log.call[i];
			const struct fz_act *a = &fz.script.act[
				i < fz.script.nr ? i : fz.script.nr - 1];

			fprintf(stderr, "  call %u: act %u%s%s flags %#x lock %u"
				" io %#x rel %d/%d update %d:%d lock after %u "
				"ret %#x\n", i, a->kind, a->probe ? " probe" : "",
				a->update ? " update" : "", c->flags, c->lock,
				c->io_ret, c->rel_rc, c->rel2_rc, c->upd_run,
				c->upd_rc, c->lock_after, c->ret);
		}
	}
	if (nul >= 0xfe) {
		CHECK(rc == -EINVAL && res == 0xdeadu && fz.log.nr == 0,
		      "fault with a NULL argument: %s", m_errname(rc));
		return;
	}
	m_fault(&fz.m, addr, flags, &fz.script, &fz.log, fz.opens,
		fz.nr_opens, &out);
	CHECK(!out.err, "fault at %#lx: %s", (unsigned long)addr, out.err);
	CHECK(rc == out.rc, "fault at %#lx flags %#x: %s, model %s",
	      (unsigned long)addr, flags, m_errname(rc), m_errname(out.rc));
	if (rc) {
		CHECK(res == 0xdeadu && fz.log.nr == 0,
		      "failed fault touched *result or ran the handler");
		return;
	}
	for (unsigned int i = 0; i < fz.log.nr && i < out.log.nr; i++) {
		const struct fz_call *a = &fz.log.call[i], *b = &out.log.call[i];
		bool held = b->lock != VMR_FAULT_LOCK_NONE;

		CHECK(a->flags == b->flags && a->lock == b->lock &&
			      a->address == b->address &&
			      a->real_address == b->real_address &&
			      a->handler_data == b->handler_data &&
			      a->policy == b->policy &&
			      a->allow_first == b->allow_first && a->ctx_ok &&
			      a->space_ok,
		      "fault at %#lx, handler call %u: flags %#x lock %u "
		      "address %#lx data %lu policy %u first %d ctx %d space %d;"
		      " model flags %#x lock %u address %#lx data %lu policy %u "
		      "first %d",
		      (unsigned long)addr, i, a->flags, a->lock,
		      (unsigned long)a->address, (unsigned long)a->handler_data,
		      a->policy, a->allow_first, a->ctx_ok, a->space_ok,
		      b->flags, b->lock, (unsigned long)b->address,
		      (unsigned long)b->handler_data, b->policy,
		      b->allow_first);
		CHECK(!held || (a->region.start == b->region.start &&
				a->region.end == b->region.end &&
				a->region.prot == b->region.prot &&
				a->region.offset == b->region.offset &&
				a->region.id == b->region.id),
		      "fault at %#lx, handler call %u: region [%#lx, %#lx) id "
		      "%lu, model [%#lx, %#lx) id %lu",
		      (unsigned long)addr, i, (unsigned long)a->region.start,
		      (unsigned long)a->region.end,
		      (unsigned long)a->region.id,
		      (unsigned long)b->region.start,
		      (unsigned long)b->region.end,
		      (unsigned long)b->region.id);
		CHECK(a->probe_rc == b->probe_rc && a->io_ret == b->io_ret &&
			      a->rel_rc == b->rel_rc && a->rel2_rc == b->rel2_rc &&
			      a->upd_run == b->upd_run &&
			      a->upd_rc == b->upd_rc &&
			      a->lock_after == b->lock_after &&
			      a->ret == b->ret,
		      "fault at %#lx, handler call %u: probe %d io %#x release "
		      "%d/%d update %d:%d lock after %u ret %#x; model probe %d "
		      "io %#x release %d/%d update %d:%d lock after %u ret %#x",
		      (unsigned long)addr, i, a->probe_rc, a->io_ret, a->rel_rc,
		      a->rel2_rc, a->upd_run, a->upd_rc, a->lock_after, a->ret,
		      b->probe_rc, b->io_ret, b->rel_rc, b->rel2_rc, b->upd_run,
		      b->upd_rc, b->lock_after, b->ret);
	}
	CHECK(fz.log.nr == out.log.nr && fz.log.overflow == out.log.overflow,
	      "fault at %#lx flags %#x: %u handler calls, model %u",
	      (unsigned long)addr, flags, fz.log.nr, out.log.nr);
	CHECK(res == out.result, "fault at %#lx flags %#x: result %#x, model %#x",
	      (unsigned long)addr, flags, res, out.result);
	note_must_close();
}

/* ---- one space ----------------------------------------------------------- */

static const size_t page_sizes[] = { 0, 4096, 4096, 16384, 65536, 256, 16,
				     24 /* not a power of two */ };

static const char *const op_names[8] = {
	"update", "update", "update", "space lock", "range lock", "lookup",
	"fault", "fault",
};

static void run_space(struct rd *r)
{
	struct {
		struct vmr_space_config c;
		uint64_t extra;
	} big;
	struct vmr_space_config *cfg = &big.c;
	struct m_config mc;
	unsigned int v = get8(r), set, k;
	size_t csize = sizeof(*cfg);
	bool null_cfg = false, extra = false;
	int rc;

	memset(&big, 0, sizeof(big));
	cfg->page_size = page_sizes[v % 8];
	cfg->granularity = (v >> 3) % 2;
	cfg->policy = (v >> 4) % 4;
	cfg->barrier = (v >> 6) % 2; /* AUTO or FENCE */
	v = get8(r);
	cfg->vma_retry_max = v % 5;
	cfg->space_retry_max = (v >> 3) % 5;
	cfg->flags = (v >> 6) & VMR_SPACE_TIME_FAULTS;
	v = get8(r);
	switch (v) {
	case 0xff: cfg->granularity = 2 + v % 3; break;
	case 0xfe: cfg->barrier = 3; break;
	case 0xfd: cfg->policy = 4; break;
	case 0xfc: cfg->flags |= 0x80; break;
	case 0xfb: csize = sizeof(big); big.extra = 1; extra = true; break;
	case 0xfa: csize = sizeof(big); break;
	case 0xf9: null_cfg = true; csize = 0; break;
	case 0xf8: null_cfg = true; break;
	case 0xf7: /* an older caller's struct, without flags */
		csize = offsetof(struct vmr_space_config, flags);
		break;
	case 0xf6:
		CHECK(vmr_space_create(cfg, csize, NULL) == -EINVAL,
		      "create with NULL spacep");
		return;
	default: break;
	}
	set = m_create_expect(null_cfg ? NULL : cfg, csize, extra, false,
			      false);
	rc = vmr_space_create(null_cfg ? NULL : cfg, csize, &fz.space);
	CHECK(m_errbit(rc) & set, "create: %s, the contract allows %s",
	      m_errname(rc), m_setname(set));
	if (rc)
		return;
	mc = (struct m_config){
		.pg = vmr_space_page_size(fz.space),
		.granularity = null_cfg ? 0 : cfg->granularity,
		.policy = null_cfg ? 0 : cfg->policy,
		.vma_retry_max = null_cfg ? 0 : cfg->vma_retry_max,
		.space_retry_max = null_cfg ? 0 : cfg->space_retry_max,
		.time_faults = !null_cfg && csize > offsetof(struct
							      vmr_space_config,
							      flags) &&
			       (cfg->flags & VMR_SPACE_TIME_FAULTS),
	};
	CHECK(mc.pg && (mc.pg & (mc.pg - 1)) == 0 &&
		      (null_cfg || !cfg->page_size || mc.pg == cfg->page_size),
	      "page size %zu", mc.pg);
	mc.base = 16 * mc.pg;
	m_space_init(&fz.m, &mc);

	for (unsigned int ops = 0; ops < MAX_OPS && r->n; ops++) {
		if (fz.next_id + 4 * M_PAGES >= MAX_IDS ||
		    fz.nr_opens + 2 * M_PAGES >= MAX_OPENS)
			break;
		k = get8(r) % 8;
		if (trace)
			fprintf(stderr, "fuzz_space: op %u: %s\n", ops,
				op_names[k]);
		switch (k) {
		case 0:
		case 1:
		case 2: op_update(r); break;
		case 3: op_lock(r); break;
		case 4: op_range(r); break;
		case 5: op_lookup(r); break;
		default: op_fault(r); break;
		}
		check_space();
	}

	/* Destroy refuses while anything is held; then release it all. */
	if (m_busy(&fz.m)) {
		rc = vmr_space_destroy(fz.space);
		CHECK(rc == -EBUSY, "destroy while busy: %s", m_errname(rc));
	}
	for (unsigned int h = 0; h < M_HANDLES; h++) {
		if (handle_live(h)) {
			CHECK(vmr_range_read_unlock(&fz.lk[h]) == 0,
			      "final range unlock");
			m_range_read_unlock(&fz.m, h, false);
		}
	}
	if (fz.m.lock == L_WRITE)
		CHECK(vmr_space_write_unlock(fz.space) == 0, "final unlock");
	while (fz.m.lock == L_READ) {
		CHECK(vmr_space_read_unlock(fz.space) == 0, "final unlock");
		m_lock(&fz.m, K_READ_UNLOCK, false);
	}
	fz.m.lock = L_FREE;
	rc = vmr_space_destroy(fz.space);
	CHECK(rc == 0, "destroy: %s", m_errname(rc));
	fz.space = NULL;
	for (uintptr_t id = 1; id < fz.next_id && id < MAX_IDS; id++)
		CHECK(!must_close[id] || closes_of(id) == 1,
		      "region id %lu closed %u times", (unsigned long)id,
		      closes_of(id));
	CHECK(close_error() == 0, "close() of region id %ld: twice or unknown",
	      (long)close_error());
}

/* ---- a bare region tree ---------------------------------------------------- */

static struct m_tree mt;
static struct mt_entry removed_lib[MT_MAX], removed_model[MT_MAX];
static size_t nr_removed_lib;

static void on_removed(const struct vmr_tree_entry *e, void *arg)
{
	size_t *count = arg;

	if (nr_removed_lib < MT_MAX)
		removed_lib[nr_removed_lib] =
			(struct mt_entry){ e->start, e->end, e->value };
	nr_removed_lib++;
	if (count)
		(*count)++;
}

static uintptr_t tree_addr(struct rd *r)
{
	unsigned int v = get8(r);

	if (v >= 0xfc)
		return UINTPTR_MAX - (0xff - v);
	return (uintptr_t)v * 16 + get8(r) % 4;
}

static void check_entry(const struct vmr_tree_entry *e, const struct mt_entry *w,
			const char *what)
{
	CHECK(e->start == w->start && e->end == w->end && e->value == w->value,
	      "tree %s: [%#lx, %#lx) %p, model [%#lx, %#lx) %p", what,
	      (unsigned long)e->start, (unsigned long)e->end, e->value,
	      (unsigned long)w->start, (unsigned long)w->end, w->value);
}

static void check_tree(const struct vmr_tree *t)
{
	struct vmr_tree_iter it;
	struct vmr_tree_entry e;
	size_t i = 0;

	vmr_rcu_read_lock(vmr_tree_flavor(t));
	vmr_tree_iter_start(&it, t, 0);
	while (vmr_tree_iter_next(&it, &e)) {
		CHECK(i < mt.n, "tree has more than the model's %zu entries",
		      mt.n);
		check_entry(&e, &mt.e[i++], "walk");
	}
	CHECK(i == mt.n && vmr_tree_count(t) == mt.n,
	      "tree walk %zu, count %zu, model %zu", i, vmr_tree_count(t),
	      mt.n);
	vmr_rcu_read_unlock(vmr_tree_flavor(t));
}

static void tree_read(struct vmr_tree *t, struct rd *r)
{
	struct vmr_tree_entry e;
	struct vmr_tree_iter it;
	uintptr_t a = tree_addr(r), b = tree_addr(r);
	unsigned int steps = get8(r) % 8;
	void *v;
	long k;
	size_t c;

	vmr_rcu_read_lock(vmr_tree_flavor(t));
	k = mt_lookup(&mt, a);
	v = vmr_tree_lookup(t, a, &e);
	CHECK(v == (k < 0 ? NULL : mt.e[k].value), "tree lookup %#lx",
	      (unsigned long)a);
	if (k >= 0)
		check_entry(&e, &mt.e[k], "lookup");
	k = mt_intersect(&mt, a, b);
	v = vmr_tree_find_intersection(t, a, b, &e);
	CHECK(v == (k < 0 ? NULL : mt.e[k].value),
	      "tree intersection [%#lx, %#lx)", (unsigned long)a,
	      (unsigned long)b);
	if (k >= 0)
		check_entry(&e, &mt.e[k], "intersection");
	/* Forward, backward, forward again from one cursor. */
	c = mt_cursor(&mt, a);
	vmr_tree_iter_start(&it, t, a);
	for (unsigned int s = 0; s < steps; s++) {
		bool ok = vmr_tree_iter_next(&it, &e);

		CHECK(ok == (c < mt.n), "tree next at %zu", c);
		if (ok)
			check_entry(&e, &mt.e[c++], "next");
	}
	for (unsigned int s = 0; s < steps + 2; s++) {
		bool ok = vmr_tree_iter_prev(&it, &e);

		CHECK(ok == (c > 0), "tree prev at %zu", c);
		if (ok)
			check_entry(&e, &mt.e[--c], "prev");
	}
	if (vmr_tree_iter_next(&it, &e)) {
		CHECK(c < mt.n, "tree next after prev");
		check_entry(&e, &mt.e[c], "next after prev");
	} else {
		CHECK(c == mt.n, "tree next after prev ended early");
	}
	CHECK(vmr_tree_lookup(NULL, a, NULL) == NULL &&
		      vmr_tree_find_intersection(NULL, a, b, NULL) == NULL &&
		      vmr_tree_count(NULL) == 0,
	      "NULL tree reads");
	vmr_rcu_read_unlock(vmr_tree_flavor(t));
}

static void run_tree(struct rd *r)
{
	struct vmr_tree *t;
	struct vmr_tree_entry add[4];
	uintptr_t next_val = 1;
	size_t destroyed = 0;
	int rc, want;

	CHECK(vmr_tree_create(NULL, &t) == 0, "tree create");
	mt.n = 0;
	for (unsigned int ops = 0; ops < 4 * MAX_OPS && r->n; ops++) {
		unsigned int op = get8(r) % 4;
		uintptr_t s = tree_addr(r), e = tree_addr(r);
		void *val = get8(r) == 0xff ? NULL : (void *)next_val++;
		void *got = NULL;

		switch (op) {
		case 0:
			if (!mt_room(&mt, 1))
				break;
			rc = vmr_tree_insert(t, s, e, val);
			want = mt_insert(&mt, s, e, val);
			CHECK(rc == want, "tree insert [%#lx, %#lx): %s, model %s",
			      (unsigned long)s, (unsigned long)e,
			      m_errname(rc), m_errname(want));
			break;
		case 1:
			rc = vmr_tree_remove(t, s, e, &got);
			want = mt_remove(&mt, s, e, &val);
			CHECK(rc == want && (rc || got == val),
			      "tree remove [%#lx, %#lx): %s, model %s",
			      (unsigned long)s, (unsigned long)e,
			      m_errname(rc), m_errname(want));
			break;
		case 2: {
			size_t nr = get8(r) % 5, cnt = 0;

			for (size_t i = 0; i < nr; i++) {
				add[i].start = s + (uintptr_t)get8(r) * 4;
				add[i].end = add[i].start + get8(r) % 64;
				add[i].value = get8(r) == 0xff ?
						       NULL :
						       (void *)next_val++;
			}
			if (!mt_room(&mt, nr))
				break;
			nr_removed_lib = 0;
			rc = vmr_tree_replace(t, s, e, nr ? add : NULL, nr,
					      on_removed, &cnt);
			want = mt_replace(&mt, s, e, add, nr, removed_model);
			CHECK(rc == want, "tree replace [%#lx, %#lx) with %zu: "
			      "%d, model %d",
			      (unsigned long)s, (unsigned long)e, nr, rc, want);
			CHECK(nr_removed_lib == (rc > 0 ? (size_t)rc : 0),
			      "tree replace: %zu removed() calls for %d",
			      nr_removed_lib, rc);
			for (size_t i = 0; i < nr_removed_lib; i++) {
				struct vmr_tree_entry x = {
					removed_lib[i].start,
					removed_lib[i].end,
					removed_lib[i].value,
				};
				check_entry(&x, &removed_model[i], "removed");
			}
			break;
		}
		default:
			tree_read(t, r);
			break;
		}
		check_tree(t);
	}
	nr_removed_lib = 0;
	vmr_tree_destroy(t, on_removed, &destroyed);
	CHECK(destroyed == mt.n, "tree destroy: %zu entries, model %zu",
	      destroyed, mt.n);
}

/* ---- entry point ----------------------------------------------------------- */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static bool registered;
	struct rd r = { data, size };

	if (!registered) {
		vmr_rcu_register_thread(vmr_rcu_default_flavor());
		registered = true;
		trace = getenv("FZ_TRACE") != NULL;
	}
	pthread_mutex_lock(&close_mu);
	memset(closes, 0, sizeof(closes));
	close_bad_id = 0;
	pthread_mutex_unlock(&close_mu);
	memset(must_close, 0, sizeof(must_close));
	fz.nr_opens = 0;
	fz.next_id = 1;
	fz.logging = false;
	memset(fz.lk, 0, sizeof(fz.lk));
	if (get8(&r) & 1)
		run_tree(&r);
	else
		run_space(&r);
	return 0;
}
