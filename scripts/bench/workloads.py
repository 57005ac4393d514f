#!/usr/bin/env python3
"""The benchmark's read workloads, each run in a child process (`workloads.py JSON`) so a hung
filesystem can be killed without taking the benchmark down. Each prints JSON lines: partial
progress, then its result.

Also the tensor-parallel plan: which slice of each tensor a rank needs, computed from the
model's own headers and config.json with the Llama rules of shared/design/loader-design.md
(independently of the hubfs loader).
"""
import json
import os
import random
import struct
import sys
import time

READ_CHUNK = 1 << 20  # like dd bs=1M
PROGRESS_EVERY = 64 << 20
REPORT_PROGRESS = False  # on when run as the benchmark's child process


def progress(**fields):
    """A partial result line: the parent takes the last one if it must kill a reader that
    overran its time cap inside one long read."""
    if REPORT_PROGRESS:
        fields["complete"] = False
        print(json.dumps(fields), flush=True)


# --------------------------------------------------------------------------------------------
# Workloads
# --------------------------------------------------------------------------------------------


def sequential_read(path, cap_s, limit_bytes=None):
    """Reads the file front to back in 1 MiB reads until its end, limit_bytes or cap_s."""
    buf = bytearray(READ_CHUNK)
    view = memoryview(buf)
    total = 0
    started = time.monotonic()
    progress(bytes=0, seconds=0.0)
    fd = os.open(path, os.O_RDONLY)
    try:
        while limit_bytes is None or total < limit_bytes:
            want = READ_CHUNK if limit_bytes is None else min(READ_CHUNK, limit_bytes - total)
            n = os.readv(fd, [view[:want]])
            if n == 0:
                break
            total += n
            if total % PROGRESS_EVERY < n:
                progress(bytes=total, seconds=time.monotonic() - started)
            if time.monotonic() - started > cap_s:
                return {"bytes": total, "seconds": time.monotonic() - started, "complete": False}
    finally:
        os.close(fd)
    return {"bytes": total, "seconds": time.monotonic() - started, "complete": True}


def read_headers(paths, cap_s):
    """Reads the 8-byte length and the JSON header of each safetensors file, nothing more."""
    needed = 0
    started = time.monotonic()
    tensors = 0
    progress(bytes_needed=0, tensors=0, seconds=0.0)
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            (length,) = struct.unpack("<Q", os.pread(fd, 8, 0))
            header = os.pread(fd, length, 8)
            if len(header) != length:
                raise RuntimeError(f"{path}: short header read")
            tensors += sum(1 for k in json.loads(header) if k != "__metadata__")
            needed += 8 + length
        finally:
            os.close(fd)
        progress(bytes_needed=needed, tensors=tensors, seconds=time.monotonic() - started)
        if time.monotonic() - started > cap_s:
            return {"bytes_needed": needed, "tensors": tensors, "seconds": time.monotonic() - started,
                    "complete": False}
    return {"bytes_needed": needed, "tensors": tensors, "seconds": time.monotonic() - started, "complete": True}


def random_reads(path, count, size, seed, cap_s):
    """count reads of `size` bytes at seeded random 4 KiB-aligned offsets (the reads an mmap
    of the file causes: the kernel turns a page fault into one ~128 KiB read)."""
    file_size = os.path.getsize(path)
    rng = random.Random(seed)
    offsets = [rng.randrange(0, max(1, (file_size - size) // 4096)) * 4096 for _ in range(count)]
    done = 0
    started = time.monotonic()
    progress(reads=0, seconds=0.0)
    fd = os.open(path, os.O_RDONLY)
    try:
        for offset in offsets:
            if len(os.pread(fd, size, offset)) != min(size, file_size - offset):
                raise RuntimeError(f"{path}: short read at {offset}")
            done += 1
            progress(reads=done, seconds=time.monotonic() - started)
            if time.monotonic() - started > cap_s:
                break
    finally:
        os.close(fd)
    return {"reads": done, "seconds": time.monotonic() - started, "complete": done == count}


def read_slices(model_dir, plan, cap_s):
    """Reads each planned slice with the safetensors package (`get_slice`, which mmaps the file:
    what a Python loader does)."""
    from safetensors import safe_open

    started = time.monotonic()
    done = 0
    progress(bytes_needed=0, seconds=0.0)
    by_file = {}
    for item in plan:
        by_file.setdefault(item["file"], []).append(item)
    for name, items in sorted(by_file.items()):
        with safe_open(os.path.join(model_dir, name), framework="numpy") as f:
            for item in items:
                part = f.get_slice(item["tensor"])
                if item["dim"] is None:
                    array = part[:]
                elif item["dim"] == 0:
                    array = part[item["start"]:item["stop"]]
                else:
                    array = part[:, item["start"]:item["stop"]]
                if array.nbytes != item["bytes"]:
                    raise RuntimeError(f"{item['tensor']}: read {array.nbytes} bytes, planned {item['bytes']}")
                done += array.nbytes
                progress(bytes_needed=done, seconds=time.monotonic() - started)
                if time.monotonic() - started > cap_s:
                    return {"bytes_needed": done, "seconds": time.monotonic() - started, "complete": False}
    return {"bytes_needed": done, "seconds": time.monotonic() - started, "complete": True}


MEMORY_PROBE_BYTES = 256 << 20


def _fresh_region(size):
    import mmap

    return mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)


def _write_all(region, value):
    """Writes value over every byte of an anonymous mapping; the seconds it took."""
    import ctypes

    view = ctypes.c_char.from_buffer(region)
    started = time.perf_counter()
    ctypes.memset(ctypes.addressof(view), value, len(region))
    elapsed = time.perf_counter() - started
    del view
    return elapsed


def memory_probe():
    """GB/s of writing memory the kernel has just handed out (a fault and a zeroed page each, and in
    a VM whose host takes freed memory back, the host's fault too) and of writing it again. A
    filesystem fills the page cache with pages handed out so; curl -o /dev/null never does. Where
    the first figure is far below the second, CPU per GB of every mount includes that cost."""
    region = _fresh_region(MEMORY_PROBE_BYTES)
    try:
        rates = [MEMORY_PROBE_BYTES / _write_all(region, value) / 1e9 for value in (1, 2)]
    finally:
        region.close()
    return {"fresh_memory_write_gb_s": round(rates[0], 2), "reused_memory_write_gb_s": round(rates[1], 2)}


def memory_warm(total_bytes):
    """Writes total_bytes of fresh memory once, a GiB at a time, and gives it back: with free page
    reporting paused (bench.py --steady-memory), those pages then stay the guest's, and later
    processes get them without the hypervisor's fault."""
    chunk = 1 << 30
    regions = []
    try:
        for at in range(0, total_bytes, chunk):
            regions.append(_fresh_region(min(chunk, total_bytes - at)))
            _write_all(regions[-1], 1)
    finally:
        for region in regions:
            region.close()
    return {"warmed_bytes": total_bytes}


WORKLOADS = {"sequential": sequential_read, "headers": read_headers, "random": random_reads,
             "slices": read_slices, "memory_probe": memory_probe, "memory_warm": memory_warm}


# --------------------------------------------------------------------------------------------
# The tensor-parallel plan
# --------------------------------------------------------------------------------------------

DTYPE_BYTES = {"F16": 2, "BF16": 2, "F32": 4, "F64": 8, "I8": 1, "U8": 1, "I16": 2, "I32": 4, "I64": 8}
COLWISE = ("q_proj.weight", "gate_proj.weight", "up_proj.weight")
KV = ("k_proj.weight", "v_proj.weight")
ROWWISE = ("o_proj.weight", "down_proj.weight")
VOCAB = ("embed_tokens.weight", "lm_head.weight")


def safetensors_header(path):
    with open(path, "rb") as f:
        (length,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(length))
    header.pop("__metadata__", None)
    return header


def shard_files(model_dir):
    index = os.path.join(model_dir, "model.safetensors.index.json")
    if os.path.exists(index):
        with open(index) as f:
            return sorted(set(json.load(f)["weight_map"].values()))
    return ["model.safetensors"]


def _split(d, tp, rank, granule=1):
    if d % (tp * granule):
        raise ValueError(f"dimension {d} does not split into {tp} parts of whole {granule}s")
    part = d // tp
    return rank * part, (rank + 1) * part


def tp_plan(model_dir, tp, rank, only=None):
    """[{file, tensor, dim, start, stop, bytes, style}] for one rank. `only`: a set of styles
    (colwise, rowwise, vocab, replicated) to keep."""
    with open(os.path.join(model_dir, "config.json")) as f:
        config = json.load(f)
    heads, kv_heads = config["num_attention_heads"], config["num_key_value_heads"]
    head_dim = config.get("head_dim") or config["hidden_size"] // heads
    plan = []
    for name in shard_files(model_dir):
        for tensor, info in safetensors_header(os.path.join(model_dir, name)).items():
            shape, width = info["shape"], DTYPE_BYTES[info["dtype"]]
            dim, start, stop, style = None, 0, shape[0] if shape else 1, "replicated"
            if tensor.endswith(COLWISE):
                dim, style = 0, "colwise"
                start, stop = _split(shape[0], tp, rank, head_dim if "q_proj" in tensor else 1)
            elif tensor.endswith(KV):
                dim, style = 0, "colwise"
                if kv_heads >= tp:
                    start, stop = _split(shape[0], tp, rank, head_dim)
                else:  # grouped-query attention: this rank's one kv head, replicated
                    if tp % kv_heads:
                        raise ValueError(f"tp {tp} is not a multiple of {kv_heads} kv heads")
                    head = rank // (tp // kv_heads)
                    start, stop = head * head_dim, (head + 1) * head_dim
            elif tensor.endswith(ROWWISE):
                dim, style = 1, "rowwise"
                start, stop = _split(shape[1], tp, rank)
            elif tensor.endswith(VOCAB):
                dim, style = 0, "vocab"
                start, stop = _split(shape[0], tp, rank)
            elements = 1
            for i, d in enumerate(shape):
                elements *= (stop - start) if i == dim else d
            if only is None or style in only:
                plan.append({"file": name, "tensor": tensor, "dim": dim, "start": start, "stop": stop,
                             "bytes": elements * width, "style": style,
                             "offsets": info["data_offsets"]})
    return plan


def main():
    global REPORT_PROGRESS
    REPORT_PROGRESS = True
    spec = json.loads(sys.argv[1])
    workload = WORKLOADS[spec.pop("workload")]
    print(json.dumps(workload(**spec)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
