#!/bin/bash
# The whole test suite: installs what is missing, builds, runs every test with ctest.
# With CI=true it also builds with AddressSanitizer+UndefinedBehaviorSanitizer and runs the
# suite again there, and runs each fuzz target for a bounded time.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh

jobs=$(nproc)
build_and_test() {  # build_and_test DIR [cmake options...]
  local dir=$1; shift
  cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo "$@" >/dev/null
  cmake --build "$dir" -j "$jobs"
  ctest --test-dir "$dir" --output-on-failure -j "$jobs"
}

build_and_test build

if [ "${CI:-}" = "true" ]; then
  echo "== sanitizer build (ASan + UBSan) =="
  ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    LSAN_OPTIONS="suppressions=$PWD/tests/lsan-suppressions.txt" \
    build_and_test build-asan -DHUBFS_SANITIZE=ON
  if [ -x scripts/fuzz.sh ]; then
    echo "== fuzzing (bounded) =="
    scripts/fuzz.sh "${FUZZ_SECONDS:-30}"
  fi
fi
