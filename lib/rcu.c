/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * libvmaretry - RCU flavor helpers: calls through a liburcu flavor
 * descriptor, so callers need no flavor header and bindings can reach them
 * by symbol.  Nothing here holds state.
 */
#include "internal.h"

#include <urcu/urcu-memb.h>

#include "tsan.h" /* after the flavor header, which maps its names */

const struct rcu_flavor_struct *vmr_rcu_default_flavor(void)
{
	return &urcu_memb_flavor;
}

const struct rcu_flavor_struct *
vmr_flavor_or_default(const struct rcu_flavor_struct *flavor)
{
	return flavor ? flavor : &urcu_memb_flavor;
}

void vmr_rcu_register_thread(const struct rcu_flavor_struct *flavor)
{
	vmr_flavor_or_default(flavor)->register_thread();
}

void vmr_rcu_unregister_thread(const struct rcu_flavor_struct *flavor)
{
	vmr_flavor_or_default(flavor)->unregister_thread();
}

void vmr_rcu_read_lock(const struct rcu_flavor_struct *flavor)
{
	vmr_flavor_or_default(flavor)->read_lock();
}

#ifdef VMR_TSAN
char vmr_tsan_grace_period;
#endif

void vmr_rcu_read_unlock(const struct rcu_flavor_struct *flavor)
{
	vmr_tsan_reader_exit();
	vmr_flavor_or_default(flavor)->read_unlock();
}
