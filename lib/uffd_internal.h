/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * libvmaretry - the userfaultfd runtime's internal layout, shared by its
 * files:
 *   uffd.c          life cycle (create, destroy), queries, counters;
 *   uffd_open.c     opening the descriptor and negotiating features;
 *   uffd_handler.c  the handler threads: reading messages, each fault
 *                   message through the engine, deferred faults;
 *   uffd_excl.c     the read mutex, and reads of messages against
 *                   installs (REMOVE events);
 *   uffd_event.c    non-cooperative events: their order against faults
 *                   and what each changes in the space;
 *   uffd_fork.c     the runtimes of forked children;
 *   uffd_fault.c    the regions' fault handler: page lock, store read,
 *                   install;
 *   uffd_ioctl.c    the resolving ioctls and the classes of their
 *                   outcomes;
 *   uffd_mapping.c  vmr_uffd_map() and unmap, the mappings behind the
 *                   regions, and copies of regions (REMAP, FORK).
 * Each file's opening comment argues its part; uffd.c's gives the whole.
 */
#ifndef VMR_UFFD_INTERNAL_H
#define VMR_UFFD_INTERNAL_H

#include "mm.h"

#include <linux/userfaultfd.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <vmaretry/uffd.h>

/* Newer than some distributions' headers. */
#ifndef UFFD_USER_MODE_ONLY
#define UFFD_USER_MODE_ONLY 1
#endif
#ifndef USERFAULTFD_IOC_NEW
#define USERFAULTFD_IOC_NEW _IO(0xAA, 0x00)
#endif
#ifndef UFFD_FEATURE_POISON
#define UFFD_FEATURE_POISON (1 << 14)
#endif
#ifndef UFFDIO_POISON
struct uffdio_poison {
	struct uffdio_range range;
	__u64 mode;
	__s64 updated;
};
#define _UFFDIO_POISON (0x08)
#define UFFDIO_POISON _IOWR(UFFDIO, _UFFDIO_POISON, struct uffdio_poison)
#endif

/* The events the runtime asks for unless told not to. */
#define RUNTIME_EVENTS                                                         \
	(UFFD_FEATURE_EVENT_REMOVE | UFFD_FEATURE_EVENT_UNMAP |               \
	 UFFD_FEATURE_EVENT_REMAP | UFFD_FEATURE_EVENT_FORK)

#define MAX_BATCH 4096
#define MAX_THREADS 1024

#define NR_UFFD_COUNTERS (sizeof(struct vmr_uffd_stats) / sizeof(uint64_t))
#define UC(field) (offsetof(struct vmr_uffd_stats, field) / sizeof(uint64_t))

struct vmr_uffd;

/*
 * One vmr_uffd_map(): the private data of its regions and their pieces
 * (uffd_mapping.c).  Each region holds a reference, and so does a fault
 * across a call that may drop its lock (uffd_fault.c).
 */
struct uffd_mapping {
	uint64_t id; /* unique: tells a buffered page from a stale one */
	uintptr_t base;
	unsigned int mode;
	struct vmr_uffd *uffd;
	struct vmr_uffd_store_ops ops;
	void *store;
	struct vmr_pagemap *pages; /* page lock and "installed" state */
	_Atomic long refs;
};

/*
 * Deferred faults (EAGAIN), retried after the pending events are read, are
 * kept in an array allocated with the thread: a fault's path allocates
 * nothing (and a fault meets EAGAIN exactly when events are pending, a
 * fork's among them: see forkguard.c for why no allocation of ours waits
 * for one).  When the array is full the fault is woken instead: its
 * thread faults again, and the kernel sends a new message.
 */
#define MAX_DEFERRED 256

/*
 * One handler thread.  Its buffers, hint and counters are written by it
 * alone (the buffers by its starter before it runs); a reader may add
 * EXCL_WAITER to @installing (uffd_excl.c).
 */
struct uffd_handler {
	struct vmr_uffd *uffd;
	pthread_t thread;
	int epoll_fd;
	void *buf; /* one page */
	struct uffd_msg *msgs;
	struct uffd_msg *deferred; /* MAX_DEFERRED */
	unsigned int nr_deferred;
	/* The page map of this thread's last fault: see uffd_fault.c. */
	uintptr_t hint_base;
	size_t hint_len;
	struct vmr_pagemap *hint_pages;
	_Atomic uint32_t installing; /* EXCL_*: see uffd_excl.c */
	_Atomic uint64_t count[NR_UFFD_COUNTERS];
} __attribute__((aligned(VMR_CACHELINE)));

struct vmr_uffd {
	struct vmr_space *space;
	int fd;
	bool own_fd;
	int stop_fd;
	uint64_t features;
	size_t page;
	unsigned int page_shift; /* log2(page) */
	unsigned int nr_threads, batch;
	struct uffd_handler *handlers;
	/* Batch order (uffd_excl.c; uffd_event.c uses it). */
	pthread_mutex_t read_lock;
	/* Set while a handler reads messages: no install may run then. */
	_Atomic uint32_t reading; /* EXCL_* */
	/* Written under read_lock (serial_reads()) or by the one handler. */
	uint32_t batch_seq;
	_Atomic uint32_t last_event_seq;
	_Atomic uint32_t events_applied;
	_Atomic bool dead;
	_Atomic bool stopping;
	bool started; /* its handler threads run */
	/* Runtimes of forked children, and what they need (uffd_fork.c). */
	pthread_mutex_t children_lock;
	struct vmr_uffd *children, *next_child;
	_Atomic bool children_pending; /* some child's threads to start */
	struct vmr_space *child_space; /* a child owns its space */
};

/* What the region handler tells the message loop about one fault. */
enum fault_status {
	FAULT_DONE = 0, /* installed, woken, or nothing to do */
	FAULT_DEFERRED, /* EAGAIN: retry after reading pending messages */
	FAULT_GONE,     /* ENOENT: range unregistered; kernel woke it */
	FAULT_DEAD,     /* ESRCH */
	FAULT_FAILED,   /* some other error: poison it */
};

enum fault_kind { KIND_MISSING, KIND_WP, KIND_MINOR };

/* One fault message on its way through the engine (vmr_fault.ctx). */
struct fault_ctx {
	struct uffd_handler *h;
	enum fault_kind kind;
	bool write;
	enum fault_status status;
	bool resolved; /* the handler installed or woke the page */
	/* Read before its page was installed by another fault: see
	 * "Installed pages" in uffd_fault.c. */
	bool follows;
	/* The page read by an earlier attempt of this fault. */
	bool have;
	uint64_t have_map, have_off;
	int read_err;
	/* The page this fault keeps locked (and its mapping referenced)
	 * across a retry after reading it, so duplicates wait for it. */
	struct uffd_mapping *held;
	size_t held_idx;
};

static inline void hcount(struct uffd_handler *h, size_t idx)
{
	vmr_count_add(&h->count[idx], 1); /* only its thread writes */
}

/* The descriptor delivers events: see "Without events" in
 * uffd_handler.c. */
static inline bool has_events(const struct vmr_uffd *u)
{
	return u->features & RUNTIME_EVENTS;
}

/* Events and several handler threads: reads are ordered. */
static inline bool serial_reads(const struct vmr_uffd *u)
{
	return u->nr_threads > 1 && has_events(u);
}

/* A discard is reported: see "Installed pages" in uffd_fault.c. */
static inline bool hears_removes(const struct vmr_uffd *u)
{
	return u->features & UFFD_FEATURE_EVENT_REMOVE;
}

/* REMOVE events and several handler threads: reads exclude installs. */
static inline bool excl_reads(const struct vmr_uffd *u)
{
	return u->nr_threads > 1 && hears_removes(u);
}

static inline bool is_event(const struct uffd_msg *msg)
{
	return msg->event != UFFD_EVENT_PAGEFAULT;
}

/* The index in its mapping's page map of the page at @addr. */
static inline size_t page_index(const struct vmr_uffd *u, uintptr_t base,
				uintptr_t addr)
{
	return (addr - base) >> u->page_shift;
}

/* Prefetch the page word of @addr if it is in the thread's last page map
 * (uffd_fault.c says why, and why a stale map is harmless). */
static inline void hint_prefetch(const struct uffd_handler *h, uintptr_t addr)
{
	if (addr - h->hint_base < h->hint_len)
		vmr_page_prefetch(h->hint_pages,
				  page_index(h->uffd, h->hint_base, addr));
}

/* uffd.c */
int vmr_uffd_runtime_new(struct vmr_space *space,
			 const struct vmr_uffd_config *cfg,
			 struct vmr_uffd **out, bool start);

/* uffd_open.c: open (or adopt) @u's descriptor; 0 or -errno. */
int vmr_uffd_negotiate(struct vmr_uffd *u, const struct vmr_uffd_config *cfg);

/* uffd_handler.c */
unsigned int vmr_uffd_default_batch(unsigned int nr_threads);
int vmr_uffd_start_threads(struct vmr_uffd *u);

/* uffd_excl.c */
void vmr_uffd_read_lock_init(pthread_mutex_t *m);
void vmr_uffd_read_begin(struct uffd_handler *h);
void vmr_uffd_read_end(struct vmr_uffd *u);
bool vmr_uffd_install_begin(struct uffd_handler *h);
void vmr_uffd_install_end(struct uffd_handler *h);

/* uffd_event.c */
void vmr_uffd_apply_event(struct uffd_handler *h, const struct uffd_msg *msg);
void vmr_uffd_wait_events(struct vmr_uffd *u, uint32_t barrier);
void vmr_uffd_publish_events(struct vmr_uffd *u, uint32_t seq);

/* uffd_fork.c */
int vmr_uffd_child_create(struct vmr_uffd *parent, int fd);
void vmr_uffd_start_children(struct vmr_uffd *u);

/* uffd_fault.c */
extern const struct vmr_region_ops vmr_uffd_region_ops;

/* A region of a vmr_uffd_map(), whose private data is a uffd_mapping. */
static inline bool is_uffd_region(const struct vmr_region *r)
{
	return r->ops.fault == vmr_uffd_region_ops.fault;
}

/* uffd_ioctl.c: an ioctl's outcome, in classes (see there). */
enum outcome { OUT_OK, OUT_EXISTS, OUT_AGAIN, OUT_GONE, OUT_DEAD, OUT_FAILED };

void vmr_uffdio_wake(struct uffd_handler *h, uintptr_t addr, size_t len);
enum outcome vmr_uffdio_settle(struct uffd_handler *h, enum outcome o,
			       uintptr_t addr);
enum outcome vmr_uffdio_copy(struct uffd_handler *h, uintptr_t addr, bool wp,
			     bool dontwake);
enum outcome vmr_uffdio_continue(struct uffd_handler *h, uintptr_t addr);
enum outcome vmr_uffdio_unprotect(struct uffd_handler *h, uintptr_t addr);
enum outcome vmr_uffdio_poison(struct uffd_handler *h, uintptr_t addr);

/* uffd_mapping.c */
struct uffd_mapping *vmr_uffd_mapping_new(struct vmr_uffd *u, uintptr_t base,
					  size_t len, unsigned int mode,
					  const struct vmr_uffd_store_ops *ops,
					  void *store);
void vmr_uffd_mapping_get(struct uffd_mapping *m);
void vmr_uffd_mapping_put(struct uffd_mapping *m);

/* A region of the space, as a copy (the space may change meanwhile). */
struct uffd_region_copy {
	uintptr_t start, end;
	unsigned int prot;
	uint64_t offset;
	struct uffd_mapping *m;
};

size_t vmr_uffd_copy_regions(struct vmr_space *space, uintptr_t start,
			     uintptr_t end, struct uffd_region_copy **out);
void vmr_uffd_free_copies(struct uffd_region_copy *v, size_t n);
void vmr_uffd_map_copies(struct vmr_uffd *u, const struct uffd_region_copy *v,
			 size_t n, intptr_t shift, uintptr_t base, size_t len);

#endif /* VMR_UFFD_INTERNAL_H */
