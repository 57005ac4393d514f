"""Malformed safetensors files and model directories, each written to disk and run through
`hubfs inspect` (and `hubfs load`): a non-zero exit, a message naming the file and what is
wrong, and never a crash (the sanitizer build runs these too)."""
import json
import os
import struct
import subprocess

import numpy as np
import pytest

from loader_models import write_safetensors

HUBFS = os.environ["HUBFS_BIN"]


def st_bytes(header, data=b"", length=None):
    """A safetensors file: `header` (a dict, or raw JSON text/bytes) and `data`."""
    if isinstance(header, dict):
        header = json.dumps(header)
    if isinstance(header, str):
        header = header.encode()
    return struct.pack("<Q", len(header) if length is None else length) + header + data


def entry(dtype="F32", shape=(1,), offsets=(0, 4)):
    return {"dtype": dtype, "shape": list(shape), "data_offsets": list(offsets)}


CASES = {
    "empty": (b"", "shorter than the 8-byte header length"),
    "seven-bytes": (b"\x02\x00\x00\x00\x00\x00\x00", "shorter than the 8-byte header length"),
    "length-beyond-file": (st_bytes("{}", length=1000), "beyond the end of the file"),
    "length-beyond-cap": (st_bytes("{}", length=100_000_001), "exceeds the limit of 100000000"),
    "length-max-u64": (st_bytes("{}", length=2**64 - 1), "exceeds the limit"),
    "not-json": (st_bytes("{abc"), "not valid JSON"),
    "array-header": (st_bytes("[1, 2]"), "not a JSON object"),
    "string-header": (st_bytes('  "x"'), "not a JSON object"),
    "trailing-garbage": (st_bytes('{"a": ' + json.dumps(entry()) + "} x", b"\0" * 4), "trailing bytes"),
    "nul-padding": (st_bytes(b"{}\0\0\0\0\0\0"), "control character"),
    "invalid-utf8": (st_bytes(b'{"\xff\xfe": {}}'), "not valid UTF-8"),
    "deep-nesting": (st_bytes('{"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4], "x": '
                              + "[" * 5000 + "]" * 5000 + "}}", b"\0" * 4), "not valid JSON"),
    "entry-not-object": (st_bytes({"w": [1, 2]}), "tensor 'w': entry is not an object"),
    "dtype-not-string": (st_bytes({"w": entry(dtype=7)}, b"\0" * 4), "tensor 'w': dtype is not a string"),
    "shape-not-array": (st_bytes({"w": {"dtype": "F32", "shape": 4, "data_offsets": [0, 4]}}, b"\0" * 4),
                        "tensor 'w': shape is not an array"),
    "offsets-not-pair": (st_bytes({"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4, 8]}}, b"\0" * 4),
                         "tensor 'w': data_offsets is not [begin, end]"),
    "missing-shape": (st_bytes({"w": {"dtype": "F32", "data_offsets": [0, 4]}}, b"\0" * 4),
                      "tensor 'w': missing 'shape'"),
    "unknown-dtype": (st_bytes({"w": entry(dtype="Q8")}, b"\0" * 4), "tensor 'w': unknown dtype 'Q8'"),
    "negative-shape": (st_bytes({"w": entry(shape=(-1,))}, b"\0" * 4), "tensor 'w': shape[0]"),
    "fractional-shape": (st_bytes({"w": entry(shape=(0.5,))}, b"\0" * 4), "tensor 'w': shape[0]"),
    "overflowing-shape": (st_bytes({"w": entry(shape=(2**31, 2**31, 2**31))}, b"\0" * 4), "overflows"),
    "huge-offset": (st_bytes({"w": entry(offsets=(2**60, 2**60 + 4))}, b"\0" * 4), "data_offsets"),
    "offsets-reversed": (st_bytes({"w": entry(offsets=(4, 0))}, b"\0" * 4), "before begin"),
    "offsets-not-shape-size": (st_bytes({"w": entry(shape=(2,), offsets=(0, 4))}, b"\0" * 4),
                               "tensor 'w': data_offsets span 4 bytes but shape × F32 needs 8"),
    "overlapping": (st_bytes({"a": entry(shape=(2,), offsets=(0, 8)), "b": entry(offsets=(4, 8))}, b"\0" * 8),
                    "overlap"),
    "hole": (st_bytes({"a": entry(offsets=(0, 4)), "b": entry(offsets=(8, 12))}, b"\0" * 12),
             "tensor 'b': hole of 4 bytes"),
    "out-of-range": (st_bytes({"a": entry(offsets=(0, 4)), "b": entry(offsets=(4, 8))}, b"\0" * 6),
                     "beyond the data buffer of 6 bytes"),
    "data-left-over": (st_bytes({"a": entry()}, b"\0" * 10), "data buffer is 10 bytes"),
    "duplicate-names": (st_bytes('{"a": ' + json.dumps(entry()) + ', "a": ' + json.dumps(entry(offsets=(4, 8))) + "}",
                                 b"\0" * 8), "key 'a' appears twice"),
    "metadata-not-strings": (st_bytes({"__metadata__": {"format": "pt", "step": 3}}), "__metadata__ value of 'step'"),
    "packed-not-whole-bytes": (st_bytes({"w": entry(dtype="F4", shape=(3,), offsets=(0, 2))}, b"\0" * 2),
                               "do not fill whole bytes"),
}


def run(*args):
    return subprocess.run([HUBFS, *args], capture_output=True, text=True, timeout=60)


def assert_clean_failure(result, path, fragment):
    assert "Sanitizer" not in result.stderr, result.stderr
    assert result.returncode == 1, (result.returncode, result.stderr)
    assert path in result.stderr and fragment in result.stderr, result.stderr


@pytest.mark.parametrize("case", sorted(CASES))
def test_malformed_file_is_refused(tmp_path, case):
    content, fragment = CASES[case]
    path = str(tmp_path / f"{case}.safetensors")
    with open(path, "wb") as f:
        f.write(content)
    assert_clean_failure(run("inspect", path), path, fragment)
    assert_clean_failure(run("inspect", path, "--json"), path, fragment)
    assert_clean_failure(run("load", path, "--tp", "2", "--rank", "1"), path, fragment)


def test_the_cases_are_otherwise_valid(tmp_path):
    """Guards the corpus itself: the same shapes, made right, are accepted."""
    path = str(tmp_path / "ok.safetensors")
    with open(path, "wb") as f:
        f.write(st_bytes({"__metadata__": {"format": "pt"}, "a": entry(offsets=(0, 4)),
                          "b": entry(offsets=(4, 8)), "p": entry(dtype="F4", shape=(4,), offsets=(8, 10))},
                         b"\0" * 10))
    assert run("inspect", path).returncode == 0


def sharded(tmp_path, weight_map, shards=("a.safetensors",)):
    directory = tmp_path / "model"
    directory.mkdir()
    for shard in shards:
        write_safetensors(str(directory / shard), {"w": ("U8", np.zeros(4, "uint8"))})
    (directory / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    return str(directory)


@pytest.mark.parametrize("weight_map,fragment", [
    ({"w": "a.safetensors", "missing": "a.safetensors"}, "weight_map puts 'missing' in a.safetensors"),
    ({"w": "../a.safetensors"}, "shard '../a.safetensors' is not a plain file name"),
    ({"w": "sub/a.safetensors"}, "shard 'sub/a.safetensors' is not a plain file name"),
    ({"w": ".."}, "is not a plain file name"),
    ({"w": 3}, "is not a file name"),
    ({"w": "b.safetensors"}, "b.safetensors: No such file"),
])
def test_bad_index_is_refused(tmp_path, weight_map, fragment):
    directory = sharded(tmp_path, weight_map)
    result = run("inspect", directory)
    assert_clean_failure(result, "", fragment)


def test_tensor_in_two_shards_is_refused(tmp_path):
    directory = sharded(tmp_path, {}, shards=("a.safetensors", "b.safetensors"))
    with open(os.path.join(directory, "model.safetensors.index.json"), "w") as f:
        f.write('{"weight_map": {"w": "a.safetensors", "w": "b.safetensors"}}')
    result = run("inspect", directory)
    assert_clean_failure(result, "", "tensor 'w' is in both a.safetensors and b.safetensors")


def test_directory_without_weights_and_missing_path(tmp_path):
    assert_clean_failure(run("inspect", str(tmp_path)), str(tmp_path), "no model.safetensors.index.json")
    missing = str(tmp_path / "nope.safetensors")
    assert_clean_failure(run("inspect", missing), missing, "No such file")


def test_a_fifo_is_refused_without_hanging(tmp_path):
    fifo = str(tmp_path / "model.safetensors")
    os.mkfifo(fifo)
    assert_clean_failure(run("inspect", fifo), fifo, "not a regular file")
    assert_clean_failure(run("inspect", str(tmp_path)), fifo, "not a regular file")


def test_bad_config_json_is_refused(tmp_path):
    write_safetensors(str(tmp_path / "model.safetensors"), {"w": ("F32", np.zeros(2, "float32"))})
    (tmp_path / "config.json").write_text("{not json")
    assert_clean_failure(run("load", str(tmp_path)), "config.json", "not a JSON object")
