"""The Hub client library (hub/) against the local Hub emulator, through tests/hub/hub_probe.

Every byte is checked against the source files the emulator serves (sha256, slices); request
counts, headers and timings against the emulator's own request log. A few protocol violations
the emulator cannot produce come from a small hostile server defined here.
"""
import email.utils
import hashlib
import http.server
import json
import math
import os
import shutil
import subprocess
import threading
import time

import pytest

import hubemu

TINY = "test-org/tiny-llama"
PRIVATE = "test-org/private-llama"
GATED = "test-org/gated-llama"
DATASET = "test-org/tiny-data"
SHARD = "model-00001-of-00003.safetensors"
TOKEN = "hf_test_token"

BUILD_DIR = os.environ.get("HUBFS_BUILD_DIR") or os.path.join(hubemu.SOURCE_DIR, "build-hub")
PROBE = os.path.join(BUILD_DIR, "tests", "hub", "hub_probe")


def run_probe(hub_url, *args, token=None, env=None, timeout=60):
    """Runs hub_probe; returns (result dict, seconds). Any sanitizer report fails the run."""
    clean = {k: v for k, v in os.environ.items()
             if not k.startswith(("HF_", "HUGGING_FACE_", "HUBFS_BACKOFF", "HUBFS_MAX"))}
    clean.update(HF_ENDPOINT=hub_url, HF_HOME="/nonexistent-hf-home", HUBFS_BACKOFF_MS="50",
                 HUBFS_MAX_RETRIES="3", NO_PROXY="*", no_proxy="*")
    if token:
        clean["HF_TOKEN"] = token
    clean.update(env or {})
    started = time.monotonic()
    proc = subprocess.run([PROBE, *map(str, args)], env=clean, capture_output=True, text=True,
                          timeout=timeout)
    elapsed = time.monotonic() - started
    assert proc.returncode == 0, f"hub_probe {args} failed ({proc.returncode}): {proc.stderr[-3000:]}"
    assert "Sanitizer" not in proc.stderr, proc.stderr[-3000:]
    return json.loads(proc.stdout), elapsed


@pytest.fixture
def probe(hub):
    def run(*args, **kw):
        return run_probe(hub.hub_url, *args, **kw)[0]
    run.timed = lambda *args, **kw: run_probe(hub.hub_url, *args, **kw)
    return run


def data_of(path, offset=0, length=None):
    with open(path, "rb") as f:
        f.seek(offset)
        return f.read() if length is None else f.read(length)


def sha256_file(path):
    return hashlib.sha256(data_of(path)).hexdigest()


def git_blob_sha1(data):
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def hub_entries(log, method=None, part=""):
    return [e for e in log if e["origin"] == "hub" and (method is None or e["method"] == method)
            and part in e["path"]]


def cdn_entries(log):
    return [e for e in log if e["origin"] == "cdn"]


def variant_of(src, tmp_path, name):
    """A copy of a source dir whose config.json differs (so importing it makes a new commit)."""
    out = tmp_path / name
    shutil.copytree(src, out)
    with open(out / "config.json", "a") as f:
        f.write(f"\n/* {name} */\n")
    return str(out)


# -------------------------------------------------------------------------------------------
# revisions
# -------------------------------------------------------------------------------------------

def test_resolve_branch_tag_commit_and_pr(hub, probe, tmp_path):
    main = hub.commits[TINY]
    assert probe("resolve", "model", TINY, "main")["commit"] == main
    assert probe("resolve", "model", TINY, "v1.0")["commit"] == main

    hub.clear_log()
    assert probe("resolve", "model", TINY, main)["commit"] == main
    # a commit sha still costs one call: it proves the commit exists
    assert [e["path"] for e in hub.log()] == [f"/api/models/{TINY}/revision/{main}"]

    pr_commit = hubemu.import_repo(hub.root, TINY, variant_of(hub.sources[TINY], tmp_path, "pr"),
                                   branch="refs/pr/1")
    assert pr_commit != main
    hub.clear_log()
    assert probe("resolve", "model", TINY, "refs/pr/1")["commit"] == pr_commit
    assert hub.log()[0]["path"] == f"/api/models/{TINY}/revision/refs%2Fpr%2F1"

    missing = probe("resolve", "model", TINY, "no-such-branch")
    assert missing["status"] == "revision-not-found"
    assert "no-such-branch" in missing["message"] and TINY in missing["message"]

    dataset = probe("resolve", "dataset", DATASET, "main")
    assert dataset["commit"] == hub.commits[DATASET]


def test_reads_stay_on_pinned_commit_after_branch_moves(hub, probe, tmp_path):
    pinned = probe("resolve", "model", TINY, "main")["commit"]
    moved_src = variant_of(hub.sources[TINY], tmp_path, "moved")
    moved = hubemu.import_repo(hub.root, TINY, moved_src)      # main moves on
    assert probe("resolve", "model", TINY, "main")["commit"] == moved != pinned

    old = probe("read", "model", TINY, pinned, "config.json", tmp_path / "old.json")
    assert old["status"] == "ok" and old["commit"] == pinned
    assert data_of(tmp_path / "old.json") == data_of(os.path.join(hub.sources[TINY], "config.json"))
    new = probe("read", "model", TINY, moved, "config.json", tmp_path / "new.json")
    assert new["commit"] == moved
    assert data_of(tmp_path / "new.json") == data_of(os.path.join(moved_src, "config.json"))


# -------------------------------------------------------------------------------------------
# tree
# -------------------------------------------------------------------------------------------

def expected_tree(src):
    """{path: (type, size, lfs_sha256 or "", git oid or None)} from the source directory."""
    out = {}
    for dirpath, dirnames, names in os.walk(src):
        rel_dir = os.path.relpath(dirpath, src)
        if rel_dir != ".":
            out[rel_dir.replace(os.sep, "/")] = ("directory", 0, "", None)
        for name in names:
            full = os.path.join(dirpath, name)
            rel = os.path.relpath(full, src).replace(os.sep, "/")
            data = data_of(full)
            lfs = name.endswith((".safetensors", ".bin")) or len(data) > 10 * 1024 * 1024
            out[rel] = ("file", len(data), hashlib.sha256(data).hexdigest() if lfs else "",
                        None if lfs else git_blob_sha1(data))
    return out


@pytest.mark.parametrize("repo_type,repo", [("model", TINY), ("dataset", DATASET)])
def test_tree_follows_every_page(hub, probe, repo_type, repo):
    expected = expected_tree(hub.sources[repo])
    page_size = 2
    hub.config(page_size=page_size)
    result = probe("tree", repo_type, repo, hub.commits[repo])
    assert result["status"] == "ok", result
    got = {e["path"]: (e["type"], e["size"], e["lfs_sha256"], e["oid"]) for e in result["entries"]}
    assert len(got) == len(result["entries"])          # no page fetched twice
    assert set(got) == set(expected)
    for path, (kind, size, lfs, oid) in expected.items():
        assert got[path][:3] == (kind, size, lfs), path
        if oid:
            assert got[path][3] == oid, path

    pages = hub_entries(hub.log(), "GET", "/tree/")
    assert len(pages) == math.ceil(len(expected) / page_size) >= 3
    assert "recursive=true" in pages[0]["query"] and "expand=false" in pages[0]["query"]
    assert all("cursor=" in p["query"] for p in pages[1:])


def test_tree_of_missing_repo_and_revision(hub, probe):
    result = probe("tree", "model", "test-org/missing", "main")
    assert result["status"] == "repo-not-found"
    assert ("repository test-org/missing not found, or private: set HF_TOKEN to a token that can "
            "read it, or check the name") in result["message"]
    result = probe("tree", "model", TINY, "f" * 40)
    assert result["status"] == "revision-not-found"


# -------------------------------------------------------------------------------------------
# resolve and reads
# -------------------------------------------------------------------------------------------

def test_lfs_read_resolves_once_and_keeps_token_off_the_cdn(hub, probe, tmp_path):
    src = os.path.join(hub.sources[TINY], SHARD)
    size = os.path.getsize(src)
    chunk = 64 * 1024
    out = tmp_path / "shard"
    result = probe("read", "model", TINY, hub.commits[TINY], SHARD, out, "--chunk", chunk,
                   "--threads", 4, token=TOKEN)
    assert result["status"] == "ok", result
    assert result["size"] == size and result["is_lfs"]
    assert result["etag"] == sha256_file(src) and result["commit"] == hub.commits[TINY]
    assert sha256_file(out) == sha256_file(src)

    log = hub.log()
    resolves = hub_entries(log, part="/resolve/")
    assert len(resolves) == 1 and resolves[0]["method"] == "HEAD"
    assert all(e["authorization"] for e in hub_entries(log))
    cdn = cdn_entries(log)
    assert len(cdn) == math.ceil(size / chunk)
    assert not any(e["authorization"] for e in cdn)
    assert sorted(e["range"] for e in cdn) == sorted(
        f"bytes={a}-{min(a + chunk, size) - 1}" for a in range(0, size, chunk))
    assert all(e["status"] == 206 for e in cdn)
    agent = resolves[0]["user_agent"]
    assert agent.startswith("hubfs/") and "; libcurl/" in agent
    assert result["counters"]["resolves"] == 1 and result["counters"]["in_flight"] == 0


def test_small_file_read_fetch_and_resolve_cache(hub, probe, tmp_path):
    src = os.path.join(hub.sources[TINY], "config.json")
    commit = hub.commits[TINY]
    fetched = probe("fetch", "model", TINY, commit, "config.json", tmp_path / "c", 1 << 20, token=TOKEN)
    assert fetched["status"] == "ok" and data_of(tmp_path / "c") == data_of(src)
    # the Hub's own origin serves small files: the token goes along there
    assert all(e["authorization"] for e in hub.log()) and not cdn_entries(hub.log())

    sliced = probe("read", "model", TINY, commit, "config.json", tmp_path / "s", "--offset", 10,
                   "--length", 100)
    assert sliced["etag"] == git_blob_sha1(data_of(src)) and not sliced["is_lfs"]
    assert data_of(tmp_path / "s") == data_of(src, 10, 100)

    too_big = probe("fetch", "model", TINY, commit, "config.json", tmp_path / "c2", 10)
    assert too_big["status"] == "invalid-argument" and "more than the 10 allowed" in too_big["message"]

    hub.config(resolve_cache_redirect=True)
    hub.clear_log()
    cached = probe("fetch", "model", TINY, commit, "tokenizer.json", tmp_path / "t", 1 << 20)
    assert cached["status"] == "ok"
    assert data_of(tmp_path / "t") == data_of(os.path.join(hub.sources[TINY], "tokenizer.json"))
    assert any(e["path"].startswith("/api/resolve-cache/") for e in hub.log())


def test_dataset_lfs_slice(hub, probe, tmp_path):
    src = os.path.join(hub.sources[DATASET], "data", "embeddings.bin")
    result = probe("read", "dataset", DATASET, "main", "data/embeddings.bin", tmp_path / "e",
                   "--offset", 1000, "--length", 30000, "--chunk", 7000)
    assert result["status"] == "ok" and result["is_lfs"]
    assert data_of(tmp_path / "e") == data_of(src, 1000, 30000)
    assert hub_entries(hub.log(), "HEAD")[0]["path"] == \
        f"/datasets/{DATASET}/resolve/main/data/embeddings.bin"


def test_many_concurrent_reads(hub, probe, tmp_path):
    src = os.path.join(hub.sources[TINY], "model-00003-of-00003.safetensors")
    hub.config(latency_ms=5)
    result = probe("read", "model", TINY, "main", os.path.basename(src), tmp_path / "x",
                   "--chunk", 8192, "--threads", 16)
    assert result["status"] == "ok"
    assert sha256_file(tmp_path / "x") == sha256_file(src)
    assert len(hub_entries(hub.log(), part="/resolve/")) == 1


@pytest.mark.parametrize("latency_ms", [0, 40])
def test_first_byte_wait_is_measured(hub, probe, tmp_path, latency_ms):
    # The emulator delays every answer by latency_ms: the client's average wait for a range
    # read's first byte (what the mount sizes its prefetch window by) must show that delay, and
    # no more than a loopback answer's cost on top of it.
    src = os.path.join(hub.sources[TINY], SHARD)
    hub.config(latency_ms=latency_ms)
    result = probe("read", "model", TINY, "main", SHARD, tmp_path / "x", "--chunk", 65536, "--length", 16 * 65536)
    assert result["status"] == "ok", result
    assert data_of(tmp_path / "x") == data_of(src, 0, 16 * 65536)
    waited_ms = result["counters"]["first_byte_us"] / 1000
    assert latency_ms * 0.9 <= waited_ms <= latency_ms + 15, result["counters"]
    assert waited_ms > 0


def test_queued_transfers_do_not_count_as_stalled(hub, probe, tmp_path):
    # 48 reads at once over 16 connections per host: the last wave waits ~1.2 s for a
    # connection, longer than the 1 s stall limit, yet none of them stalled
    src = os.path.join(hub.sources[TINY], SHARD)
    size = os.path.getsize(src)
    hub.config(latency_ms=600)
    result = probe("read", "model", TINY, "main", SHARD, tmp_path / "x", "--chunk",
                   math.ceil(size / 48), "--threads", 48, env={"HF_HUB_DOWNLOAD_TIMEOUT": "1"})
    assert result["status"] == "ok" and result["counters"]["retries"] == 0, result
    assert sha256_file(tmp_path / "x") == sha256_file(src)


def test_read_past_end_is_refused(hub, probe, tmp_path):
    size = os.path.getsize(os.path.join(hub.sources[TINY], SHARD))
    result = probe("read", "model", TINY, "main", SHARD, tmp_path / "x", "--offset", size - 10,
                   "--length", 11)
    assert result["status"] == "invalid-argument" and "passes the end" in result["message"]
    assert not cdn_entries(hub.log())


# -------------------------------------------------------------------------------------------
# retries
# -------------------------------------------------------------------------------------------

def test_retry_after_is_honoured(hub, probe):
    hub.config(fail_next=[{"match": "/revision/", "status": 429, "retry_after": 2}])
    result, elapsed = probe.timed("resolve", "model", TINY, "main")
    assert result["status"] == "ok" and result["counters"]["retries"] == 1
    assert elapsed >= 2.0
    assert [e["status"] for e in hub.log()] == [429, 200]


def test_ratelimit_header_is_honoured(hub, probe):
    # no Retry-After, only RateLimit: "api";r=0;t=1 (backoff alone would be 50 ms)
    hub.config(fail_next=[{"match": "/revision/", "status": 429, "ratelimit": True}])
    result, elapsed = probe.timed("resolve", "model", TINY, "main")
    assert result["status"] == "ok" and elapsed >= 1.0


def test_rate_limit_exhausted(hub, probe):
    hub.config(fail_next=[{"match": "/revision/", "status": 429, "count": 10}])
    result = probe("resolve", "model", TINY, "main", env={"HUBFS_MAX_RETRIES": "2"})
    assert result["status"] == "rate-limited"
    assert "wait and retry, or set HF_TOKEN for a higher limit" in result["message"]
    assert len(hub.log()) == 3


def test_server_errors_are_retried(hub, probe):
    hub.config(fail_next=[{"match": "/tree/", "status": 503, "count": 1},
                          {"match": "/tree/", "status": 502, "count": 1}])
    result = probe("tree", "model", TINY, "main")
    assert result["status"] == "ok" and result["counters"]["retries"] == 2
    assert [e["status"] for e in hub.log()] == [503, 502, 200]

    hub.clear_log()
    hub.config(fail_next=[{"match": "/revision/", "status": 500, "count": 10}])
    result = probe("resolve", "model", TINY, "main", env={"HUBFS_MAX_RETRIES": "2"})
    assert result["status"] == "server" and result["http_status"] == 500
    assert len(hub.log()) == 3


def test_backoff_doubles(hub, probe):
    hub.config(fail_next=[{"match": "/revision/", "status": 503, "count": 3}])
    result, elapsed = probe.timed("resolve", "model", TINY, "main", env={"HUBFS_BACKOFF_MS": "200"})
    assert result["status"] == "ok"
    times = [e["time"] for e in hub.log()]
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert len(gaps) == 3
    for gap, wanted in zip(gaps, (0.2, 0.4, 0.8)):
        assert wanted <= gap < wanted + 0.5, gaps


def test_client_errors_are_not_retried(hub, probe):
    result = probe("open", "model", TINY, "main", "no/such/file.bin")
    assert result["status"] == "entry-not-found"
    assert "no/such/file.bin not found in repository test-org/tiny-llama" in result["message"]
    assert len(hub.log()) == 1

    hub.clear_log()
    hub.config(fail_next=[{"match": "/revision/", "status": 400, "message": "bad"}])
    assert probe("resolve", "model", TINY, "main")["status"] == "invalid-argument"
    assert len(hub.log()) == 1


def test_dropped_connection_is_retried(hub, probe):
    hub.config(fail_next=[{"match": "/revision/", "action": "drop"}])
    result = probe("resolve", "model", TINY, "main")
    assert result["status"] == "ok" and result["counters"]["retries"] == 1


@pytest.mark.parametrize("action", ["truncate", "reset"])
def test_broken_cdn_body_is_retried(hub, probe, tmp_path, action):
    src = os.path.join(hub.sources[TINY], SHARD)
    hub.config(fail_next=[{"origin": "cdn", "action": action, "after_bytes": 1000}])
    result = probe("read", "model", TINY, "main", SHARD, tmp_path / "x", "--offset", 5,
                   "--length", 200000)
    assert result["status"] == "ok", result
    assert data_of(tmp_path / "x") == data_of(src, 5, 200000)
    cdn = cdn_entries(hub.log())
    assert len(cdn) == 2 and cdn[0]["bytes_sent"] == 1000
    # The retry asks only for what had not arrived: the first 1000 bytes stay where they are.
    assert cdn[0]["range"] == f"bytes=5-{5 + 200000 - 1}"
    assert cdn[1]["range"] == f"bytes={5 + 1000}-{5 + 200000 - 1}"
    assert cdn[1]["bytes_sent"] == 200000 - 1000
    assert result["counters"]["retries"] == 1


def test_broken_body_of_an_ignored_range_resumes_at_the_right_byte(hub, probe, tmp_path):
    """A server that answers 200 (whole file) to a range, breaking mid-body: the retry skips to
    the first byte still missing, however much of the file came before the range."""
    src = os.path.join(hub.sources[TINY], SHARD)
    hub.config(ignore_range=True, fail_next=[{"origin": "cdn", "action": "truncate", "after_bytes": 150000}])
    try:
        result = probe("read", "model", TINY, "main", SHARD, tmp_path / "x", "--offset", 100003,
                       "--length", 120000)
    finally:
        hub.config(ignore_range=False)
    assert result["status"] == "ok", result
    assert data_of(tmp_path / "x") == data_of(src, 100003, 120000)
    cdn = cdn_entries(hub.log())
    assert len(cdn) == 2 and all(e["status"] == 200 for e in cdn)
    assert cdn[1]["range"] == f"bytes={150000}-{100003 + 120000 - 1}"


def test_range_ignored_by_server_gives_the_right_bytes(hub, probe, tmp_path):
    src = os.path.join(hub.sources[TINY], SHARD)
    hub.config(ignore_range=True)
    result = probe("read", "model", TINY, "main", SHARD, tmp_path / "x", "--offset", 123457,
                   "--length", 50001, "--chunk", 25000)
    assert result["status"] == "ok"
    assert data_of(tmp_path / "x") == data_of(src, 123457, 50001)
    assert all(e["status"] == 200 for e in cdn_entries(hub.log()))
    # small file on the Hub's origin too
    cfg = os.path.join(hub.sources[TINY], "config.json")
    result = probe("read", "model", TINY, "main", "config.json", tmp_path / "c", "--offset", 300,
                   "--length", 40)
    assert data_of(tmp_path / "c") == data_of(cfg, 300, 40)


def test_stall_times_out_within_bound(hub, probe, tmp_path):
    stall_s = 3
    hub.config(fail_next=[{"origin": "cdn", "action": "stall", "stall_ms": stall_s * 1000,
                           "count": 2}])
    result, elapsed = probe.timed("read", "model", TINY, "main", SHARD, tmp_path / "x",
                                  env={"HF_HUB_DOWNLOAD_TIMEOUT": "1", "HUBFS_MAX_RETRIES": "1"})
    assert result["status"] == "network"
    assert "HF_HUB_DOWNLOAD_TIMEOUT" in result["message"]
    # two attempts that each give up after ~1 s of silence, before the stalls end
    assert 2.0 <= elapsed < 2 * stall_s, elapsed
    # the emulator logs the stalled answers when they end: wait, so no later test sees them
    deadline = time.time() + 2 * stall_s
    while len(cdn_entries(hub.log())) < 2 and time.time() < deadline:
        time.sleep(0.2)
    assert len(cdn_entries(hub.log())) == 2


def test_connect_failure_is_a_network_error(tmp_path):
    with socket_closed_port() as port:
        result, _ = run_probe(f"http://127.0.0.1:{port}", "resolve", "model", TINY, "main",
                              env={"HUBFS_MAX_RETRIES": "1"})
    assert result["status"] == "network" and result["counters"]["retries"] == 1
    assert "127.0.0.1" in result["message"]


class socket_closed_port:
    """A port nothing listens on (bound then closed)."""
    def __enter__(self):
        import socket
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        self.port = s.getsockname()[1]
        s.close()
        return self.port

    def __exit__(self, *exc):
        return False


# -------------------------------------------------------------------------------------------
# CDN URL lifetime
# -------------------------------------------------------------------------------------------

def test_expired_cdn_url_is_resolved_again(hub, probe, tmp_path):
    src = os.path.join(hub.sources[TINY], SHARD)
    size = os.path.getsize(src)
    # Expires is a whole second: with 2 s the first read surely comes before it, the second
    # (2.6 s later) surely after
    hub.config(cdn_url_ttl_s=2)
    result = probe("read", "model", TINY, "main", SHARD, tmp_path / "x", "--chunk",
                   size // 2 + 1, "--pause-ms", 2600)
    assert result["status"] == "ok"
    assert sha256_file(tmp_path / "x") == sha256_file(src)
    log = hub.log()
    assert len(hub_entries(log, part="/resolve/")) == 2
    assert [e["status"] for e in cdn_entries(log)] == [206, 206]


def test_refused_cdn_url_is_resolved_again_once(hub, probe, tmp_path):
    src = os.path.join(hub.sources[TINY], SHARD)
    hub.config(fail_next=[{"origin": "cdn", "status": 403, "count": 1}])
    result = probe("read", "model", TINY, "main", SHARD, tmp_path / "x", "--length", 4096)
    assert result["status"] == "ok"
    assert data_of(tmp_path / "x") == data_of(src, 0, 4096)
    assert len(hub_entries(hub.log(), part="/resolve/")) == 2

    hub.clear_log()
    hub.config(fail_next=[{"origin": "cdn", "status": 410, "count": 5}])
    result = probe("read", "model", TINY, "main", SHARD, tmp_path / "x", "--length", 4096)
    assert result["status"] != "ok" and result["http_status"] == 410
    log = hub.log()
    assert len(hub_entries(log, part="/resolve/")) == 2 and len(cdn_entries(log)) == 2


# -------------------------------------------------------------------------------------------
# access errors and messages
# -------------------------------------------------------------------------------------------

def test_gated_repo(hub, probe, tmp_path):
    result = probe("open", "model", GATED, "main", "config.json")
    assert result["status"] == "gated" and result["http_status"] == 403
    assert result["message"].startswith(
        f"gated repo: accept the terms at {hub.hub_url}/{GATED} and set HF_TOKEN")
    ok = probe("read", "model", GATED, "main", SHARD, tmp_path / "g", token=TOKEN)
    assert ok["status"] == "ok"
    assert sha256_file(tmp_path / "g") == sha256_file(os.path.join(hub.sources[GATED], SHARD))


def test_private_repo(hub, probe):
    anonymous = probe("resolve", "model", PRIVATE, "main")
    assert anonymous["status"] == "repo-not-found"
    assert anonymous["message"] == (f"repository {PRIVATE} not found, or private: set HF_TOKEN to a "
                                    "token that can read it, or check the name")
    with_token = probe("resolve", "model", "test-org/missing", "main", token=TOKEN)
    assert with_token["status"] == "repo-not-found"
    assert "not found, or private and not readable with this token" in with_token["message"]
    hub.clear_log()
    assert probe("resolve", "model", PRIVATE, "main", token=TOKEN)["commit"] == hub.commits[PRIVATE]
    assert all(e["authorization"] for e in hub.log())


def test_refused_token(hub, probe):
    result = probe("resolve", "model", TINY, "main", token="hf_wrong_secret")
    assert result["status"] == "unauthorized" and result["http_status"] == 401
    assert result["message"].startswith("the token was refused: check HF_TOKEN")
    assert "hf_wrong_secret" not in json.dumps(result)


def test_disabled_repo(hub, probe):
    path = os.path.join(hub.root, "models", *TINY.split("/"), "repo.json")
    with open(path) as f:
        info = json.load(f)
    info["disabled"] = True
    with open(path, "w") as f:
        json.dump(info, f)
    result = probe("resolve", "model", TINY, "main")
    assert result["status"] == "disabled"
    assert "disabled" in result["message"] and TINY in result["message"]


def test_token_never_in_messages(hub, probe, tmp_path):
    # the server echoes the token back in its error text: the client must scrub it
    hub.config(fail_next=[{"match": "/revision/", "status": 400,
                           "message": f"bad request for {TOKEN} here"}])
    result = probe("resolve", "model", TINY, "main", token=TOKEN)
    assert result["status"] == "invalid-argument"
    assert "bad request for *** here" in result["message"]
    outputs = [result,
               probe("resolve", "model", "test-org/missing", "main", token=TOKEN),
               probe("open", "model", TINY, "main", "missing.txt", token=TOKEN),
               probe("resolve", "model", TINY, "nope", token=TOKEN),
               probe("resolve", "model", "bad id!", "main", token=TOKEN)]
    for out in outputs:
        assert out["status"] != "ok"
        assert TOKEN not in json.dumps(out)


def test_invalid_arguments(hub, probe, tmp_path):
    for args in (("resolve", "model", "a/b/c", "main"), ("open", "model", TINY, "main", "../x"),
                 ("open", "model", TINY, "main", "/etc/passwd"), ("resolve", "model", TINY, "")):
        result = probe(*args)
        assert result["status"] == "invalid-argument", args
    assert hub.log() == []


def test_offline_forbids_network(hub, probe, tmp_path):
    for args in (("resolve", "model", TINY, "main"), ("tree", "model", TINY, "main"),
                 ("open", "model", TINY, "main", "config.json")):
        result = probe(*args, env={"HF_HUB_OFFLINE": "1"})
        assert result["status"] == "offline"
        assert "HF_HUB_OFFLINE=1 forbids network access" in result["message"]
    # a commit needs no pinning: offline it is taken as it is
    commit = hub.commits[TINY]
    assert probe("resolve", "model", TINY, commit.upper(), env={"HF_HUB_OFFLINE": "1"}
                 )["commit"] == commit
    assert hub.log() == []


# -------------------------------------------------------------------------------------------
# configuration from the environment
# -------------------------------------------------------------------------------------------

def test_config_from_environment(hub, tmp_path):
    def config(**env):
        return run_probe(hub.hub_url, "config", env=env)[0]

    home = tmp_path / "home"
    home.mkdir()
    (home / "token").write_text("  hf_from_file \n")
    assert config(HF_HOME=str(home))["token_length"] == len("hf_from_file")
    path_file = tmp_path / "tok"
    path_file.write_text("hf_path\n")
    assert config(HF_HOME=str(home), HF_TOKEN_PATH=str(path_file))["token_length"] == len("hf_path")
    assert config(HF_HOME=str(home), HUGGING_FACE_HUB_TOKEN="hf_legacy")["token_length"] == 9
    assert config(HF_HOME=str(home), HF_TOKEN=" hf_env ", HUGGING_FACE_HUB_TOKEN="hf_legacy"
                  )["token_length"] == len("hf_env")
    (home / "token").write_text(" \n")
    assert not config(HF_HOME=str(home))["has_token"]
    assert not config()["has_token"]

    c = config(HF_ENDPOINT=hub.hub_url + "//", HF_HUB_OFFLINE="true", HF_HUB_ETAG_TIMEOUT="2.5",
               HF_HUB_DOWNLOAD_TIMEOUT="7", HUBFS_MAX_RETRIES="4", HUBFS_BACKOFF_MS="20")
    assert c["endpoint"] == hub.hub_url and c["offline"]
    assert (c["connect_timeout_ms"], c["stall_timeout_ms"]) == (2500, 7000)
    assert (c["max_retries"], c["backoff_initial_ms"], c["backoff_max_ms"]) == (4, 20, 160)
    assert config(HF_ENDPOINT="ftp://x")["status"] == "invalid-argument"
    assert config(HF_HUB_DOWNLOAD_TIMEOUT="soon")["status"] == "invalid-argument"


def test_token_with_inner_whitespace_is_refused_naming_its_source(hub, tmp_path):
    """CR LF inside a token would end the Authorization header and start another: every source
    of the token is checked the same way, and the message says which one was bad."""
    def config(**env):
        return run_probe(hub.hub_url, "config", env=env)[0]

    injected = "abc\r\nX-Injected: 1"
    path_file = tmp_path / "tok"
    path_file.write_bytes(injected.encode() + b"\n")
    result = config(HF_TOKEN_PATH=str(path_file))
    assert result["status"] == "invalid-argument", result
    assert f"the token file {path_file} (HF_TOKEN_PATH)" in result["message"]
    assert "X-Injected" not in result["message"]

    home = tmp_path / "home"
    home.mkdir()
    (home / "token").write_bytes(b"hf_a b\n")
    result = config(HF_HOME=str(home))
    assert result["status"] == "invalid-argument"
    assert f"the token file {home}/token ($HF_HOME/token)" in result["message"]
    assert "whitespace, control or non-ASCII characters inside it" in result["message"]

    result = config(HF_TOKEN="hf_x\ty")
    assert result["status"] == "invalid-argument" and "from HF_TOKEN " in result["message"]
    result = config(HUGGING_FACE_HUB_TOKEN="hf_x\x7f")
    assert result["status"] == "invalid-argument" and "HUGGING_FACE_HUB_TOKEN" in result["message"]

    (home / "token").write_bytes(b"hf_" + b"x" * 5000)
    result = config(HF_HOME=str(home))
    assert result["status"] == "invalid-argument" and "longer than 4096 bytes" in result["message"]
    (home / "token").chmod(0o000)
    if os.geteuid() != 0:                # root reads it anyway
        assert config(HF_HOME=str(home))["status"] == "invalid-argument"
    (home / "token").chmod(0o600)


def test_token_file_is_used_for_requests(hub, tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    (home / "token").write_text(TOKEN + "\n")
    result, _ = run_probe(hub.hub_url, "resolve", "model", PRIVATE, "main", env={"HF_HOME": str(home)})
    assert result["commit"] == hub.commits[PRIVATE]
    # HF_TOKEN comes first: a wrong one is used (and refused) even with a good token file
    result, _ = run_probe(hub.hub_url, "resolve", "model", PRIVATE, "main",
                          env={"HF_HOME": str(home), "HF_TOKEN": "hf_other"})
    assert result["status"] == "unauthorized"


# -------------------------------------------------------------------------------------------
# a hostile server: what the emulator never sends
# -------------------------------------------------------------------------------------------

class Hostile:
    """A tiny HTTP server answering each path from a table; records requests."""

    def __init__(self):
        self.routes = {}
        self.requests = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def answer(self):
                outer.requests.append((self.command, self.path, self.headers.get("Authorization")))
                route = outer.routes.get(self.path.partition("?")[0], (404, {}, b"{}"))
                status, headers, body = route(self) if callable(route) else route
                if callable(body):
                    body = body(self)
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            do_GET = do_HEAD = answer

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def hostile():
    server = Hostile()
    yield server
    server.close()


SHA = "a" * 40


def tree_item(path):
    return {"type": "file", "oid": SHA, "size": 1, "path": path}


def test_hostile_tree_answers(hostile):
    tree = f"/api/models/o/n/tree/{SHA}"
    hostile.routes[tree] = (200, {"Link": '<http://evil.example:1/api/x>; rel="next"'},
                            json.dumps([tree_item("a")]).encode())
    result, _ = run_probe(hostile.url, "tree", "model", "o/n", SHA)
    assert result["status"] == "protocol" and "outside" in result["message"]

    # an entry no filesystem can show is left out, and said so; the rest of the listing stays
    hostile.routes[tree] = (200, {}, json.dumps([tree_item("ok"), tree_item("x/../../etc"),
                                                 tree_item("new\nline"), tree_item("z")]).encode())
    result, _ = run_probe(hostile.url, "tree", "model", "o/n", SHA)
    assert result["status"] == "ok", result
    assert [e["path"] for e in result["entries"]] == ["ok", "z"]
    assert result["skipped"] == 2 and result["truncated"] == ""
    assert '"x/../../etc" (a "." or ".." part)' in result["skipped_shown"]
    assert '"new?line" (a control character such as a newline)' in result["skipped_shown"]

    self_link = f'<{hostile.url}{tree}?recursive=true&expand=false>; rel="next"'
    hostile.routes[tree] = (200, {"Link": self_link}, json.dumps([tree_item("a")]).encode())
    result, _ = run_probe(hostile.url, "tree", "model", "o/n", SHA)
    assert result["status"] == "protocol" and "does not end" in result["message"]


def test_tree_pages_that_link_back_are_caught_at_once(hostile):
    """A -> B -> A -> ...: the second visit of a page ends the listing with a clear error,
    instead of requests without end."""
    tree = f"/api/models/o/n/tree/{SHA}"
    first = f"{hostile.url}{tree}?recursive=true&expand=false"

    def ping_pong(handler):
        on_b = "cursor=b" in handler.path
        link = f'<{first}>; rel="next"' if on_b else f'<{hostile.url}{tree}?cursor=b>; rel="next"'
        return 200, {"Link": link}, json.dumps([tree_item("b" if on_b else "a")]).encode()

    hostile.routes[tree] = ping_pong
    result, elapsed = run_probe(hostile.url, "tree", "model", "o/n", SHA, timeout=30)
    assert result["status"] == "protocol", result
    assert "does not end: page 2 links back to page 1" in result["message"]
    assert len(hostile.requests) == 2 and elapsed < 10


def test_retry_after_as_an_http_date_is_honoured(hostile):
    """429 with Retry-After as an IMF-fixdate 3 s ahead: the retry waits until then (the backoff
    alone would be 50 ms); a date in the past asks for no wait beyond the backoff."""
    revision = "/api/models/o/n/revision/main"

    def seconds_between_attempts(retry_after):
        answered = []

        def limited_once(handler):
            answered.append(time.monotonic())
            if len(answered) == 1:
                return 429, {"Retry-After": retry_after}, b"{}"
            return 200, {}, json.dumps({"sha": SHA}).encode()

        hostile.routes[revision] = limited_once
        result, _ = run_probe(hostile.url, "resolve", "model", "o/n", "main")
        assert result["commit"] == SHA, result
        assert len(answered) == 2
        return answered[1] - answered[0]

    waited = seconds_between_attempts(email.utils.formatdate(time.time() + 3, usegmt=True))
    assert 1.9 <= waited <= 6, waited
    waited = seconds_between_attempts(email.utils.formatdate(time.time() - 3600, usegmt=True))
    assert waited < 1.5, waited


def test_hostile_redirects(hostile):
    resolve = f"/o/n/resolve/{SHA}/f.bin"
    hostile.routes[resolve] = (302, {"Location": "file:///etc/passwd"}, b"")
    result, _ = run_probe(hostile.url, "open", "model", "o/n", SHA, "f.bin")
    assert result["status"] == "protocol"

    hostile.routes[resolve] = (307, {"Location": resolve}, b"")     # a loop on the same origin
    hostile.requests.clear()
    result, _ = run_probe(hostile.url, "open", "model", "o/n", SHA, "f.bin")
    assert result["status"] == "protocol" and "too many redirects" in result["message"]
    assert len(hostile.requests) == 11


def test_token_not_sent_to_foreign_origin_and_bad_ranges_refused(hostile, tmp_path):
    other = Hostile()         # a second origin: the "CDN"
    try:
        data = bytes(range(256)) * 40
        resolve = f"/o/n/resolve/{SHA}/f.bin"
        hostile.routes[resolve] = (302, {"Location": f"{other.url}/blob?Expires=9999999999",
                                         "X-Repo-Commit": SHA, "X-Linked-Etag": '"' + "b" * 64 + '"',
                                         "X-Linked-Size": str(len(data))}, b"")
        # a 206 whose Content-Range does not match the request: never handed to the reader
        other.routes["/blob"] = (206, {"Content-Range": f"bytes 0-9/{len(data)}"}, data[:10])
        result, _ = run_probe(hostile.url, "read", "model", "o/n", SHA, "f.bin", tmp_path / "x",
                              "--offset", 100, "--length", 10, token=TOKEN)
        assert result["status"] == "protocol" and "Content-Range" in result["message"]
        assert hostile.requests[0][2] == f"Bearer {TOKEN}"
        assert other.requests and all(auth is None for _, _, auth in other.requests)

        # a 206 with more bytes than asked is refused too
        other.routes["/blob"] = (206, {"Content-Range": f"bytes 100-109/{len(data)}"}, data[100:130])
        result, _ = run_probe(hostile.url, "read", "model", "o/n", SHA, "f.bin", tmp_path / "x",
                              "--offset", 100, "--length", 10)
        assert result["status"] == "protocol"

        # a 200 that is not the whole file cannot stand in for the range
        other.routes["/blob"] = (200, {}, data[:500])
        result, _ = run_probe(hostile.url, "read", "model", "o/n", SHA, "f.bin", tmp_path / "x",
                              "--offset", 100, "--length", 10)
        assert result["status"] == "protocol" and "not the whole file" in result["message"]

        other.routes["/blob"] = (206, {"Content-Range": f"bytes 100-109/{len(data)}"}, data[100:110])
        result, _ = run_probe(hostile.url, "read", "model", "o/n", SHA, "f.bin", tmp_path / "x",
                              "--offset", 100, "--length", 10)
        assert result["status"] == "ok" and data_of(tmp_path / "x") == data[100:110]
    finally:
        other.close()


def test_hostile_resolve_headers(hostile):
    other = Hostile()
    try:
        resolve = f"/o/n/resolve/{SHA}/f.bin"
        # another commit than the one asked for
        hostile.routes[resolve] = (200, {"X-Repo-Commit": "b" * 40, "ETag": '"e"'}, b"abc")
        result, _ = run_probe(hostile.url, "open", "model", "o/n", SHA, "f.bin")
        assert result["status"] == "protocol" and "when commit" in result["message"]

        # no X-Linked-Size: the size comes from a HEAD of the CDN URL, without the token
        hostile.routes[resolve] = (302, {"Location": f"{other.url}/blob", "X-Repo-Commit": SHA,
                                         "X-Linked-Etag": '"' + "c" * 64 + '"'}, b"")
        other.routes["/blob"] = (200, {}, b"x" * 777)
        result, _ = run_probe(hostile.url, "open", "model", "o/n", SHA, "f.bin", token=TOKEN)
        assert result["status"] == "ok" and result["size"] == 777 and result["etag"] == "c" * 64
        assert [(m, auth) for m, _, auth in other.requests] == [("HEAD", None)]
    finally:
        other.close()
