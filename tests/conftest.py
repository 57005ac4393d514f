"""Fixtures shared by every pytest file under tests/: a generated tiny model and a running Hub
emulator that serves it (see tests/support/hubemu.py and scripts/README.md)."""
import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "support"))

import hubemu  # noqa: E402

HUB_TOKEN = "hf_test_token"
TINY_REPO = "test-org/tiny-llama"
PRIVATE_REPO = "test-org/private-llama"
GATED_REPO = "test-org/gated-llama"
DATASET_REPO = "test-org/tiny-data"


def _write_dataset(path):
    """A small dataset: git files in a sub-directory plus one LFS (.bin) file."""
    os.makedirs(os.path.join(path, "data"), exist_ok=True)
    with open(os.path.join(path, "README.md"), "w") as f:
        f.write("---\nlicense: mit\n---\n# tiny-data\nRows for hubfs tests.\n")
    for split, rows in (("train", 64), ("test", 16)):
        with open(os.path.join(path, "data", f"{split}.jsonl"), "w") as f:
            for i in range(rows):
                f.write(f'{{"id": {i}, "text": "{split} row {i}"}}\n')
    with open(os.path.join(path, "data", "embeddings.bin"), "wb") as f:
        f.write(bytes((i * 7 + 3) % 251 for i in range(65536)))


@pytest.fixture(scope="session")
def tiny_model():
    """Path of a generated tiny Llama (bf16, 3 shards + index, seed 0)."""
    return hubemu.cached_model(preset="tiny", shards=3, seed=0)


@pytest.fixture(scope="session")
def tiny_dataset():
    path = os.path.join(hubemu.session_dir(), "tiny-data")
    if not os.path.isdir(path):
        _write_dataset(path)
    return path


@pytest.fixture(scope="session")
def hub_session(tiny_model, tiny_dataset, tmp_path_factory):
    root = str(tmp_path_factory.mktemp("hub-root"))
    commits = {
        TINY_REPO: hubemu.import_repo(root, TINY_REPO, tiny_model, tag="v1.0"),
        PRIVATE_REPO: hubemu.import_repo(root, PRIVATE_REPO, tiny_model, private=True),
        GATED_REPO: hubemu.import_repo(root, GATED_REPO, tiny_model, gated=True),
        DATASET_REPO: hubemu.import_repo(root, DATASET_REPO, tiny_dataset, type="dataset"),
    }
    emulator = hubemu.Emulator(root, tokens=[HUB_TOKEN])
    emulator.commits = commits
    emulator.sources = {TINY_REPO: tiny_model, PRIVATE_REPO: tiny_model, GATED_REPO: tiny_model,
                        DATASET_REPO: tiny_dataset}
    emulator.token = HUB_TOKEN
    with emulator:
        yield emulator


def _repo_json_files(root):
    for dirpath, _, filenames in os.walk(root):
        if "repo.json" in filenames and "commits" not in dirpath:
            yield os.path.join(dirpath, "repo.json")


@pytest.fixture
def hub(hub_session):
    """The session's emulator, serving test-org/{tiny,private,gated}-llama (models) and
    test-org/tiny-data (dataset); token `hf_test_token`. `hub.commits[repo]` is each repo's
    first main commit, `hub.sources[repo]` the directory it was imported from. Knobs, the log,
    branches and tags are put back after each test."""
    saved = {}
    for path in _repo_json_files(hub_session.root):
        with open(path, "rb") as f:
            saved[path] = f.read()
    if hub_session.proc is None or hub_session.proc.poll() is not None:
        hub_session.restart()
    hub_session.clear_log()
    yield hub_session
    if hub_session.proc is None or hub_session.proc.poll() is not None:
        hub_session.restart()
    hub_session.reset()
    hub_session.clear_log()
    for path, data in saved.items():
        with open(path + ".restore", "wb") as f:
            f.write(data)
        os.replace(path + ".restore", path)


@pytest.fixture
def hf_env(hub, tmp_path):
    """Environment (a dict) for client subprocesses against `hub`: HF_ENDPOINT, a fresh HF_HOME,
    no token. Add env["HF_TOKEN"] = hub.token for the private and gated repos."""
    return hub.client_env(tmp_path / "hf-home")
