#!/usr/bin/env python3
"""The benchmark's loader section: hubfs.load_rank and hubfs.iter_tensors (python/hubfs over
libhubfs) against the safetensors package loading the same tensor-parallel rank of the same
model into torch tensors in host memory: `load_file` of each shard then slicing (what a loader
that reads whole files does), and `safe_open` + `get_slice` (mmap, slices only). Twice: from
the page cache (the local copy, read once before) and cold from a hubfs mount (mounted afresh
with an empty cache: every method reads the same mount).

Each measurement runs in a child process (`loader.py JSON`), which prints the seconds of the
load, the rank's bytes, its peak resident memory (VmHWM) and its resident memory once torch is
imported (the figure is what the load adds to that), and sampled bytes of every tensor, so that
a method that loaded something else fails instead of being measured. The parent side
(`measure`, `check_same_rank`, `build`, `markdown`) is called by bench.py.
"""
import json
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import workloads  # noqa: E402

METHODS = {"hubfs_load_rank": "hubfs.load_rank", "hubfs_iter_tensors": "hubfs.iter_tensors",
           "st_load_file": "safetensors load_file + slicing", "st_get_slice": "safetensors safe_open + get_slice"}
SUBJECTS = ("hubfs_load_rank", "hubfs_iter_tensors")
PEERS = ("st_load_file", "st_get_slice")
CONDITIONS = {"page_cache": "from the page cache", "cold_mount": "cold from a hubfs mount"}
METRICS = [("seconds", "time", "s", "lower"), ("gb_per_s", "throughput", "GB/s", "higher"),
           ("peak_rss_mib", "peak RSS added by the load", "MiB", "lower")]
SAMPLE_STRIDE = 4099  # bytes between sampled bytes of a tensor


# --------------------------------------------------------------------------------------------
# The child: one method, one load
# --------------------------------------------------------------------------------------------


def _status_kib(field):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))


def _sampled(tensor, torch):
    return int(tensor.contiguous().reshape(-1).view(torch.uint8)[::SAMPLE_STRIDE].sum())


def _piece(part, item):
    if item["dim"] is None:
        return part[:]
    if item["dim"] == 0:
        return part[item["start"]:item["stop"]]
    return part[:, item["start"]:item["stop"]]


def load(method, path, plan, tp, rank):
    """Loads the rank with `method`; returns {tensor name: sampled sum} and the bytes loaded."""
    import torch

    sums, loaded = {}, 0

    def keep(name, tensor):
        nonlocal loaded
        sums[name] = _sampled(tensor, torch)
        loaded += tensor.numel() * tensor.element_size()

    if method in SUBJECTS:
        import hubfs
        if method == "hubfs_load_rank":
            state = hubfs.load_rank(path, tp=tp, rank=rank, device="cpu")
            for name, tensor in state.items():
                keep(name, tensor)
        else:
            for name, tensor in hubfs.iter_tensors(path, tp=tp, rank=rank, device="cpu"):
                keep(name, tensor)  # a consumer takes each tensor and lets it go
                del tensor
        return sums, loaded
    from safetensors import safe_open
    from safetensors.torch import load_file
    by_file, state = {}, {}
    for item in plan:
        by_file.setdefault(item["file"], []).append(item)
    for file_name, items in sorted(by_file.items()):
        shard = os.path.join(path, file_name)
        if method == "st_load_file":
            full = load_file(shard)
            for item in items:  # the rank's own memory: the whole shard goes once sliced
                state[item["tensor"]] = _piece(full[item["tensor"]], item).clone()
            del full
        else:
            with safe_open(shard, framework="pt") as f:
                for item in items:
                    state[item["tensor"]] = _piece(f.get_slice(item["tensor"]), item)
    for name, tensor in state.items():
        keep(name, tensor)
    return sums, loaded


def child(spec):
    with open(spec["plan_file"]) as f:
        plan = json.load(f)
    import torch  # noqa: F401 - imported before the baseline, as every method needs it

    base = _status_kib("VmRSS")
    started = time.monotonic()
    sums, loaded = load(spec["method"], spec["path"], plan, spec["tp"], spec["rank"])
    seconds = time.monotonic() - started
    return {"seconds": seconds, "bytes": loaded, "peak_rss_kib": _status_kib("VmHWM"), "base_rss_kib": base,
            "sums": sums}


# --------------------------------------------------------------------------------------------
# The parent: running the children, figures
# --------------------------------------------------------------------------------------------


def write_plan(model_dir, tp, rank, path):
    """The rank's slices by the Llama rules (workloads.tp_plan, independent of hubfs)."""
    plan = workloads.tp_plan(model_dir, tp, rank)
    with open(path, "w") as f:
        json.dump(plan, f)
    return sum(item["bytes"] for item in plan)


def sanitizer_runtimes(library):
    """The ASan/UBSan runtimes a libhubfs built with them (the test suite's sanitized build)
    needs loaded before anything else, or "" for a plain build."""
    listed = subprocess.run(["ldd", library], capture_output=True, text=True).stdout
    return " ".join(line.split("=>")[1].split()[0] for line in listed.splitlines()
                    if "=>" in line and ("libasan" in line or "libubsan" in line))


def measure(method, path, plan_file, tp, rank, libhubfs, timeout_s):
    """Runs one load in a child; returns its figures. Raises when the child fails."""
    source_dir = os.path.dirname(os.path.dirname(HERE))
    env = {**os.environ, "HUBFS_LIBRARY": libhubfs,
           "PYTHONPATH": os.pathsep.join(filter(None, [os.path.join(source_dir, "python"),
                                                       os.environ.get("PYTHONPATH")]))}
    preload = sanitizer_runtimes(libhubfs)
    if preload:  # only the child: the bench's own tools (curl...) run as they are
        env.update(LD_PRELOAD=preload, ASAN_OPTIONS="detect_leaks=0:abort_on_error=1")
    spec = {"method": method, "path": path, "plan_file": plan_file, "tp": tp, "rank": rank}
    result = subprocess.run([sys.executable, os.path.abspath(__file__), json.dumps(spec)], capture_output=True,
                            text=True, timeout=timeout_s, env=env)
    if result.returncode != 0:
        raise RuntimeError(f"{METHODS[method]} failed: {result.stderr.strip()[-800:]}")
    out = json.loads(result.stdout.strip().splitlines()[-1])
    out["gb_per_s"] = out["bytes"] / out["seconds"] / 1e9
    out["peak_rss_mib"] = (out["peak_rss_kib"] - out["base_rss_kib"]) / 1024  # over torch's own ~0.5 GiB
    return out


def check_same_rank(entries):
    """Every method of a run loaded the same tensors with the same sampled bytes."""
    reference = None
    for entry in entries:
        if reference is None:
            reference = entry
        elif entry["sums"] != reference["sums"]:
            differ = sorted(n for n in set(entry["sums"]) | set(reference["sums"])
                            if entry["sums"].get(n) != reference["sums"].get(n))
            raise RuntimeError(f"{METHODS[entry['system']]} and {METHODS[reference['system']]} loaded different "
                               f"ranks: {differ[:5]}")


def _summary(values):
    return {"runs": values, "median": statistics.median(values), "min": min(values), "max": max(values)}


def build(measurements, rank_bytes, tp, rank):
    """Rows (condition × metric): per method the median of the runs with min–max, and each hubfs
    method ÷ the best safetensors method, computed within each run."""
    rows = []
    for condition in CONDITIONS:
        entries = [m for m in measurements if m["condition"] == condition]
        if not entries:
            continue
        for metric, title, unit, better in METRICS:
            by_method = {}
            for m in entries:
                by_method.setdefault(m["system"], {})[m["run"]] = m[metric]
            cells = {s: _summary([v[r] for r in sorted(v)]) for s, v in by_method.items()}
            ratios = {}
            for subject in SUBJECTS:
                per_run = []
                for run, value in sorted(by_method.get(subject, {}).items()):
                    peers = [by_method[p][run] for p in PEERS if run in by_method.get(p, {})]
                    if peers:
                        best = max(peers) if better == "higher" else min(peers)
                        per_run.append(value / best)
                if per_run:
                    ratios[subject] = _summary(per_run)
            rows.append({"condition": condition, "metric": metric, "title": title, "unit": unit, "better": better,
                         "cells": cells, "over_best_safetensors": ratios})
    return {"tp": tp, "rank": rank, "rank_bytes": rank_bytes, "methods": METHODS, "conditions": CONDITIONS,
            "rows": rows, "measurements": [{k: v for k, v in m.items() if k != "sums"} for m in measurements]}


def _fmt(v):
    return f"{v:.0f}" if abs(v) >= 100 else f"{v:.1f}" if abs(v) >= 10 else f"{v:.2f}" if abs(v) >= 1 else f"{v:.3f}"


def _cell(c):
    if not c:
        return "—"
    return _fmt(c["median"]) + (f" ({_fmt(c['min'])}–{_fmt(c['max'])})" if len(c["runs"]) > 1 else "")


def markdown(section):
    head = (["Loader", "Condition"] + list(METHODS.values())
            + [f"{METHODS[s]} ÷ best safetensors" for s in SUBJECTS])
    lines = [f"Loading rank {section['rank']} of {section['tp']} ({section['rank_bytes'] / 1e6:.0f} MB) into torch "
             "tensors in host memory: median (min–max)", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in section["rows"]:
        arrow = "↑" if row["better"] == "higher" else "↓"
        cells = [_cell(row["cells"].get(m)) for m in METHODS]
        ratios = [(_cell(row["over_best_safetensors"].get(s)) + "×") if row["over_best_safetensors"].get(s) else "—"
                  for s in SUBJECTS]
        lines.append(f"| {row['title']} ({row['unit']} {arrow}) | {CONDITIONS[row['condition']]} | "
                     + " | ".join(cells + ratios) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(json.dumps(child(json.loads(sys.argv[1]))), flush=True)
