#!/usr/bin/env python3
"""hubfs against the tools users would pick instead, on the same server, in the same run.

    scripts/bench.py --hubfs build-bench/fs/hubfs [--quick | --smoke] [--out DIR] [--runs N]

Systems: curl (one stream) and aria2c (8 ranged connections) downloading through the Hub's
resolve URL; httpdirfs (with and without --cache) and rclone mount (http backend, vfs cache
off and full) over nginx's autoindex listing of the commit directory; hubfs over the Hub API.
The Hub emulator (scripts/hub_emulator.py) answers the API and redirects LFS files to nginx,
which serves the bytes (sendfile, Range). Conditions: loopback, and a WAN profile (20 ms before
each response's first byte, 40 MB/s per response). Workloads and figures: see the README's
Benchmark section. Results: a markdown table on stdout, bench-results.json, bench-results.md
and bench-results.png in the output directory (default /tmp/hubfs-bench/results).

--smoke is the CI check of this script: a tiny model, hubfs and curl only, the emulator's own
CDN, loopback only; it is not timed.
"""
import argparse
import contextlib
import datetime
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "bench"))

import loader  # noqa: E402
import mount_loaders  # noqa: E402
import report  # noqa: E402
import servers  # noqa: E402
import systems  # noqa: E402
import workloads  # noqa: E402

REPO_ID = "bench-org/llama"
WORKLOAD_SCRIPT = os.path.join(HERE, "bench", "workloads.py")
MOUNT_LOADERS_SCRIPT = os.path.join(HERE, "bench", "mount_loaders.py")
MB = 1e6
GB = 1e9

# The shaped profile. No netem here: the servers shape. nginx delays each response's first byte
# through auth_request to a delay server and caps each response with limit_rate; the emulator
# delays and paces its API answers with its own knobs.
CONDITIONS = {
    "loopback": {"delay_ms": 0, "rate_bps": 0},
    "wan": {"delay_ms": 20, "rate_bps": 40_000_000},
}

PROFILES = {
    #           model                      runs  caps (s): seq, slices, random, headers
    # loaders_runs: the loaders workload loads the whole model 7 times a run, so it runs in the first
    # loaders_runs runs only. steady_warm: the most --steady-memory writes once before the run.
    "full": dict(preset="large", shards=4, runs=3, seq_cap=8, slice_cap=6, random_cap=5, header_cap=20,
                 random_reads=400, tp=8, rank=3, cluster_mounts=3, conditions=["loopback", "wan"], loaders_runs=2,
                 steady_warm=12 << 30),
    "quick": dict(preset="large", shards=4, runs=1, seq_cap=4, slice_cap=4, random_cap=3, header_cap=10,
                  random_reads=400, tp=8, rank=3, cluster_mounts=3, conditions=["loopback", "wan"], loaders_runs=1,
                  steady_warm=12 << 30),
    "smoke": dict(preset="tiny", shards=2, runs=3, seq_cap=30, slice_cap=30, random_cap=30, header_cap=30,
                  random_reads=40, tp=2, rank=1, cluster_mounts=3, conditions=["loopback"], loaders_runs=3,
                  steady_warm=256 << 20),
}
RANDOM_READ_BYTES = 128 * 1024
CLUSTER_CAP_S = 120  # each of the N readers reads the whole shard, within reason


# How the figures are made, carried into the JSON so a reader of the results alone knows.
METHOD = {
    "servers": "The Hub emulator answers the API and resolves LFS files with a 302 to nginx, which serves the "
               "bytes (sendfile, Range) and lists the commit directory (autoindex) for the FUSE peers.",
    "wan_profile": "Each nginx response waits 20 ms before its first byte (auth_request to a delay server, so "
                   "nginx still sends the body itself) and is capped at 40 MB/s (limit_rate); the emulator's "
                   "API answers get the same delay and pace (its latency_ms and bandwidth_bps knobs).",
    "cold": "Every measurement on a filesystem mounts it afresh (unmounting drops its page cache) with an "
            "empty cache directory; the served files are kept in the server's page cache.",
    "warm": "After the cold pass, the page cache is dropped (echo 3 > /proc/sys/vm/drop_caches) and the "
            "filesystem remounted on the same cache directory: warm means its own persistent cache. The "
            "local file is the same bytes read from disk after the same drop.",
    "downloads": "curl and aria2c fetch the resolve URL (following the redirect) into a file on the same disk "
                 "as the filesystems' caches.",
    "fetched": "Bytes fetched are nginx's $bytes_sent (and the emulator's log) between mount and unmount, "
               "read-ahead included.",
    "caps": "A reader still running at its time cap is stopped; its figure covers what it did (marked partial).",
    "ratios": "hubfs ÷ best peer is computed within each run, then summarised over runs.",
    "cluster": "N hubfs mounts (fresh caches) read the same whole shard at once, each straight from the Hub "
               "or all through one scripts/cluster-cache.sh (nginx, started empty for the measurement, on "
               "loopback like a site's cache near its nodes): bytes the data plane sent and the wall time until "
               "the last reader is done.",
    "all_ranks": "Every tensor-parallel rank's `hubfs load --device cpu` started at once on one fresh hubfs mount "
                 "(empty cache): wall time until the last is done, bytes fetched ÷ the model's files, the daemon's "
                 "peak RSS.",
    "no_mount": "Loading without a mount: `hubfs load hf://` (a fresh HF_HOME: empty persistent cache) against "
                "the same rank through a hubfs mount and against downloading every file the load reads "
                "(curl --parallel) then loading the local copy; bytes and seconds cover the whole command.",
    "loaders": "The whole model loaded by the loaders users run today, each touching every weight (a sum in its "
               "dtype; bench/mount_loaders.py, shared with tests/lazy/test_beat_download.py): from_pretrained, "
               "load_file per shard, safe_open + get_tensor in key order. Each cold on a fresh hubfs mount (empty "
               "cache), against a cold `cat` of every shard through a fresh mount, and against snapshot_download "
               "into a fresh HF_HOME then the same loader on that copy (from the page cache the download filled); "
               "each step in a fresh process, its imports before the clock. The sums on the mount must equal those "
               "on the copy. Ratios within each run.",
    "cpu": "CPU seconds per GB read (or needed): user + system CPU of the system's own processes over the "
           "workload (a FUSE daemon's utime + stime from /proc/PID/stat before and after the reader; a download "
           "tool's from wait4) plus the reader process's (wait4).",
    "rss": "Peak RSS: a FUSE daemon's VmHWM at the end of the measurement; a download tool's ru_maxrss.",
    "loader": "Loading the same rank into torch tensors in host memory, in a child process each (peak RSS is its "
              "VmHWM): hubfs.load_rank and hubfs.iter_tensors against the safetensors package's load_file of each "
              "shard then slicing, and safe_open + get_slice; from the page cache (the local copy, read once "
              "before), then cold from a hubfs mount (mounted afresh, empty cache, loopback). Sampled bytes of "
              "every tensor must agree between the methods of a run. Ratios: hubfs ÷ the best safetensors method, "
              "within each run.",
}
LOADER_TIMEOUT_S = 600  # load_file reads every whole shard, through the mount too
LOADERS_TIMEOUT_S = 900  # a whole-model load or download, through the WAN profile too


class Interrupted(BaseException):
    """A signal to stop: not an Exception, so no measurement's error handling swallows it."""


def on_signal(signum, _frame):
    raise Interrupted(f"signal {signum}")


def log(msg):
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------
# Data: the model, the emulator store
# --------------------------------------------------------------------------------------------


def prepare_model(data_dir, profile, layout):
    """Generates (once, reused between runs) the model and the emulator's store. layout: the
    tensor order inside each shard (scripts/make_model.py: `sorted`, what the safetensors package
    writes and Hub checkpoints have, or `module`)."""
    name = f"model-{profile['preset']}-{profile['shards']}-f16-{layout}"
    model_dir = os.path.join(data_dir, name)
    if not os.path.exists(os.path.join(model_dir, "config.json")):
        log(f"generating the {profile['preset']} model in {model_dir}")
        shutil.rmtree(model_dir, ignore_errors=True)
        # f16, not bf16: numpy (the safetensors package's numpy framework) has no bfloat16.
        subprocess.run([sys.executable, os.path.join(HERE, "make_model.py"), "--out", model_dir, "--preset",
                        profile["preset"], "--shards", str(profile["shards"]), "--dtype", "f16", "--layout", layout],
                       check=True, stdout=subprocess.DEVNULL)
    store = os.path.join(data_dir, f"store-{name}")
    imported = os.path.join(store, "bench-commit")
    if not os.path.exists(imported):
        shutil.rmtree(store, ignore_errors=True)
        sha = servers.import_model(store, REPO_ID, model_dir)  # hard links: no copy
        with open(imported, "w") as f:
            f.write(sha + "\n")
    with open(imported) as f:
        sha = f.read().strip()
    commit = os.path.join(store, servers.commit_dir(store, REPO_ID, sha))
    shards = workloads.shard_files(commit)
    return {"dir": commit, "store": store, "sha": sha, "shards": shards,
            "sizes": {f: os.path.getsize(os.path.join(commit, f)) for f in os.listdir(commit)}}


def drop_page_cache():
    """Writes back and drops the kernel's page cache (root only): afterwards a warm read comes
    from the filesystem's own cache on disk, not from memory."""
    subprocess.run(["sync"], check=False)
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        return True
    except OSError:
        return False


def warm_server_files(model):
    """Reads the served files once so nginx serves from memory: the data plane is not the
    bottleneck."""
    for name in model["shards"]:
        workloads.sequential_read(os.path.join(model["dir"], name), cap_s=600)


# --------------------------------------------------------------------------------------------
# One measurement
# --------------------------------------------------------------------------------------------


class Child:
    """A finished child: rc (None when it was killed), stdout, stderr, wall seconds, and the CPU
    seconds (user + system) and peak RSS (KiB) of it and of what it waited for, from wait4."""

    def __init__(self, rc, out, err, seconds, usage):
        self.rc, self.out, self.err, self.seconds = rc, out, err, seconds
        self.cpu_s = usage.ru_utime + usage.ru_stime if usage else None
        self.peak_rss_kib = usage.ru_maxrss if usage else None


def run_child(cmd, timeout_s, mounted=None, env=None):
    """Runs a reader in its own process group; kills it past timeout_s (and the FUSE daemon if
    the reader is stuck inside it). Its output goes to files, and a thread reaps it with wait4,
    which gives its resource usage."""
    started = time.monotonic()
    with tempfile.TemporaryFile() as out_file, tempfile.TemporaryFile() as err_file:
        proc = subprocess.Popen(cmd, stdout=out_file, stderr=err_file, start_new_session=True, env=env)
        reaped = []
        reaper = threading.Thread(target=lambda: reaped.append(os.wait4(proc.pid, 0)), daemon=True)
        reaper.start()
        try:
            reaper.join(timeout_s)
        except BaseException:  # a signal to stop the bench: the reader goes too
            os.killpg(proc.pid, signal.SIGKILL)
            raise
        killed = reaper.is_alive()
        if killed:
            os.killpg(proc.pid, signal.SIGKILL)
            reaper.join(5)
            if reaper.is_alive() and mounted:  # the reader is stuck in the filesystem: ending the daemon frees it
                mounted.kill()
            reaper.join(20)
            if reaper.is_alive():
                raise RuntimeError(f"{cmd[0]}: killed after {timeout_s} s and still not gone")
        seconds = time.monotonic() - started
        _, status, usage = reaped[0] if reaped else (None, None, None)
        proc.returncode = os.waitstatus_to_exitcode(status) if status is not None else -signal.SIGKILL
        out, err = (_read_text(f) for f in (out_file, err_file))
    if killed:
        err += f"\n(killed after {timeout_s} s)"
    return Child(None if killed else proc.returncode, out, err, seconds, usage)


def _read_text(f):
    f.seek(0)
    return f.read().decode("utf-8", "replace")


PAST_CAP_S = 2.0  # a reader still inside one read this long after its cap is stopped
LOAD_TIMEOUT_S = 120  # hubfs load runs to the end (it is the system under test), within reason


def run_workload(spec, mounted):
    """Runs a reader (workloads.py) until it finishes or overruns its cap; a reader stopped
    while inside a long read reports its last progress line, marked incomplete."""
    timeout = spec["cap_s"] + PAST_CAP_S
    child = run_child([sys.executable, WORKLOAD_SCRIPT, json.dumps(spec)], timeout, mounted)
    lines = child.out.strip().splitlines()
    if child.rc is None and lines:  # every reader reports its (empty) progress first
        result = json.loads(lines[-1])
        result["complete"] = False
        result["seconds"] = child.seconds  # what it got done in the time it was given
    elif child.rc != 0 or not lines:
        raise RuntimeError(f"workload {spec['workload']} failed: {child.err.strip()[-800:]}")
    else:
        result = json.loads(lines[-1])
    result["reader_cpu_s"] = child.cpu_s
    return result


def add_cpu(entry, cpu_s, nbytes):
    """CPU seconds per GB of data the workload read (or needed)."""
    entry["cpu_s"] = cpu_s
    entry["cpu_s_per_gb"] = cpu_s / (nbytes / GB) if cpu_s is not None and nbytes else None


def max_in_flight(requests):
    events = []
    for r in requests:
        events += [(r["end"] - r["duration"], 1), (r["end"], -1)]
    depth = peak = 0
    for _, step in sorted(events, key=lambda e: (e[0], -e[1])):  # a start before an end at a tie
        depth += step
        peak = max(peak, depth)
    return peak


def _average_in_flight(requests):
    """Request-seconds over the span from the first start to the last end."""
    if not requests:
        return 0.0
    span = max(r["end"] for r in requests) - min(r["end"] - r["duration"] for r in requests)
    return sum(r["duration"] for r in requests) / span if span > 0 else 1.0


def traffic(bench, marks):
    """What the servers saw since marks: data bytes and requests (file bodies from nginx or the
    emulator's CDN), listings (autoindex pages), and Hub API calls (API + resolve)."""
    time.sleep(0.3)  # let the servers log the requests a client cut short by unmounting
    nginx_entries = bench.nginx.log.since(marks["nginx"]) if bench.nginx else []
    emu_entries = bench.emulator.log.since(marks["emulator"])
    data, listings, hub = [], [], []
    for e in nginx_entries:
        (listings if e["path"].endswith("/") else data).append(e)
    for e in emu_entries:
        (data if e["origin"] == "cdn" else hub).append(e)
    data_get = [e for e in data if e["method"] == "GET"]
    sizes = sorted(e["bytes"] for e in data_get)
    return {"data_bytes": sum(e["bytes"] for e in data), "data_requests": len(data),
            "data_gets": len(data_get), "data_heads": len(data) - len(data_get),
            "median_fetch_bytes": sizes[len(sizes) // 2] if sizes else 0,
            "max_in_flight": max_in_flight(data_get),
            "avg_in_flight": _average_in_flight(data_get),
            "listing_requests": len(listings), "listing_bytes": sum(e["bytes"] for e in listings),
            "hub_requests": len(hub), "hub_bytes": sum(e["bytes"] for e in hub),
            "requests_per_file": _per_file(data)}


def _per_file(entries):
    counts = {}
    for e in entries:
        name = e["path"].rsplit("/", 1)[-1]
        counts[name] = counts.get(name, 0) + 1
    return counts


class Bench:
    def __init__(self, args, profile, model, work):
        self.args, self.profile, self.model, self.work = args, profile, model, work
        self.nginx = self.emulator = None
        self.measurements = []
        self.session = 0
        self.warned_missing = False
        self.failures = []
        self.page_cache_dropped = None
        self.loader_measurements = []
        self.loaders_measurements = []

    def has_measurements(self):
        return bool(self.measurements or self.loader_measurements or self.loaders_measurements)

    # -- servers -------------------------------------------------------------------------------
    def start_servers(self, condition):
        shaping = CONDITIONS[condition]
        cond_work = os.path.join(self.work, condition)
        os.makedirs(cond_work, exist_ok=True)
        external = None
        if not self.args.smoke:
            self.nginx = servers.Nginx(cond_work, self.model["store"], shaping["rate_bps"], shaping["delay_ms"]).start()
            external = self.nginx.url
        self.emulator = servers.Emulator(cond_work, self.model["store"], external).start()
        if shaping["delay_ms"] or shaping["rate_bps"]:
            self.emulator.configure(latency_ms=shaping["delay_ms"], bandwidth_bps=shaping["rate_bps"])

    def stop_servers(self):
        if self.emulator:
            self.emulator.stop()
            self.emulator = None
        if self.nginx:
            self.nginx.stop()
            self.nginx = None

    def systems(self):
        hub = self.emulator.hub_url
        found = [systems.Curl()]
        if not self.args.smoke:
            listing = self.nginx.url + "/" + servers.commit_dir(self.model["store"], REPO_ID, self.model["sha"]) + "/"
            found += [systems.Aria2(), systems.HttpDirFs(listing, cache=False), systems.HttpDirFs(listing, cache=True),
                      systems.RcloneMount(listing, "off"), systems.RcloneMount(listing, "full")]
        found.append(systems.Hubfs(self.args.hubfs, hub, REPO_ID))
        wanted = set(self.args.systems.split(",")) if self.args.systems else None
        chosen = [s for s in found if wanted is None or s.name in wanted]
        missing = [s.label for s in chosen if not systems.tool_available(s)]
        if missing and not self.warned_missing:
            log("not installed, left out: " + ", ".join(missing) + " (scripts/install-deps.sh --bench)")
            self.warned_missing = True
        return [s for s in chosen if systems.tool_available(s)]

    # -- sessions ------------------------------------------------------------------------------
    def marks(self):
        return {"nginx": self.nginx.log.mark() if self.nginx else 0, "emulator": self.emulator.log.mark()}

    def session_dir(self, label):
        """A new path under the run's sessions/ (removed at the end of each run)."""
        self.session += 1
        return os.path.join(self.work, "sessions", f"{self.session:04d}-{label}")

    def paths(self, system, label):
        base = self.session_dir(f"{system.name}-{label}")
        return os.path.join(base, "mnt"), os.path.join(base, "cache"), base + ".log"

    def record(self, condition, run, workload, system, result, marks):
        entry = {"condition": condition, "run": run, "workload": workload, "system": system.name}
        entry.update(result)
        entry["traffic"] = traffic(self, marks)
        self.measurements.append(entry)
        return entry

    def with_mount(self, system, label, cache_dir=None):
        """Mounts system afresh: on cache_dir when given (the warm pass), else an empty one."""
        mnt, fresh_cache, log_path = self.paths(system, label)
        return system.mount(mnt, cache_dir or fresh_cache, log_path)

    def finish(self, condition, run, workload, system, marks, mounted, fn, into=None):
        """Runs fn(mounted) -> result on a mounted system, then unmounts and records (in `into`,
        default the main measurements). CPU: the daemon's over fn plus the reader's (fn's
        reader_cpu_s); peak RSS: the daemon's VmHWM."""
        try:
            cpu_before = mounted.cpu_s()
            result = fn(mounted)
            cpu_after = mounted.cpu_s()
            rss, stats = mounted.peak_rss_kib(), mounted.stats()
        finally:
            mounted.unmount()
            if not self.args.keep_work and not systems.is_mounted(mounted.mountpoint):
                # Its mountpoint, cache and log are not needed again.
                shutil.rmtree(os.path.dirname(mounted.mountpoint), ignore_errors=True)
        entry = {"condition": condition, "run": run, "workload": workload, "system": system.name}
        entry.update(result)
        entry["traffic"] = traffic(self, marks)
        daemon_cpu = cpu_after - cpu_before if None not in (cpu_before, cpu_after) else None  # None: it died
        reader_cpu = result.get("reader_cpu_s", 0)  # None: the reader was never reaped
        entry.update(peak_rss_kib=rss, peak_rss_mib=rss / 1024 if rss else None, daemon_cpu_s=daemon_cpu,
                     cpu_s=daemon_cpu + reader_cpu if None not in (daemon_cpu, reader_cpu) else None)
        if stats is not None:
            entry["fs_stats"] = stats
        (self.measurements if into is None else into).append(entry)
        return entry

    # -- workloads -----------------------------------------------------------------------------
    def seq_file(self):
        shards = self.model["shards"]
        return shards[1] if len(shards) > 1 else shards[0]

    def cold_sequential(self, condition, run, system, cache_dir=None):
        name = self.seq_file()
        cap = self.profile["seq_cap"]
        marks = self.marks()
        if system.kind == "download":
            url = f"{self.emulator.hub_url}/{REPO_ID}/resolve/main/{name}"
            dest = os.path.join(self.work, "downloads", name)
            seconds, complete, rss, cpu = system.fetch(url, dest, cap)
            size = self.model["sizes"][name]
            got = os.path.getsize(dest) if complete and os.path.exists(dest) else None
            if complete and got != size:
                raise RuntimeError(f"{system.label} wrote {got} bytes of {size}")
            if os.path.exists(dest):
                os.unlink(dest)
            entry = self.record(condition, run, "cold_seq", system, {"seconds": seconds, "complete": complete,
                                                                     "peak_rss_kib": rss, "peak_rss_mib": rss / 1024,
                                                                     "cpu_s": cpu}, marks)
            entry["bytes"] = size if complete else entry["traffic"]["data_bytes"]
        else:
            mounted = self.with_mount(system, "seq", cache_dir)
            path = os.path.join(mounted.model, name)
            entry = self.finish(condition, run, "cold_seq", system, marks, mounted, lambda m: run_workload(
                {"workload": "sequential", "path": path, "cap_s": cap}, m))
        entry["mb_per_s"] = entry["bytes"] / entry["seconds"] / MB
        add_cpu(entry, entry["cpu_s"], entry["bytes"])
        return entry

    def warm_sequential(self, condition, run, system, cache_dir, limit):
        name = self.seq_file()
        marks = self.marks()
        mounted = self.with_mount(system, "warm", cache_dir)
        path = os.path.join(mounted.model, name)
        entry = self.finish(condition, run, "warm_seq", system, marks, mounted, lambda m: run_workload(
            {"workload": "sequential", "path": path, "cap_s": self.profile["seq_cap"], "limit_bytes": limit}, m))
        entry["mb_per_s"] = entry["bytes"] / entry["seconds"] / MB
        add_cpu(entry, entry["cpu_s"], entry["bytes"])
        return entry

    def local_sequential(self, condition, run, limit):
        path = os.path.join(self.model["dir"], self.seq_file())
        cpu = time.process_time()  # the read runs here, with nothing else going on
        result = workloads.sequential_read(path, self.profile["seq_cap"], limit)
        entry = {"condition": condition, "run": run, "workload": "warm_seq", "system": "local"}
        entry.update(result)
        entry["mb_per_s"] = result["bytes"] / result["seconds"] / MB
        add_cpu(entry, time.process_time() - cpu, result["bytes"])
        self.measurements.append(entry)
        return entry

    def inspect(self, condition, run, system):
        marks = self.marks()
        mounted = self.with_mount(system, "inspect")
        shards = self.model["shards"]
        cap = self.profile["header_cap"]

        def work(m):
            if isinstance(system, systems.Hubfs):
                child = run_child([self.args.hubfs, "inspect", m.model], cap + 60, m)
                if child.rc != 0:
                    raise RuntimeError(f"hubfs inspect failed ({child.rc}): {child.err.strip()[-500:]}")
                return {"seconds": child.seconds, "complete": True, "tool": "hubfs inspect",
                        "reader_cpu_s": child.cpu_s}
            paths = [os.path.join(m.model, s) for s in shards]
            result = run_workload({"workload": "headers", "paths": paths, "cap_s": cap}, m)
            result["tool"] = "python"
            return result
        entry = self.finish(condition, run, "inspect", system, marks, mounted, work)
        entry["bytes_needed"] = self.header_bytes()
        entry["fetched_kib"] = entry["traffic"]["data_bytes"] / 1024
        entry["data_requests_per_shard"] = entry["traffic"]["data_requests"] / len(shards)
        return entry

    def header_bytes(self):
        total = 0
        for s in self.model["shards"]:
            with open(os.path.join(self.model["dir"], s), "rb") as f:
                total += 8 + int.from_bytes(f.read(8), "little")
        return total

    def tp_slices(self, condition, run, system, only, workload):
        plan = workloads.tp_plan(self.model["dir"], self.profile["tp"], self.profile["rank"], only)
        needed = sum(p["bytes"] for p in plan)
        cap = self.profile["slice_cap"]
        marks = self.marks()
        mounted = self.with_mount(system, workload)
        entry = self.finish(condition, run, workload, system, marks, mounted, lambda m: run_workload(
            {"workload": "slices", "model_dir": m.model, "plan": plan, "cap_s": cap}, m))
        entry["plan_bytes"] = needed
        # Both undefined when the cap stopped the reader inside its first slice. A capped run's
        # time to load everything is projected from its pace so far.
        done = entry["bytes_needed"]
        entry["fetched_over_needed"] = entry["traffic"]["data_bytes"] / done if done else None
        entry["load_seconds"] = entry["seconds"] * needed / done if done else None
        add_cpu(entry, entry["cpu_s"], done)
        return entry

    def rank_load(self, mounted, rank):
        """`hubfs load` of one rank from the mount into host memory; its child, or an error."""
        cmd = [self.args.hubfs, "load", mounted.model, "--tp", str(self.profile["tp"]), "--rank", str(rank),
               "--device", "cpu"]
        child = run_child(cmd, LOAD_TIMEOUT_S, mounted)
        if child.rc is None:
            raise RuntimeError(f"hubfs load of rank {rank} did not finish in {LOAD_TIMEOUT_S} s")
        if child.rc != 0:
            raise RuntimeError(f"hubfs load of rank {rank} failed ({child.rc}): {child.err.strip()[-500:]}")
        return child

    def hubfs_load(self, condition, run, system):
        plan = workloads.tp_plan(self.model["dir"], self.profile["tp"], self.profile["rank"])
        needed = sum(p["bytes"] for p in plan)
        marks = self.marks()
        mounted = self.with_mount(system, "load")

        def work(m):
            child = self.rank_load(m, self.profile["rank"])
            return {"seconds": child.seconds, "complete": True, "bytes_needed": needed,
                    "tool_output": child.out[-1500:], "reader_cpu_s": child.cpu_s,
                    "loader_peak_rss_kib": child.peak_rss_kib}
        entry = self.finish(condition, run, "tp_load", system, marks, mounted, work)
        entry["fetched_over_needed"] = entry["traffic"]["data_bytes"] / needed
        entry["fetched_mb"] = entry["traffic"]["data_bytes"] / MB
        entry["load_seconds"] = entry["seconds"]
        add_cpu(entry, entry["cpu_s"], needed)
        return entry

    def all_ranks(self, condition, run, system):
        """Every rank's `hubfs load` at once on one mount, as a node's GPUs start together: the time
        until the last is done, the bytes fetched against the model's, and the daemon's peak RSS
        (its memory bound under the heaviest load a node puts on it)."""
        tp = self.profile["tp"]
        model_bytes = sum(self.model["sizes"][s] for s in self.model["shards"])
        marks = self.marks()
        mounted = self.with_mount(system, "ranks")

        def work(m):
            started = time.monotonic()
            with ThreadPoolExecutor(tp) as pool:
                children = list(pool.map(lambda rank: self.rank_load(m, rank), range(tp)))
            return {"seconds": time.monotonic() - started, "complete": True, "bytes_needed": model_bytes,
                    "reader_cpu_s": sum(c.cpu_s for c in children)}
        entry = self.finish(condition, run, "all_ranks", system, marks, mounted, work)
        entry["fetched_over_model"] = entry["traffic"]["data_bytes"] / model_bytes
        add_cpu(entry, entry["cpu_s"], model_bytes)
        return entry

    # -- loading without a mount ---------------------------------------------------------------
    def direct_systems(self):
        found = [systems.HubfsHfLoad(self.args.hubfs, self.emulator.hub_url, REPO_ID),
                 systems.CurlThenLoad(self.args.hubfs)]
        wanted = set(self.args.systems.split(",")) if self.args.systems else None
        return [s for s in found if (wanted is None or s.name in wanted) and systems.tool_available(s)]

    def cluster_systems(self):
        wanted = set(self.args.systems.split(",")) if self.args.systems else None
        system = systems.HubfsBehindCache(self.args.hubfs, REPO_ID)
        return [system] if wanted is None or system.name in wanted else []

    def rank_needs(self):
        """Bytes of the rank's slices, and the same with row-parallel tensors counted whole (what a
        reader that reads whole rows must fetch)."""
        plan = workloads.tp_plan(self.model["dir"], self.profile["tp"], self.profile["rank"])
        whole = sum(p["offsets"][1] - p["offsets"][0] if p["style"] == "rowwise" else p["bytes"] for p in plan)
        return sum(p["bytes"] for p in plan), whole

    def load_child(self, cmd, env=None):
        child = run_child(cmd, LOAD_TIMEOUT_S, env=env)
        if child.rc != 0:
            raise RuntimeError(f"{' '.join(cmd[:3])} failed ({child.rc}): {child.err.strip()[-500:]}")
        return child

    def record_direct_load(self, condition, run, system, marks, seconds, out, cpu_s):
        needed, whole = self.rank_needs()
        entry = self.record(condition, run, "hf_load", system, {"seconds": seconds, "complete": True,
                                                                "bytes_needed": needed,
                                                                "tool_output": (out or "")[-1500:]}, marks)
        fetched = entry["traffic"]["data_bytes"]
        entry.update(fetched_mb=fetched / MB, fetched_over_needed=fetched / needed,
                     needed_whole_bytes=whole, fetched_over_needed_whole=fetched / whole, load_seconds=seconds)
        add_cpu(entry, cpu_s, needed)
        return entry

    def hf_load(self, condition, run, system):
        """`hubfs load hf://…` with an empty persistent cache."""
        home = self.session_dir(f"{system.name}-home")
        marks = self.marks()
        child = self.load_child(system.command(self.profile["tp"], self.profile["rank"]),
                                env={**os.environ, **system.env(home)})
        shutil.rmtree(home, ignore_errors=True)
        entry = self.record_direct_load(condition, run, system, marks, child.seconds, child.out, child.cpu_s)
        entry["loader_peak_rss_kib"] = child.peak_rss_kib
        return entry

    def curl_then_load(self, condition, run, system):
        """Every file the load reads downloaded at once, then the local copy loaded."""
        local = self.session_dir(system.name)
        os.makedirs(local)
        names = [n for n in ("config.json", "model.safetensors.index.json") if n in self.model["sizes"]]
        urls = [(f"{self.emulator.hub_url}/{REPO_ID}/resolve/main/{n}", os.path.join(local, n))
                for n in names + self.model["shards"]]
        marks = self.marks()
        started = time.monotonic()
        try:
            download = self.load_child(system.download_command(urls))
            load = self.load_child(system.load_command(local, self.profile["tp"], self.profile["rank"]))
        finally:
            shutil.rmtree(local, ignore_errors=True)
        return self.record_direct_load(condition, run, system, marks, time.monotonic() - started, load.out,
                                       download.cpu_s + load.cpu_s)

    def cluster(self, condition, run, system):
        """N mounts read the same shard at once, each from the Hub or all behind one cluster cache."""
        name, n = self.seq_file(), self.profile["cluster_mounts"]
        cache = None
        if isinstance(system, systems.HubfsBehindCache):
            cache = servers.ClusterCache(os.path.join(self.work, "cluster-cache"), self.emulator.hub_url).start()
            system.endpoint = cache.url
        mounted = []
        try:
            marks = self.marks()
            mounted = [self.with_mount(system, f"cluster{i}") for i in range(n)]
            specs = [{"workload": "sequential", "path": os.path.join(m.model, name), "cap_s": CLUSTER_CAP_S}
                     for m in mounted]
            started = time.monotonic()
            with ThreadPoolExecutor(n) as pool:
                results = list(pool.map(run_workload, specs, mounted))
            seconds = time.monotonic() - started
        finally:
            for m in mounted:
                m.unmount()
                shutil.rmtree(os.path.dirname(m.mountpoint), ignore_errors=True)
            if cache:
                cache.stop()
        entry = self.record(condition, run, "cluster", system, {
            "seconds": seconds, "complete": all(r["complete"] for r in results), "mounts": n,
            "shard_bytes": self.model["sizes"][name], "bytes_read": sum(r["bytes"] for r in results)}, marks)
        entry["cdn_mb"] = entry["traffic"]["data_bytes"] / MB
        return entry

    def random(self, condition, run, system):
        marks = self.marks()
        mounted = self.with_mount(system, "random")
        path = os.path.join(mounted.model, self.seq_file())
        cap = self.profile["random_cap"]
        entry = self.finish(condition, run, "random", system, marks, mounted, lambda m: run_workload(
            {"workload": "random", "path": path, "count": self.profile["random_reads"], "size": RANDOM_READ_BYTES,
             "seed": 1234, "cap_s": cap}, m))
        entry["reads_per_s"] = entry["reads"] / entry["seconds"]
        add_cpu(entry, entry["cpu_s"], entry["reads"] * RANDOM_READ_BYTES)
        return entry

    # -- a run ---------------------------------------------------------------------------------
    def attempt(self, what, condition, run, system, workload, fn, *args):
        """One measurement; a failure is recorded and reported, and the run goes on."""
        log(f"{condition} run {run}: {what}, {system.label}")
        try:
            return fn(condition, run, system, *args)
        except Exception as e:  # noqa: BLE001 - any failure of a peer or of hubfs is a result
            log(f"  FAILED: {e}")
            self.failures.append({"condition": condition, "run": run, "workload": workload,
                                  "system": system.name, "error": str(e)[-1500:]})
            return None

    def run_condition(self, condition, run, only_workloads):
        def want(w):
            return only_workloads is None or w in only_workloads

        all_systems = self.systems()
        mounts = [s for s in all_systems if s.kind == "mount"]
        caches = {}
        if want("cold_seq") or want("warm_seq"):
            for system in all_systems:
                cache_dir = None
                if system.has_cache and system.kind == "mount":
                    cache_dir = os.path.join(self.work, "caches", f"{condition}-{run}-{system.name}")
                entry = self.attempt("cold sequential", condition, run, system, "cold_seq", self.cold_sequential,
                                     cache_dir)
                if entry and cache_dir:
                    caches[system.name] = (system, cache_dir, entry["bytes"])
        if want("warm_seq") and caches:
            self.page_cache_dropped = drop_page_cache()
            for system, cache_dir, cold_bytes in caches.values():
                self.attempt("warm re-read", condition, run, system, "warm_seq", self.warm_sequential, cache_dir,
                             cold_bytes)
            self.local_sequential(condition, run, max(b for _, _, b in caches.values()))
            for _, cache_dir, _ in caches.values():
                shutil.rmtree(cache_dir, ignore_errors=True)
            warm_server_files(self.model)
        for system in mounts:
            if want("inspect"):
                self.attempt("inspect", condition, run, system, "inspect", self.inspect)
            if want("tp_colwise"):
                self.attempt("TP colwise slices", condition, run, system, "tp_colwise", self.tp_slices,
                             {"colwise"}, "tp_colwise")
            if want("tp_slices"):
                self.attempt("TP rank slices", condition, run, system, "tp_slices", self.tp_slices, None,
                             "tp_slices")
            if want("random"):
                self.attempt("random reads", condition, run, system, "random", self.random)
            if want("tp_load") and isinstance(system, systems.Hubfs):
                self.attempt("hubfs load", condition, run, system, "tp_load", self.hubfs_load)
            if want("all_ranks") and isinstance(system, systems.Hubfs):
                self.attempt("every rank at once", condition, run, system, "all_ranks", self.all_ranks)
        if want("cluster"):
            for system in [s for s in mounts if type(s) is systems.Hubfs] + self.cluster_systems():
                self.attempt("N mounts at once", condition, run, system, "cluster", self.cluster)
        if want("hf_load"):
            for system in self.direct_systems():
                method = self.hf_load if isinstance(system, systems.HubfsHfLoad) else self.curl_then_load
                self.attempt("load without a mount", condition, run, system, "hf_load", method)
        if run <= self.profile["loaders_runs"] and (want("loaders") if not self.args.smoke
                                                     else "loaders" in (only_workloads or ())):
            self.loaders_workload(condition, run)
        # On loopback only: under the WAN profile, load_file's whole shards would take minutes a run.
        if condition == "loopback" and (want("loader") if not self.args.smoke else "loader" in (only_workloads or ())):
            self.loader_section(run)
        shutil.rmtree(os.path.join(self.work, "sessions"), ignore_errors=True)

    # -- loaders on the mount (scripts/bench/mount_loaders.py) ---------------------------------
    def loaders_workload(self, condition, run):
        """The whole model loaded by the loaders users run today, cold on a fresh hubfs mount each,
        with a cold `cat` of every shard through a fresh mount as the reference; then
        snapshot_download into a fresh HF_HOME and each loader on that copy. Every step in a fresh
        child process. A loader that summed other weights on the mount than on the copy is a
        failure, not a figure."""
        hubfs = systems.Hubfs(self.args.hubfs, self.emulator.hub_url, REPO_ID)
        download = systems.SnapshotDownload(self.emulator.hub_url)
        entries = [self.attempt(f"loaders: {name} on a fresh mount", condition, run, hubfs, "loaders",
                                self.loader_on_mount, name)
                   for name in [mount_loaders.REFERENCE, *mount_loaders.LOADERS]]
        home = self.session_dir(f"{download.name}-home")
        try:
            copy = self.attempt("loaders: snapshot_download", condition, run, download, "loaders",
                                self.snapshot_download, home)
            if copy:
                entries.append(copy)
                entries += [self.attempt(f"loaders: {name} on the downloaded copy", condition, run, download,
                                         "loaders", self.loader_on_copy, name, copy["local_path"])
                            for name in mount_loaders.LOADERS]
        finally:
            shutil.rmtree(home, ignore_errors=True)
        self.loaders_measurements += self.same_weights(condition, run, [e for e in entries if e])

    def same_weights(self, condition, run, entries):
        """The entries of every loader whose sum on the mount equals its sum on the copy (or that
        has no copy to compare with: the reference, a failed download); the others are failures."""
        sums = {}
        for e in entries:
            if "weights_sum" in e:
                sums.setdefault(e["loader"], {})[e["where"]] = e["weights_sum"]
        differ = {name for name, s in sums.items() if len(set(s.values())) > 1}
        for name in sorted(differ):
            log(f"  FAILED: {name} summed {sums[name]}")
            self.failures.append({"condition": condition, "run": run, "workload": "loaders", "system": name,
                                  "error": f"{name}: the weights' sum on the mount and on the download differ: "
                                           f"{sums[name]}"})
        return [e for e in entries if e["loader"] not in differ]

    def loaders_child(self, spec, env, mounted=None):
        """One step of the loaders workload in a fresh process; its own figures (bench/mount_loaders.py)."""
        child = run_child([sys.executable, MOUNT_LOADERS_SCRIPT, json.dumps(spec)], LOADERS_TIMEOUT_S, mounted,
                          {**os.environ, **env})
        lines = child.out.strip().splitlines()
        if child.rc != 0 or not lines:
            raise RuntimeError(f"{spec} failed ({child.rc}): {child.err.strip()[-800:]}")
        return json.loads(lines[-1])

    def loader_env(self, label):
        """Loading a local directory: nothing from the network, nothing from the user's setup."""
        return {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_TOKEN": "",
                "HF_HOME": self.session_dir(f"{label}-home"), "HF_HUB_DISABLE_TELEMETRY": "1"}

    def loaders_entry(self, entry, name, where):
        entry.update(loader=name, where=where, workload="loaders")
        add_cpu(entry, entry["cpu_s"], self.model_shard_bytes())
        return entry

    def model_shard_bytes(self):
        return sum(self.model["sizes"][s] for s in self.model["shards"])

    def loaders_model(self):
        first = workloads.safetensors_header(os.path.join(self.model["dir"], self.model["shards"][0]))
        return {"repo": REPO_ID, "shards": len(self.model["shards"]), "shard_bytes": self.model_shard_bytes(),
                "dtype": next(iter(first.values()))["dtype"]}

    def loader_on_mount(self, condition, run, system, name):
        marks = self.marks()
        mounted = self.with_mount(system, f"loaders-{name}")

        def work(m):
            if name == mount_loaders.REFERENCE:
                paths = [os.path.join(m.model, s) for s in self.model["shards"]]
                ticks = mount_loaders.machine_ticks()
                child = run_child(["sh", "-c", 'exec cat "$@" >/dev/null', "cat", *paths], LOADERS_TIMEOUT_S, m)
                if child.rc != 0:
                    raise RuntimeError(f"cat failed ({child.rc}): {child.err.strip()[-500:]}")
                return {"seconds": child.seconds, "complete": True, "reader_cpu_s": child.cpu_s,
                        "machine_busy_pct": mount_loaders.busy_pct(ticks, mount_loaders.machine_ticks())}
            result = self.loaders_child({"loader": name, "path": m.model}, self.loader_env(name), m)
            return {"seconds": result["seconds"], "complete": True, "reader_cpu_s": result["cpu_s"],
                    "weights_sum": result["weights_sum"], "loader_peak_rss_kib": result["peak_rss_kib"],
                    "machine_busy_pct": result["machine_busy_pct"]}
        # Kept apart from the main table's measurements until the weights are checked.
        entry = self.finish(condition, run, "loaders", system, marks, mounted, work, into=[])
        entry["fetched_mb"] = entry["traffic"]["data_bytes"] / MB
        return self.loaders_entry(entry, name, "mount")

    def snapshot_download(self, condition, run, system, home):
        marks = self.marks()
        result = self.loaders_child({"download": REPO_ID}, system.env(home))
        entry = {"condition": condition, "run": run, "system": system.name, "seconds": result["seconds"],
                 "complete": True, "local_path": result["path"], "cpu_s": result["cpu_s"],
                 "peak_rss_mib": result["peak_rss_kib"] / 1024, "machine_busy_pct": result["machine_busy_pct"],
                 "traffic": traffic(self, marks)}
        entry["fetched_mb"] = entry["traffic"]["data_bytes"] / MB
        return self.loaders_entry(entry, mount_loaders.DOWNLOAD, "download")

    def loader_on_copy(self, condition, run, system, name, local_path):
        result = self.loaders_child({"loader": name, "path": local_path}, self.loader_env(name))
        entry = {"condition": condition, "run": run, "system": system.name, "seconds": result["seconds"],
                 "complete": True, "cpu_s": result["cpu_s"], "loader_peak_rss_kib": result["peak_rss_kib"],
                 "weights_sum": result["weights_sum"], "fetched_mb": 0.0, "machine_busy_pct": result["machine_busy_pct"]}
        return self.loaders_entry(entry, name, "copy")

    # -- the loader section (scripts/bench/loader.py) ------------------------------------------
    def loader_section(self, run):
        """The same rank loaded by each method from the page cache, then cold from a fresh hubfs
        mount each; a run whose methods loaded different bytes is a failure, not a figure."""
        plan_file = os.path.join(self.work, "loader-plan.json")
        self.loader_rank_bytes = loader.write_plan(self.model["dir"], self.profile["tp"], self.profile["rank"],
                                                   plan_file)
        for name in self.model["shards"]:  # "from the page cache": read once before
            workloads.sequential_read(os.path.join(self.model["dir"], name), cap_s=600)
        for where in loader.CONDITIONS:
            entries = []
            for method in loader.METHODS:
                log(f"loopback run {run}: loader {loader.CONDITIONS[where]}, {loader.METHODS[method]}")
                try:
                    entries.append(self.loader_measure(where, run, method, plan_file))
                except Exception as e:  # noqa: BLE001 - a failure of a method is a result
                    log(f"  FAILED: {e}")
                    self.failures.append({"condition": where, "run": run, "workload": "loader", "system": method,
                                          "error": str(e)[-1500:]})
            try:
                loader.check_same_rank(entries)
                self.loader_measurements += entries
            except RuntimeError as e:
                log(f"  FAILED: {e}")
                self.failures.append({"condition": where, "run": run, "workload": "loader", "system": "all",
                                      "error": str(e)})

    def loader_measure(self, where, run, method, plan_file):
        args = (plan_file, self.profile["tp"], self.profile["rank"], self.args.libhubfs, LOADER_TIMEOUT_S)
        if where == "page_cache":
            result = loader.measure(method, self.model["dir"], *args)
        else:
            marks = self.marks()
            mounted = self.with_mount(systems.Hubfs(self.args.hubfs, self.emulator.hub_url, REPO_ID), "loader")
            try:
                result = loader.measure(method, mounted.model, *args)
            finally:
                mounted.unmount()
                if not self.args.keep_work and not systems.is_mounted(mounted.mountpoint):
                    shutil.rmtree(os.path.dirname(mounted.mountpoint), ignore_errors=True)
            result["fetched_mb"] = traffic(self, marks)["data_bytes"] / MB
        result.update(condition=where, run=run, system=method)
        return result


def tp_plan_summary(model, profile):
    """Bytes the rank needs, and bytes of the whole tensors, per split style. A rowwise slice
    is a few hundred bytes of every row, so reading it pulls in (nearly) the whole tensor: the
    floor of bytes fetched ÷ needed for all tensors is far above 1 even for a perfect reader."""
    summary = {"tp": profile["tp"], "rank": profile["rank"], "styles": {}}
    for item in workloads.tp_plan(model["dir"], profile["tp"], profile["rank"]):
        style = summary["styles"].setdefault(item["style"], {"tensors": 0, "needed_bytes": 0, "tensor_bytes": 0})
        style["tensors"] += 1
        style["needed_bytes"] += item["bytes"]
        style["tensor_bytes"] += item["offsets"][1] - item["offsets"][0]
    return summary


def fresh_memory_write_rates():
    """The machine's cost of fresh memory (workloads.memory_probe), measured in a child: touching
    it here would raise the peak RSS every later child inherits from this process."""
    child = run_child([sys.executable, WORKLOAD_SCRIPT, json.dumps({"workload": "memory_probe"})], 120)
    lines = child.out.strip().splitlines()
    if child.rc != 0 or not lines:
        raise RuntimeError(f"the memory probe failed: {child.err.strip()[-800:]}")
    return json.loads(lines[-1])


# Linux's free page reporting (virtio-balloon) hands freed memory back to the hypervisor; the next
# process to touch such a page pays the hypervisor's fault too. On the development VM that write
# runs at 0.13-0.8 GB/s against 6-9 GB/s for memory the guest keeps, and the cost lands on
# whichever process touches the pages next: a mount's page cache fill, a loader's copy. Raising the
# order above the buddy allocator's largest (10) reports nothing while it is set.
PAGE_REPORTING_ORDER = "/sys/module/page_reporting/parameters/page_reporting_order"
PAGE_REPORTING_PAUSED = "11"
STEADY_MEMORY_HEADROOM = 4 << 30


def memory_available():
    with open("/proc/meminfo") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable:"))


class SteadyMemoryError(RuntimeError):
    pass


@contextlib.contextmanager
def steady_memory(enabled, warm_max):
    """--steady-memory: pauses free page reporting for the run (restored on the way out, signals
    included) and writes the memory the run will use once, in a child, so that it stays the
    guest's. Yields the facts for the results (None when not asked)."""
    if not enabled:
        yield None
        return
    try:
        with open(PAGE_REPORTING_ORDER) as f:
            before = f.read().strip()
    except OSError as e:
        raise SteadyMemoryError(f"--steady-memory: cannot read {PAGE_REPORTING_ORDER} ({e.strerror}): this kernel "
                                "reports no free pages to a hypervisor; run without --steady-memory") from None
    try:
        with open(PAGE_REPORTING_ORDER, "w") as f:
            f.write(PAGE_REPORTING_PAUSED)
    except OSError as e:
        raise SteadyMemoryError(f"--steady-memory: cannot pause free page reporting ({e.strerror}): run as root, "
                                "or without --steady-memory") from None
    try:
        warm = max(0, min(warm_max, memory_available() - STEADY_MEMORY_HEADROOM))
        log(f"free page reporting paused (order {before} -> {PAGE_REPORTING_PAUSED}); writing {warm >> 20} MiB "
            "once so the run's memory stays the guest's")
        started = time.monotonic()
        child = run_child([sys.executable, WORKLOAD_SCRIPT,
                           json.dumps({"workload": "memory_warm", "total_bytes": warm})], 600)
        if child.rc != 0:
            raise SteadyMemoryError(f"--steady-memory: warming memory failed: {child.err.strip()[-800:]}")
        yield {"page_reporting_order": before, "paused_order": PAGE_REPORTING_PAUSED, "warmed_bytes": warm,
               "warm_s": round(time.monotonic() - started, 1)}
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):  # the restore is not interrupted
            signal.signal(sig, signal.SIG_IGN)
        with open(PAGE_REPORTING_ORDER, "w") as f:
            f.write(before)
        log(f"free page reporting restored (order {before})")


def machine_facts(memory_rates, steady):
    facts = {"cpus": os.cpu_count(), "kernel": platform.release(), "python": platform.python_version()}
    facts.update(memory_rates)
    if steady:
        facts["steady_memory"] = steady
    try:
        with open("/proc/meminfo") as f:
            facts["mem_total_kib"] = int(f.readline().split()[1])
    except OSError:
        pass
    for tool, cmd in {"nginx": ["nginx", "-v"], "curl": ["curl", "--version"], "aria2c": ["aria2c", "--version"],
                      "httpdirfs": ["httpdirfs", "--version"], "rclone": ["rclone", "version"]}.items():
        if shutil.which(cmd[0]):
            out = subprocess.run(cmd, capture_output=True, text=True)
            facts[tool] = ((out.stdout or "") + (out.stderr or "")).strip().splitlines()[0][:100]
    return facts


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hubfs", required=True, help="the hubfs binary (build with -DCMAKE_BUILD_TYPE=Release)")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="one run, shorter caps (development)")
    mode.add_argument("--smoke", action="store_true", help="CI check: tiny model, hubfs and curl, not timed")
    parser.add_argument("--out", default="/tmp/hubfs-bench/results", help="where the results go")
    parser.add_argument("--data", default="/tmp/hubfs-bench", help="generated model and store (kept for reuse)")
    parser.add_argument("--runs", type=int, help="runs per figure (default 3; 1 with --quick)")
    parser.add_argument("--conditions", help="comma-separated: loopback,wan")
    parser.add_argument("--systems", help="comma-separated system names to keep (curl,aria2c,httpdirfs,"
                                          "httpdirfs_cache,rclone_off,rclone_full,hubfs,hubfs_cache,hubfs_hf,"
                                          "curl_load)")
    parser.add_argument("--workloads", help="comma-separated: cold_seq,warm_seq,inspect,tp_colwise,"
                                            "tp_slices,tp_load,all_ranks,hf_load,cluster,random,loader,loaders (--smoke "
                                            "runs loader and loaders only when named)")
    parser.add_argument("--libhubfs", help="libhubfs.so for the loader section (default: the one built beside "
                                           "--hubfs, BUILD/libhubfs/libhubfs.so)")
    parser.add_argument("--keep-work", action="store_true", help="keep logs and mounts' work files")
    parser.add_argument("--model-layout", default="sorted", choices=("sorted", "module"),
                        help="tensor order inside each shard of the generated model: sorted (by name, as the "
                             "safetensors package writes checkpoints; default) or module (the order the model "
                             "runs them in, which name-order readers visit out of file order)")
    parser.add_argument("--steady-memory", action="store_true",
                        help="pause the kernel's free page reporting to the hypervisor for the run (restored "
                             "after): in a VM that reclaims freed memory, the figures then measure the "
                             "systems rather than the host's page faults (root)")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    profile = dict(PROFILES["smoke" if args.smoke else "quick" if args.quick else "full"])
    if args.runs:
        profile["runs"] = profile["loaders_runs"] = args.runs
    if args.conditions:
        profile["conditions"] = args.conditions.split(",")
    args.hubfs = os.path.abspath(args.hubfs)
    args.libhubfs = os.path.abspath(args.libhubfs or os.path.join(os.path.dirname(os.path.dirname(args.hubfs)),
                                                                  "libhubfs", "libhubfs.so"))
    if not os.access(args.hubfs, os.X_OK):
        print(f"bench: {args.hubfs} is not an executable hubfs binary: build it first", file=sys.stderr)
        return 2
    only = set(args.workloads.split(",")) if args.workloads else None
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)
    os.makedirs(args.data, exist_ok=True)
    work = os.path.join(args.data, f"work-{os.getpid()}")
    os.makedirs(work)
    started = time.time()
    try:
        with steady_memory(args.steady_memory, profile["steady_warm"]) as steady:
            return run_bench(args, profile, only, work, started, steady)
    except (SteadyMemoryError, Interrupted) as e:
        log(f"stopped: {e}")
        return 2 if isinstance(e, SteadyMemoryError) else 130
    finally:
        if not args.keep_work:
            shutil.rmtree(work, ignore_errors=True)


def run_bench(args, profile, only, work, started, steady):
    bench = None
    try:
        memory_rates = fresh_memory_write_rates()   # before the run's own pages come and go
        model = prepare_model(args.data, profile, args.model_layout)
        bench = Bench(args, profile, model, work)
        if not args.smoke:
            warm_server_files(model)
        for condition in profile["conditions"]:
            bench.start_servers(condition)
            try:
                for run in range(1, profile["runs"] + 1):
                    bench.run_condition(condition, run, only)
            finally:
                bench.stop_servers()
        write_results(args, profile, bench, started, memory_rates, steady)
        return 0
    except Interrupted as e:
        log(f"interrupted ({e}); cleaning up")
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):  # what was measured is written whole
            signal.signal(sig, signal.SIG_IGN)
        systems.cleanup_all()
        if bench is not None and bench.has_measurements():
            # A time-boxed run (a lent machine, CI) still leaves the runs it finished.
            write_results(args, profile, bench, started, memory_rates, steady, interrupted=str(e))
        return 130
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):  # cleaning up is not interrupted
            signal.signal(sig, signal.SIG_IGN)
        systems.cleanup_all()
        if bench is not None:
            bench.stop_servers()


def write_results(args, profile, bench, started, memory_rates, steady, interrupted=None):
    """The report of what `bench` measured: JSON, markdown (also printed) and chart. An
    interrupted run says so, and by when (its last log line names the step it was in)."""
    model = bench.model
    meta = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "mode": "smoke" if args.smoke else "quick" if args.quick else "full",
            "duration_s": round(time.time() - started, 1), "profile": profile,
            "conditions": {c: CONDITIONS[c] for c in profile["conditions"]},
            "model": {"repo": REPO_ID, "layout": args.model_layout, "shards": model["shards"], "sizes": model["sizes"],
                      "total_bytes": sum(model["sizes"].values()), "seq_file": bench.seq_file(),
                      "header_bytes": bench.header_bytes()},
            "tp_plan": tp_plan_summary(model, profile),
            "page_cache_dropped_for_warm": bench.page_cache_dropped,
            "failures": bench.failures,
            "method": METHOD,
            "data_plane": "emulator CDN" if args.smoke else "nginx (sendfile, Range, autoindex)",
            "machine": machine_facts(memory_rates, steady), "hubfs": args.hubfs}
    if interrupted:
        meta["interrupted"] = interrupted
    results = report.build(meta, bench.measurements)
    if bench.loader_measurements:
        results["loader"] = loader.build(bench.loader_measurements, bench.loader_rank_bytes, profile["tp"],
                                         profile["rank"])
        results["loader"]["markdown"] = loader.markdown(results["loader"])
    if bench.loaders_measurements:
        results["loaders"] = mount_loaders.build(bench.loaders_measurements, bench.loaders_model(),
                                                 profile["conditions"])
        results["loaders"]["markdown"] = mount_loaders.markdown(results["loaders"])
        if not args.smoke:   # stated for the full model, like the main table's
            results["targets"] += report.loaders_targets(results["loaders"])
    os.makedirs(args.out, exist_ok=True)
    paths = report.write(results, args.out, chart_png=not args.smoke)
    print(report.markdown(results))
    log("wrote " + ", ".join(paths) + (" (interrupted: what was measured before)" if interrupted else ""))


if __name__ == "__main__":
    sys.exit(main())
