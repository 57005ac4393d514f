"""A real transformers Llama (random init, bf16, saved sharded by save_pretrained) served by the
Hub emulator and mounted with hubfs: hubfs.load_rank's state dict gives the logits of
from_pretrained on the local copy, bit for bit; at tp 2, 4 and 8 every rank equals torch
slicing of the full state dict and the ranks together rebuild it; iter_tensors gives what
load_rank gives, through the mount and from hf:// alike."""
import os
import sys

import pytest
import torch
import transformers

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "support"))
import hubemu  # noqa: E402
from mount import Mount  # noqa: E402

import hubfs  # noqa: E402

REPO = "test-org/hf-llama"
TOKEN = "hf_test_token"
CONFIG = dict(vocab_size=512, hidden_size=128, intermediate_size=256, num_hidden_layers=2,
              num_attention_heads=8, num_key_value_heads=4, max_position_embeddings=64)


@pytest.fixture(scope="module")
def local_copy(tmp_path_factory):
    model = fresh_model(0)
    directory = str(tmp_path_factory.mktemp("hf-llama"))
    model.save_pretrained(directory, max_shard_size="200KB")
    assert os.path.exists(os.path.join(directory, "model.safetensors.index.json"))
    return directory


@pytest.fixture(scope="module")
def hub(local_copy, tmp_path_factory):
    root = str(tmp_path_factory.mktemp("hub"))
    hubemu.import_repo(root, REPO, local_copy)
    with hubemu.Emulator(root, tokens=[TOKEN]) as emulator:
        yield emulator


@pytest.fixture(scope="module")
def mounted(hub):
    with Mount(hub.hub_url, env={"HF_TOKEN": TOKEN}) as m:
        yield os.path.join(m.path, REPO)


@pytest.fixture(scope="module")
def full_state(local_copy):
    """The reference: from_pretrained on the local copy (transformers and safetensors)."""
    model = transformers.LlamaForCausalLM.from_pretrained(local_copy, dtype=torch.bfloat16)
    return {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}


def fresh_model(seed):
    """Random weights, built as from_pretrained builds it (dtype at construction: buffers such
    as the rotary frequencies keep their own dtype)."""
    torch.manual_seed(seed)
    return transformers.AutoModelForCausalLM.from_config(transformers.LlamaConfig(**CONFIG), dtype=torch.bfloat16)


def logits(model):
    tokens = torch.tensor([[1, 17, 200, 45, 3, 99, 511, 0]])
    with torch.no_grad():
        return model.eval()(tokens).logits


def test_load_state_dict_from_the_mount_gives_the_logits_of_from_pretrained(local_copy, mounted):
    reference = transformers.LlamaForCausalLM.from_pretrained(local_copy, dtype=torch.bfloat16)
    model = fresh_model(1)  # other random weights, all replaced by the load
    assert not torch.equal(logits(model), logits(reference))
    model.load_state_dict(hubfs.load_rank(mounted, tp=1, rank=0))
    assert torch.equal(logits(model), logits(reference))
    # The README's: the config from the mount, and assign=True: the model's parameters are the
    # loaded tensors themselves, no copy
    config = transformers.AutoConfig.from_pretrained(mounted)
    zero_copy = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    state = hubfs.load_rank(mounted)
    zero_copy.load_state_dict(state, assign=True)
    assert zero_copy.lm_head.weight.data_ptr() == state["lm_head.weight"].data_ptr()
    assert torch.equal(logits(zero_copy), logits(reference))


def torch_slice(name, full, tp, rank):
    """Rank `rank` of `tp`'s piece by the Llama rules, with torch's own splitting: q, k, v,
    gate, up by output rows (k and v by whole kv heads, shared when there are fewer kv heads
    than ranks), o and down by input columns, embeddings and the LM head by vocabulary rows,
    the rest whole."""
    last = name.rsplit(".", 2)[-2]
    kv_heads = CONFIG["num_key_value_heads"]
    if last in ("k_proj", "v_proj") and kv_heads < tp:
        return torch.chunk(full, kv_heads, dim=0)[rank // (tp // kv_heads)]
    if last in ("q_proj", "k_proj", "v_proj", "gate_proj", "up_proj", "embed_tokens", "lm_head"):
        return torch.chunk(full, tp, dim=0)[rank]
    if last in ("o_proj", "down_proj"):
        return torch.chunk(full, tp, dim=1)[rank]
    return full


def rebuild(name, pieces, tp):
    last = name.rsplit(".", 2)[-2]
    kv_heads = CONFIG["num_key_value_heads"]
    if last in ("k_proj", "v_proj") and kv_heads < tp:
        return torch.cat(pieces[::tp // kv_heads], dim=0)
    if last in ("o_proj", "down_proj"):
        return torch.cat(pieces, dim=1)
    if last in ("q_proj", "k_proj", "v_proj", "gate_proj", "up_proj", "embed_tokens", "lm_head"):
        return torch.cat(pieces, dim=0)
    assert all(torch.equal(piece, pieces[0]) for piece in pieces), name  # replicated
    return pieces[0]


def bits(tensor):
    return tensor.contiguous().view(torch.int16)  # bf16's bits: NaN-safe, exact


@pytest.mark.parametrize("tp", [2, 4, 8])
def test_every_rank_is_torch_slicing_and_the_ranks_rebuild_the_state_dict(mounted, full_state, tp):
    ranks = [hubfs.load_rank(mounted, tp=tp, rank=rank) for rank in range(tp)]
    for name, full in full_state.items():
        for rank in range(tp):
            expected = torch_slice(name, full, tp, rank)
            assert ranks[rank][name].shape == expected.shape, (name, rank)
            assert torch.equal(bits(ranks[rank][name]), bits(expected)), (name, rank)
        assert torch.equal(bits(rebuild(name, [r[name] for r in ranks], tp)), bits(full)), name
    assert all(sorted(r) == sorted(full_state) for r in ranks)


@pytest.mark.parametrize("tp,rank", [(1, 0), (8, 5)])
def test_iter_tensors_equals_load_rank(mounted, hub, tmp_path, monkeypatch, tp, rank):
    loaded = hubfs.load_rank(mounted, tp=tp, rank=rank)
    for name, value in hub.client_env(tmp_path / "hf-home", token=TOKEN, base={}).items():
        monkeypatch.setenv(name, value)
    for path in (mounted, f"hf://{REPO}"):
        streamed = list(hubfs.iter_tensors(path, tp=tp, rank=rank))
        assert sorted(name for name, _ in streamed) == sorted(loaded)
        for name, tensor in streamed:
            assert tensor.dtype == loaded[name].dtype and torch.equal(bits(tensor), bits(loaded[name])), (path, name)
