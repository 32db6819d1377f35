/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * libvmaretry - the kernel's fault-concurrency machinery for user space.
 *
 * Umbrella header: include this one.  Each module also has its own header
 * under <vmaretry/>.  All calls return 0 (or a count) on success and -errno
 * on failure; none sets errno, prints, or aborts on bad input.
 */
#ifndef VMARETRY_H
#define VMARETRY_H

#include <vmaretry/common.h>
#include <vmaretry/rcu.h>
#include <vmaretry/tree.h>
#include <vmaretry/space.h>
#include <vmaretry/rangelock.h>
#include <vmaretry/stats.h>
#include <vmaretry/fault.h>
#include <vmaretry/pagewait.h>
#include <vmaretry/uffd.h>

#endif /* VMARETRY_H */
