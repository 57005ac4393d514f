"""`hubfs load` and `hubfs inspect` end to end on models written by the real safetensors
package. Every saved slice is compared with numpy slicing of the source tensor by the rules
of the design note (loader_models.expected_slice), and the ranks together must rebuild every
tensor exactly."""
import json
import os
import pty
import shutil
import struct
import subprocess
import sys

import numpy as np
import pytest

from loader_models import (ITEMSIZE, expected_slice, llama_config, llama_tensors, read_safetensors,
                           split_rule, write_model, write_safetensors)

HUBFS = os.environ["HUBFS_BIN"]


def hubfs(*args, env=None, check=True):
    full_env = {k: v for k, v in os.environ.items()
                if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK") and not k.startswith(("OMPI_", "SLURM_"))}
    full_env.update(env or {})
    result = subprocess.run([HUBFS, *args], capture_output=True, text=True, timeout=120, env=full_env)
    if check:
        assert result.returncode == 0, result.stderr
    return result


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """A sharded Llama with GQA (8 heads, 2 kv heads), biases, BF16/F16/F32 tensors."""
    directory = str(tmp_path_factory.mktemp("llama"))
    config = llama_config()
    tensors = llama_tensors(config)
    write_model(directory, config, tensors, shards=3)
    return directory, config, tensors


def load_rank(path, tp, rank, out_dir, *extra, env=None):
    out = os.path.join(str(out_dir), f"rank-{tp}-{rank}.safetensors")
    result = hubfs("load", path, "--tp", str(tp), "--rank", str(rank), "--save", out, *extra, env=env)
    return read_safetensors(out), result


def check_rank(saved, tensors, config, tp, rank):
    assert sorted(saved) == sorted(tensors)
    for name, (dtype, source) in tensors.items():
        saved_dtype, array = saved[name]
        assert saved_dtype == dtype, name
        expected = expected_slice(name, source, config, tp, rank)
        assert array.shape == expected.shape, (name, tp, rank)
        assert np.array_equal(array.view(np.uint8), np.ascontiguousarray(expected).view(np.uint8)), (name, tp, rank)


def check_rebuild(ranks, tensors, config, tp):
    """Concatenating the ranks' pieces along the split dimension gives back each tensor."""
    kv_heads = config["num_key_value_heads"]
    for name, (_, source) in tensors.items():
        style, is_bias = split_rule(name)
        pieces = [ranks[r][name][1] for r in range(tp)]
        last = name.split(".")[-2]
        if tp == 1 or style == "replicate" or (style == "rowwise" and is_bias):
            for piece in pieces:
                assert np.array_equal(piece, source), name
            continue
        if last in ("k_proj", "v_proj") and kv_heads < tp:
            group = tp // kv_heads  # ranks sharing a kv head hold identical copies
            for r in range(tp):
                assert np.array_equal(pieces[r], pieces[r - r % group]), name
            pieces = pieces[::group]
        axis = 1 if style == "rowwise" else 0
        rebuilt = np.concatenate(pieces, axis=axis)
        assert np.array_equal(rebuilt.view(np.uint8), source.view(np.uint8)), name


@pytest.mark.parametrize("tp", [1, 2, 4, 8])
def test_every_rank_is_the_documented_slice_and_ranks_rebuild(model, tmp_path, tp):
    path, config, tensors = model
    ranks = []
    for rank in range(tp):
        saved, result = load_rank(path, tp, rank, tmp_path)
        check_rank(saved, tensors, config, tp, rank)
        ranks.append(saved)
        assert f"loaded rank {rank} of {tp} to cpu: {len(tensors)} tensors" in result.stdout
        payload = sum(a.nbytes for _, a in saved.values())
        assert f" {payload} bytes" in result.stdout
        assert "GB/s" in result.stdout
        read_mb = float(result.stdout.split("; read ")[1].split(" MB")[0])
        # Rowwise slices read whole rows; everything else reads exactly the slice.
        assert read_mb == round(payload / 1e6, 1) if tp == 1 else read_mb > payload / 1e6
        assert result.stderr == ""  # no progress bar when stderr is not a terminal
    check_rebuild(ranks, tensors, config, tp)


@pytest.mark.parametrize("chunk", ["300", "4096"])
def test_small_chunks_and_few_threads_give_the_same_slices(model, tmp_path, chunk):
    """Tiny chunks force many jobs, rows split over several reads (300 bytes < a 512-byte
    down_proj row) and gathers of many rows per read (4096)."""
    path, config, tensors = model
    for rank in range(4):
        saved, _ = load_rank(path, 4, rank, tmp_path, "--chunk-bytes", chunk, "--threads", "3")
        check_rank(saved, tensors, config, 4, rank)


def test_single_file_and_unsharded_directory(tmp_path):
    config = llama_config(layers=1, vocab=512)
    tensors = llama_tensors(config, seed=1)
    directory = str(tmp_path / "single")
    write_model(directory, config, tensors, shards=1)
    for path in (directory, os.path.join(directory, "model.safetensors")):
        saved, _ = load_rank(path, 8, 5, tmp_path)
        check_rank(saved, tensors, config, 8, 5)


@pytest.mark.parametrize("env", [
    {"WORLD_SIZE": "4", "RANK": "3", "LOCAL_RANK": "3"},
    {"OMPI_COMM_WORLD_SIZE": "4", "OMPI_COMM_WORLD_RANK": "3"},
    {"SLURM_NTASKS": "4", "SLURM_PROCID": "3", "SLURM_LOCALID": "1"},
])
def test_rank_and_world_size_come_from_the_launcher(model, tmp_path, env):
    path, config, tensors = model
    out = str(tmp_path / "env.safetensors")
    result = hubfs("load", path, "--save", out, env=env)
    assert "loaded rank 3 of 4" in result.stdout
    check_rank(read_safetensors(out), tensors, config, 4, 3)
    # Flags win over the environment.
    result = hubfs("load", path, "--tp", "2", "--rank", "0", env=env)
    assert "loaded rank 0 of 2" in result.stdout


def test_bad_rank_values_are_refused(model):
    path = model[0]
    result = hubfs("load", path, "--tp", "4", "--rank", "4", check=False)
    assert result.returncode == 1 and "rank 4 is not in [0, 4)" in result.stderr
    result = hubfs("load", path, env={"RANK": "x"}, check=False)
    assert result.returncode == 2 and "('x') is not a number" in result.stderr
    result = hubfs("load", path, "--tp", "0", check=False)
    assert result.returncode == 2


def test_a_dimension_that_does_not_divide_is_an_error_naming_the_tensor(tmp_path):
    config = llama_config(layers=1, vocab=100, heads=8, kv_heads=8)
    write_model(str(tmp_path / "m"), config, llama_tensors(config))
    result = hubfs("load", str(tmp_path / "m"), "--tp", "8", "--rank", "1", check=False)
    assert result.returncode == 1
    assert "model.embed_tokens.weight" in result.stderr
    assert "dim 0 of size 100 is not divisible by tp 8" in result.stderr


def test_kv_heads_that_cannot_be_replicated_are_an_error(tmp_path):
    config = llama_config(layers=1, heads=8, kv_heads=4)
    write_model(str(tmp_path / "m"), config, llama_tensors(config))
    result = hubfs("load", str(tmp_path / "m"), "--tp", "8", "--rank", "0", check=False)
    assert result.returncode == 0, result.stderr  # 8 % 4 == 0: replication works
    config = llama_config(layers=1, heads=6, kv_heads=3, hidden=96)
    write_model(str(tmp_path / "n"), config, llama_tensors(config))
    result = hubfs("load", str(tmp_path / "n"), "--tp", "2", "--rank", "0", check=False)
    assert result.returncode == 1
    assert "self_attn.k_proj" in result.stderr and "3 kv heads are not divisible by tp 2" in result.stderr


def test_plan_file_is_merged_over_the_rules(model, tmp_path):
    path, config, tensors = model
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps({"layers.*.mlp.up_proj": "rowwise", "model.norm.weight": "colwise"}))
    saved, _ = load_rank(path, 2, 1, tmp_path, "--plan", str(plan))
    for name, (_, source) in tensors.items():
        if ".mlp.up_proj." in name:
            expected = source[:, source.shape[1] // 2:]
        elif name == "model.norm.weight":
            expected = source[source.shape[0] // 2:]
        else:  # the built-in rules still apply to the rest
            expected = expected_slice(name, source, config, 2, 1)
        assert np.array_equal(saved[name][1], expected), name
    plan.write_text(json.dumps({"layers.*.mlp.gate_up_proj": "packed_colwise"}))
    result = hubfs("load", path, "--tp", "2", "--rank", "0", "--plan", str(plan), check=False)
    assert result.returncode == 1
    assert "'packed_colwise' is not supported" in result.stderr and str(plan) in result.stderr


def test_config_base_model_tp_plan_is_used(tmp_path):
    """HF's Llama plan does not name the embedding and LM head: they are split by vocabulary
    all the same (test_plan_defaults.py checks that in depth)."""
    config = llama_config(layers=1)
    config["base_model_tp_plan"] = {
        "layers.*.self_attn.q_proj": "colwise", "layers.*.self_attn.k_proj": "colwise",
        "layers.*.self_attn.v_proj": "colwise", "layers.*.self_attn.o_proj": "rowwise",
        "layers.*.mlp.gate_proj": "colwise", "layers.*.mlp.up_proj": "colwise",
        "layers.*.mlp.down_proj": "rowwise"}
    tensors = llama_tensors(config)
    write_model(str(tmp_path / "m"), config, tensors)
    saved, _ = load_rank(str(tmp_path / "m"), 2, 1, tmp_path)
    for name, (_, source) in tensors.items():
        assert np.array_equal(saved[name][1], expected_slice(name, source, config, 2, 1)), name


def test_progress_bar_only_on_a_terminal(model):
    master, slave = pty.openpty()
    try:
        result = subprocess.run([HUBFS, "load", model[0], "--tp", "2", "--rank", "0"],
                                stdout=subprocess.PIPE, stderr=slave, timeout=60)
        os.close(slave)
        slave = None
        output = b""
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:
                break
            if not chunk:
                break
            output += chunk
    finally:
        if slave is not None:
            os.close(slave)
        os.close(master)
    assert result.returncode == 0
    assert b"100.0%" in output and b"[####" in output


def test_cuda_device(model):
    """Without a GPU (or without CUDA at build time) a clear message; with one, the device
    copy must equal a host load byte for byte."""
    result = hubfs("load", model[0], "--tp", "2", "--rank", "1", "--device", "cuda:0",
                   "--verify-against-host", check=False)
    if os.path.exists("/dev/nvidia0") and "built without CUDA" not in result.stderr:
        assert result.returncode == 0, result.stderr
        assert "byte-identical to a host load" in result.stdout
    else:
        assert result.returncode == 1
        assert ("no CUDA device available" in result.stderr or "built without CUDA" in result.stderr)
        assert "--device cpu" in result.stderr
    # `--device cuda` means the launcher's local rank.
    result = hubfs("load", model[0], "--device", "cuda", env={"LOCAL_RANK": "3"}, check=False)
    assert "cuda:3" in result.stderr or "loaded rank 0 of 1 to cuda:3" in result.stdout
    result = hubfs("load", model[0], "--device", "cuda", env={"SLURM_LOCALID": "2"}, check=False)
    assert "cuda:2" in result.stderr or "to cuda:2" in result.stdout
    result = hubfs("load", model[0], "--device", "tpu:0", check=False)
    assert result.returncode == 1 and "unknown device 'tpu:0'" in result.stderr


def test_help():
    for command in ("inspect", "load"):
        result = hubfs(command, "--help")
        assert result.stdout.startswith(f"usage: hubfs {command} PATH")
    assert "--tp N" in hubfs("load", "--help").stdout
    assert hubfs("inspect", check=False).returncode == 2


# ---- inspect ----

def raw_header(path):
    """The JSON header, read here with struct + json (independent of hubfs)."""
    with open(path, "rb") as f:
        (length,) = struct.unpack("<Q", f.read(8))
        return length, json.loads(f.read(length))


def test_inspect_json_matches_the_files(model):
    path, _, tensors = model
    report = json.loads(hubfs("inspect", path, "--json").stdout)
    with open(os.path.join(path, "model.safetensors.index.json")) as f:
        weight_map = json.load(f)["weight_map"]
    listed = {t["name"]: t for t in report["tensors"]}
    assert sorted(listed) == sorted(tensors)
    shards = {}
    for name, entry in listed.items():
        shard = weight_map[name]
        if shard not in shards:
            shards[shard] = (raw_header(os.path.join(path, shard)),
                             read_safetensors(os.path.join(path, shard)))
        (length, header), real = shards[shard]
        assert entry["shard"] == shard
        assert entry["dtype"] == header[name]["dtype"] == real[name][0]
        assert entry["shape"] == header[name]["shape"] == list(real[name][1].shape)
        assert entry["data_offsets"] == header[name]["data_offsets"]
        assert entry["offset"] == 8 + length + header[name]["data_offsets"][0]
        assert entry["bytes"] == real[name][1].nbytes
    parameters = sum(a.size for _, a in tensors.values())
    assert report["parameters"] == parameters
    assert report["bytes"] == sum(a.nbytes for _, a in tensors.values())
    for dtype in ("BF16", "F16", "F32"):
        arrays = [a for d, a in tensors.values() if d == dtype]
        assert report["dtypes"][dtype] == {"tensors": len(arrays), "parameters": sum(a.size for a in arrays),
                                           "bytes": sum(a.size for a in arrays) * ITEMSIZE[dtype]}


def test_inspect_text_lists_every_tensor(model):
    path, _, tensors = model
    out = hubfs("inspect", path).stdout
    for name, (dtype, array) in tensors.items():
        line = next(l for l in out.splitlines() if l.startswith(name + " "))
        assert dtype in line.split() and str(array.nbytes) in line.split()
        assert "[" + ", ".join(map(str, array.shape)) + "]" in line
    assert f"parameters: {sum(a.size for _, a in tensors.values())} " in out


def test_inspect_reads_headers_only(model, tmp_path):
    """On a lazy mount any read of the data would fetch weights: inspect may read the
    8-byte length and the header of each shard, nothing else, never map them and never
    hint read-ahead. (Shard headers are read by several threads: one trace file each, so
    that no call is split across lines.)"""
    path = model[0]
    out = tmp_path / "trace"
    trace = subprocess.run(["strace", "-ff", "-o", str(out), "-y", "-qq",
                            "-e", "trace=read,pread64,mmap,fadvise64,readahead,madvise",
                            HUBFS, "inspect", path, "--json"], capture_output=True, text=True, timeout=120,
                           # LeakSanitizer cannot run under ptrace; the other tests check leaks.
                           env={**os.environ, "ASAN_OPTIONS": "detect_leaks=0"})
    assert trace.returncode == 0, trace.stderr
    lines = [l for f in tmp_path.glob("trace.*") for l in f.read_text().splitlines()]
    shard_files = [f for f in os.listdir(path) if f.endswith(".safetensors")]
    for shard in shard_files:
        length, _ = raw_header(os.path.join(path, shard))
        calls = [l for l in lines if shard + ">" in l]
        requested = []
        for call in calls:
            syscall = call.split("(")[0].strip().split()[-1]
            if syscall == "fadvise64":  # turning read-ahead off is the one hint allowed
                assert "POSIX_FADV_RANDOM" in call, call
                continue
            assert syscall == "pread64", call
            count, offset = call.rsplit(")", 1)[0].rsplit(",", 2)[-2:]
            requested.append((int(offset), int(count)))
        assert sorted(requested) == [(0, 8), (8, length)]


def test_model_from_the_project_generator(tmp_path):
    """scripts/make_model.py writes safetensors by hand (not with the safetensors package):
    its tiny preset (4 heads, 2 kv heads, 3 shards, BF16) must load the same way."""
    source = os.environ.get("HUBFS_SOURCE_DIR", os.path.join(os.path.dirname(__file__), "..", ".."))
    directory = str(tmp_path / "tiny")
    subprocess.run([sys.executable, os.path.join(source, "scripts", "make_model.py"), "--out", directory,
                    "--preset", "tiny", "--shards", "3", "--dtype", "bf16"], check=True, timeout=120)
    with open(os.path.join(directory, "config.json")) as f:
        config = json.load(f)
    tensors = {}
    for name in os.listdir(directory):
        if name.endswith(".safetensors"):
            tensors.update(read_safetensors(os.path.join(directory, name)))
    for tp in (2, 4):
        ranks = []
        for rank in range(tp):
            saved, _ = load_rank(directory, tp, rank, tmp_path)
            check_rank(saved, tensors, config, tp, rank)
            ranks.append(saved)
        check_rebuild(ranks, tensors, config, tp)
    result = hubfs("load", directory, "--tp", "8", "--rank", "0", check=False)
    assert result.returncode == 1 and "4 heads are not divisible by tp 8" in result.stderr


def test_memory_follows_the_slice_not_the_tensor(tmp_path):
    """Two 128 MiB tensors (one colwise, one rowwise) at TP 8 with 2 readers: the rank holds
    32 MiB and staging is (2 + 2) x 8 MiB, so peak memory stays well under one tensor,
    the bound peers miss by buffering whole tensors or files."""
    rng = np.random.default_rng(7)
    config = llama_config(layers=1, hidden=4096, intermediate=8192, heads=32, kv_heads=8)
    tensors = {"model.layers.0.mlp.gate_proj.weight": ("F32", rng.standard_normal((8192, 4096), dtype=np.float32)),
               "model.layers.0.mlp.down_proj.weight": ("F32", rng.standard_normal((4096, 8192), dtype=np.float32))}
    directory = str(tmp_path / "big")
    write_model(directory, config, tensors)
    try:
        tensor_bytes = tensors["model.layers.0.mlp.gate_proj.weight"][1].nbytes
        out = str(tmp_path / "rank.safetensors")
        probe = ("import resource, subprocess, sys\n"
                 "subprocess.run(sys.argv[1:], check=True, capture_output=True)\n"
                 "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024)\n")
        peak = int(subprocess.run([sys.executable, "-c", probe, HUBFS, "load", directory, "--tp", "8", "--rank", "5",
                                   "--threads", "2", "--save", out],
                                  capture_output=True, text=True, check=True, timeout=120).stdout)
        assert peak < tensor_bytes * 0.75, peak
        saved = read_safetensors(out)
        for name, (_, source) in tensors.items():
            assert np.array_equal(saved[name][1], expected_slice(name, source, config, 8, 5)), name
    finally:  # 256 MiB: not left for pytest's kept temporary directories
        shutil.rmtree(directory)
        if os.path.exists(str(tmp_path / "rank.safetensors")):
            os.unlink(str(tmp_path / "rank.safetensors"))
