"""Files the persistent cache holds whole are read by the kernel itself (FUSE passthrough): no
read reaches the daemon, and every byte still equals the source (sha256, numpy over mmap). The
kernel refuses an open that mixes passthrough and page-cache opens of one file: opens while a
file completes, and many at once, must all succeed.

Where the kernel cannot (not root, Linux < 6.9 or built without CONFIG_FUSE_PASSTHROUGH), the
same reads must be right through the daemon, and the log must say passthrough is off."""
import gzip
import os
import platform
import sys
import threading
import time

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fs_support import TINY_REPO, data_requests, relative_files, sha256_of  # noqa: E402
from mount import Mount  # noqa: E402

SHARD = "model-00001-of-00003.safetensors"


def kernel_offers_passthrough():
    """Decided from the platform, not from hubfs: root, Linux >= 6.9, CONFIG_FUSE_PASSTHROUGH."""
    major, minor = (int(x) for x in platform.release().split(".")[:2])
    if os.geteuid() != 0 or (major, minor) < (6, 9):
        return False
    for config in ("/proc/config.gz", f"/boot/config-{platform.release()}"):
        if os.path.exists(config):
            opener = gzip.open if config.endswith(".gz") else open
            with opener(config, "rt") as f:
                return "CONFIG_FUSE_PASSTHROUGH=y" in f.read()
    return True   # no config to read: distribution kernels of 6.9+ enable it


PASSTHROUGH = kernel_offers_passthrough()


def fill_cache(hub, cache, names):
    """Reads the files cold through a first mount, and waits until the cache holds them whole."""
    with Mount(hub.hub_url, cache_dir=cache) as m:
        paths = [os.path.join(m.path, TINY_REPO, name) for name in names]
        for path in paths:
            sha256_of(path)
        deadline = time.time() + 30
        while time.time() < deadline and any(
                int(os.getxattr(p, "user.hubfs.cached_bytes")) < os.path.getsize(p) for p in paths):
            time.sleep(0.05)


def wait_closed(m):
    """Until the daemon has every release (the kernel sends them after close() returns)."""
    deadline = time.time() + 30
    while m.stats()["files_open"] > 0:
        assert time.time() < deadline, "a release never came"
        time.sleep(0.02)


def wait_whole(path):
    deadline = time.time() + 30
    while int(os.getxattr(path, "user.hubfs.cached_bytes")) < os.path.getsize(path):
        assert time.time() < deadline, "the cache never held the file whole"
        time.sleep(0.05)


def test_a_remount_reads_cached_files_without_the_daemon(hub, tmp_path):
    source = hub.sources[TINY_REPO]
    names = relative_files(source)
    cache = str(tmp_path / "cache")
    fill_cache(hub, cache, names)
    hub.clear_log()
    started = time.time()   # the first mount's prefetches may still be logged after it ends
    with Mount(hub.hub_url, cache_dir=cache) as m:
        for name in names:
            assert sha256_of(os.path.join(m.path, TINY_REPO, name)) == sha256_of(os.path.join(source, name))
        # The file still looks like the mount's own while the kernel reads the cache's file.
        shard = os.path.join(m.path, TINY_REPO, SHARD)
        closed = os.stat(shard)
        with open(shard, "rb") as f:
            opened = os.fstat(f.fileno())
        assert (opened.st_mode, opened.st_size, opened.st_mtime, opened.st_ino) == \
               (closed.st_mode, closed.st_size, closed.st_mtime, closed.st_ino)
        assert closed.st_mode & 0o777 == 0o444
        # mmap of a passthrough file maps the cache's file: numpy sees the source's bytes.
        mapped = np.memmap(os.path.join(m.path, TINY_REPO, SHARD), dtype=np.uint8, mode="r")
        assert np.array_equal(mapped, np.fromfile(os.path.join(source, SHARD), dtype=np.uint8))
        del mapped
        stats = m.stats()
        log = m.log_text()
    assert [e for e in data_requests(hub.log()) if e["time"] >= started] == []
    if PASSTHROUGH:
        assert stats["passthrough_opens"] == len(names) + 2
        assert stats["reads"] == 0 and stats["bytes_served"] == 0
        # Nor does the daemon load the shard's header to plan reads it will never see.
        assert stats["disk_hits"] == 0
        assert "passthrough is off" not in log
    else:
        assert stats["passthrough_opens"] == 0 and stats["disk_hits"] > 0
        assert "passthrough is off" in log


def test_no_passthrough_reads_the_cache_through_the_daemon(hub, tmp_path):
    cache = str(tmp_path / "cache")
    fill_cache(hub, cache, [SHARD])
    source = os.path.join(hub.sources[TINY_REPO], SHARD)
    with Mount(hub.hub_url, cache_dir=cache, extra_args=["--no-passthrough"]) as m:
        assert sha256_of(os.path.join(m.path, TINY_REPO, SHARD)) == sha256_of(source)
        stats = m.stats()
    assert stats["passthrough_opens"] == 0
    assert stats["disk_hits"] > 0 and stats["bytes_served"] >= os.path.getsize(source)
    # Every unit verified against the checksum the first mount took as its bytes landed: a unit
    # that failed would have been fetched again.
    assert stats["bytes_fetched"] == 0


def test_opens_agree_while_a_file_completes(hub, tmp_path):
    """An open made while the file is open through the daemon stays with the daemon, even once
    the cache holds the file whole; the first open after the last close goes to the kernel."""
    want = sha256_of(os.path.join(hub.sources[TINY_REPO], SHARD))
    with Mount(hub.hub_url, cache_dir=str(tmp_path / "cache")) as m:
        path = os.path.join(m.path, TINY_REPO, SHARD)
        with open(path, "rb") as first:
            assert sha256_of(path) == want
            wait_whole(path)
            with open(path, "rb") as second:   # the kernel would refuse passthrough here (EIO)
                assert sha256_of(path) == want
                assert m.stats()["passthrough_opens"] == 0
                assert len(second.read()) == len(first.read()) == os.path.getsize(path)
        wait_closed(m)
        with open(path, "rb") as third, open(path, "rb") as fourth:
            assert sha256_of(path) == want
            assert len(third.read()) == len(fourth.read())
            opens = m.stats()["passthrough_opens"]
    assert opens == (3 if PASSTHROUGH else 0)   # third, fourth and sha256_of's open


def test_many_readers_at_once_while_the_file_completes(hub, tmp_path):
    """Readers open and close the file all the time while it is fetched, stored, then served by
    the kernel: no open fails, every read is right."""
    source = os.path.join(hub.sources[TINY_REPO], SHARD)
    want = sha256_of(source)
    errors, hashes = [], []

    def reader(path, until):
        try:
            while time.time() < until:
                hashes.append(sha256_of(path))
        except OSError as e:
            errors.append(e)

    with Mount(hub.hub_url, cache_dir=str(tmp_path / "cache")) as m:
        path = os.path.join(m.path, TINY_REPO, SHARD)
        until = time.time() + 4
        threads = [threading.Thread(target=reader, args=(path, until)) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wait_whole(path)
        assert sha256_of(path) == want
        opens = m.stats()["passthrough_opens"]
    assert not errors, errors
    assert hashes and set(hashes) == {want}
    assert (opens > 0) == PASSTHROUGH


def test_a_huggingface_hub_download_is_read_by_the_kernel(hub, tmp_path):
    """A blob huggingface_hub downloaded (the real client) is hashed once, then passed through."""
    from huggingface_hub import hf_hub_download
    hub_cache = str(tmp_path / "hf-hub")
    hf_hub_download(TINY_REPO, SHARD, cache_dir=hub_cache, endpoint=hub.hub_url, token=hub.token)
    hub.clear_log()
    with Mount(hub.hub_url, cache_dir=str(tmp_path / "cache"),
               env={"HF_HUB_CACHE": hub_cache, "HF_TOKEN": hub.token}) as m:
        path = os.path.join(m.path, TINY_REPO, SHARD)
        assert sha256_of(path) == sha256_of(os.path.join(hub.sources[TINY_REPO], SHARD))
        stats = m.stats()
    assert [e for e in data_requests(hub.log()) if e["origin"] == "cdn"] == []
    assert stats["bytes_fetched"] == 0 and stats["hf_blobs_verified"] == 1
    assert stats["passthrough_opens"] == (1 if PASSTHROUGH else 0)
