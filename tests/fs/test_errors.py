"""hubfs refusing and recovering: unknown, private and gated repos, writes, offline mode,
failed fetches, signals, daemon mode and the mount(8) helper."""
import errno
import os
import signal
import subprocess
import sys
import tempfile
import time

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fs_support import GATED_REPO, PRIVATE_REPO, TINY_REPO, data_requests, sha256_of  # noqa: E402
from mount import HUBFS, Mount, errno_of, is_mounted, unmount  # noqa: E402


@pytest.fixture
def mnt(hub):
    with Mount(hub.hub_url, env={"HF_TOKEN": hub.token}) as m:
        yield m


def test_unknown_repo_and_file_are_enoent_with_one_log_line(hub, mnt):
    missing = os.path.join(mnt.path, "test-org", "no-such-model")
    for _ in range(3):
        assert errno_of(os.stat, missing) == errno.ENOENT
        time.sleep(0.4)
    lines = [line for line in mnt.log_text().splitlines() if "test-org/no-such-model" in line]
    assert len(lines) == 1 and "not found" in lines[0].lower()
    assert errno_of(os.stat, os.path.join(mnt.path, TINY_REPO, "no-such-file.bin")) == errno.ENOENT
    assert errno_of(os.stat, os.path.join(mnt.path, ".Trash-0")) == errno.ENOENT
    assert not [e for e in hub.log() if "Trash" in e["path"]]


def test_private_repo_needs_the_token(hub):
    # The Hub answers a private repo exactly as a missing one (401 RepoNotFound to a caller
    # without a token): both are ENOENT, and the log names both possibilities.
    with Mount(hub.hub_url) as anonymous:
        assert errno_of(os.listdir, os.path.join(anonymous.path, PRIVATE_REPO)) == errno.ENOENT
        assert errno_of(os.listdir, os.path.join(anonymous.path, "test-org", "no-such-model")) == errno.ENOENT
        log = anonymous.log_text()
    for repo in (PRIVATE_REPO, "test-org/no-such-model"):
        lines = [line for line in log.splitlines() if f"{repo}@main" in line]
        assert len(lines) == 1 and f"repository {repo} not found, or private: set HF_TOKEN" in lines[0], lines
    with Mount(hub.hub_url, env={"HF_TOKEN": hub.token}) as authorized:
        assert sha256_of(os.path.join(authorized.path, PRIVATE_REPO, "config.json")) == \
            sha256_of(os.path.join(hub.sources[PRIVATE_REPO], "config.json"))


def test_gated_repo_is_eacces_with_the_hubs_message(hub, tmp_path):
    with Mount(hub.hub_url) as m:   # the emulator grants a gated repo to any known token
        repo = os.path.join(m.path, GATED_REPO)
        assert "config.json" in os.listdir(repo)      # listing is public; content is gated
        assert errno_of(sha256_of, os.path.join(repo, "config.json")) == errno.EACCES
        # Opening fetches nothing (the header comes in the background); the first read says why.
        assert errno_of(sha256_of, os.path.join(repo, "model-00001-of-00003.safetensors")) == errno.EACCES
        log = m.log_text()
    assert "gated" in log and "test-org/gated-llama" in log


def test_bad_token_file_is_refused(hub, tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text("hf_wrong_token\n")
    with Mount(hub.hub_url, extra_args=["--token-file", str(token_file)]) as m:
        assert errno_of(os.listdir, os.path.join(m.path, TINY_REPO)) == errno.EACCES
        assert "hf_wrong_token" not in m.log_text()
    token_file.write_text(f"  {hub.token}\n")
    with Mount(hub.hub_url, extra_args=["--token-file", str(token_file)]) as m:
        assert "config.json" in os.listdir(os.path.join(m.path, PRIVATE_REPO))


def test_writes_are_erofs(hub, mnt):
    repo = os.path.join(mnt.path, TINY_REPO)
    config = os.path.join(repo, "config.json")
    assert errno_of(open, config, "r+b") == errno.EROFS
    assert errno_of(open, os.path.join(repo, "new.txt"), "wb") == errno.EROFS
    assert errno_of(os.mkdir, os.path.join(repo, "d")) == errno.EROFS
    assert errno_of(os.unlink, config) == errno.EROFS
    assert errno_of(os.truncate, config, 0) == errno.EROFS
    assert errno_of(os.rename, config, os.path.join(repo, "c2")) == errno.EROFS
    assert errno_of(os.chmod, config, 0o777) == errno.EROFS
    assert errno_of(os.setxattr, config, "user.x", b"1") == errno.EROFS
    assert os.statvfs(mnt.path).f_flag & os.ST_RDONLY


def test_offline_serves_what_is_cached_and_refuses_the_rest(hub, tmp_path):
    cache = str(tmp_path / "cache")
    source = hub.sources[TINY_REPO]
    with Mount(hub.hub_url, cache_dir=cache) as m:
        repo = os.path.join(m.path, TINY_REPO)
        sha256_of(os.path.join(repo, "config.json"))
        sha256_of(os.path.join(repo, "model-00001-of-00003.safetensors"))
    hub.clear_log()
    with Mount(hub.hub_url, cache_dir=cache, env={"HF_HUB_OFFLINE": "1"}) as m:
        repo = os.path.join(m.path, TINY_REPO)
        assert "model-00002-of-00003.safetensors" in os.listdir(repo)
        for name in ("config.json", "model-00001-of-00003.safetensors"):
            assert sha256_of(os.path.join(repo, name)) == sha256_of(os.path.join(source, name))
        assert errno_of(sha256_of, os.path.join(repo, "tokenizer.json")) == errno.EIO
        assert errno_of(os.listdir, os.path.join(m.path, "test-org", "other-model")) == errno.ENOENT
        pinned = os.path.join(m.path, "test-org", f"tiny-llama@{hub.commits[TINY_REPO]}", "config.json")
        assert sha256_of(pinned) == sha256_of(os.path.join(source, "config.json"))   # same commit, same blobs
        log = m.log_text()
    assert hub.log() == []
    assert "offline: not cached" in log and "tokenizer.json" in log and "test-org/other-model" in log


def test_failed_fetch_is_eio_then_retried(hub, mnt):
    path = os.path.join(mnt.path, TINY_REPO, "tokenizer.json")
    os.stat(path)
    hub.config(fail_next=[{"match": "tokenizer.json", "status": 404, "count": 10}])
    assert errno_of(sha256_of, path) == errno.EIO
    assert "tokenizer.json" in mnt.log_text()
    hub.reset()
    assert sha256_of(path) == sha256_of(os.path.join(hub.sources[TINY_REPO], "tokenizer.json"))


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_unmounts_cleanly(hub, signum):
    m = Mount(hub.hub_url)
    with m:
        os.listdir(os.path.join(m.path, TINY_REPO))
        m.signal(signum)
        status = m.proc.wait(20)
        assert status == 0
        assert not is_mounted(m.path)


def _wait_unmounted(path, timeout=20):
    deadline = time.time() + timeout
    while is_mounted(path) and time.time() < deadline:
        time.sleep(0.05)
    return not is_mounted(path)


def test_daemon_mode_and_mount_helper(hub, tmp_path):
    helper = os.path.join(os.path.dirname(HUBFS), "mount.hubfs")
    mountpoint = tempfile.mkdtemp(prefix="hubfs-helper-")
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env["HF_HOME"] = str(tmp_path / "home")
    options = f"ro,defaults,endpoint={hub.hub_url},cache_dir={tmp_path / 'cache'},cache_size=1G,memory_budget=64M"
    try:
        result = subprocess.run([helper, "hubfs", mountpoint, "-o", options], env=env,
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        assert is_mounted(mountpoint)   # the daemon detached only once mounted
        with open("/proc/self/mountinfo") as f:
            line = next(line for line in f if line.split()[4] == os.path.realpath(mountpoint))
        assert "fuse.hubfs" in line and " ro," in line.replace(" ro ", " ro,")
        assert sha256_of(os.path.join(mountpoint, TINY_REPO, "config.json")) == \
            sha256_of(os.path.join(hub.sources[TINY_REPO], "config.json"))
        with open(os.path.join(mountpoint, ".hubfs", "stats")) as f:
            assert '"memory_budget":\t67108864' in f.read()
        assert os.path.isdir(tmp_path / "cache")
    finally:
        unmount(mountpoint)
        assert _wait_unmounted(mountpoint)
        os.rmdir(mountpoint)


def test_startup_errors_are_reported_before_detaching(tmp_path):
    result = subprocess.run([HUBFS, "mount", str(tmp_path / "missing-dir"), "--endpoint", "http://127.0.0.1:9"],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode != 0
    assert "cannot mount on" in result.stderr
    result = subprocess.run([HUBFS, "mount", str(tmp_path), "--memory-budget", "1K"],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2 and "--memory-budget" in result.stderr


def test_help_documents_the_namespace_and_refresh():
    result = subprocess.run([HUBFS, "mount", "--help"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0
    for text in ("--cache-dir", "--memory-budget", "user.hubfs.refresh", "datasets/ORG/NAME", "HF_HUB_OFFLINE"):
        assert text in result.stdout
