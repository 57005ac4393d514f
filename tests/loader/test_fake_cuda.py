"""`hubfs load` with the CUDA target, linked against tests/loader/fake_cudart.c: a strict CPU
stand-in for the runtime (a current device per thread, streams, events and allocations owned by
a device, asynchronous copies that run later and only from pinned memory, injected errors).
The ring of pinned buffers, the events that recycle them, the copies of row-parallel slices and
the copy back for --save must give exactly the numpy slices of the source, on cuda:0 and on
cuda:1 of two devices, with no context on a device the load did not ask for and no rule of the
runtime broken (the stand-in's report says). test_target_cuda.c checks the target's rules one
by one; gpu_check.sh checks a real GPU."""
import json
import os
import subprocess

import numpy as np
import pytest

from loader_models import expected_slice, llama_model, read_safetensors

FAKE = os.path.join(os.environ["HUBFS_BUILD_DIR"], "tests", "loader", "hubfs_fake_cuda")
PINNED_MAX = 1 << 30  # the documented bound of the staging ring
FAKE_KNOBS = ("HUBFS_FAKE_CUDA_", "CUDA_VISIBLE_DEVICES", "LOCAL_RANK", "OMPI_COMM_WORLD_LOCAL_RANK",
              "SLURM_LOCALID")


def run(tmp_path, *args, env=None):
    """(completed process, the stand-in's report)."""
    report = tmp_path / "fake-cuda-report.json"
    if report.exists():
        report.unlink()
    base = {k: v for k, v in os.environ.items() if not k.startswith(FAKE_KNOBS)}
    result = subprocess.run([FAKE, *args], capture_output=True, text=True, timeout=120,
                            env={**base, "HUBFS_FAKE_CUDA_REPORT": str(report), **(env or {})})
    return result, json.loads(report.read_text()) if report.exists() else None


def assert_clean(report, contexts):
    """No rule broken and contexts on `contexts` alone (the seed replays the run's delays)."""
    assert report["violation_count"] == 0, (report["seed"], report["violations"])
    assert report["contexts"] == contexts, (report["seed"], report["context_creators"])


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return llama_model(str(tmp_path_factory.mktemp("llama")), seed=5, shards=2)


@pytest.mark.parametrize("device,devices", [(0, 1), (1, 2)])
@pytest.mark.parametrize("tp,extra", [(1, []), (2, ["--threads", "2"]),
                                      (8, ["--chunk-bytes", "4096", "--threads", "4"])])
def test_device_slices_equal_numpy_and_the_host_load(model, tmp_path, tp, extra, device, devices):
    path, config, tensors = model
    for rank in range(tp):
        out = str(tmp_path / f"rank{rank}.safetensors")
        result, report = run(tmp_path, path, "--tp", str(tp), "--rank", str(rank), "--device",
                             f"cuda:{device}", "--verify-against-host", "--save", out, *extra,
                             env={"HUBFS_FAKE_CUDA_DEVICES": str(devices),
                                  "HUBFS_FAKE_CUDA_SEED": str(100 * tp + rank)})
        assert result.returncode == 0, result.stderr
        assert f"loaded rank {rank} of {tp} to cuda:{device}" in result.stdout
        assert "byte-identical to a host load" in result.stdout
        assert_clean(report, [device])
        assert report["pinned_peak"] <= PINNED_MAX
        # row-parallel pieces go as 2-D copies from the rows read whole (none moved by a CPU)
        assert (report["copies_2d"] > 0) == (tp > 1), report
        saved = read_safetensors(out)
        assert sorted(saved) == sorted(tensors)
        for name, (dtype, source) in tensors.items():
            expected = np.ascontiguousarray(expected_slice(name, source, config, tp, rank))
            assert saved[name][0] == dtype
            assert np.array_equal(saved[name][1].view(np.uint8), expected.view(np.uint8)), (name, rank)


def test_default_loads_to_cuda_1_leave_gpu_0_alone(model, tmp_path):
    """Eight readers and the default ring, as a rank on cuda:1 runs: whichever thread calls
    CUDA first, and however the copies interleave, only cuda:1 gets a context."""
    for seed in range(6):
        result, report = run(tmp_path, model[0], "--tp", "2", "--rank", "1", "--device", "cuda:1",
                             env={"HUBFS_FAKE_CUDA_DEVICES": "2", "HUBFS_FAKE_CUDA_SEED": str(seed),
                                  "HUBFS_FAKE_CUDA_GBPS": "1"})
        assert result.returncode == 0, result.stderr
        assert_clean(report, [1])


def test_device_cuda_is_the_one_visible_gpu_else_the_local_rank(model, tmp_path):
    # one GPU per rank through CUDA_VISIBLE_DEVICES: every rank sees it as cuda:0
    result, report = run(tmp_path, model[0], "--device", "cuda",
                         env={"HUBFS_FAKE_CUDA_DEVICES": "8", "CUDA_VISIBLE_DEVICES": "5",
                              "LOCAL_RANK": "3"})
    assert result.returncode == 0, result.stderr
    assert "to cuda:0:" in result.stdout
    assert_clean(report, [0])
    assert report["physical_contexts"] == [5]
    # all GPUs visible: the local rank picks one
    result, report = run(tmp_path, model[0], "--device", "cuda",
                         env={"HUBFS_FAKE_CUDA_DEVICES": "4", "SLURM_LOCALID": "2"})
    assert result.returncode == 0, result.stderr
    assert "to cuda:2:" in result.stdout
    assert_clean(report, [2])
    result, _ = run(tmp_path, model[0], "--device", "cuda",
                    env={"HUBFS_FAKE_CUDA_DEVICES": "2", "LOCAL_RANK": "3"})
    assert result.returncode == 1
    assert "--device cuda: local rank 3 has no GPU: this process sees 2 (cuda:0..1)" in result.stderr


def test_missing_devices_are_named(model, tmp_path):
    result, _ = run(tmp_path, model[0], "--device", "cuda:1")
    assert result.returncode == 1 and "cuda:1 does not exist" in result.stderr
    result, _ = run(tmp_path, model[0], "--device", "cuda:0", env={"HUBFS_FAKE_CUDA_DEVICES": "0"})
    assert result.returncode == 1
    assert ("no CUDA device available for cuda:0 (no CUDA-capable device is detected); "
            "use --device cpu") in result.stderr
    result, _ = run(tmp_path, model[0], "--device", "cuda:0", env={"HUBFS_FAKE_CUDA_MEMORY": "1000000"})
    assert result.returncode == 1
    assert "cannot allocate" in result.stderr and "on cuda:0: out of memory" in result.stderr


@pytest.mark.parametrize("knob,message", [
    ("HUBFS_FAKE_CUDA_FAIL_COPY=5", "host-to-device copy to cuda:0 failed: an illegal memory "
                                    "access was encountered (cudaErrorIllegalAddress)"),
    ("HUBFS_FAKE_CUDA_FAIL=cudaMemcpyAsync:3", "queueing a host-to-device copy to cuda:0 failed: "
                                               "invalid argument"),
    ("HUBFS_FAKE_CUDA_FAIL=cudaHostAlloc:2", "cannot pin 10 staging buffers of 4096 bytes for "
                                             "cuda:0: out of memory"),
])
def test_device_errors_end_the_load_with_their_message(model, tmp_path, knob, message):
    name, value = knob.split("=")
    result, report = run(tmp_path, model[0], "--tp", "8", "--rank", "3", "--device", "cuda:0",
                         "--chunk-bytes", "4096", env={name: value})
    assert result.returncode == 1
    assert message in result.stderr
    assert report["violation_count"] == 0, report["violations"]


def test_large_chunks_stay_within_the_pinned_bound(model, tmp_path):
    """Eight readers of 512 MiB chunks would pin 5 GiB; the ring takes two buffers."""
    result, report = run(tmp_path, model[0], "--device", "cuda:0", "--chunk-mib", "512",
                         "--verify-against-host")
    assert result.returncode == 0, result.stderr
    assert "byte-identical to a host load" in result.stdout
    assert 0 < report["pinned_peak"] <= PINNED_MAX


def test_help_states_the_bound_and_the_device_rule(tmp_path):
    result, _ = run(tmp_path, "--help")
    assert result.returncode == 0
    text = " ".join(result.stdout.split())
    assert "never more than 1 GiB" in text
    assert "the one GPU the process sees when there is one" in text


def test_every_runtime_call_is_the_stand_ins():
    """Linked with --as-needed, the executable would need libcudart for any runtime function
    the stand-in lacks (which would then run unchecked, or fail without a GPU)."""
    dynamic = subprocess.run(["readelf", "-d", FAKE], capture_output=True, text=True, check=True)
    assert "(NEEDED)" in dynamic.stdout
    assert "libcudart" not in dynamic.stdout and "libcuda." not in dynamic.stdout
