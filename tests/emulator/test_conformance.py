"""The real huggingface_hub client, unchanged, against the emulator (HF_ENDPOINT pointed at it).

Each check runs the client in a fresh Python process: huggingface_hub reads HF_ENDPOINT, HF_HOME
and friends once, at import, exactly as a user's process would. Expected values come from the
source files (sha256, bytes) and from the safetensors package, never from the emulator.
"""
import hashlib
import json
import os
import random
import shutil
import subprocess
import sys
import textwrap
import time

import pytest
from safetensors import safe_open

import hubemu
from files import sha256_of  # noqa: E402

TINY = "test-org/tiny-llama"
SHARD = "model-00001-of-00003.safetensors"


def git_blob_sha1(path):
    with open(path, "rb") as f:
        data = f.read()
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def source_files(directory):
    out = []
    for dirpath, _, names in os.walk(directory):
        out += [os.path.relpath(os.path.join(dirpath, n), directory) for n in names]
    return sorted(out)


@pytest.fixture
def hf(hub, tmp_path):
    """run(code, token=None) -> the JSON the snippet printed via `emit(obj)` (last line)."""
    home = tmp_path / "hf-home"

    def run(code, token=None, expect_ok=True):
        env = hub.client_env(home, token=token)
        script = ("import json, sys\n"
                  "def emit(obj):\n    print('\\nRESULT ' + json.dumps(obj))\n"
                  + textwrap.dedent(code))
        result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                                text=True, timeout=120)
        lines = [l for l in result.stdout.splitlines() if l.startswith("RESULT ")]
        if expect_ok:
            assert result.returncode == 0 and lines, f"client failed:\n{result.stdout}\n{result.stderr}"
        return json.loads(lines[-1][7:]) if lines else None

    run.home = home
    return run


def test_hf_hub_download_small_and_lfs_files_match_the_source(hub, hf):
    src = hub.sources[TINY]
    got = hf(f"""
        from huggingface_hub import hf_hub_download
        emit([hf_hub_download({TINY!r}, name) for name in ("config.json", {SHARD!r})])
    """)
    assert sha256_of(got[0]) == sha256_of(os.path.join(src, "config.json"))
    assert sha256_of(got[1]) == sha256_of(os.path.join(src, SHARD))
    # The cache names blobs by ETag: git blob sha1 for small files, sha256 for LFS files.
    assert os.path.basename(os.path.realpath(got[0])) == git_blob_sha1(os.path.join(src, "config.json"))
    assert os.path.basename(os.path.realpath(got[1])) == sha256_of(os.path.join(src, SHARD))
    assert f"/snapshots/{hub.commits[TINY]}/" in got[1]
    cdn_gets = [e for e in hub.log() if e["origin"] == "cdn" and e["method"] == "GET"]
    assert cdn_gets and all(SHARD in e["path"] for e in cdn_gets)
    assert not any(e["authorization"] for e in cdn_gets)


def test_snapshot_download_reproduces_every_file(hub, hf):
    src = hub.sources[TINY]
    folder = hf(f"""
        from huggingface_hub import snapshot_download
        emit(snapshot_download({TINY!r}))
    """)
    assert source_files(folder) == source_files(src)
    for name in source_files(src):
        assert sha256_of(os.path.join(folder, name)) == sha256_of(os.path.join(src, name)), name


def test_dataset_download_and_tree(hub, hf):
    src = hub.sources["test-org/tiny-data"]
    got = hf("""
        from huggingface_hub import hf_hub_download, HfApi
        paths = [hf_hub_download("test-org/tiny-data", p, repo_type="dataset")
                 for p in ("data/train.jsonl", "data/embeddings.bin")]
        tree = [(e.path, type(e).__name__, getattr(e, "lfs", None) is not None)
                for e in HfApi().list_repo_tree("test-org/tiny-data", "data", repo_type="dataset")]
        emit({"paths": paths, "tree": sorted(tree)})
    """)
    assert sha256_of(got["paths"][0]) == sha256_of(os.path.join(src, "data/train.jsonl"))
    assert sha256_of(got["paths"][1]) == sha256_of(os.path.join(src, "data/embeddings.bin"))
    assert got["tree"] == [["data/embeddings.bin", "RepoFile", True],
                           ["data/test.jsonl", "RepoFile", False],
                           ["data/train.jsonl", "RepoFile", False]]


def test_revision_by_branch_tag_commit_and_slashed_branch(hub, hf, tmp_path):
    src = hub.sources[TINY]
    changed = tmp_path / "changed"
    shutil.copytree(src, changed)
    (changed / "config.json").write_text('{"changed": true}\n')
    first = hub.commits[TINY]
    second = hubemu.import_repo(hub.root, TINY, str(changed))
    assert second != first
    hub.move_branch(TINY, "feature/old-config", first)
    got = hf(f"""
        from huggingface_hub import hf_hub_download, HfApi
        api = HfApi()
        out = {{}}
        for rev in ("main", "v1.0", {first!r}, {second!r}, "feature/old-config"):
            out[rev] = [open(hf_hub_download({TINY!r}, "config.json", revision=rev)).read(),
                        api.repo_info({TINY!r}, revision=rev).sha]
        emit(out)
    """)
    original = open(os.path.join(src, "config.json")).read()
    assert got["main"] == ['{"changed": true}\n', second]
    assert got["v1.0"] == [original, first]
    assert got[first] == [original, first]
    assert got[second] == ['{"changed": true}\n', second]
    assert got["feature/old-config"] == [original, first]
    assert any("feature%2Fold-config" in e["path"] for e in hub.log())


def test_hffilesystem_range_reads_equal_source_bytes(hub, hf):
    src = hub.sources[TINY]
    size = os.path.getsize(os.path.join(src, SHARD))
    rng = random.Random(7)
    spans = [(0, 8), (size - 100, 100), (12345, 4096)] + [
        (o, rng.randint(1, 70000)) for o in (rng.randrange(size - 80000) for _ in range(5))]
    got = hf(f"""
        from huggingface_hub import HfFileSystem
        fs = HfFileSystem()
        out = []
        with fs.open({TINY + '/' + SHARD!r}, "rb", block_size=65536) as f:
            for off, n in {spans!r}:
                f.seek(off)
                out.append(f.read(n).hex())
        with fs.open({TINY + '/config.json'!r}, "rb") as f:
            f.seek(10)
            out.append(f.read(20).hex())
        emit(out)
    """)
    with open(os.path.join(src, SHARD), "rb") as f:
        data = f.read()
    for (off, n), hexdata in zip(spans, got):
        assert bytes.fromhex(hexdata) == data[off:off + n], (off, n)
    with open(os.path.join(src, "config.json"), "rb") as f:
        assert bytes.fromhex(got[-1]) == f.read()[10:30]
    ranged = [e for e in hub.log() if e["origin"] == "cdn" and e["range"]]
    assert ranged and all(e["status"] == 206 for e in ranged)


def test_get_safetensors_metadata_matches_the_index_and_the_files(hub, hf):
    src = hub.sources[TINY]
    got = hf(f"""
        from huggingface_hub import get_safetensors_metadata
        m = get_safetensors_metadata({TINY!r})
        emit({{"sharded": m.sharded, "metadata": m.metadata, "weight_map": m.weight_map,
              "files": {{name: {{t: [i.dtype, i.shape] for t, i in fm.tensors.items()}}
                        for name, fm in m.files_metadata.items()}}}})
    """)
    with open(os.path.join(src, "model.safetensors.index.json")) as f:
        index = json.load(f)
    assert got["sharded"] is True
    assert got["weight_map"] == index["weight_map"]
    assert int(got["metadata"]["total_size"]) == index["metadata"]["total_size"]
    for name, tensors in got["files"].items():
        with safe_open(os.path.join(src, name), "np") as f:
            expected = {t: ["BF16", list(f.get_slice(t).get_shape())] for t in f.keys()}
        assert tensors == expected, name


def test_listing_follows_pages(hub, hf):
    hub.config(page_size=3)
    src = hub.sources[TINY]
    got = hf(f"""
        from huggingface_hub import HfApi
        api = HfApi()
        emit({{"files": api.list_repo_files({TINY!r}),
              "tree": sorted(e.path for e in api.list_repo_tree({TINY!r}, recursive=True))}})
    """)
    assert sorted(got["files"]) == source_files(src)
    assert got["tree"] == source_files(src)
    pages = [e for e in hub.log() if "/tree/" in e["path"]]
    assert len(pages) >= 3 and sum("cursor=" in e["query"] for e in pages) >= 2


def test_private_repo_needs_the_token(hub, hf):
    code = """
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import HfHubHTTPError
        try:
            emit(["ok", open(hf_hub_download("test-org/private-llama", "config.json")).read()])
        except HfHubHTTPError as e:
            emit([type(e).__name__, e.response.status_code])
    """
    assert hf(code) == ["RepositoryNotFoundError", 401]
    # A token the Hub does not know is refused as such (before any good token fills the cache).
    assert hf(code, token="hf_wrong") == ["HfHubHTTPError", 401]
    with open(os.path.join(hub.sources["test-org/private-llama"], "config.json")) as f:
        assert hf(code, token=hub.token) == ["ok", f.read()]
    resolves = [e for e in hub.log() if "/resolve/" in e["path"]]
    assert [e["status"] for e in resolves[:2]] == [401, 401]


def test_gated_repo_raises_gated_error_without_access(hub, hf):
    code = """
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import GatedRepoError
        try:
            emit(["ok", open(hf_hub_download("test-org/gated-llama", "config.json")).read()])
        except GatedRepoError as e:
            emit(["GatedRepoError", e.response.status_code, str(e)])
    """
    denied = hf(code)
    assert denied[:2] == ["GatedRepoError", 403]
    assert "/test-org/gated-llama" in denied[2]
    with open(os.path.join(hub.sources["test-org/gated-llama"], "config.json")) as f:
        assert hf(code, token=hub.token) == ["ok", f.read()]
    got = hf(f"""
        from huggingface_hub import hf_hub_download
        emit(hf_hub_download("test-org/gated-llama", {SHARD!r}))
    """, token=hub.token)
    assert sha256_of(got) == sha256_of(os.path.join(hub.sources["test-org/gated-llama"], SHARD))
    # The client sends its token to the Hub and never to the CDN's origin.
    log = hub.log()
    assert any(e["authorization"] and e["status"] == 302 for e in log)
    assert [e["authorization"] for e in log if e["origin"] == "cdn"] == [False]


def test_missing_file_and_revision_raise_the_right_errors(hub, hf):
    got = hf(f"""
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import EntryNotFoundError, RevisionNotFoundError
        out = []
        for kwargs in ({{"filename": "nope.txt"}}, {{"filename": "config.json", "revision": "no-such"}}):
            try:
                hf_hub_download({TINY!r}, **kwargs)
                out.append("ok")
            except (EntryNotFoundError, RevisionNotFoundError) as e:
                out.append(type(e).__name__)
        emit(out)
    """)
    assert got == ["RemoteEntryNotFoundError", "RevisionNotFoundError"]


def test_client_follows_the_relative_resolve_cache_redirect(hub, hf):
    hub.config(resolve_cache_redirect=True)
    src = hub.sources[TINY]
    got = hf(f"""
        from huggingface_hub import hf_hub_download
        emit(hf_hub_download({TINY!r}, "tokenizer.json"))
    """)
    assert sha256_of(got) == sha256_of(os.path.join(src, "tokenizer.json"))
    statuses = [(e["path"].split("/")[1], e["status"]) for e in hub.log()]
    assert ("test-org", 307) in statuses and ("api", 200) in statuses


def test_list_models_and_datasets_by_author_follow_pages(hub, hf):
    """The listing API hubfs reads an org's directory from, as huggingface_hub reads it."""
    hub.config(page_size=1)
    code = """
        from huggingface_hub import HfApi
        api = HfApi()
        emit({"models": sorted(m.id for m in api.list_models(author="test-org")),
              "datasets": sorted(d.id for d in api.list_datasets(author="test-org")),
              "nobody": [m.id for m in api.list_models(author="no-such-org")],
              "first": [m.id for m in api.list_models(author="test-org", limit=1)]})
    """
    public = ["test-org/gated-llama", "test-org/tiny-llama"]
    assert hf(code) == {"models": public, "datasets": ["test-org/tiny-data"], "nobody": [],
                        "first": public[:1]}
    pages = [e for e in hub.log() if e["path"] == "/api/models"]
    assert sum("cursor=" in e["query"] for e in pages) >= 1
    assert all(e["status"] == 200 for e in pages)
    # A private repo is listed only to a token that can read it.
    assert hf(code, token=hub.token)["models"] == sorted(public + ["test-org/private-llama"])


def test_model_info_last_modified_is_the_date_of_the_commit_asked(hub, hf, tmp_path):
    """lastModified at a revision is that commit's date: the same at every call, and an older
    commit keeps its own after the branch moves (hubfs shows it as the files' mtime)."""
    first = hub.commits[TINY]
    changed = tmp_path / "changed"
    shutil.copytree(hub.sources[TINY], changed)
    (changed / "config.json").write_text('{"changed": true}\n')
    time.sleep(1.1)                                  # a later second than the first commit's
    second = hubemu.import_repo(hub.root, TINY, str(changed))
    code = f"""
        from huggingface_hub import HfApi
        api = HfApi()
        emit([int(api.model_info({TINY!r}, revision=rev).last_modified.timestamp())
              for rev in ({first!r}, {second!r}, "main", {first!r})])
    """
    dates = hf(code)

    def created(sha):
        path = os.path.join(hub.root, "models", TINY, "commits", sha + ".hashes.json")
        with open(path) as f:
            return int(json.load(f)["created"])
    assert dates == [created(first), created(second), created(second), created(first)]
    assert dates[0] < dates[1]
