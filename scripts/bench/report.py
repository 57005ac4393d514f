"""Turns the benchmark's measurements into figures: per row (workload × condition) and system,
the median of the runs with min–max; hubfs ÷ the best peer computed within each run; the
targets checked; written as JSON, markdown and a PNG chart."""
import json
import os
import statistics

SYSTEM_ORDER = ["curl", "aria2c", "httpdirfs", "httpdirfs_cache", "rclone_off", "rclone_full", "hubfs", "hubfs_cache",
                "hubfs_hf", "curl_load", "local"]
SYSTEM_LABELS = {"curl": "curl", "aria2c": "aria2c -x8", "httpdirfs": "httpdirfs",
                 "httpdirfs_cache": "httpdirfs --cache", "rclone_off": "rclone (vfs off)",
                 "rclone_full": "rclone (vfs full)", "hubfs": "hubfs", "hubfs_cache": "hubfs via cluster cache",
                 "hubfs_hf": "hubfs load hf://",
                 "curl_load": "curl, then load", "local": "local file"}
# The daemon's memory bound at default settings (what tests/fs/test_large.py holds it to).
DAEMON_RSS_BOUND_MIB = 256
REFERENCES = {"local"}  # shown, but not a peer
# The system a row is about, when not the mount: its ratio column is that system ÷ best peer.
SUBJECTS = {"hf_load_s": "hubfs_hf", "hf_load_mb": "hubfs_hf", "hf_load_cpu": "hubfs_hf",
            "cluster_mb": "hubfs_cache", "cluster_s": "hubfs_cache"}

# id, title, unit, better, metric, workload per system ("*" = default)
ROWS = [
    ("cold_seq", "Cold sequential read of a shard", "MB/s", "higher", "mb_per_s", {"*": "cold_seq"}),
    ("cold_seq_cpu", "Cold sequential read: CPU per GB read (the system's own processes + the reader)", "s/GB",
     "lower", "cpu_s_per_gb", {"*": "cold_seq"}),
    ("cold_seq_rss", "Cold sequential read: peak RSS (the filesystem's daemon; the download tool)", "MiB", "lower",
     "peak_rss_mib", {"*": "cold_seq"}),
    ("warm_seq", "Warm re-read (remount, page cache dropped)", "MB/s", "higher", "mb_per_s", {"*": "warm_seq"}),
    ("warm_seq_cpu", "Warm re-read: CPU per GB read", "s/GB", "lower", "cpu_s_per_gb", {"*": "warm_seq"}),
    ("inspect_kib", "Inspect all headers: fetched", "KiB", "lower", "fetched_kib", {"*": "inspect"}),
    ("inspect_requests", "Inspect: data requests per shard", "req", "lower", "data_requests_per_shard",
     {"*": "inspect"}),
    ("inspect_s", "Inspect: time", "s", "lower", "seconds", {"*": "inspect"}),
    ("tp_colwise_ratio", "TP colwise slices (get_slice): fetched ÷ needed", "×", "lower", "fetched_over_needed",
     {"*": "tp_colwise"}),
    ("tp_colwise_s", "TP colwise slices (get_slice): time", "s", "lower", "load_seconds", {"*": "tp_colwise"}),
    ("tp_slices_ratio", "TP rank, all tensors (get_slice): fetched ÷ needed", "×", "lower", "fetched_over_needed",
     {"*": "tp_slices"}),
    ("tp_slices_s", "TP rank, all tensors (get_slice): time", "s", "lower", "load_seconds", {"*": "tp_slices"}),
    ("tp_load_ratio", "TP rank: `hubfs load` vs peers' get_slice: fetched ÷ needed", "×", "lower",
     "fetched_over_needed", {"*": "tp_slices", "hubfs": "tp_load"}),
    ("tp_load_s", "TP rank: `hubfs load` vs peers' get_slice: time", "s", "lower", "load_seconds",
     {"*": "tp_slices", "hubfs": "tp_load"}),
    ("tp_load_cpu", "TP rank: `hubfs load` vs peers' get_slice: CPU per GB needed (filesystem + loader)", "s/GB",
     "lower", "cpu_s_per_gb", {"*": "tp_slices", "hubfs": "tp_load"}),
    ("tp_load_rss", "TP rank: `hubfs load` vs peers' get_slice: peak RSS of the filesystem's daemon", "MiB",
     "lower", "peak_rss_mib", {"*": "tp_slices", "hubfs": "tp_load"}),
    ("all_ranks_s", "Every TP rank's `hubfs load` at once on one mount: time until the last is done", "s", "lower",
     "seconds", {"*": "all_ranks"}),
    ("all_ranks_ratio", "Every TP rank at once: fetched ÷ the model", "×", "lower", "fetched_over_model",
     {"*": "all_ranks"}),
    ("all_ranks_rss", "Every TP rank at once: peak RSS of the filesystem's daemon", "MiB", "lower", "peak_rss_mib",
     {"*": "all_ranks"}),
    ("hf_load_s", "TP rank without a mount: `hubfs load hf://` vs `hubfs load` on a mount vs download then load: "
     "time (ratio: hf:// ÷ best of the others)", "s", "lower", "seconds", {"*": "hf_load", "hubfs": "tp_load"}),
    ("hf_load_mb", "TP rank without a mount: fetched (ratio: hf:// ÷ best of the others)", "MB", "lower",
     "fetched_mb", {"*": "hf_load", "hubfs": "tp_load"}),
    ("hf_load_cpu", "TP rank without a mount: CPU per GB needed, every process of the command (ratio: hf:// ÷ "
     "best of the others)", "s/GB", "lower", "cpu_s_per_gb", {"*": "hf_load", "hubfs": "tp_load"}),
    ("cluster_mb", "N mounts read the same shard at once, each on its own (hubfs) or behind one cluster-cache.sh: "
     "bytes at the CDN (ratio: behind the cache ÷ direct)", "MB", "lower", "cdn_mb", {"*": "cluster"}),
    ("cluster_s", "N mounts read the same shard at once: wall time until the last is done (ratio: behind the "
     "cache ÷ direct)", "s", "lower", "seconds", {"*": "cluster"}),
    ("random", "Random 128 KiB reads over a shard", "reads/s", "higher", "reads_per_s", {"*": "random"}),
    ("random_cpu", "Random 128 KiB reads: CPU per GB read", "s/GB", "lower", "cpu_s_per_gb", {"*": "random"}),
    ("rss", "Peak RSS of the process (max over its sessions)", "MiB", "lower", None, None),
]


def _value(m, metric):
    v = m.get(metric)
    return float(v) if v is not None else None


def _cells_for_row(measurements, row, condition):
    """{system: {run: (value, partial)}}"""
    _, _, _, _, metric, sources = row
    cells = {}
    for m in measurements:
        if m["condition"] != condition:
            continue
        system = m["system"]
        if metric is None:  # peak RSS: the max over every session of the run
            rss = m.get("peak_rss_kib")
            if rss:
                prev = cells.setdefault(system, {}).get(m["run"], (0.0, False))[0]
                cells[system][m["run"]] = (max(prev, rss / 1024.0), False)
            continue
        if m["workload"] != sources.get(system, sources["*"]):
            continue
        v = _value(m, metric)
        if v is None:
            continue
        cells.setdefault(system, {})[m["run"]] = (v, not m.get("complete", True))
    return cells


def _summary(values):
    return {"runs": values, "median": statistics.median(values), "min": min(values), "max": max(values)}


def _best(values, better):
    return max(values) if better == "higher" else min(values)


def build(meta, measurements):
    conditions = list(meta["conditions"])
    seen = {m["system"] for m in measurements}
    system_names = [s for s in SYSTEM_ORDER if s in seen]
    rows = []
    for row in ROWS:
        row_id, title, unit, better, _, _ = row
        for condition in conditions:
            per_system = _cells_for_row(measurements, row, condition)
            if not per_system:
                continue
            cells = {}
            for system, by_run in per_system.items():
                vals = [by_run[r][0] for r in sorted(by_run)]
                cells[system] = _summary(vals)
                cells[system]["partial"] = any(by_run[r][1] for r in by_run)
            ratios, best_peers = [], []
            subject = SUBJECTS.get(row_id, "hubfs")
            hub = per_system.get(subject, {})
            for run in sorted(hub):
                peers = {s: v[run][0] for s, v in per_system.items()
                         if s != subject and s not in REFERENCES and run in v}
                if not peers:
                    continue
                best_system = max(peers, key=peers.get) if better == "higher" else min(peers, key=peers.get)
                best = peers[best_system]
                if best > 0:
                    ratios.append(hub[run][0] / best)
                    best_peers.append(best_system)
            rows.append({"id": row_id, "title": title, "unit": unit, "better": better, "condition": condition,
                         "cells": cells,
                         "hubfs_over_best_peer": dict(_summary(ratios), best_peer_by_run=best_peers)
                         if ratios else None})
    results = {"meta": meta, "systems": system_names, "labels": SYSTEM_LABELS, "rows": rows,
               "measurements": measurements}
    # The targets are stated for the full model; a smoke run's tiny files say nothing about them.
    results["targets"] = targets(results) if meta["mode"] != "smoke" else []
    return results


def _target(name, condition, summary, threshold, at_least):
    """A target's line: its median (min–max) over the runs against the threshold."""
    median = summary["median"]
    return {"target": name, "condition": condition, "median": median, "min": summary["min"], "max": summary["max"],
            "threshold": threshold, "at_least": at_least,
            "pass": median >= threshold if at_least else median <= threshold}


def _run_ratios(measurements, condition, workload, metric, system, others, better):
    """Per run: system's value ÷ the best of `others` in the same run."""
    by_run = {}
    for m in measurements:
        if m["condition"] == condition and m["workload"] == workload and m.get(metric) is not None:
            by_run.setdefault(m["run"], {})[m["system"]] = float(m[metric])
    ratios = []
    for run in sorted(by_run):
        got = by_run[run]
        peers = [got[o] for o in others if o in got and got[o] > 0]
        if system in got and peers:
            ratios.append(got[system] / _best(peers, better))
    return ratios


def targets(results):
    """The issue's stated targets, each with the measured median and pass/fail."""
    out = []
    meas = results["measurements"]
    conditions = list(results["meta"]["conditions"])

    def add(name, condition, values, threshold, at_least):
        if values:
            out.append(_target(name, condition, _summary(values), threshold, at_least))

    for c in conditions:
        if c == "loopback":
            add("cold sequential ≥ 1.0× curl", c, _run_ratios(meas, c, "cold_seq", "mb_per_s", "hubfs", ["curl"],
                                                              "higher"), 1.0, True)
            add("cold sequential CPU per GB ≤ 1.5× curl", c, _run_ratios(meas, c, "cold_seq", "cpu_s_per_gb", "hubfs",
                                                                       ["curl"], "lower"), 1.5, False)
        if c == "wan":
            add("cold sequential ≥ 0.9× aria2c", c, _run_ratios(meas, c, "cold_seq", "mb_per_s", "hubfs",
                                                                ["aria2c"], "higher"), 0.9, True)
        add("cold sequential ≥ 3× rclone mount", c, _run_ratios(meas, c, "cold_seq", "mb_per_s", "hubfs",
                                                                ["rclone_off", "rclone_full"], "higher"), 3.0, True)
        add("cold sequential ≥ 10× httpdirfs", c, _run_ratios(meas, c, "cold_seq", "mb_per_s", "hubfs",
                                                              ["httpdirfs", "httpdirfs_cache"], "higher"), 10.0, True)
        add("warm re-read ≥ 0.9× local file", c, _run_ratios(meas, c, "warm_seq", "mb_per_s", "hubfs", ["local"],
                                                             "higher"), 0.9, True)
        for workload, what in (("cold_seq", "a cold sequential read"), ("all_ranks", "every TP rank at once")):
            add(f"daemon peak RSS ≤ {DAEMON_RSS_BOUND_MIB} MiB: {what}", c,
                [m["peak_rss_mib"] for m in meas if m["condition"] == c and m["workload"] == workload
                 and m["system"] == "hubfs" and m.get("peak_rss_mib")], DAEMON_RSS_BOUND_MIB, False)
        shards = len(results["meta"]["model"]["shards"])
        header = results["meta"]["model"]["header_bytes"]
        inspect = [m for m in meas if m["condition"] == c and m["workload"] == "inspect" and m["system"] == "hubfs"]
        if inspect:
            limit_kib = (header + shards * 64 * 1024) / 1024
            add(f"inspect fetches ≤ headers + 64 KiB per shard ({limit_kib:.0f} KiB)", c,
                [m["fetched_kib"] for m in inspect], limit_kib, False)
            add("inspect ≤ 2 data requests per shard", c, [m["data_requests_per_shard"] for m in inspect], 2.0, False)
        colwise = [m["fetched_over_needed"] for m in meas
                   if m["condition"] == c and m["workload"] == "tp_colwise" and m["system"] == "hubfs"]
        add("TP colwise slices fetched ÷ needed ≤ 1.1", c, colwise, 1.1, False)
        direct = {m["run"]: m for m in meas if m["condition"] == c and m["workload"] == "hf_load"
                  and m["system"] == "hubfs_hf"}
        add("hf:// load fetched ÷ needed (row-parallel tensors whole) ≤ 1.1", c,
            [m["fetched_over_needed_whole"] for m in direct.values()], 1.1, False)
        mounted = {m["run"]: m["seconds"] for m in meas if m["condition"] == c and m["workload"] == "tp_load"
                   and m["system"] == "hubfs"}
        add("hf:// load time ≤ mount load time", c,
            [direct[r]["seconds"] / mounted[r] for r in sorted(direct) if r in mounted], 1.0, False)
        cached = [m for m in meas if m["condition"] == c and m["workload"] == "cluster" and m["system"] == "hubfs_cache"]
        add("N mounts behind the cluster cache: CDN bytes ≤ 1.05 × the shard", c,
            [m["traffic"]["data_bytes"] / m["shard_bytes"] for m in cached], 1.05, False)
    return out


# A loader on the mount against a cold `cat` of every shard and against download-then-load.
LOADERS_TARGETS = (("mount_over_cat", 1.2, "a cold `cat`"), ("mount_over_download_then_load", 0.7,
                                                              "snapshot_download + the same load"))


def loaders_targets(section):
    """The loaders section's targets (bench/mount_loaders.py's rows), in targets()'s form: each
    loader on a fresh mount against the reference and the download (rows lacking either ratio,
    the reference's and the download's own, have none)."""
    out = []
    for row in section["rows"]:
        if not row.get("mount_over_cat") or not row.get("mount_over_download_then_load"):
            continue
        for key, threshold, reference in LOADERS_TARGETS:
            out.append(_target(f"{section['labels'][row['loader']]} ≤ {threshold}× {reference}", row["condition"],
                               row[key], threshold, False))
    return out


# --------------------------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------------------------


def _fmt(v):
    if v == 0:
        return "0"
    a = abs(v)
    if a >= 100:
        return f"{v:.0f}"
    if a >= 10:
        return f"{v:.1f}"
    if a >= 1:
        return f"{v:.2f}"
    return f"{v:.3f}"


def _cell(c):
    if c is None:
        return "—"
    text = _fmt(c["median"])
    if len(c["runs"]) > 1:
        text += f" ({_fmt(c['min'])}–{_fmt(c['max'])})"
    if c.get("partial"):
        text += " †"
    return text


def markdown(results):
    systems = results["systems"]
    labels = results["labels"]
    lines = [f"hubfs benchmark ({results['meta']['mode']}, {results['meta']['profile']['runs']} run(s) per figure: "
             "median (min–max); † = capped: a run hit its time limit; its figure covers what it read, "
             "and a time is projected from its pace)", ""]
    if results["meta"].get("interrupted"):
        lines[1:1] = [f"**Interrupted ({results['meta']['interrupted']}) after "
                      f"{results['meta']['duration_s']:.0f} s: the figures are what the runs measured until then, "
                      "fewer runs than stated for the later workloads.**", ""]
    head = ["Workload", "Condition"] + [labels.get(s, s) for s in systems] + ["hubfs ÷ best peer"]
    if results["rows"]:  # none when only a separate section ran
        lines.append("| " + " | ".join(head) + " |")
        lines.append("|" + "---|" * len(head))
    for row in results["rows"]:
        arrow = "↑" if row["better"] == "higher" else "↓"
        cells = [_cell(row["cells"].get(s)) for s in systems]
        ratio = row["hubfs_over_best_peer"]
        ratio_text = "—" if not ratio else _cell(ratio) + "×"
        lines.append(f"| {row['title']} ({row['unit']} {arrow}) | {row['condition']} | " + " | ".join(cells)
                     + f" | {ratio_text} |")
    for section in ("loader", "loaders"):  # bench.py's separate sections (bench/loader.py, mount_loaders.py)
        if results.get(section):
            lines += ["", results[section]["markdown"]]
    failures = results["meta"].get("failures") or []
    if failures:
        lines += ["", "Failed measurements (left out of the figures):"]
        lines += [f"- {f['condition']} run {f['run']}, {f['workload']}, {labels.get(f['system'], f['system'])}: "
                  f"{f['error'].strip().splitlines()[-1] if f['error'].strip() else 'error'}" for f in failures]
    if results["targets"]:
        lines += ["", "| Target | Condition | Measured (median, min–max) | Pass |", "|---|---|---|---|"]
        for t in results["targets"]:
            lines.append(f"| {t['target']} | {t['condition']} | {_fmt(t['median'])} ({_fmt(t['min'])}–"
                         f"{_fmt(t['max'])}) | {'yes' if t['pass'] else '**no**'} |")
    meta = results["meta"]
    lines += ["", f"Model: {meta['model']['total_bytes'] / 2**20:.0f} MiB in {len(meta['model']['shards'])} shards; "
              f"sequential and random reads on {meta['model']['seq_file']}. Data plane: {meta['data_plane']}. "
              f"Conditions: " + "; ".join(f"{c}: first-byte delay {v['delay_ms']} ms, "
                                          f"{'no cap' if not v['rate_bps'] else str(v['rate_bps'] / 1e6) + ' MB/s per response'}"
                                          for c, v in meta["conditions"].items())
              + ". Warm re-read: " + {True: "page cache dropped before it (warm = the filesystem's own cache)",
                                      False: "page cache NOT dropped (not root)", None: "not run"}[
                  meta.get("page_cache_dropped_for_warm")] + f". Run took {meta['duration_s']:.0f} s."]
    machine = meta.get("machine") or {}
    if "fresh_memory_write_gb_s" in machine:
        lines += ["", f"Machine: {machine.get('cpus')} CPUs; memory just handed out by the kernel is written at "
                      f"{machine['fresh_memory_write_gb_s']:.2f} GB/s, memory written before at "
                      f"{machine['reused_memory_write_gb_s']:.2f} GB/s. A mount fills the page cache with the "
                      "former (a download to /dev/null never does): where it is slow, that cost is in every "
                      "mount's CPU per GB."]
    steady = machine.get("steady_memory")
    if steady:
        lines += ["", f"--steady-memory: free page reporting to the hypervisor paused for the run (order "
                      f"{steady['page_reporting_order']} -> {steady['paused_order']}, restored after); "
                      f"{steady['warmed_bytes'] >> 20} MiB written once before it ({steady['warm_s']:.0f} s)."]
    return "\n".join(lines)


def chart(results, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.patches  # noqa: F401 - the legend's plain patches
    import matplotlib.pyplot as plt

    row_ids = []
    for row in results["rows"]:
        if row["id"] not in row_ids:
            row_ids.append(row["id"])
    cols = 3
    nrows = (len(row_ids) + cols - 1) // cols
    fig, axes = plt.subplots(nrows, cols, figsize=(6 * cols, 3.6 * nrows), squeeze=False)
    conditions = list(results["meta"]["conditions"])
    systems = results["systems"]
    width = 0.8 / max(1, len(conditions))
    for ax, row_id in zip(axes.flat, row_ids):
        rows = {r["condition"]: r for r in results["rows"] if r["id"] == row_id}
        any_row = next(iter(rows.values()))
        for i, condition in enumerate(conditions):
            row = rows.get(condition)
            if not row:
                continue
            xs, ys, lo, hi, hatches = [], [], [], [], []
            for j, s in enumerate(systems):
                c = row["cells"].get(s)
                if c and c["median"] > 0:
                    xs.append(j + (i - (len(conditions) - 1) / 2) * width)
                    ys.append(c["median"])
                    lo.append(c["median"] - c["min"])
                    hi.append(c["max"] - c["median"])
                    hatches.append("//" if c.get("partial") else "")
            bars = ax.bar(xs, ys, width, yerr=[lo, hi], capsize=2, color=f"C{i}", label=condition)
            for bar, hatch in zip(bars, hatches):
                bar.set_hatch(hatch)  # hatched: capped by the time limit
        ax.set_yscale("log")
        ax.set_xticks(range(len(systems)))
        ax.set_xticklabels([results["labels"].get(s, s) for s in systems], rotation=30, ha="right", fontsize=7)
        arrow = "higher is better" if any_row["better"] == "higher" else "lower is better"
        ax.set_title(f"{any_row['title']}\n({any_row['unit']}, {arrow})", fontsize=8)
        handles = [matplotlib.patches.Patch(color=f"C{i}", label=c) for i, c in enumerate(conditions)]
        ax.legend(handles=handles, fontsize=7)
    for ax in list(axes.flat)[len(row_ids):]:
        ax.axis("off")
    fig.suptitle("hubfs benchmark: median of runs, bars min–max; hatched = capped by the time limit", fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write(results, out_dir, chart_png=True):
    paths = []
    json_path = os.path.join(out_dir, "bench-results.json")
    with open(json_path, "w") as f:
        json.dump(results, f, indent=1)
    paths.append(json_path)
    md_path = os.path.join(out_dir, "bench-results.md")
    with open(md_path, "w") as f:
        f.write(markdown(results) + "\n")
    paths.append(md_path)
    if chart_png and results["rows"]:  # none when only the loader section ran
        png = os.path.join(out_dir, "bench-results.png")
        chart(results, png)
        paths.append(png)
    return paths
