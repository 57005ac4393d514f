"""A cluster behind one cache (scripts/cluster-cache.sh): bytes cross the uplink once, access to
gated repos stays with the Hub, tokens stay off the CDN and out of the cache, and mounts go to
the Hub directly when the cache dies (--fallback-endpoint)."""
import errno
import hashlib
import os
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack

import pytest

import hubemu
from cluster_site import ClusterCache
from cluster_site import BIG_FILE, GATED_REPO, MODEL_REPO, OTHER_TOKEN, PRIVATE_REPO, SCRIPT, TOKEN, sha256_of
from mount import Mount, errno_of
from nginx import free_port

SHARD = "model-00001-of-00003.safetensors"


def read_head(path, size=4096):
    with open(path, "rb") as f:
        return f.read(size)


def test_three_mounts_behind_one_cache_fetch_each_byte_once(site, cache):
    site.hub.config(page_size=3)           # tree listings page: the cache must point Link at itself
    expected = {name: sha256_of(os.path.join(site.model, name)) for name in site.files()}
    with ExitStack() as stack:
        mounts = [stack.enter_context(Mount(cache.url)) for _ in range(3)]   # each its own HF_HOME
        jobs = [(m, name) for name in site.files() for m in mounts]
        with ThreadPoolExecutor(len(jobs)) as pool:
            digests = list(pool.map(lambda job: sha256_of(os.path.join(job[0].path, MODEL_REPO, job[1])), jobs))
        for (m, name), digest in zip(jobs, digests):
            assert digest == expected[name], f"{name} read through the cache differs from its source"
        assert all(m.stats()["fallback_requests"] == 0 for m in mounts)
    cdn = site.cdn_log()
    assert cdn and not any(entry["authorization"] for entry in cdn)
    for name in site.lfs_files():
        sent = sum(entry["bytes_sent"] for entry in cdn if entry["path"].endswith("/" + name))
        assert site.size(name) <= sent <= 1.05 * site.size(name), \
            f"the CDN sent {sent} bytes of {name} ({site.size(name)} bytes) to three mounts"


def test_a_cache_answers_resolves_as_the_hub_does(site, cache):
    """HEAD of a resolve through the cache carries the Hub's headers (the cache followed the
    redirect itself: 200, no Location), ranges are the source's bytes, and huggingface_hub
    downloads the model through it unchanged."""
    commit = site.commits[MODEL_REPO]
    for name in (SHARD, "config.json"):
        direct = hubemu.fetch(site.hub.resolve_url(MODEL_REPO, commit, name), method="HEAD")
        cached = hubemu.fetch(cache.url + f"/{MODEL_REPO}/resolve/{commit}/{name}", method="HEAD")
        assert cached.status == 200 and cached.header("Location") is None
        for header in ("X-Repo-Commit", "X-Linked-Etag", "X-Linked-Size", "ETag"):
            assert cached.header(header) == direct.header(header), header
        with open(os.path.join(site.model, name), "rb") as f:
            f.seek(100)
            source = f.read(5000)
        part = hubemu.fetch(cache.url + f"/{MODEL_REPO}/resolve/{commit}/{name}",
                            headers={"Range": "bytes=100-5099"})
        assert part.status == 206 and part.body == source
    by_branch = hubemu.fetch(cache.url + f"/{MODEL_REPO}/resolve/main/{SHARD}", method="HEAD")
    assert by_branch.status == 307 and by_branch.header("Location") == f"/{MODEL_REPO}/resolve/{commit}/{SHARD}"

    home = os.path.join(cache.directory, "hf-home")
    env = dict(site.hub.client_env(home), HF_ENDPOINT=cache.url)
    script = "from huggingface_hub import snapshot_download; print(snapshot_download(%r))" % MODEL_REPO
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    snapshot = done.stdout.strip().splitlines()[-1]
    for name in site.files():
        assert sha256_of(os.path.join(snapshot, name)) == sha256_of(os.path.join(site.model, name)), name


def test_gated_and_private_files_cached_for_one_user_are_refused_to_others(site, cache):
    with Mount(cache.url, env={"HF_TOKEN": TOKEN}) as granted:
        for repo in (GATED_REPO, PRIVATE_REPO):
            path = os.path.join(granted.path, repo, SHARD)
            assert sha256_of(path) == sha256_of(os.path.join(site.model, SHARD))
    hits_before = cache_hits(cache)
    for env in ({}, {"HF_TOKEN": OTHER_TOKEN}):             # anonymous; valid but not granted
        with Mount(cache.url, env=env) as other:
            assert os.path.exists(os.path.join(other.path, GATED_REPO, SHARD))   # listings are public
            assert errno_of(read_head, os.path.join(other.path, GATED_REPO, SHARD)) == errno.EACCES
            assert "gated" in other.log_text()
            if not env:   # the private repo's listing, just cached for the token, is not shared
                assert errno_of(os.listdir, os.path.join(other.path, PRIVATE_REPO)) == errno.ENOENT
    private = hubemu.fetch(cache.url + f"/{PRIVATE_REPO}/resolve/{site.commits[PRIVATE_REPO]}/{SHARD}",
                           headers={"Range": "bytes=0-99"})
    assert private.status == 401 and private.header("X-Error-Code") == "RepoNotFound"
    assert cache_hits(cache) == hits_before, "the cache served bytes of a refused file"
    assert not any(entry["authorization"] for entry in site.cdn_log()), "a token reached the CDN"
    for token in (TOKEN, OTHER_TOKEN):
        assert cache.files_containing(token) == [], "a token is in the cache's files or logs"


def cache_hits(cache):
    with open(os.path.join(cache.directory, "logs", "access.log")) as f:
        return sum(1 for line in f if "cache=HIT" in line)


def test_cache_killed_mid_read_readers_fall_back_to_the_hub(site, cache):
    """A mount with --fallback-endpoint finishes its read from the Hub with the right bytes; one
    without fails (EIO) rather than serve anything wrong; both say so in their logs."""
    site.hub.config(bandwidth_bps=4_000_000)      # a slice takes seconds: the kill lands mid-read
    source = os.path.join(site.model, BIG_FILE)
    env = {"HF_TOKEN": TOKEN, "HUBFS_BACKOFF_MS": "100", "HUBFS_MAX_RETRIES": "2"}
    with Mount(cache.url, extra_args=["--fallback-endpoint", site.hub.hub_url], env=env) as falls_back, \
            Mount(cache.url, extra_args=["--block-size", "1M", "--readahead-max", "0"], env=env) as fails:
        with open(os.path.join(falls_back.path, GATED_REPO, BIG_FILE), "rb") as good, \
                open(os.path.join(fails.path, GATED_REPO, BIG_FILE), "rb") as bad:
            digest = hashlib.sha256(good.read(1 << 20))
            first = bad.read(1 << 20)
            cache.kill()
            for chunk in iter(lambda: good.read(1 << 20), b""):
                digest.update(chunk)
            assert digest.hexdigest() == sha256_of(source)
            with open(source, "rb") as f:
                assert first == f.read(1 << 20)
            assert errno_of(bad.read, 1 << 20) == errno.EIO
        stats = falls_back.stats()
        assert stats["endpoint_failures"] == 1 and stats["fallback_requests"] >= 1
        assert f"the Hub endpoint {cache.url} is failing" in falls_back.log_text()
        assert f"requests go to the fallback {site.hub.hub_url}" in falls_back.log_text()
        assert "--fallback-endpoint" in fails.log_text()
        assert fails.stats()["fallback_requests"] == 0
    assert not any(entry["authorization"] for entry in site.cdn_log()), "a token reached the CDN"


def test_endpoint_down_from_the_start_everything_goes_to_the_fallback(site):
    """Listing (pages whose Link names the fallback), resolving and reading all move to the
    fallback; the token goes to it (the Hub the user named) and never to the CDN."""
    site.hub.config(page_size=3)
    site.hub.clear_log()
    dead = f"http://127.0.0.1:{free_port()}"
    env = {"HF_TOKEN": TOKEN, "HUBFS_BACKOFF_MS": "50"}
    try:
        with Mount(dead, extra_args=["--fallback-endpoint", site.hub.hub_url + "/"], env=env) as m:
            assert sorted(os.listdir(os.path.join(m.path, GATED_REPO))) == site.files()
            assert sha256_of(os.path.join(m.path, GATED_REPO, SHARD)) == sha256_of(os.path.join(site.model, SHARD))
            stats = m.stats()
            assert stats["endpoint_failures"] == 1 and stats["fallback_requests"] >= 3
            assert m.log_text().count("is failing") == 1
    finally:
        site.hub.reset()
    log = site.hub.log()
    assert all(entry["authorization"] for entry in log if entry["origin"] == "hub")
    assert not any(entry["authorization"] for entry in log if entry["origin"] == "cdn")


def test_a_killed_cache_starts_again_on_its_directory(site, cache):
    """What a crash leaves (pid file, inner sockets) does not keep the cache from starting, and
    the bytes it had cached are still served without asking the CDN."""
    commit = site.commits[MODEL_REPO]
    url = f"/{MODEL_REPO}/resolve/{commit}/{SHARD}"
    first = hubemu.fetch(cache.url + url, headers={"Range": "bytes=0-999"})
    assert first.status == 206
    cache.kill()
    cache.start()
    site.hub.clear_log()
    again = hubemu.fetch(cache.url + url, headers={"Range": "bytes=0-999"})
    assert again.status == 206 and again.body == first.body and again.header("X-Hubfs-Cache") == "HIT"
    assert site.cdn_log() == []


def test_a_hub_over_tls_is_verified_with_the_ca_given(site, tmp_path):
    """The Hub and its CDN over HTTPS (tests/tls's nginx front, a CA of the test's own): with that
    CA the cache fetches and caches, host names checked; with another CA it serves nothing."""
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tls"))
    from tls_site import TestCA, TlsSite
    ca, other_ca = TestCA(str(tmp_path), "site CA"), TestCA(str(tmp_path), "other CA")
    commit = site.commits[MODEL_REPO]
    path = f"/{MODEL_REPO}/resolve/{commit}/{SHARD}"
    with open(os.path.join(site.model, SHARD), "rb") as f:
        expected = f.read(1000)
    with TlsSite(str(tmp_path), site.hub.root, ca) as tls:
        hub_by_name = tls.hub_url.replace("127.0.0.1", "localhost")   # certificates name hosts
        for bundle, status in ((ca.pem, 206), (other_ca.pem, 502)):
            cache = ClusterCache(str(tmp_path / f"cache-{status}"), hub_by_name, ["--ca-bundle", bundle]).start()
            try:
                answer = hubemu.fetch(cache.url + path, headers={"Range": "bytes=0-999"})
                assert answer.status == status
                if status == 206:
                    assert answer.body == expected
                    again = hubemu.fetch(cache.url + path, headers={"Range": "bytes=0-999"})
                    assert again.body == expected and again.header("X-Hubfs-Cache") == "HIT"
            finally:
                cache.stop()


@pytest.mark.parametrize("args, complaint", [
    (["0", "DIR"], "PORT must be"),
    (["8080", "DIR", "ftp://hub"], "UPSTREAM must be"),
    (["8080", "DIR", "--max-size", "lots"], "not a size"),
])
def test_the_script_refuses_bad_arguments_saying_why(tmp_path, args, complaint):
    args = [str(tmp_path / "c") if arg == "DIR" else arg for arg in args]
    done = subprocess.run([SCRIPT, *args], capture_output=True, text=True, timeout=30)
    assert done.returncode == 2 and complaint in done.stderr


def test_concurrent_first_reads_share_one_fetch(site, cache):
    """Nodes asking for the same cold slice at once: one fetch from the CDN, the rest wait for it."""
    commit = site.commits[MODEL_REPO]
    url = cache.url + f"/{MODEL_REPO}/resolve/{commit}/{SHARD}"
    barrier = threading.Barrier(6)

    def get(_):
        barrier.wait()
        return hubemu.fetch(url, headers={"Range": "bytes=4096-8191"}).body
    with ThreadPoolExecutor(6) as pool:
        bodies = list(pool.map(get, range(6)))
    with open(os.path.join(site.model, SHARD), "rb") as f:
        f.seek(4096)
        assert bodies == [f.read(4096)] * 6
    assert len(site.cdn_log()) == 1
