"""Reads files through a hubfs mount and compares every byte with the source files, in a child
process, so that the test can put a deadline on it (a read stuck in FUSE cannot be interrupted
from a thread, but a process can be killed).

    python3 reader.py < spec.json  →  one JSON object on stdout

spec: {"pairs": [[mounted_path, source_path], ...], "mode": "seq" | "random" | "mmap" | "mixed",
       "chunk": bytes, "threads": N, "seconds": S (mixed mode: run until then),
       "pause_s": pause between chunks (seq), "seed": int}

Every read is compared with the source at the same offset; a read that fails records its errno
name. Per file (seq mode): "sha256" of what the mount returned and "source_sha256" computed
from the source file, independently of the comparison.
"""
import errno
import hashlib
import json
import mmap
import os
import random
import sys
import threading
import time


def count_wrong(got, want):
    if got == want:
        return 0
    n = min(len(got), len(want))
    wrong = sum(1 for a, b in zip(got[:n], want[:n]) if a != b)
    return wrong + abs(len(got) - len(want))


class Totals:
    def __init__(self):
        self.lock = threading.Lock()
        self.bytes = 0
        self.wrong = 0
        self.reads = 0
        self.errors = {}

    def add(self, nbytes, wrong):
        with self.lock:
            self.bytes += nbytes
            self.wrong += wrong
            self.reads += 1

    def error(self, err):
        name = errno.errorcode.get(err.errno, str(err.errno)) if isinstance(err, OSError) else type(err).__name__
        with self.lock:
            self.errors[name] = self.errors.get(name, 0) + 1
        return name


def read_sequential(mounted, source, chunk, pause_s, totals):
    """Whole file front to back; returns the per-file result."""
    result = {"path": mounted, "bytes": 0, "wrong": 0, "error": None}
    got_hash = hashlib.sha256()
    try:
        with open(mounted, "rb", buffering=0) as m, open(source, "rb", buffering=0) as s:
            offset = 0
            while True:
                data = m.read(chunk)
                want = s.read(len(data)) if data else b""
                if not data:
                    if s.read(1):
                        result["wrong"] += 1        # the mount ended early
                    break
                wrong = count_wrong(data, want)
                result["wrong"] += wrong
                result["bytes"] += len(data)
                totals.add(len(data), wrong)
                got_hash.update(data)
                offset += len(data)
                if pause_s:
                    time.sleep(pause_s)
    except OSError as e:
        result["error"] = totals.error(e)
        return result
    with open(source, "rb") as s:
        result["source_sha256"] = hashlib.file_digest(s, "sha256").hexdigest() if hasattr(
            hashlib, "file_digest") else hashlib.sha256(s.read()).hexdigest()
    result["sha256"] = got_hash.hexdigest()
    return result


def read_random(mounted, source, chunk, count, rng, totals, use_mmap):
    size = os.path.getsize(source)
    if size == 0:
        return
    with open(mounted, "rb", buffering=0) as m, open(source, "rb", buffering=0) as s:
        mapped = mmap.mmap(m.fileno(), 0, prot=mmap.PROT_READ) if use_mmap else None
        try:
            for _ in range(count):
                length = rng.randint(1, min(chunk, size))
                offset = rng.randrange(0, size - length + 1)
                data = mapped[offset:offset + length] if mapped else os.pread(m.fileno(), length, offset)
                want = os.pread(s.fileno(), length, offset)
                totals.add(len(data), count_wrong(data, want))
        finally:
            if mapped:
                mapped.close()


def mixed_worker(pairs, spec, seed, deadline, totals):
    """Until the deadline: pick a file and a way of reading it (sequential, pread, mmap)."""
    rng = random.Random(seed)
    chunk = spec.get("chunk", 1 << 20)
    while time.time() < deadline:
        mounted, source = rng.choice(pairs)
        way = rng.choice(("seq", "random", "mmap"))
        try:
            if way == "seq":
                r = read_sequential(mounted, source, chunk, 0, totals)
                if r["error"]:
                    continue
                if r["sha256"] != r["source_sha256"]:
                    with totals.lock:
                        totals.wrong += max(1, r["wrong"])
            else:
                read_random(mounted, source, chunk, 16, rng, totals, way == "mmap")
        except (OSError, ValueError) as e:
            totals.error(e)
        if spec.get("drop_page_cache"):
            drop_page_cache(mounted)


def drop_page_cache(path):
    """So that the next read of this file reaches the daemon instead of the kernel's cache."""
    try:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)
    except OSError:
        pass


def main():
    spec = json.load(sys.stdin)
    pairs = spec["pairs"]
    mode = spec.get("mode", "seq")
    totals = Totals()
    started = time.time()
    files = []
    if mode == "seq":
        for mounted, source in pairs:
            files.append(read_sequential(mounted, source, spec.get("chunk", 1 << 20),
                                         spec.get("pause_s", 0), totals))
    elif mode in ("random", "mmap"):
        rng = random.Random(spec.get("seed", 0))
        for mounted, source in pairs:
            try:
                read_random(mounted, source, spec.get("chunk", 1 << 20), spec.get("count", 64),
                            rng, totals, mode == "mmap")
            except OSError as e:
                totals.error(e)
    elif mode == "mixed":
        deadline = started + spec["seconds"]
        threads = [threading.Thread(target=mixed_worker,
                                    args=(pairs, spec, spec.get("seed", 0) * 1000 + i, deadline, totals))
                   for i in range(spec.get("threads", 1))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    else:
        raise SystemExit(f"unknown mode {mode}")
    json.dump({"files": files, "bytes": totals.bytes, "wrong": totals.wrong, "reads": totals.reads,
               "errors": totals.errors, "seconds": time.time() - started}, sys.stdout)


if __name__ == "__main__":
    main()
