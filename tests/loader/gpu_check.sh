#!/bin/bash
# tests/loader/gpu_check.sh — the loader checks that need a GPU, for a lent GPU machine
# (about a minute). Builds hubfs with CUDA (or uses $HUBFS_BIN), writes a ~440 MB
# Llama-shaped model (2 shards, GQA), and for TP 1 and TP 8 rank 3:
#   - loads to host memory and to cuda:0, printing GB/s for both;
#   - --verify-against-host: copies the device arena back and compares every byte with a
#     host load;
#   - --save from the device and compares the file with numpy slicing of the source.
# Exit status 0 only when every check passed.
set -euo pipefail
cd "$(dirname "$0")/../.."

if [ -z "${HUBFS_BIN:-}" ]; then
  build=${BUILD_DIR:-build-gpu}
  cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release | grep -i cuda || true
  cmake --build "$build" -j "$(nproc)" --target hubfs >/dev/null
  HUBFS_BIN=$build/fs/hubfs
fi
nvidia-smi -L || true
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

python3 - "$work/model" <<'PY'
import sys
sys.path.insert(0, "tests/loader")
from loader_models import llama_config, llama_tensors, write_model
config = llama_config(layers=2, hidden=2048, intermediate=5632, vocab=32000, heads=32, kv_heads=8)
write_model(sys.argv[1], config, llama_tensors(config), shards=2)
PY
cat "$work"/model/*.safetensors >/dev/null  # warm the page cache

for ranks in "1 0" "8 3"; do
  set -- $ranks
  echo "== TP $1 rank $2 =="
  "$HUBFS_BIN" load "$work/model" --tp "$1" --rank "$2" --device cpu
  "$HUBFS_BIN" load "$work/model" --tp "$1" --rank "$2" --device cuda:0
  "$HUBFS_BIN" load "$work/model" --tp "$1" --rank "$2" --device cuda:0 --verify-against-host \
    --save "$work/rank.safetensors"
  python3 - "$work/model" "$work/rank.safetensors" "$1" "$2" <<'PY'
import json, sys
sys.path.insert(0, "tests/loader")
from loader_models import expected_slice, read_safetensors
import numpy as np, os
model, saved, tp, rank = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
config = json.load(open(os.path.join(model, "config.json")))
source = {}
for f in os.listdir(model):
    if f.endswith(".safetensors"):
        source.update(read_safetensors(os.path.join(model, f)))
out = read_safetensors(saved)
assert sorted(out) == sorted(source)
for name, (dtype, array) in source.items():
    expected = np.ascontiguousarray(expected_slice(name, array, config, tp, rank))
    assert out[name][0] == dtype and np.array_equal(out[name][1].view(np.uint8), expected.view(np.uint8)), name
print(f"saved from the device: {len(out)} tensors equal numpy slices of the source")
PY
done
echo "gpu_check: all passed"
