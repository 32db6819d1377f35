/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * libvmaretry - the userfaultfd runtime: the regions' fault handler.
 *
 * A fault.  Each page-fault message becomes vmr_handle_fault() on the
 * space (uffd_handler.c); the region's handler (uffd_fault()) takes the
 * page's lock in the mapping's page map (so duplicate messages for a page
 * coalesce: the second waits for the first, finds the page installed and
 * only wakes; on its last attempt it does not wait, see uffd_fault()),
 * reads the store into the handler thread's page buffer (releasing the
 * fault's lock first if the policy says so, and then returning the retry
 * the engine asked for: the buffer, kept in the fault's persistent
 * descriptor, is installed on the retry without a second read, and the
 * page lock is kept across the retry so that a duplicate cannot read the
 * store again), and installs the page under the fault's lock with
 * UFFDIO_COPY (ZEROPAGE, CONTINUE, WRITEPROTECT as the mapping says:
 * uffd_ioctl.c).  The install is excluded from reads of messages where
 * REMOVE events come and there are several handler threads, and made only
 * when every event read so far is applied (uffd_excl.c says why).  The
 * fault holds a reference on its mapping from before anything that may
 * drop its lock until it is done with it, so an unmap during the read
 * cannot free it.
 *
 * Installed pages.  A page's state in its mapping's page map says it was
 * installed, so that a duplicate message only wakes.  That holds as long
 * as nothing takes the page out behind the runtime's back, which a REMOVE
 * event reports.  Without REMOVE events, a discarded page faults again and
 * its message finds the page "installed": were it only woken, its thread
 * would fault forever.  So there a message for an installed page is taken
 * for a duplicate only if it was read before the page was installed: it
 * waited for the page's lock, or an earlier message of its batch for the
 * same page was resolved first (uffd_handler.c).  Otherwise the page is
 * read and installed again, and EEXIST says it was a duplicate after all
 * (a late one: it costs a store read).
 */
#include "uffd_internal.h"

/*
 * A fault's own reference on its mapping (@ref: whether it holds one),
 * taken at most once, before a call that may drop the fault's lock; and
 * its release when the fault is done with the mapping (see uffd_fault()).
 */
static void fault_ref(struct uffd_mapping *m, bool *ref)
{
	if (!*ref) {
		vmr_uffd_mapping_get(m);
		*ref = true;
	}
}

static void fault_unref(struct uffd_mapping *m, bool ref)
{
	if (ref)
		vmr_uffd_mapping_put(m);
}

static void region_open(struct vmr_region *r, const struct vmr_region *from)
{
	(void)r;
	vmr_uffd_mapping_get(vmr_region_private(from));
}

static void region_close(struct vmr_region *r)
{
	vmr_uffd_mapping_put(vmr_region_private(r));
}

static vmr_fault_t uffd_fault(struct vmr_fault *vmf);

const struct vmr_region_ops vmr_uffd_region_ops = {
	.fault = uffd_fault,
	.open = region_open,
	.close = region_close,
};

/* The fault ends without installing: tell the message loop why. */
static vmr_fault_t give_up(struct vmr_fault *vmf, struct fault_ctx *c,
			   struct uffd_mapping *m, size_t idx, enum outcome o)
{
	c->status = o == OUT_AGAIN ? FAULT_DEFERRED :
		    o == OUT_GONE  ? FAULT_GONE :
		    o == OUT_DEAD  ? FAULT_DEAD :
				     FAULT_FAILED;
	vmr_page_unlock(m->pages, idx);
	vmr_fault_release(vmf);
	return VMR_FAULT_COMPLETED;
}

/* Install the fault's page (or poison it), reads excluded if @excl. */
static enum outcome install(struct uffd_handler *h, const struct fault_ctx *c,
			    const struct uffd_mapping *m, uintptr_t addr,
			    bool excl)
{
	VMR_DEBUG_POINT(VMR_DP_UFFD_INSTALL, addr);
	if (c->read_err)
		return vmr_uffdio_poison(h, addr);
	return vmr_uffdio_copy(h, addr, (m->mode & VMR_UFFD_WP) && !c->write,
			       excl);
}

/*
 * The page word a fault locks is a cache miss as a rule: one word per page,
 * faults in any order, and the kernel's page copies in between evict it.
 * Each handler thread remembers the page map of its last fault, and as soon
 * as a batch is read it prefetches the word of every fault message's page
 * that falls in that map: the first message's miss then overlaps its
 * region lookup and range lock, the others' the faults before them.  It is
 * a guess, never trusted: the map may have been freed since, and only an
 * address is computed from it (a prefetch neither loads nor faults); the
 * fault locks the word of its own region's map.  Measured with perf record
 * -e cpu-clock over bench_uffd --pin --max-handlers=1 --store=zero
 * --reps=5 --pages=32768 --impl=vmr: a prefetch per message, issued when
 * the message was handled, took vmr_page_trylock()'s samples from 442 to
 * 104 (three runs each, 2026-12-07); prefetching the whole batch at once
 * took them from 421-474 to 118-148 (four alternating runs each on another
 * VM, 2026-12-07, about 50000 samples a run: some 0.6 % of the round
 * trip).  Throughput cannot resolve that: see bench_uffd.c.
 */
static void hint_set(struct uffd_handler *h, const struct uffd_mapping *m)
{
	if (h->hint_pages != m->pages) {
		h->hint_base = m->base;
		h->hint_len = vmr_pagemap_size(m->pages) << h->uffd->page_shift;
		h->hint_pages = m->pages;
	}
}

static vmr_fault_t uffd_fault(struct vmr_fault *vmf)
{
	struct fault_ctx *c = vmf->ctx;
	struct uffd_handler *h = c->h;
	struct uffd_mapping *m = vmr_region_private(vmf->region);
	size_t idx = page_index(h->uffd, m->base, vmf->address);
	uint64_t off = vmr_region_offset(vmf->region) +
		       (vmf->address - vmr_region_start(vmf->region));
	vmr_fault_t ret, io, major = 0;
	enum outcome o;
	bool excl, ref = false;

	hint_set(h, m);

	/*
	 * While the fault holds its lock, its region cannot be closed, and
	 * so neither can the mapping the region references.  A reference
	 * of the fault's own (@ref) is taken only before a call that may
	 * drop the lock: a fault that keeps it, the common one, writes
	 * nothing that another handler thread's fault writes too.
	 */
	if (c->held == m && c->held_idx == idx) {
		/* Ours since the read; its reference is ours too. */
		c->held = NULL;
		ref = true;
	} else {
		if (c->held) {
			vmr_page_unlock(c->held->pages, c->held_idx);
			vmr_uffd_mapping_put(c->held);
			c->held = NULL;
		}
		if (vmr_page_trylock(m->pages, idx)) {
			/* Uncontended: the common case. */
		} else if (!vmr_fault_allow_retry_first(vmf) &&
			   vmr_fault_policy(vmf) != VMR_HOLD_IO) {
			/*
			 * A duplicate on its last attempt would wait for the
			 * page under the fault's lock.  But the holder may
			 * keep the page across its own retry (c->held) and
			 * then need the space lock: page -> space, against
			 * this wait's space -> page, and a writer queued on
			 * the space lock closes the cycle.  (The kernel never
			 * holds a folio lock into a retry.)  Do not wait: the
			 * holder installs, poisons, or defers and retries,
			 * and each of those wakes this fault's thread too.
			 */
			hcount(h, UC(coalesced));
			c->resolved = true;
			vmr_fault_release(vmf);
			return VMR_FAULT_COMPLETED;
		} else {
			c->follows = true;
			fault_ref(m, &ref); /* the wait may drop the lock */
			ret = vmr_page_lock_or_retry(vmf, m->pages, idx);
			if (ret) {
				fault_unref(m, ref);
				return ret;
			}
		}
	}
	if (c->kind == KIND_WP) {
		/* A write to a present, write-protected page. */
		if (m->ops.dirty)
			m->ops.dirty(m->store, off);
		o = vmr_uffdio_unprotect(h, vmf->address);
		goto installed;
	}
	if (vmr_page_uptodate(m->pages, idx) &&
	    (hears_removes(h->uffd) || c->follows)) {
		/* A duplicate message: the page is in already. */
		hcount(h, UC(coalesced));
		vmr_uffdio_wake(h, vmf->address, h->uffd->page);
		c->resolved = true;
		vmr_page_unlock(m->pages, idx);
		fault_unref(m, ref);
		return VMR_FAULT_NOPAGE;
	}
	if (c->kind == KIND_MINOR) {
		o = vmr_uffdio_continue(h, vmf->address);
		goto installed;
	}
	io = 0;
	major = 0;
	if (!c->have || c->have_map != m->id || c->have_off != off) {
		major = VMR_FAULT_MAJOR;
		if (!(m->mode & VMR_UFFD_FAST_STORE)) {
			fault_ref(m, &ref); /* the read may drop the lock */
			io = vmr_fault_release_for_io(vmf);
		}
		VMR_DEBUG_POINT(VMR_DP_UFFD_READ, vmf->address);
		c->read_err = m->ops.read(m->store, off, h->buf,
					  h->uffd->page);
		c->have = true;
		c->have_map = m->id;
		c->have_off = off;
		if (c->read_err)
			hcount(h, UC(store_errors));
		if (io) {
			/* The lock was dropped for the read: retry, and
			 * install the buffered page then (c->held takes
			 * over the reference). */
			c->held = m;
			c->held_idx = idx;
			return io | VMR_FAULT_MAJOR;
		}
	}
	VMR_DEBUG_POINT(VMR_DP_UFFD_RESOLVE, vmf->address);
	/*
	 * The kernel refuses installs (EAGAIN) only while an event is
	 * unread: once read, a REMOVE's madvise() zaps the range, and a copy
	 * landing after the zap and before the event is applied (unregister)
	 * would leave stale data in discarded memory.  So install only when
	 * every event read so far is applied; else defer, as for EAGAIN.
	 */
	excl = vmr_uffd_install_begin(h);
	if (atomic_load_explicit(&h->uffd->last_event_seq,
				 memory_order_relaxed) !=
	    atomic_load_explicit(&h->uffd->events_applied,
				 memory_order_acquire))
		o = vmr_uffdio_settle(h, OUT_AGAIN, vmf->address);
	else
		o = install(h, c, m, vmf->address, excl);
	vmr_uffd_install_end(h);
	/* The wake-up of the faulting thread, a cross-CPU one as a rule,
	 * need not keep reads out: it goes after vmr_uffd_install_end(). */
	if (excl && o == OUT_OK)
		vmr_uffdio_wake(h, vmf->address, h->uffd->page);
installed:
	if (o != OUT_OK && o != OUT_EXISTS) {
		ret = give_up(vmf, c, m, idx, o);
		fault_unref(m, ref);
		return ret;
	}
	c->resolved = true;
	if (c->kind != KIND_WP)
		vmr_page_mark_uptodate_unlock(m->pages, idx);
	else
		vmr_page_unlock(m->pages, idx);
	fault_unref(m, ref);
	/* MAJOR if this attempt read the store, as filemap_fault(). */
	return VMR_FAULT_NOPAGE | major;
}
