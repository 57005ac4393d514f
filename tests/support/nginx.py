"""nginx for tests: started in the foreground in a session of its own (so the master and its
workers go together), ready once its pid file is written, always stopped.

    proc = NginxProcess(["nginx", "-c", conf, "-p", work], pid_file=work + "/nginx.pid",
                        stderr_path=work + "/nginx.err").start()
    ...
    proc.kill()      # a crash: SIGKILL to the master and every worker at once
    proc.stop()      # SIGTERM, then SIGKILL if it lingers

A script that execs nginx (scripts/cluster-cache.sh) is started the same way. Used by
tests/tls (TLS in front of the emulator) and tests/cluster (the cluster cache).
"""
import atexit
import os
import re
import signal
import socket
import subprocess
import time

_live = set()


@atexit.register
def _kill_leftovers():
    for proc in list(_live):
        proc.kill()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def nginx_version():
    result = subprocess.run(["nginx", "-v"], capture_output=True, text=True, timeout=30)
    match = re.search(r"nginx/(\d+)\.(\d+)\.(\d+)", result.stderr)
    if not match:
        raise RuntimeError(f"cannot tell the nginx version from {result.stderr!r}")
    return tuple(int(part) for part in match.groups())


class NginxProcess:
    def __init__(self, argv, pid_file, stderr_path, env=None):
        self.argv, self.pid_file, self.stderr_path, self.env = list(argv), pid_file, stderr_path, env
        self.proc = None

    def start(self, timeout=15):
        """Starts it and waits for its pid file: nginx writes it once every listening socket is
        open. (Probing the ports instead would leave handshakes in logs tests count.)"""
        if os.path.exists(self.pid_file):
            os.unlink(self.pid_file)        # a killed nginx's: not a sign of this one
        with open(self.stderr_path, "a") as stderr:
            self.proc = subprocess.Popen(self.argv, stdout=subprocess.DEVNULL, stderr=stderr,
                                         env=self.env, start_new_session=True)
        _live.add(self)
        deadline = time.time() + timeout
        while not self._pid_written():
            if self.proc.poll() is not None or time.time() > deadline:
                self.stop()
                raise RuntimeError(f"{self.argv[0]} did not start: {self.stderr_text()[-2000:]}")
            time.sleep(0.02)
        return self

    def _pid_written(self):
        """`nginx -t` (run by scripts/cluster-cache.sh before it execs nginx) leaves an empty pid
        file that the script then removes, so the file can vanish between two looks at it."""
        try:
            return os.path.getsize(self.pid_file) > 0
        except FileNotFoundError:
            return False

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def stderr_text(self):
        try:
            with open(self.stderr_path, errors="replace") as f:
                return f.read().strip()
        except FileNotFoundError:
            return ""

    def kill(self):
        """Ends the master and its workers at once, as a crash or the OOM killer would."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait()
        self.proc = None
        _live.discard(self)

    def stop(self, grace_s=10):
        """SIGTERM (nginx's master waits for its workers before it exits), else kill()."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(grace_s)
            except subprocess.TimeoutExpired:
                self.kill()
                return
        self.proc = None
        _live.discard(self)
