"""Test-side driver of the local Hub emulator (scripts/hub_emulator.py) and of the model
generator (scripts/make_model.py).

    with Emulator(root, tokens=["hf_test_token"]) as hub:
        hub.config(latency_ms=50)
        ... HF_ENDPOINT=hub.hub_url ...
        assert any(e["origin"] == "cdn" for e in hub.log())

The emulator runs as a subprocess (so a hung or crashed test never leaves a thread behind) and
is always killed: on stop(), on leaving the `with`, and at interpreter exit.
"""
import atexit
import http.client
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.parse

SOURCE_DIR = os.environ.get("HUBFS_SOURCE_DIR") or os.path.abspath(
    os.path.join(os.path.dirname(__file__), "..", ".."))
EMULATOR_SCRIPT = os.path.join(SOURCE_DIR, "scripts", "hub_emulator.py")
MAKE_MODEL_SCRIPT = os.path.join(SOURCE_DIR, "scripts", "make_model.py")

_live_processes = set()


@atexit.register
def _kill_leftovers():
    for proc in list(_live_processes):
        if proc.poll() is None:
            proc.kill()
            proc.wait()


class Response:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers  # case-insensitive lookup via .header()
        self.body = body

    def header(self, name, default=None):
        for k, v in self.headers:
            if k.lower() == name.lower():
                return v
        return default

    def json(self):
        return json.loads(self.body)


def fetch(url, method="GET", headers=None, body=None, timeout=30):
    """One HTTP request, redirects NOT followed (so tests see the 302 and its headers)."""
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    try:
        target = parts.path + ("?" + parts.query if parts.query else "")
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
        conn.request(method, target, body=body, headers=headers or {})
        resp = conn.getresponse()
        data = resp.read()
        return Response(resp.status, resp.getheaders(), data)
    finally:
        conn.close()


class Emulator:
    """A running `hub_emulator.py serve ROOT`."""

    def __init__(self, root, tokens=(), port=0, cdn_port=0, external_cdn=None, log_file=None,
                 knobs=None, extra_args=(), startup_timeout=20):
        self.root = os.path.abspath(root)
        self.tokens = list(tokens)
        self.port, self.cdn_port = port, cdn_port
        self.external_cdn, self.log_file = external_cdn, log_file
        self.knobs = dict(knobs or {})
        self.extra_args = list(extra_args)
        self.startup_timeout = startup_timeout
        self.proc = None
        self.hub_url = self.cdn_url = None
        self._workdir = tempfile.mkdtemp(prefix="hubemu-run-")
        atexit.register(shutil.rmtree, self._workdir, True)  # also when only stop() is called

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self):
        ready_file = os.path.join(self._workdir, "ready.json")
        if os.path.exists(ready_file):
            os.unlink(ready_file)
        cmd = [sys.executable, EMULATOR_SCRIPT, "serve", self.root, "--port", str(self.port),
               "--cdn-port", str(self.cdn_port), "--ready-file", ready_file, "--exit-with-parent"]
        for token in self.tokens:
            cmd += ["--token", token]
        if self.external_cdn:
            cmd += ["--external-cdn", self.external_cdn]
        if self.log_file:
            cmd += ["--log", self.log_file]
        for name, value in self.knobs.items():
            cmd += ["--" + name.replace("_", "-"), json.dumps(value)]
        cmd += self.extra_args
        stderr_path = os.path.join(self._workdir, "stderr.txt")
        with open(stderr_path, "wb") as stderr:
            self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=stderr)
        _live_processes.add(self.proc)
        deadline = time.time() + self.startup_timeout
        while not os.path.exists(ready_file):
            if self.proc.poll() is not None or time.time() > deadline:
                self.stop()
                with open(stderr_path, errors="replace") as f:
                    raise RuntimeError(f"hub emulator did not start: {f.read()[-2000:]}")
            time.sleep(0.02)
        with open(ready_file) as f:
            ready = json.load(f)
        self.hub_url, self.cdn_url, self.pid = ready["hub"], ready["cdn"], ready["pid"]
        self.port = int(urllib.parse.urlsplit(self.hub_url).port)
        self.cdn_port = int(urllib.parse.urlsplit(self.cdn_url).port)
        return self

    def stop(self):
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.terminate()
                try:
                    self.proc.wait(5)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
            _live_processes.discard(self.proc)
            self.proc = None

    def restart(self):
        """Stops and starts again on the same ports; the knobs come back to their start values."""
        self.stop()
        for _ in range(50):
            try:
                return self.start()
            except RuntimeError as e:
                if "Address already in use" not in str(e):
                    raise
                time.sleep(0.1)
        return self.start()

    def close(self):
        self.stop()
        shutil.rmtree(self._workdir, ignore_errors=True)

    def __enter__(self):
        return self.start() if self.proc is None else self

    def __exit__(self, *exc):
        self.close()
        return False

    def __del__(self):
        try:
            self.stop()
        except Exception:
            pass

    # -- admin API ---------------------------------------------------------------------------
    def _admin(self, method, path, body=None):
        resp = fetch(self.hub_url + "/_emulator/" + path, method=method,
                     headers={"Content-Type": "application/json"}, body=body)
        if resp.status != 200:
            raise RuntimeError(f"emulator admin {path}: {resp.status} {resp.body[:300]!r}")
        return resp.json()

    def config(self, **knobs):
        """Merges knobs (see scripts/README.md); returns the full knob set now in force."""
        return self._admin("POST", "config", knobs)

    def reset(self):
        """Back to the knobs the server started with; pending fail_next rules dropped."""
        return self._admin("POST", "reset", {})

    def log(self):
        return self._admin("GET", "log")

    def clear_log(self):
        self._admin("POST", "log/clear", {})

    def move_branch(self, repo, branch, commit, type="model"):
        return self._admin("POST", "branch", {"repo": repo, "branch": branch, "commit": commit,
                                              "type": type})

    # -- conveniences ------------------------------------------------------------------------
    def client_env(self, hf_home, token=None, base=None):
        """Environment for a client subprocess (hubfs, python -c ...) pointed at this Hub:
        HF_ENDPOINT, a private HF_HOME, the token or none, no proxies, no other HF_* leaking in."""
        env = {k: v for k, v in (os.environ if base is None else base).items()
               if not k.startswith(("HF_", "HUGGING_FACE_")) and k.lower() not in ("http_proxy", "https_proxy")}
        env.update(HF_ENDPOINT=self.hub_url, HF_HOME=str(hf_home), HF_HUB_DISABLE_TELEMETRY="1",
                   HF_HUB_DISABLE_PROGRESS_BARS="1", NO_PROXY="*", no_proxy="*")
        if token:
            env["HF_TOKEN"] = token
        return env

    def url(self, path):
        return self.hub_url + path

    def resolve_url(self, repo, revision, path, type="model"):
        prefix = "" if type == "model" else type + "s/"
        return (f"{self.hub_url}/{prefix}{repo}/resolve/{urllib.parse.quote(revision, safe='')}/"
                f"{urllib.parse.quote(path, safe='/')}")


# ------------------------------------------------------------------------------------------------
# Store and models
# ------------------------------------------------------------------------------------------------


def import_repo(root, repo_id, src_dir, type="model", branch="main", tag=None, private=False,
                gated=False):
    """Imports src_dir as a new commit of repo_id in the store at root; returns the commit sha."""
    cmd = [sys.executable, EMULATOR_SCRIPT, "import", root, repo_id, src_dir, "--type", type,
           "--branch", branch]
    if tag:
        cmd += ["--tag", tag]
    if private:
        cmd.append("--private")
    if gated:
        cmd.append("--gated")
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if result.returncode != 0:
        raise RuntimeError(f"import of {repo_id} failed: {result.stderr.strip()}")
    return result.stdout.strip()


def _make_model_args(out_dir, opts):
    args = [sys.executable, MAKE_MODEL_SCRIPT, "--out", out_dir]
    for name, value in sorted(opts.items()):
        if value is not None:
            args += ["--" + name.replace("_", "-"), str(value)]
    return args


def make_model(out_dir, **opts):
    """Runs scripts/make_model.py (opts: preset, dtype, shards, seed, layers, hidden, ...)."""
    result = subprocess.run(_make_model_args(out_dir, opts), capture_output=True, text=True,
                            timeout=1200)
    if result.returncode != 0:
        raise RuntimeError(f"make_model failed: {result.stderr.strip()}")
    return out_dir


_session_dir = None


def session_dir():
    """A temp dir that lives as long as this Python process (removed at exit)."""
    global _session_dir
    if _session_dir is None:
        _session_dir = tempfile.mkdtemp(prefix="hubemu-session-")
        atexit.register(shutil.rmtree, _session_dir, True)
    return _session_dir


def cached_model(**opts):
    """make_model into the session dir once per distinct set of options; returns its path."""
    key = "-".join(f"{k}={v}" for k, v in sorted(opts.items()) if v is not None) or "default"
    out = os.path.join(session_dir(), "models", key.replace("/", "_"))
    if not os.path.exists(out + ".complete"):  # the marker sits beside, not inside, the model
        shutil.rmtree(out, ignore_errors=True)
        shutil.rmtree(out + ".tmp", ignore_errors=True)
        make_model(out + ".tmp", **opts)
        os.replace(out + ".tmp", out)
        open(out + ".complete", "w").close()
    return out
