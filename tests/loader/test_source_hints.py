"""The local-file source's hints, seen with strace in every thread: a load tells the kernel about
each of its data reads (POSIX_FADV_WILLNEED with the read's exact range, once, no later than the
read), and about nothing else, so a lazy mount sees the ranges coming; opening a file turns
read-ahead off (POSIX_FADV_RANDOM) so that reading a header pulls no weight bytes."""
import os
import re
import struct
import subprocess

import pytest

from loader_models import llama_config, llama_tensors, write_model

HUBFS = os.environ["HUBFS_BIN"]
CALL = re.compile(r"^(\d+\.\d+) (pread64|fadvise64)\(\d+<([^>]*)>, (.*)\) += (-?\d+)")


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    config = llama_config(layers=2, hidden=256, intermediate=512, vocab=1024, heads=8, kv_heads=2)
    directory = str(tmp_path_factory.mktemp("hints") / "model")
    write_model(directory, config, llama_tensors(config), shards=2)
    return directory


def traced_calls(tmp_path, *args):
    """(time, syscall, file name, arguments) of every pread64/fadvise64 of every thread."""
    out = tmp_path / "trace"
    result = subprocess.run(["strace", "-ff", "-ttt", "-y", "-qq", "-o", str(out), "-e", "trace=pread64,fadvise64",
                             HUBFS, *args], capture_output=True, text=True, timeout=120,
                            env={**os.environ, "ASAN_OPTIONS": "detect_leaks=0"})
    assert result.returncode == 0, result.stderr
    calls = []
    for trace in tmp_path.glob("trace.*"):
        for line in trace.read_text().splitlines():
            match = CALL.match(line)
            if match:
                calls.append((float(match[1]), match[2], os.path.basename(match[3]), match[4]))
    return sorted(calls)


def header_end(path):
    with open(path, "rb") as f:
        return 8 + struct.unpack("<Q", f.read(8))[0]


def test_every_planned_read_is_advised_once_before_it_happens(model, tmp_path):
    calls = traced_calls(tmp_path, "load", model, "--tp", "2", "--rank", "1", "--chunk-bytes", "65536")
    shards = sorted(n for n in os.listdir(model) if n.endswith(".safetensors"))
    for name in shards:
        end = header_end(os.path.join(model, name))
        reads, advised = [], []
        for when, syscall, file, args in calls:
            if file != name:
                continue
            if syscall == "pread64":
                count, offset = map(int, args.rsplit(", ", 2)[-2:])
                if offset >= end:  # the header reads come first and are not hints' business
                    reads.append((when, offset, count))
            else:
                offset, length, advice = args.split(", ")
                if advice == "POSIX_FADV_WILLNEED":
                    advised.append((when, int(offset), int(length)))
                else:
                    assert advice == "POSIX_FADV_RANDOM" and (offset, length) == ("0", "0"), args
        assert reads, name
        assert sorted((o, n) for _, o, n in advised) == sorted((o, n) for _, o, n in reads), name
        first_advice = {(o, n): when for when, o, n in advised}
        for when, offset, count in reads:
            assert first_advice[(offset, count)] <= when, (name, offset, count)
        assert all(o + n <= os.path.getsize(os.path.join(model, name)) for _, o, n in reads)

