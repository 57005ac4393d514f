"""The systems under test: download tools (curl, aria2c) and filesystems (httpdirfs, rclone
mount, hubfs). A filesystem is mounted fresh for each measurement, so a cold run starts with an
empty kernel page cache for its files (unmounting drops them) and, unless a cache directory is
reused on purpose, an empty persistent cache.
"""
import atexit
import json
import os
import shutil
import signal
import subprocess
import time

from servers import stop_process, wait_for

# Mounts still up, unmounted by cleanup_all() on every exit path.
_ACTIVE_MOUNTS = []


def is_mounted(mountpoint):
    """From the mount table: os.path.ismount says False for a FUSE mount whose daemon died."""
    try:
        with open("/proc/self/mounts") as f:
            return any(line.split()[1] == mountpoint for line in f)
    except OSError:
        return False


def force_unmount(mountpoint):
    """Unmounts, retrying while busy, then lazily; never leaves the mount in the table."""
    for attempt in range(10):
        if not is_mounted(mountpoint):
            return
        subprocess.run(["fusermount3", "-u", mountpoint], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       timeout=20, check=False)
        time.sleep(0.05 * attempt)
    for cmd in (["fusermount3", "-uz", mountpoint], ["umount", "-l", mountpoint]):
        if not is_mounted(mountpoint):
            return
        subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=20, check=False)


def cleanup_all():
    while _ACTIVE_MOUNTS:
        mount = _ACTIVE_MOUNTS.pop()
        try:
            mount.unmount()
        except Exception:  # cleanup must go on for the others
            pass


atexit.register(cleanup_all)


def peak_rss_kib(pid):
    """VmHWM of a live process, in KiB (None when it is gone)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


CLOCK_TICKS_PER_S = os.sysconf("SC_CLK_TCK")


def process_cpu_s(pid):
    """User + system CPU seconds of a live process, all its threads and the children it waited
    for (utime, stime, cutime, cstime of /proc/PID/stat), or None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()  # the name in parentheses may hold spaces
    except OSError:
        return None
    # fields[0] is the state, field 3 of the man page: utime..cstime are fields 14..17.
    return sum(int(v) for v in fields[11:15]) / CLOCK_TICKS_PER_S


class Mounted:
    """One live mount: `model` is the directory holding the model's files."""

    def __init__(self, system, mountpoint, model, proc):
        self.system, self.mountpoint, self.model, self.proc = system, mountpoint, model, proc

    def peak_rss_kib(self):
        return peak_rss_kib(self.proc.pid)

    def cpu_s(self):
        return process_cpu_s(self.proc.pid)

    def stats(self):
        return self.system.stats(self)

    def unmount(self):
        if self in _ACTIVE_MOUNTS:
            _ACTIVE_MOUNTS.remove(self)
        force_unmount(self.mountpoint)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.kill()
        force_unmount(self.mountpoint)

    def kill(self):
        """Ends a daemon that no longer answers: closing /dev/fuse aborts the connection and
        fails the requests waiting on it."""
        stop_process(self.proc, signal.SIGKILL, 5)


class FuseSystem:
    kind = "mount"
    has_cache = False

    def __init__(self, name, label):
        self.name, self.label = name, label

    def command(self, mountpoint, cache_dir):
        raise NotImplementedError

    def model_dir(self, mountpoint):
        return mountpoint

    def env(self):
        return None

    def stats(self, mounted):
        return None

    def mount(self, mountpoint, cache_dir, log_path):
        os.makedirs(mountpoint, exist_ok=True)
        os.makedirs(cache_dir, exist_ok=True)
        env = dict(os.environ)
        env.update(self.env() or {})
        log = open(log_path, "a")
        proc = subprocess.Popen(self.command(mountpoint, cache_dir), stdin=subprocess.DEVNULL, stdout=log,
                                stderr=log, env=env, start_new_session=True)
        log.close()
        mounted = Mounted(self, mountpoint, self.model_dir(mountpoint), proc)
        _ACTIVE_MOUNTS.append(mounted)
        try:
            wait_for(lambda: os.path.ismount(mountpoint) or proc.poll() is not None, 30, f"{self.label} to mount")
        except RuntimeError:
            mounted.unmount()
            raise
        if proc.poll() is not None:
            mounted.unmount()
            with open(log_path) as f:
                raise RuntimeError(f"{self.label} exited while mounting: {f.read()[-1500:]}")
        return mounted


class HttpDirFs(FuseSystem):
    def __init__(self, url, cache):
        super().__init__("httpdirfs_cache" if cache else "httpdirfs",
                         "httpdirfs --cache" if cache else "httpdirfs")
        self.url, self.has_cache = url.rstrip("/") + "/", cache

    def command(self, mountpoint, cache_dir):
        # nginx leaves Accept-Ranges out of its 206 answers, which httpdirfs's range check looks
        # for; the server does serve ranges, so the check is skipped.
        cmd = ["httpdirfs", "-f", "--no-range-check"]
        if self.has_cache:
            cmd += ["--cache", "--cache-location", cache_dir]
        return cmd + [self.url, mountpoint]


class RcloneMount(FuseSystem):
    def __init__(self, url, vfs_cache_mode):
        super().__init__(f"rclone_{vfs_cache_mode}", f"rclone mount ({vfs_cache_mode})")
        self.url, self.mode = url.rstrip("/") + "/", vfs_cache_mode
        self.has_cache = vfs_cache_mode == "full"

    def command(self, mountpoint, cache_dir):
        conf = os.path.join(cache_dir, "rclone.conf")
        open(conf, "a").close()
        return ["rclone", "mount", ":http:", mountpoint, "--http-url", self.url, "--read-only",
                "--vfs-cache-mode", self.mode, "--cache-dir", cache_dir, "--config", conf,
                "--log-level", "ERROR"]


class Hubfs(FuseSystem):
    has_cache = True

    def __init__(self, binary, endpoint, repo_id, disk_cache=True):
        super().__init__("hubfs" if disk_cache else "hubfs_nocache", "hubfs" if disk_cache else "hubfs (no disk cache)")
        self.binary, self.endpoint, self.repo_id = binary, endpoint, repo_id
        self.has_cache = disk_cache

    def env(self):
        # Nothing from the user's own Hugging Face setup may leak into the run.
        return {"HF_ENDPOINT": self.endpoint, "HF_HUB_OFFLINE": "0", "HF_TOKEN": "",
                "HF_HOME": "/nonexistent-hubfs-bench", "HF_HUB_CACHE": "/nonexistent-hubfs-bench"}

    def command(self, mountpoint, cache_dir):
        cmd = [self.binary, "mount", mountpoint, "--cache-dir", cache_dir, "-f"]
        if not self.has_cache:
            cmd.append("--no-disk-cache")
        return cmd

    def model_dir(self, mountpoint):
        return os.path.join(mountpoint, *self.repo_id.split("/"))

    def stats(self, mounted):
        # Read by a child with a deadline: a wedged daemon must not hang the benchmark itself.
        try:
            out = subprocess.run(["cat", os.path.join(mounted.mountpoint, ".hubfs", "stats")], capture_output=True,
                                 timeout=5, check=True)
            return json.loads(out.stdout)
        except (subprocess.SubprocessError, ValueError):
            return None


class HubfsBehindCache(Hubfs):
    """hubfs mounted with a cluster cache (scripts/cluster-cache.sh) as its Hub endpoint; the
    endpoint is set once the cache runs."""

    def __init__(self, binary, repo_id):
        super().__init__(binary, None, repo_id)
        self.name, self.label = "hubfs_cache", "hubfs behind cluster-cache.sh"


class Download:
    """A download tool fetching one file of the repo through the Hub's resolve URL (so it
    pays the API round trip and the redirect, like a user's `curl -L`)."""

    kind = "download"
    has_cache = False

    def __init__(self, name, label):
        self.name, self.label = name, label

    def command(self, url, dest):
        raise NotImplementedError

    def fetch(self, url, dest, cap_s):
        """Runs the tool; returns (seconds, completed, peak RSS KiB, CPU seconds: user + system)."""
        if os.path.exists(dest):
            os.unlink(dest)
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        started = time.monotonic()
        proc = subprocess.Popen(self.command(url, dest), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, start_new_session=True)
        try:
            return self._wait(proc, started, cap_s)
        except BaseException:
            if proc.returncode is None:
                os.killpg(proc.pid, signal.SIGKILL)
                os.waitpid(proc.pid, 0)
            raise

    def _wait(self, proc, started, cap_s):
        completed = True
        status = rusage = None
        while status is None:
            pid, status_raw, rusage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                status = os.waitstatus_to_exitcode(status_raw)
                break
            if time.monotonic() - started > cap_s:
                completed = False
                os.killpg(proc.pid, signal.SIGKILL)
                _, status_raw, rusage = os.wait4(proc.pid, 0)
                status = 0
                break
            time.sleep(0.005)
        seconds = time.monotonic() - started
        proc.returncode = status
        if completed and status != 0:
            raise RuntimeError(f"{self.label} failed ({status}): {proc.stderr.read().decode()[-500:]}")
        proc.stderr.close()
        return seconds, completed, rusage.ru_maxrss, rusage.ru_utime + rusage.ru_stime


class Curl(Download):
    def __init__(self):
        super().__init__("curl", "curl")

    def command(self, url, dest):
        return ["curl", "-sS", "-f", "-L", "-o", dest, url]


class Aria2(Download):
    def __init__(self, connections=8):
        super().__init__("aria2c", f"aria2c -x{connections}")
        self.connections = connections

    def command(self, url, dest):
        n = str(self.connections)
        return ["aria2c", "-q", "-x", n, "-s", n, "-k", "8M", "--file-allocation=none",
                "--allow-overwrite=true", "--auto-file-renaming=false", "--check-certificate=false",
                "-d", os.path.dirname(dest), "-o", os.path.basename(dest), url]


class HubfsHfLoad:
    """`hubfs load hf://ORG/NAME`: the loader reading the Hub itself, no mount, with a fresh
    HF_HOME (an empty persistent cache) per run."""

    kind = "direct"
    name, label = "hubfs_hf", "hubfs load hf://"

    def __init__(self, binary, endpoint, repo_id):
        self.binary, self.endpoint, self.repo_id = binary, endpoint, repo_id

    def env(self, hf_home):
        return {"HF_ENDPOINT": self.endpoint, "HF_HUB_OFFLINE": "0", "HF_TOKEN": "", "HF_HOME": hf_home,
                "HF_HUB_CACHE": "/nonexistent-hubfs-bench"}

    def command(self, tp, rank):
        return [self.binary, "load", f"hf://{self.repo_id}", "--tp", str(tp), "--rank", str(rank), "--device", "cpu"]


class CurlThenLoad:
    """What a user without a mount does today: download every file the load needs (all at once:
    `curl --parallel`), then `hubfs load` the local copy."""

    kind = "direct"
    name, label = "curl_load", "curl, then load"

    def __init__(self, binary):
        self.binary = binary

    def download_command(self, urls_to_paths):
        cmd = ["curl", "-sS", "-f", "-L", "--parallel", "--parallel-max", "8"]
        for url, path in urls_to_paths:
            cmd += ["-o", path, url]
        return cmd

    def load_command(self, model_dir, tp, rank):
        return [self.binary, "load", model_dir, "--tp", str(tp), "--rank", str(rank), "--device", "cpu"]


class SnapshotDownload:
    """huggingface_hub's snapshot_download of the whole repo into a fresh HF_HOME: the
    `loaders` workload's download-then-load path (bench/mount_loaders.py runs it)."""

    kind = "direct"
    name, label = "snapshot_download", "snapshot_download, then load"

    def __init__(self, endpoint):
        self.endpoint = endpoint

    def env(self, hf_home):
        return {"HF_ENDPOINT": self.endpoint, "HF_HUB_OFFLINE": "0", "HF_TOKEN": "", "HF_HOME": hf_home,
                "HF_HUB_CACHE": os.path.join(hf_home, "hub"), "HF_HUB_DISABLE_PROGRESS_BARS": "1",
                "HF_HUB_DISABLE_TELEMETRY": "1"}


def tool_available(system):
    binary = {"curl": "curl", "aria2c": "aria2c", "httpdirfs": "httpdirfs", "httpdirfs_cache": "httpdirfs",
              "rclone_off": "rclone", "rclone_full": "rclone", "curl_load": "curl"}.get(system.name)
    if binary is None:
        return os.access(getattr(system, "binary", ""), os.X_OK)
    return shutil.which(binary) is not None
