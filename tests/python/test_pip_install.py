"""`pip install .` at the root of the checkout (pyproject.toml: scikit-build-core runs CMake)
into a fresh virtual environment: from another directory, `import hubfs` finds the libhubfs
inside the installed package (not this build's, not the source tree) and loads a rank, and the
environment has the hubfs command. The build backend comes from the machine
(scripts/install-deps.sh installs it), so no package is fetched."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

SOURCE_DIR = os.environ["HUBFS_SOURCE_DIR"]

CHECK = r"""
import json, sys, hubfs, numpy as np
state = hubfs.load_rank(sys.argv[1], tp=2, rank=1, framework="numpy")
print(json.dumps({"file": hubfs.__file__, "library": hubfs._native.library_path(), "version": hubfs.__version__,
                  "embed": state["model.embed_tokens.weight"].tolist()}))
"""


def run(*args, cwd=None, env=None, timeout=900):
    result = subprocess.run(args, capture_output=True, text=True, cwd=cwd, env=env, timeout=timeout)
    assert result.returncode == 0, (args, result.stdout[-3000:], result.stderr[-3000:])
    return result.stdout


@pytest.fixture(scope="module")
def venv(tmp_path_factory):
    root = tmp_path_factory.mktemp("venv")
    run(sys.executable, "-m", "venv", "--system-site-packages", str(root))
    # Nothing of this build: not its library, not the source tree's package, not its sanitizers.
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "HUBFS_LIBRARY", "LD_PRELOAD")}
    run(os.path.join(root, "bin", "python"), "-m", "pip", "install", "-q", "--no-build-isolation", "--no-deps",
        SOURCE_DIR, env=env)
    return root, env


def test_pip_install_then_import_from_another_directory(venv, tmp_path):
    root, env = venv
    model = tmp_path / "model"
    model.mkdir()
    embed = np.arange(64 * 8, dtype=np.float32).reshape(64, 8)
    save_file({"model.embed_tokens.weight": embed}, str(model / "model.safetensors"))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    out = json.loads(run(os.path.join(root, "bin", "python"), "-c", CHECK, str(model), cwd=str(elsewhere), env=env))
    site = os.path.realpath(str(root))
    assert os.path.realpath(out["file"]).startswith(site)
    assert os.path.realpath(out["library"]).startswith(site) and out["library"].endswith("libhubfs.so")
    assert out["version"] == "0.1.0"
    expected = load_file(str(model / "model.safetensors"))["model.embed_tokens.weight"][32:]  # vocab rank 1 of 2
    assert np.array_equal(np.array(out["embed"], dtype=np.float32), expected)
    assert run(os.path.join(root, "bin", "hubfs"), "--version", env=env).strip() == "hubfs 0.1.0"
