"""`cmake --install` of this build into a fresh prefix: libhubfs with its headers, pkg-config file
and CMake package, and the hubfs command with its mount helpers; then the C example
(loader/examples/load_rank.c) built against the installed library twice, with pkg-config and
with find_package(hubfs), and run: each tensor's checksum equals numpy slicing of the source,
loaded whole and streamed."""
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "loader"))
from loader_models import expected_slice, llama_model  # noqa: E402

BUILD_DIR = os.environ["HUBFS_BUILD_DIR"]
SOURCE_DIR = os.environ["HUBFS_SOURCE_DIR"]
EXAMPLE = os.path.join(SOURCE_DIR, "loader", "examples", "load_rank.c")
SANITIZE = os.environ.get("HUBFS_SANITIZE_FLAGS", "").split()
CONSUMER_CMAKE = """cmake_minimum_required(VERSION 3.25)
project(consumer C)
find_package(hubfs 0.1 REQUIRED)
add_executable(load_rank {example})
target_link_libraries(load_rank PRIVATE hubfs::hubfs)
"""


def run(*args, env=None, cwd=None):
    result = subprocess.run(args, capture_output=True, text=True, timeout=300, env=env, cwd=cwd)
    assert result.returncode == 0, (args, result.stdout[-2000:], result.stderr[-3000:])
    return result.stdout


@pytest.fixture(scope="module")
def prefix(tmp_path_factory):
    root = tmp_path_factory.mktemp("prefix")
    run("cmake", "--install", BUILD_DIR, "--prefix", str(root))
    return root


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return llama_model(str(tmp_path_factory.mktemp("llama")), seed=21, shards=2)


def libdir(prefix):
    return next(os.path.join(prefix, d) for d in ("lib", "lib64", "lib/x86_64-linux-gnu")
                if os.path.exists(os.path.join(prefix, d, "libhubfs.so")))


def test_the_install_holds_the_library_its_headers_and_the_commands(prefix):
    lib = libdir(prefix)
    assert os.path.islink(os.path.join(lib, "libhubfs.so"))
    assert os.path.exists(os.path.join(lib, "libhubfs.so.0"))
    for header in ("hubfs.h", "loader.h", "loader_dlpack.h", "source.h", "sources.h", "loader_cli.h"):
        assert os.path.exists(os.path.join(prefix, "include", "hubfs", header)), header
    assert os.path.exists(os.path.join(lib, "pkgconfig", "hubfs.pc"))
    assert os.path.exists(os.path.join(lib, "cmake", "hubfs", "hubfsConfig.cmake"))
    assert os.access(os.path.join(prefix, "bin", "hubfs"), os.X_OK)
    for helper in ("mount.hubfs", "mount.fuse.hubfs"):  # mount -t fuse.hubfs runs mount.fuse.hubfs
        assert os.readlink(os.path.join(prefix, "bin", helper)) == "hubfs", helper
    exports = run("nm", "-D", "--defined-only", os.path.join(lib, "libhubfs.so"))
    names = {line.split()[-1] for line in exports.splitlines()}
    assert {"loader_load", "loader_stream_next", "loader_rank_dlpack", "glue_model_open"} <= names
    assert not any(n.startswith(("hub_", "st_", "tp_", "reader_", "disk_cache")) for n in names)


def build_with_pkg_config(prefix, out):
    env = {**os.environ, "PKG_CONFIG_PATH": os.path.join(libdir(prefix), "pkgconfig")}
    flags = run("pkg-config", "--cflags", "--libs", "hubfs", env=env).split()
    compiler = os.environ.get("HUBFS_C_COMPILER", "cc")
    run(compiler, "-std=c17", "-Wall", "-Wextra", "-Werror", *SANITIZE, EXAMPLE, *flags, "-o", out)
    return out


def build_with_cmake(prefix, work):
    source = os.path.join(work, "consumer")
    os.makedirs(source)
    with open(os.path.join(source, "CMakeLists.txt"), "w") as f:
        f.write(CONSUMER_CMAKE.format(example=EXAMPLE))
    build = os.path.join(work, "consumer-build")
    run("cmake", "-S", source, "-B", build, f"-DCMAKE_PREFIX_PATH={prefix}",
        f"-DCMAKE_C_FLAGS={' '.join(SANITIZE)}")
    run("cmake", "--build", build)
    return os.path.join(build, "load_rank")


def fnv1a(data):
    value = 0xcbf29ce484222325
    for byte in data:
        value = ((value ^ byte) * 0x100000001b3) & 0xFFFFFFFFFFFFFFFF
    return value


def expected_lines(model, tp, rank):
    _, config, tensors = model
    lines = {}
    for name, (dtype, source) in tensors.items():
        piece = np.ascontiguousarray(expected_slice(name, source, config, tp, rank))
        lines[name] = f"{name} {dtype} [{','.join(map(str, piece.shape))}] {fnv1a(piece.tobytes()):016x}"
    return lines


@pytest.mark.parametrize("build", ["pkg-config", "find_package"])
def test_the_example_links_the_installed_library_and_loads_exact_slices(prefix, model, tmp_path, build):
    program = (build_with_pkg_config(prefix, str(tmp_path / "load_rank")) if build == "pkg-config"
               else build_with_cmake(prefix, str(tmp_path)))
    env = {**os.environ, "LD_LIBRARY_PATH": libdir(prefix)}
    env.pop("HUBFS_LIBRARY", None)
    ldd = run("ldd", program, env=env)
    assert os.path.join(libdir(prefix), "libhubfs.so") in ldd  # the installed one, not the build's
    for tp, rank, mode in ((1, 0, "whole"), (2, 1, "whole"), (4, 3, "stream")):
        out = run(program, model[0], str(tp), str(rank), "cpu", mode, env=env)
        lines = out.splitlines()
        expected = expected_lines(model, tp, rank)
        assert sorted(lines) == sorted(expected.values())
    result = subprocess.run([program, "/nonexistent"], capture_output=True, text=True, env=env)
    assert result.returncode == 2 and "usage" in result.stderr
    shutil.rmtree(tmp_path, ignore_errors=True)
