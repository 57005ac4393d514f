"""--trace-reads: a line per read the kernel sent, checked against what the reads were (pread
offsets and lengths chosen here, the daemon's own read counters, tensor extents from the
safetensors header parsed here) and against a first-byte delay set on the emulator."""
import os
import subprocess
import sys
import tempfile

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import hubemu  # noqa: E402
from fs_support import safetensors_header  # noqa: E402
from mount import HUBFS, Mount, is_mounted  # noqa: E402

REPO = "test-org/traced"
LATENCY_MS = 150
FIELDS = ["seconds", "waited_ms", "repo", "file", "offset", "length", "ahead_bytes", "result", "tensor"]


@pytest.fixture(scope="module")
def traced_hub(tmp_path_factory):
    model = hubemu.cached_model(preset="tiny", shards=1, seed=21)
    root = str(tmp_path_factory.mktemp("trace-hub"))
    hubemu.import_repo(root, REPO, model)
    with hubemu.Emulator(root) as hub:
        yield hub, model


def parse_trace(path):
    with open(path) as f:
        lines = f.read().splitlines()
    assert lines[0] == "# " + "\t".join(FIELDS)
    rows = [dict(zip(FIELDS, line.split("\t"))) for line in lines[1:]]
    assert all(len(line.split("\t")) == len(FIELDS) for line in lines[1:])
    return rows


def tensor_extents(path):
    """(name, absolute begin, absolute end) of every tensor, from the file's own header."""
    length, header = safetensors_header(path)
    return [(name, 8 + length + info["data_offsets"][0], 8 + length + info["data_offsets"][1])
            for name, info in header.items() if name != "__metadata__"]


def test_every_read_is_listed_with_its_wait_and_its_tensor(traced_hub, tmp_path):
    hub, model = traced_hub
    shard = sorted(f for f in os.listdir(model) if f.endswith(".safetensors"))[0]
    local = os.path.join(model, shard)
    extents = [e for e in tensor_extents(local) if e[2] - e[1] >= 64 * 1024]
    far = max(extents, key=lambda e: e[1])           # the last large tensor: nothing fetched it ahead
    trace = str(tmp_path / "reads.tsv")
    hub.config(latency_ms=LATENCY_MS)
    try:
        with Mount(hub.hub_url, extra_args=["--trace-reads", trace, "--no-disk-cache"]) as m:
            fd = os.open(os.path.join(m.path, REPO, shard), os.O_RDONLY)
            try:
                os.pread(fd, 8, 0)
                at = far[1] + 4096 * 3
                with open(local, "rb") as f:
                    f.seek(at)
                    expected = f.read(4096)
                assert os.pread(fd, 4096, at) == expected
            finally:
                os.close(fd)
            stats = m.stats()
    finally:
        hub.config(latency_ms=0)
    rows = parse_trace(trace)                       # unmounted: everything was written
    assert len(rows) == stats["reads"]
    assert sum(int(r["length"]) for r in rows) == stats["bytes_served"]
    assert {(r["repo"], r["file"], r["result"]) for r in rows} == {(REPO + "@main", shard, "ok")}
    first = rows[0]
    assert int(first["offset"]) == 0 and first["tensor"] == "(header)"
    covering = [r for r in rows if int(r["offset"]) <= at < int(r["offset"]) + int(r["length"])]
    assert len(covering) == 1, rows
    assert covering[0]["tensor"] == far[0]
    # Nothing had asked for that tensor's bytes: the read waited for a request to the CDN.
    assert float(covering[0]["waited_ms"]) >= LATENCY_MS * 0.9
    seconds = [float(r["seconds"]) for r in rows]
    assert seconds == sorted(seconds) and seconds[0] >= 0


def test_a_trace_file_that_cannot_be_written_fails_the_mount_with_the_reason(traced_hub, tmp_path):
    hub, _ = traced_hub
    mountpoint = tempfile.mkdtemp(prefix="hubfs-mnt-")
    try:
        result = subprocess.run([HUBFS, "mount", mountpoint, "--endpoint", hub.hub_url, "--no-disk-cache",
                                 "--trace-reads", str(tmp_path / "missing-dir" / "reads.tsv")],
                                capture_output=True, text=True, timeout=60)
        mounted = is_mounted(mountpoint)
        if mounted:
            subprocess.run(["fusermount3", "-u", mountpoint])
        assert not mounted
        assert result.returncode != 0
        assert "--trace-reads" in result.stderr and "No such file or directory" in result.stderr
    finally:
        os.rmdir(mountpoint)
