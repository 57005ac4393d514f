"""Reuse of the huggingface_hub cache: a cache directory laid out by hand the way
huggingface_hub lays it out (blobs named by sha256 / git sha1 of their content, snapshot
symlinks, refs), checked with huggingface_hub's own scan_cache_dir, then read block by block
through the disk cache. The reference for every byte is the file content itself (hashlib for
the names).

Nothing there is trusted: a blob is used only from the folder of the repo being read, only when
it is a plain file owned by us or root and writable by nobody else, reached through directories
nobody else controls, and only once its content hashes to its name."""
import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from huggingface_hub import scan_cache_dir

BLOCK_SIZE = 64 * 1024
NOBODY = 65534
TOY = "models--org--toy"
ROWS = "datasets--org--rows"
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


def read_block(cache_dir, hub_cache, etag, size, index, folder=TOY):
    result = probe("read", cache_dir, hub_cache, folder, etag, size, BLOCK_SIZE, index)
    assert result.returncode in (0, 3), result.stderr
    return result.stdout if result.returncode == 0 else None


def cached_bytes(cache_dir, hub_cache, etag, size, folder=TOY):
    return int(probe("cached-bytes", cache_dir, hub_cache, folder, etag, size, BLOCK_SIZE).stdout)


def counters(cache_dir, hub_cache, etag, size, folder=TOY):
    """Reads the whole blob twice in one process; the cache's counters then."""
    result = probe("counters", cache_dir, hub_cache, folder, etag, size, BLOCK_SIZE)
    assert result.returncode == 0, result.stderr
    return {k: int(v) for k, v in (line.split("=") for line in result.stdout.decode().split())}


def folder_of(name):
    return ROWS if name == "data" else TOY


def test_layout_is_what_huggingface_hub_expects(hub):
    hub_cache, files, _ = hub
    info = scan_cache_dir(hub_cache)
    assert not info.warnings
    assert {repo.repo_id for repo in info.repos} == {"org/toy", "org/rows"}
    blob_paths = {f.blob_path.name for repo in info.repos for rev in repo.revisions for f in rev.files}
    assert blob_paths == {etag for _, etag in files.values()}


def test_blocks_are_served_from_the_hub_cache(hub):
    hub_cache, files, cache_dir = hub
    for name, (content, etag) in files.items():
        blocks = (len(content) + BLOCK_SIZE - 1) // BLOCK_SIZE
        for index in range(blocks):
            expected = content[index * BLOCK_SIZE:(index + 1) * BLOCK_SIZE]
            assert read_block(cache_dir, hub_cache, etag, len(content), index, folder_of(name)) == expected
        assert cached_bytes(cache_dir, hub_cache, etag, len(content), folder_of(name)) == len(content)
        # Hashed once, however many reads (both passes of the whole blob).
        seen = counters(cache_dir, hub_cache, etag, len(content), folder_of(name))
        assert seen == {"served": len(content), "hf_blobs_verified": 1, "hf_blobs_rejected": 0}
    # Nothing was copied into our own cache: it is served in place.
    assert not [p for p in cache_dir.iterdir() if p.suffix in (".data", ".index")]


def test_mismatches_are_not_served(hub):
    hub_cache, files, cache_dir = hub
    content, etag = files["weights"]
    # The right etag with another size: not this blob.
    assert read_block(cache_dir, hub_cache, etag, len(content) + 1, 0) is None
    # An etag nobody has.
    assert read_block(cache_dir, hub_cache, "c" * 64, len(content), 0) is None
    # No huggingface_hub cache configured, or no repo folder given.
    assert read_block(cache_dir, "-", etag, len(content), 0) is None
    assert read_block(cache_dir, hub_cache, etag, len(content), 0, "-") is None
    # An incomplete download (huggingface_hub writes blobs/<etag>.incomplete first).
    partial = os.urandom(BLOCK_SIZE)
    partial_etag = hashlib.sha256(partial).hexdigest()
    blobs = hub_cache / "models--org--toy" / "blobs"
    (blobs / f"{partial_etag}.incomplete").write_bytes(partial[:1000])
    assert read_block(cache_dir, hub_cache, partial_etag, len(partial), 0) is None
    # A blob truncated after the fact (wrong size on disk) is refused too.
    (blobs / etag).write_bytes(content[:BLOCK_SIZE])
    assert read_block(cache_dir, hub_cache, etag, len(content), 0) is None
    assert cached_bytes(cache_dir, hub_cache, etag, len(content)) == 0


def test_etags_are_never_used_as_paths(hub):
    hub_cache, files, cache_dir = hub
    content, etag = files["data"]
    # A path-like etag must not reach the blob through "..".
    sneaky = f"../models--org--toy/blobs/{etag}"
    assert read_block(cache_dir, hub_cache, sneaky, len(content), 0, ROWS) is None
    assert read_block(cache_dir, hub_cache, etag.upper(), len(content), 0, ROWS) is None
    # Nor are repo folders: only one component named like huggingface_hub's.
    for folder in ("..", f"{ROWS}/../{ROWS}", "org--rows", ""):
        assert read_block(cache_dir, hub_cache, etag, len(content), 0, folder or "-") is None


def test_a_blob_is_used_only_from_its_repos_folder(hub):
    hub_cache, files, cache_dir = hub
    content, etag = files["weights"]
    # The same name in another repo's folder, with other bytes of the same size: the attack is
    # to plant it there and have it served as this repo's file.
    planted = hub_cache / "models--evil--x" / "blobs"
    planted.mkdir(parents=True)
    (planted / etag).write_bytes(os.urandom(len(content)))
    assert read_block(cache_dir, hub_cache, etag, len(content), 0, "models--org--other") is None
    assert cached_bytes(cache_dir, hub_cache, etag, len(content), "models--org--other") == 0
    # Even the genuine blob of another repo is not looked for.
    assert read_block(cache_dir, hub_cache, etag, len(content), 0, ROWS) is None
    assert read_block(cache_dir, hub_cache, etag, len(content), 0, TOY) == content[:BLOCK_SIZE]


@pytest.mark.parametrize("name", ["weights", "config"])   # sha256 and git blob sha1 names
def test_a_blob_not_matching_its_name_is_never_served(hub, name):
    hub_cache, files, cache_dir = hub
    content, etag = files[name]
    wrong = bytearray(content)
    wrong[len(wrong) // 2] ^= 1                               # same size, one bit off
    (hub_cache / TOY / "blobs" / etag).write_bytes(bytes(wrong))
    for index in range((len(content) + BLOCK_SIZE - 1) // BLOCK_SIZE):
        assert read_block(cache_dir, hub_cache, etag, len(content), index) is None
    seen = counters(cache_dir, hub_cache, etag, len(content))
    assert seen == {"served": 0, "hf_blobs_verified": 0, "hf_blobs_rejected": 1}
    # Put right, it is served again: the verdict was about the other version of the file.
    (hub_cache / TOY / "blobs" / etag).write_bytes(content)
    assert read_block(cache_dir, hub_cache, etag, len(content), 0) == content[:BLOCK_SIZE]


def test_a_symlinked_blob_is_not_followed(hub, tmp_path):
    hub_cache, files, cache_dir = hub
    content, etag = files["weights"]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.write_bytes(content)                            # even with the right bytes
    blob = hub_cache / TOY / "blobs" / etag
    blob.unlink()
    blob.symlink_to(elsewhere)
    assert read_block(cache_dir, hub_cache, etag, len(content), 0) is None
    assert cached_bytes(cache_dir, hub_cache, etag, len(content)) == 0


def test_blobs_others_could_change_are_not_used(hub):
    hub_cache, files, cache_dir = hub
    content, etag = files["weights"]
    blobs = hub_cache / TOY / "blobs"
    blob = blobs / etag

    def served():
        return read_block(cache_dir, hub_cache, etag, len(content), 0) == content[:BLOCK_SIZE]

    assert served()
    os.chmod(blob, 0o664)                                     # group-writable blob
    assert not served()
    os.chmod(blob, 0o644)
    os.chown(blob, NOBODY, NOBODY)                            # another user's blob
    assert not served()
    os.chown(blob, 0, 0)
    os.chmod(blobs, 0o777)                                    # anyone may swap it
    assert not served()
    os.chmod(blobs, 0o755)
    os.chown(hub_cache / TOY, NOBODY, NOBODY)                 # another user's repo folder
    assert not served()
    os.chown(hub_cache / TOY, 0, 0)
    assert served()
    # The repo folder replaced by another user's symlink to a folder holding the genuine blob.
    real = hub_cache / "real-toy"
    shutil.move(hub_cache / TOY, real)
    (hub_cache / TOY).symlink_to(real)
    os.lchown(hub_cache / TOY, NOBODY, NOBODY)
    assert not served()
    os.lchown(hub_cache / TOY, 0, 0)                          # our own symlink is fine
    assert served()
