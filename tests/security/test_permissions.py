"""What the mount lets others do: nothing is writable anywhere in the namespace (the root, org
and control directories included; tests/fs covers the common writes inside a repo), another uid
can read nothing unless the mount was made with allow_other, and the persistent cache's files
are 0600 in 0700 directories even when the daemon starts with umask 000."""
import errno
import mmap
import os
import stat
import subprocess

import harness
from mount import errno_of

NOBODY = 65534


def as_nobody(*command):
    """Runs command as uid/gid 65534 with no supplementary groups."""
    return subprocess.run(["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
                           *command], capture_output=True, text=True, timeout=30)


def test_nothing_is_writable_anywhere(hub):
    with harness.mount(hub) as m:
        repo = os.path.join(m.path, "rel/tiny")
        config = os.path.join(repo, "config.json")
        os.stat(config)
        places = [m.path, os.path.join(m.path, "rel"), os.path.join(m.path, ".hubfs"), repo]
        before = {place: sorted(os.listdir(place)) for place in places}
        for place in places:
            for call, args in ((os.mkdir, (os.path.join(place, "d"),)),
                               (os.symlink, ("/etc/passwd", os.path.join(place, "l"))),
                               (os.link, (config, os.path.join(place, "h"))),
                               (os.mknod, (os.path.join(place, "p"), stat.S_IFIFO | 0o600)),
                               (open, (os.path.join(place, "new"), "xb")),
                               (os.chmod, (place, 0o777)),
                               (os.utime, (place, (0, 0))),
                               (os.setxattr, (place, "user.x", b"1"))):
                # At the root any name may be an org the Hub has, so creating one can also be
                # EEXIST: the kernel's lookup found it before asking to create it.
                allowed = (errno.EROFS, errno.EEXIST) if place == m.path else (errno.EROFS,)
                assert errno_of(call, *args) in allowed, f"{call.__name__} in {place}"
        assert {place: sorted(os.listdir(place)) for place in places} == before
        stats_file = os.path.join(m.path, ".hubfs/stats")
        assert errno_of(open, stats_file, "r+b") == errno.EROFS
        assert errno_of(os.unlink, stats_file) == errno.EROFS
        assert errno_of(os.rmdir, repo) == errno.EROFS
        assert errno_of(os.rename, repo, os.path.join(m.path, "rel/x")) == errno.EROFS
        assert errno_of(os.removexattr, config, "user.hubfs.commit") == errno.EROFS
        assert errno_of(os.chown, config, NOBODY, NOBODY) == errno.EROFS
        with open(config, "rb") as f:   # a shared writable mapping of a read-only file is refused
            assert errno_of(mmap.mmap, f.fileno(), 0, mmap.MAP_SHARED, mmap.PROT_WRITE) == errno.EACCES
            assert mmap.mmap(f.fileno(), 0, mmap.MAP_SHARED, mmap.PROT_READ)[:1] == b"{"


def test_other_users_cannot_read_without_allow_other(hub):
    with harness.mount(hub) as m:
        config = os.path.join(m.path, "rel/tiny/config.json")
        with open(config, "rb") as f:            # root reads it...
            assert f.read(1) == b"{"
        for command in (["cat", config], ["ls", os.path.join(m.path, "rel/tiny")], ["stat", m.path]):
            done = as_nobody(*command)
            assert done.returncode != 0 and "Permission denied" in done.stderr, (command, done)
    # ...and the same check passes when the owner asks for allow_other: it can tell both apart.
    with harness.mount(hub, ["-o", "allow_other"]) as m:
        config = os.path.join(m.path, "rel/tiny/config.json")
        done = as_nobody("cat", config)
        assert done.returncode == 0, done.stderr
        with open(os.path.join(hub.sources["rel/tiny"], "config.json")) as f:
            assert done.stdout == f.read()


def test_cache_files_are_private_even_with_umask_000(hub, tmp_path):
    cache_dir = str(tmp_path / "fresh" / "cache")     # created by hubfs itself
    old_umask = os.umask(0)
    try:
        m = harness.mount(hub, cache_dir=cache_dir)
        m.start()
    finally:
        os.umask(old_umask)
    try:
        result = harness.read_all(hub.pairs(m, "rel/tiny"), 60)
        harness.assert_correct_or_eio(result, allow_eio=False)
    finally:
        m.cleanup()
    seen_files = 0
    for dirpath, dirnames, filenames in os.walk(cache_dir):
        mode = stat.S_IMODE(os.lstat(dirpath).st_mode)
        assert mode == 0o700, f"{dirpath} is {oct(mode)}"
        for name in filenames:
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            assert stat.S_ISREG(st.st_mode), f"{path} is not a regular file"
            assert stat.S_IMODE(st.st_mode) == 0o600, f"{path} is {oct(stat.S_IMODE(st.st_mode))}"
            seen_files += 1
    assert seen_files > 0, "nothing was cached: the test proved nothing"
