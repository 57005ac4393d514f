"""Memory of hubfs.iter_tensors over a 3 GB model (scripts/make_model.py's large preset, f16,
4 shards, read from a local directory): the peak resident memory it adds stays within the
staging ring and two of the largest tensors (the one the caller holds and the next one landing),
whatever the model's size and however slow the consumer, while load_rank holds the whole rank;
the streamed tensors are the model's (sampled bytes against safetensors' safe_open)."""
import json
import os
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "support"))
import hubemu  # noqa: E402

MIB = 1 << 20
STAGING = 10 * 8 * MIB  # the default ring: 8 readers + 2 buffers of 8 MiB
SLACK = 64 * MIB        # allocator and interpreter noise

MEASURE = r"""
import json, sys, time, torch, hubfs

def status(field):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith(field + ":"))

def sample(tensor):  # a few bytes of every 64 KiB, no copy of the tensor
    return int(tensor.reshape(-1).view(torch.uint8)[::65536].sum())

path, mode = sys.argv[1], sys.argv[2]
base = status("VmRSS")
total = largest = 0
samples = {}
if mode == "stream":
    for name, tensor in hubfs.iter_tensors(path, tp=1, rank=0):
        size = tensor.numel() * tensor.element_size()
        total, largest = total + size, max(largest, size)
        samples[name] = sample(tensor)
        del tensor
        time.sleep(0.01)  # slower than the reads, as a real consumer is: the reads must wait for it
else:
    state = hubfs.load_rank(path, tp=1, rank=0)
    total = sum(t.numel() * t.element_size() for t in state.values())
print(json.dumps({"grown": status("VmHWM") - base, "total": total, "largest": largest, "samples": samples}))
"""

REFERENCE = r"""
import json, sys, torch
from safetensors import safe_open
samples = {}
for shard in sys.argv[2:]:
    with safe_open(shard, framework="pt") as f:
        for name in f.keys():
            samples[name] = int(f.get_tensor(name).reshape(-1).view(torch.uint8)[::65536].sum())
print(json.dumps(samples))
"""


def run(script, *args):
    result = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def large_model():
    return hubemu.cached_model(preset="large", shards=4, dtype="f16")


def test_iter_tensors_holds_a_bounded_amount_whatever_the_model_size(large_model):
    shards = sorted(os.path.join(large_model, n) for n in os.listdir(large_model) if n.endswith(".safetensors"))
    size = sum(os.path.getsize(s) for s in shards)
    assert size > 3 * 10**9
    streamed = run(MEASURE, large_model, "stream")
    loaded = run(MEASURE, large_model, "load")
    bound = STAGING + 2 * streamed["largest"] + SLACK
    print(f"\nmodel {size / 1e9:.2f} GB, largest tensor {streamed['largest'] / MIB:.0f} MiB: peak RSS added by "
          f"iter_tensors {streamed['grown'] / MIB:.0f} MiB (bound {bound / MIB:.0f} MiB), by load_rank "
          f"{loaded['grown'] / MIB:.0f} MiB")
    assert streamed["total"] == loaded["total"] > 3 * 10**9
    assert streamed["grown"] < bound, streamed["grown"]
    assert loaded["grown"] > loaded["total"]  # the measure sees a whole rank held at once
    assert streamed["samples"] == run(REFERENCE, "-", *shards)
