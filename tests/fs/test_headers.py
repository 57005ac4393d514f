"""safetensors headers are bytes like any other: charged to the memory budget (a repo chooses
their length, up to 100 MB each), and served from local copies when the network is off."""
import json
import os
import shutil
import struct
import subprocess
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import hubemu  # noqa: E402
from fs_support import MIB, SANITIZED  # noqa: E402
from mount import Mount  # noqa: E402
from files import sha256_of  # noqa: E402

REPO = "test-org/fat-headers"
FILES = 6
HEADER_PAD = 48 * MIB   # each header ~48 MB: six of them used to stay resident, ~290 MB


def write_fat_header_file(path, index):
    """A valid safetensors file whose header is mostly a long metadata string."""
    data = struct.pack("<4f", 1.0, 2.0, 3.0, float(index))
    header = {"__metadata__": {"pad": "x" * HEADER_PAD, "index": str(index)},
              "weight": {"dtype": "F32", "shape": [4], "data_offsets": [0, len(data)]}}
    text = json.dumps(header).encode()
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + data)


@pytest.fixture(scope="module")
def fat_hub(tmp_path_factory):
    source = str(tmp_path_factory.mktemp("fat-src"))
    for i in range(FILES):
        write_fat_header_file(os.path.join(source, f"model-{i}.safetensors"), i)
    root = str(tmp_path_factory.mktemp("fat-hub"))
    hubemu.import_repo(root, REPO, source)
    with hubemu.Emulator(root) as hub:
        yield hub, source
    shutil.rmtree(root, ignore_errors=True)
    shutil.rmtree(source, ignore_errors=True)


def test_open_headers_stay_within_the_memory_budget(fat_hub):
    hub, source = fat_hub
    budget = 32 * MIB
    with Mount(hub.hub_url, extra_args=["--memory-budget", "32M", "--no-disk-cache"]) as m:
        baseline = m.rss()
        fds, peak = [], 0
        try:
            for i in range(FILES):   # every file stays open, its header read whole
                fd = os.open(os.path.join(m.path, REPO, f"model-{i}.safetensors"), os.O_RDONLY)
                fds.append(fd)
                length = struct.unpack("<Q", os.pread(fd, 8, 0))[0]
                header = b"".join(os.pread(fd, min(4 * MIB, length - at), 8 + at) for at in range(0, length, 4 * MIB))
                assert json.loads(header)["__metadata__"]["index"] == str(i)
                peak = max(peak, m.rss())
            stats = m.stats()
        finally:
            for fd in fds:
                os.close(fd)
    # A header being read may take its own bytes beyond the budget (a read is never refused);
    # what was read goes when memory is wanted: never six headers at once.
    allowance = (256 if SANITIZED else 96) * MIB
    assert peak - baseline <= budget + HEADER_PAD + allowance, (peak, baseline)
    assert stats["memory_used"] <= budget + HEADER_PAD + 8 * MIB, stats


def test_offline_a_shard_complete_in_the_hub_cache_is_read_with_its_header(hub, tmp_path):
    """The header comes from the huggingface_hub blob (or the persistent cache), not the network."""
    repo, shard = "test-org/tiny-llama", "model-00001-of-00003.safetensors"
    home, cache = str(tmp_path / "home"), str(tmp_path / "cache")
    with Mount(hub.hub_url, cache_dir=cache, env={"HF_HOME": home}) as m:
        assert shard in os.listdir(os.path.join(m.path, repo))   # pins and lists: kept for offline
    hub.clear_log()
    download = ("from huggingface_hub import hf_hub_download; "
                f"print(hf_hub_download({repo!r}, {shard!r}))")
    env = {**os.environ, **hub.client_env(home)}
    done = subprocess.run([sys.executable, "-c", download], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    with Mount(hub.hub_url, cache_dir=cache, env={"HF_HOME": home, "HF_HUB_OFFLINE": "1"}) as m:
        hub.clear_log()
        path = os.path.join(m.path, repo, shard)
        with open(path, "rb") as f:
            length = struct.unpack("<Q", f.read(8))[0]
            assert json.loads(f.read(length))
        assert sha256_of(path) == sha256_of(os.path.join(hub.sources[repo], shard))
        assert [e for e in hub.log() if e["scope"] in ("cdn", "resolve")] == []
