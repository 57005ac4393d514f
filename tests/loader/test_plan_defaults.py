"""Tensor-parallel plan defaults and `--plan` merging, end to end with `hubfs load --save`,
checked against numpy slicing of the source tensors. HF configs carry base_model_tp_plan
without the embedding and LM head; those must still be split by vocabulary on every rank
(not replicated), and a plan file is merged over the model's plan rather than replacing it."""
import json

import numpy as np
import pytest

from loader_models import expected_slice, llama_config, llama_tensors, write_model
from test_loader import hubfs, load_rank

# HF transformers' LlamaConfig.base_model_tp_plan: no embed_tokens, no lm_head.
HF_LLAMA_PLAN = {
    "layers.*.self_attn.q_proj": "colwise", "layers.*.self_attn.k_proj": "colwise",
    "layers.*.self_attn.v_proj": "colwise", "layers.*.self_attn.o_proj": "rowwise",
    "layers.*.mlp.gate_proj": "colwise", "layers.*.mlp.up_proj": "colwise",
    "layers.*.mlp.down_proj": "rowwise"}
VOCAB_TENSORS = ("model.embed_tokens.weight", "lm_head.weight")


@pytest.fixture(scope="module")
def hf_plan_model(tmp_path_factory):
    directory = str(tmp_path_factory.mktemp("hf-plan"))
    config = llama_config(layers=2, vocab=2048, heads=8, kv_heads=2)
    config["base_model_tp_plan"] = HF_LLAMA_PLAN
    tensors = llama_tensors(config, seed=3)
    write_model(directory, config, tensors, shards=2)
    return directory, config, tensors


def vocab_rows(array, tp, rank):
    rows = array.shape[0] // tp
    return array[rank * rows:(rank + 1) * rows]


def same_bytes(a, b):
    return a.shape == b.shape and np.array_equal(np.ascontiguousarray(a).view(np.uint8),
                                                 np.ascontiguousarray(b).view(np.uint8))


@pytest.mark.parametrize("tp", [2, 4, 8])
def test_embedding_and_lm_head_are_split_by_vocabulary_under_a_config_plan(hf_plan_model, tmp_path, tp):
    path, config, tensors = hf_plan_model
    for rank in range(tp):
        saved, _ = load_rank(path, tp, rank, tmp_path)
        for name in VOCAB_TENSORS:
            source = tensors[name][1]
            assert saved[name][1].shape == (config["vocab_size"] // tp, config["hidden_size"]), name
            assert same_bytes(saved[name][1], vocab_rows(source, tp, rank)), (name, tp, rank)
        for name, (_, source) in tensors.items():  # the plan's own entries, norms replicated
            assert same_bytes(saved[name][1], expected_slice(name, source, config, tp, rank)), (name, tp, rank)


def test_other_architectures_embedding_names(tmp_path):
    """GPT-2 (wte), BLOOM/Falcon (word_embeddings) and Meta's format (tok_embeddings) are split
    by vocabulary too; a position embedding (wpe) and a layer norm stay whole."""
    rng = np.random.default_rng(5)
    tensors = {name: ("F32", rng.standard_normal(shape).astype(np.float32)) for name, shape in {
        "transformer.wte.weight": (64, 16), "transformer.wpe.weight": (32, 16),
        "transformer.word_embeddings.weight": (64, 16),
        "transformer.word_embeddings_layernorm.weight": (16,),
        "tok_embeddings.weight": (64, 16), "transformer.ln_f.weight": (16,)}.items()}
    config = {"model_type": "gpt2", "base_model_tp_plan": {"h.*.mlp.c_fc": "colwise"}}
    write_model(str(tmp_path / "m"), config, tensors)
    for rank in range(4):
        saved, _ = load_rank(str(tmp_path / "m"), 4, rank, tmp_path)
        for name, (_, source) in tensors.items():
            split = name.split(".")[-2] in ("wte", "word_embeddings", "tok_embeddings")
            assert same_bytes(saved[name][1], vocab_rows(source, 4, rank) if split else source), name


def test_a_plan_entry_naming_the_embedding_wins(tmp_path):
    config = llama_config(layers=1)
    config["base_model_tp_plan"] = {**HF_LLAMA_PLAN, "embed_tokens": "replicate"}
    tensors = llama_tensors(config, seed=4)
    write_model(str(tmp_path / "m"), config, tensors)
    saved, _ = load_rank(str(tmp_path / "m"), 4, 1, tmp_path)
    assert same_bytes(saved["model.embed_tokens.weight"][1], tensors["model.embed_tokens.weight"][1])
    assert same_bytes(saved["lm_head.weight"][1], vocab_rows(tensors["lm_head.weight"][1], 4, 1))


def test_a_vocabulary_that_does_not_divide_says_how_to_keep_it_whole(tmp_path):
    config = llama_config(layers=1, vocab=2050)
    config["base_model_tp_plan"] = HF_LLAMA_PLAN
    write_model(str(tmp_path / "m"), config, llama_tensors(config, seed=6))
    result = hubfs("load", str(tmp_path / "m"), "--tp", "4", "--rank", "0", check=False)
    assert result.returncode == 1
    assert "dim 0 of size 2050 is not divisible by tp 4 (vocab)" in result.stderr
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps({"model.embed_tokens.weight": "replicate", "lm_head": "replicate"}))
    saved, _ = load_rank(str(tmp_path / "m"), 4, 0, tmp_path, "--plan", str(plan))
    assert saved["model.embed_tokens.weight"][1].shape == (2050, config["hidden_size"])


@pytest.mark.parametrize("tp,rank", [(2, 1), (8, 6)])
def test_plan_file_overriding_one_entry_changes_only_that_split(hf_plan_model, tmp_path, tp, rank):
    path, config, tensors = hf_plan_model
    (tmp_path / "baseline").mkdir()
    baseline, _ = load_rank(path, tp, rank, tmp_path / "baseline")
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps({"model.layers.*.mlp.up_proj.weight": "rowwise"}))
    merged, _ = load_rank(path, tp, rank, tmp_path, "--plan", str(plan))
    assert sorted(merged) == sorted(tensors)
    for name, (_, source) in tensors.items():
        if ".mlp.up_proj." in name:
            width = source.shape[1] // tp
            assert same_bytes(merged[name][1], source[:, rank * width:(rank + 1) * width]), name
            assert not same_bytes(merged[name][1], baseline[name][1]), name
        else:
            assert same_bytes(merged[name][1], baseline[name][1]), name


def test_plan_file_adds_entries_over_the_builtin_rules(tmp_path):
    """Without a config plan, the file is merged over the built-in Llama rules."""
    config = llama_config(layers=1)
    tensors = llama_tensors(config, seed=8)
    write_model(str(tmp_path / "m"), config, tensors)
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps({"norm": "colwise", "lm_head": "replicate"}))
    saved, _ = load_rank(str(tmp_path / "m"), 2, 1, tmp_path, "--plan", str(plan))
    for name, (_, source) in tensors.items():
        if name == "model.norm.weight":
            expected = source[source.shape[0] // 2:]
        elif name == "lm_head.weight":
            expected = source
        else:
            expected = expected_slice(name, source, config, 2, 1)
        assert same_bytes(saved[name][1], expected), name


def test_help_says_the_plan_file_is_merged():
    text = " ".join(hubfs("load", "--help").stdout.split())
    assert "merged over the model's plan" in text
