"""scripts/make_model.py: files the real safetensors package loads, shapes that follow config.json,
an index that covers every tensor, and values equal to the documented numpy recipe."""
import hashlib
import json
import os
import struct
import subprocess
import sys
import zlib

import numpy as np
import pytest
from safetensors import safe_open

import hubemu

WIDTH = {"BF16": 2, "F16": 2, "F32": 4}


def recipe(name, shape, seed, dtype):
    """The value recipe from scripts/README.md, written out again here."""
    rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
    u = rng.random(int(np.prod(shape)), dtype=np.float32)
    if name.endswith("norm.weight"):
        values = np.float32(1) + (u * np.float32(2) - np.float32(1)) * np.float32(0.1)
    else:
        values = (u * np.float32(2) - np.float32(1)) * np.float32(0.02)
    values = values.astype(np.float32).reshape(shape)
    if dtype == "bf16":
        return (values.view(np.uint32) >> 16).astype(np.uint16)
    return values.astype(np.float16) if dtype == "f16" else values


def read_header(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        return n, json.loads(f.read(n))


def raw_tensor(path, name):
    n, header = read_header(path)
    begin, end = header[name]["data_offsets"]
    with open(path, "rb") as f:
        f.seek(8 + n + begin)
        return f.read(end - begin)


def expected_shapes(cfg):
    h, inter, vocab = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"]
    kv = cfg["num_key_value_heads"] * (h // cfg["num_attention_heads"])
    shapes = {"model.embed_tokens.weight": [vocab, h], "model.norm.weight": [h], "lm_head.weight": [vocab, h]}
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        shapes.update({p + "self_attn.q_proj.weight": [h, h], p + "self_attn.k_proj.weight": [kv, h],
                       p + "self_attn.v_proj.weight": [kv, h], p + "self_attn.o_proj.weight": [h, h],
                       p + "mlp.gate_proj.weight": [inter, h], p + "mlp.up_proj.weight": [inter, h],
                       p + "mlp.down_proj.weight": [h, inter], p + "input_layernorm.weight": [h],
                       p + "post_attention_layernorm.weight": [h]})
    return shapes


def test_tiny_sharded_model_is_complete_and_consistent(tiny_model):
    with open(os.path.join(tiny_model, "config.json")) as f:
        cfg = json.load(f)
    assert cfg["architectures"] == ["LlamaForCausalLM"] and cfg["torch_dtype"] == "bfloat16"
    assert cfg["num_key_value_heads"] < cfg["num_attention_heads"]
    for key in ("hidden_size", "intermediate_size", "vocab_size"):
        assert cfg[key] % 8 == 0
    with open(os.path.join(tiny_model, "model.safetensors.index.json")) as f:
        index = json.load(f)
    shards = sorted(set(index["weight_map"].values()))
    assert shards == [f"model-0000{k}-of-00003.safetensors" for k in (1, 2, 3)]
    assert not os.path.exists(os.path.join(tiny_model, "model.safetensors"))
    found, total = {}, 0
    for shard in shards:
        path = os.path.join(tiny_model, shard)
        with safe_open(path, "np") as f:
            for name in f.keys():
                found[name] = (shard, f.get_slice(name).get_shape(), f.get_slice(name).get_dtype())
        n, _ = read_header(path)
        total += os.path.getsize(path) - 8 - n
    shapes = expected_shapes(cfg)
    assert set(found) == set(shapes) == set(index["weight_map"])
    for name, (shard, shape, dtype) in found.items():
        assert index["weight_map"][name] == shard
        assert list(shape) == shapes[name] and dtype == "BF16"
    tensor_bytes = sum(int(np.prod(s)) * 2 for s in shapes.values())
    assert index["metadata"]["total_size"] == tensor_bytes == total
    assert 2e6 <= sum(os.path.getsize(os.path.join(tiny_model, s)) for s in shards) <= 5e6
    for name in ("generation_config.json", "tokenizer.json", "tokenizer_config.json"):
        with open(os.path.join(tiny_model, name)) as f:
            assert isinstance(json.load(f), dict)


def test_bf16_values_follow_the_recipe(tiny_model):
    with open(os.path.join(tiny_model, "model.safetensors.index.json")) as f:
        weight_map = json.load(f)["weight_map"]
    for name in ("model.embed_tokens.weight", "model.layers.1.self_attn.k_proj.weight",
                 "model.layers.0.input_layernorm.weight", "lm_head.weight"):
        path = os.path.join(tiny_model, weight_map[name])
        shape = read_header(path)[1][name]["shape"]
        bits = np.frombuffer(raw_tensor(path, name), dtype="<u2").reshape(shape)
        assert np.array_equal(bits, recipe(name, shape, 0, "bf16")), name
        as_f32 = (bits.astype(np.uint32) << 16).view(np.float32)
        assert np.isfinite(as_f32).all()
        bound = 1.1 if name.endswith("norm.weight") else 0.02
        assert np.abs(as_f32).max() <= bound and as_f32.std() > 0


@pytest.mark.parametrize("dtype,st_dtype", [("f32", "F32"), ("f16", "F16")])
def test_float_dtypes_load_with_safetensors_numpy(tmp_path, dtype, st_dtype):
    out = hubemu.make_model(str(tmp_path / dtype), preset="tiny", dtype=dtype, seed=5,
                            layers=1, hidden=64, intermediate=128, vocab=256, heads=4, kv_heads=1)
    with open(os.path.join(out, "config.json")) as f:
        cfg = json.load(f)
    assert cfg["num_hidden_layers"] == 1 and cfg["num_key_value_heads"] == 1
    with safe_open(os.path.join(out, "model.safetensors"), "np") as f:
        names = list(f.keys())
        assert set(names) == set(expected_shapes(cfg))
        for name in names:
            assert f.get_slice(name).get_dtype() == st_dtype
            got = f.get_tensor(name)
            assert np.array_equal(got, recipe(name, got.shape, 5, dtype)), name


def test_same_arguments_same_bytes_and_seed_matters(tmp_path):
    def digest(d):
        return {n: hashlib.sha256(open(os.path.join(d, n), "rb").read()).hexdigest()
                for n in sorted(os.listdir(d))}
    opts = dict(preset="tiny", shards=2, layers=1, vocab=512)
    a = digest(hubemu.make_model(str(tmp_path / "a"), seed=1, **opts))
    b = digest(hubemu.make_model(str(tmp_path / "b"), seed=1, **opts))
    c = digest(hubemu.make_model(str(tmp_path / "c"), seed=2, **opts))
    assert a == b
    assert a["model-00001-of-00002.safetensors"] != c["model-00001-of-00002.safetensors"]
    assert a["config.json"] == c["config.json"]


def test_small_preset_size_and_single_file(tmp_path):
    out = hubemu.make_model(str(tmp_path / "small"), preset="small")
    files = sorted(os.listdir(out))
    assert "model.safetensors" in files and "model.safetensors.index.json" not in files
    size = os.path.getsize(os.path.join(out, "model.safetensors"))
    assert 40e6 <= size <= 60e6
    with safe_open(os.path.join(out, "model.safetensors"), "np") as f:
        assert len(list(f.keys())) == 6 * 9 + 3


def test_bad_arguments_are_refused():
    script = os.path.join(hubemu.SOURCE_DIR, "scripts", "make_model.py")
    for args in (["--preset", "huge"], ["--heads", "3"], ["--shards", "0"]):
        result = subprocess.run([sys.executable, script, "--out", "/tmp/hubemu-never", *args],
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 2, args
        assert result.stderr
    assert not os.path.exists("/tmp/hubemu-never")
