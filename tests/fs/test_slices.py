"""Tensor-parallel slices through the mount: one rank reading its colwise slice of every
q/k/v/gate/up projection fetches little more than the slices themselves (partial blocks), not
a whole block per slice. Expected slices come from the safetensors header of the source files;
the fetched bytes from the emulator's request log."""
import os
import shutil
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import hubemu  # noqa: E402
from fs_support import bytes_sent, safetensors_header  # noqa: E402
from mount import Mount  # noqa: E402

REPO = "test-org/slice-llama"
# The small preset widened to the benchmark's shapes: slices of 0.5-2.8 MB (1.5 MB on average),
# two layers only, so the file stays ~200 MB and the test quick.
MODEL = dict(preset="small", layers=2, hidden=2048, intermediate=5632, seed=5)
COLWISE = ("q_proj", "k_proj", "v_proj", "gate_proj", "up_proj")
ITEM_SIZE = {"BF16": 2, "F16": 2, "F32": 4}
WORLD, RANK = 8, 3


@pytest.fixture(scope="module")
def hub_and_model(tmp_path_factory):
    model = hubemu.cached_model(**MODEL)
    root = str(tmp_path_factory.mktemp("slice-hub"))
    hubemu.import_repo(root, REPO, model)
    with hubemu.Emulator(root) as hub:
        yield hub, model
    shutil.rmtree(root, ignore_errors=True)


def rank_slices(model):
    """(file name, absolute start, length) of this rank's rows of every colwise weight."""
    slices = []
    for name in sorted(n for n in os.listdir(model) if n.endswith(".safetensors")):
        header_length, header = safetensors_header(os.path.join(model, name))
        for tensor, info in sorted(header.items(), key=lambda kv: str(kv[1])):
            if tensor == "__metadata__" or not any(p in tensor for p in COLWISE):
                continue
            rows = info["shape"][0]
            row_bytes = ITEM_SIZE[info["dtype"]]
            for dim in info["shape"][1:]:
                row_bytes *= dim
            begin = info["data_offsets"][0]
            lo, hi = rows * RANK // WORLD, rows * (RANK + 1) // WORLD
            slices.append((name, 8 + header_length + begin + lo * row_bytes, (hi - lo) * row_bytes))
    return slices


def test_colwise_slices_fetch_little_more_than_themselves(hub_and_model):
    hub, model = hub_and_model
    slices = rank_slices(model)
    assert len(slices) >= 5
    needed = sum(length for _, _, length in slices)
    with Mount(hub.hub_url) as m:
        files = {name: os.open(os.path.join(m.path, REPO, name), os.O_RDONLY)
                 for name in {s[0] for s in slices}}   # headers are read at open
        try:
            hub.clear_log()
            for name, start, length in slices:
                got = os.pread(files[name], length, start)
                with open(os.path.join(model, name), "rb") as source:
                    source.seek(start)
                    assert got == source.read(length), (name, start, length)
            log = hub.log()
        finally:
            for fd in files.values():
                os.close(fd)
    fetched = bytes_sent(log, "cdn")
    ratio = fetched / needed
    print(f"slices={len(slices)} needed={needed} fetched={fetched} ratio={ratio:.3f}")
    assert needed <= fetched <= 1.25 * needed, (fetched, needed, ratio)
