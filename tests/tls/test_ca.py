"""HTTPS as sites run it: nginx terminating TLS + HTTP/2 for the Hub and its CDN, with a CA made
by the test. hubfs trusts a CA given by CURL_CA_BUNDLE, REQUESTS_CA_BUNDLE, SSL_CERT_FILE (the
first one set) or --ca-bundle / -o ca_bundle=, reads byte-identical over HTTP/2, and a refused
certificate fails at once (one handshake, no retries) with a message saying what to do."""
import errno
import json
import os
import subprocess
import tempfile
import time

import pytest

from mount import HUBFS, Mount, errno_of, is_mounted
from tls_fixtures import PUBLIC_REPO, SHARD, mount_env

REFUSAL_BACKOFF_MS = 2000   # a retry would show as a wait this long, and as another handshake


def ca_choices(tls):
    """name -> (env additions, mount arguments) that give the site's CA."""
    return {
        "CURL_CA_BUNDLE": ({"CURL_CA_BUNDLE": tls.ca.pem}, []),
        "REQUESTS_CA_BUNDLE": ({"REQUESTS_CA_BUNDLE": tls.ca.pem}, []),
        "SSL_CERT_FILE": ({"SSL_CERT_FILE": tls.ca.pem}, []),
        "REQUESTS_CA_BUNDLE directory": ({"REQUESTS_CA_BUNDLE": tls.ca.hashed_directory()}, []),
        "--ca-bundle": ({}, ["--ca-bundle", tls.ca.pem]),
        "-o ca_bundle=": ({}, ["-o", f"ca_bundle={tls.ca.pem}"]),
        # the first variable set wins; the option wins over them all
        "CURL_CA_BUNDLE before the others": ({"CURL_CA_BUNDLE": tls.ca.pem,
                                              "REQUESTS_CA_BUNDLE": tls.other_ca.pem,
                                              "SSL_CERT_FILE": tls.other_ca.pem}, []),
        "--ca-bundle before CURL_CA_BUNDLE": ({"CURL_CA_BUNDLE": tls.other_ca.pem},
                                              ["--ca-bundle", tls.ca.pem]),
    }


@pytest.mark.parametrize("choice", ["CURL_CA_BUNDLE", "REQUESTS_CA_BUNDLE", "SSL_CERT_FILE",
                                    "REQUESTS_CA_BUNDLE directory", "--ca-bundle", "-o ca_bundle=",
                                    "CURL_CA_BUNDLE before the others",
                                    "--ca-bundle before CURL_CA_BUNDLE"])
def test_reads_over_http2_trusting_the_ca_given(tls, choice):
    env, args = ca_choices(tls)[choice]
    site = tls.site
    mark = site.logs.mark()
    with Mount(site.hub_url, env=mount_env(**env), extra_args=args) as m:
        tls.assert_same_bytes(m, PUBLIC_REPO)
    requests = site.logs.requests(since=mark)
    ports = {r["port"] for r in requests}
    assert site.hub_port in ports and site.cdn_port in ports, \
        f"expected requests to both the Hub and the CDN through TLS, got {requests}"
    assert all(r["protocol"] == "HTTP/2.0" for r in requests), \
        f"every request should come over HTTP/2: {[(r['protocol'], r['path']) for r in requests]}"
    assert any(r["port"] == site.cdn_port and r["path"].endswith(SHARD) and r["status"] == 206
               for r in requests), "the shard should be read in ranges from the CDN"
    assert not site.logs.broken_handshakes(site.hub_port, mark) + site.logs.broken_handshakes(site.cdn_port, mark)


def refusal_cases(tls):
    """name -> (env additions, endpoint, what the log must say). In all but "another host name",
    the handshake itself fails, and nginx logs it; a certificate for another name passes the
    handshake (curl checks the name after it) and the connection closes before any request,
    which nginx does not log."""
    site = tls.site
    empty_bundle = os.path.join(tls.work, "empty.pem")
    open(empty_bundle, "w").close()
    return {
        # empty variables (mount_env's default) are unset: they never turn verification off
        "system store only": ({}, site.hub_url, ["SSL certificate problem", "the system's CA store"]),
        "another CA": ({"CURL_CA_BUNDLE": tls.other_ca.pem}, site.hub_url,
                       ["SSL certificate problem", "from CURL_CA_BUNDLE"]),
        "another host name": ({"CURL_CA_BUNDLE": tls.ca.pem}, site.wrong_name_url,
                              ["no alternative certificate subject name", "is for another host name",
                               "a name its certificate holds (check HF_ENDPOINT)"]),
        "CURL_CA_BUNDLE wins over the others": (
            {"CURL_CA_BUNDLE": tls.other_ca.pem, "REQUESTS_CA_BUNDLE": tls.ca.pem, "SSL_CERT_FILE": tls.ca.pem},
            site.hub_url, ["SSL certificate problem", "from CURL_CA_BUNDLE"]),
        "REQUESTS_CA_BUNDLE wins over SSL_CERT_FILE": (
            {"REQUESTS_CA_BUNDLE": tls.other_ca.pem, "SSL_CERT_FILE": tls.ca.pem},
            site.hub_url, ["SSL certificate problem", "from REQUESTS_CA_BUNDLE"]),
        "a bundle without certificates": ({"SSL_CERT_FILE": empty_bundle}, site.hub_url,
                                          ["cannot load the CA bundle", "from SSL_CERT_FILE"]),
    }


@pytest.mark.parametrize("case", ["system store only", "another CA", "another host name",
                                  "CURL_CA_BUNDLE wins over the others",
                                  "REQUESTS_CA_BUNDLE wins over SSL_CERT_FILE",
                                  "a bundle without certificates"])
def test_refused_certificate_fails_at_once_saying_what_to_do(tls, case):
    env, endpoint, expected = refusal_cases(tls)[case]
    site = tls.site
    mark = site.logs.mark()
    with Mount(endpoint, env=mount_env(HUBFS_BACKOFF_MS=str(REFUSAL_BACKOFF_MS), **env)) as m:
        started = time.monotonic()
        assert errno_of(os.stat, os.path.join(m.path, PUBLIC_REPO)) == errno.EIO
        elapsed = time.monotonic() - started
        log = m.log_text()
    how_to_trust = [] if case == "another host name" else [
        "--ca-bundle FILE or in CURL_CA_BUNDLE, REQUESTS_CA_BUNDLE or SSL_CERT_FILE"]
    for text in expected + how_to_trust:
        assert text in log, f"the daemon's log should say {text!r}: {log[-2000:]}"
    # a retry would first wait REFUSAL_BACKOFF_MS, and make another handshake
    assert elapsed < REFUSAL_BACKOFF_MS / 1000, f"a refused certificate was retried ({elapsed:.2f} s)"
    assert not site.logs.requests(since=mark), "no request may pass a refused certificate"
    if case != "another host name":
        handshakes = settled_broken_handshakes(site, int(endpoint.rsplit(":", 1)[1]), mark)
        # stat ORG/NAME asks the Hub twice (the org's listing, the repo's revision): one
        # handshake each; a retried request would make more (and wait the backoff, above).
        assert 1 <= len(handshakes) <= 2, f"one connection attempt per request expected, nginx saw: {handshakes}"


def settled_broken_handshakes(site, port, mark):
    """The broken handshakes nginx logged since mark, once the first has shown up (nginx logs
    each when it notices the client gone, a moment after the client moved on)."""
    deadline = time.monotonic() + 5
    while not site.logs.broken_handshakes(port, mark) and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)
    return site.logs.broken_handshakes(port, mark)


@pytest.mark.parametrize("how", ["--ca-bundle", "SSL_CERT_FILE"])
def test_unreadable_bundle_stops_the_mount_with_its_name(tls, how):
    missing = os.path.join(tls.work, "no-such-ca.pem")
    env = dict(os.environ, **mount_env(HF_HOME=os.path.join(tls.work, "home"),
                                       **({"SSL_CERT_FILE": missing} if how == "SSL_CERT_FILE" else {})))
    mountpoint = tempfile.mkdtemp(prefix="hubfs-tls-mnt-")
    args = ["--ca-bundle", missing] if how == "--ca-bundle" else []
    try:
        result = subprocess.run([HUBFS, "mount", mountpoint, "-f", "--endpoint", tls.site.hub_url,
                                 "--no-disk-cache", *args], env=env, capture_output=True, text=True,
                                timeout=60)
        assert not is_mounted(mountpoint)
    finally:
        if is_mounted(mountpoint):
            subprocess.run(["fusermount3", "-uz", mountpoint], capture_output=True, timeout=30)
        os.rmdir(mountpoint)
    assert result.returncode != 0
    assert f'cannot use the CA bundle "{missing}" given by {how} (No such file or directory)' in result.stderr, \
        result.stderr


def run_in_own_mount_namespace(script, *args, env=None):
    """sh -c script args in a private mount namespace (binds there are seen by nothing else)."""
    return subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-ec", script,
                           "sh", *args], env=env, capture_output=True, text=True, timeout=60)


def test_system_store_is_trusted_and_a_given_bundle_replaces_it(tls):
    """With the site's CA in the system store (bound over /etc/ssl/certs in a namespace of our
    own), the Hub client trusts it without being told; given a bundle, it trusts that bundle
    only, as requests does with REQUESTS_CA_BUNDLE."""
    probe = os.path.join(os.environ["HUBFS_BUILD_DIR"], "tests", "hub", "hub_probe")
    store = tls.ca.hashed_directory("ca-certificates.crt")   # Debian's curl reads both
    script = 'mount --bind "$1" /etc/ssl/certs; shift; exec "$@"'
    base = dict(os.environ, HF_ENDPOINT=tls.site.hub_url, HF_HOME=os.path.join(tls.work, "home"),
                **mount_env(HUBFS_BACKOFF_MS="2000"))
    try:
        check = run_in_own_mount_namespace("true")
    except FileNotFoundError:
        check = None
    if check is None or check.returncode != 0:
        pytest.skip(f"needs `unshare --mount` (root in a namespace-capable container): {check and check.stderr}")
    outcomes = {}
    for name, extra in (("system store", {}), ("another CA given", {"CURL_CA_BUNDLE": tls.other_ca.pem})):
        result = run_in_own_mount_namespace(script, store, probe, "resolve", "model", PUBLIC_REPO, "main",
                                            env=dict(base, **extra))
        assert result.returncode == 0, result.stderr
        outcomes[name] = json.loads(result.stdout)
    assert outcomes["system store"]["status"] == "ok", outcomes["system store"]
    refused = outcomes["another CA given"]
    assert refused["status"] == "network" and "SSL certificate problem" in refused["message"], refused
    assert refused["counters"]["requests"] == 1 and refused["counters"]["retries"] == 0, refused
