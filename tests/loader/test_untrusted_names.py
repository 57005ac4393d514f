"""Output paths and names that an attacker controls: `hubfs load --save` next to planted
symlinks, and `hubfs inspect` of tensor and shard names carrying terminal control sequences.
The references are the real safetensors package (which writes the crafted names), Python's
json and plain byte checks of what reaches the terminal."""
import json
import os
import re
import resource
import signal
import subprocess

import numpy as np
import pytest

from loader_models import expected_slice, llama_config, llama_tensors, read_safetensors, write_model, write_safetensors
from test_loader import HUBFS, hubfs
from files import sha256_of  # noqa: E402

VICTIM_TEXT = b"precious data that must survive\n"


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    directory = str(tmp_path_factory.mktemp("llama"))
    config = llama_config(layers=1, vocab=256)
    tensors = llama_tensors(config, seed=11)
    write_model(directory, config, tensors)
    return directory, config, tensors


def victim_file(tmp_path):
    victim = tmp_path / "victim"
    victim.write_bytes(VICTIM_TEXT)
    return str(victim), sha256_of(str(victim))


def check_saved_rank(out, config, tensors, tp, rank):
    assert os.path.isfile(out) and not os.path.islink(out)
    saved = read_safetensors(out)
    for name, (_, source) in tensors.items():
        assert np.array_equal(saved[name][1], expected_slice(name, source, config, tp, rank)), name


# ---- --save ----

def test_a_symlink_planted_at_the_old_temporary_name_is_not_followed(model, tmp_path):
    """hubfs used to write OUT.tmp.<pid> with O_TRUNC, following a symlink there. `exec`
    keeps the shell's pid, so the link sits exactly at the name the old code opened."""
    path, config, tensors = model
    victim, digest = victim_file(tmp_path)
    out = str(tmp_path / "rank.safetensors")
    script = 'ln -s "$1" "$2.tmp.$$" && exec "$0" load "$3" --tp 2 --rank 1 --save "$2"'
    result = subprocess.run(["sh", "-c", script, HUBFS, victim, out, path], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert sha256_of(victim) == digest
    check_saved_rank(out, config, tensors, 2, 1)
    planted = [n for n in os.listdir(tmp_path) if n.startswith("rank.safetensors.tmp.")]
    assert len(planted) == 1 and os.readlink(str(tmp_path / planted[0])) == victim  # left alone


def test_the_temporary_file_is_created_exclusively_under_an_unpredictable_name(model, tmp_path):
    path = model[0]
    out = str(tmp_path / "rank.safetensors")
    names = []
    for _ in range(2):
        trace = subprocess.run(["strace", "-f", "-qq", "-e", "trace=openat,rename", HUBFS, "load", path,
                                "--tp", "2", "--rank", "0", "--save", out], capture_output=True, text=True,
                               timeout=120, env={**os.environ, "ASAN_OPTIONS": "detect_leaks=0"})
        assert trace.returncode == 0, trace.stderr
        opens = [line for line in trace.stderr.splitlines() if "openat(" in line and ".tmp." in line]
        assert len(opens) == 1, trace.stderr
        assert all(flag in opens[0] for flag in ("O_CREAT", "O_EXCL", "O_NOFOLLOW", "O_CLOEXEC"))
        assert "O_TRUNC" not in opens[0]
        name = re.search(r'"([^"]*\.tmp\.[^"]*)"', opens[0]).group(1)
        assert re.fullmatch(re.escape(out) + r"\.tmp\.\d+\.[0-9a-f]{16}", name), name
        names.append(name.rsplit(".", 1)[1])
    assert names[0] != names[1]
    assert sorted(os.listdir(tmp_path)) == ["rank.safetensors"]


def test_a_symlink_at_the_output_is_replaced_not_followed(model, tmp_path):
    path, config, tensors = model
    victim, digest = victim_file(tmp_path)
    out = str(tmp_path / "rank.safetensors")
    os.symlink(victim, out)
    hubfs("load", path, "--tp", "2", "--rank", "0", "--save", out)
    assert sha256_of(victim) == digest
    check_saved_rank(out, config, tensors, 2, 0)


def _small_file_limit():
    resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes fail with EFBIG instead of killing


def test_a_failed_save_leaves_no_file_behind(model, tmp_path):
    path = model[0]
    out = str(tmp_path / "rank.safetensors")
    result = subprocess.run([HUBFS, "load", path, "--tp", "1", "--rank", "0", "--save", out],
                            capture_output=True, text=True,
                            timeout=120, preexec_fn=_small_file_limit)
    assert result.returncode == 1
    assert f"cannot save {out}: write failed: File too large" in result.stderr
    assert os.listdir(tmp_path) == []
    result = hubfs("load", path, "--save", str(tmp_path / "missing" / "rank.safetensors"), check=False)
    assert result.returncode == 1 and "No such file or directory" in result.stderr


# ---- inspect ----

HOSTILE = {
    "clear\x1b[2J\x1b]0;pwned\x07.weight": (4,),
    "cr\rbell\x07tab\tnl\nback\\slash.weight": (2, 3),
    "del\x7fc1\u009b31m\u0085.weight": (3,),
    "unicode-名前-é.weight": (2,),
}


@pytest.fixture(scope="module")
def hostile_model(tmp_path_factory):
    directory = tmp_path_factory.mktemp("hostile")
    tensors = {name: ("F32", np.arange(np.prod(shape), dtype=np.float32).reshape(shape))
               for name, shape in HOSTILE.items()}
    path = str(directory / "model.safetensors")
    write_safetensors(path, tensors, {"format": "pt", "note\x1b[31m": "value\x1b[2J\r\x07"})
    return path


def control_bytes(data):
    return sorted({b for b in data if (b < 0x20 and b != 0x0A) or b == 0x7F})


def test_inspect_text_escapes_control_characters(hostile_model):
    result = subprocess.run([HUBFS, "inspect", hostile_model], capture_output=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert control_bytes(result.stdout) == []
    assert not re.search(rb"\xc2[\x80-\x9f]", result.stdout)  # C1 controls (CSI is U+009B)
    lines = result.stdout.split(b"\n")
    for shown in (r"clear\x1b[2J\x1b]0;pwned\x07.weight", r"cr\x0dbell\x07tab\x09nl\x0aback\\slash.weight",
                  r"del\x7fc1\u009b31m\u0085.weight", "unicode-名前-é.weight"):
        assert any(line.startswith(shown.encode() + b" ") for line in lines), shown
    rows = [line for line in lines if b".weight " in line]
    assert len(rows) == len(HOSTILE)
    assert len({line.index(b" F32 ") for line in rows}) == 1  # columns still line up (in bytes)


def test_inspect_json_round_trips_the_exact_names(hostile_model):
    result = subprocess.run([HUBFS, "inspect", hostile_model, "--json"], capture_output=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert not [b for b in result.stdout if b < 0x20 and b not in b"\n\t"]  # cJSON escapes them
    report = json.loads(result.stdout.decode("utf-8"))
    assert sorted(t["name"] for t in report["tensors"]) == sorted(HOSTILE)


def test_shard_names_that_are_not_utf8_stay_valid_json(tmp_path):
    """The index may name a shard with bytes that are not UTF-8 (any byte but '/' is a valid
    file name): the text output escapes them, the JSON output replaces them with U+FFFD."""
    directory = tmp_path / "m"
    directory.mkdir()
    shard = b"shard-\xff\x1b.safetensors"
    write_safetensors(os.path.join(os.fsencode(str(directory)), shard).decode("utf-8", "surrogateescape"),
                      {"w": ("F32", np.zeros(4, dtype=np.float32))})
    with open(directory / "model.safetensors.index.json", "wb") as f:
        f.write(b'{"weight_map": {"w": "' + shard + b'"}}')
    text = subprocess.run([HUBFS, "inspect", str(directory)], capture_output=True, timeout=60)
    assert text.returncode == 0, text.stderr
    assert control_bytes(text.stdout) == [] and b"\xff" not in text.stdout
    assert rb"shard-\xff\x1b.safetensors" in text.stdout
    raw = subprocess.run([HUBFS, "inspect", str(directory), "--json"], capture_output=True, timeout=60)
    assert raw.returncode == 0, raw.stderr
    report = json.loads(raw.stdout.decode("utf-8"))  # strict: fails on invalid UTF-8
    assert report["tensors"][0]["shard"] == "shard-\ufffd\x1b.safetensors"


def test_errors_quoting_names_are_escaped(tmp_path):
    directory = tmp_path / "m"
    directory.mkdir()
    write_safetensors(str(directory / "a.safetensors"), {"w": ("F32", np.zeros(4, dtype=np.float32))})
    with open(directory / "model.safetensors.index.json", "w") as f:
        json.dump({"weight_map": {"w": "a.safetensors", "evil\x1b[2J\r": "a.safetensors"}}, f)
    for command in (["inspect"], ["load", "--tp", "1"]):
        result = subprocess.run([HUBFS, command[0], str(directory), *command[1:]], capture_output=True,
                                timeout=60)
        assert result.returncode == 1
        assert rb"puts 'evil\x1b[2J\x0d' in a.safetensors" in result.stderr, result.stderr
        assert control_bytes(result.stderr) == []
