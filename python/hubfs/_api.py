"""load_rank, iter_tensors and inspect: a model opened from a local path, a hubfs mount or an
hf:// URL (glue_model_open), loaded or streamed by libhubfs."""
import contextlib
import ctypes
import json
import os
import tempfile
import warnings

from . import _native, _tensors

# The launcher variables the hubfs command reads too: torchrun, Open MPI, Slurm.
_WORLD_SIZE = ("WORLD_SIZE", "OMPI_COMM_WORLD_SIZE", "SLURM_NTASKS")
_RANK = ("RANK", "OMPI_COMM_WORLD_RANK", "SLURM_PROCID")
_LOCAL_RANK = ("LOCAL_RANK", "OMPI_COMM_WORLD_LOCAL_RANK", "SLURM_LOCALID")


def _from_launcher(names, what, default):
    for name in names:
        value = os.environ.get(name)
        if value:
            if not value.isdigit():
                raise ValueError(f"the {what} from the environment ({name}={value!r}) is not a number")
            return int(value)
    return default


def _device(device):
    """"cpu" (also for None), "cuda:K", or "cuda": the one GPU the process sees when there is
    one (a launcher that gives each rank its GPU through CUDA_VISIBLE_DEVICES), else the local
    rank's."""
    name = "cpu" if device is None else str(device)  # torch.device prints as "cuda:1"
    if name != "cuda":
        return name
    visible = _native.lib().loader_cuda_device_count()
    local_rank = _from_launcher(_LOCAL_RANK, "local rank", 0)
    if visible > 1 and local_rank >= visible:
        raise _native.HubfsError(f"device='cuda': local rank {local_rank} has no GPU: this process sees "
                                 f"{visible} (cuda:0..{visible - 1}); pass device='cuda:K' or give each "
                                 "rank its GPU with CUDA_VISIBLE_DEVICES")
    return f"cuda:{0 if visible == 1 else local_rank}"


@contextlib.contextmanager
def _model(path):
    """A model opened by libhubfs; what the user should know (not an error) is a warning."""
    library = _native.lib()
    model, notice, err = ctypes.c_void_p(), ctypes.create_string_buffer(_native.NOTICE_LEN), _native.error_buffer()
    _native.check(library.glue_model_open(os.fsencode(path), None, ctypes.byref(model), notice, err, len(err)), err)
    if notice.value:
        warnings.warn("hubfs: " + _native.text(notice.value), RuntimeWarning, stacklevel=4)
    try:
        yield model
    finally:
        library.loader_model_close(model)


@contextlib.contextmanager
def _options(tp, rank, device, plan, threads, chunk_bytes):
    """loader_options; a plan given as a dict goes through a temporary file, read at open."""
    tp = _from_launcher(_WORLD_SIZE, "world size", 1) if tp is None else tp
    rank = _from_launcher(_RANK, "rank", 0) if rank is None else rank
    for value, what in ((tp, "tp"), (rank, "rank"), (threads, "threads"), (chunk_bytes, "chunk_bytes")):
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 1 << 32:
            raise ValueError(f"{what} must be an int in [0, 2**32), not {value!r}")
    scratch_dir = tempfile.TemporaryDirectory(prefix="hubfs-plan-") if isinstance(plan, dict) else None
    with scratch_dir or contextlib.nullcontext() as scratch:
        if scratch:
            path = os.path.join(scratch, "plan.json")
            with open(path, "w") as f:
                json.dump(plan, f)
            plan = path
        yield _native.Options(tp_size=tp, rank=rank, device=_device(device).encode(),
                              plan_path=os.fsencode(plan) if plan is not None else None,
                              reader_threads=threads, chunk_bytes=chunk_bytes)


def load_rank(path, tp=None, rank=None, device=None, plan=None, framework="torch", threads=0, chunk_bytes=0):
    """Rank `rank` of `tp`'s tensors of the model at `path`, as {name: tensor}, views of one arena
    in host memory ("cpu") or on a GPU ("cuda:K"; "cuda": the local rank's), loaded with many
    reads in flight. No copy: the arena lives as long as any of the tensors does.

    path: a .safetensors file or a model directory (sharded or not), local, on a hubfs mount
    (the mount gets the load's plan and prefetches it), or hf://ORG/NAME[@REV][/PATH] without a
    mount. tp, rank default from torchrun, Open MPI or Slurm variables (else 1 and 0). plan: a
    {"pattern": "style"} dict or a JSON file of one, merged over the model's plan (config.json's
    base_model_tp_plan, else Llama rules). framework: "torch", "numpy" (host memory) or "dlpack"
    (hubfs.Tensor objects). threads: reads in flight (0: 8, or 32 from hf://); chunk_bytes:
    bytes per read (0: 8 MiB, or 2 MiB from hf://). A GPU load stages through threads + 2
    pinned buffers of chunk_bytes, never more than 1 GiB of them.
    Raises HubfsError with libhubfs's message."""
    convert = _tensors.converter(framework)
    library = _native.lib()
    with _model(path) as model, _options(tp, rank, device, plan, threads, chunk_bytes) as options:
        handle, err = ctypes.c_void_p(), _native.error_buffer()
        _native.check(library.loader_load(model, ctypes.byref(options), ctypes.byref(handle), err, len(err)), err)
    loaded = _tensors.Rank(handle.value)
    return {loaded.info(i)[0]: convert(loaded, i) for i in range(loaded.tensor_count())}


def iter_tensors(path, tp=None, rank=None, device=None, plan=None, framework="torch", threads=0,
                 chunk_bytes=0):
    """Yields (name, tensor) for rank `rank` of `tp`, in file order, each as soon as its bytes
    have landed, for consumers of an iterator of weights (vLLM's load_weights, a
    load_state_dict of your own). Same arguments and tensors as load_rank; the reads run ahead
    in the background, and what is held beyond the tensors you keep is bounded: the staging
    ring and one group of tensors (threads x chunk_bytes, 64 MiB by default, or one larger
    tensor), whatever the model's size. Leaving the loop early stops the reads."""
    convert = _tensors.converter(framework)
    library = _native.lib()
    with _model(path) as model:
        with _options(tp, rank, device, plan, threads, chunk_bytes) as options:
            stream, err = ctypes.c_void_p(), _native.error_buffer()
            _native.check(library.loader_stream_open(model, ctypes.byref(options), ctypes.byref(stream),
                                                     err, len(err)), err)
        try:
            handle, index = ctypes.c_void_p(), ctypes.c_size_t()
            while _native.check(library.loader_stream_next(stream, ctypes.byref(handle), ctypes.byref(index),
                                                           err, len(err)), err):
                group = _tensors.Rank(handle.value)
                yield group.info(index.value)[0], convert(group, index.value)
                del group
        finally:
            library.loader_stream_close(stream)


def inspect(path):
    """The model's tensors from its headers alone (no weight bytes are read): what
    `hubfs inspect --json` prints, {"tensors": [{name, dtype, shape, bytes, shard, offset,
    data_offsets}], "dtypes": {dtype: {tensors, bytes, parameters}}, "parameters", "bytes"}."""
    library = _native.lib()
    with _model(path) as model:
        raw = library.loader_inspect_json(model)
        if not raw:
            raise MemoryError("hubfs.inspect: out of memory")
        try:
            return json.loads(ctypes.string_at(raw))
        finally:
            _native.free(raw)
