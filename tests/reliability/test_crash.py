"""The persistent cache against crashes and a full disk, end to end.

- The daemon is SIGKILLed while reads (and so cache writes) are in flight, the dead mount is
  cleaned with fusermount3 -uz, and hubfs is mounted again on the same cache: every file read
  afterwards is byte-identical to its source, while the cache does serve blocks.
- The cache directory is a 20 MB tmpfs for a 50+ MB model: reads still succeed and are right,
  in that mount and in the next one on the same (full) cache.
"""
import atexit
import os
import random
import time

import harness
from harness import assert_correct_or_eio, finish_reader, read_all, start_reader

READ_DEADLINE_S = 120 if harness.SANITIZED else 60
_tmpfs_left = []


@atexit.register
def _drop_leftover_tmpfs():  # even when a test dies halfway, no tmpfs stays mounted
    for path in _tmpfs_left:
        harness.drop_tmpfs(path)


def all_pairs(hub, m):
    return hub.pairs(m, "rel/small") + hub.pairs(m, "rel/tiny")


def test_sigkill_mid_read_then_remount_serves_only_complete_blocks(hub, figures, tmp_path):
    cache_dir = str(tmp_path / "cache")
    rng = random.Random(1234)
    args = ["--block-size", "1M", "--memory-budget", "32M"]
    # paced responses, so that many fetches (and their cache writes) are in flight at the kill
    hub.emulator.config(bandwidth_bps=8 * 1024 * 1024)
    for round_no in range(3):
        m = harness.mount(hub, args, cache_dir=cache_dir)
        m.start()
        try:
            reader = start_reader({"pairs": all_pairs(hub, m), "mode": "seq", "chunk": 1 << 20})
            time.sleep(rng.uniform(0.4, 1.5) * (2 if harness.SANITIZED else 1))
            harness.kill_daemon(m)
            figures.count("sigkill")
            partial = finish_reader(reader, 30, figures)
            # What the reader got before the kill was right; afterwards its reads failed cleanly.
            assert partial["wrong"] == 0, partial
        finally:
            m.cleanup()
    hub.emulator.config(bandwidth_bps=0)
    with harness.mount(hub, args, cache_dir=cache_dir) as m:
        files = all_pairs(hub, m)
        cached = sum(int(os.getxattr(p, "user.hubfs.cached_bytes")) for p, _ in files)
        assert cached > 0, "the killed mounts left nothing in the cache: the test proved nothing"
        result = read_all(files, READ_DEADLINE_S)
        stats = m.stats()
    assert_correct_or_eio(result, allow_eio=False)
    # Units through the daemon, or whole files the kernel read from the cache itself.
    assert stats["disk_hits"] + stats["passthrough_opens"] > 0, f"nothing came from the cache after the crashes: {stats}"


def test_cache_disk_full(hub, figures):
    disk = harness.tmpfs("20m")
    _tmpfs_left.append(disk)
    try:
        cache_dir = os.path.join(disk, "cache")
        total = hub.bytes_of("rel/small") + hub.bytes_of("rel/tiny")
        assert total > 2 * 20 * 1024 * 1024 or harness.SANITIZED
        args = ["--block-size", "1M", "--memory-budget", "16M"]
        with harness.mount(hub, args, cache_dir=cache_dir) as m:
            first = read_all(all_pairs(hub, m), READ_DEADLINE_S, figures)
            again = read_all(all_pairs(hub, m), READ_DEADLINE_S, figures)   # 16M of memory: disk or network
            stats = m.stats()
        figures.count("disk_full", 1)
        for result in (first, again):
            assert_correct_or_eio(result, allow_eio=False)
        print("disk full, first mount:", stats)
        # the cache met the full disk: it refused or evicted (it cannot hold the model)
        assert stats["disk_write_failures"] + stats["disk_evictions"] > 0, stats
        with harness.mount(hub, args, cache_dir=cache_dir) as m:
            # Newest first: read in the first mount's order, each file would evict from the
            # full cache the ones read after it before their turn (LRU under a scan; once no
            # hit at all, in CI).
            third = read_all(all_pairs(hub, m)[::-1], READ_DEADLINE_S, figures)
            stats = m.stats()
        print("disk full, second mount:", stats)
        assert_correct_or_eio(third, allow_eio=False)
        # what the cache holds whole the kernel reads itself (passthrough); the rest, the daemon
        assert stats["disk_hits"] + stats["passthrough_opens"] > 0, stats
    finally:
        harness.drop_tmpfs(disk)
        _tmpfs_left.remove(disk)
    assert not harness.is_mounted(disk)
