"""Helpers of the lazy-read acceptance tests: what the source files say (safetensors headers,
sizes), what the emulator's log says was fetched (per repo, per file, per request), what the
mount's stats say the kernel asked for, network profiles and timing."""
import contextlib
import json
import os
import struct
import time

import numpy as np

KIB = 1024
MIB = 1024 * KIB
# The issues' two link profiles: the emulator as it is, and a WAN-like link.
PROFILES = {"loopback": {}, "wan": {"latency_ms": 20, "bandwidth_bps": 50_000_000}}


def header_end(path):
    """8 + N: where a safetensors file's data starts, read from the source file."""
    with open(path, "rb") as f:
        (length,) = struct.unpack("<Q", f.read(8))
    return 8 + length


def safetensors_header(path):
    """The header's JSON (tensors and __metadata__) read from a source file."""
    with open(path, "rb") as f:
        (length,) = struct.unpack("<Q", f.read(8))
        return json.loads(f.read(length))


def shard_names(model_dir):
    return sorted(n for n in os.listdir(model_dir) if n.endswith(".safetensors"))


def total_size(model_dir, names):
    return sum(os.path.getsize(os.path.join(model_dir, n)) for n in names)


def cdn_requests(log, repo):
    """(file in repo, Range header, bytes sent) of every data request for repo's files. CDN
    paths are /{type}s/ORG/NAME/commits/SHA/PATH."""
    found = []
    for entry in log:
        parts = entry["path"].lstrip("/").split("/")
        if entry["origin"] == "cdn" and len(parts) > 5 and "/".join(parts[1:3]) == repo:
            found.append(("/".join(parts[5:]), entry.get("range"), entry.get("bytes_sent") or 0))
    return found


def fetched_by_file(log, repo):
    per_file = {}
    for name, _, sent in cdn_requests(log, repo):
        per_file[name] = per_file.get(name, 0) + sent
    return per_file


def fetched_bytes(log, repo, names=None):
    """Bytes the CDN sent for repo (only for the files in names, when given)."""
    return sum(sent for name, _, sent in cdn_requests(log, repo) if names is None or name in names)


def request_listing(log, repo, limit=60):
    """The requests as text, for an assertion message: what was fetched, range by range."""
    lines = [f"{name} {rng} {sent}" for name, rng, sent in sorted(cdn_requests(log, repo), key=str)]
    if len(lines) > limit:
        lines = lines[:limit] + [f"... {len(lines) - limit} more"]
    return "\n".join(lines)


def repo_stats(mount, repo, revision="main"):
    """The mount's counters for repo: bytes_served (what the kernel asked), bytes_fetched, reads."""
    return mount.stats()["repos"].get(f"{repo}@{revision}", {"bytes_served": 0, "bytes_fetched": 0, "reads": 0})


def settle(mount, quiet_s=0.3, timeout=60):
    """Waits until the mount fetches nothing more (read-ahead and prefetch included): what a read
    set in motion counts with it."""
    deadline = time.monotonic() + timeout
    last = None
    quiet_since = time.monotonic()
    while time.monotonic() < deadline:
        stats = mount.stats()
        now = (stats["bytes_fetched"], stats["requests"], stats["pages_in_flight"])
        if now != last or stats["pages_in_flight"]:
            last, quiet_since = now, time.monotonic()
        elif time.monotonic() - quiet_since >= quiet_s:
            return stats
        time.sleep(0.05)
    raise AssertionError(f"the mount kept fetching for {timeout} s: {mount.stats()}")


@contextlib.contextmanager
def link_profile(hub, name):
    """The emulator under one of PROFILES for the with-block; its start knobs back after."""
    if PROFILES[name]:
        hub.config(**PROFILES[name])
    try:
        yield
    finally:
        hub.reset()


@contextlib.contextmanager
def stopwatch():
    """with stopwatch() as t: ...; t() -> seconds the block took (or has taken so far)."""
    start = time.monotonic()
    end = []
    yield lambda: (end[0] if end else time.monotonic()) - start
    end.append(time.monotonic())


RAW_DTYPES = {"BF16": "<u2", "F16": "<u2", "F32": "<u4", "I64": "<u8", "U8": "u1"}


def raw_tensor(path, name):
    """A tensor of a safetensors file as its raw bits (an unsigned integer array of its shape),
    read with numpy alone, so bf16 compares as exactly as any other dtype."""
    header = safetensors_header(path)
    info = header[name]
    begin, end = info["data_offsets"]
    data = np.fromfile(path, dtype=np.uint8, count=end - begin, offset=header_end(path) + begin)
    return data.view(RAW_DTYPES[info["dtype"]]).reshape(info["shape"])
