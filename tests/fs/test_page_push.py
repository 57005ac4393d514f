"""Bytes in memory after a read go to the kernel's page cache with it: a reader going on in order
reads them from there instead of asking the mount for each 64-128 KiB. Checked against the
source file's bytes (sha256, numpy), the daemon's read counters and the emulator's bytes sent."""
import hashlib
import mmap
import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fs_support import MIB, bytes_sent, one_random_file_hub  # noqa: E402
from mount import Mount  # noqa: E402

REPO = "test-org/pushed"
SIZE = 48 * MIB + 12345      # a partial last page too
KERNEL_READ = 128 * 1024     # the most the kernel asks of the mount at once


@pytest.fixture(scope="module")
def pushed_hub(tmp_path_factory):
    with one_random_file_hub(tmp_path_factory, REPO, "weights.bin", SIZE, seed=7) as served:
        yield served


def check_counts(stats, hub, asked_at_most):
    # Pushed bytes count as served (handed to the kernel); a page pushed while the kernel asks for
    # it too may count twice, rarely.
    assert SIZE <= stats["bytes_served"] <= SIZE * 1.05, stats
    assert stats["bytes_pushed"] >= SIZE // 2, stats
    assert stats["reads"] <= asked_at_most, stats
    assert bytes_sent(hub.log()) <= SIZE * 1.02


def test_a_reader_in_order_asks_a_fraction_of_its_reads(pushed_hub):
    hub, digest = pushed_hub
    hub.clear_log()
    with Mount(hub.hub_url, extra_args=["--no-disk-cache"]) as m:
        sha = hashlib.sha256()
        with open(os.path.join(m.path, REPO, "weights.bin"), "rb", buffering=0) as f:
            while chunk := f.read(KERNEL_READ):
                sha.update(chunk)
        stats = m.stats()
    assert sha.hexdigest() == digest
    check_counts(stats, hub, SIZE // KERNEL_READ // 3)   # without pushes: ~385, one per 128 KiB


def test_an_mmap_reader_in_order_faults_from_the_page_cache(pushed_hub):
    hub, digest = pushed_hub
    hub.clear_log()
    with Mount(hub.hub_url, extra_args=["--no-disk-cache"]) as m:
        with open(os.path.join(m.path, REPO, "weights.bin"), "rb") as f:
            mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
            try:
                sha = hashlib.sha256()
                for at in range(0, SIZE, MIB):   # page faults, in order, a MiB at a time
                    sha.update(mapped[at:at + MIB])
            finally:
                mapped.close()
        stats = m.stats()
    assert sha.hexdigest() == digest
    # A fault asks 64 KiB (the mount's read-ahead): ~830 reads without pushes, ~270 with them
    # (the pushes stop where prefetched bytes do, and the first MiB is copied backwards).
    check_counts(stats, hub, SIZE // (64 * 1024) // 2)
