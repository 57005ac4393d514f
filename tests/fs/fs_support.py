"""Helpers of the filesystem tests: hashing, source walks, safetensors headers, the emulator log."""
import contextlib
import hashlib
import json
import os
import shutil
import struct

import numpy as np
from files import sha256_of  # noqa: E402
import hubemu  # noqa: E402

TINY_REPO = "test-org/tiny-llama"
PRIVATE_REPO = "test-org/private-llama"
GATED_REPO = "test-org/gated-llama"
DATASET_REPO = "test-org/tiny-data"
SANITIZED = os.environ.get("HUBFS_SANITIZED") == "1"
MIB = 1024 * 1024


def git_blob_sha1(data):
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def relative_files(root):
    found = []
    for dirpath, _, filenames in os.walk(root):
        for name in filenames:
            found.append(os.path.relpath(os.path.join(dirpath, name), root))
    return sorted(found)


def safetensors_header(path):
    """(header length N, header dict) read from a local file."""
    with open(path, "rb") as f:
        (length,) = struct.unpack("<Q", f.read(8))
        return length, json.loads(f.read(length))


def bytes_sent(log, origin=None):
    return sum(e.get("bytes_sent") or 0 for e in log if origin is None or e["origin"] == origin)


def data_requests(log):
    """Requests for file content: CDN range reads and Hub resolve calls."""
    return [e for e in log if e["origin"] == "cdn" or "/resolve/" in e["path"]]


@contextlib.contextmanager
def one_random_file_hub(tmp_path_factory, repo, name, size, seed):
    """An emulator serving repo with one file of size random bytes; yields (hub, the file's sha256)."""
    source = str(tmp_path_factory.mktemp("random-src"))
    blob = np.random.default_rng(seed).integers(0, 256, size, dtype=np.uint8).tobytes()
    with open(os.path.join(source, name), "wb") as f:
        f.write(blob)
    root = str(tmp_path_factory.mktemp("random-hub"))
    hubemu.import_repo(root, repo, source)
    try:
        with hubemu.Emulator(root) as hub:
            yield hub, hashlib.sha256(blob).hexdigest()
    finally:
        shutil.rmtree(root, ignore_errors=True)
        shutil.rmtree(source, ignore_errors=True)
