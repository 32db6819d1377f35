/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The tests' PRNG, on its own so that programs without Check (the stress
 * program) use the same one: seeded runs replay the same choices.
 */
#ifndef VMR_RNG_H
#define VMR_RNG_H

#include <stdint.h>

/* xorshift64*: a tiny PRNG that each thread owns. */
struct vmr_rng {
	uint64_t s;
};

static inline void vmr_rng_init(struct vmr_rng *r, uint64_t seed)
{
	r->s = seed * 0x9e3779b97f4a7c15ull + 0x2545f4914f6cdd1dull;
	if (!r->s)
		r->s = 1;
}

static inline uint64_t vmr_rng_next(struct vmr_rng *r)
{
	r->s ^= r->s >> 12;
	r->s ^= r->s << 25;
	r->s ^= r->s >> 27;
	return r->s * 0x2545f4914f6cdd1dull;
}

/* Uniform in [0, n), n > 0. */
static inline uint64_t vmr_rng_below(struct vmr_rng *r, uint64_t n)
{
	return vmr_rng_next(r) % n;
}

#endif /* VMR_RNG_H */
