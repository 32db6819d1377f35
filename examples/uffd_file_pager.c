/* SPDX-License-Identifier: MIT */
/*
 * uffd_file_pager - map a file lazily with userfaultfd, UMap-style.
 *
 * The program mmaps an anonymous private area the size of the file and
 * hands it to libvmaretry's userfaultfd runtime (vmr_uffd_map()) with a
 * backing store whose read() is a pread() of the file.  Nothing is read up
 * front: the first touch of a page faults, the kernel queues a message on
 * the userfaultfd, one of --handlers runtime threads reads it, runs the
 * fault through the fault engine (VMA-range lock, retry policy, page wait
 * for duplicate faults), preads the page and installs it with UFFDIO_COPY,
 * which wakes the faulting thread.
 *
 * While --threads touching threads read pages in random order (and write
 * some: an atomic or of zero, a write access that keeps the contents, so
 * every byte can still be checked against the file), the main thread
 * unmaps and remaps parts of the area, as a pager does when it drops a
 * range or a runtime when it recycles one: vmr_uffd_unmap() (unregister and
 * drop the range from the space), mmap(MAP_FIXED) of fresh anonymous
 * memory over it (its pages are missing again), vmr_uffd_map() again.
 * While a part is being remapped its memory is plain anonymous memory, not
 * the file: the touching threads skip it, through a small per-part flag of
 * this program's (readers count themselves in, the remapper sets a writer
 * bit and waits for them to leave).
 *
 * Every page read is compared with a pread() of the same page of the file
 * (bytes past the end of the file must be zero).  At the end the program
 * prints the runtime's counters (vmr_uffd_stats()), the space's
 * (vmr_space_stats()) and pages per second, and exits 1 if any byte was
 * wrong, a page was poisoned or a store read failed.  If the kernel refuses
 * userfaultfd it says so and exits 77 (the "skipped" code of meson and
 * automake).
 *
 *   uffd_file_pager FILE [--threads=N] [--handlers=N] [--seconds=S |
 *                        --pages=N] [--parts=N] [--remap-ms=N]
 *                        [--policy=space|vma|hold] [--seed=N]
 *   uffd_file_pager --make-test-file=PATH,SIZE [options]
 *
 * --threads: touching threads (default 4); --handlers: runtime handler
 * threads (default: online CPUs); --seconds or --pages: run that long, or
 * until that many pages were touched (default: as many touches as the file
 * has pages); --parts: pieces remapped independently (default 16);
 * --remap-ms: pause between remaps (default 10; 0 disables them);
 * --policy: the space's retry policy (default vma, the RFC's RETRY_VMA).
 * --make-test-file writes SIZE bytes (K, M, G suffixes allowed) of
 * pseudo-random data to PATH, then pages PATH unless a FILE is given.
 *
 * Copy it freely; it compiles as C11 and as C++.  Out of tree:
 *
 *   cc -O2 -o uffd_file_pager uffd_file_pager.c \
 *      $(pkg-config --cflags --libs libvmaretry) -lpthread
 *
 * Userfaultfd needs Linux 4.3 or later; unprivileged processes need
 * UFFD_USER_MODE_ONLY (Linux 5.11), vm.unprivileged_userfaultfd=1, or
 * access to /dev/userfaultfd (Linux 6.1).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* pread, mmap flags, nanosleep under strict C11 */
#endif
#include <vmaretry.h>
#include <vmaretry/uffd.h>

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define EXIT_SKIP 77
#define MAX_THREADS 256
#define WRITER 0x40000000u /* struct part.users: a remap is in progress */

/* The backing store: the file. */
struct store {
	int fd;
	uint64_t size;
};

/* A piece of the area that the main thread remaps as a whole. */
struct part {
	unsigned int users; /* touching threads inside, | WRITER */
	unsigned char *addr;
	size_t len;
	uint64_t offset;
};

struct pager {
	struct vmr_space *space;
	struct vmr_uffd *uffd;
	struct vmr_uffd_store_ops ops;
	struct store store;
	unsigned char *area; /* the file's pages, once touched */
	size_t page, npages, len;
	struct part *parts;
	size_t nparts, part_pages;
	size_t *order;     /* a random permutation of the pages */
	uint64_t cursor;   /* next position in it (atomic) */
	uint64_t touched;  /* pages touched, all threads (atomic) */
	uint64_t target;   /* stop after this many touches; 0: by time */
	int stop;          /* (atomic) */
};

struct toucher {
	struct pager *pg;
	pthread_t thread;
	uint64_t rng;
	unsigned long touches, writes, skipped, bad_pages;
};

static uint64_t xorshift(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void sleep_ms(unsigned int ms)
{
	struct timespec ts;

	ts.tv_sec = ms / 1000;
	ts.tv_nsec = (long)(ms % 1000) * 1000000;
	nanosleep(&ts, NULL);
}

/* pread() all of @len bytes at @off, zero-filling past the end of file. */
static int pread_page(int fd, void *buf, size_t len, uint64_t off)
{
	size_t done = 0;

	while (done < len) {
		ssize_t n = pread(fd, (char *)buf + done, len - done,
				  (off_t)(off + done));

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (n == 0)
			break; /* end of file: the rest of the page is zero */
		done += (size_t)n;
	}
	memset((char *)buf + done, 0, len - done);
	return 0;
}

/*
 * The store's read(): called by a runtime handler thread, with the fault's
 * lock held or not as the space's retry policy says.  It may block.
 */
static int store_read(void *store, uint64_t offset, void *buf, size_t len)
{
	struct store *s = (struct store *)store;

	return pread_page(s->fd, buf, len, offset);
}

/* The per-part flag: readers count themselves in unless a remap is on. */
static bool part_enter(struct part *p)
{
	if (__atomic_fetch_add(&p->users, 1, __ATOMIC_SEQ_CST) & WRITER) {
		__atomic_fetch_sub(&p->users, 1, __ATOMIC_RELEASE);
		return false;
	}
	return true;
}

static void part_leave(struct part *p)
{
	__atomic_fetch_sub(&p->users, 1, __ATOMIC_RELEASE);
}

static void part_lock(struct part *p)
{
	double t0 = now_s();

	__atomic_fetch_or(&p->users, WRITER, __ATOMIC_SEQ_CST);
	/* A touch in flight ends when its fault is resolved. */
	while (__atomic_load_n(&p->users, __ATOMIC_ACQUIRE) != WRITER) {
		if (now_s() - t0 > 10) {
			fprintf(stderr, "uffd_file_pager: a touch has waited "
					"10 s: a fault was never resolved\n");
			_exit(1);
		}
		sleep_ms(0);
	}
}

static void part_unlock(struct part *p)
{
	__atomic_fetch_and(&p->users, ~WRITER, __ATOMIC_RELEASE);
}

/* Touch page @i: maybe write it, read it all, compare with the file. */
static void touch_page(struct toucher *t, size_t i, unsigned char *got,
		       unsigned char *want, bool write)
{
	struct pager *pg = t->pg;
	unsigned char *addr = pg->area + i * pg->page;
	size_t k;
	int ret;

	if (write) {
		/* A write access that leaves the bytes as they are: the
		 * first touch of a missing page faults as a write. */
		size_t w = (size_t)(xorshift(&t->rng) % (pg->page / 8));

		__atomic_fetch_or((uint64_t *)(void *)addr + w, 0,
				  __ATOMIC_RELAXED);
		t->writes++;
	}
	memcpy(got, addr, pg->page); /* faults here if the page is missing */
	ret = pread_page(pg->store.fd, want, pg->page, (uint64_t)i * pg->page);
	if (ret < 0 || memcmp(got, want, pg->page) != 0) {
		for (k = 0; ret == 0 && got[k] == want[k]; k++)
			;
		if (t->bad_pages++ < 5)
			fprintf(stderr,
				"page %zu: byte %zu is %#x, the file has %#x%s\n",
				i, k, got[k], want[k],
				ret < 0 ? " (pread failed)" : "");
	}
	t->touches++;
}

static void *toucher_main(void *arg)
{
	struct toucher *t = (struct toucher *)arg;
	struct pager *pg = t->pg;
	unsigned char *got = (unsigned char *)malloc(pg->page);
	unsigned char *want = (unsigned char *)malloc(pg->page);

	if (!got || !want) {
		fprintf(stderr, "out of memory\n");
		exit(1);
	}
	while (!__atomic_load_n(&pg->stop, __ATOMIC_RELAXED)) {
		uint64_t pos = __atomic_fetch_add(&pg->cursor, 1,
						  __ATOMIC_RELAXED);
		size_t i = pg->order[pos % pg->npages];
		struct part *p = &pg->parts[i / pg->part_pages];

		if (!part_enter(p)) {
			t->skipped++; /* being remapped: not the file now */
			sched_yield();
			continue;
		}
		touch_page(t, i, got, want, xorshift(&t->rng) % 8 == 0);
		part_leave(p);
		if (__atomic_add_fetch(&pg->touched, 1, __ATOMIC_RELAXED) ==
		    pg->target)
			__atomic_store_n(&pg->stop, 1, __ATOMIC_RELAXED);
	}
	free(got);
	free(want);
	return NULL;
}

/* Remap part @p: drop it from the runtime, replace its memory, map again. */
static int remap_part(struct pager *pg, struct part *p)
{
	void *addr;
	int ret;

	part_lock(p);
	ret = vmr_uffd_unmap(pg->uffd, p->addr, p->len);
	if (ret < 0) {
		fprintf(stderr, "vmr_uffd_unmap: %s\n", strerror(-ret));
		return ret;
	}
	/* Fresh anonymous memory over the part: every page missing again. */
	addr = mmap(p->addr, p->len, PROT_READ | PROT_WRITE,
		    MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
	if (addr == MAP_FAILED) {
		ret = -errno;
		fprintf(stderr, "mmap: %s\n", strerror(errno));
		return ret;
	}
	ret = vmr_uffd_map(pg->uffd, p->addr, p->len,
			   VMR_PROT_READ | VMR_PROT_WRITE, p->offset,
			   VMR_UFFD_MISSING, &pg->ops, sizeof(pg->ops),
			   &pg->store);
	if (ret < 0) {
		fprintf(stderr, "vmr_uffd_map: %s\n", strerror(-ret));
		return ret;
	}
	part_unlock(p);
	return 0;
}

/* A SIGBUS or SIGSEGV in a touching thread: a page the runtime poisoned
 * or left unregistered.  Say so and stop. */
static void on_fatal_signal(int sig)
{
	static const char msg[] = "uffd_file_pager: SIGBUS/SIGSEGV while "
				  "touching the area (a poisoned page?)\n";

	(void)sig;
	if (write(2, msg, sizeof(msg) - 1) < 0)
		_exit(1);
	_exit(1);
}

static int make_test_file(const char *spec, char *path, size_t pathlen)
{
	const char *comma = strrchr(spec, ',');
	unsigned long long size;
	uint64_t s = 0x9e3779b97f4a7c15ull, buf[8192];
	char *end;
	FILE *f;

	if (!comma || (size_t)(comma - spec) >= pathlen)
		return -EINVAL;
	memcpy(path, spec, (size_t)(comma - spec));
	path[comma - spec] = '\0';
	size = strtoull(comma + 1, &end, 0);
	if (*end == 'K' || *end == 'k')
		size <<= 10;
	else if (*end == 'M' || *end == 'm')
		size <<= 20;
	else if (*end == 'G' || *end == 'g')
		size <<= 30;
	f = fopen(path, "wb");
	if (!f)
		return -errno;
	while (size) {
		size_t n = size < sizeof(buf) ? (size_t)size : sizeof(buf), k;

		for (k = 0; k < sizeof(buf) / 8; k++)
			buf[k] = xorshift(&s);
		if (fwrite(buf, 1, n, f) != n) {
			fclose(f);
			return -EIO;
		}
		size -= n;
	}
	return fclose(f) ? -errno : 0;
}

static const char *arg_value(const char *arg, const char *name)
{
	size_t n = strlen(name);

	return strncmp(arg, name, n) == 0 ? arg + n : NULL;
}

static void usage(const char *argv0)
{
	fprintf(stderr,
		"usage: %s FILE [--threads=N] [--handlers=N] [--seconds=S | "
		"--pages=N]\n"
		"       [--parts=N] [--remap-ms=N] [--policy=space|vma|hold] "
		"[--seed=N]\n"
		"       %s --make-test-file=PATH,SIZE [FILE] [options]\n",
		argv0, argv0);
	exit(2);
}

int main(int argc, char **argv)
{
	struct toucher touchers[MAX_THREADS];
	struct vmr_space_config scfg;
	struct vmr_uffd_config ucfg;
	struct vmr_uffd_stats us;
	struct vmr_stats ss;
	struct pager pg;
	struct sigaction sa;
	struct stat stb;
	const struct rcu_flavor_struct *flavor;
	const char *file = NULL, *v;
	static char made[4096];
	unsigned int nthreads = 4, remap_ms = 10, t;
	long handlers = sysconf(_SC_NPROCESSORS_ONLN);
	enum vmr_retry_policy policy = VMR_RETRY_VMA;
	const char *policy_name = "retry_vma";
	double seconds = 0, t0, elapsed, last_progress;
	uint64_t seed = (uint64_t)time(NULL), last_touched = 0;
	unsigned long remaps = 0, touches = 0, writes = 0, skipped = 0;
	unsigned long bad_pages = 0, failures = 0;
	size_t i, nparts = 16;
	int ret, k;

	memset(&pg, 0, sizeof(pg));
	for (k = 1; k < argc; k++) {
		if ((v = arg_value(argv[k], "--threads=")))
			nthreads = (unsigned int)strtoul(v, NULL, 0);
		else if ((v = arg_value(argv[k], "--handlers=")))
			handlers = strtol(v, NULL, 0);
		else if ((v = arg_value(argv[k], "--seconds=")))
			seconds = strtod(v, NULL);
		else if ((v = arg_value(argv[k], "--pages=")))
			pg.target = strtoull(v, NULL, 0);
		else if ((v = arg_value(argv[k], "--parts=")))
			nparts = (size_t)strtoul(v, NULL, 0);
		else if ((v = arg_value(argv[k], "--remap-ms=")))
			remap_ms = (unsigned int)strtoul(v, NULL, 0);
		else if ((v = arg_value(argv[k], "--seed=")))
			seed = strtoull(v, NULL, 0);
		else if ((v = arg_value(argv[k], "--policy="))) {
			if (strcmp(v, "space") == 0)
				policy = VMR_RETRY_SPACE;
			else if (strcmp(v, "vma") == 0)
				policy = VMR_RETRY_VMA;
			else if (strcmp(v, "hold") == 0)
				policy = VMR_HOLD_IO;
			else
				usage(argv[0]);
			policy_name = policy == VMR_RETRY_SPACE ? "retry_space"
				      : policy == VMR_RETRY_VMA ? "retry_vma"
								: "hold_io";
		} else if ((v = arg_value(argv[k], "--make-test-file="))) {
			ret = make_test_file(v, made, sizeof(made));
			if (ret < 0) {
				fprintf(stderr, "--make-test-file=%s: %s\n", v,
					strerror(-ret));
				return 1;
			}
			if (!file)
				file = made;
		} else if (argv[k][0] == '-') {
			usage(argv[0]);
		} else {
			file = argv[k];
		}
	}
	if (!file || nthreads < 1 || nthreads > MAX_THREADS || handlers < 1 ||
	    nparts < 1 || seconds < 0)
		usage(argv[0]);

	/* The store: the file, read with pread() by the handler threads. */
	pg.store.fd = open(file, O_RDONLY);
	if (pg.store.fd < 0 || fstat(pg.store.fd, &stb) < 0 ||
	    stb.st_size == 0) {
		fprintf(stderr, "%s: %s\n", file,
			pg.store.fd < 0 ? strerror(errno) : "empty or unreadable");
		return 1;
	}
	pg.store.size = (uint64_t)stb.st_size;
	pg.page = (size_t)sysconf(_SC_PAGESIZE);
	pg.npages = (size_t)((pg.store.size + pg.page - 1) / pg.page);
	pg.len = pg.npages * pg.page;
	if (nparts > pg.npages)
		nparts = pg.npages;
	pg.part_pages = (pg.npages + nparts - 1) / nparts;
	pg.nparts = (pg.npages + pg.part_pages - 1) / pg.part_pages;
	if (!pg.target && !seconds)
		pg.target = pg.npages; /* as many touches as pages */

	/* The touching threads' random order: a shuffled list of pages. */
	pg.order = (size_t *)malloc(pg.npages * sizeof(*pg.order));
	pg.parts = (struct part *)calloc(pg.nparts, sizeof(*pg.parts));
	if (!pg.order || !pg.parts) {
		fprintf(stderr, "out of memory\n");
		return 1;
	}
	{
		uint64_t s = seed * 2 + 1;

		for (i = 0; i < pg.npages; i++)
			pg.order[i] = i;
		for (i = pg.npages - 1; i > 0; i--) {
			size_t j = (size_t)(xorshift(&s) % (i + 1)), x;

			x = pg.order[i];
			pg.order[i] = pg.order[j];
			pg.order[j] = x;
		}
	}

	/* The space mirrors the registered ranges; its policy decides whether
	 * a fault keeps its VMA-range lock across the store's pread(). */
	memset(&scfg, 0, sizeof(scfg));
	scfg.policy = policy;
	scfg.flags = VMR_SPACE_TIME_FAULTS;
	ret = vmr_space_create(&scfg, sizeof(scfg), &pg.space);
	if (ret < 0) {
		fprintf(stderr, "vmr_space_create: %s\n", strerror(-ret));
		return 1;
	}
	flavor = vmr_space_flavor(pg.space);
	vmr_space_register_thread(pg.space);

	memset(&ucfg, 0, sizeof(ucfg));
	ucfg.threads = (unsigned int)handlers;
	ucfg.fd = -1; /* open one */
	/* A page of a file, once discarded (MADV_DONTNEED), should read the
	 * file again, not zero: every event but REMOVE, which also lets the
	 * handler threads install pages while another one reads messages.
	 * A heap or a balloon, whose discarded memory must read zero, leaves
	 * this out. */
	ucfg.flags = VMR_UFFD_NO_REMOVE;
	ret = vmr_uffd_create(pg.space, &ucfg, sizeof(ucfg), &pg.uffd);
	if (ret == -ENOSYS || ret == -EPERM) {
		printf("uffd_file_pager: the kernel refuses userfaultfd here "
		       "(%s): skipped.\n"
		       "  Needs Linux >= 5.11 for unprivileged use "
		       "(UFFD_USER_MODE_ONLY), or sysctl\n"
		       "  vm.unprivileged_userfaultfd=1, or access to "
		       "/dev/userfaultfd, or root; containers'\n"
		       "  seccomp profiles often block the syscall.\n",
		       strerror(-ret));
		vmr_space_destroy(pg.space);
		vmr_rcu_unregister_thread(flavor);
		return EXIT_SKIP;
	}
	if (ret < 0) {
		fprintf(stderr, "vmr_uffd_create: %s\n", strerror(-ret));
		return 1;
	}

	/* The area: anonymous, private, file-sized, registered as a whole.
	 * No THP: the runtime installs 4 KiB pages. */
	pg.area = (unsigned char *)mmap(NULL, pg.len, PROT_READ | PROT_WRITE,
					MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (pg.area == MAP_FAILED) {
		perror("mmap");
		return 1;
	}
#ifdef MADV_NOHUGEPAGE
	madvise(pg.area, pg.len, MADV_NOHUGEPAGE);
#endif
	memset(&pg.ops, 0, sizeof(pg.ops));
	pg.ops.read = store_read;
	ret = vmr_uffd_map(pg.uffd, pg.area, pg.len,
			   VMR_PROT_READ | VMR_PROT_WRITE, 0, VMR_UFFD_MISSING,
			   &pg.ops, sizeof(pg.ops), &pg.store);
	if (ret < 0) {
		fprintf(stderr, "vmr_uffd_map: %s\n", strerror(-ret));
		return 1;
	}
	for (i = 0; i < pg.nparts; i++) {
		pg.parts[i].addr = pg.area + i * pg.part_pages * pg.page;
		pg.parts[i].offset = (uint64_t)i * pg.part_pages * pg.page;
		pg.parts[i].len = i + 1 < pg.nparts
					  ? pg.part_pages * pg.page
					  : pg.len - i * pg.part_pages * pg.page;
	}

	printf("uffd_file_pager: %s, %llu bytes (%zu pages), %u touching "
	       "threads, %ld handler threads, %s,\n  ",
	       file, (unsigned long long)pg.store.size, pg.npages, nthreads,
	       handlers, policy_name);
	if (remap_ms)
		printf("%zu parts, one remapped every %u ms, ", pg.nparts,
		       remap_ms);
	else
		printf("no remapping, ");
	if (pg.target)
		printf("%llu touches, ", (unsigned long long)pg.target);
	else
		printf("%.1f s, ", seconds);
	printf("seed %llu\n", (unsigned long long)seed);
	fflush(stdout);

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_fatal_signal;
	sigaction(SIGBUS, &sa, NULL);
	sigaction(SIGSEGV, &sa, NULL);

	memset(touchers, 0, sizeof(touchers));
	t0 = now_s();
	last_progress = t0;
	for (t = 0; t < nthreads; t++) {
		touchers[t].pg = &pg;
		touchers[t].rng = (seed + t + 1) * 0x2545f4914f6cdd1dull | 1;
		if (pthread_create(&touchers[t].thread, NULL, toucher_main,
				   &touchers[t])) {
			fprintf(stderr, "cannot start a touching thread\n");
			return 1;
		}
	}

	/* The main thread remaps random parts until the run is over, and
	 * watches for progress: a fault the runtime never resolves would
	 * leave its thread asleep for ever. */
	{
		uint64_t s = seed * 3 + 1;

		while (!__atomic_load_n(&pg.stop, __ATOMIC_RELAXED)) {
			double now = now_s();
			uint64_t n = __atomic_load_n(&pg.touched,
						     __ATOMIC_RELAXED);

			if (seconds && now - t0 >= seconds)
				break;
			if (n != last_touched) {
				last_touched = n;
				last_progress = now;
			} else if (now - last_progress > 10) {
				fprintf(stderr, "uffd_file_pager: no page "
						"touched for 10 s: a fault "
						"was never resolved\n");
				_exit(1);
			}
			if (!remap_ms) {
				sleep_ms(1);
				continue;
			}
			sleep_ms(remap_ms);
			if (remap_part(&pg, &pg.parts[xorshift(&s) %
						      pg.nparts]) < 0)
				_exit(1);
			remaps++;
		}
	}
	__atomic_store_n(&pg.stop, 1, __ATOMIC_RELAXED);
	for (t = 0; t < nthreads; t++) {
		pthread_join(touchers[t].thread, NULL);
		touches += touchers[t].touches;
		writes += touchers[t].writes;
		skipped += touchers[t].skipped;
		bad_pages += touchers[t].bad_pages;
	}
	elapsed = now_s() - t0;

	/* Counters first: the runtime's are gone with it. */
	vmr_uffd_stats(pg.uffd, &us, sizeof(us));
	vmr_uffd_destroy(pg.uffd); /* joins handlers, unregisters the area */
	munmap(pg.area, pg.len);
	vmr_space_stats(pg.space, &ss, sizeof(ss));

	printf("\n%-18s %10.3f s\n", "elapsed", elapsed);
	printf("%-18s %10lu  (%lu writes, %lu skipped while remapping)\n",
	       "pages touched", touches, writes, skipped);
	printf("%-18s %10lu\n", "parts remapped", remaps);
	printf("%-18s %10.0f  pages installed (copies + zero pages)\n",
	       "pages/s", (double)(us.copies + us.zeropages) / elapsed);
	printf("%-18s %10.0f\n", "touches/s", (double)touches / elapsed);
	printf("%-18s %10lu\n", "wrong pages", bad_pages);

	printf("\nuserfaultfd runtime (vmr_uffd_stats):\n");
#define SHOW(st, f) printf("  %-18s %12llu\n", #f, (unsigned long long)st.f)
	SHOW(us, messages);
	SHOW(us, batches);
	SHOW(us, faults);
	SHOW(us, coalesced);
	SHOW(us, copies);
	SHOW(us, zeropages);
	SHOW(us, wakes);
	SHOW(us, eexist);
	SHOW(us, eagain);
	SHOW(us, enoent);
	SHOW(us, esrch);
	SHOW(us, events_remove);
	SHOW(us, events_unmap);
	SHOW(us, poisoned);
	SHOW(us, store_errors);
	printf("\nspace (vmr_space_stats):\n");
	SHOW(ss, faults);
	SHOW(ss, vma_lock_success);
	SHOW(ss, vma_lock_abort);
	SHOW(ss, vma_lock_retry);
	SHOW(ss, vma_lock_miss);
	SHOW(ss, vma_retries);
	SHOW(ss, space_lock_faults);
	SHOW(ss, space_retries);
	SHOW(ss, page_wait_sleeps);
	SHOW(ss, result_ok);
	SHOW(ss, result_nopage);
	SHOW(ss, result_major);
	SHOW(ss, result_completed);
	SHOW(ss, result_sigsegv);
	SHOW(ss, result_sigbus);
	SHOW(ss, result_unfinished);
	SHOW(ss, bad_results);
	SHOW(ss, space_write_locks);
	printf("  %-18s %12.1f us (at most)\n", "fault p50",
	       (double)vmr_hist_percentile(ss.fault_latency_hist, 50) / 1e3);
	printf("  %-18s %12.1f us (at most)\n", "fault p99",
	       (double)vmr_hist_percentile(ss.fault_latency_hist, 99) / 1e3);

	/* What must hold whatever the timing. */
	if (bad_pages) {
		fprintf(stderr, "FAIL: %lu pages differ from the file\n",
			bad_pages);
		failures++;
	}
	/* Every page touched was registered and the file reads fine, so
	 * nothing may have been poisoned (or been tried: the counter also
	 * counts poison ioctls that found the range unregistered). */
	if (us.poisoned || us.store_errors || us.esrch || ss.bad_results) {
		fprintf(stderr, "FAIL: %llu pages poisoned, %llu store errors, "
				"%llu ESRCH, %llu bad handler results\n",
			(unsigned long long)us.poisoned,
			(unsigned long long)us.store_errors,
			(unsigned long long)us.esrch,
			(unsigned long long)ss.bad_results);
		failures++;
	}
	if (touches && !us.copies) {
		fprintf(stderr, "FAIL: pages were touched, none copied in\n");
		failures++;
	}
	ret = vmr_space_destroy(pg.space);
	if (ret < 0) {
		fprintf(stderr, "vmr_space_destroy: %s\n", strerror(-ret));
		failures++;
	}
	vmr_rcu_unregister_thread(flavor);
	close(pg.store.fd);
	free(pg.order);
	free(pg.parts);
	printf("\n%s\n", failures ? "FAILED" : "every byte read matched the "
					       "file");
	return failures ? 1 : 0;
}
