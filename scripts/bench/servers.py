"""The benchmark's servers: the Hub emulator (API and redirects), nginx (the data plane) and the
first-byte delay helper nginx consults in the WAN profile. Each writes a request log that the
benchmark reads between two marks to count what one measurement fetched.
"""
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPTS = os.path.dirname(HERE)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, timeout_s, what):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise RuntimeError(f"timed out after {timeout_s} s waiting for {what}")


def port_open(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def stop_process(proc, sig=signal.SIGTERM, grace_s=5.0):
    if proc is None or proc.poll() is not None:
        return
    try:
        proc.send_signal(sig)
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=grace_s)
    except ProcessLookupError:
        pass


class RequestLog:
    """A log file that grows one line per request; mark() and since(mark) cut out a window."""

    def __init__(self, path, parse_line):
        self.path = path
        self.parse_line = parse_line

    def mark(self):
        try:
            return os.path.getsize(self.path)
        except OSError:
            return 0

    def since(self, mark):
        try:
            with open(self.path, "rb") as f:
                f.seek(mark)
                data = f.read()
        except OSError:
            return []
        entries = []
        for line in data.decode("utf-8", "replace").splitlines():
            entry = self.parse_line(line)
            if entry is not None:
                entries.append(entry)
        return entries


# One request as every log is reduced to: method, path, status, bytes sent, end time and
# duration (to derive how many requests were in flight), range asked.
def _request(method, path, status, bytes_sent, end_s, duration_s, range_header, origin):
    return {"method": method, "path": path, "status": status, "bytes": bytes_sent,
            "end": end_s, "duration": duration_s, "range": range_header or None, "origin": origin}


_NGINX_LINE = re.compile(r'^(\S+) (\S+) (\d+) (\d+) (\d+) (\S+) "([^"]*)" "([^"]*)"')


def parse_nginx_line(line):
    m = _NGINX_LINE.match(line)
    if not m:
        return None
    end, duration, _conn, status, sent, method, uri, rng = m.groups()[:8]
    return _request(method, uri, int(status), int(sent), float(end), float(duration),
                    None if rng == "-" else rng, "nginx")


def parse_emulator_line(line):
    try:
        e = json.loads(line)
    except ValueError:
        return None
    duration = (e.get("duration_ms") or 0) / 1000.0
    origin = e.get("scope") or e.get("origin")  # api | resolve | cdn
    return _request(e.get("method"), e.get("path"), e.get("status"), e.get("bytes_sent") or 0,
                    (e.get("time") or 0) + duration, duration, e.get("range"), origin)


class DelayServer:
    """scripts/bench/delay_server.py in its own process."""

    def __init__(self, work, delay_ms):
        self.work, self.delay_ms, self.proc, self.port = work, delay_ms, None, None

    def start(self):
        port_file = os.path.join(self.work, "delay.port")
        if os.path.exists(port_file):
            os.unlink(port_file)
        self.proc = subprocess.Popen([sys.executable, os.path.join(HERE, "delay_server.py"),
                                      "--delay-ms", str(self.delay_ms), "--port-file", port_file],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     start_new_session=True)
        wait_for(lambda: os.path.exists(port_file) or self.proc.poll() is not None, 10, "the delay server")
        if self.proc.poll() is not None:
            raise RuntimeError("the first-byte delay server exited at start")
        with open(port_file) as f:
            self.port = int(f.read())
        return self

    def stop(self):
        stop_process(self.proc)
        self.proc = None


class Nginx:
    """nginx serving ROOT with sendfile, Range and autoindex; optionally shaped (WAN profile):
    `limit_rate` caps each response, and `auth_request` to the delay server holds back each
    response's first byte by delay_ms."""

    def __init__(self, work, root, rate_bytes_per_s=0, delay_ms=0):
        self.work, self.root = work, os.path.abspath(root)
        self.rate, self.delay_ms = int(rate_bytes_per_s), delay_ms
        self.proc = self.delay = None
        self.port = None
        self.log = RequestLog(os.path.join(work, "access.log"), parse_nginx_line)

    @property
    def url(self):
        # "localhost", not 127.0.0.1: the CDN is another origin than the Hub API, as on the Hub.
        return f"http://localhost:{self.port}"

    def start(self):
        if shutil.which("nginx") is None:
            raise RuntimeError("nginx is not installed: run scripts/install-deps.sh --bench")
        os.makedirs(os.path.join(self.work, "tmp"), exist_ok=True)
        delay_port = 9  # never contacted when there is no delay
        if self.delay_ms:
            self.delay = DelayServer(self.work, self.delay_ms).start()
            delay_port = self.delay.port
        self.port = free_port()
        with open(os.path.join(HERE, "nginx.conf.in")) as f:
            conf = f.read()
        for key, value in {"@WORK@": self.work, "@ROOT@": self.root, "@PORT@": str(self.port),
                           "@DELAY_PORT@": str(delay_port), "@RATE@": str(self.rate),
                           "@DELAY@": "auth_request /_first_byte_delay;" if self.delay_ms else ""}.items():
            conf = conf.replace(key, value)
        conf_path = os.path.join(self.work, "nginx.conf")
        with open(conf_path, "w") as f:
            f.write(conf)
        self.proc = subprocess.Popen(["nginx", "-c", conf_path, "-p", self.work],
                                     stdout=subprocess.DEVNULL, stderr=open(os.path.join(self.work, "nginx.err"), "w"),
                                     start_new_session=True)
        wait_for(lambda: port_open(self.port) or self.proc.poll() is not None, 10, "nginx")
        if self.proc.poll() is not None:
            with open(os.path.join(self.work, "nginx.err")) as f:
                raise RuntimeError("nginx did not start: " + f.read().strip())
        return self

    def stop(self):
        stop_process(self.proc, signal.SIGQUIT)  # graceful: lets workers finish their logs
        self.proc = None
        if self.delay:
            self.delay.stop()
            self.delay = None


class ClusterCache:
    """scripts/cluster-cache.sh: nginx caching the Hub for a cluster's mounts, on an empty cache
    directory. The redirects it follows point at localhost (the data plane), which it reaches
    without a name server."""

    def __init__(self, work, upstream):
        self.work, self.upstream = work, upstream
        self.proc = self.port = None

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"

    def start(self):
        shutil.rmtree(self.work, ignore_errors=True)
        os.makedirs(self.work)
        self.port = free_port()
        self.proc = subprocess.Popen([os.path.join(SCRIPTS, "cluster-cache.sh"), str(self.port), self.work,
                                      self.upstream, "--resolver", "127.0.0.1"],
                                     stdout=subprocess.DEVNULL, stderr=open(self.work + ".err", "w"),
                                     start_new_session=True)
        wait_for(lambda: port_open(self.port) or self.proc.poll() is not None, 15, "the cluster cache")
        if self.proc.poll() is not None:
            with open(self.work + ".err") as f:
                raise RuntimeError("the cluster cache did not start: " + f.read().strip()[-2000:])
        return self

    def stop(self):
        stop_process(self.proc)  # the script execs nginx: its master, which waits for its workers
        self.proc = None
        shutil.rmtree(self.work, ignore_errors=True)


class Emulator:
    """scripts/hub_emulator.py serve: the Hub API and resolve redirects (to nginx when
    external_cdn is given, else to its own CDN origin)."""

    def __init__(self, work, root, external_cdn=None):
        self.work, self.root, self.external_cdn = work, root, external_cdn
        self.proc = None
        self.hub_url = self.cdn_url = None
        self.log = RequestLog(os.path.join(work, "emulator.log"), parse_emulator_line)

    def start(self):
        ready = os.path.join(self.work, "emulator.ready.json")
        if os.path.exists(ready):
            os.unlink(ready)
        cmd = [sys.executable, os.path.join(SCRIPTS, "hub_emulator.py"), "serve", self.root,
               "--port", "0", "--cdn-port", "0", "--ready-file", ready, "--log", self.log.path]
        if self.external_cdn:
            cmd += ["--external-cdn", self.external_cdn]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL,
                                     stderr=open(os.path.join(self.work, "emulator.err"), "w"),
                                     start_new_session=True)
        wait_for(lambda: os.path.exists(ready) or self.proc.poll() is not None, 20, "the Hub emulator")
        if self.proc.poll() is not None:
            with open(os.path.join(self.work, "emulator.err")) as f:
                raise RuntimeError("the Hub emulator did not start: " + f.read().strip()[-2000:])
        with open(ready) as f:
            info = json.load(f)
        self.hub_url, self.cdn_url = info["hub"], info.get("cdn")
        return self

    def configure(self, **knobs):
        request = urllib.request.Request(self.hub_url + "/_emulator/config", data=json.dumps(knobs).encode(),
                                         headers={"Content-Type": "application/json"}, method="POST")
        with urllib.request.urlopen(request, timeout=10) as answer:
            return json.load(answer)

    def stop(self):
        stop_process(self.proc)
        self.proc = None


def import_model(root, repo_id, model_dir):
    """Imports model_dir into the emulator store (hard links); returns the commit sha."""
    out = subprocess.run([sys.executable, os.path.join(SCRIPTS, "hub_emulator.py"), "import", root, repo_id,
                          model_dir], capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"hub_emulator import failed: {out.stderr.strip()}")
    return out.stdout.strip().splitlines()[-1]


def commit_dir(root, repo_id, sha):
    """The directory of the commit's files in the store, relative to root."""
    return "/".join(["models", repo_id, "commits", sha])
