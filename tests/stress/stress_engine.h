/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The engine phase's shared layout: the synthetic address space, the
 * records we keep per region and per round, and the handler's entry
 * points (stress_handler.c) that the round driver (stress_engine.c) maps
 * regions with.  See stress_engine.c for the design and the invariants.
 */
#ifndef VMR_STRESS_ENGINE_H
#define VMR_STRESS_ENGINE_H

#include "stress.h"

#include "mm.h"

#define PG 4096u
#define BASE ((uintptr_t)0x10000000)
#define NMAIN 192u
#define WIN0 (NMAIN + 8u)
#define NWIN 64u
#define NP (WIN0 + NWIN)
#define PAGE_ADDR(p) (BASE + (uintptr_t)(p) * PG)

#define REC_LIVE 0x5ec0a11eu
#define REC_CLOSED 0xdeadc105u

/* What a region's handler does. */
enum kind {
	K_PLAIN,    /* install under the lock, return 0 or NOPAGE */
	K_PAGER,    /* page wait and I/O through a page map, maybe RETRY */
	K_COMPLETE, /* install, release the lock itself, return COMPLETED */
	K_SPACE,    /* first try on the fine-grained lock: RETRY for the
		     * space lock (work that needs it) */
	NR_KINDS
};

/* Our record of a region: its private data. */
struct rec {
	_Atomic uint32_t magic;
	uint32_t gen;
	enum kind kind;
	struct rec *all_next;
};

/* A page's cache entry, written only under the page lock. */
#define CACHE_WORDS 4
struct cache {
	uint32_t gen;
	uint64_t data[CACHE_WORDS];
};

struct thread {
	struct round *round;
	pthread_t tid;
	unsigned int id;
	uint64_t seed;
	struct stress_beat beat;
};

struct round {
	struct vmr_space *space;
	struct vmr_pagemap *map;
	enum vmr_lock_granularity granularity;
	atomic_bool stop;
	atomic_bool shutting; /* set before vmr_space_shutdown() */
	/* Per page: current generation (low half), pending (high half). */
	_Atomic uint64_t pstate[NP];
	_Atomic uint32_t installed[NP];
	_Atomic unsigned int page_holders[NP];
	struct cache cache[NP];
	_Atomic(struct rec *) recs; /* every record, freed at the end */
	_Atomic uint32_t next_gen;
	uint64_t seed; /* the round's, from the run's */
	unsigned int round_no;
	/* Our books, compared with the library's counters. */
	atomic_ulong faults, handler_calls, page_reads, opens, closes,
		maps_ok;
	atomic_ulong res_ok, res_nopage, res_completed, res_sigsegv,
		res_sigbus, res_oom, res_unfinished;
	atomic_ulong reader_walks, updates;
};

/* The contents "the store" holds for page @page of generation @gen. */
static inline uint64_t store_word(uint32_t gen, size_t page, size_t w)
{
	uint64_t x = ((uint64_t)gen << 32 | page) * 0x9e3779b97f4a7c15ull;

	return x ^ (w * 0xc2b2ae3d27d4eb4full) ^ (x >> 29);
}

static inline size_t page_of(uintptr_t addr)
{
	return (addr - BASE) / PG;
}

/* The round whose space exists; set before its first region is mapped. */
extern struct round *stress_cur_round;

/* The ops of every region: the checking handler, open() and close(). */
extern const struct vmr_region_ops stress_region_ops;

/* A record for a new region of @R, kept until the round ends. */
struct rec *stress_new_rec(struct round *R, uint32_t gen, enum kind kind);

#endif /* VMR_STRESS_ENGINE_H */
