"""libhubfs through ctypes: the library, its structures and functions, and errors as exceptions.

ctypes rather than a CPython extension: the package compiles nothing against Python's headers
(so one build serves every Python 3 and needs no python3-dev), the C library stays the one C
programs link, and every call releases the GIL while it runs (a load, a stream's wait).
"""
import ctypes
import ctypes.util
import os
import threading

ERR_LEN = 1024  # LOADER_ERR_LEN
NOTICE_LEN = 512  # GLUE_NOTICE_LEN
DLPACK_BYTES = 1  # LOADER_DLPACK_BYTES


class HubfsError(RuntimeError):
    """A failure of libhubfs, with its message (what went wrong and what to do)."""


class TensorInfo(ctypes.Structure):  # loader_tensor_info
    _fields_ = [("name", ctypes.c_char_p), ("dtype", ctypes.c_char_p), ("ndim", ctypes.c_size_t),
                ("shape", ctypes.POINTER(ctypes.c_uint64)), ("shard", ctypes.c_char_p),
                ("offset", ctypes.c_uint64), ("nbytes", ctypes.c_uint64)]


class Options(ctypes.Structure):  # loader_options
    _fields_ = [("tp_size", ctypes.c_uint), ("rank", ctypes.c_uint), ("device", ctypes.c_char_p),
                ("plan_path", ctypes.c_char_p), ("reader_threads", ctypes.c_uint),
                ("chunk_bytes", ctypes.c_size_t), ("progress", ctypes.c_void_p),
                ("progress_ctx", ctypes.c_void_p)]


class DLDevice(ctypes.Structure):
    _fields_ = [("device_type", ctypes.c_int32), ("device_id", ctypes.c_int32)]


class DLDataType(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint8), ("bits", ctypes.c_uint8), ("lanes", ctypes.c_uint16)]


class DLTensor(ctypes.Structure):
    _fields_ = [("data", ctypes.c_void_p), ("device", DLDevice), ("ndim", ctypes.c_int32),
                ("dtype", DLDataType), ("shape", ctypes.POINTER(ctypes.c_int64)),
                ("strides", ctypes.POINTER(ctypes.c_int64)), ("byte_offset", ctypes.c_uint64)]


DLPACK_DELETER = ctypes.CFUNCTYPE(None, ctypes.c_void_p)


class DLManagedTensor(ctypes.Structure):
    _fields_ = [("dl_tensor", DLTensor), ("manager_ctx", ctypes.c_void_p), ("deleter", DLPACK_DELETER)]


_P = ctypes.c_void_p
_SIGNATURES = {  # name: (result, arguments)
    "hubfs_library_version": (ctypes.c_char_p, []),
    "glue_model_open": (ctypes.c_int, [ctypes.c_char_p, _P, ctypes.POINTER(_P), ctypes.c_char_p,
                                       ctypes.c_char_p, ctypes.c_size_t]),
    "loader_model_close": (None, [_P]),
    "loader_inspect_json": (_P, [_P]),
    "loader_load": (ctypes.c_int, [_P, ctypes.POINTER(Options), ctypes.POINTER(_P), ctypes.c_char_p,
                                   ctypes.c_size_t]),
    "loader_rank_tensor_count": (ctypes.c_size_t, [_P]),
    "loader_rank_tensor": (None, [_P, ctypes.c_size_t, ctypes.POINTER(TensorInfo)]),
    "loader_rank_data": (_P, [_P]),
    "loader_rank_device": (ctypes.c_char_p, [_P]),
    "loader_rank_retain": (_P, [_P]),
    "loader_rank_free": (None, [_P]),
    "loader_rank_dlpack": (_P, [_P, ctypes.c_size_t, ctypes.c_uint, ctypes.c_char_p, ctypes.c_size_t]),
    "loader_stream_open": (ctypes.c_int, [_P, ctypes.POINTER(Options), ctypes.POINTER(_P),
                                          ctypes.c_char_p, ctypes.c_size_t]),
    "loader_stream_next": (ctypes.c_int, [_P, ctypes.POINTER(_P), ctypes.POINTER(ctypes.c_size_t),
                                          ctypes.c_char_p, ctypes.c_size_t]),
    "loader_stream_close": (None, [_P]),
    "loader_cuda_device_count": (ctypes.c_int, []),
}

_lock = threading.Lock()
_library = None


def library_path():
    """HUBFS_LIBRARY, else the libhubfs.so inside the package (`pip install .`), else the one
    `cmake --install` put where the dynamic linker looks."""
    explicit = os.environ.get("HUBFS_LIBRARY")
    if explicit:
        return explicit
    beside = os.path.join(os.path.dirname(os.path.abspath(__file__)), "libhubfs.so")
    if os.path.exists(beside):
        return beside
    return ctypes.util.find_library("hubfs")


def lib():
    """The loaded libhubfs, its functions typed."""
    global _library
    with _lock:
        if _library is None:
            path = library_path()
            if not path:
                raise HubfsError("libhubfs not found: install the package with `pip install .` at the "
                                 "root of a hubfs checkout, install the library with `cmake --install`, "
                                 "or set HUBFS_LIBRARY to a libhubfs.so")
            try:
                loaded = ctypes.CDLL(path)
            except OSError as e:
                raise HubfsError(f"cannot load libhubfs from {path}: {e}") from None
            for name, (result, arguments) in _SIGNATURES.items():
                function = getattr(loaded, name)
                function.restype, function.argtypes = result, arguments
            _library = loaded
        return _library


def text(raw):
    """A C string from libhubfs: names come from model files (UTF-8 checked for tensor names,
    not for shard names), so bytes that are not UTF-8 survive as surrogates."""
    return raw.decode("utf-8", "surrogateescape")


def check(status, err):
    """Raises HubfsError with libhubfs's message when a call returned -1."""
    if status < 0:
        raise HubfsError(text(err.value) or "failed")
    return status


def error_buffer():
    return ctypes.create_string_buffer(ERR_LEN)


_libc = ctypes.CDLL(None)
_libc.free.argtypes, _libc.free.restype = [ctypes.c_void_p], None


def free(pointer):
    """Frees memory libhubfs allocated with malloc for the caller."""
    _libc.free(pointer)
