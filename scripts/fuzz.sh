#!/bin/bash
# scripts/fuzz.sh SECONDS — builds every libFuzzer target (tests/fuzz/CMakeLists.txt) with
# clang in build-fuzz and runs each for SECONDS (default 30) on a temporary copy of its seed
# corpus tests/fuzz/corpus/<name without fuzz_>/ (the committed corpus is never written),
# with the dictionary tests/fuzz/<name>.dict when there is one.
# Prints each target's executions; fails if any target crashes, leaks or trips a sanitizer.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${1:-30}
build=build-fuzz
flags="-fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer"
CC=clang cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_C_COMPILER=clang \
  -DHUBFS_FUZZ=ON -DHUBFS_CUDA=OFF -DCMAKE_C_FLAGS="$flags" >/dev/null
cmake --build "$build" -j "$(nproc)" --target hubfs_fuzzers

status=0
found=0
for fuzzer in "$build"/tests/fuzz/fuzz_*; do
  [ -f "$fuzzer" ] && [ -x "$fuzzer" ] || continue
  found=1
  name=$(basename "$fuzzer")
  work=$(mktemp -d)
  seeds="tests/fuzz/corpus/${name#fuzz_}"
  mkdir -p "$work/corpus" "$work/artifacts"
  if [ -d "$seeds" ]; then cp -R "$seeds/." "$work/corpus/"; fi
  dict=()
  if [ -f "tests/fuzz/$name.dict" ]; then dict=(-dict="tests/fuzz/$name.dict"); fi
  if "$fuzzer" -max_total_time="$seconds" -print_final_stats=1 -timeout=10 -rss_limit_mb=2048 \
       "${dict[@]}" -artifact_prefix="$work/artifacts/" "$work/corpus" >"$work/log" 2>&1; then
    executions=$(awk '/stat::number_of_executed_units/ {print $2}' "$work/log")
    echo "$name: ${executions:-?} executions in ${seconds}s, no crash"
  else
    echo "$name: FAILED (crash, leak or sanitizer report); log tail and reproducer:"
    tail -n 60 "$work/log"
    ls -l "$work/artifacts"
    mkdir -p "$build/fuzz-artifacts"
    cp "$work/artifacts/"* "$build/fuzz-artifacts/" 2>/dev/null || true
    status=1
  fi
  rm -rf "$work"
done
if [ "$found" = 0 ]; then
  echo "fuzz.sh: no fuzz targets were built" >&2
  exit 1
fi
exit "$status"
