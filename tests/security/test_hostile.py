"""A hostile or broken Hub, end to end through the mount. A proxy in front of the emulator
(hostile_proxy.py) rewrites chosen answers; tests/hub covers the same answers at the client's
level, this checks what a user of the mount then sees:

- tree listings with names like `..`, `.`, `%2e%2e`, `/` inside names, NUL, newlines, very long
  names, absolute paths or paths leaving the repo: the entry is left out (the rest of the repo is
  served, and the log says what was left out and why), never a name that is not a plain directory
  entry, never a file outside the mount's namespace; past a million entries the listing is cut,
  the first million served;
- malformed, huge, deeply nested or incomplete JSON; a Content-Range or X-Linked-Size that
  disagrees; redirect loops; redirects to file:// or to a dead port: clean errors (EIO, ENOENT,
  EACCES) in bounded time, never a wrong byte, and the daemon lives on and exits cleanly.
"""
import errno
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.parse

import pytest

import harness
import hubemu
from hostile_proxy import HostileProxy
from mount import errno_of

DEADLINE_S = 60 if harness.SANITIZED else 30
REPO = "rel/tiny"
CLEAN_ERRORS = ("EIO", "ENOENT", "EACCES", "EPERM", "ENAMETOOLONG")
SHA_OID = "0123456789abcdef0123456789abcdef01234567"

PROBE = r"""
import errno, json, os, sys
root = sys.argv[1]
out = {"error": None, "names": [], "files": {}}
try:
    for dirpath, dirnames, filenames in os.walk(root, onerror=lambda e: (_ for _ in ()).throw(e)):
        for name in dirnames + filenames:
            out["names"].append(os.path.relpath(os.path.join(dirpath, name), root))
        for name in filenames:
            path = os.path.join(dirpath, name)
            try:
                with open(path, "rb") as f:
                    out["files"][os.path.relpath(path, root)] = f.read().hex()
            except OSError as e:
                out["files"][os.path.relpath(path, root)] = errno.errorcode[e.errno]
except OSError as e:
    out["error"] = errno.errorcode.get(e.errno, str(e.errno))
print(json.dumps(out))
"""


def probe(path, figures=None):
    """Walks path and reads every file, in a child with a deadline: (error, names, files)."""
    try:
        done = subprocess.run([sys.executable, "-c", PROBE, path], capture_output=True, text=True,
                              timeout=DEADLINE_S)
    except subprocess.TimeoutExpired:
        if figures is not None:
            figures.hangs += 1
        raise harness.Hang(f"walking {path} did not finish within {DEADLINE_S} s")
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    return out["error"], out["names"], {k: (v if v.isupper() else bytes.fromhex(v)) for k, v in out["files"].items()}


def read_one(path, figures=None, length=-1):
    """bytes of path (its first `length`, or all), or its errno name; read in a child with a
    deadline."""
    code = ("import sys, errno\ntry:\n"
            "    sys.stdout.buffer.write(b'OK' + open(sys.argv[1], 'rb').read(int(sys.argv[2])))\n"
            "except OSError as e:\n    sys.stdout.buffer.write(errno.errorcode[e.errno].encode())\n")
    try:
        done = subprocess.run([sys.executable, "-c", code, path, str(length)], capture_output=True,
                              timeout=DEADLINE_S)
    except subprocess.TimeoutExpired:
        if figures is not None:
            figures.hangs += 1
        raise harness.Hang(f"reading {path} did not finish within {DEADLINE_S} s")
    return done.stdout[2:] if done.stdout.startswith(b"OK") else done.stdout.decode()


def source_bytes(hub, rel):
    with open(os.path.join(hub.sources[REPO], rel), "rb") as f:
        return f.read()


def mounted_through(proxy, extra=()):
    env = {"HF_TOKEN": harness.TOKEN, **harness.FAST_RETRY_ENV, "HUBFS_MAX_RETRIES": "2"}
    return harness.Mount(proxy.url, extra_args=["--block-size", "1M", *extra], env=env)


def assert_daemon_healthy(m):
    with open(os.path.join(m.path, ".hubfs/stats")) as f:
        json.load(f)
    assert m.proc.poll() is None, "the daemon died"


def snapshot_tmp():
    return set(os.listdir("/tmp"))


# ------------------------------------------------------------------------------------------------
# Tree listings with hostile names
# ------------------------------------------------------------------------------------------------

HOSTILE_NAMES = ["..", ".", "%2e%2e", "a/../../../../escaped-by-dotdot", "/escaped-absolute",
                 "../escaped-parent", "dir//empty-part", "dir/./dot-part", "nul\u0000byte",
                 "n" * 300, "deep/" * 900 + "f", "back\\slash", "dir/", "", "x/..",
                 "new\nline", "carriage\rreturn", "tab\tname", "dir/" + "n" * 256 + "/f"]
# Names the Hub may legitimately have: shown as is (a literal file name), never interpreted.
LITERAL_OK = {"%2e%2e", "back\\slash"}


def tree_with(proxy, extra_items):
    def respond(request):
        status, headers, body = proxy.forward(request)
        items = json.loads(body) + extra_items if status == 200 else None
        return (status, headers, json.dumps(items).encode()) if items is not None else (status, headers, body)
    return respond


@pytest.mark.parametrize("name", HOSTILE_NAMES, ids=lambda n: repr(n)[:24])
def test_hostile_tree_names(hub, figures, name):
    before = snapshot_tmp()
    real = sorted(rel for rel, _ in hub.files(REPO))
    with HostileProxy(hub.url) as proxy:
        item = {"type": "file", "oid": SHA_OID, "size": 5, "path": name}
        proxy.script("GET", f"/api/models/{REPO}/tree/", tree_with(proxy, [item]))
        with mounted_through(proxy) as m:
            repo_dir = os.path.join(m.path, REPO)
            error, names, files = probe(repo_dir, figures)
            assert_daemon_healthy(m)
            log = m.log_text()
        assert proxy.hits, "the hostile listing was never asked for"
    print(f"hostile name {name[:40]!r}: error={error} shown={sorted(set(names) - set(real))[:5]}")
    figures.count("hostile_name")
    # One entry the filesystem cannot show never takes the rest of the repo down with it.
    assert error is None, f"the whole repo failed ({error}) for one entry named {name[:40]!r}"
    for rel in names:
        for part in rel.split("/"):
            assert part not in ("", ".", "..") and not any(ord(c) < 0x20 for c in part) \
                and len(part.encode()) <= 255, rel
    shown = set(names) - set(real) - {os.path.dirname(r) for r in real if "/" in r}
    assert shown <= LITERAL_OK, f"hostile entries shown: {shown}"
    for rel in real:                          # the honest entries are still served right
        assert files[rel] == source_bytes(hub, rel), rel
    assert files["config.json"] == source_bytes(hub, "config.json")
    for rel in shown:                         # the Hub has no such file: a clean error
        assert files.get(rel) in CLEAN_ERRORS, (rel, files.get(rel))
    gaps = [line for line in log.splitlines() if "file list incomplete" in line]
    if name in LITERAL_OK:
        assert name in shown and not gaps, gaps
    else:                                     # the log says what was left out, and why
        assert len(gaps) == 1 and f"{REPO}@main: file list incomplete: 1 entry left out" in gaps[0], gaps
        assert "no local path can hold its name" in gaps[0], gaps
        assert all(0x20 <= ord(c) < 0x7f for c in gaps[0]), gaps   # sanitized: one clean line
    created = {n for n in snapshot_tmp() - before if n.startswith("escaped") or n == "f"}
    assert not created, f"files appeared outside the mount: {created}"


def test_odd_names_in_a_real_commit_are_left_out_and_logged(hub, figures, tmp_path):
    """An honest Hub with files whose names no local path can hold (a newline, a tab): the
    emulator serves them as the Hub would; the mount shows every other file, byte for byte. A
    remount takes the file list from the cache's metadata and says again what it left out."""
    src = tmp_path / "odd"
    shutil.copytree(hub.sources[REPO], src)
    odd = ["new\nline.json", "tab\tname.txt", "sub/ret\rurn.bin"]
    os.makedirs(src / "sub")
    (src / "sub" / "normal.txt").write_bytes(b"a normal file next to an odd one\n")
    for rel in odd:
        (src / rel).write_bytes(b"odd\n")
    repo = "rel/odd-names"
    hubemu.import_repo(hub.root, repo, str(src))
    expected = sorted(os.path.relpath(os.path.join(d, n), src) for d, _, ns in os.walk(src) for n in ns
                      if os.path.relpath(os.path.join(d, n), src) not in odd)
    cache = str(tmp_path / "cache")
    for mount_round in ("first", "remount"):
        with harness.mount(hub, cache_dir=cache) as m:
            error, names, files = probe(os.path.join(m.path, repo), figures)
            assert_daemon_healthy(m)
            log = m.log_text()
        figures.count("odd_names")
        assert error is None, mount_round
        assert sorted(rel for rel in names if rel in files) == expected, mount_round
        for rel in expected:
            with open(src / rel, "rb") as f:
                assert files[rel] == f.read(), (mount_round, rel)
        gaps = [line for line in log.splitlines() if "file list incomplete" in line]
        assert len(gaps) == 1 and f"{repo}@main: file list incomplete: 3 entries left out" in gaps[0], \
            (mount_round, gaps)
        assert '"new?line.json" (a control character such as a newline)' in gaps[0], (mount_round, gaps)


def test_tree_past_a_million_entries_keeps_the_first_million(hub, figures):
    """The listing is cut at 1,000,000 entries: the first million are served, the rest left out
    and the log says so; the repo as a whole stays readable."""
    limit, extra, per_page = 1000000, 5, 100000
    tree = f"/api/models/{REPO}/tree/"
    listing = {}       # "base": the entries of page 0 before the synthetic ones

    def respond(request):
        page = int(urllib.parse.parse_qs(request.query).get("page", ["0"])[0])
        items = []
        if page == 0:
            status, _, body = proxy.forward(request)
            assert status == 200
            items = json.loads(body) + [{"type": "directory", "oid": SHA_OID, "path": "many"}]
            listing["base"] = len(items)
        synthetic_total = limit + extra - listing["base"]
        first, last = page * per_page, min((page + 1) * per_page, synthetic_total)
        items += [{"type": "directory", "oid": SHA_OID, "path": f"many/{i:07d}"}
                  for i in range(first, last)]
        headers = {"Content-Type": "application/json"}
        if last < synthetic_total:
            headers["Link"] = f'<{proxy.url}{request.path}?page={page + 1}>; rel="next"'
        return 200, headers, json.dumps(items, separators=(",", ":")).encode()

    with HostileProxy(hub.url) as proxy:
        proxy.script("GET", tree, respond)
        with mounted_through(proxy) as m:
            repo_dir = os.path.join(m.path, REPO)
            started = time.monotonic()
            config = read_one(os.path.join(repo_dir, "config.json"), figures)
            took = time.monotonic() - started
            first_cut = limit - listing["base"]          # synthetic entries kept: 0 .. first_cut-1
            kept = os.path.isdir(os.path.join(repo_dir, f"many/{first_cut - 1:07d}"))
            cut = errno_of(os.stat, os.path.join(repo_dir, f"many/{first_cut:07d}"))
            assert_daemon_healthy(m)
            log = m.log_text()
        pages = proxy.hits.get(tree, 0)
    figures.count("million_entries")
    print(f"a listing of {limit + extra} entries in {pages} pages: config.json after {took:.1f} s")
    assert config == source_bytes(hub, "config.json")
    assert kept and cut == errno.ENOENT
    gaps = [line for line in log.splitlines() if "file list incomplete" in line]
    assert len(gaps) == 1 and (f"entries past the first {limit} left out (the list has more than "
                               f"{limit} entries)") in gaps[0], gaps


def address_space(pid):
    """Bytes of the process's address space (VmSize: reserved, not only resident)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) << 10
    raise AssertionError(f"no VmSize for process {pid}")


def test_a_file_claiming_128_tib_costs_no_memory_for_its_size(hub, figures):
    """The tree may claim any size: opening and reading such a file is a clean error, and the
    daemon reserves nothing in proportion to the claim (not even address space). Growth is
    measured, not the largest region: a sanitizer's shadow is a 14 TiB region from the start."""
    claimed = 1 << 47
    with HostileProxy(hub.url) as proxy:
        item = {"type": "file", "oid": SHA_OID, "size": claimed, "path": "huge.bin"}
        proxy.script("GET", f"/api/models/{REPO}/tree/", tree_with(proxy, [item]))
        with mounted_through(proxy) as m:
            path = os.path.join(m.path, REPO, "huge.bin")
            os.listdir(os.path.join(m.path, REPO))
            before = address_space(m.pid)
            assert os.stat(path).st_size == claimed
            got = read_one(path, figures, length=1 << 20)
            grown = address_space(m.pid) - before
            assert_daemon_healthy(m)
    figures.count("huge_claim")
    assert got in CLEAN_ERRORS, got if isinstance(got, str) else f"{len(got)} bytes served"
    assert grown < 1 << 30, f"{grown >> 20} MiB more address space for a file claiming {claimed >> 40} TiB"


def test_hostile_lfs_oid_never_becomes_a_cache_path(hub, figures, tmp_path):
    """An lfs.oid (the cache's key) that is a path: refused, or kept inside the cache."""
    cache_dir = str(tmp_path / "cache")
    target = "model-00001-of-00003.safetensors"
    evil = "../../../../../../tmp/hubfs-evil-oid"

    def respond(request):
        status, headers, body = proxy.forward(request)
        items = json.loads(body)
        for item in items:
            if item["path"] == target:
                item["lfs"]["oid"] = evil
        return status, headers, json.dumps(items).encode()

    with HostileProxy(hub.url) as proxy:
        proxy.script("GET", f"/api/models/{REPO}/tree/", respond)
        with mounted_through(proxy, ["--cache-dir", cache_dir]) as m:
            got = read_one(os.path.join(m.path, REPO, target), figures)
            assert_daemon_healthy(m)
    figures.count("hostile_oid")
    assert got in CLEAN_ERRORS or got == source_bytes(hub, target)
    assert not os.path.exists("/tmp/hubfs-evil-oid")
    for dirpath, _, names in os.walk(cache_dir):
        assert os.path.realpath(dirpath).startswith(os.path.realpath(cache_dir))


# ------------------------------------------------------------------------------------------------
# Names looked up in the mount
# ------------------------------------------------------------------------------------------------

def test_revision_and_repo_names_that_try_to_leave(hub, figures):
    """`NAME@..` and friends must not reach another revision or repo by URL normalisation."""
    with harness.mount(hub) as m:
        for name in ("tiny@..", "tiny@.", "tiny@%2e%2e", "tiny@..%2f..%2fmoving", "tiny@../moving",
                     "%2e%2e", "..%2ftiny", "tiny%2f..%2fmoving"):
            path = os.path.join(m.path, "rel", name)
            got = read_one(os.path.join(path, "config.json"), figures)
            assert got in CLEAN_ERRORS, f"{name} served {got[:60]!r}"
        assert_daemon_healthy(m)
    figures.count("hostile_lookup", 8)


# ------------------------------------------------------------------------------------------------
# Malformed JSON
# ------------------------------------------------------------------------------------------------

HUGE = 80 * 1024 * 1024     # past any sane bound on one API answer
BAD_INFO = {
    "not-json": b"{not json",
    "empty": b"",
    "array": b"[]",
    "no-sha": b'{"id": "rel/tiny", "siblings": []}',
    "sha-not-hex": b'{"id": "rel/tiny", "sha": "../../../../etc/passwd000000000000000000"}',
    "sha-number": b'{"id": "rel/tiny", "sha": 5}',
    "deep": lambda: b"[" * 200000 + b"]" * 200000,
    "huge": lambda: b'{"id": "rel/tiny", "sha": "' + b"a" * HUGE + b'"}',
}
BAD_TREE = {
    "object": b'{"error": "nope"}',
    "missing-fields": b'[{"type": "file"}]',
    "bad-size": b'[{"type": "file", "path": "x", "oid": "' + SHA_OID.encode() + b'", "size": -1}]',
    "huge-size": b'[{"type": "file", "path": "x", "oid": "' + SHA_OID.encode() + b'", "size": 1e30}]',
    "bad-type": b'[{"type": "symlink", "path": "x", "oid": "' + SHA_OID.encode() + b'", "size": 1}]',
    "deep": lambda: b"[" * 200000 + b"]" * 200000,
    "huge": lambda: (b"[" + b'{"type": "directory", "path": "d", "oid": "' + SHA_OID.encode() + b'"},'
                     * (HUGE // 60) + b"{}]"),
}


@pytest.mark.parametrize("which", ["info:" + k for k in BAD_INFO] + ["tree:" + k for k in BAD_TREE])
def test_malformed_api_json_is_a_clean_error(hub, figures, which):
    kind, case = which.split(":")
    body = (BAD_INFO if kind == "info" else BAD_TREE)[case]
    body = body() if callable(body) else body      # the big ones are only built when used
    prefix = f"/api/models/{REPO}/revision/" if kind == "info" else f"/api/models/{REPO}/tree/"
    with HostileProxy(hub.url) as proxy:
        proxy.script("GET", prefix, lambda request: (200, {"Content-Type": "application/json"}, body))
        with mounted_through(proxy) as m:
            started = time.monotonic()
            error, names, _ = probe(os.path.join(m.path, REPO), figures)
            took = time.monotonic() - started
            assert_daemon_healthy(m)
            # the mount still serves the honest repos
            good = read_one(os.path.join(m.path, "rel/moving/config.json"), figures)
        assert proxy.hits.get(prefix), f"hubfs never asked for {prefix}: the test proved nothing"
    print(f"malformed {which}: {error}")
    figures.count("malformed_json")
    assert error in CLEAN_ERRORS or (kind == "tree" and case == "huge" and error is None and names == ["d"]), \
        (error, names[:5])
    assert took < DEADLINE_S
    with open(os.path.join(hub.sources["rel/moving"], "config.json"), "rb") as f:
        assert good == f.read()


# ------------------------------------------------------------------------------------------------
# Data answers that disagree, and redirects
# ------------------------------------------------------------------------------------------------

TARGET = "model-00002-of-00003.safetensors"


def redirect_through(proxy, mangle):
    """Resolve answers of TARGET point at the proxy's other origin, which fetches the real CDN
    answer and lets mangle(request, status, headers, body) alter it."""
    def resolve(request):
        status, headers, body = proxy.forward(request)
        if status == 302 and "Location" in headers:
            headers["Location"] = proxy.foreign_url + "/mangled?u=" + urllib.parse.quote(headers["Location"], safe="")
        return status, headers, body

    def mangled(request):
        original = urllib.parse.parse_qs(request.query)["u"][0]
        wanted = {k: v for k, v in request.headers.items() if k.lower() == "range"}
        status, headers, body = proxy.fetch_url(original, wanted)
        return mangle(request, status, headers, body)

    proxy.script(None, f"/{REPO}/resolve/", lambda r: resolve(r) if TARGET in r.path else proxy.forward(r))
    proxy.script("GET", "/mangled", mangled)


def shifted_content_range(request, status, headers, body):
    if status == 206:
        first, last, size = [int(x) for x in headers["Content-Range"][6:].replace("/", "-").split("-")]
        headers["Content-Range"] = f"bytes {first + 1}-{last + 1}/{size}"
    return status, headers, body


def other_total_size(request, status, headers, body):
    if status == 206:
        span, size = headers["Content-Range"].split("/")
        headers["Content-Range"] = f"{span}/{int(size) + 4096}"
    return status, headers, body


def longer_body(request, status, headers, body):
    return status, headers, body + b"\0" * 4096 if status == 206 else body


@pytest.mark.parametrize("mangle", [shifted_content_range, other_total_size, longer_body],
                         ids=lambda f: f.__name__)
def test_data_answers_that_disagree_are_refused(hub, figures, mangle):
    with HostileProxy(hub.url) as proxy:
        redirect_through(proxy, mangle)
        with mounted_through(proxy) as m:
            got = read_one(os.path.join(m.path, REPO, TARGET), figures)
            honest = read_one(os.path.join(m.path, REPO, "model-00001-of-00003.safetensors"), figures)
            assert_daemon_healthy(m)
        assert proxy.hits.get("/mangled"), "the mangled answers were never asked for"
    figures.count("disagreeing_data")
    assert got == "EIO", got if isinstance(got, str) else f"{len(got)} bytes served"
    assert honest == source_bytes(hub, "model-00001-of-00003.safetensors")


@pytest.mark.parametrize("delta", [-4096, 4096])
def test_x_linked_size_disagreeing_with_the_tree(hub, figures, delta):
    def resolve(request):
        status, headers, body = proxy.forward(request)
        if "X-Linked-Size" in headers:
            headers["X-Linked-Size"] = str(int(headers["X-Linked-Size"]) + delta)
        return status, headers, body

    with HostileProxy(hub.url) as proxy:
        proxy.script(None, f"/{REPO}/resolve/", lambda r: resolve(r) if TARGET in r.path else proxy.forward(r))
        with mounted_through(proxy) as m:
            got = read_one(os.path.join(m.path, REPO, TARGET), figures)
            assert_daemon_healthy(m)
    figures.count("x_linked_size")
    assert got == "EIO", got if isinstance(got, str) else f"{len(got)} bytes served"


REDIRECTS = {
    "loop-same-url": lambda proxy, request: f"{proxy.url}{request.path}",
    "loop-relative": lambda proxy, request: request.path,
    "ping-pong": lambda proxy, request: request.path + ("x" if not request.path.endswith("x") else ""),
    "file-url": lambda proxy, request: "file:///etc/passwd",
    "ftp-url": lambda proxy, request: "ftp://127.0.0.1/etc/passwd",
    "dead-port": lambda proxy, request: "http://127.0.0.1:9/blob",
    "no-host": lambda proxy, request: "http:///etc/passwd",
}


@pytest.mark.parametrize("kind", list(REDIRECTS))
def test_bad_redirects_are_clean_errors(hub, figures, kind):
    with HostileProxy(hub.url) as proxy:
        def redirect(request):
            if request.method == "HEAD" or request.method == "GET":
                return 302, {"Location": REDIRECTS[kind](proxy, request)}, b""
            return proxy.forward(request)
        proxy.script(None, f"/{REPO}/resolve/", lambda r: redirect(r) if TARGET in r.path else proxy.forward(r))
        with mounted_through(proxy) as m:
            started = time.monotonic()
            got = read_one(os.path.join(m.path, REPO, TARGET), figures)
            took = time.monotonic() - started
            assert_daemon_healthy(m)
        hops = sum(1 for r in proxy.requests if TARGET in r["path"])
    figures.count("bad_redirect")
    assert got in ("EIO", "EACCES"), got if isinstance(got, str) else f"{len(got)} bytes served"
    assert took < DEADLINE_S
    assert hops <= 3 * 12, f"{hops} requests: the redirects were followed without end"
