"""The CUDA target run against tests/loader/fake_cudart.c, a CPU stand-in for the runtime
whose copies are asynchronous and delayed: the ring of pinned buffers, the events that
recycle them, the 2-D copies of rowwise slices and the copy back for --save must give
exactly the numpy slices of the source, and --verify-against-host must agree."""
import os
import subprocess

import numpy as np
import pytest

from loader_models import expected_slice, llama_config, llama_tensors, read_safetensors, write_model

FAKE = os.path.join(os.environ["HUBFS_BUILD_DIR"], "tests", "loader", "hubfs_fake_cuda")


def run(*args, env=None):
    return subprocess.run([FAKE, *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **(env or {})})


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    directory = str(tmp_path_factory.mktemp("llama"))
    config = llama_config()
    tensors = llama_tensors(config, seed=5)
    write_model(directory, config, tensors, shards=2)
    return directory, config, tensors


@pytest.mark.parametrize("tp,extra", [(1, []), (2, ["--threads", "2"]),
                                      (8, ["--chunk-bytes", "4096", "--threads", "4"])])
def test_device_slices_equal_numpy_and_the_host_load(model, tmp_path, tp, extra):
    path, config, tensors = model
    for rank in range(tp):
        out = str(tmp_path / f"rank{rank}.safetensors")
        result = run(path, "--tp", str(tp), "--rank", str(rank), "--device", "cuda:0",
                     "--verify-against-host", "--save", out, *extra)
        assert result.returncode == 0, result.stderr
        assert f"loaded rank {rank} of {tp} to cuda:0" in result.stdout
        assert "byte-identical to a host load" in result.stdout
        saved = read_safetensors(out)
        assert sorted(saved) == sorted(tensors)
        for name, (dtype, source) in tensors.items():
            expected = np.ascontiguousarray(expected_slice(name, source, config, tp, rank))
            assert saved[name][0] == dtype
            assert np.array_equal(saved[name][1].view(np.uint8), expected.view(np.uint8)), (name, rank)


def test_missing_devices_are_named(model):
    result = run(model[0], "--device", "cuda:1")
    assert result.returncode == 1 and "cuda:1 does not exist" in result.stderr
    result = run(model[0], "--device", "cuda:0", env={"HUBFS_FAKE_CUDA_DEVICES": "0"})
    assert result.returncode == 1
    assert "no CUDA device available for cuda:0 (the driver reports 0 devices); use --device cpu" in result.stderr
    result = run(model[0], "--device", "cuda:0", env={"HUBFS_FAKE_CUDA_MEMORY": "1000000"})
    assert result.returncode == 1
    assert "cannot allocate" in result.stderr and "on cuda:0: fake CUDA error" in result.stderr
