/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The fuzz target's reference model (see model.h): address space, locks,
 * fault engine and region tree, each written from its header's contract in
 * the most direct form available: per-page arrays, linear scans, and the
 * retry state machine of vmr_handle_fault()'s comment transcribed step by
 * step.  Nothing here is fast, and nothing here shares code with lib/.
 *
 * Where a header is silent and the model had to pick (the counters' order
 * of precedence for a result with several bits, which -errno a call with
 * several bad arguments returns), the choice and why are noted in place.
 */
#include "model.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#define PROT_ALL (VMR_PROT_READ | VMR_PROT_WRITE | VMR_PROT_EXEC)
#define KNOWN_RESULTS                                                          \
	(VMR_FAULT_OOM | VMR_FAULT_SIGBUS | VMR_FAULT_MAJOR |                 \
	 VMR_FAULT_SIGSEGV | VMR_FAULT_NOPAGE | VMR_FAULT_LOCKED |            \
	 VMR_FAULT_RETRY | VMR_FAULT_RETRY_VMA | VMR_FAULT_COMPLETED)
/* Every flag of <vmaretry/fault.h> but VMA_LOCK, which the engine sets. */
#define CALLER_FLAGS                                                           \
	(VMR_FAULT_FLAG_WRITE | VMR_FAULT_FLAG_ALLOW_RETRY |                  \
	 VMR_FAULT_FLAG_RETRY_NOWAIT | VMR_FAULT_FLAG_KILLABLE |              \
	 VMR_FAULT_FLAG_TRIED | VMR_FAULT_FLAG_USER |                         \
	 VMR_FAULT_FLAG_INSTRUCTION | VMR_FAULT_FLAG_INTERRUPTIBLE)

static char msg[512];

#define FAIL(...)                                                              \
	do {                                                                  \
		snprintf(msg, sizeof(msg), __VA_ARGS__);                      \
		return msg;                                                   \
	} while (0)

unsigned int m_errbit(int rc)
{
	switch (rc) {
	case 0: return M_OK;
	case -EINVAL: return M_EINVAL;
	case -E2BIG: return M_E2BIG;
	case -EEXIST: return M_EEXIST;
	case -ENOMEM: return M_ENOMEM;
	case -EDEADLK: return M_EDEADLK;
	case -EPERM: return M_EPERM;
	case -ENOENT: return M_ENOENT;
	case -EBUSY: return M_EBUSY;
	case -EAGAIN: return M_EAGAIN;
	case -ENOSYS: return M_ENOSYS;
	default: return M_OTHER;
	}
}

static const char *const errnames[] = {
	"0", "-EINVAL", "-E2BIG", "-EEXIST", "-ENOMEM", "-EDEADLK",
	"-EPERM", "-ENOENT", "-EBUSY", "-EAGAIN", "-ENOSYS",
};

const char *m_errname(int rc)
{
	static char other[32];
	unsigned int bit = m_errbit(rc);

	for (unsigned int i = 0; i < sizeof(errnames) / sizeof(*errnames); i++)
		if (bit == 1u << i)
			return errnames[i];
	snprintf(other, sizeof(other), "%d", rc);
	return other;
}

const char *m_setname(unsigned int set)
{
	static char buf[160];
	size_t n = 0;

	buf[n++] = '{';
	for (unsigned int i = 0; i < sizeof(errnames) / sizeof(*errnames); i++)
		if (set & (1u << i))
			n += (size_t)snprintf(buf + n, sizeof(buf) - n, "%s%s",
					      n > 1 ? "," : "", errnames[i]);
	snprintf(buf + n, sizeof(buf) - n, "}");
	return buf;
}

/* ---- the address space -------------------------------------------------- */

void m_space_init(struct m_space *m, const struct m_config *c)
{
	memset(m, 0, sizeof(*m));
	m->base = c->base;
	m->pg = c->pg;
	m->granularity = c->granularity;
	/* "@policy: ... VMR_POLICY_DEFAULT for a space is VMR_RETRY_VMA" */
	m->policy = c->policy ? c->policy : VMR_RETRY_VMA;
	/* "0 for 3", "0 for 8" */
	m->vma_retry_max = c->vma_retry_max ? c->vma_retry_max : 3;
	m->space_retry_max = c->space_retry_max ? c->space_retry_max : 8;
	m->time_faults = c->time_faults;
	for (unsigned int i = 0; i < M_PAGES; i++)
		m->page[i] = -1;
}

/* Page index of @addr in the window, or -1. */
static long page_of(const struct m_space *m, uintptr_t addr)
{
	uintptr_t off;

	if (addr < m->base)
		return -1;
	off = (addr - m->base) / m->pg;
	return off < M_PAGES ? (long)off : -1;
}

static uintptr_t page_addr(const struct m_space *m, unsigned int i)
{
	return m->base + (uintptr_t)i * m->pg;
}

/* Is page @i inside [start, start + len)?  (A valid, unwrapped range.) */
static bool page_in(const struct m_space *m, unsigned int i, uintptr_t start,
		    size_t len)
{
	uintptr_t a = page_addr(m, i);

	return a >= start && a - start < len;
}

int m_find(const struct m_space *m, uintptr_t addr)
{
	long p = page_of(m, addr);

	return p < 0 ? -1 : m->page[p];
}

size_t m_regions(const struct m_space *m, const struct m_region **out)
{
	size_t n = 0;

	for (unsigned int i = 0; i < M_PAGES; i++)
		if (m->page[i] >= 0 && (i == 0 || m->page[i - 1] != m->page[i]))
			out[n++] = &m->slot[m->page[i]];
	return n;
}

static int slot_alloc(struct m_space *m)
{
	for (int s = 0; s < M_PAGES; s++) {
		if (!m->used[s]) {
			m->used[s] = true;
			m->marked[s] = false;
			return s;
		}
	}
	return -1; /* cannot happen: a region has at least one page */
}

static void slot_place(struct m_space *m, int s)
{
	const struct m_region *r = &m->slot[s];

	for (unsigned int i = 0; i < M_PAGES; i++)
		if (page_in(m, i, r->start, r->end - r->start))
			m->page[i] = (int16_t)s;
}

static void slot_remove(struct m_space *m, int s)
{
	for (unsigned int i = 0; i < M_PAGES; i++)
		if (m->page[i] == s)
			m->page[i] = -1;
	m->used[s] = false;
}

/* ---- space creation ----------------------------------------------------- */

/* A field of a caller's config of @size bytes, or 0 if it lacks it. */
#define CFG_FIELD(cfg, size, f)                                                \
	(offsetof(struct vmr_space_config, f) + sizeof((cfg)->f) <= (size) ?  \
		 (cfg)->f :                                                    \
		 0)

unsigned int m_create_expect(const struct vmr_space_config *cfg, size_t size,
			     bool extra_nonzero, bool null_spacep,
			     bool injecting)
{
	unsigned int set = 0;
	size_t pg;

	if (null_spacep)
		set |= M_EINVAL;
	if (!cfg && size)
		set |= M_EINVAL;
	if (extra_nonzero)
		set |= M_E2BIG;
	if (cfg) {
		pg = CFG_FIELD(cfg, size, page_size);
		if (pg & (pg - 1))
			set |= M_EINVAL;
		if ((unsigned int)CFG_FIELD(cfg, size, granularity) >
		    VMR_LOCK_RANGE)
			set |= M_EINVAL;
		if ((unsigned int)CFG_FIELD(cfg, size, barrier) >
		    VMR_BARRIER_MEMBARRIER)
			set |= M_EINVAL;
		if ((unsigned int)CFG_FIELD(cfg, size, policy) > VMR_HOLD_IO)
			set |= M_EINVAL;
		if (CFG_FIELD(cfg, size, flags) & ~VMR_SPACE_TIME_FAULTS)
			set |= M_EINVAL;
		if (!set && CFG_FIELD(cfg, size, barrier) ==
				    VMR_BARRIER_MEMBARRIER)
			set |= M_OK | M_ENOSYS; /* "where the kernel lacks it" */
	}
	if (!set)
		set = M_OK;
	if (injecting)
		set |= M_ENOMEM;
	return set;
}

/* ---- updates ------------------------------------------------------------ */

static bool range_ok(const struct m_space *m, uintptr_t start, size_t len)
{
	return len && start % m->pg == 0 && len % m->pg == 0 &&
	       start + len > start;
}

static bool in_window(const struct m_space *m, uintptr_t start, size_t len)
{
	return start >= m->base && start - m->base < M_PAGES * m->pg &&
	       len <= M_PAGES * m->pg - (start - m->base);
}

static unsigned int ops_kind(unsigned int ops_arg)
{
	switch (ops_arg) {
	case O_FULL:
	case O_BIG0:
		return M_OPS_FULL;
	case O_FAULT:
	case O_FULL_SHORT: /* "members past a caller's older definition are
			    * taken as NULL" */
		return M_OPS_FAULT;
	default:
		return M_OPS_NONE;
	}
}

/* The policy vmr_map() sees: an older descriptor has none. */
static unsigned int desc_policy(const struct m_update *u)
{
	return u->desc_size == D_OLD ? VMR_POLICY_DEFAULT : u->policy;
}

/* The argument errors of @u (before any look at the space). */
static unsigned int arg_errors(const struct m_space *m,
			       const struct m_update *u)
{
	unsigned int set = 0;

	if (u->null_space)
		set |= M_EINVAL;
	if (!range_ok(m, u->start, u->len))
		set |= M_EINVAL;
	if (u->op == U_UNMAP)
		return set;
	if (u->prot & ~PROT_ALL)
		set |= M_EINVAL;
	if (u->op == U_PROTECT)
		return set;
	if (u->null_desc)
		return set | M_EINVAL;
	if (u->desc_size == D_SHORT || (u->flags & ~VMR_MAP_REPLACE) ||
	    u->offset % m->pg || desc_policy(u) > VMR_HOLD_IO)
		set |= M_EINVAL;
	/* "or @ops is NULL with a non-zero @ops_size" */
	if (u->ops_arg == O_NULL_SIZED)
		set |= M_EINVAL;
	if (u->desc_size == D_BIGX || u->ops_arg == O_BIGX)
		set |= M_E2BIG;
	return set;
}

bool m_update_representable(const struct m_space *m, const struct m_update *u)
{
	return u->op != U_MAP || !range_ok(m, u->start, u->len) ||
	       in_window(m, u->start, u->len);
}

bool m_update_would_deadlock(const struct m_space *m, const struct m_update *u)
{
	/* "a read hold cannot be told and deadlocks" */
	if (m->lock == L_READ)
		return true;
	/* The update's write lock would wait for our own read lock. */
	if (m->rl_held)
		return !range_ok(m, u->start, u->len) ||
		       (u->start < m->rl_end &&
			m->rl_start < u->start + u->len);
	return false;
}

/*
 * The pieces @u must cut (m->cuts, with their source slots), for an update
 * that goes through.  Every region the range meets is either unmapped
 * (inside), replaced by its pieces outside the range (cut), or for a
 * protect also by its piece inside with the new protection, unless it has
 * that protection already ("left as they are").
 */
static void plan(struct m_space *m, const struct m_update *u)
{
	uintptr_t s = u->start, e = u->start + u->len;
	int last = -1;

	m->nr_cuts = 0;
	for (unsigned int i = 0; i < M_PAGES; i++) {
		int sl = m->page[i];
		const struct m_region *r;
		struct m_region piece;

		if (sl < 0 || sl == last || !page_in(m, i, s, u->len))
			continue;
		last = sl;
		r = &m->slot[sl];
		if (u->op == U_PROTECT && r->prot == u->prot)
			continue;
		for (int part = 0; part < 3; part++) {
			piece = *r;
			if (part == 0) {
				if (r->start >= s)
					continue;
				piece.end = s;
			} else if (part == 1) {
				if (u->op != U_PROTECT)
					continue;
				piece.start = r->start > s ? r->start : s;
				piece.end = r->end < e ? r->end : e;
				piece.prot = u->prot;
			} else {
				if (r->end <= e)
					continue;
				piece.start = e;
			}
			/* "a region cut from this one keeps the offset of its
			 * own start" (modulo 2^64, as uint64_t arithmetic) */
			piece.offset = r->offset + (uint64_t)(piece.start -
							      r->start);
			m->cut_from[m->nr_cuts] = (int16_t)sl;
			m->cuts[m->nr_cuts++] = piece;
		}
	}
}

/* The open() of a FULL-ops piece: find it in the log, take its id. */
static const char *match_opens(struct m_space *m, const struct m_open *opens,
			       size_t nr_opens, bool all)
{
	bool used[M_PAGES + 2] = { false };
	size_t matched = 0;

	if (nr_opens > M_PAGES + 2)
		FAIL("%zu open() calls for one update", nr_opens);
	for (size_t c = 0; c < m->nr_cuts; c++) {
		struct m_region *p = &m->cuts[c];
		size_t k;

		if (p->ops != M_OPS_FULL)
			continue;
		for (k = 0; k < nr_opens; k++)
			if (!used[k] && opens[k].start == p->start &&
			    opens[k].end == p->end &&
			    opens[k].from_id == p->id)
				break;
		if (k == nr_opens) {
			if (!all)
				continue;
			FAIL("no open() for piece [%#lx, %#lx) cut from region "
			     "id %lu",
			     (unsigned long)p->start, (unsigned long)p->end,
			     (unsigned long)p->id);
		}
		used[k] = true;
		matched++;
		if (opens[k].offset != p->offset)
			FAIL("open() of [%#lx, %#lx): offset %#llx, want %#llx",
			     (unsigned long)p->start, (unsigned long)p->end,
			     (unsigned long long)opens[k].offset,
			     (unsigned long long)p->offset);
		if (opens[k].initial_id != p->id)
			FAIL("open() of [%#lx, %#lx): the piece starts with "
			     "private data %lu, not its source's %lu",
			     (unsigned long)p->start, (unsigned long)p->end,
			     (unsigned long)opens[k].initial_id,
			     (unsigned long)p->id);
		if (!opens[k].write_locked)
			FAIL("open() of [%#lx, %#lx) without the space write lock",
			     (unsigned long)p->start, (unsigned long)p->end);
		if (opens[k].published)
			FAIL("open() of [%#lx, %#lx) after it was published",
			     (unsigned long)p->start, (unsigned long)p->end);
		p->id = opens[k].new_id;
	}
	if (matched != nr_opens)
		FAIL("%zu open() calls, only %zu of them for pieces this update "
		     "cuts",
		     nr_opens, matched);
	return NULL;
}

static unsigned int update_allowed(const struct m_space *m,
				   const struct m_update *u, bool injecting,
				   bool *goes_through)
{
	unsigned int set = arg_errors(m, u);
	bool mapped = false, hole = false;

	if (!set) {
		if (m->lock == L_WRITE) {
			/* "-EDEADLK if the caller holds the space lock for
			 * write" */
			set |= M_EDEADLK;
		} else {
			for (unsigned int i = 0; i < M_PAGES; i++) {
				if (!page_in(m, i, u->start, u->len))
					continue;
				if (m->page[i] >= 0)
					mapped = true;
				else
					hole = true;
			}
			if (!in_window(m, u->start, u->len))
				hole = true; /* nothing is mapped outside */
			if (u->op == U_MAP && mapped &&
			    !(u->flags & VMR_MAP_REPLACE))
				set |= M_EEXIST;
			if (u->op == U_PROTECT && hole)
				set |= M_ENOMEM; /* "as mprotect(2)" */
		}
	}
	*goes_through = !set;
	if (!set)
		set = M_OK;
	if (injecting)
		set |= M_ENOMEM;
	return set;
}

const char *m_update(struct m_space *m, const struct m_update *u, int rc,
		     const struct m_open *opens, size_t nr_opens,
		     bool injecting)
{
	static const char *const names[] = { "map", "unmap", "protect" };
	bool through;
	unsigned int set = update_allowed(m, u, injecting, &through);
	const char *err;
	int sl;

	if (!(m_errbit(rc) & set))
		FAIL("%s [%#lx, +%#zx) prot %#x (map: offset %#llx policy %u "
		     "ops %u desc %u flags %#x%s%s) returned %s, the contract "
		     "allows %s",
		     names[u->op], (unsigned long)u->start, u->len, u->prot,
		     (unsigned long long)u->offset, u->policy, u->ops_arg,
		     u->desc_size, u->flags, u->null_space ? " NULL space" : "",
		     u->null_desc ? " NULL desc" : "", m_errname(rc),
		     m_setname(set));
	/* The update took the space write lock iff it got past its
	 * argument checks; for an injected -ENOMEM the model cannot tell. */
	if (rc == 0 || rc == -EEXIST || (rc == -ENOMEM && !injecting))
		m->st.space_write_locks++;
	else if (rc == -ENOMEM)
		m->resync_write_locks = true;
	if (!through) {
		if (opens && nr_opens)
			FAIL("%s failed with %s before cutting anything, but "
			     "called open() %zu times",
			     names[u->op], m_errname(rc), nr_opens);
		return NULL;
	}
	plan(m, u);
	if (rc) {
		/* An injected failure: open() may have run for some of the
		 * pieces (the caller checks that each was closed again). */
		return opens ? match_opens(m, opens, nr_opens, false) : NULL;
	}
	if (opens) {
		err = match_opens(m, opens, nr_opens, true);
		if (err)
			return err;
	}
	/* Apply: every region met is gone, its pieces and the new region
	 * take its place. */
	for (unsigned int i = 0; i < M_PAGES; i++) {
		sl = m->page[i];
		if (sl < 0 || !page_in(m, i, u->start, u->len))
			continue;
		if (u->op == U_PROTECT && m->slot[sl].prot == u->prot)
			continue;
		slot_remove(m, sl);
	}
	for (size_t c = 0; c < m->nr_cuts; c++) {
		sl = slot_alloc(m);
		m->slot[sl] = m->cuts[c];
		slot_place(m, sl);
	}
	if (u->op == U_MAP) {
		sl = slot_alloc(m);
		m->slot[sl] = (struct m_region){
			.start = u->start,
			.end = u->start + u->len,
			.prot = u->prot,
			.offset = u->offset,
			.policy = desc_policy(u),
			.ops = ops_kind(u->ops_arg),
			.id = u->id,
		};
		slot_place(m, sl);
	}
	return NULL;
}

/* ---- locks -------------------------------------------------------------- */

bool m_lock_would_deadlock(const struct m_space *m, unsigned int op)
{
	/* Waits for our own read hold; a read lock on top of a read lock is
	 * fine with no writer around, but keep the count small. */
	return (op == K_WRITE_LOCK && m->lock == L_READ) ||
	       (op == K_READ_LOCK && m->readers >= 4);
}

static void end_write_hold(struct m_space *m)
{
	/* "Also releases every VMA-range write lock taken under this hold." */
	memset(m->marked, 0, sizeof(m->marked));
}

int m_lock(struct m_space *m, unsigned int op, bool null)
{
	if (null)
		return op == K_READ_TRYLOCK || op == K_WRITE_TRYLOCK ||
				       op == K_IS_WRITE_LOCKED ?
			       0 :
			       -EINVAL;
	switch (op) {
	case K_READ_LOCK:
		if (m->lock == L_WRITE)
			return -EDEADLK;
		m->lock = L_READ;
		m->readers++;
		m->st.space_read_locks++;
		return 0;
	case K_READ_TRYLOCK:
		if (m->lock == L_WRITE)
			return 0;
		m->lock = L_READ;
		m->readers++;
		m->st.space_read_locks++;
		return 1;
	case K_READ_UNLOCK:
		/* "-EPERM if the lock is not held for read by anyone" */
		if (m->lock != L_READ)
			return -EPERM;
		if (!--m->readers)
			m->lock = L_FREE;
		return 0;
	case K_WRITE_LOCK:
		if (m->lock == L_WRITE)
			return -EDEADLK;
		m->lock = L_WRITE;
		m->st.space_write_locks++;
		return 0;
	case K_WRITE_TRYLOCK:
		if (m->lock != L_FREE)
			return 0;
		m->lock = L_WRITE;
		m->st.space_write_locks++;
		return 1;
	case K_WRITE_UNLOCK:
		if (m->lock != L_WRITE)
			return -EPERM;
		end_write_hold(m);
		m->lock = L_FREE;
		return 0;
	case K_DOWNGRADE:
		if (m->lock != L_WRITE)
			return -EPERM;
		end_write_hold(m);
		m->lock = L_READ;
		m->readers = 1;
		return 0;
	case K_IS_WRITE_LOCKED:
		return m->lock == L_WRITE;
	}
	return -EINVAL;
}

static bool overlap(uintptr_t s1, uintptr_t e1, uintptr_t s2, uintptr_t e2)
{
	return s1 < e2 && s2 < e1;
}

int m_range_read_lock(struct m_space *m, uintptr_t addr, size_t len,
		      unsigned int h, bool null_space, bool null_lock,
		      uintptr_t *start, uintptr_t *end, int *slotp)
{
	uintptr_t last, s, e;
	int sl;

	if (null_space || null_lock)
		return -EINVAL;
	last = addr + (len ? len - 1 : 0); /* "0 means 1" */
	if (last < addr)
		return -EINVAL; /* "the range wraps" */
	sl = m_find(m, addr);
	/* "-ENOENT if no region contains all of [@addr, @addr + @len)" */
	if (sl < 0 || last >= m->slot[sl].end)
		return -ENOENT;
	/* One read lock per thread and space: a second is -EBUSY. */
	if (m->rl_held)
		return -EBUSY;
	if (m->granularity == VMR_LOCK_REGION) {
		s = m->slot[sl].start;
		e = m->slot[sl].end;
	} else {
		s = addr & ~(uintptr_t)(m->pg - 1);
		e = (last | (m->pg - 1)) + 1;
	}
	/* "-EBUSY if a writer holds an overlapping range" */
	if (m->marked[sl] && overlap(s, e, m->mark_start[sl], m->mark_end[sl]))
		return -EBUSY;
	m->rl_held = true;
	m->rl_gen++;
	m->rl_start = s;
	m->rl_end = e;
	m->handle[h] = (struct m_handle){ true, m->rl_gen };
	*start = s;
	*end = e;
	*slotp = sl;
	return 0;
}

int m_range_read_unlock(struct m_space *m, unsigned int h, bool null)
{
	struct m_handle *hd = &m->handle[h];

	if (null)
		return -EINVAL;
	/* "-EPERM if it is not held or was released already": a zeroed
	 * handle, a copy of a hold that ended, or the hold released twice. */
	if (!hd->slot || !m->rl_held || hd->gen != m->rl_gen)
		return -EPERM;
	hd->slot = false;
	m->rl_held = false;
	return 0;
}

bool m_range_write_would_deadlock(const struct m_space *m, uintptr_t start,
				  uintptr_t end)
{
	return m->rl_held && m->lock == L_WRITE &&
	       overlap(start, end, m->rl_start, m->rl_end);
}

int m_range_write_lock(struct m_space *m, uintptr_t start, uintptr_t end,
		       bool null_space)
{
	int last = -1;

	if (null_space || start >= end || start % m->pg || end % m->pg)
		return -EINVAL;
	if (m->lock != L_WRITE)
		return -EPERM;
	for (unsigned int i = 0; i < M_PAGES; i++) {
		int sl = m->page[i];
		uintptr_t s, e;

		if (sl < 0 || sl == last || !page_in(m, i, start, end - start))
			continue;
		last = sl;
		/* "the whole of each region under VMR_LOCK_REGION" */
		if (m->granularity == VMR_LOCK_REGION) {
			s = m->slot[sl].start;
			e = m->slot[sl].end;
		} else {
			s = start > m->slot[sl].start ? start :
							m->slot[sl].start;
			e = end < m->slot[sl].end ? end : m->slot[sl].end;
		}
		/*
		 * A second mark of the same region in one hold covers both:
		 * the library keeps one range per region (the span of its
		 * marks), so a read lock between two marks is refused too.
		 */
		if (m->marked[sl]) {
			if (m->mark_start[sl] < s)
				s = m->mark_start[sl];
			if (m->mark_end[sl] > e)
				e = m->mark_end[sl];
		}
		m->marked[sl] = true;
		m->mark_start[sl] = s;
		m->mark_end[sl] = e;
	}
	return 0;
}

bool m_busy(const struct m_space *m)
{
	return m->lock != L_FREE || m->rl_held;
}

/* ---- the fault engine --------------------------------------------------- */

void fz_run_act(const struct fz_act *a, const struct fz_env *env,
		struct fz_call *call)
{
	vmr_fault_t r, ret = 0;

	call->probe_rc = a->probe ? env->probe(env->arg) : 0;
	switch (a->kind) {
	case A_RET:
		ret = a->ret;
		break;
	case A_IO:
		r = env->release_for_io(env->arg);
		call->io_ret = r;
		ret = r ? r | a->ret : a->alt;
		break;
	case A_IO_DONE:
		r = env->release_for_io(env->arg);
		call->io_ret = r;
		ret = r ? VMR_FAULT_COMPLETED | a->ret : a->alt;
		break;
	case A_REL:
		call->rel_rc = env->release(env->arg);
		ret = a->ret;
		break;
	case A_REL2:
		call->rel_rc = env->release(env->arg);
		call->rel2_rc = env->release(env->arg);
		ret = a->ret;
		break;
	case A_SHUT:
		env->shutdown(env->arg);
		if (a->release)
			call->rel_rc = env->release(env->arg);
		ret = a->ret;
		break;
	}
	if (a->update && env->lock_now(env->arg) == VMR_FAULT_LOCK_NONE) {
		call->upd_run = true;
		call->upd_rc = env->update(env->arg, &a->upd, &call->open_first,
					   &call->nr_opens);
	}
	call->lock_after = env->lock_now(env->arg);
#ifdef VMR_DEBUG
	/*
	 * A debug build aborts on a result the handler could not legally
	 * return, by design: make it a legal one instead, the same way for
	 * the library's handler and the model's (assuming no shutdown, which
	 * only ever makes more results legal).
	 */
	if (m_result_is_bad(ret, call->flags, call->lock, call->lock_after,
			    false))
		ret = call->lock_after == VMR_FAULT_LOCK_NONE ?
			      VMR_FAULT_COMPLETED :
			      0;
#endif
	call->ret = ret;
}

bool m_result_is_bad(vmr_fault_t res, unsigned int flags,
		     unsigned int held_before, unsigned int lock_after,
		     bool shut_down)
{
	bool released = lock_after == VMR_FAULT_LOCK_NONE;
	bool retry = res & VMR_FAULT_RETRY;

	/* "unknown bits" */
	if (res & ~KNOWN_RESULTS)
		return true;
	/* "RETRY_VMA without RETRY or from the space lock" */
	if ((res & VMR_FAULT_RETRY_VMA) &&
	    (!retry || held_before != VMR_FAULT_LOCK_VMA))
		return true;
	/* "an error bit with RETRY" */
	if (retry && (res & VMR_FAULT_ERROR))
		return true;
	/*
	 * Without ALLOW_RETRY "the handler must finish" (step 4); the one
	 * RETRY it may still return is that of a wait that shutdown ended
	 * ("a fault not yet started gets RETRY alone": every KILLABLE wait
	 * ends and "its fault returns RETRY with no lock held").
	 */
	if (retry && !(flags & VMR_FAULT_FLAG_ALLOW_RETRY) &&
	    !(released && shut_down))
		return true;
	/* RETRY with RETRY_NOWAIT: "would have to wait", lock held or not. */
	if (retry && (flags & VMR_FAULT_FLAG_RETRY_NOWAIT))
		return false;
	/* "RETRY or COMPLETED with the lock still held" */
	if (res & (VMR_FAULT_RETRY | VMR_FAULT_COMPLETED))
		return !released;
	/* "a lock released with a result saying it was not" */
	return released;
}

/*
 * access_error(): the checks of step 2, as the comment lists them.  For
 * WRITE and INSTRUCTION together (no access is both; the header does not
 * say) the model follows the kernel's x86 access_error(), which the
 * library mirrors: a write is checked as a write only.
 */
static bool access_error(const struct m_region *r, unsigned int flags)
{
	if (flags & VMR_FAULT_FLAG_WRITE)
		return !(r->prot & VMR_PROT_WRITE);
	if ((flags & VMR_FAULT_FLAG_INSTRUCTION) && !(r->prot & VMR_PROT_EXEC))
		return true;
	return r->prot == VMR_PROT_NONE;
}

struct m_fault_ctx {
	struct m_space *m;
	struct m_fault_out *out;
	const struct fz_log *lib_log;
	const struct m_open *opens;
	size_t nr_opens;
	uintptr_t addr;
	unsigned int flags; /* of the current call */
	unsigned int lock;  /* the fault's lock now */
	unsigned int policy;
	unsigned int call;  /* index of the current call */
};

static unsigned int env_lock_now(void *arg)
{
	return ((struct m_fault_ctx *)arg)->lock;
}

static bool allow_first(unsigned int flags)
{
	return (flags & (VMR_FAULT_FLAG_ALLOW_RETRY | VMR_FAULT_FLAG_TRIED)) ==
	       VMR_FAULT_FLAG_ALLOW_RETRY;
}

/* vmr_fault_release_for_io(), its comment's cases in order. */
static vmr_fault_t env_release_for_io(void *arg)
{
	struct m_fault_ctx *c = arg;
	bool was_vma;

	if (c->lock == VMR_FAULT_LOCK_NONE || !allow_first(c->flags))
		return 0; /* "Not a first try, or retry not allowed" */
	if (c->flags & VMR_FAULT_FLAG_RETRY_NOWAIT)
		return VMR_FAULT_RETRY; /* "the lock is kept; returns RETRY" */
	if (c->policy == VMR_HOLD_IO)
		return 0;
	was_vma = c->lock == VMR_FAULT_LOCK_VMA;
	c->lock = VMR_FAULT_LOCK_NONE;
	if (was_vma && c->policy == VMR_RETRY_VMA)
		return VMR_FAULT_RETRY | VMR_FAULT_RETRY_VMA;
	return VMR_FAULT_RETRY;
}

static int env_release(void *arg)
{
	struct m_fault_ctx *c = arg;

	/* "-EINVAL if @vmf is NULL or holds no lock" */
	if (c->lock == VMR_FAULT_LOCK_NONE)
		return -EINVAL;
	c->lock = VMR_FAULT_LOCK_NONE;
	return 0;
}

static void env_shutdown(void *arg)
{
	((struct m_fault_ctx *)arg)->m->shut_down = true;
}

static int env_probe(void *arg)
{
	struct m_fault_ctx *c = arg;
	int sl = m_find(c->m, c->addr);

	if (sl < 0)
		return -ENOENT;
	/* The thread's one read lock is the fault's own. */
	if (c->lock == VMR_FAULT_LOCK_VMA)
		return -EBUSY;
	return 0;
}

static int env_update(void *arg, const struct m_update *u, size_t *first,
		      size_t *nr)
{
	struct m_fault_ctx *c = arg;
	const struct fz_call *lc;
	const char *err;
	bool through;
	unsigned int set;
	int rc;

	*first = *nr = 0;
	if (!c->lib_log) {
		/* Predicting: the first result allowed, ids made up. */
		set = update_allowed(c->m, u, false, &through);
		rc = 0;
		while (!(m_errbit(rc) & set))
			rc--;
		m_update(c->m, u, rc, NULL, 0, false);
		return rc;
	}
	lc = c->call < c->lib_log->nr ? &c->lib_log->call[c->call] : NULL;
	if (!lc || !lc->upd_run) {
		if (!c->out->err)
			c->out->err = "the handler's update ran in the model "
				      "but not in the library";
		return 0;
	}
	rc = lc->upd_rc;
	if (lc->open_first + lc->nr_opens > c->nr_opens) {
		if (!c->out->err)
			c->out->err = "open() log out of range";
		return rc;
	}
	err = m_update(c->m, u, rc, c->opens + lc->open_first, lc->nr_opens,
		       false);
	if (err && !c->out->err)
		c->out->err = err;
	*first = lc->open_first;
	*nr = lc->nr_opens;
	return rc;
}

/* One handler call on region slot @sl holding @lock; the result after the
 * engine's checks. */
static vmr_fault_t m_call(struct m_fault_ctx *c, const struct fz_script *s,
			  unsigned int flags, unsigned int lock, int sl)
{
	struct m_space *m = c->m;
	const struct m_region *r = &m->slot[sl];
	struct fz_log *log = &c->out->log;
	struct fz_call *call;
	const struct fz_env env = {
		.arg = c,
		.lock_now = env_lock_now,
		.release_for_io = env_release_for_io,
		.release = env_release,
		.shutdown = env_shutdown,
		.probe = env_probe,
		.update = env_update,
	};
	unsigned int k = log->nr;

	/* "A region without ->fault gives SIGBUS, as a VMA without one." */
	if (r->ops == M_OPS_NONE)
		return VMR_FAULT_SIGBUS;
	if (k == FZ_MAX_CALLS) {
		log->overflow = true;
		return VMR_FAULT_SIGBUS;
	}
	log->nr++;
	call = &log->call[k];
	memset(call, 0, sizeof(*call));
	call->flags = flags;
	call->lock = lock;
	call->address = c->addr & ~(uintptr_t)(m->pg - 1);
	call->real_address = c->addr;
	call->handler_data = k; /* kept across retries; it counts calls */
	call->policy = r->policy ? r->policy : m->policy;
	call->allow_first = allow_first(flags);
	call->ctx_ok = call->space_ok = true;
	call->region = *r;
	c->flags = flags;
	c->lock = lock;
	c->policy = call->policy;
	c->call = k;
	fz_run_act(&s->act[k < s->nr ? k : s->nr - 1], &env, call);
	if (m_result_is_bad(call->ret, flags, lock, c->lock, m->shut_down)) {
		/* "counted in bad_results ... ends the fault with SIGBUS" */
		m->st.bad_results++;
		c->out->bad = true;
		return VMR_FAULT_SIGBUS;
	}
	return call->ret;
}

static bool fault_done(vmr_fault_t res)
{
	/* "COMPLETED ends the fault at once." */
	return !(res & VMR_FAULT_RETRY) || (res & VMR_FAULT_COMPLETED);
}

void m_fault(struct m_space *m, uintptr_t addr, unsigned int flags,
	     const struct fz_script *script, const struct fz_log *lib_log,
	     const struct m_open *opens, size_t nr_opens,
	     struct m_fault_out *out)
{
	struct m_fault_ctx c = {
		.m = m, .out = out, .lib_log = lib_log, .opens = opens,
		.nr_opens = nr_opens, .addr = addr,
	};
	unsigned int f = flags, tries;
	bool tried = false, major;
	vmr_fault_t res = VMR_FAULT_RETRY;
	int sl;

	memset(out, 0, sizeof(*out));
	/* "-EINVAL ... if @flags has unknown or illegal bits": VMA_LOCK is
	 * the engine's, TRIED without ALLOW_RETRY is illegal. */
	if ((flags & ~CALLER_FLAGS) ||
	    (flags & (VMR_FAULT_FLAG_TRIED | VMR_FAULT_FLAG_ALLOW_RETRY)) ==
		    VMR_FAULT_FLAG_TRIED) {
		out->rc = -EINVAL;
		return;
	}
	/* "a fault not yet started gets RETRY alone" */
	if (m->shut_down)
		goto done;
	if (f & VMR_FAULT_FLAG_RETRY_NOWAIT)
		goto space; /* "1. unless RETRY_NOWAIT" */
	for (tries = 0;;) {
		/* 1. the VMA-range read lock; no region: ABORT */
		sl = m_find(m, addr);
		if (sl < 0) {
			m->st.vma_lock_abort++;
			break;
		}
		/* 2. access check, then ->fault with VMA_LOCK */
		if (access_error(&m->slot[sl], f)) {
			m->st.vma_lock_success++;
			res = VMR_FAULT_SIGSEGV;
			goto done;
		}
		tried |= f & VMR_FAULT_FLAG_TRIED;
		res = m_call(&c, script, f | VMR_FAULT_FLAG_VMA_LOCK,
			     VMR_FAULT_LOCK_VMA, sl);
		/* 3. */
		if (fault_done(res)) {
			m->st.vma_lock_success++;
			goto done;
		}
		m->st.vma_lock_retry++;
		if (res & VMR_FAULT_MAJOR)
			f |= VMR_FAULT_FLAG_TRIED;
		if (m->shut_down)
			goto done; /* "or the space was shut down" */
		if (!(res & VMR_FAULT_RETRY_VMA))
			break;
		if (tries == m->vma_retry_max) {
			m->st.vma_retries_exhausted++;
			break;
		}
		tries++;
		m->st.vma_retries++;
	}
space:
	for (tries = 0;;) {
		/* 4. the space lock for read, look up again, check, call */
		m->st.space_lock_faults++;
		m->st.space_read_locks++;
		sl = m_find(m, addr);
		if (sl < 0 || access_error(&m->slot[sl], f)) {
			res = VMR_FAULT_SIGSEGV;
			goto done;
		}
		tried |= f & VMR_FAULT_FLAG_TRIED;
		res = m_call(&c, script, f, VMR_FAULT_LOCK_SPACE, sl);
		if (fault_done(res))
			goto done;
		if (f & VMR_FAULT_FLAG_RETRY_NOWAIT)
			goto done; /* "RETRY_NOWAIT forbade waiting" */
		if (m->shut_down)
			goto done;
		/* "on RETRY set TRIED and repeat this step; after
		 * space_retry_max repetitions clear ALLOW_RETRY (and TRIED)" */
		f |= VMR_FAULT_FLAG_TRIED;
		m->st.space_retries++;
		if (++tries >= m->space_retry_max) {
			f &= ~(VMR_FAULT_FLAG_ALLOW_RETRY | VMR_FAULT_FLAG_TRIED);
			m->st.retry_disallowed++;
		}
	}
done:
	out->result = res;
	/*
	 * The result counters, one per fault.  A result with several of
	 * their bits (the header does not rank them) is counted by the
	 * first of: SIGSEGV, SIGBUS, OOM, RETRY, COMPLETED, NOPAGE, else ok.
	 */
	if (!res)
		m->st.result_ok++;
	else if (res & VMR_FAULT_SIGSEGV)
		m->st.result_sigsegv++;
	else if (res & VMR_FAULT_SIGBUS)
		m->st.result_sigbus++;
	else if (res & VMR_FAULT_OOM)
		m->st.result_oom++;
	else if (res & VMR_FAULT_RETRY)
		m->st.result_unfinished++;
	else if (res & VMR_FAULT_COMPLETED)
		m->st.result_completed++;
	else if (res & VMR_FAULT_NOPAGE)
		m->st.result_nopage++;
	else
		m->st.result_ok++;
	m->st.faults++;
	/* "faults that finished (no error, no RETRY) and were major: the
	 * result had MAJOR or the fault was retried with TRIED" */
	major = (res & VMR_FAULT_MAJOR) || tried || (f & VMR_FAULT_FLAG_TRIED);
	if (!(res & (VMR_FAULT_ERROR | VMR_FAULT_RETRY)) && major)
		m->st.result_major++;
	if (m->time_faults)
		m->st.fault_latency_hist[0]++; /* the sum is what is checked */
}

/* ---- the region tree ---------------------------------------------------- */

long mt_lookup(const struct m_tree *t, uintptr_t addr)
{
	for (size_t i = 0; i < t->n; i++)
		if (t->e[i].start <= addr && addr < t->e[i].end)
			return (long)i;
	return -1;
}

long mt_intersect(const struct m_tree *t, uintptr_t start, uintptr_t end)
{
	if (start >= end)
		return -1;
	for (size_t i = 0; i < t->n; i++)
		if (t->e[i].start < end && t->e[i].end > start)
			return (long)i;
	return -1;
}

size_t mt_cursor(const struct m_tree *t, uintptr_t addr)
{
	size_t n = 0;

	/* "after every entry that ends at or before @addr" */
	while (n < t->n && t->e[n].end <= addr)
		n++;
	return n;
}

bool mt_room(const struct m_tree *t, size_t nr_add)
{
	return t->n + nr_add <= MT_MAX;
}

static void mt_put(struct m_tree *t, uintptr_t start, uintptr_t end,
		   void *value)
{
	size_t i = 0;

	while (i < t->n && t->e[i].start < start)
		i++;
	memmove(&t->e[i + 1], &t->e[i], (t->n - i) * sizeof(t->e[0]));
	t->e[i] = (struct mt_entry){ start, end, value };
	t->n++;
}

int mt_insert(struct m_tree *t, uintptr_t start, uintptr_t end, void *value)
{
	if (!value || start >= end)
		return -EINVAL;
	if (mt_intersect(t, start, end) >= 0)
		return -EEXIST;
	mt_put(t, start, end, value);
	return 0;
}

int mt_remove(struct m_tree *t, uintptr_t start, uintptr_t end, void **value)
{
	if (start >= end)
		return -EINVAL;
	for (size_t i = 0; i < t->n; i++) {
		if (t->e[i].start == start && t->e[i].end == end) {
			*value = t->e[i].value;
			memmove(&t->e[i], &t->e[i + 1],
				(t->n - i - 1) * sizeof(t->e[0]));
			t->n--;
			return 0;
		}
	}
	return -ENOENT;
}

int mt_replace(struct m_tree *t, uintptr_t start, uintptr_t end,
	       const struct vmr_tree_entry *add, size_t nr_add,
	       struct mt_entry *removed)
{
	size_t i, n = 0, keep = 0;

	if (start >= end)
		return -EINVAL;
	for (i = 0; i < nr_add; i++)
		if (!add[i].value || add[i].start >= add[i].end ||
		    add[i].start < start || add[i].end > end ||
		    (i > 0 && add[i - 1].end > add[i].start))
			return -EINVAL;
	/* "each must lie wholly inside it" */
	for (i = 0; i < t->n; i++)
		if (t->e[i].start < end && t->e[i].end > start &&
		    (t->e[i].start < start || t->e[i].end > end))
			return -EINVAL;
	for (i = 0; i < t->n; i++) {
		if (t->e[i].start < end && t->e[i].end > start)
			removed[n++] = t->e[i];
		else
			t->e[keep++] = t->e[i];
	}
	t->n = keep;
	for (i = 0; i < nr_add; i++)
		mt_put(t, add[i].start, add[i].end, add[i].value);
	return (int)n;
}
