/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * libvmaretry - RCU flavor helpers: calls through a liburcu flavor
 * descriptor, so callers need no flavor header and bindings can reach them
 * by symbol.  The only state is the list of flavors whose call_rcu thread
 * exists (vmr_rcu_warm()).
 */
#include "internal.h"

#include <errno.h>
#include <pthread.h>
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

/*
 * liburcu makes a flavor's call_rcu thread on the flavor's first
 * call_rcu(), with malloc() and pthread_create(), and an update of ours
 * may be that first call: on a handler thread, or under a space's write
 * lock, while a fork() in flight holds glibc's locks and waits for a
 * handler to read its message (see forkguard.c).  So each flavor's first
 * call_rcu() is made here, when a space is made, on a thread of our own
 * that registers with it (call_rcu() wants a registered caller).
 */
#define WARM_MAX 8

static pthread_mutex_t warm_lock = PTHREAD_MUTEX_INITIALIZER;
static const struct rcu_flavor_struct *warm[WARM_MAX];
static unsigned int nr_warm;

static void warm_done(struct rcu_head *head)
{
	vmr_tsan_callback_enter(head);
	vmr_free(head);
}

static void *warm_main(void *arg)
{
	const struct rcu_flavor_struct *flavor = arg;
	struct rcu_head *head = vmr_alloc_plain(sizeof(*head), 0);

	if (!head)
		return arg; /* not NULL: failed */
	flavor->register_thread();
	vmr_call_rcu(flavor, head, warm_done);
	flavor->unregister_thread();
	return NULL;
}

int vmr_rcu_warm(const struct rcu_flavor_struct *flavor)
{
	void *failed = NULL;
	pthread_t t;
	int err = 0;

	flavor = vmr_flavor_or_default(flavor);
	pthread_mutex_lock(&warm_lock);
	for (unsigned int i = 0; i < nr_warm; i++)
		if (warm[i] == flavor)
			goto out;
	err = -pthread_create(&t, NULL, warm_main, (void *)flavor);
	if (err)
		goto out;
	pthread_join(t, &failed);
	if (failed)
		err = -ENOMEM;
	else if (nr_warm < WARM_MAX)
		warm[nr_warm++] = flavor;
out:
	pthread_mutex_unlock(&warm_lock);
	return err;
}
