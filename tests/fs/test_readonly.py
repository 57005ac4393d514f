"""Every change refused alike, on every level (root, org, repo, directory, file, .hubfs): the
errno of each write-like system call and what the real tools print, and how little of it reaches
the Hub. The kernel refuses changes on the read-only mount itself; what reaches the daemon is the
lookup it makes first, so a name the mount already knows, or one no Hub name can be, costs no
request, and a new valid name at most one (remembered a minute)."""
import errno
import os
import subprocess
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fs_support import DATASET_REPO, TINY_REPO  # noqa: E402
from mount import Mount, errno_of  # noqa: E402

# level: (directory, an existing entry of it, a file to act on or None)
LEVELS = {
    "root": ("", "test-org", None),
    "org": ("test-org", "tiny-llama", None),
    "repo": (TINY_REPO, "config.json", "config.json"),
    "dir": (f"datasets/{DATASET_REPO}/data", "train.jsonl", "train.jsonl"),
    ".hubfs": (".hubfs", "stats", "stats"),
}
NEW_NAMES = ("new-name", "new name")   # a valid Hub name, and one no Hub name can be


def write_calls(directory, existing, new):
    """(what, call, args, errno the kernel answers)."""
    old, fresh = os.path.join(directory, existing), os.path.join(directory, new)
    return [
        ("mkdir new", os.mkdir, (fresh,), errno.EROFS),
        ("mkdir existing", os.mkdir, (old,), errno.EEXIST),      # POSIX: the name is taken
        ("create", os.open, (fresh, os.O_CREAT | os.O_WRONLY, 0o644), errno.EROFS),
        ("mkfifo", os.mkfifo, (fresh,), errno.EROFS),
        ("symlink new", os.symlink, ("target", fresh), errno.EROFS),
        ("unlink new", os.unlink, (fresh,), errno.EROFS),
        ("unlink existing", os.unlink, (old,), errno.EROFS),
        ("rmdir new", os.rmdir, (fresh,), errno.EROFS),
        ("rmdir existing", os.rmdir, (old,), errno.EROFS),
        ("rename", os.rename, (old, fresh), errno.EROFS),
        ("link", os.link, (old, fresh), errno.EROFS),
        ("chmod", os.chmod, (old, 0o777), errno.EROFS),
        ("chown", os.chown, (old, 1, 1), errno.EROFS),
        ("utime", os.utime, (old, (0, 0)), errno.EROFS),
        ("setxattr", os.setxattr, (old, "user.x", b"1"), errno.EROFS),
        ("removexattr", os.removexattr, (old, "user.hubfs.commit"), errno.EROFS),
    ]


def file_calls(path):
    return [
        ("open for writing", os.open, (path, os.O_WRONLY), errno.EROFS),
        ("open for reading and writing", os.open, (path, os.O_RDWR), errno.EROFS),
        ("open for appending", os.open, (path, os.O_WRONLY | os.O_APPEND), errno.EROFS),
        ("truncate", os.truncate, (path, 0), errno.EROFS),
    ]


def tool_runs(directory, existing, file, source):
    """(argv, ...) of the real tools; each must fail saying "Read-only file system"."""
    old, fresh = os.path.join(directory, existing), os.path.join(directory, "tool-new")
    runs = [["mkdir", fresh], ["touch", fresh], ["touch", old], ["mv", old, fresh],
            ["ln", "-s", "target", fresh], ["chmod", "0777", old], ["truncate", "-s", "0", fresh],
            ["cp", source, fresh], ["rmdir", fresh]]
    if file:
        path = os.path.join(directory, file)
        runs += [["ln", path, fresh], ["truncate", "-s", "0", path], ["cp", source, path], ["rm", path],
                 ["rm", "-f", path]]
    return runs


@pytest.fixture
def mnt(hub):
    with Mount(hub.hub_url, env={"HF_TOKEN": hub.token}) as m:
        yield m


@pytest.mark.parametrize("level", sorted(LEVELS))
def test_writes_are_erofs_everywhere(hub, mnt, level, tmp_path):
    directory, existing, file = LEVELS[level]
    directory = os.path.join(mnt.path, directory)
    os.stat(os.path.join(directory, existing))          # the names the mount knows already
    if file:
        os.stat(os.path.join(directory, file))
    source = tmp_path / "source.txt"
    source.write_text("local\n")
    hub.clear_log()
    wrong = []
    for new in NEW_NAMES:
        calls = write_calls(directory, existing, new) + (file_calls(os.path.join(directory, file)) if file else [])
        for what, call, args, expected in calls:
            got = errno_of(call, *args)
            if got != expected:
                wrong.append(f"{what} ({new!r}): {errno.errorcode.get(got, got)}, want {errno.errorcode[expected]}")
    for argv in tool_runs(directory, existing, file, str(source)):
        result = subprocess.run(argv, capture_output=True, text=True, timeout=30)
        if result.returncode == 0 or "Read-only file system" not in result.stderr:
            wrong.append(f"{' '.join(argv)}: {result.returncode} {result.stderr.strip()}")
    assert wrong == []
    # Only a new valid name at the root (is it an org?) or in an org (a repo?) is asked about,
    # once, whatever was tried with it; every other refusal is the kernel's, with no request.
    asked = [e["path"] + ("?" + e["query"] if e["query"] else "") for e in hub.log()]
    expected = {"root": ["/api/models?author=new-name", "/api/models?author=tool-new"],
                "org": ["/api/models/test-org/new-name/revision/main",
                        "/api/models/test-org/tool-new/revision/main"]}.get(level, [])
    assert sorted(asked) == expected


def test_nothing_written_reaches_the_daemon(hub, mnt):
    """The refusals above are the kernel's: the daemon's own write handlers (the defence if the
    mount were ever read-write) logged nothing."""
    config = os.path.join(mnt.path, TINY_REPO, "config.json")
    assert errno_of(os.truncate, config, 0) == errno.EROFS
    assert errno_of(os.mkdir, os.path.join(mnt.path, TINY_REPO, "d")) == errno.EROFS
    assert "refused under" not in mnt.log_text()
    with open("/proc/self/mountinfo") as f:
        line = next(line for line in f if line.split()[4] == os.path.realpath(mnt.path))
    assert line.split()[5].split(",")[0] == "ro"


LOOKUPS = {   # path: errno of stat() without a token
    "no-such-org-xyz": errno.ENOENT,
    "bad name": errno.ENOENT,
    "test-org": 0,
    "test-org/no-such-model": errno.ENOENT,
    "test-org/private-llama": errno.ENOENT,           # the Hub answers it as a missing one
    "test-org/gated-llama": 0,                        # its files are gated, not its listing
    "test-org/tiny-llama@no-such-branch": errno.ENOENT,
    "test-org/tiny-llama/no-such-file": errno.ENOENT,
    "test-org/tiny-llama/config.json/x": errno.ENOTDIR,
    "datasets/test-org/no-such-data": errno.ENOENT,
    "datasets/no-such-org-xyz": errno.ENOENT,
    ".hubfs/nothing": errno.ENOENT,
    ".hubfs/stats/x": errno.ENOTDIR,
}


def test_lookups_errno_table(hub, tmp_path):
    with Mount(hub.hub_url) as anonymous:
        got = {path: errno_of(os.stat, os.path.join(anonymous.path, path)) for path in LOOKUPS}
    assert got == LOOKUPS
    token_file = tmp_path / "token"
    token_file.write_text("hf_refused_token\n")
    with Mount(hub.hub_url, extra_args=["--token-file", str(token_file)]) as refused:
        assert errno_of(os.stat, os.path.join(refused.path, "test-org")) == errno.EACCES
        assert errno_of(os.stat, os.path.join(refused.path, "bad name")) == errno.ENOENT
