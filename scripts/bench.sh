#!/bin/bash
# The benchmark in one command: installs the peers (nginx, aria2, rclone, httpdirfs) and
# matplotlib, builds hubfs and libhubfs in Release mode in build-bench/, and runs scripts/bench.py, which
# prints a markdown table and writes bench-results.{json,md,png} to /tmp/hubfs-bench/results
# (override with --out DIR). The generated model stays in /tmp/hubfs-bench for the next run.
#
#   scripts/bench.sh            # full: 3 runs per figure, loopback + WAN profile, ~20 min on 2 cores
#   scripts/bench.sh --quick    # one run, shorter time caps (development)
#   scripts/bench.sh --help     # every option of scripts/bench.py
#
# Run as root: the warm re-read drops the kernel page cache (/proc/sys/vm/drop_caches).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh --bench
# No -Werror here: a benchmark measures, CI judges warnings (and Release's optimizer warns where
# CI's RelWithDebInfo does not). libhubfs: the loader section (hubfs.load_rank, iter_tensors).
cmake -S . -B build-bench -DCMAKE_BUILD_TYPE=Release -DHUBFS_WERROR=OFF >/dev/null
cmake --build build-bench -j "$(nproc)" --target hubfs hubfs_shared >/dev/null
exec python3 scripts/bench.py --hubfs build-bench/fs/hubfs "$@"
