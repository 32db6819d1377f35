/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * libvmaretry - the one place that aborts: a broken internal invariant, or
 * lock misuse in a build with debug_checks.
 */
#include "internal.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

void vmr_die_at(const char *file, int line, const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "libvmaretry: %s:%d: ", file, line);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	abort();
}

int vmr_misuse(const char *what)
{
#ifdef VMR_DEBUG
	vmr_die("lock misuse: %s", what);
#else
	(void)what;
	return -EPERM;
#endif
}
