"""The Hub token goes to the Hub's origin and nowhere else: never to the CDN or to any redirect
target of another origin (judged from the servers' own request records), and never into the
daemon's log (FUSE debug mode included), the stats file, xattrs, error text, the command line,
the mount table or the cache's files."""
import errno
import json
import os
import urllib.parse

import harness
from harness import TOKEN, assert_correct_or_eio, read_all
from hostile_proxy import HostileProxy
from mount import errno_of

READ_DEADLINE_S = 120 if harness.SANITIZED else 60


def token_fragments(token):
    """The token and pieces of it long enough to identify it."""
    return [token, token[3:], token[-16:], urllib.parse.quote(token)]


def assert_no_token(text, where, token=TOKEN):
    if isinstance(text, bytes):
        text = text.decode("latin-1")
    for piece in token_fragments(token):
        assert piece not in text, f"the token appears in {where}"


def every_xattr(root):
    """name=value of every xattr of every node under root, as text."""
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        for path in [dirpath] + [os.path.join(dirpath, n) for n in filenames]:
            try:
                names = os.listxattr(path)
            except OSError:
                continue
            for name in names:
                try:
                    out.append(f"{path} {name}={os.getxattr(path, name)!r}")
                except OSError as e:
                    out.append(f"{path} {name}: {e}")
    return "\n".join(out)


def test_token_reaches_only_the_hub_and_is_never_shown(hub, figures):
    # some random 5xx too, so that retry and error paths write their messages
    hub.emulator.config(error_rate=0.1, error_scope="all", seed=21)
    with harness.mount(hub, ["-d", "--block-size", "1M"]) as m:
        pairs = hub.pairs(m, "rel/tiny") + hub.pairs(m, "rel/private") + hub.pairs(m, "rel/gated")
        result = read_all(pairs, READ_DEADLINE_S, figures)
        # error paths: missing repo, missing file, missing revision
        assert errno_of(os.stat, os.path.join(m.path, "rel/no-such-repo")) == errno.ENOENT
        assert errno_of(os.stat, os.path.join(m.path, "rel/tiny/no-such-file")) == errno.ENOENT
        assert errno_of(os.stat, os.path.join(m.path, "rel/tiny@no-such-branch")) == errno.ENOENT
        with open(os.path.join(m.path, ".hubfs/stats")) as f:
            stats_text = f.read()
        xattrs = every_xattr(m.path)
        with open(f"/proc/{m.pid}/cmdline", "rb") as f:
            cmdline = f.read()
        with open("/proc/self/mountinfo") as f:
            mountinfo = f.read()
        cache_bytes = []
        for dirpath, _, names in os.walk(m.cache_dir):
            for name in names:
                with open(os.path.join(dirpath, name), "rb") as f:
                    cache_bytes.append(f.read())
        log_text = m.log_text()
    figures.count("5xx", harness.injected(hub.emulator.log(), "5xx"))
    assert_correct_or_eio(result)
    assert harness.correct_files(result)
    assert "unique:" in log_text, "no FUSE debug output: -d did not take effect"
    assert "rel/no-such-repo" in log_text, "the error paths wrote nothing: the test proved little"
    assert "user.hubfs.commit" in xattrs and json.loads(stats_text)
    for text, where in ((log_text, "the daemon's log"), (stats_text, "the stats file"),
                        (xattrs, "xattrs"), (cmdline, "the command line"),
                        (mountinfo, "the mount table"), (b"".join(cache_bytes), "the cache's files")):
        assert_no_token(text, where)

    log = hub.emulator.log()
    cdn = [e for e in log if e["origin"] == "cdn"]
    assert cdn and not any(e["authorization"] for e in cdn), "the token was sent to the CDN"
    hub_side = [e for e in log if e["origin"] == "hub"]
    assert hub_side and all(e["authorization"] for e in hub_side), "a Hub request went without it"


def test_refused_token_is_not_echoed(hub):
    wrong = "hf_refusedTokenDoNotPrint0987654321"
    with harness.mount(hub, ["-d"], env={"HF_TOKEN": wrong}) as m:
        failed = errno_of(os.listdir, os.path.join(m.path, "rel/tiny"))
        log_text = m.log_text()
    assert failed in (errno.EACCES, errno.EPERM), os.strerror(failed) if failed else "listed"
    assert "token" in log_text.lower()     # the refusal is explained...
    assert_no_token(log_text, "the daemon's log", token=wrong)   # ...without quoting it


def test_token_file_that_would_inject_a_header_is_refused(hub, tmp_path):
    """--token-file holding "abc\\r\\nX-Injected: 1": the CR LF would end the Authorization header
    and start another. The mount refuses to start, saying which file is bad, and the Hub never
    sees the injected header (nor any request)."""
    token_file = tmp_path / "token"
    token_file.write_bytes(b"abc\r\nX-Injected: 1\n")
    with HostileProxy(hub.url) as proxy:
        headers_seen = []

        def record(request):
            headers_seen.append(request.headers)
            return proxy.forward(request)

        proxy.script(None, "/", record)
        mount = harness.Mount(proxy.url, extra_args=["--token-file", str(token_file)],
                              env=harness.FAST_RETRY_ENV)
        refusal = None
        try:
            with mount as m:                   # had it started, a lookup would send the token
                errno_of(os.listdir, os.path.join(m.path, "rel/tiny"))
        except RuntimeError as e:
            refusal = str(e)
    injected = [h for h in headers_seen if any(k.lower() == "x-injected" for k in h)
                or any("\r" in v or "\n" in v or "X-Injected" in v for v in h.values())]
    assert not injected, f"the Hub saw an injected header: {injected[:1]}"
    assert refusal is not None, "the mount started with a token holding CR LF"
    assert f"--token-file: the Hub token from the token file {token_file} has whitespace, " \
        "control or non-ASCII characters inside it" in refusal, refusal
    assert "X-Injected" not in refusal and not headers_seen


def test_token_not_sent_to_redirect_targets_of_other_origins(hub, figures):
    """Resolve answers rewritten by a proxy: one shard redirected to another host name on the
    same port, one to the Hub's host on another port (the emulator's CDN on 127.0.0.1), one to
    the CDN as usual. All must be read right, and only the Hub origin may see the token."""
    with HostileProxy(hub.url) as proxy:
        cdn_port = urllib.parse.urlsplit(hub.emulator.cdn_url).port

        def redirected(request):
            status, headers, body = proxy.forward(request)
            location = headers.get("Location")
            if status == 302 and location:
                if "00001" in request.path:
                    location = proxy.foreign_url + "/elsewhere?u=" + urllib.parse.quote(location, safe="")
                elif "00002" in request.path:
                    location = location.replace(f"localhost:{cdn_port}", f"127.0.0.1:{cdn_port}")
                headers["Location"] = location
            return status, headers, body

        def elsewhere(request):
            original = urllib.parse.parse_qs(request.query)["u"][0]
            wanted = {k: v for k, v in request.headers.items() if k.lower() == "range"}
            return proxy.fetch_url(original, wanted)

        proxy.script(None, "/rel/tiny/resolve/", redirected)
        proxy.script(None, "/elsewhere", elsewhere)
        env = {"HF_TOKEN": TOKEN, **harness.FAST_RETRY_ENV}
        with harness.Mount(proxy.url, extra_args=["--block-size", "1M"], env=env) as m:
            result = read_all(hub.pairs(m, "rel/tiny"), READ_DEADLINE_S, figures)
        requests = list(proxy.requests)
    assert_correct_or_eio(result, allow_eio=False)
    hub_host = urllib.parse.urlsplit(proxy.url).netloc
    foreign_host = urllib.parse.urlsplit(proxy.foreign_url).netloc
    to_hub = [r for r in requests if r["host"] == hub_host]
    to_foreign = [r for r in requests if r["host"] == foreign_host]
    assert to_foreign, "the redirect to another host name was never followed"
    assert not any(r["authorization"] for r in to_foreign), "the token went to another host name"
    assert to_hub and all(r["authorization"] == f"Bearer {TOKEN}" for r in to_hub)
    cdn_log = [e for e in hub.emulator.log() if e["origin"] == "cdn"]
    assert any("00002" in e["path"] for e in cdn_log), "the other-port redirect was never followed"
    assert not any(e["authorization"] for e in cdn_log), "the token went to another port"
    figures.count("foreign_redirect", len(to_foreign))
