"""What the reliability and security suites share: a Hub emulator serving a few generated models,
mounts with fast retry settings, reads with a deadline in a child process, and the figures
(faults injected, bytes read under faults, wrong bytes, hangs) each test records.

Every read of a mounted file goes through reader.py in a child process run with a timeout: a
read that does not finish in time is a hang (recorded, and the test fails), never a stuck test.
"""
import collections
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
TESTS = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(TESTS, "support"))

import hubemu  # noqa: E402
from mount import Mount, is_mounted  # noqa: E402,F401

SANITIZED = os.environ.get("HUBFS_SANITIZED") == "1"
TOKEN = "hf_reliabilitySecretToken0123456789"
READER = os.path.join(HERE, "reader.py")

# Retries as the daemon does them, made fast: a stall is 2 s of silence (HF_HUB_DOWNLOAD_TIMEOUT),
# backoff 100 ms doubling (capped at 800 ms), 6 retries. The retry budget of one request is then
# at most 7 attempts x (2 s stall + 0.8 s wait) ≈ 20 s, which bounds every read's deadline below.
STALL_TIMEOUT_S = 2
MAX_RETRIES = 6
BACKOFF_MS = 100
FAST_RETRY_ENV = {"HF_HUB_DOWNLOAD_TIMEOUT": str(STALL_TIMEOUT_S), "HF_HUB_ETAG_TIMEOUT": "2",
                  "HUBFS_MAX_RETRIES": str(MAX_RETRIES), "HUBFS_BACKOFF_MS": str(BACKOFF_MS)}
RETRY_BUDGET_S = (MAX_RETRIES + 1) * (STALL_TIMEOUT_S + 8 * BACKOFF_MS / 1000.0)

# Sanitized builds run 2-5x slower: the same tests on less data and time, never skipped.
SCALE = 0.5 if SANITIZED else 1.0


class Hang(AssertionError):
    pass


# ------------------------------------------------------------------------------------------------
# The Hub
# ------------------------------------------------------------------------------------------------

class RelHub:
    """An emulator over a private store: rel/small (2 shards, ~50 MB; ~25 MB sanitized), rel/tiny
    (3 shards), rel/moving (main, and branch `next` with same-sized files of other bytes),
    rel/private and rel/gated (the token TOKEN may read both)."""

    def __init__(self, root):
        self.root = root
        small_opts = {"preset": "small", "shards": 2, "seed": 7}
        if SANITIZED:
            small_opts["layers"] = 2
        self.sources = {
            "rel/small": hubemu.cached_model(**small_opts),
            "rel/tiny": hubemu.cached_model(preset="tiny", shards=3, seed=3),
        }
        self.commits = {}
        for repo, src in self.sources.items():
            self.commits[repo] = hubemu.import_repo(root, repo, src)
        moving_a = hubemu.cached_model(preset="tiny", shards=1, seed=11)
        moving_b = hubemu.cached_model(preset="tiny", shards=1, seed=12)
        self.moving = {"a": (hubemu.import_repo(root, "rel/moving", moving_a), moving_a),
                       "b": (hubemu.import_repo(root, "rel/moving", moving_b, branch="next"), moving_b)}
        self.sources["rel/moving"] = moving_a
        for repo, flags in (("rel/private", {"private": True}), ("rel/gated", {"gated": True})):
            self.commits[repo] = hubemu.import_repo(root, repo, moving_a, **flags)
            self.sources[repo] = moving_a
        self.emulator = hubemu.Emulator(root, tokens=[TOKEN])

    def start(self):
        self.emulator.start()
        return self

    def close(self):
        self.emulator.close()

    def alive(self):
        return self.emulator.proc is not None and self.emulator.proc.poll() is None

    def ensure_running(self):
        """Back to a running, fault-free emulator with an empty log (after a test that broke it)."""
        if not self.alive():
            self.emulator.restart()
        else:
            try:
                self.emulator.reset()
            except Exception:
                self.emulator.restart()
        self.emulator.clear_log()

    @property
    def url(self):
        return self.emulator.hub_url

    def files(self, repo):
        """(relative path, source path) of every file of repo, sorted."""
        src = self.sources[repo]
        out = []
        for dirpath, _, names in os.walk(src):
            for name in names:
                full = os.path.join(dirpath, name)
                out.append((os.path.relpath(full, src), full))
        return sorted(out)

    def pairs(self, mnt, repo, only=None):
        """[mounted path, source path] of repo's files (those whose name contains `only`)."""
        return [[os.path.join(mnt.path, repo, rel), src] for rel, src in self.files(repo)
                if only is None or only in rel]

    def bytes_of(self, repo, only=None):
        return sum(os.path.getsize(src) for rel, src in self.files(repo) if only is None or only in rel)


def mount(hub, extra_args=(), env=None, **kw):
    """A Mount of hub with the token and the fast retry settings."""
    environment = {"HF_TOKEN": TOKEN, **FAST_RETRY_ENV}
    if SANITIZED:
        environment.setdefault("ASAN_OPTIONS", os.environ.get("ASAN_OPTIONS", "") + ":detect_leaks=1")
    environment.update(env or {})
    return Mount(hub.url, extra_args=list(extra_args), env=environment, **kw)


# ------------------------------------------------------------------------------------------------
# Reads with a deadline
# ------------------------------------------------------------------------------------------------

def run_reader(spec, timeout, figures=None):
    """Runs reader.py on spec with a deadline. A reader still running at the deadline is a hang:
    it is killed, counted in figures and Hang is raised."""
    proc = subprocess.Popen([sys.executable, READER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        out, err = proc.communicate(json.dumps(spec), timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        try:
            proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            pass  # unkillable (D state): still a hang, reported as such
        if figures is not None:
            figures.hangs += 1
        raise Hang(f"reader did not finish within {timeout:.0f} s: {spec['mode']} of "
                   f"{[p[0] for p in spec['pairs']][:4]}")
    if proc.returncode != 0:
        # SIGBUS is how an mmap read reports an I/O error: a clean failure, not wrong data
        return {"files": [], "bytes": 0, "wrong": 0, "reads": 0,
                "errors": {f"exit {proc.returncode}": 1}, "stderr": err[-2000:], "seconds": timeout}
    result = json.loads(out)
    if figures is not None:
        figures.add_result(result)
    return result


def read_all(pairs, timeout, figures=None, chunk=1 << 20, pause_s=0):
    """Sequential reads of every pair; returns reader.py's result."""
    return run_reader({"pairs": pairs, "mode": "seq", "chunk": chunk, "pause_s": pause_s},
                      timeout, figures)


def start_reader(spec):
    """A reader in the background: (process, spec). Finish with finish_reader."""
    proc = subprocess.Popen([sys.executable, READER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    proc.stdin.write(json.dumps(spec))
    proc.stdin.close()
    return proc


def finish_reader(proc, timeout, figures=None):
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(30)
        if figures is not None:
            figures.hangs += 1
        raise Hang(f"background reader did not finish within {timeout:.0f} s")
    out = proc.stdout.read()
    proc.stdout.close()
    err = proc.stderr.read()
    proc.stderr.close()
    if proc.returncode != 0:
        return {"files": [], "bytes": 0, "wrong": 0, "reads": 0,
                "errors": {f"exit {proc.returncode}": 1}, "stderr": err[-2000:]}
    result = json.loads(out)
    if figures is not None:
        figures.add_result(result)
    return result


def assert_correct_or_eio(result, allow_eio=True):
    """Every file either matched its source byte for byte (and by sha256), or failed with EIO."""
    assert result["wrong"] == 0, f"{result['wrong']} wrong bytes served: {result}"
    for f in result["files"]:
        if f["error"] is None:
            assert f["wrong"] == 0 and f["sha256"] == f["source_sha256"], f
        else:
            assert allow_eio and f["error"] == "EIO", f"{f['path']}: {f['error']} (only EIO is clean)"
    for name in result["errors"]:
        assert allow_eio and name == "EIO", f"unexpected failure {name}: {result}"


def correct_files(result):
    return [f for f in result["files"] if f["error"] is None and f["sha256"] == f["source_sha256"]]


def run_with_deadline(args, timeout, figures=None):
    """A command (ls, stat, cat) with a deadline; a timeout is a hang."""
    started = time.monotonic()
    try:
        done = subprocess.run(args, capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        if figures is not None:
            figures.hangs += 1
        raise Hang(f"{' '.join(args)} did not finish within {timeout} s")
    return done, time.monotonic() - started


# ------------------------------------------------------------------------------------------------
# Figures
# ------------------------------------------------------------------------------------------------

class Figures:
    """Per test module: faults injected (by kind), bytes read under faults, wrong bytes, hangs.
    Written to $HUBFS_BUILD_DIR/reliability-figures/<module>.json at the end of the module."""

    def __init__(self, name):
        self.name = name
        self.faults = collections.Counter()
        self.bytes_under_faults = 0
        self.wrong = 0
        self.hangs = 0
        self.eio_files = 0

    def add_result(self, result):
        self.bytes_under_faults += result["bytes"]
        self.wrong += result["wrong"]
        self.eio_files += sum(1 for f in result.get("files", []) if f.get("error") == "EIO")

    def count(self, kind, n=1):
        if n:
            self.faults[kind] += n

    def save(self):
        directory = os.path.join(os.environ.get("HUBFS_BUILD_DIR") or tempfile.gettempdir(),
                                 "reliability-figures")
        os.makedirs(directory, exist_ok=True)
        with open(os.path.join(directory, self.name + ".json"), "w") as f:
            json.dump({"faults": dict(self.faults), "bytes_under_faults": self.bytes_under_faults,
                       "wrong_bytes": self.wrong, "hangs": self.hangs, "eio_files": self.eio_files,
                       "sanitized": SANITIZED}, f, indent=1)


def data_requests(log):
    """Log entries of data transfers (resolve GETs of small files and CDN GETs)."""
    return [e for e in log if e["method"] == "GET" and e["scope"] in ("cdn", "resolve")]


def range_length(entry):
    """Bytes a ranged request asked for, None when not ranged."""
    r = entry.get("range")
    if not r or not r.startswith("bytes=") or "," in r:
        return None
    first, _, last = r[6:].partition("-")
    try:
        return int(last) - int(first) + 1
    except ValueError:
        return None


def cut_bodies(log):
    """Data answers whose body stopped short of what was promised (reset or truncated)."""
    cut = 0
    for e in data_requests(log):
        want = range_length(e)
        if e["status"] == 206 and want is not None and e["bytes_sent"] < want:
            cut += 1
    return cut


def injected(log, kind):
    """Count of log entries showing one fault kind, judged from the log alone."""
    if kind == "5xx":
        return sum(1 for e in log if (e.get("status") or 0) >= 500)
    if kind == "429":
        return sum(1 for e in log if e.get("status") == 429)
    if kind == "cut":
        return cut_bodies(log)
    if kind == "range_ignored":
        return sum(1 for e in data_requests(log) if e.get("range") and e["status"] == 200)
    if kind == "cdn_refused":
        return sum(1 for e in log if e["origin"] == "cdn" and e["status"] == 403)
    if kind == "drop":
        return sum(1 for e in log if e.get("status") == 0)
    raise ValueError(kind)


# ------------------------------------------------------------------------------------------------
# Processes and mounts
# ------------------------------------------------------------------------------------------------

def rss_of(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def kill_daemon(m):
    """SIGKILL the daemon and clean the dead mount (fusermount3 -uz)."""
    m.proc.send_signal(signal.SIGKILL)
    m.proc.wait(30)
    subprocess.run(["fusermount3", "-uz", m.path], capture_output=True, timeout=30)
    assert not is_mounted(m.path)
    m.returncode = m.proc.returncode
    m.proc = None


def tmpfs(size):
    """A fresh tmpfs of `size` (e.g. "20m"); returns its path. Unmount with drop_tmpfs."""
    path = tempfile.mkdtemp(prefix="hubfs-tmpfs-")
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", path],
                   check=True, capture_output=True, timeout=30)
    return path


def drop_tmpfs(path):
    for args in (["umount", path], ["umount", "-l", path]):
        if not is_mounted(path):
            break
        subprocess.run(args, capture_output=True, timeout=30)
    shutil.rmtree(path, ignore_errors=True)
