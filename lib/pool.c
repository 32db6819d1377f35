/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * libvmaretry - memory that does not come from malloc(), for the moments
 * when malloc() may not be called (a fork() in flight, see forkguard.c).
 *
 * One range of address space, reserved on first use (MAP_NORESERVE: only
 * the pages touched cost memory), cut into chunks of POOL_CHUNK bytes.  A
 * chunk serves one size class, a power of two; a block bigger than a chunk
 * is a run of chunks.  The class of every chunk is kept in chunk_class[],
 * so a block carries no header, and a block of 2^k bytes is aligned to
 * 2^k: a chunk is aligned to its size, a run to its own size.  Freed
 * blocks go on their class's free list and are used again; nothing goes
 * back to the system.
 *
 * This is the slow path of a rare moment, and simple on purpose: one mutex
 * over everything.  The holder never waits for anything but the mmap() of
 * the first use, so no thread holds it across a fork()'s wait.  A forked
 * child may find it held by a thread the child does not have:
 * vmr_pool_after_fork_child() makes it new (the state it guards may then
 * be half-changed: the child must not use the library, see vmaretry.h).
 *
 * vmr_pool_owns() reads only the range's bounds, written once under the
 * mutex before the first block is handed out: a pointer that came from the
 * pool was obtained after that store (through the mutex), and any other
 * pointer lies outside the range whatever the bounds read.
 */
#include "internal.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <sys/mman.h>

#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#define VMR_LSAN 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__) && !defined(VMR_LSAN)
#define VMR_LSAN 1
#endif
#ifdef VMR_LSAN
#include <sanitizer/lsan_interface.h>
#endif

#define POOL_BYTES (64UL << 20)
#define POOL_CHUNK_SHIFT 16
#define POOL_CHUNK (1UL << POOL_CHUNK_SHIFT)
#define POOL_CHUNKS (POOL_BYTES / POOL_CHUNK)
#define POOL_MIN_SHIFT 5 /* 32 bytes: a free-list link and then some */
#define POOL_MAX_SHIFT 26 /* the whole pool */

struct free_block {
	struct free_block *next;
};

static struct {
	pthread_mutex_t lock;
	char *base;            /* NULL until the first use */
	size_t next_chunk;     /* chunks below are in use or on a list */
	struct free_block *free[POOL_MAX_SHIFT + 1];
	unsigned char chunk_class[POOL_CHUNKS];
} pool = { .lock = PTHREAD_MUTEX_INITIALIZER };

/* Written once, under pool.lock; see the comment at the top. */
static _Atomic(uintptr_t) pool_lo, pool_hi;

static unsigned int class_of(size_t size, size_t align)
{
	unsigned int shift = POOL_MIN_SHIFT;

	if (size < align)
		size = align;
	while (shift <= POOL_MAX_SHIFT && ((size_t)1 << shift) < size)
		shift++;
	return shift;
}

/* Under pool.lock: @n chunks aligned to @n, or NULL. */
static char *take_chunks(size_t n)
{
	size_t first = (pool.next_chunk + n - 1) & ~(n - 1);

	if (first + n > POOL_CHUNKS)
		return NULL;
	pool.next_chunk = first + n;
	return pool.base + first * POOL_CHUNK;
}

static bool reserve(void)
{
	/* Twice the size, to align the range to itself. */
	char *p = mmap(NULL, 2 * POOL_BYTES, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	uintptr_t lo;

	if (p == MAP_FAILED)
		return false;
	lo = ((uintptr_t)p + POOL_BYTES - 1) & ~(POOL_BYTES - 1);
	if (lo > (uintptr_t)p)
		munmap(p, lo - (uintptr_t)p);
	munmap((char *)lo + POOL_BYTES,
	       (uintptr_t)p + 2 * POOL_BYTES - (lo + POOL_BYTES));
	pool.base = (char *)lo;
#ifdef VMR_LSAN
	/* Blocks of the heap that only pool blocks point to are not leaks. */
	__lsan_register_root_region(pool.base, POOL_BYTES);
#endif
	atomic_store_explicit(&pool_lo, lo, memory_order_relaxed);
	atomic_store_explicit(&pool_hi, lo + POOL_BYTES, memory_order_relaxed);
	return true;
}

void *vmr_pool_alloc(size_t size, size_t align)
{
	unsigned int shift = class_of(size, align);
	struct free_block *b = NULL;
	char *c;

	if (shift > POOL_MAX_SHIFT)
		return NULL;
	pthread_mutex_lock(&pool.lock);
	if (!pool.base && !reserve())
		goto out;
	b = pool.free[shift];
	if (b) {
		pool.free[shift] = b->next;
		goto out;
	}
	if (shift >= POOL_CHUNK_SHIFT) {
		size_t n = (size_t)1 << (shift - POOL_CHUNK_SHIFT);

		c = take_chunks(n);
		if (c)
			pool.chunk_class[(size_t)(c - pool.base) >>
					 POOL_CHUNK_SHIFT] =
				(unsigned char)shift;
		b = (struct free_block *)c;
		goto out;
	}
	/* A new chunk of this class: hand out its first block, list the
	 * rest. */
	c = take_chunks(1);
	if (!c)
		goto out;
	pool.chunk_class[(size_t)(c - pool.base) >> POOL_CHUNK_SHIFT] =
		(unsigned char)shift;
	for (size_t off = POOL_CHUNK; (off -= (size_t)1 << shift) > 0;) {
		struct free_block *f = (struct free_block *)(c + off);

		f->next = pool.free[shift];
		pool.free[shift] = f;
	}
	b = (struct free_block *)c;
out:
	pthread_mutex_unlock(&pool.lock);
	return b;
}

bool vmr_pool_owns(const void *ptr)
{
	uintptr_t p = (uintptr_t)ptr;

	return p >= atomic_load_explicit(&pool_lo, memory_order_relaxed) &&
	       p < atomic_load_explicit(&pool_hi, memory_order_relaxed);
}

void vmr_pool_free(void *ptr)
{
	struct free_block *b = ptr;
	unsigned int shift;

	pthread_mutex_lock(&pool.lock);
	shift = pool.chunk_class[(size_t)((char *)ptr - pool.base) >>
				 POOL_CHUNK_SHIFT];
	VMR_BUG_ON(shift < POOL_MIN_SHIFT || shift > POOL_MAX_SHIFT);
	b->next = pool.free[shift];
	pool.free[shift] = b;
	pthread_mutex_unlock(&pool.lock);
}

void vmr_pool_after_fork_child(void)
{
	pthread_mutex_init(&pool.lock, NULL);
}
