"""One slow server must not wedge the mount. The CDN trickles one file at 2 bytes/s (never a
stall, never a delivery) while readers hammer it; meanwhile a healthy file of the same repo, on
the same CDN host, is read within 5 s, and listings and the stats file answer at once; a reader
blocked on the trickle dies within 2 s of SIGKILL; unmount or SIGTERM end the daemon within 5 s.

The grace period before a trickling transfer is abandoned is set far above these bounds
(HF_HUB_DOWNLOAD_TIMEOUT=60), so fairness and cancellation are what the test measures."""
import hashlib
import os
import signal
import subprocess
import sys
import time

import harness
from files import sha256_range
from harness import run_with_deadline

SLOW_NAME = "model-00001-of-00002.safetensors"
HEALTHY_NAME = "model-00002-of-00002.safetensors"
MIB = 1 << 20
LONG_GRACE = {"HF_HUB_DOWNLOAD_TIMEOUT": "60", "HUBFS_MAX_RETRIES": "0"}
SLOW = 2.0 if harness.SANITIZED else 1.0   # sanitizer builds run several times slower


def trickle(hub, name=SLOW_NAME):
    hub.emulator.config(fail_next=[{"match": name, "origin": "cdn", "action": "trickle", "bps": 2,
                                    "count": 1000000}])


READER = r"""
import mmap, os, sys
path, mode, offset = sys.argv[1], sys.argv[2], int(sys.argv[3])
fd = os.open(path, os.O_RDONLY)
if mode == "read":
    while True:
        if not os.pread(fd, 1 << 20, offset):
            break
        offset += 1 << 20
else:
    view = mmap.mmap(fd, 0, prot=mmap.PROT_READ)
    sum(view[offset:offset + (4 << 20):4096])
"""


def start_blocked_reader(path, mode="read", offset=0):
    """A reader of path that blocks on the trickle (in its open or its first read)."""
    return subprocess.Popen([sys.executable, "-c", READER, path, mode, str(offset)])


def kill_all(procs):
    for p in procs:
        if p.poll() is None:
            p.kill()
    for p in procs:
        p.wait(30)


def test_a_healthy_file_is_served_next_to_a_trickling_one(hub, figures):
    trickle(hub)
    m = harness.mount(hub, env=LONG_GRACE)
    m.start()
    readers = []
    try:
        slow_path = os.path.join(m.path, "rel/small", SLOW_NAME)
        size = os.path.getsize(slow_path)
        # Readers all over the slow file: sequential streams, page faults, many requests in flight.
        for i in range(6):
            readers.append(start_blocked_reader(slow_path, "read", i * size // 6))
        for i in range(4):
            readers.append(start_blocked_reader(slow_path, "mmap", (2 * i + 1) * size // 9 & ~4095))
        time.sleep(1.5)
        assert all(p.poll() is None for p in readers), "the trickling file was not holding its readers"

        healthy = os.path.join(m.path, "rel/small", HEALTHY_NAME)
        source = os.path.join(hub.sources["rel/small"], HEALTHY_NAME)
        for offset in (0, os.path.getsize(source) // 2):
            started = time.monotonic()
            with open(healthy, "rb") as f:
                f.seek(offset)
                got = hashlib.sha256(f.read(MIB)).hexdigest()
            took = time.monotonic() - started
            assert got == sha256_range(source, offset, MIB)
            assert took < 5.0 * SLOW, f"1 MiB of a healthy file took {took:.1f} s next to a trickle"
        for command in (["ls", "-l", os.path.join(m.path, "rel/small")],
                        ["cat", os.path.join(m.path, ".hubfs/stats")]):
            done, took = run_with_deadline(command, 10, figures)
            assert done.returncode == 0 and took < 2.0 * SLOW, (command, took, done.stderr)
    finally:
        kill_all(readers)
        m.cleanup()


def test_a_reader_blocked_on_a_trickle_dies_when_killed(hub):
    trickle(hub)
    with harness.mount(hub, env=LONG_GRACE) as m:
        slow_path = os.path.join(m.path, "rel/small", SLOW_NAME)
        middle = os.path.getsize(slow_path) // 2 & ~4095   # sanitizer runs use a smaller model
        for mode in ("read", "mmap"):
            proc = start_blocked_reader(slow_path, mode, middle)
            time.sleep(1.0)
            assert proc.poll() is None, "the reader was not blocked"
            started = time.monotonic()
            proc.kill()
            proc.wait(30)
            took = time.monotonic() - started
            assert took < 2.0 * SLOW, f"a killed {mode} reader took {took:.1f} s to die"


def test_unmount_and_sigterm_end_the_daemon_despite_trickling_transfers(hub):
    trickle(hub)
    for how in ("unmount", "sigterm"):
        m = harness.mount(hub, env=LONG_GRACE)
        m.start()
        try:
            slow_path = os.path.join(m.path, "rel/small", SLOW_NAME)
            reader = start_blocked_reader(slow_path, "read", 0)
            time.sleep(1.0)
            if how == "unmount":
                reader.kill()
                reader.wait(30)
                started = time.monotonic()
                done = subprocess.run(["fusermount3", "-u", m.path], capture_output=True, text=True)
                assert done.returncode == 0, done.stderr
            else:
                started = time.monotonic()
                m.signal(signal.SIGTERM)
            m.proc.wait(30)
            took = time.monotonic() - started
            assert m.proc.returncode == 0, m.log_text()[-2000:]
            assert took < 5.0 * SLOW, f"the daemon took {took:.1f} s to exit after {how}"
            if how == "sigterm":   # the blocked reader gets an error, not a hang
                reader.wait(10)
                assert reader.returncode != 0
        finally:
            m.cleanup()
