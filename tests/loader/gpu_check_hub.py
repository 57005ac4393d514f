"""Rank loads to a GPU from the Hub (run by gpu_check.sh, not by ctest):
gpu_check_hub.py MODEL HUBFS CUDA_DEVICE OUT_DIR.

Serves MODEL from the local Hub emulator as test-org/gpu-llama, then loads rank 3 of 8 to
CUDA_DEVICE with --verify-against-host --save, cold each time: from hf:// (no mount), and
from a hubfs mount when this machine lets one be made. Writes OUT_DIR/SOURCE.safetensors for
gpu_check.sh to compare with numpy, and prints the load lines as figures. Exit status 0 when
every load that could run succeeded."""
import os
import re
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "support"))
from hubemu import Emulator, import_repo  # noqa: E402
from mount import Mount  # noqa: E402

REPO = "test-org/gpu-llama"


def load(hubfs, path, device, saved, env):
    result = subprocess.run([hubfs, "load", path, "--tp", "8", "--rank", "3", "--device", device,
                             "--verify-against-host", "--save", saved],
                            capture_output=True, text=True, env=env, timeout=300)
    print("  " + (result.stdout + result.stderr).strip().replace("\n", "\n  "), flush=True)
    speed = re.search(r"([0-9.]+) GB/s", result.stdout)
    return result.returncode == 0 and "byte-identical to a host load" in result.stdout, speed


def main():
    model, hubfs, device, out = sys.argv[1:5]
    ok = True
    with tempfile.TemporaryDirectory(prefix="gpu-hub-") as scratch:
        root = os.path.join(scratch, "store")
        import_repo(root, REPO, model)
        with Emulator(root) as hub:
            env = hub.client_env(os.path.join(scratch, "hf-home"))
            fine, speed = load(hubfs, f"hf://{REPO}", device, os.path.join(out, "hf.safetensors"), env)
            ok &= fine
            if speed:
                print(f"figure\thubfs load hf:// (emulator, loopback, cold) -> {device}, TP 8 rank 3\t"
                      f"{speed.group(1)}\tGB/s", flush=True)
            if not os.access("/dev/fuse", os.R_OK | os.W_OK):
                print("  no usable /dev/fuse here: the mount load is left out", flush=True)
                return 0 if ok else 1
            mount = Mount(hub.hub_url, program=hubfs)
            try:
                mount.start()
            except (RuntimeError, OSError) as e:
                mount.cleanup()
                print(f"  no mount could be made here ({str(e)[:300]}): the mount load is left out", flush=True)
                return 0 if ok else 1
            try:
                fine, speed = load(hubfs, os.path.join(mount.path, REPO), device,
                                   os.path.join(out, "mount.safetensors"), env)
                ok &= fine
                if speed:
                    print(f"figure\thubfs load from a cold mount (emulator, loopback) -> {device}, TP 8 rank 3\t"
                          f"{speed.group(1)}\tGB/s", flush=True)
            finally:
                ok &= mount.stop() == 0
                mount.cleanup()   # its mount point, cache and home
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
