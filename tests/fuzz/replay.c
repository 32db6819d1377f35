/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The fuzz target without libFuzzer: feeds files, the files of
 * directories, or random inputs to LLVMFuzzerTestOneInput(), so that the
 * corpus runs in gcc builds, under valgrind and under TSan (where
 * libFuzzer is not available), and so that the default suite fuzzes a
 * little even there.  A mismatch aborts inside the target, with the
 * message of the check that failed; the driver names each file first,
 * and for a random input it prints the seed and, from a SIGABRT handler,
 * writes the input to fuzz-crash-SEED-N in the working directory so that
 * it can be replayed and added to the corpus.  An input still running
 * after HANG_SECONDS is a hang (a leaked lock makes the next update wait
 * forever): SIGALRM turns it into the same abort.
 *
 *   fuzz_replay FILE|DIR...             run each file once
 *   fuzz_replay --random SECONDS [--seed S]
 *                                       random inputs for SECONDS seconds
 *                                       (0: VMR_TEST_SECONDS, default 2)
 *   fuzz_replay --write-seeds DIR [--seed S]
 *                                       write the seed corpus
 *
 * Random inputs are short byte strings from a xorshift generator, seeded
 * by --seed, else VMR_TEST_SEED, else the clock; the seed is printed.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FZ_MAX_INPUT (1u << 20)
/* An input that runs this long has hung (a lock leaked, say). */
#define HANG_SECONDS 60

static uint8_t buf[FZ_MAX_INPUT];
/* The random input that runs, written out if it aborts (else no name). */
static size_t cur_len;
static char crash_name[64];

static int run_file(const char *path)
{
	FILE *f = fopen(path, "rb");
	size_t n;

	if (!f) {
		fprintf(stderr, "fuzz_replay: %s: %s\n", path, strerror(errno));
		return 1;
	}
	n = fread(buf, 1, sizeof(buf), f);
	fclose(f);
	fprintf(stderr, "fuzz_replay: %s (%zu bytes)\n", path, n);
	alarm(HANG_SECONDS);
	LLVMFuzzerTestOneInput(buf, n);
	alarm(0);
	return 0;
}

static int cmp_names(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The files of @dir in name order, so runs are reproducible. */
static int run_dir(const char *dir, unsigned int *count)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	char **names = NULL, path[4096];
	size_t n = 0, cap = 0;
	int err = 0;

	if (!d) {
		fprintf(stderr, "fuzz_replay: %s: %s\n", dir, strerror(errno));
		return 1;
	}
	while ((e = readdir(d))) {
		if (e->d_name[0] == '.')
			continue;
		if (n == cap) {
			cap = cap ? 2 * cap : 64;
			names = realloc(names, cap * sizeof(*names));
			if (!names)
				abort();
		}
		names[n] = strdup(e->d_name);
		if (!names[n++])
			abort();
	}
	closedir(d);
	if (n)
		qsort(names, n, sizeof(*names), cmp_names);
	for (size_t i = 0; i < n; i++) {
		snprintf(path, sizeof(path), "%s/%s", dir, names[i]);
		err |= run_file(path);
		(*count)++;
		free(names[i]);
	}
	free(names);
	return err;
}

static uint64_t rng;

static uint64_t next(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return rng;
}

static void seed_rng(uint64_t seed)
{
	rng = seed * 0x9e3779b97f4a7c15ull + 1;
	for (int i = 0; i < 8; i++)
		next();
}

/* A random input: mostly small bytes, with runs of 0xff-ish edge values. */
static size_t random_input(void)
{
	size_t n = 1 + next() % 400;

	for (size_t i = 0; i < n; i++) {
		uint64_t v = next();

		buf[i] = (v >> 8) % 16 == 0 ? (uint8_t)(0xf0 | (v & 0xf)) :
					      (uint8_t)v;
	}
	return n;
}

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static uint64_t pick_seed(const char *arg)
{
	const char *env = getenv("VMR_TEST_SEED");

	if (arg)
		return strtoull(arg, NULL, 0);
	if (env && *env)
		return strtoull(env, NULL, 0);
	return (uint64_t)time(NULL) ^ ((uint64_t)clock() << 20);
}

static void on_hang(int sig)
{
	(void)sig;
	(void)!write(2, "fuzz_replay: input hung\n", 24);
	abort(); /* on_abort() saves a random input */
}

static void on_abort(int sig)
{
	int fd = crash_name[0] ?
			 open(crash_name, O_WRONLY | O_CREAT | O_TRUNC, 0644) :
			 -1;

	if (fd >= 0) {
		if (write(fd, buf, cur_len) == (ssize_t)cur_len)
			(void)!write(2, "fuzz_replay: input saved\n", 25);
		close(fd);
	}
	signal(sig, SIG_DFL);
	raise(sig);
}

static int run_random(double seconds, uint64_t seed)
{
	const char *env = getenv("VMR_TEST_SECONDS");
	double end;
	unsigned long count = 0;

	if (seconds <= 0)
		seconds = env && *env ? atof(env) : 2;
	printf("fuzz_replay: random inputs for %.1f s, seed %llu\n", seconds,
	       (unsigned long long)seed);
	fflush(stdout);
	seed_rng(seed);
	end = now() + seconds;
	signal(SIGABRT, on_abort);
	do {
		cur_len = random_input();
		snprintf(crash_name, sizeof(crash_name), "fuzz-crash-%llu-%lu",
			 (unsigned long long)seed, count);
		alarm(HANG_SECONDS);
		LLVMFuzzerTestOneInput(buf, cur_len);
		alarm(0);
		count++;
	} while (now() < end);
	signal(SIGABRT, SIG_DFL);
	printf("fuzz_replay: %lu random inputs passed\n", count);
	return 0;
}

/*
 * The seed corpus: random inputs of growing length from a fixed seed,
 * each starting with a byte that picks the space or the tree and, for a
 * space, a config byte that cycles through the granularities and
 * policies, so that the fuzzer starts from every mode.
 */
static int write_seeds(const char *dir, uint64_t seed)
{
	char path[4096];

	mkdir(dir, 0755);
	seed_rng(seed);
	for (unsigned int i = 0; i < 40; i++) {
		size_t n = 16 + (size_t)i * 6 + next() % 16;
		FILE *f;

		for (size_t k = 0; k < n; k++)
			buf[k] = (uint8_t)next();
		buf[0] = (uint8_t)(i % 5 == 4);     /* one in five a tree */
		buf[1] = (uint8_t)((i * 8) & 0x3f); /* page, granule, policy */
		buf[2] = (uint8_t)(i * 7);          /* retries, timing */
		buf[3] = 0;                         /* a good config */
		snprintf(path, sizeof(path), "%s/seed-%02u", dir, i);
		f = fopen(path, "wb");
		if (!f || fwrite(buf, 1, n, f) != n || fclose(f)) {
			fprintf(stderr, "fuzz_replay: %s: %s\n", path,
				strerror(errno));
			return 1;
		}
	}
	return 0;
}

int main(int argc, char **argv)
{
	const char *seed_arg = NULL;
	unsigned int count = 0;
	int err = 0;

	signal(SIGALRM, on_hang);
	for (int i = 1; i + 1 < argc; i++)
		if (!strcmp(argv[i], "--seed"))
			seed_arg = argv[i + 1];
	if (argc >= 3 && !strcmp(argv[1], "--random"))
		return run_random(atof(argv[2]), pick_seed(seed_arg));
	if (argc >= 3 && !strcmp(argv[1], "--write-seeds"))
		return write_seeds(argv[2], seed_arg ? pick_seed(seed_arg) : 1);
	if (argc < 2) {
		fprintf(stderr, "usage: %s FILE|DIR... | --random SECONDS "
				"[--seed S] | --write-seeds DIR [--seed S]\n",
			argv[0]);
		return 2;
	}
	for (int i = 1; i < argc; i++) {
		struct stat st;

		if (!strcmp(argv[i], "--seed")) {
			i++;
			continue;
		}
		if (stat(argv[i], &st) == 0 && S_ISDIR(st.st_mode)) {
			err |= run_dir(argv[i], &count);
		} else {
			err |= run_file(argv[i]);
			count++;
		}
	}
	printf("fuzz_replay: %u inputs passed\n", count);
	return err;
}
