/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * libvmaretry - membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED), the other
 * half of an asymmetric fence: a fast side that orders its store and its
 * load with a compiler barrier only, and a rare side that calls
 * vmr_membarrier(), which runs a full barrier on every thread of the
 * process that is running (the others pass one when they are scheduled).
 * The range lock's membarrier mode and the fork guard use it.
 *
 * Registration is per process and lasts; it is idempotent, so each user
 * registers for itself.
 */
#include "internal.h"

#include <errno.h>
#include <linux/membarrier.h>
#include <sys/syscall.h>
#include <unistd.h>

static long sys_membarrier(int cmd)
{
	return syscall(__NR_membarrier, cmd, 0, 0);
}

int vmr_membarrier_register(void)
{
	long cmds = sys_membarrier(MEMBARRIER_CMD_QUERY);

	if (cmds < 0 || !(cmds & MEMBARRIER_CMD_PRIVATE_EXPEDITED) ||
	    sys_membarrier(MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED))
		return -ENOSYS;
	return 0;
}

void vmr_membarrier(void)
{
	if (sys_membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED))
		vmr_die("membarrier failed after registration");
}
