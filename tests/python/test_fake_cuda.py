"""The package's device="cuda:K" path without a GPU: libhubfs built with the strict CPU stand-in
of the CUDA runtime (tests/loader/fake_cudart.c, whose device memory is host memory, so the
test reads it back). The tensors are DLPack producers on (kDLCUDA, K) whose bytes are the numpy
slices, loaded whole and streamed; the arena lives as long as a tensor does and is freed on
the right device from any thread (the stand-in's report: no rule broken, no context elsewhere);
device="cuda" picks the GPU as the command does."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "loader"))
from loader_models import expected_slice, llama_model  # noqa: E402

FAKE_LIBRARY = os.environ["HUBFS_FAKE_CUDA_LIBRARY"]
CLEARED = ("HUBFS_FAKE_CUDA_", "CUDA_VISIBLE_DEVICES", "LOCAL_RANK", "OMPI_", "SLURM_", "RANK", "WORLD_SIZE")

SCRIPT = r"""
import ctypes, gc, json, sys, threading
import hubfs
from hubfs import _native

args = json.loads(sys.argv[1])
out = {}

def describe(tensor):
    capsule = tensor.__dlpack__()
    ctypes.pythonapi.PyCapsule_GetPointer.restype = ctypes.c_void_p
    ctypes.pythonapi.PyCapsule_GetPointer.argtypes = [ctypes.py_object, ctypes.c_char_p]
    managed = _native.DLManagedTensor.from_address(ctypes.pythonapi.PyCapsule_GetPointer(capsule, b"dltensor"))
    dl = managed.dl_tensor
    return {"device": list(tensor.__dlpack_device__()), "dl_device": [dl.device.device_type, dl.device.device_id],
            "dtype": [dl.dtype.code, dl.dtype.bits], "shape": [dl.shape[d] for d in range(dl.ndim)],
            "cuda_interface": tensor.__cuda_array_interface__["data"][0] == tensor.data_ptr,
            "bytes": ctypes.string_at(tensor.data_ptr, tensor.nbytes).hex()}

for what in args["do"]:
    if what == "load":
        state = hubfs.load_rank(args["path"], tp=args["tp"], rank=args["rank"], device=args["device"],
                                framework="dlpack", threads=args.get("threads", 0), chunk_bytes=args.get("chunk", 0))
        out["load"] = {name: describe(t) for name, t in state.items()}
    elif what == "stream":
        out["stream"] = {name: describe(t) for name, t in hubfs.iter_tensors(
            args["path"], tp=args["tp"], rank=args["rank"], device=args["device"], framework="dlpack")}
    elif what == "numpy":
        try:
            hubfs.load_rank(args["path"], device=args["device"], framework="numpy")
        except ValueError as e:
            out["numpy"] = str(e)
    elif what == "keep_one_and_reload":  # arena alive while a tensor is; freed on another thread
        kept = hubfs.load_rank(args["path"], device=args["device"], framework="dlpack")
        one = [next(iter(kept.values()))]
        del kept
        gc.collect()
        try:
            hubfs.load_rank(args["path"], device=args["device"], framework="dlpack")
            out["second_while_kept"] = "loaded"
        except hubfs.HubfsError as e:
            out["second_while_kept"] = str(e)
        dropper = threading.Thread(target=one.clear)
        dropper.start()
        dropper.join()
        gc.collect()
        third = hubfs.load_rank(args["path"], device=args["device"], framework="dlpack")
        out["after_drop"] = len(third)
    elif what == "device":
        out["device"] = hubfs.load_rank(args["path"], device="cuda", framework="dlpack").popitem()[1].device
print(json.dumps(out))
"""


def run(tmp_path, env=None, **args):
    report = tmp_path / "report.json"
    if report.exists():
        report.unlink()
    base = {k: v for k, v in os.environ.items() if not k.startswith(CLEARED)}
    base.update(HUBFS_LIBRARY=FAKE_LIBRARY, HUBFS_FAKE_CUDA_REPORT=str(report), **(env or {}))
    result = subprocess.run([sys.executable, "-c", SCRIPT, json.dumps(args)], capture_output=True, text=True,
                            timeout=300, env=base)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout), json.loads(report.read_text())


def assert_clean(report, contexts):
    assert report["violation_count"] == 0, (report["seed"], report["violations"])
    assert report["contexts"] == contexts, report["context_creators"]


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return llama_model(str(tmp_path_factory.mktemp("llama")), seed=17, shards=2)


DLPACK_CODES = {"BF16": [4, 16], "F16": [2, 16], "F32": [2, 32]}


def assert_slices(described, model, tp, rank, device):
    _, config, tensors = model
    assert sorted(described) == sorted(tensors)
    for name, (dtype, source) in tensors.items():
        expected = np.ascontiguousarray(expected_slice(name, source, config, tp, rank))
        d = described[name]
        assert d["device"] == d["dl_device"] == [2, device], name  # kDLCUDA
        assert d["dtype"] == DLPACK_CODES[dtype] and d["shape"] == list(expected.shape), name
        assert d["cuda_interface"], name
        assert bytes.fromhex(d["bytes"]) == expected.tobytes(), (name, tp, rank)


@pytest.mark.parametrize("tp,rank,extra", [(1, 0, {}), (2, 1, {}), (8, 5, {"threads": 4, "chunk": 4096})])
def test_cuda_tensors_hold_the_slices_loaded_whole_and_streamed(model, tmp_path, tp, rank, extra):
    out, report = run(tmp_path, env={"HUBFS_FAKE_CUDA_DEVICES": "2"}, path=model[0], tp=tp, rank=rank,
                      device="cuda:1", do=["load", "stream", "numpy"], **extra)
    assert_slices(out["load"], model, tp, rank, 1)
    assert_slices(out["stream"], model, tp, rank, 1)
    assert "framework='numpy' holds host memory only" in out["numpy"]
    assert_clean(report, [1])


def test_the_arena_lives_while_a_tensor_does_and_is_freed_from_any_thread(model, tmp_path):
    """Device memory for one rank and a half: a second load fits only once the first is freed."""
    size = sum(a.nbytes + 256 for _, a in model[2].values())
    out, report = run(tmp_path, env={"HUBFS_FAKE_CUDA_DEVICES": "2", "HUBFS_FAKE_CUDA_MEMORY": str(size * 3 // 2)},
                      path=model[0], tp=1, rank=0, device="cuda:1", do=["keep_one_and_reload"])
    assert "cannot allocate" in out["second_while_kept"] and "on cuda:1: out of memory" in out["second_while_kept"]
    assert out["after_drop"] == len(model[2])
    assert_clean(report, [1])  # the free on a thread without a context made cuda:1 current


def test_device_cuda_is_the_one_visible_gpu_else_the_local_rank(model, tmp_path):
    out, report = run(tmp_path, env={"HUBFS_FAKE_CUDA_DEVICES": "4", "LOCAL_RANK": "2"}, path=model[0],
                      do=["device"])
    assert out["device"] == "cuda:2"
    assert_clean(report, [2])
    out, report = run(tmp_path, env={"HUBFS_FAKE_CUDA_DEVICES": "8", "CUDA_VISIBLE_DEVICES": "5", "LOCAL_RANK": "3"},
                      path=model[0], do=["device"])
    assert out["device"] == "cuda:0" and report["physical_contexts"] == [5]


def test_every_runtime_call_is_the_stand_ins():
    """Linked with --as-needed, the library would need libcudart for any runtime function the
    stand-in lacks (which would then run unchecked, or fail without a GPU)."""
    dynamic = subprocess.run(["readelf", "-d", FAKE_LIBRARY], capture_output=True, text=True, check=True)
    assert "(NEEDED)" in dynamic.stdout
    assert "libcudart" not in dynamic.stdout and "libcuda." not in dynamic.stdout
