"""hubfs mount against the emulator with a tiny 3-shard model: bytes, safetensors, mmap, fetch
economy (headers, warm reads, persistent cache), revisions, datasets, refresh, xattrs, stats."""
import errno
import json
import os
import random
import struct
import sys
import time

import numpy as np
import pytest
from safetensors import safe_open

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import hubemu  # noqa: E402
from fs_support import (DATASET_REPO, MIB, TINY_REPO, bytes_sent, data_requests, git_blob_sha1,  # noqa: E402
                        relative_files, safetensors_header, sha256_of)
from mount import Mount  # noqa: E402


@pytest.fixture
def mnt(hub):
    with Mount(hub.hub_url, env={"HF_TOKEN": hub.token}) as m:
        yield m


@pytest.fixture(scope="module")
def f32_model(hub_session):
    """The tiny model in float32 (numpy can't hold bf16), imported as test-org/tiny-f32."""
    path = hubemu.cached_model(preset="tiny", shards=2, seed=3, dtype="f32")
    hubemu.import_repo(hub_session.root, "test-org/tiny-f32", path)
    return path


def test_every_file_is_byte_identical(hub, mnt):
    source = hub.sources[TINY_REPO]
    mounted = os.path.join(mnt.path, TINY_REPO)
    assert relative_files(mounted) == relative_files(source)
    for name in relative_files(source):
        assert sha256_of(os.path.join(mounted, name)) == sha256_of(os.path.join(source, name)), name
    st = os.stat(os.path.join(mounted, "model-00001-of-00003.safetensors"))
    assert st.st_blksize == 64 * 1024   # what buffered readers size their reads by: small
    assert st.st_size == os.path.getsize(os.path.join(source, "model-00001-of-00003.safetensors"))


def test_safe_open_tensors_and_slices_match_the_source(hub, f32_model):
    with Mount(hub.hub_url) as m:
        mounted = os.path.join(m.path, "test-org/tiny-f32")
        shards = [n for n in os.listdir(f32_model) if n.endswith(".safetensors")]
        assert len(shards) == 2
        for shard in shards:
            with safe_open(os.path.join(mounted, shard), "np") as got, \
                    safe_open(os.path.join(f32_model, shard), "np") as want:
                assert sorted(got.keys()) == sorted(want.keys())
                for key in want.keys():
                    assert np.array_equal(got.get_tensor(key), want.get_tensor(key)), key
                    rows = want.get_slice(key).get_shape()[0]
                    lo, hi = rows // 3, max(rows // 3 + 1, rows * 2 // 3)
                    assert np.array_equal(got.get_slice(key)[lo:hi], want.get_slice(key)[lo:hi]), key


def test_numpy_memmap_random_reads_match(hub, mnt):
    shard = "model-00002-of-00003.safetensors"
    want = np.memmap(os.path.join(hub.sources[TINY_REPO], shard), dtype=np.uint8, mode="r")
    got = np.memmap(os.path.join(mnt.path, TINY_REPO, shard), dtype=np.uint8, mode="r")
    rng = random.Random(7)
    for _ in range(300):
        start = rng.randrange(len(want))
        length = rng.randrange(1, 70000)
        assert np.array_equal(got[start:start + length], want[start:start + length])


def test_reading_only_headers_fetches_header_plus_64k_per_shard(hub):
    source = hub.sources[TINY_REPO]
    shards = sorted(n for n in os.listdir(source) if n.endswith(".safetensors"))
    with Mount(hub.hub_url, extra_args=["--no-disk-cache"]) as m:
        mounted = os.path.join(m.path, TINY_REPO)
        assert sorted(os.listdir(mounted)) == sorted(os.listdir(source))
        hub.clear_log()
        for shard in shards:
            fd = os.open(os.path.join(mounted, shard), os.O_RDONLY)
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_RANDOM)
                (length,) = struct.unpack("<Q", os.pread(fd, 8, 0))
                header = json.loads(os.pread(fd, length, 8))
            finally:
                os.close(fd)
            assert (length, header) == safetensors_header(os.path.join(source, shard))
        log = hub.log()
    budget = sum(safetensors_header(os.path.join(source, s))[0] + 8 + 64 * 1024 for s in shards)
    assert 0 < bytes_sent(log, "cdn") <= budget, log


def test_warm_reread_makes_no_request(hub, mnt):
    path = os.path.join(mnt.path, TINY_REPO, "model-00001-of-00003.safetensors")
    want = sha256_of(os.path.join(hub.sources[TINY_REPO], "model-00001-of-00003.safetensors"))
    assert sha256_of(path) == want
    before = mnt.stats()
    hub.clear_log()
    assert sha256_of(path) == want                       # the kernel's page cache (keep_cache)
    fd = os.open(path, os.O_RDONLY)
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)   # drop it: now the daemon's memory serves
    os.close(fd)
    assert sha256_of(path) == want
    assert data_requests(hub.log()) == []
    # Served by the daemon's memory, or (the file whole in the cache by then) by the kernel
    # reading the cache's file itself.
    after = mnt.stats()
    assert after["memory_hits"] > before["memory_hits"] or after["passthrough_opens"] > before["passthrough_opens"]


def test_remount_reuses_the_persistent_cache(hub, tmp_path):
    cache = str(tmp_path / "cache")
    source = hub.sources[TINY_REPO]
    with Mount(hub.hub_url, cache_dir=cache) as m:
        for name in relative_files(source):
            sha256_of(os.path.join(m.path, TINY_REPO, name))
    hub.clear_log()
    with Mount(hub.hub_url, cache_dir=cache) as m:
        for name in relative_files(source):
            assert sha256_of(os.path.join(m.path, TINY_REPO, name)) == sha256_of(os.path.join(source, name))
        stats = m.stats()
    assert data_requests(hub.log()) == []
    # Units through the daemon, or whole files the kernel read from the cache itself.
    assert stats["disk_hits"] + stats["passthrough_opens"] > 0 and stats["bytes_fetched"] == 0


def test_revisions_by_tag_commit_and_encoded_branch(hub, mnt):
    commit = hub.commits[TINY_REPO]
    hub.move_branch(TINY_REPO, "refs/pr/1", commit)
    want = sha256_of(os.path.join(hub.sources[TINY_REPO], "config.json"))
    for name in ("tiny-llama@v1.0", f"tiny-llama@{commit}", "tiny-llama@refs%2Fpr%2F1"):
        path = os.path.join(mnt.path, "test-org", name)
        assert sha256_of(os.path.join(path, "config.json")) == want, name
        assert os.getxattr(path, "user.hubfs.commit").decode() == commit
    with pytest.raises(FileNotFoundError):
        os.stat(os.path.join(mnt.path, "test-org", "tiny-llama@no-such-branch"))
    assert "test-org" in os.listdir(mnt.path)
    assert {"tiny-llama@v1.0", "tiny-llama@refs%2Fpr%2F1"} <= set(os.listdir(os.path.join(mnt.path, "test-org")))


def test_datasets(hub, mnt):
    source = hub.sources[DATASET_REPO]
    mounted = os.path.join(mnt.path, "datasets", DATASET_REPO)
    assert relative_files(mounted) == relative_files(source)
    for name in relative_files(source):
        assert sha256_of(os.path.join(mounted, name)) == sha256_of(os.path.join(source, name))
    with pytest.raises(FileNotFoundError):   # a dataset is not a model
        os.stat(os.path.join(mnt.path, DATASET_REPO))


def test_branch_moved_while_mounted_stays_pinned_until_refresh(hub, mnt, tmp_path):
    repo_dir = os.path.join(mnt.path, TINY_REPO)
    old_commit = hub.commits[TINY_REPO]
    config = os.path.join(repo_dir, "config.json")
    with open(config, "rb") as f:
        old_config = f.read()
    held = open(config, "rb")
    v2 = tmp_path / "v2"
    v2.mkdir()
    (v2 / "config.json").write_text('{"version": 2}\n')
    (v2 / "NEW.txt").write_text("second commit\n")
    new_commit = hubemu.import_repo(hub.root, TINY_REPO, str(v2))
    assert new_commit != old_commit
    assert "NEW.txt" not in os.listdir(repo_dir)
    assert os.getxattr(repo_dir, "user.hubfs.commit").decode() == old_commit
    assert os.getxattr(repo_dir, "user.hubfs.refresh").decode() == new_commit
    assert sorted(os.listdir(repo_dir)) == ["NEW.txt", "config.json"]
    with open(config, "rb") as f:
        assert f.read() == b'{"version": 2}\n'
    assert held.read() == old_config             # an open file stays on its commit
    held.close()
    assert os.getxattr(repo_dir, "user.hubfs.commit").decode() == new_commit
    assert f"now pinned at commit {new_commit}" in mnt.log_text()


def test_xattrs(hub, mnt):
    repo_dir = os.path.join(mnt.path, TINY_REPO)
    shard = os.path.join(repo_dir, "model-00003-of-00003.safetensors")
    config = os.path.join(repo_dir, "config.json")
    source = hub.sources[TINY_REPO]
    assert set(os.listxattr(shard)) == {"user.hubfs.commit", "user.hubfs.etag", "user.hubfs.cached_bytes"}
    assert os.getxattr(shard, "user.hubfs.commit").decode() == hub.commits[TINY_REPO]
    assert os.getxattr(shard, "user.hubfs.etag").decode() == sha256_of(os.path.join(source, os.path.basename(shard)))
    with open(os.path.join(source, "config.json"), "rb") as f:
        assert os.getxattr(config, "user.hubfs.etag").decode() == git_blob_sha1(f.read())
    assert int(os.getxattr(shard, "user.hubfs.cached_bytes")) < os.path.getsize(shard)
    sha256_of(shard)
    deadline = time.time() + 20   # fetched blocks are written to disk after their readers are served
    while int(os.getxattr(shard, "user.hubfs.cached_bytes")) < os.path.getsize(shard) and time.time() < deadline:
        time.sleep(0.05)
    assert int(os.getxattr(shard, "user.hubfs.cached_bytes")) == os.path.getsize(shard)
    with pytest.raises(OSError) as refused:
        os.getxattr(shard, "user.other")
    assert refused.value.errno == errno.ENODATA


def test_stats(hub, mnt):
    shard = os.path.join(mnt.path, TINY_REPO, "model-00001-of-00003.safetensors")
    sha256_of(shard)
    with open(os.path.join(mnt.path, ".hubfs", "stats")) as f:
        text = f.read()
    stats = json.loads(text)
    assert stats["bytes_fetched"] >= os.path.getsize(shard)
    assert stats["requests"] >= 1 and stats["pages_in_flight"] == 0
    assert stats["memory_misses"] >= 1 and stats["disk_misses"] >= 1
    # Blocks the kernel was served whole are not kept (its page cache has them).
    assert 0 <= stats["memory_used"] <= stats["memory_budget"] == 208 * MIB
    repo = stats["repos"][f"{TINY_REPO}@main"]
    assert repo["reads"] >= 1 and repo["bytes_fetched"] == stats["bytes_fetched"]
    # What the kernel was answered is the file, once (the page cache keeps it afterwards).
    assert repo["bytes_served"] == stats["bytes_served"] >= os.path.getsize(shard)
    assert hub.token not in text and hub.token not in mnt.log_text()
    assert bytes_sent(hub.log(), "cdn") >= os.path.getsize(shard)


def test_small_memory_budget_and_blocks_still_read_right(hub):
    source = hub.sources[TINY_REPO]
    with Mount(hub.hub_url, extra_args=["--block-size", "64K", "--memory-budget", "256K",
                                        "--no-disk-cache", "--threads", "2"]) as m:
        for name in relative_files(source):
            assert sha256_of(os.path.join(m.path, TINY_REPO, name)) == sha256_of(os.path.join(source, name))
        stats = m.stats()
    # Blocks left memory: evicted for room, or released once the kernel had all their pages.
    assert stats["memory_used"] <= 256 * 1024 and stats["evictions"] + stats["released_blocks"] > 0
