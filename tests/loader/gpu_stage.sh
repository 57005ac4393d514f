#!/bin/bash
# tests/loader/gpu_stage.sh DIR — gpu_check.sh for a GPU machine that has the CUDA driver,
# Python and PyTorch but not the build's libraries (libfuse3, libcjson, ...) nor a way to
# install them: builds here (Release, CUDA target) and stages in DIR, a folder inside the
# checkout, what the run needs:
#   DIR/build/   fs/hubfs, tests/loader/hubfs_cuda_check, libhubfs/libhubfs.so
#   DIR/lib/     every library they load, except the C library's own
#   DIR/bin/     fusermount3 (for the mount check), found after the machine's own on PATH
#   DIR/run.sh   run on the GPU machine: links the libraries that machine lacks (its own
#                win, so torch keeps its CUDA runtime) and runs gpu_check.sh on the staged
#                binaries
# Keep DIR out of git (e.g. .git/info/exclude) and copy it with the checkout.
set -euo pipefail
[ $# -eq 1 ] || { echo "usage: $0 DIR (a folder inside the checkout)" >&2; exit 2; }
stage=$(realpath -m "$1")
cd "$(dirname "$0")/../.."
build=${BUILD_DIR:-build-gpu}
case "$stage/" in
"$(pwd)"/*) ;;
*) echo "gpu_stage: $stage is not inside the checkout $(pwd)" >&2; exit 2 ;;
esac

if ! cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release | grep "CUDA toolkit .* found" >/dev/null; then
  echo "gpu_stage: cmake found no CUDA toolkit (put nvcc on PATH or set CUDAToolkit_ROOT)" >&2
  exit 1
fi
cmake --build "$build" -j "$(nproc)" --target hubfs hubfs_cuda_check hubfs_shared >/dev/null

rm -rf "$stage"
mkdir -p "$stage/build/fs" "$stage/build/tests/loader" "$stage/build/libhubfs" "$stage/lib" "$stage/bin"
cp "$build/fs/hubfs" "$stage/build/fs/"
cp "$build/tests/loader/hubfs_cuda_check" "$stage/build/tests/loader/"
cp -L "$build/libhubfs/libhubfs.so" "$stage/build/libhubfs/"
cp "$(command -v fusermount3)" "$stage/bin/"
ldd "$stage/build/fs/hubfs" "$stage/build/tests/loader/hubfs_cuda_check" "$stage/build/libhubfs/libhubfs.so" |
  awk '$2 == "=>" && $3 ~ /^\// { print $3 }' | sort -u |
  grep -v -E '/(libc|libm|libdl|libpthread|librt|libresolv|ld-linux[^/]*)\.so' |
  xargs -r cp -L -t "$stage/lib/"

root_from_stage=$(realpath --relative-to="$stage" .)
cat >"$stage/run.sh" <<RUN
#!/bin/bash
# Runs gpu_check.sh on the binaries staged beside this script (tests/loader/gpu_stage.sh).
set -euo pipefail
stage=\$(cd "\$(dirname "\$0")" && pwd)
gaps=\$(mktemp -d)
trap 'rm -rf "\$gaps"' EXIT
# Only what the machine lacks: its own libraries win (torch keeps its CUDA runtime); a missing
# CUDA runtime is taken from the machine's toolkit before the staged one.
for library in "\$stage"/lib/*; do
  name=\$(basename "\$library")
  ldconfig -p | grep "^[[:space:]]\$name " >/dev/null && continue
  for toolkit in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib; do
    [ -e "\$toolkit/\$name" ] && library=\$toolkit/\$name && break
  done
  ln -s "\$library" "\$gaps/\$name"
done
export LD_LIBRARY_PATH="\$gaps\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}"
export PATH="\$PATH:/usr/local/cuda/bin:\$stage/bin"
cd "\$stage/$root_from_stage"
HUBFS_PREBUILT=1 BUILD_DIR="\$stage/build" bash tests/loader/gpu_check.sh
RUN
chmod +x "$stage/run.sh"
relative=$(realpath --relative-to=. "$stage")
echo "staged in $relative ($(du -sh "$stage" | cut -f1)): on the GPU machine, at the checkout's root: bash $relative/run.sh"
