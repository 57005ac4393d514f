"""hubfs: tensor-parallel ranks of safetensors models as framework tensors, without a copy, from
local paths, hubfs mounts (lazy Hub repos) and hf:// URLs.

    import hubfs
    state = hubfs.load_rank("/hf/meta-llama/Llama-3.1-8B", tp=8, rank=3, device="cuda:3")
    for name, tensor in hubfs.iter_tensors("hf://org/model", device="cuda"): ...
    hubfs.inspect("/hf/org/model")["parameters"]

The work is done by libhubfs (the C library the hubfs command is built from), called through
ctypes; torch is optional (framework="numpy" gives numpy arrays of host memory).
"""
from ._api import inspect, iter_tensors, load_rank
from ._native import HubfsError, lib as _lib, text as _text
from ._tensors import Tensor

__all__ = ["HubfsError", "Tensor", "inspect", "iter_tensors", "load_rank"]


def __getattr__(name):
    if name == "__version__":  # libhubfs's: the project's version, one place (CMakeLists.txt)
        try:
            return _text(_lib().hubfs_library_version())
        except HubfsError:  # the library is missing: what pip installed says, not an error
            from importlib.metadata import PackageNotFoundError, version
            try:
                return version("hubfs")
            except PackageNotFoundError:
                raise AttributeError("hubfs.__version__: libhubfs not found and no installed hubfs") from None
    raise AttributeError(f"module 'hubfs' has no attribute {name!r}")
