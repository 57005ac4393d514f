"""What df, du, copies and unmounting mean on a hubfs mount: df shows the persistent cache, du
the Hub's sizes (so copying tools never take an uncached file for a hole), and `hubfs umount`
detaches a mount whose files a process still maps, then waits for the daemon."""
import os
import shutil
import subprocess
import sys
import tarfile
import textwrap
import time

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fs_support import MIB, TINY_REPO, sha256_of  # noqa: E402
from mount import HUBFS, Mount, is_mounted  # noqa: E402

SHARD = "model-00001-of-00003.safetensors"
GIB = 1024 * MIB


def wait_until(condition, timeout=20):
    deadline = time.time() + timeout
    while not condition():
        if time.time() > deadline:
            return False
        time.sleep(0.05)
    return True


def df_sizes(path):
    """(size, used, available) in bytes, as df computes them from statvfs."""
    st = os.statvfs(path)
    return st.f_blocks * st.f_frsize, (st.f_blocks - st.f_bfree) * st.f_frsize, st.f_bavail * st.f_frsize


def test_df_shows_the_persistent_cache(hub):
    with Mount(hub.hub_url, extra_args=["--cache-size", "1G"]) as m:
        size, used, available = df_sizes(m.path)
        assert size == GIB and used == 0 and 0 < available <= GIB
        shard = os.path.join(m.path, TINY_REPO, SHARD)
        sha256_of(shard)
        assert wait_until(lambda: int(os.getxattr(shard, "user.hubfs.cached_bytes")) == os.path.getsize(shard))
        size, used, available = df_sizes(m.path)
        assert size == GIB and used >= os.path.getsize(shard) and available <= GIB - used
        result = subprocess.run(["df", "-B1", "--output=size,used", m.path], capture_output=True, text=True,
                                timeout=30)
        assert result.stdout.split()[2:4] == [str(size), str(used)]
    with Mount(hub.hub_url, extra_args=["--no-disk-cache"]) as m:
        assert df_sizes(m.path) == (0, 0, 0)        # nothing can be kept


def copy_with_tar(src, dst_dir):
    archive = os.path.join(dst_dir, "a.tar")
    subprocess.run(["tar", "--sparse", "-cf", archive, "-C", os.path.dirname(src), os.path.basename(src)],
                   check=True, timeout=120)
    with tarfile.open(archive) as tar:
        tar.extractall(os.path.join(dst_dir, "out"), filter="data")
    return os.path.join(dst_dir, "out", os.path.basename(src))


def copy_with(tool):
    def run(src, dst_dir):
        dst = os.path.join(dst_dir, "copy")
        subprocess.run([*tool, src, dst], check=True, timeout=120)
        return dst
    return run


@pytest.mark.parametrize("copy", [copy_with_tar, copy_with(["cp", "--sparse=always"]),
                                  copy_with(["rsync", "--sparse"])], ids=["tar", "cp", "rsync"])
def test_du_counts_the_hubs_bytes_and_copies_of_uncached_files_are_whole(hub, tmp_path, copy):
    """st_blocks is the file's size, cached or not: tools that read few blocks as holes (tar
    --sparse archives a file of no blocks as all zeros) copy every byte."""
    assert shutil.which("rsync"), "rsync is missing: run scripts/install-deps.sh"
    with Mount(hub.hub_url, cache_dir=str(tmp_path / "fresh-cache")) as m:
        shard = os.path.join(m.path, TINY_REPO, SHARD)
        st = os.stat(shard)
        assert int(os.getxattr(shard, "user.hubfs.cached_bytes")) == 0
        assert st.st_blocks * 512 >= st.st_size
        du = subprocess.run(["du", "-B1", shard], capture_output=True, text=True, timeout=30)
        assert int(du.stdout.split()[0]) >= st.st_size
        out = copy(shard, str(tmp_path))
        assert sha256_of(out) == sha256_of(os.path.join(hub.sources[TINY_REPO], SHARD))


HOLDER = textwrap.dedent("""
    import hashlib, mmap, sys
    f = open(sys.argv[1], "rb")
    view = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    assert view[:8]
    print("mapped", flush=True)
    for line in sys.stdin:    # holds the mapping until its stdin closes, as a loaded model would
        print(hashlib.sha256(view).hexdigest(), flush=True)
""")


def start_holder(path):
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, path], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "mapped"
    return holder


def test_umount_detaches_a_mapped_model_and_waits_for_the_daemon(hub):
    with Mount(hub.hub_url) as m:
        holder = start_holder(os.path.join(m.path, TINY_REPO, SHARD))
        try:
            plain = subprocess.run(["fusermount3", "-u", m.path], capture_output=True, text=True, timeout=30)
            assert plain.returncode != 0 and "busy" in plain.stderr.lower()
            umount = subprocess.Popen([HUBFS, "umount", m.path], stderr=subprocess.PIPE, text=True)
            assert wait_until(lambda: not is_mounted(m.path), 10)      # detached at once...
            time.sleep(1.5)
            assert umount.poll() is None and m.proc.poll() is None     # ...the daemon serves the mapping
            holder.stdin.write("hash\n")                             # every byte still readable
            holder.stdin.flush()
            assert holder.stdout.readline().strip() == sha256_of(os.path.join(hub.sources[TINY_REPO], SHARD))
            holder.stdin.close()
            holder.wait(10)
            assert umount.wait(20) == 0
            assert m.proc.wait(20) == 0
            message = umount.stderr.read()
            assert f"{holder.pid} (python" in message and "detached" in message
        finally:
            holder.kill()
            holder.wait()


def test_umount_gives_up_waiting_when_told(hub):
    with Mount(hub.hub_url) as m:
        holder = start_holder(os.path.join(m.path, TINY_REPO, SHARD))
        try:
            started = time.time()
            result = subprocess.run([HUBFS, "umount", m.path, "--timeout", "2"], capture_output=True, text=True,
                                    timeout=30)
            assert result.returncode == 1 and "gave up waiting after 2s" in result.stderr
            assert 2 <= time.time() - started < 10
            assert not is_mounted(m.path) and m.proc.poll() is None
        finally:
            holder.kill()
            holder.wait()
        assert m.proc.wait(20) == 0                   # the last mapping gone, the daemon ends


def test_umount_refuses_what_is_no_hubfs_mount(tmp_path):
    result = subprocess.run([HUBFS, "umount", str(tmp_path)], capture_output=True, text=True, timeout=30)
    assert result.returncode == 1 and "is not a hubfs mount" in result.stderr
    result = subprocess.run([HUBFS, "umount"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 2 and "missing MOUNTPOINT" in result.stderr
