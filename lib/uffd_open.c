/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * libvmaretry - the userfaultfd runtime: opening the descriptor and
 * negotiating its features.
 *
 * A descriptor comes from userfaultfd(2) with UFFD_USER_MODE_ONLY (which
 * an unprivileged process may use where vm.unprivileged_userfaultfd is 0:
 * it handles faults from user space only, all this runtime serves), then
 * without it on a kernel that predates the flag (EINVAL), then from
 * /dev/userfaultfd (USERFAULTFD_IOC_NEW, Linux 6.1) where the sysctl or a
 * seccomp filter refuses the system call.  Errors name the cause: ENOSYS
 * where neither exists, EPERM where one is refused and the other absent or
 * refused, else the error of the last step tried.
 *
 * UFFDIO_API may be called once on a descriptor, and it fails if asked
 * for a feature the kernel lacks.  So the features the kernel has are
 * asked of a descriptor opened for that and closed (probe_features()),
 * and the runtime's own descriptor asks for what the caller named plus
 * the events and poisoning the kernel has.  EVENT_FORK needs
 * CAP_SYS_PTRACE: refused that (EPERM), the runtime opens another
 * descriptor of its own and asks without it.  A descriptor handed in is
 * adopted.  Where VMR_UFFD_FD_READY says UFFDIO_API was called already
 * (by the process that made it, or by the kernel for a forked child's,
 * uffd_fork.c), its features are taken as the config names them.
 * Otherwise UFFDIO_API is called here as for our own descriptor (where
 * this process may not open one to probe, the kernel is assumed to have
 * the features the config names and the runtime's events), and a refusal,
 * EPERM for EVENT_FORK included, is returned: a handed-in descriptor
 * cannot be asked again.
 */
#include "uffd_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <unistd.h>

static int open_uffd(void)
{
	int fd, dev, err;

	fd = (int)syscall(SYS_userfaultfd,
			  O_CLOEXEC | O_NONBLOCK | UFFD_USER_MODE_ONLY);
	if (fd >= 0)
		return fd;
	err = errno;
	if (err == EINVAL) /* a kernel without UFFD_USER_MODE_ONLY */
		fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
	if (fd >= 0)
		return fd;
	/* The sysctl or seccomp refused the syscall: try the device. */
	dev = open("/dev/userfaultfd", O_RDWR | O_CLOEXEC);
	if (dev < 0)
		return -(err == ENOSYS && errno == ENOENT ? ENOSYS :
			 err == EPERM || errno == EACCES ? EPERM : err);
	fd = ioctl(dev, USERFAULTFD_IOC_NEW,
		   O_CLOEXEC | O_NONBLOCK | UFFD_USER_MODE_ONLY);
	if (fd < 0 && errno == EINVAL)
		fd = ioctl(dev, USERFAULTFD_IOC_NEW, O_CLOEXEC | O_NONBLOCK);
	err = errno;
	close(dev);
	return fd >= 0 ? fd : -err;
}

/* UFFDIO_API on @fd asking for @features; 0 and the answer, or -errno. */
static int api(int fd, uint64_t features, uint64_t *got)
{
	struct uffdio_api a = { .api = UFFD_API, .features = features };

	if (ioctl(fd, UFFDIO_API, &a))
		return -errno;
	*got = a.features;
	return 0;
}

/* What the kernel supports: ask on a descriptor thrown away after. */
static int probe_features(uint64_t *supported)
{
	int fd = open_uffd(), err;

	if (fd < 0)
		return fd;
	err = api(fd, 0, supported);
	close(fd);
	return err;
}

/* Open (or adopt) the runtime's descriptor with the features to use. */
int vmr_uffd_negotiate(struct vmr_uffd *u, const struct vmr_uffd_config *cfg)
{
	uint64_t supported = 0, want, answer;
	int err;

	if (cfg->fd >= 0) {
		u->fd = cfg->fd;
		u->own_fd = false;
		if (fcntl(u->fd, F_SETFL, fcntl(u->fd, F_GETFL) | O_NONBLOCK))
			return -errno;
		if (cfg->flags & VMR_UFFD_FD_READY) {
			/* Its features were chosen by whoever made it. */
			u->features = cfg->features;
			return 0;
		}
	}
	err = probe_features(&supported);
	if (err && cfg->fd < 0)
		return err;
	if (err) /* a handed-in descriptor, and we may not open our own */
		supported = cfg->features | RUNTIME_EVENTS;
	want = cfg->features | (supported & UFFD_FEATURE_POISON) |
	       (cfg->flags & VMR_UFFD_NO_EVENTS ? 0 :
						  supported & RUNTIME_EVENTS);
	if (cfg->flags & VMR_UFFD_NO_REMOVE)
		want &= ~(uint64_t)UFFD_FEATURE_EVENT_REMOVE;
	if (cfg->fd < 0) {
		u->fd = open_uffd();
		if (u->fd < 0)
			return u->fd;
		u->own_fd = true;
	}
	err = api(u->fd, want, &answer);
	if (err == -EPERM && (want & UFFD_FEATURE_EVENT_FORK) && u->own_fd) {
		/* EVENT_FORK needs CAP_SYS_PTRACE: do without it. */
		close(u->fd);
		u->fd = open_uffd();
		if (u->fd < 0)
			return u->fd;
		want &= ~(uint64_t)UFFD_FEATURE_EVENT_FORK;
		err = api(u->fd, want, &answer);
	}
	if (!err)
		u->features = want;
	return err;
}
