/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * libvmaretry - RCU flavor helpers.
 *
 * Every libvmaretry object that readers reach under RCU is bound to one
 * liburcu flavor when it is created (as cds_lfht_new_flavor() is).  These
 * calls go through that flavor's descriptor, so a program (or a foreign
 * language binding) can register threads and open read-side critical
 * sections without including a liburcu flavor header.  A C program that
 * wants liburcu's inline fast paths may instead call the flavor's own
 * rcu_read_lock() directly: the two are interchangeable for the same flavor.
 */
#ifndef VMARETRY_RCU_H
#define VMARETRY_RCU_H

#include <vmaretry/common.h>

VMR_BEGIN_DECLS

/**
 * vmr_rcu_default_flavor() - the flavor used when a constructor is given NULL
 *
 * Return: liburcu's membarrier flavor (urcu-memb), which needs no signal and
 * no quiescent-state reports, and whose read side is a thread-local counter.
 *
 * Context: any thread.
 */
const struct rcu_flavor_struct *vmr_rcu_default_flavor(void);

/**
 * vmr_rcu_register_thread() - register the calling thread as an RCU reader
 * @flavor: the flavor to register with, or NULL for vmr_rcu_default_flavor()
 *
 * Every thread that reads a libvmaretry object under RCU, or updates one
 * (updates queue call_rcu() work, which liburcu requires from registered
 * threads), registers once with the object's flavor before its first call,
 * and unregisters before it exits.  Registering with several flavors is
 * allowed; registering twice with the same one is not (liburcu aborts).
 *
 * Context: any thread, outside any read-side critical section.  May sleep.
 */
void vmr_rcu_register_thread(const struct rcu_flavor_struct *flavor);

/**
 * vmr_rcu_unregister_thread() - undo vmr_rcu_register_thread()
 * @flavor: the flavor given at registration, or NULL for the default
 *
 * Context: a registered thread, outside any read-side critical section.
 * May sleep.
 */
void vmr_rcu_unregister_thread(const struct rcu_flavor_struct *flavor);

/**
 * vmr_rcu_read_lock() - enter an RCU read-side critical section
 * @flavor: the flavor of the objects to be read, or NULL for the default
 *
 * Sections nest.  Nothing reached under RCU is freed before the outermost
 * vmr_rcu_read_unlock() of every thread that could have seen it.
 *
 * Context: a thread registered with @flavor.  Never sleeps, never writes
 * memory shared with other threads.
 * Ordering: as the flavor's rcu_read_lock().
 */
void vmr_rcu_read_lock(const struct rcu_flavor_struct *flavor);

/**
 * vmr_rcu_read_unlock() - leave an RCU read-side critical section
 * @flavor: as given to vmr_rcu_read_lock()
 *
 * Context: inside a section opened with the same flavor.
 * Ordering: as the flavor's rcu_read_unlock().
 */
void vmr_rcu_read_unlock(const struct rcu_flavor_struct *flavor);

VMR_END_DECLS

#endif /* VMARETRY_RCU_H */
