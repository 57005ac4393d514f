"""The emulator's own behaviour over raw HTTP: ranges, signed CDN URLs, auth, errors, paging, the
request log and every fault knob. Expected bytes and hashes come from the source files."""
import hashlib
import http.client
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.parse

import pytest

import hubemu
from hubemu import fetch

TINY = "test-org/tiny-llama"
SHARD = "model-00002-of-00003.safetensors"


def source_bytes(hub, name, repo=TINY):
    with open(os.path.join(hub.sources[repo], name), "rb") as f:
        return f.read()


def cdn_location(hub, name=SHARD, repo=TINY, headers=None):
    resp = fetch(hub.resolve_url(repo, "main", name), method="HEAD", headers=headers)
    assert resp.status == 302, resp.body
    return resp.header("Location")


# -- resolve and ranges --------------------------------------------------------------------------


def test_lfs_resolve_redirects_to_another_origin_with_linked_headers(hub):
    data = source_bytes(hub, SHARD)
    resp = fetch(hub.resolve_url(TINY, "main", SHARD))
    location = resp.header("Location")
    assert resp.status == 302
    assert resp.header("X-Linked-Etag") == f'"{hashlib.sha256(data).hexdigest()}"'
    assert resp.header("X-Linked-Size") == str(len(data))
    assert resp.header("X-Repo-Commit") == hub.commits[TINY]
    assert urllib.parse.urlsplit(location).hostname == "localhost"
    assert urllib.parse.urlsplit(hub.hub_url).hostname == "127.0.0.1"
    assert f"/models/{TINY}/commits/{hub.commits[TINY]}/{SHARD}" in location
    cdn = fetch(location)
    assert cdn.status == 200 and cdn.body == data
    for name in ("X-Linked-Etag", "X-Linked-Size", "X-Repo-Commit"):
        assert cdn.header(name) is None
    assert cdn.header("ETag") != resp.header("X-Linked-Etag")
    assert not any(k.lower().startswith("x-xet") for k, _ in resp.headers + cdn.headers)


def test_small_file_is_served_directly_with_git_etag(hub):
    data = source_bytes(hub, "config.json")
    resp = fetch(hub.resolve_url(TINY, "main", "config.json"))
    assert resp.status == 200 and resp.body == data
    git_sha1 = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
    assert resp.header("ETag") == f'"{git_sha1}"'
    assert resp.header("Content-Length") == str(len(data))
    assert resp.header("Accept-Ranges") == "bytes"
    head = fetch(hub.resolve_url(TINY, "main", "config.json"), method="HEAD")
    assert head.status == 200 and head.body == b"" and head.header("Content-Length") == str(len(data))


@pytest.mark.parametrize("where", ["cdn", "small"])
def test_ranges_206_suffix_and_416(hub, where):
    name = SHARD if where == "cdn" else "tokenizer.json"
    data = source_bytes(hub, name)
    url = cdn_location(hub) if where == "cdn" else hub.resolve_url(TINY, "main", name)
    size = len(data)
    for header, start, end in (("bytes=0-7", 0, 7), ("bytes=100-", 100, size - 1),
                               ("bytes=-50", size - 50, size - 1),
                               (f"bytes=10-{size + 1000}", 10, size - 1)):
        resp = fetch(url, headers={"Range": header})
        assert resp.status == 206, header
        assert resp.body == data[start:end + 1], header
        assert resp.header("Content-Range") == f"bytes {start}-{end}/{size}"
    past = fetch(url, headers={"Range": f"bytes={size}-"})
    assert past.status == 416 and past.header("Content-Range") == f"bytes */{size}"


def test_resolve_cache_redirect_is_relative_and_answers_like_200(hub):
    hub.config(resolve_cache_redirect=True)
    data = source_bytes(hub, "config.json")
    resp = fetch(hub.resolve_url(TINY, "main", "config.json"))
    assert resp.status == 307
    location = resp.header("Location")
    assert location.startswith(f"/api/resolve-cache/models/{TINY}/{hub.commits[TINY]}/")
    target = fetch(hub.hub_url + location)
    assert target.status == 200 and target.body == data


# -- signed CDN URLs -------------------------------------------------------------------------------


def test_cdn_refuses_expired_and_tampered_urls(hub):
    good = cdn_location(hub)
    assert fetch(good).status == 200
    parts = urllib.parse.urlsplit(good)
    query = dict(urllib.parse.parse_qsl(parts.query))
    bad_sig = dict(query, Signature="0" * 64)
    assert fetch(parts._replace(query=urllib.parse.urlencode(bad_sig)).geturl()).status == 403
    later = dict(query, Expires=str(int(query["Expires"]) + 100))
    assert fetch(parts._replace(query=urllib.parse.urlencode(later)).geturl()).status == 403
    other_file = parts._replace(path=parts.path.replace(SHARD, "model-00001-of-00003.safetensors"))
    assert fetch(other_file.geturl()).status == 403
    assert fetch(parts._replace(query="").geturl()).status == 403
    hub.config(cdn_url_ttl_s=1)
    short = cdn_location(hub)
    assert int(dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(short).query))["X-Amz-Expires"]) == 1
    time.sleep(2.1)
    assert fetch(short).status == 403


def test_cdn_needs_no_token_even_for_private_repos_and_logs_one_sent(hub):
    auth = {"Authorization": f"Bearer {hub.token}"}
    location = cdn_location(hub, repo="test-org/private-llama", headers=auth)
    assert fetch(location).status == 200
    assert fetch(location, headers=auth).status == 200
    cdn = [e for e in hub.log() if e["origin"] == "cdn"]
    assert [e["authorization"] for e in cdn] == [False, True]


# -- auth and errors -------------------------------------------------------------------------------


def test_private_repo_answers_like_a_missing_one(hub):
    url = hub.resolve_url("test-org/private-llama", "main", "config.json")
    anon = fetch(url)
    assert anon.status == 401 and anon.header("X-Error-Code") == "RepoNotFound"
    assert anon.json()["error"]
    wrong = fetch(url, headers={"Authorization": "Bearer hf_nope"})
    assert wrong.status == 401 and wrong.header("X-Error-Message") == "Invalid credentials in Authorization header"
    ok = fetch(url, headers={"Authorization": f"Bearer {hub.token}"})
    assert ok.status == 200 and ok.body == source_bytes(hub, "config.json", "test-org/private-llama")
    missing = fetch(hub.resolve_url("test-org/no-such", "main", "x"),
                    headers={"Authorization": f"Bearer {hub.token}"})
    assert missing.status == 404 and missing.header("X-Error-Code") == "RepoNotFound"
    api = fetch(hub.url("/api/models/test-org/private-llama"))
    assert api.status == 401 and api.header("X-Error-Code") == "RepoNotFound"


def test_gated_repo_lists_files_but_gates_content(hub):
    info = fetch(hub.url("/api/models/test-org/gated-llama/revision/main"))
    assert info.status == 200 and info.json()["gated"] and info.json()["sha"] == hub.commits["test-org/gated-llama"]
    for name in ("config.json", SHARD):
        resp = fetch(hub.resolve_url("test-org/gated-llama", "main", name), method="HEAD")
        assert resp.status == 403 and resp.header("X-Error-Code") == "GatedRepo"
        assert f"{hub.hub_url}/test-org/gated-llama" in resp.header("X-Error-Message")
    ok = fetch(hub.resolve_url("test-org/gated-llama", "main", SHARD), method="HEAD",
               headers={"Authorization": f"Bearer {hub.token}"})
    assert ok.status == 302


def test_revision_and_entry_errors(hub):
    rev = fetch(hub.resolve_url(TINY, "nope", "config.json"))
    assert rev.status == 404 and rev.header("X-Error-Code") == "RevisionNotFound"
    unknown_sha = fetch(hub.resolve_url(TINY, "0" * 40, "config.json"))
    assert unknown_sha.header("X-Error-Code") == "RevisionNotFound"
    entry = fetch(hub.resolve_url(TINY, "main", "missing.bin"))
    assert entry.status == 404 and entry.header("X-Error-Code") == "EntryNotFound"
    assert entry.header("X-Repo-Commit") == hub.commits[TINY]
    tree = fetch(hub.url(f"/api/models/{TINY}/tree/main/no-dir"))
    assert tree.status == 404 and tree.header("X-Error-Code") == "EntryNotFound"
    info = fetch(hub.url(f"/api/models/{TINY}/revision/nope"))
    assert info.status == 404 and info.header("X-Error-Code") == "RevisionNotFound"


# -- API shapes -------------------------------------------------------------------------------------


def test_repo_info_with_blobs_gives_sizes_and_sha256(hub):
    src = hub.sources[TINY]
    info = fetch(hub.url(f"/api/models/{TINY}/revision/main?blobs=true")).json()
    assert info["id"] == TINY and info["sha"] == hub.commits[TINY]
    by_name = {s["rfilename"]: s for s in info["siblings"]}
    assert sorted(by_name) == sorted(os.listdir(src))
    for name, s in by_name.items():
        data = source_bytes(hub, name)
        assert s["size"] == len(data)
        if name.endswith(".safetensors"):
            assert s["lfs"] == {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data),
                                "pointerSize": s["lfs"]["pointerSize"]}
        else:
            assert "lfs" not in s
    plain = fetch(hub.url(f"/api/models/{TINY}")).json()
    assert plain["sha"] == hub.commits[TINY] and all(set(s) == {"rfilename"} for s in plain["siblings"])


def test_tree_pages_and_subdirectories(hub):
    hub.config(page_size=2)
    url = hub.url("/api/datasets/test-org/tiny-data/tree/main?recursive=true&expand=false")
    items, pages = [], 0
    while url:
        resp = fetch(url)
        assert resp.status == 200
        items += resp.json()
        pages += 1
        link = resp.header("Link")
        url = link[1:link.index(">")] if link else None
        if link:
            assert link.endswith('>; rel="next"') and url.startswith(hub.hub_url)
    assert pages == 3
    assert [(i["type"], i["path"]) for i in items] == [
        ("file", "README.md"), ("directory", "data"), ("file", "data/embeddings.bin"),
        ("file", "data/test.jsonl"), ("file", "data/train.jsonl")]
    emb = source_bytes(hub, "data/embeddings.bin", "test-org/tiny-data")
    assert items[2]["lfs"]["oid"] == hashlib.sha256(emb).hexdigest() and items[2]["size"] == len(emb)
    hub.config(page_size=1000)
    sub = fetch(hub.url("/api/datasets/test-org/tiny-data/tree/main/data")).json()
    assert [i["path"] for i in sub] == ["data/embeddings.bin", "data/test.jsonl", "data/train.jsonl"]
    top = fetch(hub.url("/api/datasets/test-org/tiny-data/tree/main")).json()
    assert [i["path"] for i in top] == ["README.md", "data"]


def test_paths_info_form_post(hub):
    body = urllib.parse.urlencode([("paths", "config.json"), ("paths", "nope"),
                                   ("paths", SHARD), ("expand", "false")]).encode()
    resp = fetch(hub.url(f"/api/models/{TINY}/paths-info/main"), method="POST", body=body,
                 headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert resp.status == 200
    assert [(i["path"], "lfs" in i) for i in resp.json()] == [("config.json", False), (SHARD, True)]


# -- branches, commits, import ------------------------------------------------------------------------


def test_branch_move_changes_what_main_resolves_to(hub, tmp_path):
    changed = tmp_path / "v2"
    shutil.copytree(hub.sources[TINY], changed)
    (changed / "config.json").write_text("{}\n")
    second = hubemu.import_repo(hub.root, TINY, str(changed))
    resp = fetch(hub.resolve_url(TINY, "main", "config.json"))
    assert resp.header("X-Repo-Commit") == second and resp.body == b"{}\n"
    hub.move_branch(TINY, "main", hub.commits[TINY])
    resp = fetch(hub.resolve_url(TINY, "main", "config.json"))
    assert resp.header("X-Repo-Commit") == hub.commits[TINY]
    assert resp.body == source_bytes(hub, "config.json")
    hub.move_branch(TINY, "refs/pr/1", second)
    pr = fetch(hub.url(f"/api/models/{TINY}/revision/refs%2Fpr%2F1")).json()
    assert pr["sha"] == second
    for rev in ("refs%2Fpr%2F1", "refs/pr/1"):
        resp = fetch(hub.url(f"/{TINY}/resolve/{rev}/config.json"))
        assert resp.header("X-Repo-Commit") == second and resp.body == b"{}\n", rev


def test_import_is_deterministic_and_records_hashes(tmp_path, tiny_model):
    a = hubemu.import_repo(str(tmp_path / "a"), "o/n", tiny_model, tag="t")
    b = hubemu.import_repo(str(tmp_path / "b"), "o/n", tiny_model)
    assert a == b and len(a) == 40
    again = hubemu.import_repo(str(tmp_path / "a"), "o/n", tiny_model)
    assert again != a
    repo = json.loads((tmp_path / "a/models/o/n/repo.json").read_text())
    assert repo["branches"] == {"main": again} and repo["tags"] == {"t": a}
    hashes = json.loads((tmp_path / "a/models/o/n/commits" / f"{again}.hashes.json").read_text())
    assert hashes["parent"] == a
    for e in hashes["files"]:
        with open(os.path.join(tiny_model, e["path"]), "rb") as f:
            data = f.read()
        assert e["sha256"] == hashlib.sha256(data).hexdigest() and e["size"] == len(data)
        assert e["lfs"] == e["path"].endswith(".safetensors")
        stored = tmp_path / "a/models/o/n/commits" / again / e["path"]
        assert stored.read_bytes() == data
    bad = tmp_path / "missing"
    with pytest.raises(RuntimeError, match="not a directory"):
        hubemu.import_repo(str(tmp_path / "a"), "o/n", str(bad))


# -- the log ------------------------------------------------------------------------------------------


def test_log_records_each_request(hub):
    location = cdn_location(hub, headers={"Authorization": f"Bearer {hub.token}"})
    fetch(location, headers={"Range": "bytes=5-14"})
    log = hub.log()
    assert [(e["origin"], e["method"], e["status"]) for e in log] == [("hub", "HEAD", 302), ("cdn", "GET", 206)]
    assert log[0]["authorization"] is True and log[1]["authorization"] is False
    assert log[1]["range"] == "bytes=5-14" and log[1]["bytes_sent"] == 10
    assert log[1]["query"] == urllib.parse.urlsplit(location).query
    assert all(isinstance(e["time"], float) for e in log)
    hub.clear_log()
    assert hub.log() == []


# -- fault knobs ------------------------------------------------------------------------------------


def test_fail_next_429_with_retry_after_and_ratelimit_headers(hub):
    hub.config(fail_next=[{"match": "/api/models/", "status": 429, "retry_after": 7,
                           "ratelimit": True, "count": 2}])
    url = hub.url(f"/api/models/{TINY}/revision/main")
    for _ in range(2):
        resp = fetch(url)
        assert resp.status == 429
        assert resp.header("Retry-After") == "7" and resp.header("RateLimit") == '"api";r=0;t=7'
    assert fetch(url).status == 200
    assert [e["status"] for e in hub.log()] == [429, 429, 200]


def test_rate_limit_window(hub):
    hub.config(rate_limit={"api": 2, "window_s": 60})
    url = hub.url(f"/api/models/{TINY}")
    assert [fetch(url).status for _ in range(2)] == [200, 200]
    limited = fetch(url)
    assert limited.status == 429
    wait = int(limited.header("Retry-After"))
    assert 1 <= wait <= 60 and limited.header("RateLimit") == f'"api";r=0;t={wait}'
    assert fetch(hub.resolve_url(TINY, "main", "config.json")).status == 200  # resolves count apart


def test_error_rate_is_seeded_and_scoped(hub):
    url = hub.url(f"/api/models/{TINY}")
    runs = []
    for _ in range(2):
        hub.config(error_rate=0.5, error_scope="api", seed=42)
        runs.append([fetch(url).status for _ in range(30)])
    assert runs[0] == runs[1]
    assert set(runs[0]) - {200} <= {500, 502, 503} and 5 < runs[0].count(200) < 25
    assert all(fetch(hub.resolve_url(TINY, "main", "config.json")).status == 200 for _ in range(10))


def raw_get(url, headers=None):
    """(status, declared length, bytes actually read, error) without raising on short bodies."""
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    conn.request("GET", parts.path + "?" + parts.query, headers=headers or {})
    resp = conn.getresponse()
    declared = int(resp.getheader("Content-Length"))
    got, error = b"", None
    try:
        while chunk := resp.read1(65536) if hasattr(resp, "read1") else resp.read(65536):
            got += chunk
    except (http.client.IncompleteRead, ConnectionError, socket.timeout) as e:
        error = type(e).__name__
    conn.close()
    return resp.status, declared, got, error


@pytest.mark.parametrize("action", ["reset", "truncate"])
def test_fail_next_cuts_the_body(hub, action):
    data = source_bytes(hub, SHARD)
    location = cdn_location(hub)
    hub.config(fail_next=[{"origin": "cdn", "action": action, "after_bytes": 1000}])
    status, declared, got, _ = raw_get(location)
    assert status == 200 and declared == len(data)
    assert len(got) < declared and got == data[:len(got)]
    status, declared, got, error = raw_get(location)
    assert got == data and error is None
    assert hub.log()[-2]["fault"] == action


def test_random_reset_and_truncate_knobs(hub):
    data = source_bytes(hub, SHARD)
    location = cdn_location(hub)
    hub.config(reset_rate=1.0, reset_after_bytes=4096)
    _, _, got, _ = raw_get(location)
    assert len(got) <= 4096 and got == data[:len(got)]
    hub.config(reset_rate=0, truncate=True)
    _, declared, got, _ = raw_get(location)
    assert len(got) == declared // 2 and got == data[:len(got)]


def test_ignore_range_answers_200_with_everything(hub):
    data = source_bytes(hub, SHARD)
    location = cdn_location(hub)
    hub.config(ignore_range=True)
    resp = fetch(location, headers={"Range": "bytes=100-199"})
    assert resp.status == 200 and resp.body == data and resp.header("Content-Range") is None


def test_drop_closes_without_an_answer(hub):
    hub.config(fail_next=[{"match": "/resolve/", "action": "drop"}])
    with pytest.raises((http.client.RemoteDisconnected, ConnectionError)):
        fetch(hub.resolve_url(TINY, "main", "config.json"))
    assert fetch(hub.resolve_url(TINY, "main", "config.json")).status == 200


def test_latency_bandwidth_and_stall_slow_answers_down(hub):
    data_len = len(source_bytes(hub, SHARD))
    location = cdn_location(hub)
    hub.config(latency_ms=300)
    start = time.time()
    assert fetch(hub.url(f"/api/models/{TINY}")).status == 200
    assert time.time() - start >= 0.3
    hub.config(latency_ms=0, bandwidth_bps=4 * data_len)  # a quarter of a second for the file
    start = time.time()
    assert len(fetch(location).body) == data_len
    assert time.time() - start >= 0.24
    hub.config(bandwidth_bps=0, stall_ms=400)
    start = time.time()
    assert len(fetch(location).body) == data_len
    assert time.time() - start >= 0.4


def test_bad_knobs_are_refused_and_change_nothing(hub):
    before = fetch(hub.url("/_emulator/config")).json()
    for bad in ({"no_such_knob": 1}, {"latency_ms": "slow"}, {"error_rate": 2},
                {"fail_next": [{"action": "explode"}]}, {"error_scope": "everywhere"},
                {"page_size": 0, "latency_ms": 5}):
        resp = fetch(hub.url("/_emulator/config"), method="POST", body=bad)
        assert resp.status == 400, bad
        assert list(bad)[0] in resp.json()["error"]
    assert fetch(hub.url("/_emulator/config")).json() == before
    assert fetch(hub.url("/_emulator/config"), method="POST", body=b"{not json").status == 400


def test_hostile_input_gets_clean_errors(hub):
    injected = fetch(hub.url(f"/{TINY}/resolve/x%0d%0aSet-Cookie:%20a=b/config.json"))
    assert injected.status == 404 and injected.header("Set-Cookie") is None
    assert injected.header("X-Error-Code") == "RevisionNotFound"
    unicode_rev = fetch(hub.url(f"/api/models/{TINY}/revision/%E2%9C%93"))
    assert unicode_rev.status == 404
    for cursor in ("LTU", "!!!", "eA", "a"):  # "-5", not base64, "x", not decodable
        assert fetch(hub.url(f"/api/models/{TINY}/tree/main?cursor={cursor}")).status == 400
    for path in ("/api/models/..%2F../x/revision/main", f"/{TINY}/resolve/main/..%2F..%2Frepo.json",
                 "/api/models/only-one-part"):
        resp = fetch(hub.url(path))
        assert resp.status in (401, 404), path
    assert fetch(hub.url("/nowhere")).status == 404
    cdn = urllib.parse.urlsplit(hub.cdn_url)
    assert fetch(f"http://{cdn.netloc}/models/../../etc/passwd?Expires=1&Signature=x").status == 403
    assert fetch(hub.url(f"/api/models/{TINY}/revision/main")).status == 200  # still serving


def test_serve_refuses_a_bad_knob_on_the_command_line(tmp_path):
    result = subprocess.run([sys.executable, hubemu.EMULATOR_SCRIPT, "serve", str(tmp_path),
                             "--error-rate", "7"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 2 and "error_rate" in result.stderr


# -- process ----------------------------------------------------------------------------------------


def test_restart_keeps_ports_and_cdn_urls(hub_session):
    location = cdn_location(hub_session)
    hub_url, cdn_url = hub_session.hub_url, hub_session.cdn_url
    hub_session.restart()
    assert (hub_session.hub_url, hub_session.cdn_url) == (hub_url, cdn_url)
    assert fetch(location).status == 200


def test_external_cdn_points_at_root_relative_paths(hub):
    with hubemu.Emulator(hub.root, external_cdn="http://127.0.0.1:9/data") as other:
        location = cdn_location(other)
    parts = urllib.parse.urlsplit(location)
    assert location.startswith("http://127.0.0.1:9/data/models/")
    rel = urllib.parse.unquote(parts.path[len("/data/"):])
    with open(os.path.join(hub.root, rel), "rb") as f:
        assert f.read() == source_bytes(hub, SHARD)
    assert "Expires=" in parts.query and "Signature=" in parts.query


def test_parallel_keep_alive_range_reads(hub):
    data = source_bytes(hub, SHARD)
    parts = urllib.parse.urlsplit(cdn_location(hub))
    errors = []

    def reader(k):
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
        try:
            for i in range(25):
                start = (k * 7919 + i * 104729) % (len(data) - 5000)
                conn.request("GET", parts.path + "?" + parts.query,
                             headers={"Range": f"bytes={start}-{start + 4999}"})
                resp = conn.getresponse()
                if resp.status != 206 or resp.read() != data[start:start + 5000]:
                    errors.append((k, i, resp.status))
        except Exception as e:  # collected and asserted below, in the test's thread
            errors.append((k, repr(e)))
        finally:
            conn.close()

    threads = [threading.Thread(target=reader, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sum(e["origin"] == "cdn" for e in hub.log()) == 8 * 25


def test_log_file_gets_one_json_line_per_request(hub, tmp_path):
    log_path = tmp_path / "requests.jsonl"
    with hubemu.Emulator(hub.root, log_file=str(log_path)) as other:
        fetch(other.resolve_url(TINY, "main", "config.json"))
        fetch(other.resolve_url(TINY, "main", "nope.txt"))
        fetch(other.url("/_emulator/log"))
    # lines come in the order requests end: sort by arrival time
    lines = sorted((json.loads(line) for line in log_path.read_text().splitlines()), key=lambda e: e["time"])
    assert [(e["path"].rsplit("/", 1)[-1], e["status"]) for e in lines] == [("config.json", 200),
                                                                              ("nope.txt", 404)]
    assert lines[0]["bytes_sent"] == len(source_bytes(hub, "config.json"))
    assert all(e["duration_ms"] is not None for e in lines)


def test_server_exits_with_its_parent(hub, tmp_path):
    ready = tmp_path / "ready.json"
    parent = subprocess.Popen([sys.executable, "-c", (
        "import subprocess, sys, time\n"
        f"subprocess.Popen([sys.executable, {hubemu.EMULATOR_SCRIPT!r}, 'serve', {hub.root!r},"
        f" '--ready-file', {str(ready)!r}, '--exit-with-parent'])\n"
        f"while not __import__('os').path.exists({str(ready)!r}): time.sleep(0.05)\n")])
    assert parent.wait(30) == 0
    pid = json.loads(ready.read_text())["pid"]
    deadline = time.time() + 10
    while time.time() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        os.kill(pid, 9)
        pytest.fail("the emulator outlived the process that started it")
