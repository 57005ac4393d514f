"""hf:// sources: `hubfs inspect` and `hubfs load` straight from the Hub (the emulator), with no
mount. References: the same commands on a local copy of the repo (byte for byte), safetensors
headers read here, the tensor-parallel plan of scripts/bench/workloads.py (written from the
design note, independently of the loader), the real huggingface_hub client for its cache, and
the emulator's log for every byte and request."""
import hashlib
import json
import os
import struct
import subprocess
import sys
import time

import numpy as np
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE_DIR = os.environ.get("HUBFS_SOURCE_DIR", os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(HERE, "..", "support"))
sys.path.insert(0, os.path.join(HERE, "..", "loader"))
sys.path.insert(0, os.path.join(SOURCE_DIR, "scripts", "bench"))
import hubemu  # noqa: E402
import workloads  # noqa: E402
from loader_models import write_safetensors  # noqa: E402
from mount import SANITIZED, Mount  # noqa: E402

HUBFS = os.environ["HUBFS_BIN"]
TOKEN = "hf_glue_token"
REPO = "test-org/tp-llama"             # 8 heads, 4 kv heads: TP 8 works (kv heads replicated)
DATASET = "test-org/tp-data"           # the same files in a dataset repo
GATED = "test-org/gated-tp"
MANY = "test-org/many-tensors"         # a header longer than the first 64 KiB range
MODEL = dict(preset="small", layers=2, hidden=1024, intermediate=2816, shards=2, seed=7)
WORLD, RANK = 8, 3
FIRST_RANGE = 64 * 1024
WAN = dict(latency_ms=20, bandwidth_bps=40_000_000)


def write_many_tensors(directory):
    """One file of 3000 small tensors: its JSON header is ~200 KB."""
    os.makedirs(directory, exist_ok=True)
    rng = np.random.default_rng(3)
    tensors = {f"block.{i}.scale": ("F32", rng.standard_normal(4).astype(np.float32)) for i in range(3000)}
    write_safetensors(os.path.join(directory, "model.safetensors"), tensors, {"format": "pt"})
    return directory


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    model = hubemu.cached_model(**MODEL)
    many = write_many_tensors(str(tmp_path_factory.mktemp("many")))
    root = str(tmp_path_factory.mktemp("glue-hub"))
    hubemu.import_repo(root, REPO, model, tag="v1.0")
    hubemu.import_repo(root, DATASET, model, type="dataset")
    hubemu.import_repo(root, GATED, model, gated=True)
    hubemu.import_repo(root, MANY, many)
    with hubemu.Emulator(root, tokens=[TOKEN]) as emulator:
        emulator.model, emulator.many = model, many
        yield emulator


@pytest.fixture(autouse=True)
def fresh_knobs(hub):
    hub.reset()
    hub.clear_log()
    yield
    hub.reset()


def hubfs(hub, home, *args, token=None, offline=False, timeout=300):
    env = hub.client_env(home, token=token)
    if offline:
        env["HF_HUB_OFFLINE"] = "1"
    return subprocess.run([HUBFS, *map(str, args)], env=env, capture_output=True, text=True,
                          timeout=timeout)


def local(*args):
    result = subprocess.run([HUBFS, *map(str, args)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return result


def ok(result):
    assert result.returncode == 0, result.stderr
    assert "Sanitizer" not in result.stderr, result.stderr
    return result


def data_entries(log):
    """What reads file content: CDN ranges and the Hub's resolve answers (HEAD and GET)."""
    return [e for e in log if e["scope"] in ("cdn", "resolve")]


def data_bytes(log):
    return sum(e["bytes_sent"] or 0 for e in data_entries(log))


def shard_names(model):
    return sorted(n for n in os.listdir(model) if n.endswith(".safetensors"))


def header_end(path):
    with open(path, "rb") as f:
        return 8 + struct.unpack("<Q", f.read(8))[0]


def max_in_flight(entries):
    """Most requests open at once, from the log's end times and durations (seconds, ms)."""
    events = sorted([(e["time"] - e["duration_ms"] / 1000, 1) for e in entries] +
                    [(e["time"], -1) for e in entries], key=lambda x: (x[0], -x[1]))
    depth = peak = 0
    for _, step in events:
        depth += step
        peak = max(peak, depth)
    return peak


def needed_bytes(model):
    """What rank RANK of WORLD must read: its slices, row-parallel tensors whole."""
    plan = workloads.tp_plan(model, WORLD, RANK)
    return sum(p["offsets"][1] - p["offsets"][0] if p["style"] == "rowwise" else p["bytes"] for p in plan)


def same_file(a, b):
    with open(a, "rb") as x, open(b, "rb") as y:
        return x.read() == y.read()


# ---- inspect -----------------------------------------------------------------------------------


def test_inspect_prints_what_a_local_copy_prints(hub, tmp_path):
    model = hub.model
    remote = ok(hubfs(hub, tmp_path / "home", "inspect", f"hf://{REPO}", "--json"))
    assert json.loads(remote.stdout) == json.loads(local("inspect", model, "--json").stdout)
    text = ok(hubfs(hub, tmp_path / "home", "inspect", f"hf://{REPO}@v1.0"))
    expected = local("inspect", model).stdout.splitlines()
    lines = text.stdout.splitlines()
    assert lines[0] == f"hf://{REPO}@v1.0: " + expected[0].split(": ", 1)[1]
    assert lines[1:] == expected[1:]


def test_inspect_fetches_one_range_per_shard_all_at_once(hub, tmp_path):
    """Under the WAN profile each request costs 20 ms: the shards' headers are asked for
    together, each with one ranged GET of at most its header + 64 KiB."""
    hub.config(**WAN)
    ok(hubfs(hub, tmp_path / "home", "inspect", f"hf://{REPO}", "--json"))
    log = hub.log()
    shards = shard_names(hub.model)
    gets = [e for e in log if e["scope"] == "cdn" and e["method"] == "GET"]
    for name in shards:
        mine = [e for e in gets if e["path"].endswith("/" + name)]
        assert len(mine) == 1, mine
        assert mine[0]["range"] == f"bytes=0-{FIRST_RANGE - 1}"
        assert mine[0]["bytes_sent"] <= header_end(os.path.join(hub.model, name)) + FIRST_RANGE
    assert len(gets) == len(shards)
    assert max_in_flight(gets) == len(shards)
    # The one small file inspect needs besides the headers: the index.
    resolved = {e["path"].rsplit("/", 1)[-1] for e in log if e["scope"] == "resolve"}
    assert resolved == {"model.safetensors.index.json", *shards}


def test_a_header_longer_than_the_first_range_takes_exactly_one_more(hub, tmp_path):
    path = os.path.join(hub.many, "model.safetensors")
    end = header_end(path)
    assert end > FIRST_RANGE
    remote = ok(hubfs(hub, tmp_path / "home", "inspect", f"hf://{MANY}", "--json"))
    assert json.loads(remote.stdout) == json.loads(local("inspect", path, "--json").stdout)
    ranges = sorted(e["range"] for e in hub.log() if e["scope"] == "cdn")
    assert ranges == [f"bytes=0-{FIRST_RANGE - 1}", f"bytes={FIRST_RANGE}-{end - 1}"]


def test_a_file_url_a_dataset_and_a_pinned_commit(hub, tmp_path):
    name = shard_names(hub.model)[1]
    single = ok(hubfs(hub, tmp_path / "home", "inspect", f"hf://{REPO}/{name}", "--json"))
    assert json.loads(single.stdout) == json.loads(local("inspect", os.path.join(hub.model, name), "--json").stdout)
    dataset = ok(hubfs(hub, tmp_path / "home", "inspect", f"hf://datasets/{DATASET}", "--json"))
    assert json.loads(dataset.stdout) == json.loads(local("inspect", hub.model, "--json").stdout)
    commit = hubemu.fetch(hub.url(f"/api/models/{REPO}/revision/v1.0")).json()["sha"]
    pinned = ok(hubfs(hub, tmp_path / "home", "inspect", f"hf://{REPO}@{commit}/{name}", "--json"))
    assert pinned.stdout == single.stdout


# ---- load --------------------------------------------------------------------------------------


def test_load_equals_a_local_copy_and_fetches_what_the_rank_needs(hub, tmp_path):
    here, there = tmp_path / "local.safetensors", tmp_path / "hf.safetensors"
    local("load", hub.model, "--tp", WORLD, "--rank", RANK, "--save", here)
    ok(hubfs(hub, tmp_path / "home", "load", f"hf://{REPO}", "--tp", WORLD, "--rank", RANK, "--save", there))
    assert same_file(here, there)
    fetched, needed = data_bytes(hub.log()), needed_bytes(hub.model)
    print(f"fetched={fetched} needed={needed} ratio={fetched / needed:.3f}")
    assert needed <= fetched <= 1.1 * needed


def test_a_second_load_makes_no_data_request(hub, tmp_path):
    home = tmp_path / "home"
    first, second = tmp_path / "first.safetensors", tmp_path / "second.safetensors"
    ok(hubfs(hub, home, "load", f"hf://{REPO}", "--tp", WORLD, "--rank", RANK, "--save", first))
    hub.clear_log()
    ok(hubfs(hub, home, "load", f"hf://{REPO}", "--tp", WORLD, "--rank", RANK, "--save", second))
    assert data_entries(hub.log()) == []
    # The commit's file list is remembered: the Hub is asked only which commit main is now.
    assert [e["path"] for e in hub.log() if e["path"].startswith("/api/")] == [f"/api/models/{REPO}/revision/main"]
    assert same_file(first, second)


def test_offline_reads_what_is_cached_and_says_what_is_not(hub, tmp_path):
    home = tmp_path / "home"
    online, offline = tmp_path / "online.safetensors", tmp_path / "offline.safetensors"
    ok(hubfs(hub, home, "load", f"hf://{REPO}", "--tp", WORLD, "--rank", RANK, "--save", online))
    hub.clear_log()
    ok(hubfs(hub, home, "load", f"hf://{REPO}", "--tp", WORLD, "--rank", RANK, "--save", offline,
             offline=True))
    assert hub.log() == []
    assert same_file(online, offline)
    missing = hubfs(hub, tmp_path / "empty-home", "inspect", f"hf://{REPO}", offline=True)
    assert missing.returncode == 1
    assert f"hf://{REPO}" in missing.stderr and "HF_HUB_OFFLINE" in missing.stderr
    other_rank = hubfs(hub, home, "load", f"hf://{REPO}", "--tp", WORLD, "--rank", 0, offline=True)
    assert other_rank.returncode == 1 and "not cached" in other_rank.stderr


@pytest.mark.skipif(SANITIZED, reason="a time comparison; under a sanitizer it measures the sanitizer "
                    "(the suite's plain run makes it)")
def test_the_wan_load_is_no_slower_than_through_a_mount(hub, tmp_path):
    """Each with an empty cache, best of five (the machine is shared: the best run is the one
    least disturbed)."""
    hub.config(**WAN)
    direct, through_mount = [], []
    for run in range(5):
        there, mounted = tmp_path / f"hf{run}.safetensors", tmp_path / f"mounted{run}.safetensors"
        started = time.monotonic()
        ok(hubfs(hub, tmp_path / f"home{run}", "load", f"hf://{REPO}", "--tp", WORLD, "--rank", RANK,
                 "--save", there))
        direct.append(time.monotonic() - started)
        with Mount(hub.hub_url) as m:
            started = time.monotonic()
            local("load", os.path.join(m.path, REPO), "--tp", WORLD, "--rank", RANK, "--save", mounted)
            through_mount.append(time.monotonic() - started)
        assert same_file(there, mounted)
    print(f"hf:// {min(direct):.2f} s (of {direct}), mount {min(through_mount):.2f} s (of {through_mount})")
    # Since the mount pushes what it holds into the page cache, reading through it costs about
    # what the direct path does for a model this small (0.30-0.40 s each): within noise, hf://
    # must not be slower. The noise: with the suite running two tests at once, a best of three
    # was once 0.40 s direct against 0.32 s through the mount (both 0.30-0.31 s when idle).
    assert min(direct) <= 1.15 * min(through_mount) + 0.05


# ---- the persistent cache, shared with mounts and huggingface_hub --------------------------------


def test_a_mount_holding_the_cache_leaves_the_load_working(hub, tmp_path):
    home = tmp_path / "home"
    here, there = tmp_path / "local.safetensors", tmp_path / "hf.safetensors"
    local("load", hub.model, "--tp", WORLD, "--rank", RANK, "--save", here)
    with Mount(hub.hub_url, cache_dir=str(home / "hubfs")) as m:
        assert os.listdir(os.path.join(m.path, REPO))    # the mount is up and holds its cache
        result = ok(hubfs(hub, home, "load", f"hf://{REPO}", "--tp", WORLD, "--rank", RANK, "--save", there))
    assert "in use by another hubfs process" in result.stderr
    assert same_file(here, there)


def disk_counters(mount):
    stats = mount.stats()
    return {k: v for k, v in stats.items() if k.startswith("disk_") or k in ("memory_hits", "load_failures")}


def test_a_later_mount_reuses_what_the_load_fetched(hub, tmp_path):
    """The load fetched the row-parallel tensors whole: read through a mount on the same cache,
    each comes from disk (the mount may read ahead past it; nothing inside it is fetched)."""
    home = tmp_path / "home"
    ok(hubfs(hub, home, "load", f"hf://{REPO}", "--tp", WORLD, "--rank", RANK))
    rowwise = [p for p in workloads.tp_plan(hub.model, WORLD, RANK) if p["style"] == "rowwise"]
    assert rowwise
    with Mount(hub.hub_url, cache_dir=str(home / "hubfs")) as m:
        for item in rowwise:
            source = os.path.join(hub.model, item["file"])
            begin, end = (header_end(source) + offset for offset in item["offsets"])
            hub.clear_log()
            with open(os.path.join(m.path, REPO, item["file"]), "rb") as f, open(source, "rb") as s:
                assert os.pread(f.fileno(), end - begin, begin) == os.pread(s.fileno(), end - begin, begin)
            for e in hub.log():
                # Only this file: the mount may be prefetching another shard meanwhile.
                if e["scope"] == "cdn" and e["range"] and e["path"].endswith("/" + item["file"]):
                    first, last = map(int, e["range"].split("=")[1].split("-"))
                    assert last < begin or first >= end, (item["tensor"], e["range"], begin, end, disk_counters(m))


def page_cached_bytes(path):
    """Bytes of the file in the kernel's page cache, as util-linux's fincore counts them."""
    out = subprocess.run(["fincore", "--bytes", "--raw", "--noheadings", "--output", "RES", str(path)],
                         capture_output=True, text=True, check=True).stdout
    return int(out.split()[0])


def test_what_the_load_keeps_bypasses_the_page_cache(hub, tmp_path):
    """The load keeps what it fetched on disk with O_DIRECT, as a mount does: written through the
    page cache, every byte was copied once more there (half of a load's CPU, measured) and the
    page cache filled with bytes this process already holds."""
    home = tmp_path / "home"
    ok(hubfs(hub, home, "load", f"hf://{REPO}", "--tp", WORLD, "--rank", RANK))
    files = [p for p in (home / "hubfs").rglob("*") if p.is_file() and p.stat().st_size >= 1 << 20]
    stored = sum(p.stat().st_blocks * 512 for p in files)
    cached = sum(page_cached_bytes(p) for p in files)
    assert stored >= 4 << 20, [(str(p), p.stat().st_size) for p in files]
    # Only units ending a file (a length not a multiple of the page) go through the page cache.
    assert cached <= 64 * 1024 * len(files), (cached, stored)


def test_complete_huggingface_hub_blobs_are_read_from_disk(hub, tmp_path):
    home = tmp_path / "home"
    shards = shard_names(hub.model)
    env = hub.client_env(home)
    download = ("import sys; from huggingface_hub import hf_hub_download\n"
                "for name in sys.argv[1:]: hf_hub_download('%s', name)" % REPO)
    subprocess.run([sys.executable, "-c", download, *shards], env=env, check=True, timeout=300)
    blobs = os.listdir(home / "hub" / f"models--{REPO.replace('/', '--')}" / "blobs")
    for name in shards:
        with open(os.path.join(hub.model, name), "rb") as f:
            assert hashlib.sha256(f.read()).hexdigest() in blobs
    here, there = tmp_path / "local.safetensors", tmp_path / "hf.safetensors"
    local("load", hub.model, "--tp", WORLD, "--rank", RANK, "--save", here)
    hub.clear_log()
    ok(hubfs(hub, home, "load", f"hf://{REPO}", "--tp", WORLD, "--rank", RANK, "--save", there))
    assert same_file(here, there)
    touched = {e["path"].rsplit("/", 1)[-1] for e in data_entries(hub.log())}
    assert not touched & set(shards), touched


# ---- refusals ----------------------------------------------------------------------------------


@pytest.mark.parametrize("url, token, fragments", [
    (f"hf://{GATED}", None, ["gated", "accept the terms", "HF_TOKEN"]),
    ("hf://test-org/no-such-repo", None, ["hf://test-org/no-such-repo", "not found", "HF_TOKEN"]),
    (f"hf://{REPO}@no-such-branch", None, ["revision \"no-such-branch\" not found"]),
    (f"hf://{REPO}/no/such/file.safetensors", None, ["no file or directory 'no/such/file.safetensors'"]),
    ("hf://test-org", None, ["expected hf://"]),
    (f"hf://{REPO}", "hf_wrong_token", ["token", "HF_TOKEN"]),
])
def test_refusals_say_what_to_do(hub, tmp_path, url, token, fragments):
    for args in (("inspect", url), ("load", url, "--tp", 2, "--rank", 1)):
        result = hubfs(hub, tmp_path / "home", *args, token=token)
        assert result.returncode == 1, (args, result.stderr)
        assert "Sanitizer" not in result.stderr, result.stderr
        for fragment in fragments:
            assert fragment in result.stderr, (args, result.stderr)


def test_the_gated_repo_opens_with_a_token(hub, tmp_path):
    remote = ok(hubfs(hub, tmp_path / "home", "inspect", f"hf://{GATED}", "--json", token=TOKEN))
    assert json.loads(remote.stdout) == json.loads(local("inspect", hub.model, "--json").stdout)
