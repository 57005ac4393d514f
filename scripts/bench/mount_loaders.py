#!/usr/bin/env python3
"""Existing loaders on the mount: the loaders users run today (transformers' from_pretrained, the
safetensors package's load_file per shard, and safe_open + get_tensor in key order: vLLM's
default), each touching every weight. One implementation, used by the benchmark's `loaders`
workload and by tests/lazy/test_beat_download.py.

As the benchmark's child process (`mount_loaders.py JSON`): {"loader": NAME, "path": DIR} loads
DIR with one loader; {"download": REPO, "endpoint": URL} runs huggingface_hub's
snapshot_download into the HF_HOME of the environment. Imports (and transformers' lazy model
module) come before the clock starts: the figure is the load, not Python's start. Prints one
JSON line: seconds, CPU seconds of the process over the load, peak RSS (VmHWM) and the weights'
sum (or the downloaded directory).
"""
import json
import os
import statistics
import sys
import time


def shard_names(model_dir):
    return sorted(n for n in os.listdir(model_dir) if n.endswith(".safetensors"))


def tensor_sum(tensors):
    """Reads every weight (a sum in the tensor's own dtype: no float32 copy of the model, so the
    timings measure reading more than arithmetic)."""
    return sum(float(t.detach().sum()) for t in tensors)


def config_dtype(directory):
    """The dtype the checkpoint was saved in (config.json's `dtype`, `torch_dtype` before
    transformers 5), so from_pretrained neither converts nor guesses."""
    import torch

    with open(os.path.join(directory, "config.json")) as f:
        config = json.load(f)
    name = config.get("dtype") or config.get("torch_dtype")
    return getattr(torch, name) if name else "auto"


def load_from_pretrained(directory):
    import transformers

    model = transformers.AutoModelForCausalLM.from_pretrained(directory, dtype=config_dtype(directory))
    total = tensor_sum(model.parameters())
    del model
    return total


def load_file_per_shard(directory):
    import safetensors.torch

    total = 0.0
    for name in shard_names(directory):
        state = safetensors.torch.load_file(os.path.join(directory, name))
        total += tensor_sum(state.values())
        del state
    return total


def safe_open_in_key_order(directory):
    """vLLM's default safetensors iterator: safe_open, then get_tensor for each key in order."""
    from safetensors import safe_open

    total = 0.0
    for name in shard_names(directory):
        with safe_open(os.path.join(directory, name), framework="pt") as f:
            for key in f.keys():
                total += tensor_sum([f.get_tensor(key)])
    return total


LOADERS = {"from_pretrained": load_from_pretrained, "load_file": load_file_per_shard,
           "safe_open": safe_open_in_key_order}


# --------------------------------------------------------------------------------------------
# The benchmark's figures (bench.py's parent side): seconds, the ratios, the section's table
# --------------------------------------------------------------------------------------------

REFERENCE = "cat"  # a cold `cat` of every shard through a fresh mount: the mount's own pace
DOWNLOAD = "snapshot_download"
LABELS = {REFERENCE: "`cat` of all shards (the reference)",
          "from_pretrained": "AutoModelForCausalLM.from_pretrained + sum",
          "load_file": "safetensors load_file per shard + sum",
          "safe_open": "safe_open + get_tensor in key order + sum",
          DOWNLOAD: "snapshot_download alone"}


def _summary(values):
    values = [v for v in values if v is not None]
    if not values:
        return None
    return {"runs": values, "median": statistics.median(values), "min": min(values), "max": max(values)}


def _by_run(entries, where, loader):
    return {m["run"]: m for m in entries if m["where"] == where and m["loader"] == loader}


def _costs(by_run):
    """What the mount (or the download) fetched, its CPU per GB of shards, its peak RSS and how busy
    the machine was."""
    return {key: _summary([m.get(key) for m in by_run.values()]) for key in ("fetched_mb", "cpu_s_per_gb",
                                                                              "peak_rss_mib", "machine_busy_pct")}


def _row(entries, loader):
    """One loader's figures over the runs; the ratios within each run."""
    download = _by_run(entries, "download", DOWNLOAD)
    if loader == DOWNLOAD:
        return {"loader": loader, "mount_s": None, "mount_over_cat": None,
                "download_then_load_s": _summary([m["seconds"] for m in download.values()]),
                "mount_over_download_then_load": None, **_costs(download)}
    on_mount, on_copy = _by_run(entries, "mount", loader), _by_run(entries, "copy", loader)
    cat = _by_run(entries, "mount", REFERENCE)
    then_load = {r: download[r]["seconds"] + m["seconds"] for r, m in on_copy.items() if r in download}
    return {"loader": loader,
            "mount_s": _summary([m["seconds"] for m in on_mount.values()]),
            "mount_over_cat": _summary([m["seconds"] / cat[r]["seconds"] for r, m in on_mount.items() if r in cat]),
            "download_then_load_s": _summary(list(then_load.values())),
            "mount_over_download_then_load": _summary([on_mount[r]["seconds"] / s for r, s in then_load.items()
                                                       if r in on_mount]),
            **_costs(on_mount)}


def build(measurements, model, conditions):
    """The section: per condition, a row per loader (the reference first, the download last)."""
    rows = []
    for condition in conditions:
        entries = [m for m in measurements if m["condition"] == condition]
        if entries:
            rows += [dict(_row(entries, loader), condition=condition) for loader in LABELS
                     if any(m["loader"] == loader for m in entries)]
    return {"model": model, "labels": LABELS, "rows": rows,
            "measurements": measurements}


def _fmt(v):
    return f"{v:.0f}" if abs(v) >= 100 else f"{v:.1f}" if abs(v) >= 10 else f"{v:.2f}" if abs(v) >= 1 else f"{v:.3f}"


def _cell(c, suffix=""):
    if not c:
        return "—"
    return _fmt(c["median"]) + suffix + (f" ({_fmt(c['min'])}–{_fmt(c['max'])})" if len(c["runs"]) > 1 else "")


def markdown(section):
    model = section["model"]
    runs = max((len(c["runs"]) for row in section["rows"] for c in row.values() if isinstance(c, dict)), default=0)
    head = ["Loader", "Condition", "cold on a fresh hubfs mount (s ↓)", "mount ÷ cat (↓)",
            "snapshot_download, then load (s ↓)", "mount ÷ download-then-load (↓)", "fetched (MB)",
            "CPU (s/GB ↓)", "peak RSS (MiB ↓)", "machine CPU busy (%)"]
    lines = [f"Loaders on the mount: {model['repo']} ({model['shard_bytes'] / 1e6:.0f} MB in {model['shards']} "
             f"shards, {model['dtype']}), every weight touched (summed in its dtype), each load cold in a fresh "
             f"process: median (min–max) of {runs} run(s). Fetched, CPU (per GB of shards) and peak RSS: hubfs's "
             "daemon (+ the loader's CPU) on the mount rows, snapshot_download's process on its row; the "
             "downloaded copy is read from the page cache it was just written to. Machine CPU busy: the share of "
             "all cores' time busy over the load (iowait counts as idle), everything running included.", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in section["rows"]:
        cells = [_cell(row["mount_s"]), _cell(row["mount_over_cat"], "×"), _cell(row["download_then_load_s"]),
                 _cell(row["mount_over_download_then_load"], "×"), _cell(row["fetched_mb"]),
                 _cell(row["cpu_s_per_gb"]), _cell(row["peak_rss_mib"]), _cell(row["machine_busy_pct"])]
        lines.append(f"| {section['labels'][row['loader']]} | {row['condition']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# The benchmark's child process
# --------------------------------------------------------------------------------------------


def _peak_rss_kib():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))


def _import_loaders():
    """What the loaders import, and Llama's model module (transformers loads it lazily on the
    first from_pretrained): set-up that is not the load."""
    import safetensors.torch  # noqa: F401
    import torch  # noqa: F401
    import transformers  # noqa: F401
    from transformers.models.llama import modeling_llama  # noqa: F401


def machine_ticks(stat_path="/proc/stat"):
    """The machine's CPU time so far, all CPUs, in clock ticks: (busy, all). Waiting for I/O
    counts as idle (a reader blocked on a page the mount is filling waits so); guest time is
    already inside user time."""
    with open(stat_path) as f:
        user, nice, system, idle, iowait, irq, softirq, steal = (int(v) for v in f.readline().split()[1:9])
    everything = user + nice + system + idle + iowait + irq + softirq + steal
    return everything - idle - iowait, everything


def busy_pct(before, after):
    """The share of the machine's CPU time that was busy between two machine_ticks(), in percent:
    with every core busy, a load's time follows the CPU work of everything running, not its own
    waits."""
    busy, everything = after[0] - before[0], after[1] - before[1]
    return 100.0 * busy / everything if everything > 0 else None


def _measured(fn, *args):
    ticks, cpu, started = machine_ticks(), time.process_time(), time.monotonic()
    result = fn(*args)
    return result, {"seconds": time.monotonic() - started, "cpu_s": time.process_time() - cpu,
                    "peak_rss_kib": _peak_rss_kib(), "machine_busy_pct": busy_pct(ticks, machine_ticks())}


def child(spec):
    if "download" in spec:  # huggingface_hub alone: its peak RSS is the download's
        from huggingface_hub import snapshot_download

        path, figures = _measured(snapshot_download, spec["download"])
        return {"path": path, **figures}
    _import_loaders()
    weights_sum, figures = _measured(LOADERS[spec["loader"]], spec["path"])
    return {"weights_sum": weights_sum, **figures}


if __name__ == "__main__":
    print(json.dumps(child(json.loads(sys.argv[1]))), flush=True)
