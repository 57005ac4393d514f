"""Small Llama-shaped models for the loader tests, written with the real `safetensors`
package (TensorSpec + serialize_file, so BF16 works without torch), and an independent
reference for tensor-parallel slicing written from the documented rules."""
import json
import os

import numpy as np
from safetensors import TensorSpec, deserialize, serialize_file

NUMPY_OF = {"BF16": np.uint16, "F16": np.float16, "F32": np.float32, "I64": np.int64,
            "U8": np.uint8, "I32": np.int32}
SPEC_DTYPE = {"BF16": "bfloat16", "F16": "float16", "F32": "float32", "I64": "int64",
              "U8": "uint8", "I32": "int32"}
ITEMSIZE = {"BF16": 2, "F16": 2, "F32": 4, "I64": 8, "U8": 1, "I32": 4}


def llama_config(layers=2, hidden=128, intermediate=256, vocab=2048, heads=8, kv_heads=2):
    return dict(architectures=["LlamaForCausalLM"], model_type="llama", num_hidden_layers=layers,
                hidden_size=hidden, intermediate_size=intermediate, vocab_size=vocab,
                num_attention_heads=heads, num_key_value_heads=kv_heads)


def llama_tensors(config, seed=0):
    """name -> (safetensors dtype, numpy array of that dtype's storage type). Random bits,
    so every byte of every slice is distinct enough to catch a misplaced row or column."""
    rng = np.random.default_rng(seed)
    h, i, v = config["hidden_size"], config["intermediate_size"], config["vocab_size"]
    hd = h // config["num_attention_heads"]
    kv = config["num_key_value_heads"] * hd

    def bf16(*shape):
        return "BF16", rng.integers(0, 1 << 16, size=shape, dtype=np.uint16)

    def f32(*shape):
        return "F32", rng.standard_normal(shape).astype(np.float32)

    t = {"model.embed_tokens.weight": bf16(v, h), "model.norm.weight": f32(h),
         "lm_head.weight": ("F16", rng.standard_normal((v, h)).astype(np.float16))}
    for layer in range(config["num_hidden_layers"]):
        p = f"model.layers.{layer}."
        t.update({
            p + "input_layernorm.weight": f32(h), p + "post_attention_layernorm.weight": f32(h),
            p + "self_attn.q_proj.weight": bf16(h, h), p + "self_attn.q_proj.bias": bf16(h),
            p + "self_attn.k_proj.weight": bf16(kv, h), p + "self_attn.k_proj.bias": bf16(kv),
            p + "self_attn.v_proj.weight": bf16(kv, h), p + "self_attn.v_proj.bias": bf16(kv),
            p + "self_attn.o_proj.weight": bf16(h, h), p + "self_attn.o_proj.bias": bf16(h),
            p + "mlp.gate_proj.weight": bf16(i, h), p + "mlp.up_proj.weight": bf16(i, h),
            p + "mlp.down_proj.weight": bf16(h, i),
        })
    return t


def write_safetensors(path, tensors, metadata=None):
    specs = {}
    for name, (dtype, array) in tensors.items():
        array = np.ascontiguousarray(array)
        specs[name] = TensorSpec(dtype=SPEC_DTYPE[dtype], shape=list(array.shape),
                                 data_ptr=array.ctypes.data, data_len=array.nbytes)
    serialize_file(specs, path, metadata)


def write_model(directory, config, tensors, shards=1):
    """Writes config.json and the weights: model.safetensors, or `shards` files + index."""
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, "config.json"), "w") as f:
        json.dump(config, f)
    names = sorted(tensors)
    if shards == 1:
        write_safetensors(os.path.join(directory, "model.safetensors"), tensors, {"format": "pt"})
        return
    weight_map = {}
    for s in range(shards):
        file_name = f"model-{s + 1:05d}-of-{shards:05d}.safetensors"
        part = {n: tensors[n] for n in names[s::shards]}
        write_safetensors(os.path.join(directory, file_name), part, {"format": "pt"})
        weight_map.update({n: file_name for n in part})
    total = sum(a.nbytes for _, a in tensors.values())
    with open(os.path.join(directory, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f)



def llama_model(directory, seed, shards=2):
    """A default-shaped Llama written to `directory`: (directory, config, tensors)."""
    config = llama_config()
    tensors = llama_tensors(config, seed=seed)
    write_model(directory, config, tensors, shards=shards)
    return directory, config, tensors

def read_safetensors(path):
    """name -> (dtype, array), read by the real safetensors package."""
    with open(path, "rb") as f:
        items = deserialize(f.read())
    return {name: (d["dtype"], np.frombuffer(bytes(d["data"]), dtype=NUMPY_OF[d["dtype"]])
                   .reshape(d["shape"])) for name, d in items}


def _base(name):
    name = name[len("model."):] if name.startswith("model.") else name
    for suffix in (".weight", ".bias"):
        if name.endswith(suffix):
            return name[: -len(suffix)], suffix == ".bias"
    return name, False


def split_rule(name):
    """The documented Llama rule: ('colwise'|'rowwise'|'vocab'|'replicate', is_bias)."""
    base, is_bias = _base(name)
    last = base.split(".")[-1]
    if base in ("embed_tokens", "lm_head"):
        return "vocab", is_bias
    if base.startswith("layers.") and last in ("q_proj", "k_proj", "v_proj", "gate_proj", "up_proj"):
        return "colwise", is_bias
    if base.startswith("layers.") and last in ("o_proj", "down_proj"):
        return "rowwise", is_bias
    return "replicate", is_bias


def expected_slice(name, array, config, tp, rank):
    """Rank `rank` of `tp`'s piece of `array`, by the rules of the design note."""
    style, is_bias = split_rule(name)
    last = _base(name)[0].split(".")[-1]
    if tp == 1 or style == "replicate" or (style == "rowwise" and is_bias):
        return array
    if style == "rowwise":
        width = array.shape[1] // tp
        return array[:, rank * width:(rank + 1) * width]
    kv_heads = config["num_key_value_heads"]
    if last in ("k_proj", "v_proj") and kv_heads < tp:
        head_dim = array.shape[0] // kv_heads
        head = rank // (tp // kv_heads)
        return array[head * head_dim:(head + 1) * head_dim]
    rows = array.shape[0] // tp
    return array[rank * rows:(rank + 1) * rows]
