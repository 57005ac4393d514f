"""Each connection of the mount asks for a fixed socket receive buffer (--receive-buffer), and only
where the kernel grants it whole: seen from outside, in the kernel's own socket table (`ss -tm`,
whose rb is the buffer the kernel set: twice what was asked)."""
import hashlib
import os
import re
import subprocess
import sys
import threading
import time

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fs_support import MIB, one_random_file_hub  # noqa: E402
from mount import Mount  # noqa: E402

REPO = "test-org/buffered"
SIZE = 6 * MIB
PACE_BPS = 2 * MIB        # each response's pace: the read lasts seconds, its connections stay open
DEFAULT_ASK = 4 * MIB     # HUB_RECEIVE_BUFFER_DEFAULT (hub/hub.h)


@pytest.fixture(scope="module")
def paced_hub(tmp_path_factory):
    with one_random_file_hub(tmp_path_factory, REPO, "weights.bin", SIZE, seed=11) as (hub, digest):
        hub.config(bandwidth_bps=PACE_BPS)
        yield hub, digest


def receive_buffers(pid):
    """rb of every TCP socket the process holds (connected or not)."""
    out = subprocess.run(["ss", "-tanmpH"], capture_output=True, text=True, check=True).stdout
    buffers, owner = [], None
    for line in out.splitlines():
        if not line.startswith((" ", "\t")):
            owner = f"pid={pid}," in line
        elif owner and (m := re.search(r"\brb(\d+)", line)):
            buffers.append(int(m.group(1)))
    return buffers


def buffers_while_reading(hub, extra_args):
    """The daemon's sockets' receive buffers, looked at while a paced read of the file runs; the
    read's sha256, for the bytes."""
    with Mount(hub.hub_url, extra_args=["--no-disk-cache", *extra_args]) as m:
        sha, done = hashlib.sha256(), threading.Event()

        def read_all():
            with open(os.path.join(m.path, REPO, "weights.bin"), "rb") as f:
                while chunk := f.read(MIB):
                    sha.update(chunk)
            done.set()

        reader = threading.Thread(target=read_all)
        reader.start()
        seen = []
        deadline = time.monotonic() + 20
        while not seen and not done.is_set() and time.monotonic() < deadline:
            time.sleep(0.1)
            seen = receive_buffers(m.pid)
        reader.join(60)
        assert done.is_set()
    return seen, sha.hexdigest()


def rmem_max():
    with open("/proc/sys/net/core/rmem_max") as f:
        return int(f.read())


def test_connections_get_the_buffer_asked(paced_hub):
    hub, digest = paced_hub
    asked = 100 * 1024   # under rmem_max everywhere (Debian's default: 208 KiB)
    assert rmem_max() >= asked
    seen, read_digest = buffers_while_reading(hub, ["--receive-buffer", "100K"])
    assert read_digest == digest
    assert seen and all(rb == 2 * asked for rb in seen), seen


def test_zero_leaves_the_kernel_sizing_the_buffer(paced_hub):
    hub, digest = paced_hub
    seen, read_digest = buffers_while_reading(hub, ["--receive-buffer", "0"])
    assert read_digest == digest
    assert seen and all(rb not in (2 * 100 * 1024, 2 * DEFAULT_ASK) for rb in seen), seen


def test_the_default_is_asked_only_where_the_kernel_grants_it_whole(paced_hub):
    hub, digest = paced_hub
    seen, read_digest = buffers_while_reading(hub, [])
    assert read_digest == digest
    assert seen
    if rmem_max() >= DEFAULT_ASK:
        assert all(rb == 2 * DEFAULT_ASK for rb in seen), seen
    else:   # asked anyway, the kernel would have capped it at twice rmem_max, autotuning gone
        assert all(rb != 2 * rmem_max() for rb in seen), seen
