#!/bin/sh
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# Runs the libFuzzer target for VMR_TEST_SECONDS seconds (default 2) on a
# fresh copy of the seed corpus, so that the inputs it adds stay in the
# build directory and never touch the checked-in corpus.  meson cannot read
# the environment into a test's arguments, hence this wrapper.  libFuzzer
# exits non-zero on a crash (a model mismatch aborts), a leak or a timeout,
# and leaves the input as WORK-crash-* next to the work directory.
#
#   run_fuzz.sh FUZZER SEED_DIR WORK_DIR [libFuzzer options...]
set -eu
fuzzer=$1
seeds=$2
work=$3
shift 3
secs=${VMR_TEST_SECONDS:-2}
secs=${secs%%.*}
[ -n "$secs" ] && [ "$secs" -gt 0 ] || secs=1
rm -rf "$work"
mkdir -p "$work"
cp "$seeds"/* "$work"/
exec "$fuzzer" -max_total_time="$secs" -timeout=60 -print_final_stats=1 \
	-artifact_prefix="$work-" "$@" "$work"
