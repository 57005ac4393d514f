#!/bin/bash
# tests/loader/gpu_check.sh — the loader's checks and figures that need a GPU: one run, a few
# minutes on an H200 machine (the build is most of it). Builds hubfs and hubfs_cuda_check with
# the CUDA toolkit (cmake; $BUILD_DIR, default build-gpu), writes a ~440 MB Llama-shaped model
# (2 shards, GQA; row-parallel pieces of 512 and 1,408 bytes at TP 8), then:
#   - on every visible GPU up to cuda:1: TP 1 and TP 8 rank 3 loaded with --verify-against-host
#     (every byte copied back and compared with a host load) and --save (compared with numpy
#     slices of the source);
#   - a load to the last of those GPUs makes a context on it alone: asked inside the process
#     (cuDevicePrimaryCtxGetState) and seen from outside (nvidia-smi --query-compute-apps);
#   - with two GPUs, a thread working on cuda:0 that loads to cuda:1 is on cuda:0 afterwards;
#   - rank 3 of 8 from the local Hub emulator (gpu_check_hub.py), hf:// and a mount where FUSE
#     works, verified against a host load and numpy;
#   - compute-sanitizer (memcheck, leak check) finds no CUDA API error nor leak in a load;
#   - the Python package with PyTorch (gpu_check_torch.py): zero-copy tensors on each GPU whose
#     bytes are numpy's slices, freed with the last tensor; iter_tensors; DLPack to torch/CuPy;
#     its figures on a 4 GB Llama in 4 shards (8 layers, hidden 4096);
#   - figures: pinned host-to-device GB/s with 1 and 4 streams (pageable for reference), next
#     to the loader's GB/s from the page cache to host memory and to each GPU, what a 2-D
#     copy costs per row by width against compacting the rows and copying once, and the
#     package's load_rank next to safetensors.torch.load_file to the GPU.
# With HUBFS_PREBUILT=1, $BUILD_DIR already holds fs/hubfs, tests/loader/hubfs_cuda_check and
# libhubfs/libhubfs.so built with the CUDA target: gpu_stage.sh prepares that, with the
# libraries, for a GPU machine that lacks the build's.
# Prints the figures as a table. Exit status 0 only when every check passed.
set -euo pipefail
cd "$(dirname "$0")/../.."
export CUDA_DEVICE_ORDER=PCI_BUS_ID # cuda:K is then nvidia-smi's GPU K
build=${BUILD_DIR:-build-gpu}
work=$(mktemp -d)
pid=
cleanup() {
  [ -n "$pid" ] && kill "$pid" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT
failures=0
fail() { echo "FAIL: $*"; failures=$((failures + 1)); }
figure() { printf '%s\t%s\t%s\n' "$1" "$2" "$3" >>"$work/figures"; }

echo "== build ($build)"
if [ "${HUBFS_PREBUILT:-0}" = 1 ]; then
  echo "  prebuilt"
elif ! cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release >"$work/cmake.log" 2>&1; then
  cat "$work/cmake.log"
  exit 1
elif ! grep -q "CUDA toolkit .* found" "$work/cmake.log"; then
  grep -i cuda "$work/cmake.log" || true
  echo "gpu_check: cmake found no CUDA toolkit (put nvcc on PATH or set CUDAToolkit_ROOT)"
  exit 1
elif ! cmake --build "$build" -j "$(nproc)" --target hubfs hubfs_cuda_check hubfs_shared >"$work/build.log" 2>&1; then
  tail -40 "$work/build.log"
  exit 1
fi
hubfs=$build/fs/hubfs
check=$build/tests/loader/hubfs_cuda_check
nvidia-smi -L || true
gpus=$("$check" count)
if [ "$gpus" -lt 1 ]; then
  echo "gpu_check: no CUDA device visible"
  exit 1
fi
devices=0
[ "$gpus" -ge 2 ] && devices="0 1"
last=${devices##* }

echo "== model"
python3 - "$work/model" <<'PY'
import sys
sys.path.insert(0, "tests/loader")
from loader_models import llama_config, llama_tensors, write_model
config = llama_config(layers=2, hidden=2048, intermediate=5632, vocab=32000, heads=32, kv_heads=8)
write_model(sys.argv[1], config, llama_tensors(config), shards=2)
PY
cat "$work"/model/*.safetensors >/dev/null # the page cache holds it from here on

# The best GB/s of three loads (the summary line's figure).
best_load() {
  for _ in 1 2 3; do
    timeout 120 "$hubfs" load "$work/model" "$@" | sed -n 's/.* s, \([0-9.]*\) GB\/s.*/\1/p'
  done | sort -g | tail -1
}

same_as_numpy() { # same_as_numpy SAVED TP RANK
  python3 - "$work/model" "$@" <<'PY'
import json, os, sys
sys.path.insert(0, "tests/loader")
import numpy as np
from loader_models import expected_slice, read_safetensors
model, saved, tp, rank = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
config = json.load(open(os.path.join(model, "config.json")))
source = {}
for f in sorted(os.listdir(model)):
    if f.endswith(".safetensors"):
        source.update(read_safetensors(os.path.join(model, f)))
out = read_safetensors(saved)
assert sorted(out) == sorted(source), "tensor names differ"
for name, (dtype, array) in source.items():
    expected = np.ascontiguousarray(expected_slice(name, array, config, tp, rank))
    assert out[name][0] == dtype and np.array_equal(out[name][1].view(np.uint8), expected.view(np.uint8)), name
print(f"  saved from the device: {len(out)} tensors equal numpy slices of the source")
PY
}

for tp_rank in 1:0 8:3; do
  tp=${tp_rank%:*} rank=${tp_rank#*:}
  echo "== TP $tp rank $rank"
  figure "loader, page cache -> host memory, TP $tp rank $rank" \
    "$(best_load --tp "$tp" --rank "$rank" --device cpu)" GB/s
  for d in $devices; do
    figure "loader, page cache -> cuda:$d, TP $tp rank $rank" \
      "$(best_load --tp "$tp" --rank "$rank" --device "cuda:$d")" GB/s
    rm -f "$work/rank.safetensors"
    if timeout 300 "$hubfs" load "$work/model" --tp "$tp" --rank "$rank" --device "cuda:$d" \
      --verify-against-host --save "$work/rank.safetensors"; then
      same_as_numpy "$work/rank.safetensors" "$tp" "$rank" ||
        fail "cuda:$d TP $tp rank $rank: the saved slices differ from numpy's"
    else
      fail "cuda:$d TP $tp rank $rank: load or verify failed"
    fi
  done
done

echo "== contexts of a load to cuda:$last"
# nvidia-smi numbers GPUs by PCI bus, as CUDA_DEVICE_ORDER=PCI_BUS_ID does cuda:K, unless
# CUDA_VISIBLE_DEVICES renumbers them.
physical=$last
if [ -n "${CUDA_VISIBLE_DEVICES:-}" ]; then
  IFS=, read -ra visible <<<"$CUDA_VISIBLE_DEVICES"
  physical=${visible[$last]}
fi
mkfifo "$work/go"
"$check" contexts "$work/model" "$last" 8 3 pause <"$work/go" >"$work/contexts.out" 2>&1 &
pid=$!
exec 3>"$work/go"
for _ in $(seq 300); do
  grep -q '^ready' "$work/contexts.out" && break
  kill -0 "$pid" 2>/dev/null || break
  sleep 0.2
done
if grep -q '^ready' "$work/contexts.out"; then
  buses=$(nvidia-smi --query-compute-apps=pid,gpu_bus_id --format=csv,noheader 2>/dev/null |
    awk -F', *' -v p="$pid" '$1 == p { print $2 }')
  if [ -z "$buses" ]; then
    echo "  nvidia-smi lists no compute process $pid (common in containers): the in-process check stands"
  else
    on=$(nvidia-smi --query-gpu=index,pci.bus_id --format=csv,noheader |
      awk -F', *' -v b="$buses" 'BEGIN { n = split(b, l, "\n"); for (i = 1; i <= n; i++) want[l[i]] = 1 }
        ($2 in want) { printf "%s%s", sep, $1; sep = " " }')
    echo "  nvidia-smi: process $pid has contexts on GPU(s) $on"
    [ "$on" = "$physical" ] || fail "nvidia-smi shows the load to cuda:$last on GPU(s) $on, expected $physical alone"
  fi
fi
exec 3>&-
if ! wait "$pid"; then
  fail "a load to cuda:$last made contexts elsewhere (or failed)"
fi
pid=
sed 's/^/  /' "$work/contexts.out"

if [ "$gpus" -ge 2 ]; then
  echo "== a thread on cuda:0 loads to cuda:1"
  "$check" restore "$work/model" 0 1 | sed 's/^/  /' || fail "the caller's device was not put back"
else
  echo "== one GPU: the cuda:1 checks (no context on GPU 0, the caller's device put back) need two"
fi

echo "== from the Hub emulator to cuda:$last: hf:// and a mount, cold"
mkdir -p "$work/hub"
hub_ok=0
PYTHONUNBUFFERED=1 python3 tests/loader/gpu_check_hub.py "$work/model" "$hubfs" "cuda:$last" "$work/hub" \
  >"$work/hub.out" 2>&1 || hub_ok=$?
grep -v '^figure' "$work/hub.out" || true
grep '^figure' "$work/hub.out" | cut -f2- >>"$work/figures" || true
if [ "$hub_ok" -ne 0 ]; then
  fail "a load from the Hub emulator to cuda:$last"
else
  for saved in "$work"/hub/*.safetensors; do
    same_as_numpy "$saved" 8 3 || fail "$(basename "$saved" .safetensors) load to cuda:$last differs from numpy"
  done
fi

echo "== compute-sanitizer"
if command -v compute-sanitizer >/dev/null; then
  if timeout 300 compute-sanitizer --tool memcheck --leak-check full --error-exitcode 9 \
    "$hubfs" load "$work/model" --tp 8 --rank 3 --device "cuda:$last" >"$work/sanitizer.out" 2>&1; then
    echo "  memcheck: no error, no leak"
  else
    tail -30 "$work/sanitizer.out"
    fail "compute-sanitizer found errors in a load to cuda:$last"
  fi
else
  echo "  compute-sanitizer is not on PATH: left out"
fi

echo "== a 4 GB model for the Python figures"
python3 - "$work/large" <<'PY'
import sys
sys.path.insert(0, "tests/loader")
from loader_models import llama_config, llama_tensors, write_model
config = llama_config(layers=8, hidden=4096, intermediate=14336, vocab=32000, heads=32, kv_heads=8)
write_model(sys.argv[1], config, llama_tensors(config), shards=4)
PY
cat "$work"/large/*.safetensors >/dev/null
for d in $devices; do
  echo "== PyTorch on cuda:$d"
  HUBFS_LIBRARY="$build/libhubfs/libhubfs.so" PYTHONPATH="python${PYTHONPATH:+:$PYTHONPATH}" \
    timeout 300 python3 tests/loader/gpu_check_torch.py "$work/model" "$d" "$work/large" >"$work/torch.out" 2>&1 ||
    fail "the Python package on cuda:$d"
  grep -v '^figure' "$work/torch.out" || true
  grep '^figure' "$work/torch.out" | cut -f2- >>"$work/figures" || true
done

echo "== copies"
for d in $devices; do
  "$check" bandwidth "$d" | grep '^figure' | cut -f2- >>"$work/figures" || fail "bandwidth on cuda:$d"
done
"$check" rows 0 | grep '^figure' | cut -f2- >>"$work/figures" || fail "2-D copy figures"

echo
echo "== figures ($(nvidia-smi --query-gpu=name --format=csv,noheader | head -1))"
while IFS=$'\t' read -r what value unit; do
  printf '%-68s %10s %s\n' "$what" "$value" "$unit"
done <"$work/figures"
echo
if [ "$failures" -eq 0 ]; then
  echo "gpu_check: all passed"
else
  echo "gpu_check: $failures check(s) failed"
  exit 1
fi
