"""hubfs.load_rank, hubfs.iter_tensors and hubfs.inspect (python/hubfs over this build's
libhubfs) on models written by the real safetensors package: every tensor against numpy slicing
by the documented rules (tests/loader/loader_models.py) or against safetensors' own loader, the
tensors zero-copy views of one arena that lives as long as any of them, in file order as they
land for iter_tensors, every dtype torch has, numpy without torch, the launcher variables, plans,
hf:// URLs and errors."""
import gc
import json
import os
import subprocess
import sys
import threading

import numpy as np
import pytest
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "loader"))
from loader_models import expected_slice, llama_model  # noqa: E402

import hubfs  # noqa: E402

HUBFS = os.environ["HUBFS_BIN"]
LAUNCHER_VARIABLES = ("WORLD_SIZE", "RANK", "LOCAL_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_RANK",
                      "OMPI_COMM_WORLD_LOCAL_RANK", "SLURM_NTASKS", "SLURM_PROCID", "SLURM_LOCALID")


@pytest.fixture(autouse=True)
def no_launcher(monkeypatch):
    for name in LAUNCHER_VARIABLES:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """A sharded Llama with GQA (8 heads, 2 kv heads), biases, BF16/F16/F32 tensors."""
    return llama_model(str(tmp_path_factory.mktemp("llama")), seed=9, shards=3)


def raw_bytes(tensor):
    """The bytes of a torch tensor or numpy array, whatever its dtype (bf16 and float8 too)."""
    if isinstance(tensor, torch.Tensor):
        tensor = tensor.contiguous().reshape(-1).view(torch.uint8).numpy()
    return np.ascontiguousarray(tensor).reshape(-1).view(np.uint8)


def same(a, b):
    return tuple(a.shape) == tuple(b.shape) and np.array_equal(raw_bytes(a), raw_bytes(b))


def assert_rank(state, tensors, config, tp, rank):
    assert sorted(state) == sorted(tensors)
    for name, (_, source) in tensors.items():
        expected = expected_slice(name, source, config, tp, rank)
        assert tuple(state[name].shape) == expected.shape, (name, tp, rank)
        assert np.array_equal(raw_bytes(state[name]).ravel(), raw_bytes(expected).ravel()), (name, tp, rank)


@pytest.mark.parametrize("tp", [1, 2, 4])
def test_every_rank_holds_its_slices(model, tp):
    path, config, tensors = model
    for rank in range(tp):
        state = hubfs.load_rank(path, tp=tp, rank=rank)
        assert_rank(state, tensors, config, tp, rank)
        assert state["model.embed_tokens.weight"].dtype == torch.bfloat16
        assert state["lm_head.weight"].dtype == torch.float16
        assert state["model.norm.weight"].dtype == torch.float32
        assert all(t.device.type == "cpu" for t in state.values())


def is_mapped(address):
    """Whether `address` is in a mapping of this process (the host arena is one mmap)."""
    with open("/proc/self/maps") as f:
        for line in f:
            start, end = (int(x, 16) for x in line.split()[0].split("-"))
            if start <= address < end:
                return True
    return False


def test_the_tensors_are_views_of_one_arena_that_lives_while_any_of_them_does(model):
    path, config, tensors = model
    state = hubfs.load_rank(path, tp=2, rank=1)
    # No copy: in file order, each tensor starts where the one before ends, rounded up to 256.
    ordered = [state[name] for name in file_order(path)]
    for before, after in zip(ordered, ordered[1:]):
        end = before.data_ptr() + before.numel() * before.element_size()
        assert after.data_ptr() == (end + 255) // 256 * 256
    arena = ordered[0].data_ptr()
    name = "model.layers.1.mlp.down_proj.weight"
    kept = state.pop(name)
    del state, ordered, before, after
    gc.collect()
    assert is_mapped(arena)
    assert same(kept, expected_slice(name, tensors[name][1], config, 2, 1))
    del kept  # the last tensor: the arena goes with it
    gc.collect()
    assert not is_mapped(arena)


def test_the_last_tensor_may_be_dropped_on_another_thread(model):
    state = hubfs.load_rank(model[0])
    arena = state[file_order(model[0])[0]].data_ptr()
    holder = [state]
    del state
    dropper = threading.Thread(target=holder.clear)
    dropper.start()
    dropper.join()
    gc.collect()
    assert not is_mapped(arena)


def file_order(path):
    return [t["name"] for t in hubfs.inspect(path)["tensors"]]


@pytest.mark.parametrize("tp,rank", [(1, 0), (4, 3)])
def test_iter_tensors_yields_what_load_rank_loads_in_file_order(model, tp, rank):
    path, config, tensors = model
    streamed = list(hubfs.iter_tensors(path, tp=tp, rank=rank))
    assert [name for name, _ in streamed] == file_order(path)
    assert_rank(dict(streamed), tensors, config, tp, rank)
    loaded = hubfs.load_rank(path, tp=tp, rank=rank)
    for name, tensor in streamed:
        assert tensor.dtype == loaded[name].dtype and same(tensor, loaded[name]), name


def test_iter_tensors_in_groups_of_small_reads(model):
    """Two readers of 4 KiB: groups of 8 KiB (a few small tensors, or one larger one read in
    many pieces), each filled while the one before is handed out."""
    path, config, tensors = model
    streamed = list(hubfs.iter_tensors(path, tp=2, rank=0, threads=2, chunk_bytes=4096))
    assert [name for name, _ in streamed] == file_order(path)
    assert_rank(dict(streamed), tensors, config, 2, 0)


def test_leaving_the_loop_early_stops_the_stream_and_frees_it(model):
    path = model[0]
    stream = hubfs.iter_tensors(path, tp=2, rank=0)
    name, tensor = next(stream)
    del stream  # closes the generator: the stream stops and lets go of what it holds
    gc.collect()
    assert name == file_order(path)[0]
    arena = tensor.data_ptr()
    assert is_mapped(arena)
    del tensor
    gc.collect()
    assert not is_mapped(arena)


def test_numpy_without_torch(model, tmp_path):
    """torch blocked from importing: framework="numpy" gives numpy arrays (bf16 as its raw bits),
    framework="torch" says how to do without it."""
    path, config, tensors = model
    script = f"""
import sys, json
sys.modules["torch"] = None
import hubfs, numpy as np
state = hubfs.load_rank({path!r}, tp=2, rank=1, framework="numpy")
np.savez({str(tmp_path / "state.npz")!r}, **state)
try:
    hubfs.load_rank({path!r})
except ImportError as e:
    print(json.dumps(str(e)))
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "framework='numpy'" in json.loads(result.stdout)
    with np.load(tmp_path / "state.npz") as saved:
        state = dict(saved)
    assert_rank(state, tensors, config, 2, 1)
    assert state["model.embed_tokens.weight"].dtype == np.uint16  # bf16's bits
    assert state["lm_head.weight"].dtype == np.float16


def test_dlpack_tensors_for_any_framework(model):
    path, config, tensors = model
    state = hubfs.load_rank(path, tp=2, rank=0, framework="dlpack")
    tensor = state["lm_head.weight"]
    assert isinstance(tensor, hubfs.Tensor) and tensor.__dlpack_device__() == (1, 0)
    expected = expected_slice("lm_head.weight", tensors["lm_head.weight"][1], config, 2, 0)
    for consumer in (np.from_dlpack, np.asarray, torch.from_dlpack):
        view = consumer(tensor)
        assert np.array_equal(raw_bytes(view), raw_bytes(expected)), consumer
    arena = tensor.data_ptr
    tensor.__dlpack__()  # a capsule nobody takes: its destructor gives back its reference
    del state, tensor, view
    gc.collect()
    assert not is_mapped(arena)


def write_every_dtype(path):
    """One tensor per safetensors dtype torch has, written by safetensors.torch."""
    from safetensors.torch import save_file
    generator = torch.Generator().manual_seed(4)
    bits = torch.randint(0, 256, (6, 40), dtype=torch.uint8, generator=generator)
    tensors = {}
    for dtype in (torch.bool, torch.uint8, torch.int8, torch.int16, torch.uint16, torch.float16,
                  torch.bfloat16, torch.int32, torch.uint32, torch.float32, torch.int64, torch.uint64,
                  torch.float64, torch.complex64, torch.float8_e4m3fn, torch.float8_e5m2):
        size = torch.tensor([], dtype=dtype).element_size()
        if dtype == torch.bool:
            tensors["bool"] = bits[:, :5] % 2 == 1
        else:
            tensors[str(dtype).split(".")[1]] = bits[:, :5 * size].clone().view(dtype)
    tensors["scalar"] = torch.tensor(2.5, dtype=torch.float32)
    tensors["empty"] = torch.zeros((0, 3), dtype=torch.bfloat16)
    save_file(tensors, path)
    return tensors


def test_every_dtype_torch_has(tmp_path):
    from safetensors.torch import load_file
    path = str(tmp_path / "dtypes.safetensors")
    write_every_dtype(path)
    expected = load_file(path)
    state = hubfs.load_rank(path)
    assert sorted(state) == sorted(expected)
    for name, tensor in expected.items():
        assert state[name].dtype == tensor.dtype and state[name].shape == tensor.shape, name
        assert same(state[name], tensor), name
    arrays = hubfs.load_rank(path, framework="numpy")
    for name, tensor in expected.items():
        assert arrays[name].shape == tuple(tensor.shape), name
        assert np.array_equal(raw_bytes(arrays[name]), raw_bytes(tensor)), name


def write_raw_safetensors(path, entries):
    """entries: name -> (dtype, shape, bytes), written by hand (dtypes no package writes)."""
    header, data = {}, b""
    for name, (dtype, shape, payload) in entries.items():
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(data), len(data) + len(payload)]}
        data += payload
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(len(text).to_bytes(8, "little") + text + data)


def test_sub_byte_dtypes_come_as_their_bytes(tmp_path):
    path = str(tmp_path / "fp4.safetensors")
    packed = bytes(range(16))
    write_raw_safetensors(path, {"w": ("F4", [4, 8], packed), "s": ("F6_E2M3", [4, 4], bytes(range(12)))})
    state = hubfs.load_rank(path)
    assert state["w"].dtype == torch.uint8 and state["w"].shape == (16,)
    assert bytes(state["w"].numpy()) == packed
    assert bytes(hubfs.load_rank(path, framework="numpy")["s"]) == bytes(range(12))
    assert hubfs.inspect(path)["tensors"][0]["dtype"] in ("F4", "F6_E2M3")


@pytest.mark.parametrize("names", [("WORLD_SIZE", "RANK"), ("OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_RANK"),
                                   ("SLURM_NTASKS", "SLURM_PROCID")])
def test_tp_and_rank_default_from_the_launcher(model, monkeypatch, names):
    path, config, tensors = model
    monkeypatch.setenv(names[0], "4")
    monkeypatch.setenv(names[1], "2")
    assert_rank(hubfs.load_rank(path), tensors, config, 4, 2)
    assert_rank(dict(hubfs.iter_tensors(path)), tensors, config, 4, 2)
    monkeypatch.setenv(names[1], "two")
    with pytest.raises(ValueError, match=f"{names[1]}='two'"):
        hubfs.load_rank(path)


def test_a_plan_given_as_a_dict_is_merged_over_the_models(model):
    path, config, tensors = model
    state = hubfs.load_rank(path, tp=2, rank=1, plan={"layers.*.mlp.down_proj": "replicate"})
    name = "model.layers.0.mlp.down_proj.weight"
    assert np.array_equal(raw_bytes(state[name]), raw_bytes(tensors[name][1]))  # whole
    other = "model.layers.0.mlp.up_proj.weight"
    assert np.array_equal(raw_bytes(state[other]), raw_bytes(expected_slice(other, tensors[other][1], config, 2, 1)))


def test_inspect_is_what_the_command_prints(model):
    path = model[0]
    result = subprocess.run([HUBFS, "inspect", path, "--json"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert hubfs.inspect(path) == json.loads(result.stdout)


@pytest.mark.parametrize("call,kwargs,fragments", [
    ("load_rank", {"path": "/nonexistent/model"}, ["/nonexistent/model", "No such file or directory"]),
    ("load_rank", {"tp": 2, "rank": 2}, ["rank 2 is not in [0, 2)"]),
    ("load_rank", {"device": "tpu:0"}, ["unknown device 'tpu:0'"]),
    ("iter_tensors", {"tp": 3}, ["is not divisible by tp 3"]),
    ("inspect", {"path": "hf://"}, ["hf://"]),
])
def test_errors_carry_libhubfs_messages(model, call, kwargs, fragments):
    arguments = {"path": model[0], **kwargs}
    if call == "inspect":
        arguments = {"path": kwargs["path"]}
    with pytest.raises(hubfs.HubfsError) as raised:
        result = getattr(hubfs, call)(**arguments)
        if call == "iter_tensors":
            list(result)
    for fragment in fragments:
        assert fragment in str(raised.value)


def test_arguments_are_checked(model):
    with pytest.raises(ValueError, match="unknown framework 'jax'"):
        hubfs.load_rank(model[0], framework="jax")
    with pytest.raises(ValueError, match=r"tp must be an int in \[0, 2\*\*32\)"):
        hubfs.load_rank(model[0], tp="2")
    with pytest.raises(ValueError, match="rank must be an int"):
        hubfs.load_rank(model[0], tp=2, rank=1 << 32)  # would wrap to rank 0 in C


def test_an_hf_url_loads_what_the_local_copy_holds(hub, monkeypatch, tmp_path):
    for name, value in hub.client_env(tmp_path / "hf-home", token=hub.token, base={}).items():
        monkeypatch.setenv(name, value)
    source = hub.sources["test-org/tiny-llama"]
    remote = hubfs.load_rank("hf://test-org/tiny-llama", tp=2, rank=1)
    local = hubfs.load_rank(source, tp=2, rank=1)
    assert sorted(remote) == sorted(local)
    for name in local:
        assert same(remote[name], local[name]), name
    assert hubfs.inspect("hf://test-org/tiny-llama")["parameters"] == hubfs.inspect(source)["parameters"]
