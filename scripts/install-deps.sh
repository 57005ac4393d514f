#!/bin/bash
# Installs what building and testing hubfs needs, only what is missing: Debian packages via
# apt-get and Python packages via pip. Safe to run again. Run as root (or with sudo on PATH).
set -euo pipefail

APT_PACKAGES=(build-essential cmake pkg-config git libfuse3-dev fuse3 libcurl4-openssl-dev
              libcjson-dev python3 python3-pip clang libclang-rt-dev
              strace)  # strace: the loader test that inspect reads headers only
APT_PACKAGES+=(libxxhash-dev)  # checksums of the persistent cache's units
APT_PACKAGES+=(util-linux)  # fincore: the test that hf:// loads keep the cache out of the page cache
APT_PACKAGES+=(libssl-dev)  # libcrypto: sha256 / sha1 of huggingface_hub blobs before they are served
APT_PACKAGES+=(curl)  # the bench smoke test's download baseline
APT_PACKAGES+=(nginx openssl)  # tests/tls: TLS + HTTP/2 in front of the emulator, a CA of the test's own
APT_PACKAGES+=(libnginx-mod-http-set-misc)  # scripts/cluster-cache.sh: HMAC of tokens in its cache keys
APT_PACKAGES+=(rsync)  # tests/fs: copying files of a mount (sparse-aware tools read them whole)
APT_PACKAGES+=(iproute2)  # ss: tests/fs/test_receive_buffer.py reads the mount's socket buffers
PIP_PACKAGES=(huggingface_hub safetensors numpy pytest)
# The Python package's tests: torch and transformers as references (PyPI's torch; no GPU is
# needed), scikit_build_core to build the package with pip (pyproject.toml) without fetching it.
PIP_PACKAGES+=(torch transformers scikit_build_core)
# tests/lazy: a GGUF written and read with llama.cpp's gguf package; accelerate for
# from_pretrained(device_map="meta").
PIP_PACKAGES+=(gguf accelerate)

# --bench: also what scripts/bench.sh compares hubfs against, and its chart (not needed by tests).
for arg in "$@"; do
  case "$arg" in
    --bench) APT_PACKAGES+=(nginx aria2 rclone httpdirfs fuse3); PIP_PACKAGES+=(matplotlib) ;;
    *) echo "usage: $0 [--bench]" >&2; exit 2 ;;
  esac
done

sudo_if_needed() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "install-deps: apt-get install ${missing[*]}"
  sudo_if_needed apt-get update -qq
  DEBIAN_FRONTEND=noninteractive sudo_if_needed apt-get install -y -qq "${missing[@]}" >/dev/null
fi

need_pip=()
for pkg in "${PIP_PACKAGES[@]}"; do
  python3 -c "import importlib.util,sys; sys.exit(importlib.util.find_spec('$pkg') is None)" 2>/dev/null \
    || need_pip+=("$pkg")
done
if [ ${#need_pip[@]} -gt 0 ]; then
  echo "install-deps: pip install ${need_pip[*]}"
  # Debian's own python3 refuses system-wide pip installs (PEP 668) unless told otherwise.
  python3 -m pip install -q "${need_pip[@]}" 2>/dev/null \
    || python3 -m pip install -q --break-system-packages "${need_pip[@]}"
fi
