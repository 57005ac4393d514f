"""What the daemon (root, as an fstab mount runs it) trusts on disk. Without HOME and HF_HOME its
caches never go to /tmp; a cache directory another user prepared (their directory, their
symlink) is refused with a reason and nothing there is deleted or chmodded; and a blob of the
huggingface_hub cache is served only from the repo's own folder, never through a symlink, and
only when its content hashes to its name: what is read always equals the source, by sha256.

The other user is real: their files are made by uid 65534 (setpriv) in a sticky directory."""
import hashlib
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile

import pytest

import harness
from files import sha256_of  # noqa: E402

NOBODY = 65534
HERE = os.path.dirname(os.path.abspath(__file__))
READ_DEADLINE_S = 120 if harness.SANITIZED else 60


def as_nobody(*command, check=True):
    return subprocess.run(["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", *command],
                          capture_output=True, timeout=60, check=check)


def blob_name(path):
    """The name huggingface_hub gives the file's blob: what the emulator (like the Hub) uses as
    its etag: sha256 for LFS files (.safetensors), git's blob sha1 for the others."""
    with open(path, "rb") as f:
        content = f.read()
    if path.endswith((".safetensors", ".bin")):
        return hashlib.sha256(content).hexdigest()
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


def tiny_files(hub):
    """{relative path: source path} of rel/tiny: its config and safetensors shards."""
    files = dict(hub.files("rel/tiny"))
    shards = sorted(p for p in files if p.endswith(".safetensors"))
    assert len(shards) >= 3 and "config.json" in files
    return files, shards


@pytest.fixture
def shared_tmp():
    """A directory like /tmp: root's, world-writable and sticky, reachable by uid 65534."""
    path = tempfile.mkdtemp(prefix="hubfs-shared-", dir="/tmp")
    os.chmod(path, 0o1777)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def victim():
    """A directory of root's holding files like a cache's: none of it may change."""
    path = tempfile.mkdtemp(prefix="hubfs-victim-", dir="/tmp")
    os.chmod(path, 0o755)
    for name in ("weights.data", "header.prefix", ".tmp-1-x", "old.index", "lock"):
        with open(os.path.join(path, name), "wb") as f:
            f.write(b"precious")
    yield path
    shutil.rmtree(path, ignore_errors=True)


def state_of(path):
    """(mode, sorted [(name, size)]) of a directory: how to tell it was not touched."""
    return (os.stat(path).st_mode, sorted((e.name, e.stat(follow_symlinks=False).st_size) for e in os.scandir(path)))


def test_without_home_nothing_goes_to_tmp(hub):
    """HOME and HF_HOME unset, no --cache-dir, and an attacker's /tmp/.cache/huggingface waiting:
    its blocks directory a symlink to a root directory, poisoned blobs for the repo's files. The
    daemon runs in a private mount namespace with fresh /tmp and /root (tmpfs)."""
    files, shards = tiny_files(hub)
    wanted = {os.path.join("rel/tiny", p): sha256_of(files[p]) for p in ("config.json", shards[0])}
    plants = {f"models--rel--tiny/blobs/{blob_name(files[p])}": os.path.getsize(files[p])
              for p in ("config.json", shards[0])}
    spec = {"endpoint": hub.url, "hubfs": os.environ.get("HUBFS_BIN", "hubfs"), "files": list(wanted),
            "plants": plants, "env": {"HF_TOKEN": harness.TOKEN, **harness.FAST_RETRY_ENV}}
    child = subprocess.Popen(["unshare", "--mount", "--propagation", "private", sys.executable,
                              os.path.join(HERE, "no_home_mount.py")],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, start_new_session=True)
    try:
        out, err = child.communicate(json.dumps(spec), timeout=READ_DEADLINE_S + 60)
    except subprocess.TimeoutExpired:
        os.killpg(child.pid, signal.SIGKILL)   # the daemon too: the namespace dies with them
        child.communicate()
        raise
    assert child.returncode == 0, err[-3000:]
    result = json.loads(out)
    assert result["status"] == 0, result["log"][-3000:]
    # The files read are the repo's, by sha256: no planted blob was served.
    assert {p: result["read"][p] for p in wanted} == wanted
    # /tmp is exactly as the attacker left it: nothing created, deleted or chmodded there.
    assert result["after"] == result["before"]
    assert "/tmp/victim/weights.data" in result["after"]
    # The cache went to root's home from the password database, and holds what was read.
    assert "hubfs/blocks/lock" in result["cache_files"], result["cache_files"]
    assert any(f.startswith("hubfs/blocks/") and f.endswith(".data") for f in result["cache_files"])
    assert result["stats"]["bytes_fetched"] >= sum(os.path.getsize(files[p]) for p in ("config.json", shards[0]))


def test_a_user_without_a_home_must_name_a_cache_dir():
    """uid 65534 has no home (its password entry says /nonexistent) and no HOME: there is no
    default cache, /tmp least of all, and the mount says what to do. Run with a fresh /tmp in a
    private mount namespace, to see that nothing is created there."""
    hubfs = os.path.abspath(os.environ.get("HUBFS_BIN", "hubfs"))
    # The build may live under /tmp (a CI clone): the program is copied out before /tmp is hidden.
    script = (f"mount -t tmpfs -o mode=755 tmpfs /mnt && cp {shlex.quote(hubfs)} /mnt/hubfs && "
              "mount -t tmpfs -o mode=1777 tmpfs /tmp && "
              f"setpriv --reuid={NOBODY} --regid={NOBODY} --clear-groups "
              "env -u HOME -u HF_HOME -u HF_HUB_CACHE /mnt/hubfs mount /nonexistent-mountpoint; "
              "echo status=$?; find /tmp -mindepth 1")
    done = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
                          capture_output=True, text=True, timeout=60)
    assert done.stdout.split() == ["status=2"], (done.stdout, done.stderr)   # and /tmp empty
    assert "no home directory for the persistent cache" in done.stderr, done.stderr
    assert "pass --cache-dir DIR, or --no-disk-cache" in done.stderr


@pytest.mark.parametrize("layout", ["cache-dir-is-their-symlink", "blocks-is-their-symlink"])
def test_a_cache_dir_prepared_by_another_user_is_refused(hub, shared_tmp, victim, layout):
    cache_dir = os.path.join(shared_tmp, "cache")
    if layout == "cache-dir-is-their-symlink":
        as_nobody("ln", "-s", victim, cache_dir)
        reason = f"{cache_dir} is a symlink owned by uid {NOBODY}"
    else:
        as_nobody("mkdir", cache_dir)
        as_nobody("ln", "-s", victim, os.path.join(cache_dir, "blocks"))
        reason = f"{cache_dir} is owned by uid {NOBODY}"
    before = state_of(victim)
    with harness.mount(hub, cache_dir=cache_dir) as m:
        result = harness.read_all(hub.pairs(m, "rel/tiny"), READ_DEADLINE_S)
        harness.assert_correct_or_eio(result, allow_eio=False)   # the mount works without a cache
        log = m.log_text()
    assert "persistent cache disabled" in log and reason in log, log[-3000:]
    assert state_of(victim) == before
    assert os.path.islink(cache_dir) or sorted(os.listdir(cache_dir)) == ["blocks"]


def plant_hub_cache(hub_cache, files, shards, secret):
    """A huggingface_hub cache of root's with three traps and one genuine blob:
    config.json: a blob of the right size and name in ANOTHER repo's folder, other bytes;
    shard 0: in the repo's own folder, the right size and name, other bytes;
    shard 1: genuine (its bytes hash to its name): the one thing that may be served from here;
    shard 2: a symlink to a root-only file of the same size."""
    def blob_path(folder, relative):
        path = os.path.join(hub_cache, folder, "blobs", blob_name(files[relative]))
        os.makedirs(os.path.dirname(path), exist_ok=True)
        return path

    with open(blob_path("models--evil--x", "config.json"), "wb") as f:
        f.write(os.urandom(os.path.getsize(files["config.json"])))
    with open(blob_path("models--rel--tiny", shards[0]), "wb") as f:
        f.write(os.urandom(os.path.getsize(files[shards[0]])))
    shutil.copyfile(files[shards[1]], blob_path("models--rel--tiny", shards[1]))
    with open(secret, "wb") as f:
        f.write(b"TOP SECRET " * (os.path.getsize(files[shards[2]]) // 11 + 1))
        f.truncate(os.path.getsize(files[shards[2]]))
    os.chmod(secret, 0o600)
    os.symlink(secret, blob_path("models--rel--tiny", shards[2]))


def test_hub_cache_blobs_are_served_only_when_genuine(hub, tmp_path):
    files, shards = tiny_files(hub)
    hub_cache = str(tmp_path / "hub")
    secret = str(tmp_path / "secret")
    plant_hub_cache(hub_cache, files, shards, secret)
    with harness.mount(hub, ["-o", "allow_other"], env={"HF_HUB_CACHE": hub_cache}) as m:
        pairs = [[os.path.join(m.path, "rel/tiny", p), files[p]] for p in ("config.json", shards[0], shards[1])]
        result = harness.read_all(pairs, READ_DEADLINE_S)
        harness.assert_correct_or_eio(result, allow_eio=False)
        # Another user reads the file whose blob is a symlink to root's secret.
        shown = as_nobody("sha256sum", os.path.join(m.path, "rel/tiny", shards[2]), check=False)
        assert shown.returncode == 0, shown.stderr
        assert shown.stdout.split()[0].decode() == sha256_of(files[shards[2]])
        stats = m.stats()
        log = m.log_text()
    fetched = stats["bytes_fetched"]
    refused = sum(os.path.getsize(files[p]) for p in ("config.json", shards[0], shards[2]))
    # The refused ones came over the network; the genuine blob did not.
    assert refused <= fetched < refused + os.path.getsize(files[shards[1]]), stats
    assert "is not the file its name says" in log and "is a symlink" in log, log[-3000:]
