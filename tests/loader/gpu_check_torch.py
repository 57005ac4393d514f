"""The Python package's GPU face on a real GPU (run by gpu_check.sh, not by ctest):
gpu_check_torch.py MODEL K [FIGURES_MODEL].

- hubfs.load_rank(device="cuda:K") gives torch tensors on cuda:K whose bytes are numpy's
  slices of the source, compared by a torch kernel on the current stream right after the load
  (no synchronize in between: the load must hand out landed data), and torch's allocator made
  none of them (zero-copy: they are views of the loader's arena);
- the arena stays while one tensor does and goes back to the GPU when the last one goes;
- iter_tensors(device="cuda:K") streams the same bytes; device="cuda" is cuda:0 when one GPU is
  visible; framework="dlpack" tensors reach torch and CuPy without a copy;
- figures: the whole model (FIGURES_MODEL if given) to cuda:K by load_rank next to
  safetensors.torch.load_file(device=) and load_file to host + .to(), each the best of three
  from the page cache.

Prints "figure<TAB>what<TAB>value<TAB>unit" and "FAIL: ..." lines; exit status 0 when every
check passed."""
import gc
import json
import os
import sys
import time

import torch  # first: libhubfs then shares torch's CUDA runtime

import numpy as np
import safetensors.torch

import hubfs

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from loader_models import expected_slice, read_safetensors  # noqa: E402

TP, RANK = 8, 3
MIB = 1 << 20
failures = []


def check(condition, what):
    if not condition:
        failures.append(what)
        print("FAIL: " + what, flush=True)


def figure(what, value, unit):
    print(f"figure\t{what}\t{value:.2f}\t{unit}", flush=True)


def as_bytes(tensor):
    return tensor.reshape(-1).view(torch.uint8)


def reference(model, config, tp, rank):
    """name -> numpy array of the rank's slice, from the files read by the safetensors package."""
    out = {}
    for name in sorted(os.listdir(model)):
        if name.endswith(".safetensors"):
            for tensor, (_, array) in read_safetensors(os.path.join(model, name)).items():
                out[tensor] = np.ascontiguousarray(expected_slice(tensor, array, config, tp, rank))
    return out


def same_bytes(got, expected, device, what):
    """Compared on the GPU by a kernel queued on torch's current stream."""
    check(set(got) == set(expected), f"{what}: tensor names differ")
    for name, array in expected.items():
        if name not in got:
            continue
        tensor = got[name]
        check(tensor.device == device, f"{what}: {name} is on {tensor.device}, not {device}")
        check(tuple(tensor.shape) == array.shape, f"{what}: {name} has shape {tuple(tensor.shape)}")
        want = torch.from_numpy(array.view(np.uint8).reshape(-1).copy()).to(device)
        check(torch.equal(as_bytes(tensor), want), f"{what}: {name}'s bytes differ from numpy's slice")


def warm_up(device):
    """Loads the kernels same_bytes runs: CUDA loads modules lazily, into device memory that
    would otherwise show up in the free-memory checks below."""
    probe = torch.from_numpy(np.arange(64, dtype=np.uint16)).to(device)
    torch.equal(as_bytes(probe), as_bytes(probe.clone()))
    del probe
    torch.cuda.synchronize(device)
    torch.cuda.empty_cache()


def check_load(model, expected, device):
    warm_up(device)
    before = torch.cuda.memory_allocated(device)
    free_before = torch.cuda.mem_get_info(device)[0]
    state = hubfs.load_rank(model, tp=TP, rank=RANK, device=str(device))
    check(torch.cuda.memory_allocated(device) == before,
          "load_rank: torch's allocator grew, so the tensors were copied, not views of the arena")
    rank_bytes = sum(a.nbytes for a in expected.values())
    torch.cuda.empty_cache()
    free_loaded = torch.cuda.mem_get_info(device)[0]
    check(free_before - free_loaded >= rank_bytes,
          f"load_rank: the GPU lost {(free_before - free_loaded) / MIB:.1f} MiB for a {rank_bytes / MIB:.1f} MiB rank")
    same_bytes(state, expected, device, "load_rank")
    check({t.dtype for t in state.values()} == {torch.bfloat16, torch.float16, torch.float32},
          "load_rank: dtypes are not BF16/F16/F32 as torch types: " + str({t.dtype for t in state.values()}))

    kept_name = max(state, key=lambda n: state[n].numel())
    kept = state[kept_name]
    del state
    gc.collect()
    want = torch.from_numpy(expected[kept_name].view(np.uint8).reshape(-1).copy()).to(device)
    check(torch.equal(as_bytes(kept), want), "a kept tensor's bytes changed after the others went")
    del want
    torch.cuda.synchronize(device)
    torch.cuda.empty_cache()
    free_kept = torch.cuda.mem_get_info(device)[0]
    check(free_kept <= free_loaded + 16 * MIB, "the arena went back to the GPU while a tensor of it was alive")
    del kept
    gc.collect()
    torch.cuda.synchronize(device)
    torch.cuda.empty_cache()
    free_after = torch.cuda.mem_get_info(device)[0]
    check(free_after - free_kept >= rank_bytes - 16 * MIB,
          f"the arena stayed after the last tensor went: {(free_after - free_kept) / MIB:.1f} MiB came back")
    print(f"  load_rank(device={str(device)!r}): {len(expected)} tensors equal numpy slices, "
          f"zero-copy, arena freed with the last tensor", flush=True)


def check_stream_and_dlpack(model, expected, device):
    streamed = {name: tensor for name, tensor in
                hubfs.iter_tensors(model, tp=TP, rank=RANK, device=str(device))}
    same_bytes(streamed, expected, device, "iter_tensors")
    del streamed

    raw = hubfs.load_rank(model, tp=TP, rank=RANK, device=str(device), framework="dlpack")
    name = next(iter(raw))
    viewed = torch.from_dlpack(raw[name])
    check(viewed.data_ptr() == raw[name].data_ptr, "torch.from_dlpack copied a hubfs.Tensor")
    check(viewed.device == device, f"torch.from_dlpack: on {viewed.device}")
    try:
        import cupy
    except ImportError:
        print("  CuPy is not installed: its from_dlpack check is left out", flush=True)
    else:
        with cupy.cuda.Device(device.index):
            array = cupy.from_dlpack(raw[name])
            check(array.data.ptr == raw[name].data_ptr, "cupy.from_dlpack copied a hubfs.Tensor")
            check(cupy.asarray(raw[name]).data.ptr == raw[name].data_ptr,
                  "cupy.asarray (__cuda_array_interface__) copied a hubfs.Tensor")
            got = cupy.asnumpy(array).view(np.uint8).reshape(-1)
            check(np.array_equal(got, expected[name].view(np.uint8).reshape(-1)),
                  f"CuPy reads other bytes than numpy's slice of {name}")
        del array
    del viewed, raw
    gc.collect()

    if torch.cuda.device_count() == 1:
        only = hubfs.load_rank(model, tp=TP, rank=RANK, device="cuda")
        check(next(iter(only.values())).device == torch.device("cuda", 0), "device='cuda' is not cuda:0")
        del only
    print("  iter_tensors, torch.from_dlpack" + (", CuPy" if "cupy" in sys.modules else "") +
          ": same bytes, no copy", flush=True)


def best_seconds(load, rounds=3):
    best = float("inf")
    for _ in range(rounds):
        gc.collect()
        torch.cuda.synchronize()
        start = time.perf_counter()
        loaded = load()
        torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
        del loaded
    return best


def figures(model, device):
    shards = sorted(os.path.join(model, f) for f in os.listdir(model) if f.endswith(".safetensors"))
    total = sum(os.path.getsize(s) for s in shards)
    where = str(device)
    loads = {
        f"hubfs.load_rank(device='{where}'), TP 1": lambda: hubfs.load_rank(model, tp=1, rank=0, device=where),
        f"hubfs.load_rank(device='{where}'), TP 8 rank 3 (bytes of the model)":
            lambda: hubfs.load_rank(model, tp=TP, rank=RANK, device=where),
        f"safetensors.torch.load_file(device='{where}') per shard":
            lambda: [safetensors.torch.load_file(s, device=where) for s in shards],
        "safetensors.torch.load_file + .to(device) per shard":
            lambda: [{k: v.to(device) for k, v in safetensors.torch.load_file(s).items()} for s in shards],
    }
    for what, load in loads.items():
        seconds = best_seconds(load)
        figure(f"python, {total / 1e9:.1f} GB model -> {where}: {what}", total / seconds / 1e9, "GB/s")
        figure(f"python, {total / 1e9:.1f} GB model -> {where}: {what}", seconds * 1e3, "ms")


def main():
    model, index = sys.argv[1], int(sys.argv[2])
    device = torch.device("cuda", index)
    torch.cuda.init()
    with open(os.path.join(model, "config.json")) as f:
        config = json.load(f)
    expected = reference(model, config, TP, RANK)
    check_load(model, expected, device)
    check_stream_and_dlpack(model, expected, device)
    figures(sys.argv[3] if len(sys.argv) > 3 else model, device)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
