/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * libvmaretry - common definitions shared by every module header.
 *
 * Public headers include only standard headers.  They never include a
 * liburcu flavor or map header, since those define unprefixed macros
 * (rcu_read_lock, call_rcu, ...) in the includer; the flavor is named
 * through a forward declaration of liburcu's struct rcu_flavor_struct.
 */
#ifndef VMARETRY_COMMON_H
#define VMARETRY_COMMON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
#define VMR_BEGIN_DECLS extern "C" {
#define VMR_END_DECLS }
#else
#define VMR_BEGIN_DECLS
#define VMR_END_DECLS
#endif

#define VMR_VERSION_MAJOR 0
#define VMR_VERSION_MINOR 1
#define VMR_VERSION_PATCH 0

VMR_BEGIN_DECLS

/* liburcu's flavor descriptor (<urcu/flavor.h>); opaque to our callers. */
struct rcu_flavor_struct;

VMR_END_DECLS

#endif /* VMARETRY_COMMON_H */
