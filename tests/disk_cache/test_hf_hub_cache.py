"""Reuse of the huggingface_hub cache: a cache directory laid out by hand the way
huggingface_hub lays it out (blobs named by sha256 / git sha1 of their content, snapshot
symlinks, refs), checked with huggingface_hub's own scan_cache_dir, then read block by block
through the disk cache. The reference for every byte is the file content itself."""
import hashlib
import os
import subprocess
from pathlib import Path

import pytest
from huggingface_hub import scan_cache_dir

BLOCK_SIZE = 64 * 1024
PROBE = Path(os.environ.get("HUBFS_BUILD_DIR", "build")) / "tests" / "disk_cache" / "disk_cache_probe"


def git_blob_sha1(content: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


def add_file(hub_cache: Path, repo_folder: str, commit: str, name: str, content: bytes, etag: str):
    repo = hub_cache / repo_folder
    (repo / "blobs").mkdir(parents=True, exist_ok=True)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True, exist_ok=True)
    (repo / "blobs" / etag).write_bytes(content)
    (snapshot / name).symlink_to(Path("..") / ".." / "blobs" / etag)


@pytest.fixture
def hub(tmp_path):
    """Two repos (a model and a dataset): an LFS weight file and a small git file."""
    hub_cache = tmp_path / "hub"
    weights = os.urandom(5 * BLOCK_SIZE + 777)
    config = b'{"model_type": "toy"}\n'
    data = os.urandom(BLOCK_SIZE // 2)
    files = {
        "weights": (weights, hashlib.sha256(weights).hexdigest()),
        "config": (config, git_blob_sha1(config)),
        "data": (data, hashlib.sha256(data).hexdigest()),
    }
    add_file(hub_cache, "models--org--toy", "a" * 40, "model.safetensors", *files["weights"])
    add_file(hub_cache, "models--org--toy", "a" * 40, "config.json", *files["config"])
    add_file(hub_cache, "datasets--org--rows", "b" * 40, "rows.bin", *files["data"])
    return hub_cache, files, tmp_path / "cache"


def probe(*args):
    return subprocess.run([str(PROBE), *map(str, args)], capture_output=True, timeout=30)


def read_block(cache_dir, hub_cache, etag, size, index):
    result = probe("read", cache_dir, hub_cache, etag, size, BLOCK_SIZE, index)
    assert result.returncode in (0, 3), result.stderr
    return result.stdout if result.returncode == 0 else None


def test_layout_is_what_huggingface_hub_expects(hub):
    hub_cache, files, _ = hub
    info = scan_cache_dir(hub_cache)
    assert not info.warnings
    assert {repo.repo_id for repo in info.repos} == {"org/toy", "org/rows"}
    blob_paths = {f.blob_path.name for repo in info.repos for rev in repo.revisions for f in rev.files}
    assert blob_paths == {etag for _, etag in files.values()}


def test_blocks_are_served_from_the_hub_cache(hub):
    hub_cache, files, cache_dir = hub
    for content, etag in files.values():
        blocks = (len(content) + BLOCK_SIZE - 1) // BLOCK_SIZE
        for index in range(blocks):
            expected = content[index * BLOCK_SIZE:(index + 1) * BLOCK_SIZE]
            assert read_block(cache_dir, hub_cache, etag, len(content), index) == expected
        cached = probe("cached-bytes", cache_dir, hub_cache, etag, len(content), BLOCK_SIZE)
        assert int(cached.stdout) == len(content)
    # Nothing was copied into our own cache: it is served in place.
    assert not [p for p in cache_dir.iterdir() if p.suffix in (".data", ".index")]


def test_mismatches_are_not_served(hub):
    hub_cache, files, cache_dir = hub
    content, etag = files["weights"]
    # The right etag with another size: not this blob.
    assert read_block(cache_dir, hub_cache, etag, len(content) + 1, 0) is None
    # An etag nobody has.
    assert read_block(cache_dir, hub_cache, "c" * 64, len(content), 0) is None
    # No huggingface_hub cache configured.
    assert read_block(cache_dir, "-", etag, len(content), 0) is None
    # An incomplete download (huggingface_hub writes blobs/<etag>.incomplete first).
    partial = os.urandom(BLOCK_SIZE)
    partial_etag = hashlib.sha256(partial).hexdigest()
    blobs = hub_cache / "models--org--toy" / "blobs"
    (blobs / f"{partial_etag}.incomplete").write_bytes(partial[:1000])
    assert read_block(cache_dir, hub_cache, partial_etag, len(partial), 0) is None
    # A blob truncated after the fact (wrong size on disk) is refused too.
    (blobs / etag).write_bytes(content[:BLOCK_SIZE])
    assert read_block(cache_dir, hub_cache, etag, len(content), 0) is None
    cached = probe("cached-bytes", cache_dir, hub_cache, etag, len(content), BLOCK_SIZE)
    assert int(cached.stdout) == 0


def test_etags_are_never_used_as_paths(hub):
    hub_cache, files, cache_dir = hub
    content, etag = files["data"]
    # A path-like etag must not reach the blob through "..".
    sneaky = f"../models--org--toy/blobs/{etag}"
    assert read_block(cache_dir, hub_cache, sneaky, len(content), 0) is None
    assert read_block(cache_dir, hub_cache, etag.upper(), len(content), 0) is None
