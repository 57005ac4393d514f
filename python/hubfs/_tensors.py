"""A loaded rank's tensors as framework tensors, without a copy.

Each tensor is a view of the rank's arena that holds a reference to it, so the arena lives as
long as any tensor does:
- torch: a DLPack capsule made by libhubfs (loader_rank_dlpack), whose deleter drops the
  reference when torch frees the tensor; host memory for "cpu", the GPU's memory for "cuda:K".
- numpy (host memory only): arrays over the arena through __array_interface__, whose base keeps
  a reference.
- dlpack: Tensor objects, DLPack producers (__dlpack__, __dlpack_device__) with
  __array_interface__ or __cuda_array_interface__, for any framework (CuPy, JAX, numpy...).

dtypes: torch gets every safetensors dtype it has (bool, int8-64, uint8-64, f16, bf16, f32,
f64, c64, the float8 kinds); numpy, which has no bfloat16 nor float8, gets those as their raw
bits (uint16, uint8) in the same shape. The sub-byte dtypes (F4, F6_E2M3, F6_E3M2), and any a
framework lacks, come as a 1-D uint8 tensor of the tensor's bytes; hubfs.inspect tells the real
dtype and shape.
"""
import ctypes

from . import _native

# safetensors dtype -> numpy typestr (raw bits where numpy has no such type)
_NUMPY_TYPESTR = {"BOOL": "|b1", "U8": "|u1", "I8": "|i1", "I16": "<i2", "U16": "<u2", "F16": "<f2",
                  "BF16": "<u2", "I32": "<i4", "U32": "<u4", "F32": "<f4", "I64": "<i8", "U64": "<u8",
                  "F64": "<f8", "C64": "<c8", "F8_E4M3": "|u1", "F8_E5M2": "|u1", "F8_E4M3FNUZ": "|u1",
                  "F8_E5M2FNUZ": "|u1", "F8_E8M0": "|u1"}
# safetensors dtype -> torch dtype name; DLPack carries the first group as they are, the others
# go as bytes viewed as the torch type (DLPack's float8 and unsigned codes are recent in torch)
_TORCH_DIRECT = {"BOOL": "bool", "U8": "uint8", "I8": "int8", "I16": "int16", "I32": "int32",
                 "I64": "int64", "F16": "float16", "BF16": "bfloat16", "F32": "float32",
                 "F64": "float64", "C64": "complex64"}
_TORCH_VIEWED = {"U16": "uint16", "U32": "uint32", "U64": "uint64", "F8_E4M3": "float8_e4m3fn",
                 "F8_E5M2": "float8_e5m2", "F8_E4M3FNUZ": "float8_e4m3fnuz",
                 "F8_E5M2FNUZ": "float8_e5m2fnuz", "F8_E8M0": "float8_e8m0fnu"}

KDL_CPU, KDL_CUDA = 1, 2
FRAMEWORKS = ("torch", "numpy", "dlpack")

_pythonapi = ctypes.pythonapi
_pythonapi.PyCapsule_New.restype = ctypes.py_object
_pythonapi.PyCapsule_New.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p]
_pythonapi.PyCapsule_IsValid.restype = ctypes.c_int
_pythonapi.PyCapsule_IsValid.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
_pythonapi.PyCapsule_GetPointer.restype = ctypes.c_void_p
_pythonapi.PyCapsule_GetPointer.argtypes = [ctypes.c_void_p, ctypes.c_char_p]


@ctypes.CFUNCTYPE(None, ctypes.c_void_p)
def _capsule_destructor(capsule, _is_valid=_pythonapi.PyCapsule_IsValid,
                        _get=_pythonapi.PyCapsule_GetPointer, _managed=_native.DLManagedTensor):
    """A capsule no consumer took ("dltensor", not renamed "used_dltensor"): its tensor is ours
    to delete (the DLPack rule)."""
    if _is_valid(capsule, b"dltensor"):
        managed = _managed.from_address(_get(capsule, b"dltensor"))
        managed.deleter(ctypes.addressof(managed))


def dlpack_capsule(rank, index, flags=0):
    """Tensor `index` of the rank in a "dltensor" capsule holding its own reference to the rank."""
    err = _native.error_buffer()
    managed = _native.lib().loader_rank_dlpack(rank.handle, index, flags, err, len(err))
    if not managed:
        raise _native.HubfsError(_native.text(err.value))
    return _pythonapi.PyCapsule_New(managed, b"dltensor", ctypes.cast(_capsule_destructor, ctypes.c_void_p))


class Rank:
    """One reference to a loaded rank (or to a stream's group of tensors), dropped when this
    object goes; the tensors made from it hold their own."""

    def __init__(self, handle, retain=False):
        library = _native.lib()
        self.handle = library.loader_rank_retain(handle) if retain else handle
        self._free = library.loader_rank_free
        self.device = _native.text(library.loader_rank_device(self.handle))
        self.data = library.loader_rank_data(self.handle) or 0

    def __del__(self):
        if getattr(self, "handle", None):
            self._free(self.handle)
            self.handle = None

    def tensor_count(self):
        return _native.lib().loader_rank_tensor_count(self.handle)

    def info(self, index):
        """(name, safetensors dtype, shape, offset in the arena, bytes)."""
        raw = _native.TensorInfo()
        _native.lib().loader_rank_tensor(self.handle, index, ctypes.byref(raw))
        shape = tuple(raw.shape[d] for d in range(raw.ndim))
        return _native.text(raw.name), _native.text(raw.dtype), shape, raw.offset, raw.nbytes

    def dlpack_device(self):
        if self.device.startswith("cuda:"):
            return KDL_CUDA, int(self.device[5:])
        return KDL_CPU, 0


class Tensor:
    """A tensor of a loaded rank, framework-neutral: a DLPack producer (torch.from_dlpack,
    numpy.from_dlpack, cupy.from_dlpack, jax.dlpack.from_dlpack take it) with the array
    interface of its memory. Holds the rank (and so its arena) while it lives."""

    def __init__(self, rank, index):
        self._rank = rank
        self._index = index
        self.name, self.dtype, self.shape, offset, self.nbytes = rank.info(index)
        self.device = rank.device
        self.data_ptr = rank.data + offset

    def __repr__(self):
        return f"hubfs.Tensor({self.name!r}, {self.dtype}, shape={self.shape}, device={self.device!r})"

    def __dlpack__(self, stream=None, max_version=None, dl_device=None, copy=None):
        """A legacy "dltensor" capsule (every consumer takes it). The data has landed before the
        tensor was handed out, so there is no stream to wait on; copy=True is not offered."""
        if copy:
            raise BufferError("hubfs tensors are views of the loaded arena: copy=True is not offered")
        if dl_device is not None and tuple(dl_device) != self.__dlpack_device__():
            raise BufferError(f"{self.name} is on {self.device}, not on DLPack device {tuple(dl_device)}")
        return dlpack_capsule(self._rank, self._index)

    def __dlpack_device__(self):
        return self._rank.dlpack_device()

    def _interface(self):
        if self.dtype not in _NUMPY_TYPESTR:
            return {"shape": (self.nbytes,), "typestr": "|u1", "data": (self.data_ptr, False), "version": 3}
        return {"shape": self.shape, "typestr": _NUMPY_TYPESTR[self.dtype], "data": (self.data_ptr, False),
                "version": 3}

    @property
    def __array_interface__(self):
        if self.device != "cpu":
            raise AttributeError("__array_interface__: the tensor is on " + self.device)
        return self._interface()

    @property
    def __cuda_array_interface__(self):
        if not self.device.startswith("cuda:"):
            raise AttributeError("__cuda_array_interface__: the tensor is in host memory")
        return {**self._interface(), "stream": None}


def _torch_tensor(rank, index, torch):
    _, dtype, shape, _, _ = rank.info(index)
    if dtype in _TORCH_DIRECT:
        return torch.utils.dlpack.from_dlpack(dlpack_capsule(rank, index))
    raw = torch.utils.dlpack.from_dlpack(dlpack_capsule(rank, index, _native.DLPACK_BYTES))
    viewed = getattr(torch, _TORCH_VIEWED.get(dtype, ""), None)
    return raw.view(viewed).reshape(shape) if viewed is not None else raw


def _numpy_array(rank, index, numpy):
    if rank.device != "cpu":
        raise ValueError(f"framework='numpy' holds host memory only, and this rank is on {rank.device}: "
                         "use device='cpu', or framework='torch' (or 'dlpack') for GPU memory")
    return numpy.asarray(Tensor(rank, index))


def converter(framework):
    """f(rank, index) -> the framework's tensor."""
    if framework == "torch":
        try:
            import torch
        except ImportError:
            raise ImportError("framework='torch' needs PyTorch (pip install torch); without it, "
                              "framework='numpy' gives numpy arrays of host memory") from None
        return lambda rank, index: _torch_tensor(rank, index, torch)
    if framework == "numpy":
        import numpy
        return lambda rank, index: _numpy_array(rank, index, numpy)
    if framework == "dlpack":
        return Tensor
    raise ValueError(f"unknown framework {framework!r}: expected one of {', '.join(FRAMEWORKS)}")
