"""What the mount's names mean: orgs listed from the Hub's listing API (paged), unknown names
ENOENT without accumulating anything in the daemon, forgotten orgs freed, misses remembered
(bounded Hub requests), and times that are the commits' dates on every mount.

A store of its own (not the session's), so that orgs, pages and commit dates are the test's."""
import errno
import json
import os
import shutil
import sys
import time

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import hubemu  # noqa: E402
from mount import Mount, errno_of  # noqa: E402

sys.path.insert(0, os.path.join(hubemu.SOURCE_DIR, "scripts"))
from hubemulator.store import import_repo, repo_dir  # noqa: E402

TOKEN = "hf_namespace_token"
ORG = "list-org"
PUBLIC_MODELS = ["m0", "m1", "m2", "m3", "m4"]
PRIVATE_MODEL = "secret"
DATASETS = ["ds0", "ds1"]
FORGETTABLE_ORGS = [f"org-{i:02d}" for i in range(40)]
DATE_OF = {"m0": 1622550896, "m1": 1500000000}   # 2021-06-01T12:34:56Z, 2017-07-14T02:40:00Z


def set_commit_date(root, repo_type, repo_id, sha, seconds):
    """The commit's date as the store keeps it (what the Hub calls lastModified)."""
    path = os.path.join(repo_dir(root, repo_type, repo_id), "commits", sha + ".hashes.json")
    with open(path) as f:
        meta = json.load(f)
    meta["created"] = seconds
    with open(path, "w") as f:
        json.dump(meta, f)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("namespace-hub"))
    source = tmp_path_factory.mktemp("namespace-src")
    (source / "sub").mkdir()
    (source / "config.json").write_text('{"model_type": "llama"}\n')
    (source / "sub" / "notes.txt").write_text("notes\n")
    commits = {}
    for name in PUBLIC_MODELS:
        commits[name] = import_repo(root, f"{ORG}/{name}", str(source))
    import_repo(root, f"{ORG}/{PRIVATE_MODEL}", str(source), private=True)
    for name in DATASETS:
        import_repo(root, f"{ORG}/{name}", str(source), repo_type="dataset")
    for org in FORGETTABLE_ORGS:
        import_repo(root, f"{org}/model", str(source))
    for name, seconds in DATE_OF.items():
        set_commit_date(root, "model", f"{ORG}/{name}", commits[name], seconds)
    return root


@pytest.fixture
def hub(store):
    with hubemu.Emulator(store, tokens=[TOKEN], knobs={"page_size": 2}) as emulator:
        yield emulator


def listing_requests(hub, kind="models"):
    return [e for e in hub.log() if e["path"] == f"/api/{kind}"]


def api_requests(hub):
    return [e for e in hub.log() if e["path"].startswith("/api/")]


def inodes(m):
    return int(os.getxattr(m.path, "user.hubfs.inodes"))


def test_org_lists_its_repos_page_by_page(hub):
    with Mount(hub.hub_url) as anonymous:
        assert sorted(os.listdir(os.path.join(anonymous.path, ORG))) == PUBLIC_MODELS
        assert sorted(os.listdir(os.path.join(anonymous.path, "datasets", ORG))) == DATASETS
        assert ORG in os.listdir(anonymous.path) and ORG in os.listdir(os.path.join(anonymous.path, "datasets"))
    pages = [e for e in listing_requests(hub) if "cursor=" in e["query"]]
    assert len(pages) >= 2                          # 5 repos, 2 a page: the Link headers were followed
    assert all(f"author={ORG}" in e["query"] for e in listing_requests(hub))
    assert listing_requests(hub, "datasets")
    with Mount(hub.hub_url, env={"HF_TOKEN": TOKEN}) as authorized:   # the token sees the private one
        assert sorted(os.listdir(os.path.join(authorized.path, ORG))) == sorted(PUBLIC_MODELS + [PRIVATE_MODEL])
        with open(os.path.join(authorized.path, ORG, PRIVATE_MODEL, "config.json")) as f:
            assert json.load(f) == {"model_type": "llama"}


def test_listing_is_cached_and_refreshed_on_demand(hub, tmp_path):
    with Mount(hub.hub_url) as m:
        org = os.path.join(m.path, ORG)
        os.listdir(org)
        hub.clear_log()
        for _ in range(5):
            os.listdir(org)
        assert listing_requests(hub) == []          # within minutes: from memory
        source = tmp_path / "new"
        source.mkdir()
        (source / "config.json").write_text("{}\n")
        import_repo(hub.root, f"{ORG}/m9", str(source))
        try:
            assert "m9" not in os.listdir(org)
            assert os.getxattr(org, "user.hubfs.refresh").decode() == str(len(PUBLIC_MODELS) + 1)
            assert "m9" in os.listdir(org)
        finally:
            shutil.rmtree(repo_dir(hub.root, "model", f"{ORG}/m9"))


def test_invented_root_names_are_enoent_and_cost_nothing_lasting(hub):
    """100,000 stats of invented names: all ENOENT; names no Hub name can be never reach the
    Hub; the valid ones reach it once each (the miss is remembered); no inode is created and the
    daemon's memory stays put."""
    invalid = [f"no such {i}" if i % 3 == 0 else f"-dash{i}" if i % 3 == 1 else f"dots..{i}" for i in range(50_000)]
    valid = [f"ghost-org-{i}" for i in range(50)]
    # Under ASan, freed memory waits in a quarantine before reuse: without one, RSS tells here too.
    asan = os.environ.get("ASAN_OPTIONS", "")
    asan += (":" if asan else "") + "quarantine_size_mb=0:thread_local_quarantine_size_kb=0"
    with Mount(hub.hub_url, env={"ASAN_OPTIONS": asan}) as m:
        os.listdir(m.path)
        nodes_before, rss_before = inodes(m), m.rss()
        hub.clear_log()
        failures = 0
        for name in invalid:
            failures += errno_of(os.stat, os.path.join(m.path, name)) == errno.ENOENT
        for i in range(50_000):
            failures += errno_of(os.stat, os.path.join(m.path, valid[i % len(valid)])) == errno.ENOENT
        assert failures == 100_000
        assert inodes(m) == nodes_before
        grown = m.rss() - rss_before
        assert grown < 3 * 1024 * 1024, f"daemon RSS grew by {grown} bytes"
        requests = api_requests(hub)
        asked = sorted(e["query"].split("author=")[1] for e in requests)
        assert asked == sorted(valid), asked           # each valid name once, nothing else
        assert sorted(os.listdir(m.path)) == [".hubfs", "datasets"]


def test_unknown_repos_are_asked_once_a_minute(hub):
    with Mount(hub.hub_url) as m:
        missing = os.path.join(m.path, ORG, "no-such-model")
        for _ in range(5):
            assert errno_of(os.stat, missing) == errno.ENOENT
            time.sleep(1.1)                            # past the kernel's own negative entry
        resolves = [e for e in hub.log() if e["path"].startswith(f"/api/models/{ORG}/no-such-model")]
        assert len(resolves) == 1
        assert errno_of(os.stat, os.path.join(m.path, ORG, "no such model")) == errno.ENOENT
        assert not [e for e in hub.log() if "no%20such" in e["path"] or "no such" in e["path"]]


def drop_kernel_caches():
    """Makes the kernel forget unused dentries and inodes (so FUSE forgets reach the daemon)."""
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("2\n")
    except OSError as e:
        pytest.skip(f"cannot drop the kernel's caches here ({e}): forgets cannot be provoked")


def test_forgotten_orgs_are_freed(hub):
    with Mount(hub.hub_url) as m:
        os.listdir(m.path)
        baseline = inodes(m)
        for org in FORGETTABLE_ORGS:
            assert os.path.isdir(os.path.join(m.path, org))
        assert inodes(m) == baseline + len(FORGETTABLE_ORGS)
        deadline = time.time() + 10
        while inodes(m) > baseline and time.time() < deadline:
            drop_kernel_caches()
            time.sleep(0.2)
        assert inodes(m) == baseline
        # Found again, under new inode numbers (never reused), and still the same orgs.
        assert os.path.isdir(os.path.join(m.path, FORGETTABLE_ORGS[0], "model"))
        # An org whose repo was pinned stays: the repo's node names it as its parent.
        drop_kernel_caches()
        assert inodes(m) > baseline


def repo_times(root):
    """(relative path, mtime, ctime) of everything under root, root included."""
    found = [(".", os.stat(root).st_mtime, os.stat(root).st_ctime)]
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            st = os.stat(os.path.join(dirpath, name))
            found.append((os.path.relpath(os.path.join(dirpath, name), root), st.st_mtime, st.st_ctime))
    return sorted(found)


def test_times_are_the_commit_date_on_every_mount(hub, tmp_path):
    cache = str(tmp_path / "cache")
    with Mount(hub.hub_url, cache_dir=cache) as first:
        times = repo_times(os.path.join(first.path, ORG, "m0"))
        other = repo_times(os.path.join(first.path, ORG, "m1"))
    assert {t for _, m, c in times for t in (m, c)} == {DATE_OF["m0"]}
    assert {t for _, m, c in other for t in (m, c)} == {DATE_OF["m1"]}
    time.sleep(1.1)                                    # a mount-time clock would show here
    with Mount(hub.hub_url, cache_dir=str(tmp_path / "other-cache")) as second:
        assert repo_times(os.path.join(second.path, ORG, "m0")) == times
    hub.clear_log()
    with Mount(hub.hub_url, cache_dir=cache, env={"HF_HUB_OFFLINE": "1"}) as offline:
        assert repo_times(os.path.join(offline.path, ORG, "m0")) == times
        assert sorted(os.listdir(os.path.join(offline.path, ORG))) == ["m0", "m1"]   # what was pinned
        assert errno_of(os.stat, os.path.join(offline.path, "org-00")) == errno.ENOENT
    assert hub.log() == []


def test_a_kept_file_list_keeps_its_gaps_and_older_ones_still_serve(hub, tmp_path):
    """The file list a remount takes from the cache's metadata: one written before the gaps of
    the listing were kept (a bare array) still serves without asking the Hub for the tree, and
    the gaps it keeps reach the log as one printable line whatever the file says."""
    repo = f"{ORG}/kept-list"
    source = tmp_path / "src"
    source.mkdir()
    (source / "config.json").write_text('{"v": 1}\n')
    (source / "a.txt").write_text("a\n")
    import_repo(hub.root, repo, str(source))
    cache = str(tmp_path / "cache")
    try:
        with Mount(hub.hub_url, cache_dir=cache) as first:
            assert sorted(os.listdir(os.path.join(first.path, repo))) == ["a.txt", "config.json"]
        kept = [os.path.join(d, n) for d, _, ns in os.walk(cache) for n in ns if n.startswith("tree-")]
        assert len(kept) == 1, kept
        with open(kept[0]) as f:
            entries = json.load(f)["entries"]
        assert sorted(e["path"] for e in entries) == ["a.txt", "config.json"]

        with open(kept[0], "w") as f:
            json.dump(entries, f)                 # the older format
        hub.clear_log()
        with Mount(hub.hub_url, cache_dir=cache) as older:
            assert sorted(os.listdir(os.path.join(older.path, repo))) == ["a.txt", "config.json"]
            with open(os.path.join(older.path, repo, "a.txt")) as f:
                assert f.read() == "a\n"
            log = older.log_text()
        assert [e["path"] for e in api_requests(hub)] == [f"/api/models/{repo}/revision/main"]
        assert "file list incomplete" not in log

        with open(kept[0], "w") as f:
            json.dump({"entries": entries, "truncated": "more than 2 entries\nhubfs: forged line"}, f)
        with Mount(hub.hub_url, cache_dir=cache) as gapped:
            assert sorted(os.listdir(os.path.join(gapped.path, repo))) == ["a.txt", "config.json"]
            log = gapped.log_text()
        gaps = [line for line in log.splitlines() if "file list incomplete" in line]
        assert gaps == [f"hubfs: {repo}@main: file list incomplete: entries past the first 2 left out "
                        "(the list has more than 2 entries?hubfs: forged line)"], log
        assert "\nhubfs: forged line" not in log
    finally:
        shutil.rmtree(repo_dir(hub.root, "model", repo))


def metadata_files(cache, repo):
    """{name: (inode, mtime_ns)} of the repo's metadata files in the cache."""
    folder = os.path.join(cache, "repos", "models--" + repo.replace("/", "--"))
    return {name: (st.st_ino, st.st_mtime_ns)
            for name in os.listdir(folder) for st in [os.stat(os.path.join(folder, name))]}


def test_a_remount_asks_the_hub_only_for_the_revision(hub, tmp_path):
    """A commit's file list never changes and an org with a repo pinned before exists: a remount
    on the same cache asks only which commit main is now, and still sees a new commit."""
    repo = f"{ORG}/remount"
    source = tmp_path / "v1"
    source.mkdir()
    (source / "config.json").write_text('{"v": 1}\n')
    import_repo(hub.root, repo, str(source))
    cache = str(tmp_path / "cache")
    try:
        with Mount(hub.hub_url, cache_dir=cache) as first:
            with open(os.path.join(first.path, repo, "config.json")) as f:
                assert json.load(f) == {"v": 1}
        hub.clear_log()
        meta = metadata_files(cache, repo)
        assert any(name.startswith("rev-") for name in meta) and any(name.startswith("date-") for name in meta)
        with Mount(hub.hub_url, cache_dir=cache) as second:
            with open(os.path.join(second.path, repo, "config.json")) as f:
                assert json.load(f) == {"v": 1}
        assert [e["path"] for e in api_requests(hub)] == [f"/api/models/{repo}/revision/main"]
        # What the Hub confirmed unchanged is not written again (an fsync on the first open's path).
        assert metadata_files(cache, repo) == meta
        (source / "config.json").write_text('{"v": 2}\n')
        (source / "new.txt").write_text("new\n")
        import_repo(hub.root, repo, str(source))
        hub.clear_log()
        with Mount(hub.hub_url, cache_dir=cache) as third:
            with open(os.path.join(third.path, repo, "config.json")) as f:
                assert json.load(f) == {"v": 2}
            assert sorted(os.listdir(os.path.join(third.path, repo))) == ["config.json", "new.txt"]
        paths = [e["path"] for e in api_requests(hub)]
        assert paths[0] == f"/api/models/{repo}/revision/main" and any("/tree/" in p for p in paths)
        rewritten = metadata_files(cache, repo)
        assert rewritten["rev-6d61696e"] != meta["rev-6d61696e"]   # hex of "main": it moved
    finally:
        shutil.rmtree(repo_dir(hub.root, "model", repo))
