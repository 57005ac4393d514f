#!/bin/bash
# The main job end to end, offline, on an embedded default: installs what is missing, builds,
# starts the local Hub emulator with a generated Llama-shaped model, mounts it with hubfs,
# lists and inspects the model, reads one tensor, loads a tensor-parallel rank, and unmounts.
set -euo pipefail
cd "$(dirname "$0")/.."
repo_dir=$(pwd)

scripts/install-deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j "$(nproc)" >/dev/null
hubfs=$repo_dir/build/fs/hubfs

work=$(mktemp -d /tmp/hubfs-demo.XXXXXX)
mountpoint=$work/hf
emulator_pid=""
cleanup() {
  if mountpoint -q "$mountpoint" 2>/dev/null; then
    fusermount3 -u "$mountpoint" 2>/dev/null || fusermount3 -uz "$mountpoint" 2>/dev/null || true
  fi
  [ -n "$emulator_pid" ] && kill "$emulator_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT INT TERM

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "Generating a Llama-shaped model (3 shards, f16: numpy has no bfloat16) and a local Hub that serves it"
python3 scripts/make_model.py --out "$work/model" --preset small --shards 3 --dtype f16 >/dev/null
python3 scripts/hub_emulator.py import "$work/hub" demo-org/demo-llama "$work/model" >/dev/null
python3 scripts/hub_emulator.py serve "$work/hub" --port 0 --cdn-port 0 \
  --ready-file "$work/ready.json" --log "$work/requests.log" 2>"$work/emulator.err" &
emulator_pid=$!
for _ in $(seq 100); do [ -s "$work/ready.json" ] && break; sleep 0.1; done
endpoint=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["hub"])' "$work/ready.json")
echo "Hub emulator at $endpoint"

step "hubfs mount $mountpoint"
mkdir -p "$mountpoint"
HF_ENDPOINT=$endpoint "$hubfs" mount "$mountpoint" --cache-dir "$work/cache"
for _ in $(seq 50); do mountpoint -q "$mountpoint" && break; sleep 0.1; done

step "ls -l $mountpoint/demo-org/demo-llama"
ls -l "$mountpoint/demo-org/demo-llama"

step "hubfs inspect (reads safetensors headers only)"
"$hubfs" inspect "$mountpoint/demo-org/demo-llama" | tail -n 12

step "Reading one tensor slice with the safetensors package, through the mount"
python3 - "$mountpoint/demo-org/demo-llama" <<'PY'
import json, sys
from safetensors import safe_open
model = sys.argv[1]
index = json.load(open(f"{model}/model.safetensors.index.json"))
name = "model.layers.0.self_attn.q_proj.weight"
with safe_open(f"{model}/{index['weight_map'][name]}", framework="numpy") as f:
    piece = f.get_slice(name)[0:4]
    print(f"{name}: shape {f.get_slice(name).get_shape()}, rows 0..3 read ({piece.nbytes} bytes):")
    print(piece[:, :6])
PY

step "hubfs load --tp 2 --rank 1 --device cpu"
"$hubfs" load "$mountpoint/demo-org/demo-llama" --tp 2 --rank 1 --device cpu

step "What was fetched (.hubfs/stats)"
cat "$mountpoint/.hubfs/stats"; echo

step "Unmounting"
fusermount3 -u "$mountpoint"
echo "done."
