"""scripts/bench.py's loader section on the smoke profile (tiny model, the emulator's CDN, one
run): every method measured under both conditions, the same rank's bytes each time (the section
fails a run whose methods disagree), figures positive, the hubfs ÷ best safetensors ratios
consistent with the cells, the table in the markdown, and no mount left behind. Not timed."""
import json
import os
import subprocess
import sys

import pytest

HUBFS = os.environ["HUBFS_BIN"]
BENCH = os.path.join(os.environ["HUBFS_SOURCE_DIR"], "scripts", "bench.py")
sys.path.insert(0, os.path.dirname(BENCH) + "/bench")
import workloads  # noqa: E402

METHODS = {"hubfs_load_rank", "hubfs_iter_tensors", "st_load_file", "st_get_slice"}


@pytest.fixture(scope="module")
def section(tmp_path_factory):
    base = tmp_path_factory.mktemp("bench")
    data, out = str(base / "data"), str(base / "out")
    # The bench's tools run as a user runs them: without this test's sanitizer preload (the
    # loader section preloads the runtimes a sanitized libhubfs needs into its own children).
    env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
    result = subprocess.run([sys.executable, BENCH, "--hubfs", HUBFS, "--smoke", "--workloads", "loader", "--runs",
                             "1", "--libhubfs", os.environ["HUBFS_LIBRARY"], "--data", data, "--out", out],
                            capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    with open(os.path.join(out, "bench-results.json")) as f:
        results = json.load(f)
    with open(os.path.join(out, "bench-results.md")) as f:
        md = f.read()
    return results, md, data


def test_every_method_under_both_conditions(section):
    results, md, data = section
    assert results["meta"]["failures"] == []
    loader = results["loader"]
    model_dir = next(os.path.join(root, "") for root, _, files in os.walk(data) if "config.json" in files)
    plan = workloads.tp_plan(model_dir, loader["tp"], loader["rank"])
    assert loader["rank_bytes"] == sum(item["bytes"] for item in plan) > 0
    seen = {(m["condition"], m["system"]) for m in loader["measurements"]}
    assert seen == {(c, s) for c in ("page_cache", "cold_mount") for s in METHODS}
    for m in loader["measurements"]:
        assert m["bytes"] == loader["rank_bytes"], m
        assert m["seconds"] > 0 and m["peak_rss_kib"] >= m["base_rss_kib"] > 0
        if m["condition"] == "cold_mount":
            assert m["fetched_mb"] > 0  # read through the mount, from the server
    assert "hubfs.iter_tensors ÷ best safetensors" in md and "cold from a hubfs mount" in md


def test_ratios_follow_from_the_cells(section):
    for row in section[0]["loader"]["rows"]:
        cells = row["cells"]
        peers = [cells[p]["median"] for p in ("st_load_file", "st_get_slice")]
        best = max(peers) if row["better"] == "higher" else min(peers)
        for subject in ("hubfs_load_rank", "hubfs_iter_tensors"):
            if best > 0:
                assert row["over_best_safetensors"][subject]["median"] == pytest.approx(cells[subject]["median"] / best)


def test_no_mount_is_left(section):
    with open("/proc/mounts") as f:
        assert not [line for line in f if section[2] in line]
