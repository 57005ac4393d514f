"""scripts/bench.py --smoke: runs end to end on a tiny model with hubfs and curl, reports every
workload with the right structure, accounts bytes against independent references (the model's
own files, the safetensors package), and leaves no mount or server behind on any exit path.
Not a timed test: figures are only checked to be positive and consistent."""
import json
import os
import signal
import struct
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from safetensors.numpy import load_file

sys.path.insert(0, os.path.join(os.environ["HUBFS_SOURCE_DIR"], "scripts"))
import bench  # noqa: E402 - scripts/bench.py: its child runner and systems.process_cpu_s

HUBFS = os.environ["HUBFS_BIN"]
SOURCE = os.environ["HUBFS_SOURCE_DIR"]
BENCH = os.path.join(SOURCE, "scripts", "bench.py")
SMOKE_TP, SMOKE_RANK = 2, 1  # the --smoke profile's tensor-parallel rank

EXPECTED_ROWS = {"cold_seq", "cold_seq_cpu", "cold_seq_rss", "warm_seq", "warm_seq_cpu", "inspect_kib",
                 "inspect_requests", "inspect_s", "tp_colwise_ratio", "tp_colwise_s", "tp_slices_ratio", "tp_slices_s",
                 "tp_load_ratio", "tp_load_s", "tp_load_cpu", "tp_load_rss", "all_ranks_s", "all_ranks_ratio",
                 "all_ranks_rss", "hf_load_s", "hf_load_mb", "hf_load_cpu",
                 "cluster_mb", "cluster_s", "random", "random_cpu", "rss"}
LOADERS = ("from_pretrained", "load_file", "safe_open")


def mounts_under(path):
    with open("/proc/mounts") as f:
        return [line.split()[1] for line in f if line.split()[1].startswith(path)]


def processes_mentioning(path):
    """Live processes whose command line names path (the bench's servers and mounts do)."""
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmdline = f.read().decode(errors="replace")
        except OSError:
            continue
        if path in cmdline and int(pid) != os.getpid():
            found.append((int(pid), cmdline.replace("\0", " ")))
    return found


def run_smoke(base, *args):
    data, out = str(base / "data"), str(base / "out")
    result = subprocess.run([sys.executable, BENCH, "--hubfs", HUBFS, "--smoke", "--data", data, "--out", out, *args],
                            capture_output=True, text=True, timeout=280)
    assert result.returncode == 0, result.stderr[-3000:]
    with open(os.path.join(out, "bench-results.json")) as f:
        results = json.load(f)
    return {"data": data, "out": out, "stdout": result.stdout, "results": results}


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    return run_smoke(tmp_path_factory.mktemp("bench"))


@pytest.fixture(scope="module")
def loaders_smoke(tmp_path_factory):
    """The loaders workload alone, one run (each of its steps starts torch in a fresh process)."""
    return run_smoke(tmp_path_factory.mktemp("bench-loaders"), "--workloads", "loaders", "--runs", "1")


def model_dir(smoke):
    model = [d for d in os.listdir(smoke["data"]) if d.startswith("model-")]
    assert len(model) == 1
    return os.path.join(smoke["data"], model[0])


def test_every_workload_has_a_positive_median_with_min_max_per_system(smoke):
    results = smoke["results"]
    assert results["meta"]["failures"] == []
    runs = results["meta"]["profile"]["runs"]
    assert runs >= 3
    assert {"curl", "hubfs"} <= set(results["systems"])
    assert {r["id"] for r in results["rows"]} == EXPECTED_ROWS
    for row in results["rows"]:
        assert row["condition"] == "loopback"
        assert "hubfs" in row["cells"], row["id"]
        for system, cell in row["cells"].items():
            assert len(cell["runs"]) == runs, (row["id"], system)
            assert cell["min"] <= cell["median"] <= cell["max"], (row["id"], system)
            if row["id"] not in ("inspect_requests",) or system == "hubfs":
                assert cell["min"] > 0, (row["id"], system, cell)
    cold = next(r for r in results["rows"] if r["id"] == "cold_seq")
    assert set(cold["cells"]) == {"curl", "hubfs"}
    ratio = cold["hubfs_over_best_peer"]
    assert ratio and len(ratio["runs"]) == runs and ratio["best_peer_by_run"] == ["curl"] * runs
    # The ratio is taken within each run, not between medians.
    by_run = {m["run"]: m["mb_per_s"] for m in results["measurements"] if m["workload"] == "cold_seq"
              and m["system"] == "curl"}
    hub_by_run = {m["run"]: m["mb_per_s"] for m in results["measurements"] if m["workload"] == "cold_seq"
                  and m["system"] == "hubfs"}
    assert ratio["runs"] == pytest.approx([hub_by_run[r] / by_run[r] for r in sorted(by_run)])


def test_markdown_table_is_printed_and_written(smoke):
    table = smoke["stdout"]
    assert ("| Workload | Condition | curl | hubfs | hubfs via cluster cache | hubfs load hf:// | curl, then load "
            "| local file | hubfs ÷ best peer |") in table
    assert "| Cold sequential read of a shard (MB/s ↑) | loopback |" in table
    with open(os.path.join(smoke["out"], "bench-results.md")) as f:
        assert f.read().strip() == table.strip()


def test_the_machine_facts_say_what_fresh_memory_costs(smoke):
    """Memory the kernel hands out costs a fault and a zeroed page before the write: it is never
    written faster than memory written before (a page cache fill pays it, a download to /dev/null
    does not), and the report says both rates."""
    machine = smoke["results"]["meta"]["machine"]
    fresh, reused = machine["fresh_memory_write_gb_s"], machine["reused_memory_write_gb_s"]
    assert 0 < fresh and 0 < reused
    assert fresh < reused * 1.5, machine
    assert f"written at {fresh:.2f} GB/s" in smoke["stdout"]
    # Measured in a child of its own: a child's peak RSS starts at its parent's high-water mark,
    # so a probe in the bench's process would have given curl a peak RSS of the probe's size.
    curl_rss = [m["peak_rss_mib"] for m in smoke["results"]["measurements"]
                if m["system"] == "curl" and m["workload"] == "cold_seq"]
    assert curl_rss and max(curl_rss) < 128, curl_rss


def test_curl_fetches_the_whole_shard_it_downloads(smoke):
    results = smoke["results"]
    name = results["meta"]["model"]["seq_file"]
    size = os.path.getsize(os.path.join(model_dir(smoke), name))
    for m in results["measurements"]:
        if m["workload"] == "cold_seq" and m["system"] == "curl":
            assert m["complete"] and m["bytes"] == size
            # The emulator's CDN log saw the body go out (headers add a little).
            assert size <= m["traffic"]["data_bytes"] < size + 4096
            assert m["traffic"]["hub_requests"] >= 1  # the resolve


def test_hubfs_reads_the_whole_shard_sequentially(smoke):
    results = smoke["results"]
    name = results["meta"]["model"]["seq_file"]
    size = os.path.getsize(os.path.join(model_dir(smoke), name))
    cold = [m for m in results["measurements"] if m["workload"] == "cold_seq" and m["system"] == "hubfs"]
    assert cold and all(m["complete"] and m["bytes"] == size for m in cold)
    assert all(m["traffic"]["data_bytes"] >= size for m in cold)  # a cold cache fetches it all
    warm = [m for m in results["measurements"] if m["workload"] == "warm_seq"]
    assert {m["system"] for m in warm} == {"hubfs", "local"}
    assert all(m["bytes"] == size for m in warm)


def test_header_bytes_match_the_model_files(smoke):
    directory = model_dir(smoke)
    expected = 0
    for name in smoke["results"]["meta"]["model"]["shards"]:
        with open(os.path.join(directory, name), "rb") as f:
            expected += 8 + struct.unpack("<Q", f.read(8))[0]
    assert smoke["results"]["meta"]["model"]["header_bytes"] == expected
    for m in smoke["results"]["measurements"]:
        if m["workload"] == "inspect":
            assert m["bytes_needed"] == expected
            assert m["fetched_kib"] * 1024 == m["traffic"]["data_bytes"]


def reference_rank_bytes(directory, only_colwise):
    """Bytes of the smoke rank's slices, sliced with numpy from the safetensors package's load."""
    with open(os.path.join(directory, "config.json")) as f:
        config = json.load(f)
    head_dim = config["hidden_size"] // config["num_attention_heads"]
    assert config["num_key_value_heads"] >= SMOKE_TP  # kv heads split like q (no replication)
    total = 0
    for name in sorted(os.listdir(directory)):
        if not name.endswith(".safetensors"):
            continue
        for tensor, array in load_file(os.path.join(directory, name)).items():
            colwise = tensor.endswith(("q_proj.weight", "k_proj.weight", "v_proj.weight", "gate_proj.weight",
                                       "up_proj.weight"))
            if only_colwise and not colwise:
                continue
            if colwise or tensor.endswith(("embed_tokens.weight", "lm_head.weight")):
                parts = np.array_split(array, SMOKE_TP, axis=0)
                if colwise and "mlp" not in tensor:  # attention splits fall on head boundaries
                    assert parts[SMOKE_RANK].shape[0] % head_dim == 0
            elif tensor.endswith(("o_proj.weight", "down_proj.weight")):
                parts = np.array_split(array, SMOKE_TP, axis=1)
            else:
                parts = [array] * SMOKE_TP
            total += parts[SMOKE_RANK].nbytes
    return total


def test_tensor_parallel_bytes_needed_match_numpy_slicing(smoke):
    directory = model_dir(smoke)
    colwise, everything = reference_rank_bytes(directory, True), reference_rank_bytes(directory, False)
    seen = set()
    for m in smoke["results"]["measurements"]:
        if m["workload"] == "tp_colwise":
            assert m["complete"] and m["bytes_needed"] == colwise
        elif m["workload"] in ("tp_slices", "tp_load", "hf_load"):
            assert m["complete"] and m["bytes_needed"] == everything
        else:
            continue
        seen.add((m["workload"], m["system"]))
        assert m["fetched_over_needed"] == pytest.approx(m["traffic"]["data_bytes"] / m["bytes_needed"])
    assert {w for w, _ in seen} == {"tp_colwise", "tp_slices", "tp_load", "hf_load"}
    assert {s for w, s in seen if w == "hf_load"} == {"hubfs_hf", "curl_load"}


def test_the_load_without_a_mount_fetches_its_rank_and_the_download_everything(smoke):
    """hf:// fetches about the rank (plus the headers and the cache units around its reads: the
    tiny model's tensors are a few cache units each, and widening every read to whole units on both
    sides fetched 1.9x the rank, more than the model); downloading fetches every shard whole."""
    directory = model_dir(smoke)
    shards = sum(os.path.getsize(os.path.join(directory, n)) for n in os.listdir(directory)
                 if n.endswith(".safetensors"))
    for m in smoke["results"]["measurements"]:
        if m["workload"] == "hf_load" and m["system"] == "curl_load":
            assert shards <= m["traffic"]["data_bytes"] < shards + 4096 * len(smoke["results"]["meta"]["model"]["shards"])
        elif m["workload"] == "hf_load":
            assert m["bytes_needed"] <= m["needed_whole_bytes"] <= m["traffic"]["data_bytes"] < shards
            assert m["traffic"]["data_bytes"] <= 1.25 * m["needed_whole_bytes"]


def test_every_rank_at_once_fetches_the_model_once(smoke):
    """All ranks' loads on one mount need every tensor byte between them, and the mount fetches
    each once: between the tensors' bytes (the safetensors package's arrays) and 1.05x the shards."""
    directory = model_dir(smoke)
    shards = sum(os.path.getsize(os.path.join(directory, n)) for n in shards_of(directory))
    tensors = sum(a.nbytes for n in shards_of(directory) for a in load_file(os.path.join(directory, n)).values())
    runs = [m for m in smoke["results"]["measurements"] if m["workload"] == "all_ranks"]
    assert [m["system"] for m in runs] == ["hubfs"] * smoke["results"]["meta"]["profile"]["runs"]
    for m in runs:
        assert m["complete"] and m["seconds"] > 0 and m["reader_cpu_s"] > 0
        assert tensors <= m["traffic"]["data_bytes"] <= 1.05 * shards, (tensors, shards, m["traffic"])
        assert m["fetched_over_model"] == pytest.approx(m["traffic"]["data_bytes"] / shards)


def test_targets_check_the_cpu_per_gb_and_the_daemons_memory_bound():
    """The targets table holds the cold read's CPU per GB to 1.5x curl's within each run, and the
    daemon's peak RSS to 256 MiB in the cold read and with every rank at once."""
    def measured(run, workload, system, **figures):
        return {"condition": "loopback", "run": run, "workload": workload, "system": system, **figures}
    measurements = [measured(1, "cold_seq", "curl", cpu_s_per_gb=1.0, mb_per_s=1000),
                    measured(1, "cold_seq", "hubfs", cpu_s_per_gb=1.4, mb_per_s=900, peak_rss_mib=230),
                    measured(2, "cold_seq", "curl", cpu_s_per_gb=0.5, mb_per_s=1000),
                    measured(2, "cold_seq", "hubfs", cpu_s_per_gb=1.0, mb_per_s=1100, peak_rss_mib=240),
                    measured(1, "all_ranks", "hubfs", peak_rss_mib=250),
                    measured(2, "all_ranks", "hubfs", peak_rss_mib=300)]
    results = {"meta": {"conditions": {"loopback": {}}, "model": {"shards": ["a"], "header_bytes": 1}},
               "measurements": measurements}
    found = {t["target"]: t for t in bench.report.targets(results)}
    cpu = found["cold sequential CPU per GB ≤ 1.5× curl"]
    assert [cpu["min"], cpu["max"], cpu["median"]] == pytest.approx([1.4, 2.0, 1.7]) and not cpu["pass"]
    cold = found["daemon peak RSS ≤ 256 MiB: a cold sequential read"]
    assert (cold["median"], cold["pass"]) == (235, True)
    ranks = found["daemon peak RSS ≤ 256 MiB: every TP rank at once"]
    assert (ranks["max"], ranks["median"], ranks["pass"]) == (300, 275, False)
    assert found["cold sequential ≥ 1.0× curl"]["median"] == pytest.approx(1.0)


def test_loaders_targets_hold_each_loader_to_the_cat_and_the_download_within_each_run():
    """A loader passes at ≤ 1.2x a cold cat and ≤ 0.7x download-then-load, both taken within each
    run; the reference and the download alone get no target of their own."""
    def measured(run, where, loader, seconds):
        return {"condition": "wan", "run": run, "where": where, "loader": loader, "seconds": seconds,
                "fetched_mb": 1, "cpu_s_per_gb": 1, "peak_rss_mib": 1}
    measurements = [measured(1, "mount", "cat", 10), measured(2, "mount", "cat", 5),
                    measured(1, "mount", "load_file", 11), measured(2, "mount", "load_file", 7),
                    measured(1, "download", "snapshot_download", 20), measured(2, "download", "snapshot_download", 20),
                    measured(1, "copy", "load_file", 2), measured(2, "copy", "load_file", 2)]
    section = bench.mount_loaders.build(measurements, {}, ["wan"])
    found = {t["target"]: t for t in bench.report.loaders_targets(section)}
    assert len(found) == 2 and all(t["condition"] == "wan" for t in found.values())
    over_cat = found["safetensors load_file per shard + sum ≤ 1.2× a cold `cat`"]
    assert [over_cat["min"], over_cat["max"], over_cat["median"]] == pytest.approx([1.1, 1.4, 1.25])
    assert not over_cat["pass"]
    over_download = found["safetensors load_file per shard + sum ≤ 0.7× snapshot_download + the same load"]
    assert [over_download["min"], over_download["max"]] == pytest.approx([7 / 22, 11 / 22]) and over_download["pass"]


def test_mounts_behind_the_cluster_cache_fetch_the_shard_once(smoke):
    """N mounts reading the same shard: each fetches it on its own, or the cache fetches it once."""
    results = smoke["results"]
    size = os.path.getsize(os.path.join(model_dir(smoke), results["meta"]["model"]["seq_file"]))
    n = results["meta"]["profile"]["cluster_mounts"]
    runs = [m for m in results["measurements"] if m["workload"] == "cluster"]
    assert {m["system"] for m in runs} == {"hubfs", "hubfs_cache"}
    for m in runs:
        assert m["complete"] and m["mounts"] == n and m["bytes_read"] == n * size
        copies = n if m["system"] == "hubfs" else 1
        assert copies * size <= m["traffic"]["data_bytes"] <= 1.05 * copies * size
        assert m["cdn_mb"] * 1e6 == m["traffic"]["data_bytes"]


def test_random_reads_do_the_fixed_count(smoke):
    random_runs = [m for m in smoke["results"]["measurements"] if m["workload"] == "random"]
    assert random_runs and all(m["complete"] and m["reads"] == 40 for m in random_runs)


CPU_BURN = """
import time
deadline = time.process_time() + 0.4
while time.process_time() < deadline:
    pass
print(time.process_time(), flush=True)
"""


def test_a_childs_cpu_is_what_it_measured_itself_not_its_wall_time():
    burner = bench.run_child([sys.executable, "-c", CPU_BURN], 60)
    own = float(burner.out.split()[-1])  # the child's own CPU clock, up to its last line
    assert burner.rc == 0 and own >= 0.4
    assert own <= burner.cpu_s <= own + 0.5  # plus the interpreter's exit
    sleeper = bench.run_child([sys.executable, "-c", "import time; time.sleep(1)"], 60)
    assert sleeper.seconds >= 1 and sleeper.cpu_s < 0.5


def test_a_live_daemons_cpu_is_read_from_proc():
    proc = subprocess.Popen([sys.executable, "-c", CPU_BURN + "time.sleep(60)"], stdout=subprocess.PIPE, text=True)
    try:
        own = float(proc.stdout.readline())
        # /proc counts whole ticks, user and system each rounded down: up to two ticks short.
        tick = 1 / os.sysconf("SC_CLK_TCK")
        assert own - 2 * tick <= bench.systems.process_cpu_s(proc.pid) <= own + 0.05
    finally:
        proc.kill()
        proc.wait()
    assert bench.systems.process_cpu_s(proc.pid) is None


def test_machine_busy_share_counts_every_busy_kind_and_iowait_as_idle(tmp_path):
    stat = tmp_path / "stat"
    # user nice system idle iowait irq softirq steal guest guest_nice (guest is inside user)
    stat.write_text("cpu  100 10 50 1000 200 5 15 20 7 0\ncpu0 1 2 3 4 5 6 7 8 0 0\n")
    before = bench.mount_loaders.machine_ticks(str(stat))
    assert before == (200, 1400)
    stat.write_text("cpu  160 10 80 1100 300 5 25 20 9 0\n")
    # busy 60 + 30 + 10 = 100 of 100 + 30 + 100 + 100 + 10 = 300 ticks
    assert bench.mount_loaders.busy_pct(before, bench.mount_loaders.machine_ticks(str(stat))) == pytest.approx(
        100 / 3)
    assert bench.mount_loaders.busy_pct(before, before) is None


def test_a_cpu_burn_shows_in_the_machines_busy_ticks():
    tick = os.sysconf("SC_CLK_TCK")
    before, cpu = bench.mount_loaders.machine_ticks(), time.process_time()
    while time.process_time() - cpu < 0.5:
        pass
    burnt = (time.process_time() - cpu) * tick
    after = bench.mount_loaders.machine_ticks()
    assert after[0] - before[0] >= burnt - 2   # the machine was at least as busy as this process
    assert 0 < bench.mount_loaders.busy_pct(before, after) <= 100


def test_cpu_per_gb_counts_the_systems_processes_and_the_reader(smoke):
    results = smoke["results"]
    cold = [m for m in results["measurements"] if m["workload"] == "cold_seq"]
    assert {m["system"] for m in cold} == {"curl", "hubfs"}
    for m in cold:
        assert m["cpu_s"] > 0
        assert m["cpu_s_per_gb"] == pytest.approx(m["cpu_s"] / (m["bytes"] / 1e9))
        if m["system"] == "hubfs":  # the daemon over the read, and the reading process
            assert m["daemon_cpu_s"] >= 0 and m["reader_cpu_s"] > 0
            assert m["cpu_s"] == pytest.approx(m["daemon_cpu_s"] + m["reader_cpu_s"])
    row = next(r for r in results["rows"] if r["id"] == "cold_seq_cpu")
    assert set(row["cells"]) == {"curl", "hubfs"}
    assert "| Cold sequential read: CPU per GB read (the system's own processes + the reader) (s/GB ↓) |" in \
        smoke["stdout"]


def test_hubfs_daemon_peak_rss_is_in_the_cold_read_and_rank_load_rows(smoke):
    results = smoke["results"]
    for row_id, workload in (("cold_seq_rss", "cold_seq"), ("tp_load_rss", "tp_load"), ("all_ranks_rss", "all_ranks")):
        daemon = sorted(m["peak_rss_kib"] / 1024 for m in results["measurements"]
                        if m["workload"] == workload and m["system"] == "hubfs")
        row = next(r for r in results["rows"] if r["id"] == row_id)
        assert sorted(row["cells"]["hubfs"]["runs"]) == pytest.approx(daemon)
    # The rank load's own process is reported apart from the daemon.
    assert all(m["loader_peak_rss_kib"] > 0 for m in results["measurements"] if m["workload"] == "tp_load")


def shards_of(directory):
    return sorted(n for n in os.listdir(directory) if n.endswith(".safetensors"))


def test_loaders_on_the_mount_sum_the_same_weights_as_numpy(loaders_smoke):
    """Each loader's sum on the mount equals its sum on the downloaded copy, and both the sum of
    every weight read with numpy from the model's own files (the loaders sum in float16)."""
    results = loaders_smoke["results"]
    assert results["meta"]["failures"] == [] and results["rows"] == []
    directory = model_dir(loaders_smoke)
    expected = sum(float(a.astype(np.float64).sum()) for n in shards_of(directory)
                   for a in load_file(os.path.join(directory, n)).values())
    entries = results["loaders"]["measurements"]
    for loader in LOADERS:
        sums = {m["where"]: m["weights_sum"] for m in entries if m["loader"] == loader}
        assert set(sums) == {"mount", "copy"}
        assert sums["mount"] == sums["copy"]
        assert sums["mount"] == pytest.approx(expected, rel=2e-3)


def test_loaders_fetch_the_shards_once_and_the_download_everything(loaders_smoke):
    directory = model_dir(loaders_smoke)
    shard_bytes = sum(os.path.getsize(os.path.join(directory, n)) for n in shards_of(directory))
    entries = loaders_smoke["results"]["loaders"]["measurements"]
    assert {(m["where"], m["loader"]) for m in entries} == {("mount", "cat"), ("download", "snapshot_download")} | {
        (where, loader) for where in ("mount", "copy") for loader in LOADERS}
    for m in entries:
        if m["where"] == "mount":  # every shard, once (the small files come from the Hub API, not the CDN)
            assert shard_bytes <= m["traffic"]["data_bytes"] <= 1.01 * shard_bytes, m["loader"]
            assert m["fetched_mb"] * 1e6 == m["traffic"]["data_bytes"]
        elif m["where"] == "download":
            assert shard_bytes <= m["traffic"]["data_bytes"] < shard_bytes + 4096 * len(shards_of(directory))
        assert m["seconds"] > 0 and m["cpu_s_per_gb"] > 0


def test_loaders_ratios_are_taken_within_the_run(loaders_smoke):
    section = loaders_smoke["results"]["loaders"]
    seconds = {(m["where"], m["loader"]): m["seconds"] for m in section["measurements"]}
    rows = {r["loader"]: r for r in section["rows"]}
    assert list(rows) == ["cat", *LOADERS, "snapshot_download"]
    assert rows["cat"]["mount_over_cat"]["median"] == 1.0
    for loader in LOADERS:
        then_load = seconds[("download", "snapshot_download")] + seconds[("copy", loader)]
        assert rows[loader]["download_then_load_s"]["median"] == pytest.approx(then_load)
        assert rows[loader]["mount_over_cat"]["median"] == pytest.approx(
            seconds[("mount", loader)] / seconds[("mount", "cat")])
        assert rows[loader]["mount_over_download_then_load"]["median"] == pytest.approx(
            seconds[("mount", loader)] / then_load)
    # Every step has the machine's busy share, the reference and the download included; a step
    # shorter than a clock tick (the smoke's tiny model) may have none.
    for m in section["measurements"]:
        pct = m["machine_busy_pct"]
        if m["seconds"] >= 0.05:
            assert pct is not None and 0 < pct <= 100, (m["where"], m["loader"], pct)
        else:
            assert pct is None or 0 <= pct <= 100, (m["where"], m["loader"], pct)
        if m["where"] == "mount" or m["loader"] == "snapshot_download":
            assert rows[m["loader"]]["machine_busy_pct"] == (
                None if pct is None else {"runs": [pct], "median": pct, "min": pct, "max": pct})
    table = loaders_smoke["stdout"]
    assert "| Loader | Condition | cold on a fresh hubfs mount (s ↓) | mount ÷ cat (↓) |" in table
    assert "| peak RSS (MiB ↓) | machine CPU busy (%) |" in table
    assert "| safe_open + get_tensor in key order + sum | loopback |" in table


def test_nothing_is_left_behind_after_a_run(smoke):
    assert mounts_under(smoke["data"]) == []
    assert processes_mentioning(smoke["data"]) == []
    assert [d for d in os.listdir(smoke["data"]) if d.startswith("work-")] == []


def read_knob():
    with open(bench.PAGE_REPORTING_ORDER) as f:
        return f.read().strip()


def watch_knob(seen, stop):
    while not stop.is_set():
        seen.add(read_knob())
        time.sleep(0.005)


def terminated_once(proc, wait_until_ready):
    """SIGTERM to a bench run once wait_until_ready returns; its exit code (killed if it hangs)."""
    try:
        wait_until_ready()
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stderr.close()
    return proc.returncode


def test_steady_memory_pauses_page_reporting_for_the_run_and_restores_it(tmp_path):
    args = ["--steady-memory", "--workloads", "cold_seq", "--systems", "curl", "--runs", "1"]
    if not os.path.exists(bench.PAGE_REPORTING_ORDER):
        result = subprocess.run([sys.executable, BENCH, "--hubfs", HUBFS, "--smoke", "--data", str(tmp_path / "d"),
                                 "--out", str(tmp_path / "o"), *args], capture_output=True, text=True, timeout=120)
        assert result.returncode == 2 and "reports no free pages" in result.stderr, result.stderr[-2000:]
        return
    before, seen, stop = read_knob(), set(), threading.Event()
    watcher = threading.Thread(target=watch_knob, args=(seen, stop))
    watcher.start()
    try:
        smoke = run_smoke(tmp_path, *args)
    finally:
        stop.set()
        watcher.join()
    assert read_knob() == before
    assert bench.PAGE_REPORTING_PAUSED in seen and before in seen, seen
    steady = smoke["results"]["meta"]["machine"]["steady_memory"]
    assert steady["page_reporting_order"] == before and steady["warmed_bytes"] > 0, steady
    assert "free page reporting to the hypervisor paused for the run" in smoke["stdout"]


def test_a_signal_during_steady_memory_restores_page_reporting(tmp_path):
    if not os.path.exists(bench.PAGE_REPORTING_ORDER):
        pytest.skip("this kernel reports no free pages (the refusal is checked by the test above)")
    before = read_knob()
    proc = subprocess.Popen([sys.executable, BENCH, "--hubfs", HUBFS, "--smoke", "--data", str(tmp_path / "d"),
                             "--out", str(tmp_path / "o"), "--steady-memory", "--workloads", "cold_seq",
                             "--systems", "curl"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    log = []

    def paused():   # its own log says so (the knob may have been at the paused order already)
        for line in proc.stderr:
            log.append(line)
            if "free page reporting paused" in line:
                break
        assert proc.poll() is None, "the bench ended before pausing: " + "".join(log)[-2000:]

    assert terminated_once(proc, paused) == 130, "".join(log)[-2000:]
    assert read_knob() == before


def test_a_signal_mid_run_unmounts_and_stops_everything(tmp_path):
    data, out = str(tmp_path / "data"), str(tmp_path / "out")
    proc = subprocess.Popen([sys.executable, BENCH, "--hubfs", HUBFS, "--smoke", "--data", data, "--out", out],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    def mounted():
        deadline = time.monotonic() + 120
        while not mounts_under(data):
            assert proc.poll() is None, "the bench ended before mounting anything: " + proc.stderr.read()[-2000:]
            assert time.monotonic() < deadline, "no mount appeared"
            time.sleep(0.05)

    assert terminated_once(proc, mounted) == 130
    assert mounts_under(data) == []
    assert processes_mentioning(data) == []
    written = os.path.join(out, "bench-results.json")
    if os.path.exists(written):   # curl's cold read may have finished before the first mount
        with open(written) as f:
            assert json.load(f)["meta"]["interrupted"] == "signal 15"


def test_a_signal_after_a_run_writes_that_runs_figures_marked_interrupted(tmp_path):
    """A time-boxed run (a lent GPU machine, CI) keeps what it measured: stopped once run 2
    starts, the report holds run 1's figures and says it was interrupted."""
    data, out = str(tmp_path / "data"), str(tmp_path / "out")
    proc = subprocess.Popen([sys.executable, BENCH, "--hubfs", HUBFS, "--smoke", "--data", data, "--out", out,
                             "--workloads", "cold_seq", "--systems", "curl", "--runs", "3"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    log = []

    def second_run():
        for line in proc.stderr:
            log.append(line)
            if "run 2:" in line:
                return
        raise AssertionError("the bench ended before its second run: " + "".join(log)[-2000:])

    try:
        second_run()
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, "".join(log) + stderr
    with open(os.path.join(out, "bench-results.json")) as f:
        results = json.load(f)
    assert results["meta"]["interrupted"] == "signal 15"
    cold = next(r for r in results["rows"] if r["id"] == "cold_seq")
    assert [m["run"] for m in results["measurements"] if m["workload"] == "cold_seq"] == [1]
    assert len(cold["cells"]["curl"]["runs"]) == 1 and cold["cells"]["curl"]["median"] > 0
    assert "**Interrupted (signal 15)" in stdout
    assert processes_mentioning(data) == []
