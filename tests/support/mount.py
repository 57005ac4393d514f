"""A hubfs mount for tests: starts `hubfs mount -f` against an endpoint, waits until the mount is
live, and ALWAYS takes it down (fusermount3 -u, then -uz, then kills the daemon).

    with Mount(hub.hub_url, extra_args=["--memory-budget", "64M"]) as m:
        data = open(os.path.join(m.path, "test-org/tiny-llama/config.json"), "rb").read()
        print(m.stats()["bytes_fetched"], m.rss())

The daemon runs in the foreground (so .pid is the daemon's), with a fresh HF_HOME and no token
unless env gives one. Its stderr (the daemon's log) is kept: .log_text(). On exit, a daemon that
did not end with status 0 (a sanitizer report, a crash) fails the `with` block.
"""
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time

HUBFS = os.environ.get("HUBFS_BIN", "hubfs")
SANITIZED = os.environ.get("HUBFS_SANITIZED") == "1"
CLEARED_ENV = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_TOKEN_PATH", "HF_HUB_OFFLINE", "HF_ENDPOINT",
               "HF_HUB_CACHE")


def is_mounted(path):
    path = os.path.realpath(path)
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == path for line in f)


def unmount(path):
    """fusermount3 -u, falling back to a lazy unmount; True when nothing is mounted there."""
    for args in (["-u"], ["-uz"]):
        if not is_mounted(path):
            return True
        subprocess.run(["fusermount3", *args, path], capture_output=True, timeout=30)
    return not is_mounted(path)


class Mount:
    def __init__(self, endpoint, mountpoint=None, cache_dir=None, extra_args=(), env=None,
                 program=None, startup_timeout=30):
        self.endpoint = endpoint
        self._owned = []
        self.path = mountpoint or self._temp_dir("hubfs-mnt-")
        self.cache_dir = cache_dir or self._temp_dir("hubfs-cache-")
        self.home = self._temp_dir("hubfs-home-")
        self.extra_args = list(extra_args)
        self.env = dict(env or {})
        self.program = program or HUBFS
        self.startup_timeout = startup_timeout
        self.proc = None
        self.returncode = None
        self._stderr_path = os.path.join(self.home, "daemon-stderr.txt")

    def _temp_dir(self, prefix):
        path = tempfile.mkdtemp(prefix=prefix)
        self._owned.append(path)
        return path

    def command(self):
        return [self.program, "mount", self.path, "-f", "--endpoint", self.endpoint,
                "--cache-dir", self.cache_dir, *self.extra_args]

    def environment(self):
        env = {k: v for k, v in os.environ.items() if k not in CLEARED_ENV}
        env["HF_HOME"] = self.home
        env.update(self.env)
        return env

    @property
    def pid(self):
        return self.proc.pid

    def start(self):
        with open(self._stderr_path, "ab") as stderr:
            self.proc = subprocess.Popen(self.command(), env=self.environment(),
                                         stdout=subprocess.DEVNULL, stderr=stderr)
        deadline = time.time() + self.startup_timeout
        while not is_mounted(self.path):
            if self.proc.poll() is not None:
                raise RuntimeError(f"hubfs exited with {self.proc.returncode}: {self.log_text()[-3000:]}")
            if time.time() > deadline:
                self.stop()
                raise RuntimeError(f"hubfs did not mount within {self.startup_timeout}s: {self.log_text()[-3000:]}")
            time.sleep(0.02)
        return self

    def stop(self, timeout=30):
        """Unmounts, waits for the daemon, kills it if it lingers; returns its exit status."""
        if self.proc is None:
            return self.returncode
        try:
            unmount(self.path)
            self.returncode = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.returncode = self.proc.wait()
        finally:
            unmount(self.path)
            self.proc = None
        return self.returncode

    def log_text(self):
        try:
            with open(self._stderr_path, errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def stats(self):
        with open(os.path.join(self.path, ".hubfs", "stats")) as f:
            return json.load(f)

    def rss(self):
        """Resident memory of the daemon in bytes."""
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        raise RuntimeError("no VmRSS")

    def signal(self, signum=signal.SIGTERM):
        self.proc.send_signal(signum)

    def cleanup(self):
        self.stop()
        for path in self._owned:
            shutil.rmtree(path, ignore_errors=True)

    def __enter__(self):
        try:
            return self.start()
        except BaseException:
            self.cleanup()
            raise

    def __exit__(self, exc_type, exc, tb):
        status = self.stop()
        log = self.log_text()
        for path in self._owned:
            shutil.rmtree(path, ignore_errors=True)
        if exc_type is None and status not in (0, None):
            raise AssertionError(f"hubfs exited with status {status}: {log[-4000:]}")
        return False


def errno_of(call, *args):
    """The errno call(*args) fails with, or 0 when it succeeds."""
    try:
        call(*args)
    except OSError as e:
        return e.errno
    return 0
