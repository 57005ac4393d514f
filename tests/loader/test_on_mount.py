"""The loader through a hubfs mount of the emulator's tiny model: inspect and load give the
same answers as on the source files, and inspect fetches a small part of the weights (the
headers, as the mount's per-shard header prefix)."""
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "support"))
from mount import Mount  # noqa: E402

HUBFS = os.environ["HUBFS_BIN"]
TINY_REPO = "test-org/tiny-llama"


def hubfs(*args):
    result = subprocess.run([HUBFS, *args], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_inspect_and_load_through_the_mount(hub, tmp_path):
    source = hub.sources[TINY_REPO]
    shards = [n for n in os.listdir(source) if n.endswith(".safetensors")]
    with Mount(hub.hub_url, env={"HF_TOKEN": hub.token}) as m:
        mounted = os.path.join(m.path, TINY_REPO)
        before = m.stats()["bytes_fetched"]
        assert json.loads(hubfs("inspect", mounted, "--json")) == json.loads(hubfs("inspect", source, "--json"))
        fetched = m.stats()["bytes_fetched"] - before
        small_files = sum(os.path.getsize(os.path.join(source, n))
                          for n in ("config.json", "model.safetensors.index.json"))
        weights = sum(os.path.getsize(os.path.join(source, n)) for n in shards)
        # The mount fetches a header prefix per shard (64 KiB today); a read of the data
        # would pull megabytes.
        assert fetched - small_files < weights // 4, (fetched, weights)
        for tp, rank in ((2, 1), (4, 2)):
            here, there = str(tmp_path / "local.safetensors"), str(tmp_path / "mounted.safetensors")
            hubfs("load", source, "--tp", str(tp), "--rank", str(rank), "--save", here)
            hubfs("load", mounted, "--tp", str(tp), "--rank", str(rank), "--save", there)
            with open(here, "rb") as a, open(there, "rb") as b:
                assert a.read() == b.read()
