"""A mount made the way systemd makes an fstab one (no HOME, no HF_HOME, no --cache-dir), inside a
private mount namespace whose /tmp and /root are fresh tmpfs: so the test can plant an attacker's
/tmp/.cache/huggingface as it pleases and see where the daemon puts its cache, without touching
the machine's real /tmp or root's real home. Run by test_cache_trust.py as

    unshare --mount --propagation private python3 no_home_mount.py < spec.json

spec: {"endpoint", "env": {...}, "files": {relative path: sha256 of the source}, "plants":
       {relative path under /tmp/.cache/huggingface/hub: size}, "hubfs"}. Prints one JSON object:
what was read (sha256 per file), /tmp before and after the mount (path -> [mode, uid, size]), the
victim directory, the daemon's log, and what the default cache directory holds.
"""
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "support"))

from mount import Mount  # noqa: E402

NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
VICTIM = "/tmp/victim"
CACHE_HOME = "/root/.cache/huggingface"


def fresh_tmpfs(path, mode):
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"mode={mode}", "tmpfs", path], check=True)


def as_nobody(*command):
    subprocess.run([*NOBODY, *command], check=True)


def plant(plants):
    """The attacker (uid 65534): /tmp/.cache/huggingface/hubfs/blocks is their symlink to a
    directory of root's, and their blobs wait in /tmp/.cache/huggingface/hub."""
    os.mkdir(VICTIM, 0o755)
    for name in ("weights.data", "header.prefix", ".tmp-1-x", "lock"):
        with open(os.path.join(VICTIM, name), "wb") as f:
            f.write(b"precious")
    as_nobody("mkdir", "-p", "/tmp/.cache/huggingface/hubfs")
    as_nobody("ln", "-s", VICTIM, "/tmp/.cache/huggingface/hubfs/blocks")
    for relative, size in plants.items():
        path = os.path.join("/tmp/.cache/huggingface/hub", relative)
        as_nobody("mkdir", "-p", os.path.dirname(path))
        as_nobody("sh", "-c", f"head -c {size} /dev/urandom > '{path}'")


def snapshot(root):
    """path -> [mode, uid, size] of everything under root (symlinks not followed)."""
    seen = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [""] + dirnames + filenames:
            path = os.path.join(dirpath, name) if name else dirpath
            st = os.lstat(path)
            seen[path] = [st.st_mode, st.st_uid, st.st_size if not os.path.isdir(path) else 0]
    return seen


class SystemdLikeMount(Mount):
    """No --cache-dir, and HOME and HF_HOME unset."""

    def command(self):
        return [self.program, "mount", self.path, "-f", "--endpoint", self.endpoint, *self.extra_args]

    def environment(self):
        env = super().environment()
        for name in ("HOME", "HF_HOME", "HF_HUB_CACHE", "XDG_CACHE_HOME"):
            env.pop(name, None)
        return env


def sha256_of(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def keep_program(path):
    """The build may live under /tmp or /root (a CI clone), which are about to be hidden: the
    program is copied to a fresh tmpfs on /mnt first (private namespace: the host sees nothing)."""
    fresh_tmpfs("/mnt", "0755")
    kept = os.path.join("/mnt", os.path.basename(path))
    shutil.copy2(path, kept)
    return kept


def main():
    spec = json.load(sys.stdin)
    program = keep_program(shutil.which(spec["hubfs"]) or spec["hubfs"])
    fresh_tmpfs("/tmp", "1777")
    fresh_tmpfs("/root", "0700")
    plant(spec["plants"])
    os.mkdir("/root/scratch", 0o700)
    tempfile.tempdir = "/root/scratch"           # the harness's own directories stay out of /tmp
    before = snapshot("/tmp")
    m = SystemdLikeMount(spec["endpoint"], env=spec["env"], program=program)
    read = {}
    try:
        m.start()
        for relative in spec["files"]:
            read[relative] = sha256_of(os.path.join(m.path, relative))
        stats = m.stats()
    finally:
        status = m.stop()
        log = m.log_text()
        m.cleanup()
    cache_files = []
    for dirpath, _, filenames in os.walk(CACHE_HOME):
        cache_files += [os.path.relpath(os.path.join(dirpath, n), CACHE_HOME) for n in filenames]
    json.dump({"read": read, "stats": stats, "status": status, "log": log, "before": before,
               "after": snapshot("/tmp"), "cache_files": sorted(cache_files)}, sys.stdout)


if __name__ == "__main__":
    main()
