#!/usr/bin/env python3
"""Writes a deterministic, Llama-shaped test model: safetensors weights (sharded or not),
config.json, generation_config.json and a small tokenizer, ready to import into the Hub emulator.

Same arguments -> same bytes. Every tensor's values follow one public recipe, so a test can
recompute them with numpy without trusting this file (see `tensor_values`):

    rng   = numpy.random.default_rng([seed, zlib.crc32(name.encode())])
    u     = rng.random(n, dtype=numpy.float32)           # n = product of the shape
    value = (u * 2 - 1) * 0.02                           # weights
    value = 1 + (u * 2 - 1) * 0.1                        # *norm.weight (RMSNorm scales)
    bf16  = top 16 bits of the float32 (truncation); f16 = astype(float16); f32 as is

Standard library + numpy only; the safetensors files are written directly (8-byte header
length, JSON header padded with spaces to a multiple of 8, raw little-endian data).

Layouts: the tensors are split into shards in module order (as transformers shards a state
dict), and within a shard the default `sorted` layout stores them as the safetensors package's
save_file does (by dtype, wider first, then by name: layers.10 before layers.9), which is what
checkpoints on the Hub have; `module` keeps module order inside the file too (what writers that
keep insertion order produce), where name order and file order differ.
"""
import argparse
import json
import os
import sys
import zlib

import numpy as np

PRESETS = {
    # name: layers, hidden, intermediate, vocab, heads, kv_heads, default shards
    "tiny": dict(layers=2, hidden=128, intermediate=384, vocab=4096, heads=4, kv_heads=2, shards=1),
    "small": dict(layers=6, hidden=512, intermediate=1408, vocab=8192, heads=8, kv_heads=4, shards=1),
    "medium": dict(layers=14, hidden=1024, intermediate=2816, vocab=16384, heads=16, kv_heads=8, shards=1),
    "large": dict(layers=32, hidden=2048, intermediate=5632, vocab=32000, heads=32, kv_heads=8, shards=4),
}

DTYPES = {  # CLI name -> (safetensors dtype, bytes per element, torch_dtype in config.json)
    "bf16": ("BF16", 2, "bfloat16"),
    "f16": ("F16", 2, "float16"),
    "f32": ("F32", 4, "float32"),
}

WEIGHT_SCALE = np.float32(0.02)
NORM_SPREAD = np.float32(0.1)
CHUNK_ELEMENTS = 1 << 22  # even, so chunked draws equal one big draw of float32s


def tensor_specs(layers, hidden, intermediate, vocab, heads, kv_heads):
    """(name, shape) of every tensor of a LlamaForCausalLM, in module order."""
    head_dim = hidden // heads
    kv_dim = kv_heads * head_dim
    specs = [("model.embed_tokens.weight", (vocab, hidden))]
    for i in range(layers):
        p = f"model.layers.{i}."
        specs += [
            (p + "self_attn.q_proj.weight", (hidden, hidden)),
            (p + "self_attn.k_proj.weight", (kv_dim, hidden)),
            (p + "self_attn.v_proj.weight", (kv_dim, hidden)),
            (p + "self_attn.o_proj.weight", (hidden, hidden)),
            (p + "mlp.gate_proj.weight", (intermediate, hidden)),
            (p + "mlp.up_proj.weight", (intermediate, hidden)),
            (p + "mlp.down_proj.weight", (hidden, intermediate)),
            (p + "input_layernorm.weight", (hidden,)),
            (p + "post_attention_layernorm.weight", (hidden,)),
        ]
    specs += [("model.norm.weight", (hidden,)), ("lm_head.weight", (vocab, hidden))]
    return specs


def _element_count(shape):
    n = 1
    for d in shape:
        n *= d
    return n


def _to_dtype_bytes(values_f32, dtype):
    if dtype == "f32":
        return values_f32.astype("<f4", copy=False).tobytes()
    if dtype == "f16":
        return values_f32.astype("<f2").tobytes()
    # bf16: keep the top half of each float32 (truncation); values are small so stay finite.
    # On a little-endian host that half is every second uint16 (a strided copy, no shift).
    if sys.byteorder == "little":
        return values_f32.view("<u2")[1::2].tobytes()
    return (values_f32.view(np.uint32) >> 16).astype("<u2").tobytes()


def tensor_chunks(name, shape, seed, dtype):
    """Yields the tensor's bytes in chunks (the recipe in the module docstring)."""
    rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
    remaining = _element_count(shape)
    is_norm = name.endswith("norm.weight")
    while remaining > 0:
        n = min(remaining, CHUNK_ELEMENTS)
        u = rng.random(n, dtype=np.float32)
        u *= 2
        u -= 1
        if is_norm:
            u *= NORM_SPREAD
            u += 1
        else:
            u *= WEIGHT_SCALE
        yield _to_dtype_bytes(u, dtype)
        remaining -= n


def tensor_values(name, shape, seed, dtype):
    """The tensor as a numpy array (bf16 returned as its raw uint16 bits)."""
    data = b"".join(tensor_chunks(name, shape, seed, dtype))
    np_dtype = {"bf16": "<u2", "f16": "<f2", "f32": "<f4"}[dtype]
    return np.frombuffer(data, dtype=np_dtype).reshape(shape)


def split_into_shards(specs, bytes_per_element, shards):
    """Consecutive groups of tensors of roughly equal byte size, none empty."""
    shards = max(1, min(shards, len(specs)))
    sizes = [_element_count(s) * bytes_per_element for _, s in specs]
    total = sum(sizes)
    groups, current, done = [], [], 0
    for i, (spec, size) in enumerate(zip(specs, sizes)):
        current.append(spec)
        done += size
        left_specs = len(specs) - i - 1
        groups_needed_after = shards - len(groups) - 1
        boundary = total * (len(groups) + 1) / shards
        if groups_needed_after > 0 and (done >= boundary or left_specs == groups_needed_after):
            groups.append(current)
            current = []
    groups.append(current)
    return groups


LAYOUTS = ("sorted", "module")


def file_order(specs, layout):
    """The order of a shard's tensors in its file. One dtype per model here, so `sorted` (the
    safetensors package's dtype-then-name order) is name order."""
    return sorted(specs) if layout == "sorted" else list(specs)


def write_safetensors(path, specs, seed, dtype, layout="sorted"):
    st_dtype, width, _ = DTYPES[dtype]
    specs = file_order(specs, layout)
    header, offset = {}, 0
    for name, shape in specs:
        size = _element_count(shape) * width
        header[name] = {"dtype": st_dtype, "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    header["__metadata__"] = {"format": "pt"}
    header_bytes = json.dumps(header, separators=(",", ":")).encode()
    header_bytes += b" " * (-len(header_bytes) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(len(header_bytes).to_bytes(8, "little"))
        f.write(header_bytes)
        for name, shape in specs:
            for chunk in tensor_chunks(name, shape, seed, dtype):
                f.write(chunk)
    os.replace(tmp, path)
    return offset


def config_json(dims, dtype):
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": dims["hidden"],
        "intermediate_size": dims["intermediate"],
        "num_hidden_layers": dims["layers"],
        "num_attention_heads": dims["heads"],
        "num_key_value_heads": dims["kv_heads"],
        "head_dim": dims["hidden"] // dims["heads"],
        "vocab_size": dims["vocab"],
        "max_position_embeddings": 2048,
        "hidden_act": "silu",
        "rms_norm_eps": 1e-05,
        "rope_theta": 10000.0,
        "rope_scaling": None,
        "attention_bias": False,
        "mlp_bias": False,
        "tie_word_embeddings": False,
        "initializer_range": 0.02,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "pad_token_id": None,
        "torch_dtype": DTYPES[dtype][2],
        "transformers_version": "4.44.0",
        "use_cache": True,
    }


def tokenizer_json():
    """A tiny but well-formed BPE tokenizer in the `tokenizers` JSON format."""
    specials = ["<unk>", "<s>", "</s>"]
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)] + ["▁"]
    merges = ["▁ t", "h e", "▁t he", "i n", "e r"]
    vocab = {tok: i for i, tok in enumerate(specials + letters)}
    for merge in merges:
        vocab.setdefault(merge.replace(" ", ""), len(vocab))
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [
            {"id": i, "content": t, "single_word": False, "lstrip": False, "rstrip": False,
             "normalized": False, "special": True}
            for i, t in enumerate(specials)
        ],
        "normalizer": {"type": "Sequence", "normalizers": [
            {"type": "Prepend", "prepend": "▁"}, {"type": "Replace", "pattern": {"String": " "}, "content": "▁"}]},
        "pre_tokenizer": None,
        "post_processor": None,
        "decoder": {"type": "Sequence", "decoders": [
            {"type": "Replace", "pattern": {"String": "▁"}, "content": " "}, {"type": "ByteFallback"}]},
        "model": {"type": "BPE", "dropout": None, "unk_token": "<unk>", "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": True, "byte_fallback": False,
                  "ignore_merges": False, "vocab": vocab, "merges": merges},
    }


def tokenizer_config_json():
    return {
        "add_bos_token": True,
        "add_eos_token": False,
        "bos_token": "<s>",
        "eos_token": "</s>",
        "unk_token": "<unk>",
        "pad_token": None,
        "model_max_length": 2048,
        "tokenizer_class": "LlamaTokenizerFast",
        "clean_up_tokenization_spaces": False,
    }


def _write_json(path, obj):
    with open(path, "w") as f:
        json.dump(obj, f, indent=2, ensure_ascii=False)
        f.write("\n")


def make_model(out, preset="tiny", dtype="bf16", shards=None, seed=0, layout="sorted", **overrides):
    """Writes the model into `out`; returns the list of files written (relative names)."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; choose one of {', '.join(DTYPES)}")
    dims = dict(PRESETS[preset])
    dims.update({k: v for k, v in overrides.items() if v is not None})
    shards = dims.pop("shards") if shards is None else shards
    if dims["hidden"] % dims["heads"] or dims["heads"] % dims["kv_heads"]:
        raise ValueError("hidden must be a multiple of heads, and heads a multiple of kv_heads")
    if shards < 1:
        raise ValueError("shards must be at least 1")
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; choose one of {', '.join(LAYOUTS)}")
    os.makedirs(out, exist_ok=True)
    specs = tensor_specs(dims["layers"], dims["hidden"], dims["intermediate"], dims["vocab"],
                         dims["heads"], dims["kv_heads"])
    width = DTYPES[dtype][1]
    groups = split_into_shards(specs, width, shards)
    written = []
    if len(groups) == 1:
        write_safetensors(os.path.join(out, "model.safetensors"), specs, seed, dtype, layout)
        written.append("model.safetensors")
    else:
        weight_map, total = {}, 0
        for k, group in enumerate(groups, start=1):
            name = f"model-{k:05d}-of-{len(groups):05d}.safetensors"
            total += write_safetensors(os.path.join(out, name), group, seed, dtype, layout)
            weight_map.update({tensor: name for tensor, _ in group})
            written.append(name)
        _write_json(os.path.join(out, "model.safetensors.index.json"),
                    {"metadata": {"total_size": total}, "weight_map": weight_map})
        written.append("model.safetensors.index.json")
    _write_json(os.path.join(out, "config.json"), config_json(dims, dtype))
    _write_json(os.path.join(out, "generation_config.json"),
                {"bos_token_id": 1, "eos_token_id": 2, "max_length": 2048, "transformers_version": "4.44.0"})
    _write_json(os.path.join(out, "tokenizer.json"), tokenizer_json())
    _write_json(os.path.join(out, "tokenizer_config.json"), tokenizer_config_json())
    written += ["config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json"]
    return written


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="directory to write (created if missing)")
    parser.add_argument("--preset", default="tiny", choices=sorted(PRESETS))
    parser.add_argument("--dtype", default="bf16", choices=sorted(DTYPES))
    parser.add_argument("--shards", type=int, default=None, help="number of safetensors files")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--layout", default="sorted", choices=LAYOUTS,
                        help="tensor order inside each file (see the module docstring)")
    for dim in ("layers", "hidden", "intermediate", "vocab", "heads", "kv-heads"):
        parser.add_argument("--" + dim, type=int, default=None, help="override the preset's " + dim)
    args = parser.parse_args(argv)
    try:
        files = make_model(args.out, preset=args.preset, dtype=args.dtype, shards=args.shards,
                           seed=args.seed, layout=args.layout, layers=args.layers, hidden=args.hidden,
                           intermediate=args.intermediate, vocab=args.vocab, heads=args.heads,
                           kv_heads=args.kv_heads)
    except (ValueError, OSError) as e:
        print(f"make_model: {e}", file=sys.stderr)
        return 2
    for name in files:
        print(name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
