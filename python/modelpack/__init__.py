"""modelpack: read, write, convert and run .mpk model files from Python.

A thin binding of libmodelpack's stable C ABI (include/modelpack/modelpack.h) and of
libmodelpack_runtime (include/modelpack/runtime.h) with ctypes and NumPy; nothing else is needed.

Libraries are looked up, in this order, and the first source found is the only one used:

1. ``$MPK_LIBRARY_DIR`` (a folder holding libmodelpack.so and libmodelpack_runtime.so); when the
   variable is set, nothing else is tried;
2. a CMake build folder: ``$MPK_BUILD_DIR`` if set, else the repository's ``<repo>/build/release``
   (``libmodelpack.so`` in it, ``lib/runtime/libmodelpack_runtime.so`` below it);
3. the system loader: ``libmodelpack.so.0`` and ``libmodelpack_runtime.so.0``.

libmodelpack is loaded with RTLD_GLOBAL before the runtime, so that the runtime binds to this very
copy (one last-error message per thread, one set of handles). The runtime is optional: without it
everything but :class:`Runtime`, :class:`Graph` and :class:`Session` works, and those raise
:class:`RuntimeUnavailable`.

Lifetimes: every C object is owned by a private handle that is freed when no Python object needs it
any more. A Session keeps its Graph alive, a Graph its Model and Runtime, and a zero-copy tensor view
(:meth:`Model.tensor`) keeps its Model's memory alive: ``Model.close()`` makes the Model object
unusable at once, but the actual ``mpk_model_free`` is deferred until the last view (and Graph) is
gone, so a view never points into freed memory.
"""

from __future__ import annotations

import ctypes
import json as _json
import os
import threading
from ctypes import (
    CFUNCTYPE,
    POINTER,
    Structure,
    byref,
    c_char_p,
    c_double,
    c_int,
    c_int32,
    c_int64,
    c_size_t,
    c_uint,
    c_uint8,
    c_uint32,
    c_uint64,
    c_void_p,
)

import numpy as np

__all__ = [
    "Error",
    "RuntimeUnavailable",
    "UnsupportedValue",
    "Model",
    "Writer",
    "Runtime",
    "Graph",
    "Session",
    "open",
    "write",
    "convert",
    "compress",
    "decompress",
    "quantize",
    "diff",
    "keygen",
    "public_key",
    "sign",
    "verify_signature",
    "patch",
    "run",
    "version",
    "abi_version",
    "format_version",
    "runtime_available",
]

# The C ABI is laid out for LP64 (64-bit pointers and size_t); the struct sizes asserted below are
# those of that model.
if ctypes.sizeof(c_void_p) != 8 or ctypes.sizeof(c_size_t) != 8:
    raise ImportError("modelpack: only 64-bit platforms are supported")

# ---- status values (mpk_status, part of the ABI) --------------------------------------------------

OK = 0
ERR_INVALID_ARGUMENT = 1
ERR_NOT_FOUND = 3
ERR_BAD_SHAPE = 16
ERR_BAD_DTYPE = 17
ERR_STATE = 20

# ---- enums of the header, by the names the Python API uses -----------------------------------------

_ACCESS = {"map": 0, "read": 1}  # mpk_access
_VERIFY = {"none": 0, "header": 1, "full": 2}  # mpk_verify_mode
_CODEC = {"none": 0, "auto": 1, "zstd": 2, "float": 3}  # mpk_codec
_FILE_FORMAT = {"auto": 0, "mpk": 1, "safetensors": 2, "gguf": 3, "npy": 4, "npz": 5}  # mpk_file_format
_QUANT_TARGET = {  # mpk_quant_target ("fp16" as the mpk CLI spells it)
    "int8": 1,
    "int8-g32": 2,
    "int8-g64": 3,
    "int8-g128": 4,
    "f16": 5,
    "fp16": 5,
    "bf16": 6,
}
_QUANT_SCHEME = {1: "int8-channel", 2: "int8-group", 3: "cast", 4: "block"}  # mpk_quant_scheme
_ENCODING = {0: "raw", 1: "chunked"}  # mpk_encoding

# mpk_meta_type
_META_UNKNOWN, _META_STRING, _META_INT64, _META_FLOAT64, _META_BOOL, _META_BYTES = 0, 1, 2, 3, 4, 5
_META_STRING_ARRAY, _META_INT64_ARRAY, _META_FLOAT64_ARRAY, _META_BOOL_ARRAY = 6, 7, 8, 9
_META_BYTES_ARRAY, _META_TYPED, _META_TYPED_ARRAY, _META_LIST = 10, 11, 12, 13

# mpk_dtype <-> NumPy (little-endian, as stored). c64 is two f32 (real, imaginary): NumPy's complex64.
_DTYPE_F32, _DTYPE_BF16, _DTYPE_I64, _DTYPE_BOOL = 2, 4, 5, 13
_NUMPY_OF_DTYPE = {
    1: np.dtype("<f8"),
    2: np.dtype("<f4"),
    3: np.dtype("<f2"),
    5: np.dtype("<i8"),
    6: np.dtype("<i4"),
    7: np.dtype("<i2"),
    8: np.dtype("i1"),
    9: np.dtype("<u8"),
    10: np.dtype("<u4"),
    11: np.dtype("<u2"),
    12: np.dtype("u1"),
    13: np.dtype("?"),
    20: np.dtype("<c8"),
}
# NumPy kind+itemsize -> mpk_dtype, for writing (byte order is normalised to little-endian first).
_DTYPE_OF_NUMPY = {(d.kind, d.itemsize): code for code, d in _NUMPY_OF_DTYPE.items()}


# ---- errors --------------------------------------------------------------------------------------


class Error(Exception):
    """A failed libmodelpack call.

    Attributes:
        code: the mpk_status value (int), e.g. 8.
        status: its constant name from mpk_status_name, e.g. ``"MPK_ERR_CHECKSUM"``.
        message: the library's message (mpk_last_error_message) saying what and where.
    """

    def __init__(self, code: int, message: str):
        self.code = int(code)
        self.status = _status_name(self.code)
        self.message = message
        super().__init__(f"{self.status}: {message}")

    def __reduce__(self):  # pickles (e.g. across multiprocessing) as its code and message
        return (type(self), (self.code, self.message))


class RuntimeUnavailable(RuntimeError):
    """libmodelpack_runtime could not be loaded: Runtime, Graph and Session are unavailable."""


class UnsupportedValue:
    """A metadata value the C ABI cannot hand out as a Python value.

    ``type`` is the metadata type name (mpk_meta_type_name): ``"list"`` for a list of values of any
    types (format 1.1; the C ABI gives only its length, not its items) or ``"unknown"`` for a type
    written by a newer libmodelpack. ``length`` is the number of items of a list, else None.
    """

    __slots__ = ("type", "length")

    def __init__(self, type_name: str, length: int | None):
        self.type = type_name
        self.length = length

    def __repr__(self) -> str:
        extra = "" if self.length is None else f", length={self.length}"
        return f"UnsupportedValue(type={self.type!r}{extra})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, UnsupportedValue) and (self.type, self.length) == (other.type, other.length)


# ---- C structs (layouts as in the headers, LP64) ---------------------------------------------------


class _OpenOptions(Structure):  # mpk_open_options
    _fields_ = [
        ("struct_size", c_uint32),
        ("access", c_uint32),
        ("verify", c_uint32),
        ("threads", c_uint32),
        ("max_header_bytes", c_uint64),
        ("cache_bytes", c_uint64),
        ("max_decoded_tensor_bytes", c_uint64),
        ("decode_threads", c_uint32),
        ("reserved", c_uint32),
        ("trusted_keys", c_void_p),  # appended in 0.6 (signatures)
        ("trusted_key_count", c_uint64),
    ]


class _TensorInfo(Structure):  # mpk_tensor_info
    _fields_ = [
        ("struct_size", c_uint32),
        ("ndim", c_uint32),
        ("name", c_void_p),  # lent, NUL-terminated; name_len is authoritative
        ("name_len", c_size_t),
        ("dtype", c_int),  # mpk_dtype (a C enum: int)
        ("component", c_uint32),
        ("shape", POINTER(c_uint64)),
        ("numel", c_uint64),
        ("offset", c_uint64),
        ("nbytes", c_uint64),
        ("xxh3", c_uint64),
        ("stored_bytes", c_uint64),
        ("encoding", c_uint32),
        ("chunk_size", c_uint32),
        ("chunk_count", c_uint32),
        ("reserved", c_uint32),
    ]


class _WriterOptions(Structure):  # mpk_writer_options
    _fields_ = [
        ("struct_size", c_uint32),
        ("alignment", c_uint32),
        ("flags", c_uint32),
        ("codec", c_uint32),
        ("level", c_int32),
        ("chunk_size", c_uint32),
        ("threads", c_uint32),
        ("reserved", c_uint32),
        ("min_decode_gbps", c_double),
    ]


class _ConvertOptions(Structure):  # mpk_convert_options
    _fields_ = [
        ("struct_size", c_uint32),
        ("from_", c_uint32),  # `from` in C
        ("to", c_uint32),
        ("alignment", c_uint32),
        ("flags", c_uint32),
        ("npz_deflate", c_uint32),
        ("max_shard_bytes", c_uint64),
        ("threads", c_uint32),
        ("codec", c_uint32),
        ("level", c_int32),
        ("reserved", c_uint32),
    ]


class _PatchOptions(Structure):  # mpk_patch_options
    _fields_ = [
        ("struct_size", c_uint32),
        ("flags", c_uint32),
        ("level", c_int32),
        ("result_level", c_int32),
        ("threads", c_uint32),
        ("reserved", c_uint32),
    ]


class _QuantInfo(Structure):  # mpk_quant_info
    _fields_ = [
        ("struct_size", c_uint32),
        ("scheme", c_uint32),
        ("axis", c_uint32),
        ("group", c_uint32),
        ("scale_index", c_size_t),
        ("source_dtype", c_int),
        ("reserved", c_uint32),
    ]


class _QuantizeTensor(Structure):  # mpk_quantize_tensor
    _fields_ = [
        ("struct_size", c_uint32),
        ("reserved", c_uint32),
        ("name", c_char_p),
        ("from_", c_int),
        ("to", c_int),
        ("numel", c_uint64),
        ("max_abs_error", c_double),
        ("rmse", c_double),
        ("snr_db", c_double),
    ]


_ON_TENSOR = CFUNCTYPE(None, c_void_p, POINTER(_QuantizeTensor))


class _QuantizeOptions(Structure):  # mpk_quantize_options
    _fields_ = [
        ("struct_size", c_uint32),
        ("target", c_uint32),
        ("flags", c_uint32),
        ("threads", c_uint32),
        ("include", c_char_p),
        ("exclude", c_char_p),
        ("on_tensor", _ON_TENSOR),
        ("user", c_void_p),
    ]


class _RuntimeOptions(Structure):  # mpk_runtime_options
    _fields_ = [("struct_size", c_uint32), ("reserved", c_uint32), ("cache_budget_bytes", c_uint64)]


class _RunOptions(Structure):  # mpk_run_options
    _fields_ = [("struct_size", c_uint32), ("threads", c_uint32)]


class _RuntimeStats(Structure):  # mpk_runtime_stats
    _fields_ = [
        ("struct_size", c_uint32),
        ("reserved", c_uint32),
        ("bytes_used", c_uint64),
        ("budget", c_uint64),
        ("entries", c_uint64),
        ("primitives", c_uint64),
        ("hits", c_uint64),
        ("misses", c_uint64),
        ("evictions", c_uint64),
        ("pack_seconds", c_double),
        ("file_weights", c_uint64),
        ("file_used", c_uint64),
        ("file_rejected", c_uint64),
        ("packed", c_uint64),
    ]


class _SessionOptions(Structure):  # mpk_session_options
    _fields_ = [("struct_size", c_uint32), ("threads", c_uint32), ("profile", c_uint32), ("reserved", c_uint32)]


class _TensorArg(Structure):  # mpk_tensor_arg
    _fields_ = [
        ("name", c_char_p),
        ("dtype", c_int),
        ("ndim", c_uint32),
        ("shape", POINTER(c_int64)),
        ("data", c_void_p),
    ]


# What the headers imply on LP64 (sizes, and the offsets of fields after padding holes). A mismatch
# means a field above is wrong: refuse to import rather than corrupt memory.
_EXPECTED_SIZES = {
    _OpenOptions: 64,
    _TensorInfo: 96,  # 72 in the first release (up to xxh3) + 24 appended in 0.2
    _WriterOptions: 40,
    _ConvertOptions: 48,  # modelpack's own static_assert
    _PatchOptions: 24,
    _QuantInfo: 32,
    _QuantizeTensor: 56,
    _QuantizeOptions: 48,  # modelpack's own static_assert
    _RuntimeOptions: 16,
    _RunOptions: 8,
    _RuntimeStats: 104,  # 72 before the packed-weights counters (file_weights, file_used, file_rejected, packed)
    _SessionOptions: 16,
    _TensorArg: 32,
}
_EXPECTED_OFFSETS = {
    (_OpenOptions, "max_header_bytes"): 16,
    (_OpenOptions, "decode_threads"): 40,
    (_TensorInfo, "xxh3"): 64,
    (_TensorInfo, "stored_bytes"): 72,
    (_WriterOptions, "codec"): 12,  # the first release ended here
    (_WriterOptions, "min_decode_gbps"): 32,
    (_ConvertOptions, "npz_deflate"): 20,  # the first release ended here
    (_ConvertOptions, "max_shard_bytes"): 24,
    (_ConvertOptions, "threads"): 32,
    (_QuantInfo, "scale_index"): 16,
    (_QuantizeTensor, "numel"): 24,
    (_QuantizeOptions, "on_tensor"): 32,
    (_RuntimeOptions, "cache_budget_bytes"): 8,
    (_TensorArg, "shape"): 16,
}
for _struct, _size in _EXPECTED_SIZES.items():
    assert ctypes.sizeof(_struct) == _size, f"{_struct.__name__}: {ctypes.sizeof(_struct)} bytes, header says {_size}"
for (_struct, _field), _offset in _EXPECTED_OFFSETS.items():
    assert getattr(_struct, _field).offset == _offset, f"{_struct.__name__}.{_field} is not at offset {_offset}"


# ---- loading the libraries -----------------------------------------------------------------------


class _STATUS:
    """Marks a function returning mpk_status in the tables below (declared as a C int, checked)."""


# name: (restype, argtypes). Functions returning mpk_status get an errcheck that raises Error.
_CORE_FUNCTIONS = {
    "mpk_version_string": (c_char_p, []),
    "mpk_abi_version": (c_uint, []),
    "mpk_format_version": (None, [POINTER(c_uint), POINTER(c_uint)]),
    "mpk_status_name": (c_char_p, [c_int]),
    "mpk_last_error_message": (c_char_p, []),
    "mpk_dtype_name": (c_char_p, [c_int]),
    "mpk_dtype_size": (c_size_t, [c_int]),
    "mpk_dtype_from_name": (_STATUS, [POINTER(c_int), c_char_p]),
    "mpk_meta_type_name": (c_char_p, [c_int]),
    # models
    "mpk_open_options_init": (_STATUS, [POINTER(_OpenOptions), c_size_t]),
    "mpk_model_open": (_STATUS, [POINTER(c_void_p), c_char_p, POINTER(_OpenOptions)]),
    "mpk_model_free": (None, [c_void_p]),
    "mpk_model_verify": (_STATUS, [c_void_p, c_int, c_uint32]),
    "mpk_model_content_id": (c_char_p, [c_void_p]),
    "mpk_model_file_size": (c_uint64, [c_void_p]),
    "mpk_model_alignment": (c_uint32, [c_void_p]),
    "mpk_model_format_version": (None, [c_void_p, POINTER(c_uint), POINTER(c_uint)]),
    "mpk_model_features": (None, [c_void_p, POINTER(c_uint64), POINTER(c_uint64)]),
    "mpk_model_tensor_count": (c_size_t, [c_void_p]),
    "mpk_model_find_tensor": (_STATUS, [c_void_p, c_char_p, POINTER(c_size_t)]),
    "mpk_model_tensor_info": (_STATUS, [c_void_p, c_size_t, POINTER(_TensorInfo)]),
    "mpk_model_tensor_data": (_STATUS, [c_void_p, c_size_t, POINTER(c_void_p), POINTER(c_uint64)]),
    "mpk_model_tensor_read": (_STATUS, [c_void_p, c_size_t, c_void_p, c_uint64]),
    "mpk_model_verify_tensor": (_STATUS, [c_void_p, c_size_t]),
    "mpk_model_tensor_quant": (_STATUS, [c_void_p, c_size_t, POINTER(_QuantInfo)]),
    "mpk_model_component_count": (c_size_t, [c_void_p]),
    "mpk_model_find_component": (_STATUS, [c_void_p, c_char_p, POINTER(c_size_t)]),
    "mpk_model_component_info": (
        _STATUS,
        [c_void_p, c_size_t, POINTER(c_char_p), POINTER(c_char_p), POINTER(c_uint64), POINTER(c_uint64)],
    ),
    # metadata
    "mpk_model_metadata_count": (c_size_t, [c_void_p]),
    "mpk_model_metadata_find": (_STATUS, [c_void_p, c_char_p, POINTER(c_size_t)]),
    "mpk_model_metadata_key": (_STATUS, [c_void_p, c_size_t, POINTER(c_char_p)]),
    "mpk_model_metadata_type": (c_int, [c_void_p, c_size_t]),
    "mpk_model_metadata_string": (_STATUS, [c_void_p, c_size_t, POINTER(c_void_p), POINTER(c_size_t)]),
    "mpk_model_metadata_int64": (_STATUS, [c_void_p, c_size_t, POINTER(c_int64)]),
    "mpk_model_metadata_float64": (_STATUS, [c_void_p, c_size_t, POINTER(c_double)]),
    "mpk_model_metadata_bool": (_STATUS, [c_void_p, c_size_t, POINTER(c_int)]),
    "mpk_model_metadata_bytes": (_STATUS, [c_void_p, c_size_t, POINTER(c_void_p), POINTER(c_size_t)]),
    "mpk_model_metadata_array_length": (_STATUS, [c_void_p, c_size_t, POINTER(c_size_t)]),
    "mpk_model_metadata_int64_array": (_STATUS, [c_void_p, c_size_t, POINTER(c_void_p), POINTER(c_size_t)]),
    "mpk_model_metadata_float64_array": (_STATUS, [c_void_p, c_size_t, POINTER(c_void_p), POINTER(c_size_t)]),
    "mpk_model_metadata_bool_array": (_STATUS, [c_void_p, c_size_t, POINTER(c_void_p), POINTER(c_size_t)]),
    "mpk_model_metadata_typed": (
        _STATUS,
        [c_void_p, c_size_t, POINTER(c_int), POINTER(c_void_p), POINTER(c_size_t)],
    ),
    "mpk_model_metadata_string_item": (
        _STATUS,
        [c_void_p, c_size_t, c_size_t, POINTER(c_void_p), POINTER(c_size_t)],
    ),
    "mpk_model_metadata_bytes_item": (
        _STATUS,
        [c_void_p, c_size_t, c_size_t, POINTER(c_void_p), POINTER(c_size_t)],
    ),
    # writing
    "mpk_writer_options_init": (_STATUS, [POINTER(_WriterOptions), c_size_t]),
    "mpk_rewrite": (_STATUS, [c_char_p, c_char_p, POINTER(_WriterOptions)]),
    "mpk_writer_create": (_STATUS, [POINTER(c_void_p), c_char_p, POINTER(_WriterOptions)]),
    "mpk_writer_free": (None, [c_void_p]),
    "mpk_writer_add_component": (_STATUS, [c_void_p, c_char_p, c_char_p]),
    "mpk_writer_add_tensor": (
        _STATUS,
        [c_void_p, c_char_p, c_int, c_uint32, POINTER(c_uint64), c_void_p, c_uint64, c_char_p],
    ),
    "mpk_writer_begin_tensor": (_STATUS, [c_void_p, c_char_p, c_int, c_uint32, POINTER(c_uint64), c_char_p]),
    "mpk_writer_write": (_STATUS, [c_void_p, c_void_p, c_uint64]),
    "mpk_writer_end_tensor": (_STATUS, [c_void_p]),
    "mpk_writer_set_string": (_STATUS, [c_void_p, c_char_p, c_char_p]),
    "mpk_writer_set_int64": (_STATUS, [c_void_p, c_char_p, c_int64]),
    "mpk_writer_set_float64": (_STATUS, [c_void_p, c_char_p, c_double]),
    "mpk_writer_set_bool": (_STATUS, [c_void_p, c_char_p, c_int]),
    "mpk_writer_set_bytes": (_STATUS, [c_void_p, c_char_p, c_void_p, c_size_t]),
    "mpk_writer_set_string_array": (_STATUS, [c_void_p, c_char_p, POINTER(c_char_p), c_size_t]),
    "mpk_writer_set_bytes_array": (_STATUS, [c_void_p, c_char_p, POINTER(c_void_p), POINTER(c_size_t), c_size_t]),
    "mpk_writer_set_int64_array": (_STATUS, [c_void_p, c_char_p, POINTER(c_int64), c_size_t]),
    "mpk_writer_set_float64_array": (_STATUS, [c_void_p, c_char_p, POINTER(c_double), c_size_t]),
    "mpk_writer_set_bool_array": (_STATUS, [c_void_p, c_char_p, POINTER(c_uint8), c_size_t]),
    "mpk_writer_set_typed": (_STATUS, [c_void_p, c_char_p, c_int, c_void_p]),
    "mpk_writer_set_typed_array": (_STATUS, [c_void_p, c_char_p, c_int, c_void_p, c_size_t]),
    "mpk_writer_commit": (_STATUS, [c_void_p]),
    # whole-file operations
    "mpk_convert_options_init": (_STATUS, [POINTER(_ConvertOptions), c_size_t]),
    "mpk_convert": (_STATUS, [c_char_p, c_char_p, POINTER(_ConvertOptions)]),
    "mpk_patch_options_init": (_STATUS, [POINTER(_PatchOptions), c_size_t]),
    "mpk_diff": (_STATUS, [c_char_p, c_char_p, c_char_p, POINTER(_PatchOptions)]),
    "mpk_patch": (_STATUS, [c_char_p, POINTER(c_char_p), c_size_t, c_char_p, POINTER(_PatchOptions)]),
    "mpk_keygen": (_STATUS, [c_char_p, c_uint32]),
    "mpk_public_key_load": (_STATUS, [c_char_p, POINTER(ctypes.c_uint8)]),
    "mpk_sign": (_STATUS, [c_char_p, c_char_p, c_char_p, c_uint32]),
    "mpk_verify_signature": (_STATUS, [c_char_p, POINTER(ctypes.c_uint8), c_size_t, c_uint32, c_uint32]),
    "mpk_quantize_options_init": (_STATUS, [POINTER(_QuantizeOptions), c_size_t]),
    "mpk_quantize": (_STATUS, [c_char_p, c_char_p, POINTER(_QuantizeOptions)]),
}

_RUNTIME_FUNCTIONS = {
    "mpk_runtime_options_init": (_STATUS, [POINTER(_RuntimeOptions), c_size_t]),
    "mpk_runtime_create": (_STATUS, [POINTER(c_void_p), POINTER(_RuntimeOptions)]),
    "mpk_runtime_free": (None, [c_void_p]),
    "mpk_run_linear": (
        _STATUS,
        [c_void_p, c_void_p, c_size_t, c_void_p, c_uint64, c_uint64, c_uint64, c_void_p, c_void_p, c_uint64,
         POINTER(_RunOptions)],
    ),
    "mpk_run_matmul": (
        _STATUS,
        [c_void_p, c_void_p, c_size_t, c_void_p, c_uint64, c_uint64, c_uint64, c_void_p, c_void_p, c_uint64,
         POINTER(_RunOptions)],
    ),
    "mpk_runtime_stats_get": (_STATUS, [c_void_p, POINTER(_RuntimeStats)]),
    "mpk_runtime_clear_cache": (None, [c_void_p]),
    "mpk_runtime_save_packed": (_STATUS, [c_void_p, c_char_p, POINTER(c_uint64)]),
    "mpk_runtime_load_packed": (_STATUS, [c_void_p, c_char_p, POINTER(c_uint64)]),
    "mpk_runtime_load_packed_signed": (_STATUS, [c_void_p, c_char_p, POINTER(ctypes.c_uint8), c_size_t, c_uint32,
                                                 POINTER(c_uint64)]),
    "mpk_graph_load": (_STATUS, [c_void_p, c_void_p, c_char_p, c_char_p, POINTER(c_void_p)]),
    "mpk_graph_free": (None, [c_void_p]),
    "mpk_graph_input_count": (c_size_t, [c_void_p]),
    "mpk_graph_input_name": (c_char_p, [c_void_p, c_size_t]),
    "mpk_graph_input_dtype": (c_int, [c_void_p, c_size_t]),
    "mpk_graph_output_count": (c_size_t, [c_void_p]),
    "mpk_graph_output_name": (c_char_p, [c_void_p, c_size_t]),
    "mpk_session_create": (_STATUS, [c_void_p, POINTER(_SessionOptions), POINTER(c_void_p)]),
    "mpk_session_free": (None, [c_void_p]),
    "mpk_session_run": (_STATUS, [c_void_p, POINTER(_TensorArg), c_size_t]),
    "mpk_session_output": (
        _STATUS,
        [c_void_p, c_size_t, POINTER(c_int), POINTER(c_uint32), POINTER(POINTER(c_int64)), POINTER(c_void_p)],
    ),
    "mpk_session_reset": (None, [c_void_p]),
    "mpk_session_select_outputs": (_STATUS, [c_void_p, POINTER(c_char_p), c_size_t]),
    "mpk_session_cached_tokens": (c_uint64, [c_void_p]),
    "mpk_session_profile": (
        _STATUS,
        [c_void_p, c_size_t, POINTER(c_char_p), POINTER(c_char_p), POINTER(c_uint64), POINTER(c_double)],
    ),
}


def _raise_on_failure(status, func, args):
    """ctypes errcheck of every mpk_status function: raise Error with this thread's message."""
    if status != OK:
        # ctypes runs the call and this check on the same OS thread, so the thread-local message is
        # the one of this failure.
        message = _core.mpk_last_error_message()
        raise Error(status, message.decode("utf-8", "replace") if message else "")
    return status


def _declare(lib, table):
    for name, (restype, argtypes) in table.items():
        fn = getattr(lib, name)  # AttributeError names the missing symbol: an incompatible library
        fn.argtypes = argtypes
        if restype is _STATUS:
            fn.restype = c_int  # mpk_status is a C enum
            fn.errcheck = _raise_on_failure
        else:
            fn.restype = restype


def _library_candidates():
    """(where, core path, runtime path) of the one place the libraries are taken from."""
    env = os.environ.get("MPK_LIBRARY_DIR")
    if env:
        return (
            f"MPK_LIBRARY_DIR={env}",
            os.path.join(env, "libmodelpack.so"),
            os.path.join(env, "libmodelpack_runtime.so"),
        )
    # A CMake build folder (the test suite runs the binding against the build it tests), else the
    # repository's default one: python/modelpack/__init__.py -> the root is two folders above.
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    build = os.environ.get("MPK_BUILD_DIR") or os.path.join(repo, "build", "release")
    core = os.path.join(build, "libmodelpack.so")
    if os.path.exists(core):
        return (f"the build folder {build}", core, os.path.join(build, "lib", "runtime", "libmodelpack_runtime.so"))
    return ("the system loader", "libmodelpack.so.0", "libmodelpack_runtime.so.0")


def _load():
    where, core_path, runtime_path = _library_candidates()
    try:
        core = ctypes.CDLL(core_path, mode=os.RTLD_NOW | os.RTLD_GLOBAL)
    except OSError as e:
        raise ImportError(f"modelpack: cannot load libmodelpack from {where} ({core_path}): {e}") from e
    try:
        runtime = ctypes.CDLL(runtime_path, mode=os.RTLD_NOW | os.RTLD_GLOBAL)
        runtime_error = None
    except OSError as e:
        runtime = None
        runtime_error = f"cannot load libmodelpack_runtime from {where} ({runtime_path}): {e}"
    return core_path, core, runtime_path, runtime, runtime_error


library_path, _core, runtime_library_path, _rt, _runtime_load_error = _load()
_declare(_core, _CORE_FUNCTIONS)
if _rt is not None:
    try:
        _declare(_rt, _RUNTIME_FUNCTIONS)
    except AttributeError as e:  # a runtime without graphs and sessions (older than this binding)
        _runtime_load_error = f"{runtime_library_path} lacks a function this binding needs: {e}"
        _rt = None
if _rt is None:
    runtime_library_path = None

if _core.mpk_abi_version() != 0:
    raise ImportError(f"modelpack: {library_path} has ABI version {_core.mpk_abi_version()}; this binding needs 0")


def _status_name(code: int) -> str:
    return _core.mpk_status_name(code).decode()


# ---- small helpers -------------------------------------------------------------------------------


def _cstr(text: str, what: str) -> bytes:
    """A name or key as UTF-8 for a `const char *` (an embedded NUL would silently cut it short)."""
    if not isinstance(text, str):
        raise TypeError(f"{what} must be a str, not {type(text).__name__}")
    raw = text.encode("utf-8")
    if b"\0" in raw:
        raise ValueError(f"{what} {text!r} holds a NUL character, which a C string cannot carry")
    return raw


def _cpath(path) -> bytes:
    """A path (str, bytes or os.PathLike) as bytes for a `const char *`."""
    raw = os.fsencode(os.fspath(path))
    if b"\0" in raw:
        raise ValueError(f"path {path!r} holds a NUL byte")
    return raw


def _choice(table: dict, value, what: str) -> int:
    if value not in table:
        raise ValueError(f"{what} must be one of {', '.join(map(repr, table))}, not {value!r}")
    return table[value]


def _uint(value, what: str, bits: int = 32) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{what} must be an int, not {type(value).__name__}")
    if not 0 <= value < (1 << bits):
        raise ValueError(f"{what} must be in [0, 2^{bits}), not {value}")
    return int(value)


def _dtype_name(code: int) -> str:
    name = _core.mpk_dtype_name(code)
    return name.decode() if name else f"unknown({code})"


def _dtype_code(name: str) -> int:
    """mpk_dtype of a modelpack dtype name ("f32", "bf16", ...); Error MPK_ERR_BAD_DTYPE if unknown."""
    out = c_int()
    _core.mpk_dtype_from_name(byref(out), _cstr(name, "dtype"))
    return out.value


def _lent_string(ptr: int | None, length: int) -> bytes:
    return ctypes.string_at(ptr, length) if length else b""


class _Lent:
    """The NumPy face of memory lent by libmodelpack (the array interface, read-only).

    An array made with np.asarray(_Lent(...)) has this object as its base, and this object holds
    `owner` (the handle of the C object that lent the memory), so the memory outlives the array.
    """

    __slots__ = ("owner", "__array_interface__")

    def __init__(self, owner, address: int, typestr: str, shape: tuple):
        self.owner = owner
        self.__array_interface__ = {
            "version": 3,
            "shape": shape,
            "typestr": typestr,
            "data": (address, True),  # True: read-only
            "strides": None,  # C order
        }


def _lent_array(owner, address: int, dtype: np.dtype, shape: tuple) -> np.ndarray:
    return np.asarray(_Lent(owner, address, dtype.str, tuple(shape)))


class _Handle:
    """Owns one C object (model, writer, runtime, graph or session) and frees it when garbage.

    `deps` are the handles this object needs alive (a graph needs its model and runtime, a session its
    graph): holding them here makes the C objects freed in a valid order whatever order Python drops
    the wrappers in. Methods bind the handle to a local (`h = self._h()`) for the whole C call, so an
    object is never freed while a call on it is running, even if another thread closes its wrapper
    meanwhile (a bare `self._h().ptr` argument would drop the last reference before the call starts).
    """

    __slots__ = ("ptr", "_free", "deps", "__weakref__")

    def __init__(self, ptr: int, free, deps=()):
        self.ptr = ptr
        self._free = free
        self.deps = tuple(deps)

    def __del__(self):
        ptr, self.ptr = self.ptr, None
        if ptr:
            self._free(ptr)


# ---- versions ------------------------------------------------------------------------------------


def version() -> str:
    """The version of the libmodelpack actually loaded, e.g. "0.1.0" (mpk_version_string)."""
    return _core.mpk_version_string().decode()


def abi_version() -> int:
    """The ABI version (SOVERSION) of the loaded libmodelpack (mpk_abi_version)."""
    return _core.mpk_abi_version()


def format_version() -> tuple:
    """(major, minor) of the newest container format the loaded library reads and writes."""
    major, minor = c_uint(), c_uint()
    _core.mpk_format_version(byref(major), byref(minor))
    return (major.value, minor.value)


def runtime_available() -> bool:
    """Whether libmodelpack_runtime was loaded (Runtime, Graph and Session need it)."""
    return _rt is not None


# ---- models --------------------------------------------------------------------------------------


def open(path, verify: str = "header", access: str = "map", *, threads: int = 0, max_header_bytes: int = 0,
         cache_bytes: int | None = None, max_decoded_tensor_bytes: int = 0, decode_threads: int = 0,
         trusted_keys=None) -> "Model":
    """Opens and validates a .mpk model (mpk_model_open).

    Args:
        path: the file.
        verify: "none" (structure only), "header" (+ header checksum and content id, the default) or
            "full" (+ every tensor's checksum).
        access: "map" (memory-map: tensor() views are zero-copy) or "read" (pread each tensor when
            first asked for).
        threads: threads for verify="full" (0 = 1).
        max_header_bytes, cache_bytes, max_decoded_tensor_bytes, decode_threads: as the fields of
            mpk_open_options (None / 0: the library's defaults).
        trusted_keys: public keys (32-byte bytes, or paths of .pub files); with any, the file must
            be signed by one of them (Error MPK_ERR_SIGNATURE otherwise; FORMAT.md 7.13), checked
            over preamble and header, and with verify="full" over every byte.

    Raises:
        Error: e.g. MPK_ERR_IO, MPK_ERR_BAD_MAGIC, MPK_ERR_TRUNCATED, MPK_ERR_CHECKSUM.
    """
    opts = _OpenOptions()
    _core.mpk_open_options_init(byref(opts), ctypes.sizeof(opts))  # the library's defaults
    opts.access = _choice(_ACCESS, access, "access")
    opts.verify = _choice(_VERIFY, verify, "verify")
    opts.threads = _uint(threads, "threads")
    opts.max_header_bytes = _uint(max_header_bytes, "max_header_bytes", 64)
    if cache_bytes is not None:
        opts.cache_bytes = _uint(cache_bytes, "cache_bytes", 64)
    opts.max_decoded_tensor_bytes = _uint(max_decoded_tensor_bytes, "max_decoded_tensor_bytes", 64)
    opts.decode_threads = _uint(decode_threads, "decode_threads")
    keys = _key_block(trusted_keys) if trusted_keys else None
    if keys is not None:
        opts.trusted_keys = ctypes.cast(keys, c_void_p)
        opts.trusted_key_count = len(keys) // 32
    out = c_void_p()
    _core.mpk_model_open(byref(out), _cpath(path), byref(opts))
    return Model(_Handle(out.value, _core.mpk_model_free), os.fspath(path))


class Model:
    """An open .mpk model (from :func:`open`). A context manager; thread-safe for reading.

    Tensors are addressed by name. ``len(model)``, ``name in model``, iteration (names in the
    model's order: byte-wise name order) and ``model[name]`` (same as :meth:`tensor`) work.

    Lifetime: :meth:`close` (or leaving the ``with`` block) makes this object unusable at once
    (every method then raises Error MPK_ERR_STATE), but the C model is freed only when the last
    view from :meth:`tensor` and the last :class:`Graph` on it are gone.
    """

    def __init__(self, handle: _Handle, path: str):
        self._handle = handle
        self.path = path

    # -- lifetime

    def close(self) -> None:
        """Closes the model (idempotent). Live tensor views stay valid (see the class docstring)."""
        self._handle = None

    @property
    def closed(self) -> bool:
        return self._handle is None

    def __enter__(self) -> "Model":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _h(self) -> _Handle:
        handle = self._handle  # one read: a concurrent close() cannot free it under this call
        if handle is None:
            raise Error(ERR_STATE, f"model {self.path!r} is closed")
        return handle

    def __repr__(self) -> str:
        if self._handle is None:
            return f"<modelpack.Model {self.path!r} (closed)>"
        return f"<modelpack.Model {self.path!r} {self.content_id} {len(self)} tensors>"

    # -- file-level facts

    @property
    def content_id(self) -> str:
        """The content id, "mpk1-" and 32 hex digits: names the model's content, not its encoding."""
        h = self._h()  # held until the call returns (see _Handle)
        return _core.mpk_model_content_id(h.ptr).decode()

    @property
    def format_version(self) -> tuple:
        """(major, minor) format version of the file."""
        major, minor = c_uint(), c_uint()
        h = self._h()  # held until the call returns (see _Handle)
        _core.mpk_model_format_version(h.ptr, byref(major), byref(minor))
        return (major.value, minor.value)

    @property
    def features(self) -> tuple:
        """(incompatible, compatible) feature bits of the file (MPK_FEATURE_*, MPK_COMPAT_FEATURE_*)."""
        inc, compat = c_uint64(), c_uint64()
        h = self._h()  # held until the call returns (see _Handle)
        _core.mpk_model_features(h.ptr, byref(inc), byref(compat))
        return (inc.value, compat.value)

    @property
    def file_size(self) -> int:
        h = self._h()  # held until the call returns (see _Handle)
        return _core.mpk_model_file_size(h.ptr)

    @property
    def alignment(self) -> int:
        """Alignment of the tensor data in the file (a power of two)."""
        h = self._h()  # held until the call returns (see _Handle)
        return _core.mpk_model_alignment(h.ptr)

    def verify(self, mode: str = "full", threads: int = 0) -> None:
        """Re-checks the model (mpk_model_verify): "none", "header" or "full" (every tensor's
        checksum; the message of a mismatch names the tensor). Raises Error (MPK_ERR_CHECKSUM ...)."""
        h = self._h()  # held until the call returns (see _Handle)
        _core.mpk_model_verify(h.ptr, _choice(_VERIFY, mode, "mode"), _uint(threads, "threads"))

    def verify_tensor(self, name: str) -> None:
        """Hashes one tensor's bytes against its checksum; Error MPK_ERR_CHECKSUM on a mismatch."""
        h = self._h()
        _core.mpk_model_verify_tensor(h.ptr, self._index(h, name))

    # -- tensors

    def __len__(self) -> int:
        h = self._h()  # held until the call returns (see _Handle)
        return _core.mpk_model_tensor_count(h.ptr)

    def _index(self, h: _Handle, name: str) -> int:
        out = c_size_t()
        _core.mpk_model_find_tensor(h.ptr, _cstr(name, "tensor name"), byref(out))
        return out.value

    def __contains__(self, name) -> bool:
        if not isinstance(name, str):
            return False
        try:
            self._index(self._h(), name)
        except Error as e:
            if e.code == ERR_NOT_FOUND:
                return False
            raise
        return True

    def _info(self, h: _Handle, index: int) -> _TensorInfo:
        info = _TensorInfo()
        info.struct_size = ctypes.sizeof(info)
        _core.mpk_model_tensor_info(h.ptr, index, byref(info))
        return info

    def tensor_names(self) -> list:
        """Every tensor's name, in the model's order (byte-wise name order)."""
        h = self._h()
        names = []
        for i in range(_core.mpk_model_tensor_count(h.ptr)):
            t = self._info(h, i)
            names.append(_lent_string(t.name, t.name_len).decode("utf-8"))
        return names

    def __iter__(self):
        return iter(self.tensor_names())

    def __getitem__(self, name: str) -> np.ndarray:
        return self.tensor(name)

    def info(self, name: str) -> dict:
        """What the header says about a tensor (mpk_model_tensor_info).

        Keys: name, index, dtype (modelpack's name: "f32", "bf16", ...), shape (tuple), numel,
        nbytes (decoded), offset, component (name), component_index, xxh3 (16 lowercase hex
        digits, as ``mpk inspect`` prints it), encoding ("raw" or "chunked"), stored_bytes (bytes in
        the file), chunk_size and chunk_count (compressed tensors; 0 when raw).
        """
        h = self._h()
        index = self._index(h, name)
        t = self._info(h, index)
        return {
            "name": _lent_string(t.name, t.name_len).decode("utf-8"),
            "index": index,
            "dtype": _dtype_name(t.dtype),
            "shape": tuple(t.shape[d] for d in range(t.ndim)),
            "numel": t.numel,
            "nbytes": t.nbytes,
            "offset": t.offset,
            "component": self._component_info(h, t.component)["name"],
            "component_index": t.component,
            "xxh3": f"{t.xxh3:016x}",
            "encoding": _ENCODING.get(t.encoding, f"unknown({t.encoding})"),
            "stored_bytes": t.stored_bytes,
            "chunk_size": t.chunk_size,
            "chunk_count": t.chunk_count,
        }

    @staticmethod
    def _layout(t: _TensorInfo) -> tuple:
        """(NumPy dtype, shape) of a tensor's bytes: its own dtype where NumPy has one; otherwise
        uint16 / uint8 words of the same shape for 2-byte / 1-byte elements (bf16, f8_*), and a flat
        uint8 array of the bytes for sub-byte and block-quantized dtypes (f6, f4, q4_0 ...)."""
        shape = tuple(t.shape[d] for d in range(t.ndim))
        dtype = _NUMPY_OF_DTYPE.get(t.dtype)
        if dtype is not None:
            return dtype, shape
        size = _core.mpk_dtype_size(t.dtype)
        if size == 2:
            return np.dtype("<u2"), shape
        if size == 1:
            return np.dtype("u1"), shape
        return np.dtype("u1"), (t.nbytes,)

    def tensor(self, name: str) -> np.ndarray:
        """A zero-copy, read-only NumPy view of a tensor's bytes (mpk_model_tensor_data).

        With access="map" and a raw tensor the view points into the file's mapping; with
        access="read" the bytes are read once and kept by the model; a compressed tensor is decoded
        once and kept until the model is freed (use :meth:`read` for bounded memory). The array's
        base holds the model's handle, so the memory stays valid as long as the array (or any view
        of it) lives, even after :meth:`close`. The bytes are not checksummed here: see
        :meth:`verify`. dtype: see :meth:`_layout` (bf16 comes back as uint16 words; ``info(name)
        ["dtype"]`` tells the stored dtype).
        """
        h = self._h()
        index = self._index(h, name)
        t = self._info(h, index)
        data, nbytes = c_void_p(), c_uint64()
        _core.mpk_model_tensor_data(h.ptr, index, byref(data), byref(nbytes))
        if nbytes.value != t.nbytes:  # a view of the wrong size would read past the lent bytes
            raise Error(22, f"tensor {name!r}: mpk_model_tensor_data lent {nbytes.value} bytes, "
                            f"mpk_model_tensor_info says {t.nbytes}")
        dtype, shape = self._layout(t)
        return _lent_array(h, data.value, dtype, shape)

    def read(self, name: str) -> np.ndarray:
        """A writable copy of a tensor (mpk_model_tensor_read), dtype as :meth:`tensor`. Memory is
        only the copy, even for a compressed tensor."""
        h = self._h()
        index = self._index(h, name)
        t = self._info(h, index)
        dtype, shape = self._layout(t)
        # dst may not be NULL even for an empty tensor: allocate at least one byte.
        buf = np.empty(max(t.nbytes, 1), dtype=np.uint8)
        _core.mpk_model_tensor_read(h.ptr, index, buf.ctypes.data, buf.nbytes)
        return buf[: t.nbytes].view(dtype).reshape(shape)

    def quant(self, name: str) -> dict | None:
        """How a tensor is quantized (mpk_model_tensor_quant): None for a plain tensor, else a dict
        with scheme ("int8-channel", "int8-group", "cast" or "block"), axis, group, scale (the
        name of the f32 scale tensor, or None) and source_dtype (a dtype name, or None)."""
        h = self._h()
        index = self._index(h, name)
        q = _QuantInfo()
        q.struct_size = ctypes.sizeof(q)
        q.scale_index = ctypes.c_size_t(-1).value  # SIZE_MAX, as MPK_QUANT_INFO_INIT
        _core.mpk_model_tensor_quant(h.ptr, index, byref(q))
        if q.scheme == 0:
            return None
        scale = None
        if q.scale_index != ctypes.c_size_t(-1).value:
            s = self._info(h, q.scale_index)
            scale = _lent_string(s.name, s.name_len).decode("utf-8")
        return {
            "scheme": _QUANT_SCHEME.get(q.scheme, f"unknown({q.scheme})"),
            "axis": q.axis,
            "group": q.group,
            "scale": scale,
            "source_dtype": _dtype_name(q.source_dtype) if q.source_dtype else None,
        }

    # -- components

    def _component_info(self, h: _Handle, index: int) -> dict:
        name, kind, tensors, nbytes = c_char_p(), c_char_p(), c_uint64(), c_uint64()
        _core.mpk_model_component_info(h.ptr, index, byref(name), byref(kind), byref(tensors), byref(nbytes))
        return {"name": name.value.decode("utf-8"), "kind": kind.value.decode("utf-8"),
                "tensors": tensors.value, "nbytes": nbytes.value}

    def components(self) -> list:
        """Every component: dicts with name, kind ("" if none), tensors (count) and nbytes."""
        h = self._h()
        return [self._component_info(h, i) for i in range(_core.mpk_model_component_count(h.ptr))]

    def component(self, name: str) -> dict:
        """One component by name (mpk_model_find_component); Error MPK_ERR_NOT_FOUND if absent."""
        h = self._h()
        out = c_size_t()
        _core.mpk_model_find_component(h.ptr, _cstr(name, "component name"), byref(out))
        return self._component_info(h, out.value)

    # -- metadata

    def metadata(self) -> dict:
        """Every metadata entry, key -> Python value, in key order.

        string -> str (bytes that are not UTF-8 are kept as surrogate escapes: ``v.encode("utf-8",
        "surrogateescape")`` gives them back); int64 -> int; float64 -> float; bool -> bool;
        bytes -> bytes; string[] / int64[] / float64[] / bool[] / bytes[] -> lists of those;
        typed -> a NumPy scalar of its dtype (e.g. np.uint32), typed[] -> a 1-D NumPy array of it
        (bf16 widened exactly to float32, bool from any nonzero byte); list and unknown ->
        :class:`UnsupportedValue` (the C ABI cannot read a list's items).
        """
        h = self._h()
        result = {}
        for i in range(_core.mpk_model_metadata_count(h.ptr)):
            key = c_char_p()
            _core.mpk_model_metadata_key(h.ptr, i, byref(key))
            result[key.value.decode("utf-8")] = self._meta_value(h, i)
        return result

    def metadata_value(self, key: str):
        """One metadata value, converted as :meth:`metadata` does (mpk_model_metadata_find);
        Error MPK_ERR_NOT_FOUND if the key is absent."""
        h = self._h()
        index = c_size_t()
        _core.mpk_model_metadata_find(h.ptr, _cstr(key, "metadata key"), byref(index))
        return self._meta_value(h, index.value)

    def metadata_types(self) -> dict:
        """key -> type name ("string", "int64[]", "typed", "list", ...), in key order."""
        h = self._h()
        result = {}
        for i in range(_core.mpk_model_metadata_count(h.ptr)):
            key = c_char_p()
            _core.mpk_model_metadata_key(h.ptr, i, byref(key))
            result[key.value.decode("utf-8")] = _core.mpk_meta_type_name(
                _core.mpk_model_metadata_type(h.ptr, i)).decode()
        return result

    def _meta_value(self, h: _Handle, i: int):
        m = h.ptr
        kind = _core.mpk_model_metadata_type(m, i)
        ptr, n = c_void_p(), c_size_t()
        if kind == _META_STRING:
            _core.mpk_model_metadata_string(m, i, byref(ptr), byref(n))
            return _lent_string(ptr.value, n.value).decode("utf-8", "surrogateescape")
        if kind == _META_INT64:
            v = c_int64()
            _core.mpk_model_metadata_int64(m, i, byref(v))
            return v.value
        if kind == _META_FLOAT64:
            v = c_double()
            _core.mpk_model_metadata_float64(m, i, byref(v))
            return v.value
        if kind == _META_BOOL:
            v = c_int()
            _core.mpk_model_metadata_bool(m, i, byref(v))
            return bool(v.value)
        if kind == _META_BYTES:
            _core.mpk_model_metadata_bytes(m, i, byref(ptr), byref(n))
            return _lent_string(ptr.value, n.value)
        if kind in (_META_STRING_ARRAY, _META_BYTES_ARRAY):
            _core.mpk_model_metadata_array_length(m, i, byref(n))
            get = (_core.mpk_model_metadata_string_item if kind == _META_STRING_ARRAY
                   else _core.mpk_model_metadata_bytes_item)
            items = []
            for k in range(n.value):
                item, length = c_void_p(), c_size_t()
                get(m, i, k, byref(item), byref(length))
                raw = _lent_string(item.value, length.value)
                items.append(raw.decode("utf-8", "surrogateescape") if kind == _META_STRING_ARRAY else raw)
            return items
        if kind in (_META_INT64_ARRAY, _META_FLOAT64_ARRAY, _META_BOOL_ARRAY):
            getter, dtype = {
                _META_INT64_ARRAY: (_core.mpk_model_metadata_int64_array, "<i8"),
                _META_FLOAT64_ARRAY: (_core.mpk_model_metadata_float64_array, "<f8"),
                _META_BOOL_ARRAY: (_core.mpk_model_metadata_bool_array, "u1"),
            }[kind]
            getter(m, i, byref(ptr), byref(n))
            values = np.frombuffer(_lent_string(ptr.value, n.value * np.dtype(dtype).itemsize), dtype=dtype)
            return [v != 0 for v in values.tolist()] if kind == _META_BOOL_ARRAY else values.tolist()
        if kind in (_META_TYPED, _META_TYPED_ARRAY):
            code = c_int()
            _core.mpk_model_metadata_typed(m, i, byref(code), byref(ptr), byref(n))
            # Elements are lent and not necessarily aligned: copy the bytes out first.
            raw = _lent_string(ptr.value, n.value * _core.mpk_dtype_size(code.value))
            values = _typed_values(code.value, raw)
            return values[0] if kind == _META_TYPED else values
        # MPK_META_LIST (no item getter in the C ABI) or a type newer than this binding.
        length = None
        if kind == _META_LIST:
            _core.mpk_model_metadata_array_length(m, i, byref(n))
            length = n.value
        return UnsupportedValue(_core.mpk_meta_type_name(kind).decode(), length)


def _typed_values(code: int, raw: bytes) -> np.ndarray:
    """The elements of a typed metadata value as a NumPy array (a copy)."""
    if code == _DTYPE_BF16:  # the high half of an f32: widening is exact
        return (np.frombuffer(raw, "<u2").astype(np.uint32) << 16).view(np.float32)
    if code == _DTYPE_BOOL:  # bytes are kept as written; any nonzero byte is true
        return np.frombuffer(raw, np.uint8) != 0
    dtype = _NUMPY_OF_DTYPE.get(code)
    if dtype is None:  # the header lists u8..u64, i8..i64, f16, bf16, f32, f64, bool only
        raise Error(ERR_BAD_DTYPE, f"typed metadata of dtype {_dtype_name(code)} is not readable")
    return np.frombuffer(raw, dtype).copy()


# ---- writing -------------------------------------------------------------------------------------


def _writer_options(*, alignment=0, codec="none", level=0, chunk_size=0, threads=0, fsync=True,
                    min_decode_gbps=0.0) -> _WriterOptions:
    opts = _WriterOptions()
    _core.mpk_writer_options_init(byref(opts), ctypes.sizeof(opts))
    opts.alignment = _uint(alignment, "alignment")
    opts.codec = _choice(_CODEC, codec, "codec")
    opts.level = _level(level)
    opts.chunk_size = _uint(chunk_size, "chunk_size")
    opts.threads = _uint(threads, "threads")
    opts.flags = 0 if fsync else 0x1  # MPK_WRITER_NO_FSYNC
    opts.min_decode_gbps = float(min_decode_gbps)
    return opts


def _level(level) -> int:
    if isinstance(level, bool) or not isinstance(level, (int, np.integer)):
        raise TypeError(f"level must be an int, not {type(level).__name__}")
    return int(level)  # the library checks the range (1..19, 0 = 3)


def _shape_array(shape) -> ctypes.Array:
    return (c_uint64 * max(len(shape), 1))(*shape)


def _little_endian(array: np.ndarray) -> np.ndarray:
    """The array C-contiguous and little-endian (a copy only when it is not already)."""
    if array.dtype.byteorder == ">":
        array = array.astype(array.dtype.newbyteorder("<"))
    # Not np.ascontiguousarray: it turns a 0-d array (a scalar tensor) into shape (1,).
    return array if array.flags.c_contiguous else array.copy(order="C")


class Writer:
    """Writes a new .mpk file (mpk_writer_*), atomically: nothing appears at `path` until
    :meth:`commit`. A context manager: commits when the block ends normally, discards the file when
    it raises. One thread at a time (calls are serialised by a lock).

    Writer options (keyword-only): alignment (0 = 64), codec ("none", "auto", "zstd", "float"),
    level (1..19, 0 = 3), chunk_size (0 = 1 MiB), threads (0 = one per core), fsync (True),
    min_decode_gbps (0 = none).
    """

    def __init__(self, path, **options):
        opts = _writer_options(**options)
        out = c_void_p()
        _core.mpk_writer_create(byref(out), _cpath(path), byref(opts))
        self._handle = _Handle(out.value, _core.mpk_writer_free)
        self._lock = threading.Lock()
        self.path = os.fspath(path)

    def _h(self) -> _Handle:
        handle = self._handle
        if handle is None:
            raise Error(ERR_STATE, f"writer of {self.path!r} is closed")
        return handle

    def __enter__(self) -> "Writer":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is None and self._handle is not None:
                self.commit()
        finally:
            self.close()

    def close(self) -> None:
        """Frees the writer; if it was not committed the temporary file is removed."""
        self._handle = None

    def add_component(self, name: str, kind: str) -> None:
        """Declares a component (tensors go to "weights" unless given another one)."""
        with self._lock:
            h = self._h()  # held until the call returns (see _Handle)
            _core.mpk_writer_add_component(h.ptr, _cstr(name, "component name"), _cstr(kind, "kind"))

    def add_tensor(self, name: str, array, dtype: str | None = None, component: str | None = None) -> None:
        """Adds a whole tensor from a NumPy array (f64 f32 f16 i8..i64 u8..u64 bool; stored
        little-endian, C order). `dtype` (a modelpack dtype name, e.g. "bf16") stores the array's
        bytes as that dtype instead: the array's byte size must then match the shape and dtype
        (MPK_ERR_SIZE_MISMATCH otherwise)."""
        array = _little_endian(np.asarray(array))
        code = _dtype_code(dtype) if dtype is not None else _numpy_dtype_code(array.dtype, name)
        shape = _shape_array(array.shape)
        comp = None if component is None else _cstr(component, "component name")
        with self._lock:
            h = self._h()  # held until the call returns (see _Handle)
            _core.mpk_writer_add_tensor(h.ptr, _cstr(name, "tensor name"), code, array.ndim, shape,
                                        array.ctypes.data, array.nbytes, comp)

    def begin_tensor(self, name: str, dtype, shape, component: str | None = None) -> None:
        """Starts a streamed tensor: then :meth:`write` its bytes in pieces, then
        :meth:`end_tensor`. dtype: a modelpack dtype name ("f32", "bf16", ...) or a NumPy dtype."""
        code = _dtype_code(dtype) if isinstance(dtype, str) else _numpy_dtype_code(np.dtype(dtype), name)
        shape = tuple(int(d) for d in shape)
        comp = None if component is None else _cstr(component, "component name")
        with self._lock:
            h = self._h()  # held until the call returns (see _Handle)
            _core.mpk_writer_begin_tensor(h.ptr, _cstr(name, "tensor name"), code, len(shape),
                                          _shape_array(shape), comp)

    def write(self, data) -> None:
        """Appends bytes to the streamed tensor: a NumPy array (its little-endian C-order bytes) or a
        bytes-like object."""
        if isinstance(data, np.ndarray):
            array = _little_endian(data)
        else:
            array = np.frombuffer(memoryview(data).cast("B"), dtype=np.uint8)
        with self._lock:
            h = self._h()  # held until the call returns (see _Handle)
            _core.mpk_writer_write(h.ptr, array.ctypes.data if array.nbytes else None, array.nbytes)

    def end_tensor(self) -> None:
        """Ends the streamed tensor (MPK_ERR_SIZE_MISMATCH unless exactly its bytes were written)."""
        with self._lock:
            h = self._h()  # held until the call returns (see _Handle)
            _core.mpk_writer_end_tensor(h.ptr)

    def set(self, key: str, value) -> None:
        """Sets a metadata entry (the last value set for a key wins). Types:

        str -> string, bool -> bool, int -> int64, float -> float64, bytes -> bytes;
        a non-empty list of str / bool / int / float / bytes (all of one type) -> that array;
        a NumPy scalar (np.uint32(7), np.float32(.5), np.bool_ ...) -> typed (keeps its type);
        a 1-D NumPy array -> typed array.
        A str with a NUL character cannot pass through the C ABI: ValueError.
        """
        k = _cstr(key, "metadata key")
        with self._lock:
            h = self._h()  # held until the call returns (see _Handle)
            _set_metadata(h.ptr, k, key, value)

    def commit(self) -> None:
        """Writes the header, syncs and renames the file into place; the writer is closed after it,
        whether it succeeded or not."""
        try:
            with self._lock:
                h = self._h()  # held until the call returns (see _Handle)
                _core.mpk_writer_commit(h.ptr)
        finally:
            self.close()


def _numpy_dtype_code(dtype: np.dtype, name: str) -> int:
    code = _DTYPE_OF_NUMPY.get((dtype.kind, dtype.itemsize))
    if code is None or dtype.kind == "c":  # the C writer refuses c64 (and dtypes past 15)
        raise TypeError(f"tensor {name!r}: NumPy dtype {dtype} has no modelpack equivalent the writer takes "
                        "(f64 f32 f16 i8..i64 u8..u64 bool; other dtypes: pass dtype=<modelpack name>)")
    return code


def _meta_text(value: str, key: str) -> bytes:
    raw = value.encode("utf-8", "surrogateescape")  # the inverse of how metadata() decodes
    if b"\0" in raw:
        raise ValueError(f"metadata {key!r}: a string with a NUL character cannot pass through the C ABI")
    return raw


def _set_metadata(w: int, k: bytes, key: str, value) -> None:
    """One mpk_writer_set_* call for a Python value (see Writer.set)."""
    if isinstance(value, np.ndarray):
        if value.ndim != 1:
            raise ValueError(f"metadata {key!r}: a typed array must be 1-D, not {value.ndim}-D")
        array = _little_endian(value)
        code = _numpy_dtype_code(array.dtype, key)
        if array.dtype.kind == "b":
            array = array.view(np.uint8)
        _core.mpk_writer_set_typed_array(w, k, code, array.ctypes.data if len(array) else None, len(array))
    elif isinstance(value, np.generic) and not isinstance(value, (str, bytes)):
        # Before the Python types (np.float64 is a float); np.str_ / np.bytes_ are text and bytes.
        array = _little_endian(np.asarray(value).reshape(1))
        _core.mpk_writer_set_typed(w, k, _numpy_dtype_code(array.dtype, key), array.ctypes.data)
    elif isinstance(value, bool):  # before int: bool is an int
        _core.mpk_writer_set_bool(w, k, int(value))
    elif isinstance(value, int):
        if not -(1 << 63) <= value < (1 << 63):
            raise OverflowError(f"metadata {key!r}: {value} does not fit int64 (use e.g. np.uint64 for a typed u64)")
        _core.mpk_writer_set_int64(w, k, value)
    elif isinstance(value, float):
        _core.mpk_writer_set_float64(w, k, value)
    elif isinstance(value, str):
        _core.mpk_writer_set_string(w, k, _meta_text(value, key))
    elif isinstance(value, (bytes, bytearray, memoryview)):
        raw = bytes(value)
        _core.mpk_writer_set_bytes(w, k, raw, len(raw))
    elif isinstance(value, (list, tuple)):
        _set_metadata_list(w, k, key, list(value))
    else:
        raise TypeError(f"metadata {key!r}: values of type {type(value).__name__} cannot be stored")


def _set_metadata_list(w: int, k: bytes, key: str, items: list) -> None:
    if not items:  # no element to tell the array's type by
        raise TypeError(f"metadata {key!r}: an empty list has no type; use e.g. np.array([], np.int64)")
    # bool before int (bool is an int); the types must not mix: [1, 2.5] is refused, not converted.
    for kind in (bool, str, bytes, int, float):
        if isinstance(items[0], kind):
            break
    else:
        raise TypeError(f"metadata {key!r}: lists of {type(items[0]).__name__} cannot be stored")
    def same(x):
        # NumPy numbers (np.float64 is a float) belong in a NumPy array: a typed array.
        numpy_number = isinstance(x, np.generic) and not isinstance(x, (str, bytes))
        return isinstance(x, kind) and (kind is bool or not isinstance(x, bool)) and not numpy_number
    if not all(same(x) for x in items):
        raise TypeError(f"metadata {key!r}: a list must hold Python values of one type ({kind.__name__}); "
                        "for NumPy numbers pass a NumPy array (a typed array)")
    n = len(items)
    if kind is str:
        raws = [_meta_text(s, key) for s in items]
        _core.mpk_writer_set_string_array(w, k, (c_char_p * n)(*raws), n)
    elif kind is bytes:
        bufs = [ctypes.create_string_buffer(b, len(b)) for b in items]  # kept alive for the call
        ptrs = (c_void_p * n)(*[ctypes.addressof(b) for b in bufs])
        lens = (c_size_t * n)(*[len(b) for b in items])
        _core.mpk_writer_set_bytes_array(w, k, ptrs, lens, n)
    elif kind is bool:
        _core.mpk_writer_set_bool_array(w, k, (c_uint8 * n)(*[1 if b else 0 for b in items]), n)
    elif kind is int:
        if not all(-(1 << 63) <= v < (1 << 63) for v in items):
            raise OverflowError(f"metadata {key!r}: an item does not fit int64")
        _core.mpk_writer_set_int64_array(w, k, (c_int64 * n)(*items), n)
    else:
        _core.mpk_writer_set_float64_array(w, k, (c_double * n)(*items), n)


def write(path, tensors: dict, metadata: dict | None = None, **options) -> None:
    """Writes a new model: `tensors` maps name -> NumPy array (see Writer.add_tensor), `metadata`
    maps key -> value (see Writer.set). Options are the Writer's (alignment, codec, level, ...).
    Atomic: on any error nothing appears at `path`."""
    with Writer(path, **options) as w:
        for name, array in tensors.items():
            w.add_tensor(name, array)
        for key, value in (metadata or {}).items():
            w.set(key, value)


# ---- whole-file operations -----------------------------------------------------------------------


def convert(src, dst, *, src_format: str = "auto", dst_format: str = "auto", alignment: int = 0,
            fsync: bool = True, npz_deflate: bool = False, max_shard_bytes: int = 0, threads: int = 0,
            codec: str = "none", level: int = 0) -> None:
    """Converts between .mpk and safetensors / GGUF / .npz / .npy (mpk_convert), atomically.

    Formats come from the extensions unless given ("mpk", "safetensors", "gguf", "npy", "npz").
    .mpk output: alignment (0 = 64), fsync, codec ("none", "auto", "zstd", "float") and level.
    .npz output: npz_deflate (as np.savez_compressed). Sharded safetensors output (dst ending in
    .json): max_shard_bytes. safetensors input: threads (0 = automatic).
    """
    opts = _ConvertOptions()
    _core.mpk_convert_options_init(byref(opts), ctypes.sizeof(opts))
    opts.from_ = _choice(_FILE_FORMAT, src_format, "src_format")
    opts.to = _choice(_FILE_FORMAT, dst_format, "dst_format")
    opts.alignment = _uint(alignment, "alignment")
    opts.flags = 0 if fsync else 0x1  # MPK_WRITER_NO_FSYNC
    opts.npz_deflate = 1 if npz_deflate else 0
    opts.max_shard_bytes = _uint(max_shard_bytes, "max_shard_bytes", 64)
    opts.threads = _uint(threads, "threads")
    opts.codec = _choice(_CODEC, codec, "codec")
    opts.level = _level(level)
    _core.mpk_convert(_cpath(src), _cpath(dst), byref(opts))


def compress(src, dst, codec: str = "auto", level: int = 3, *, chunk_size: int = 0, threads: int = 0,
             alignment: int = 0, fsync: bool = True, min_decode_gbps: float = 0.0) -> None:
    """Writes the model at `src` again at `dst` with its tensors compressed (mpk_rewrite).
    codec: "auto", "zstd" or "float" ("none" is :func:`decompress`). The content id, metadata and
    every tensor are kept; each tensor is checked against its checksum while copied."""
    opts = _writer_options(alignment=alignment, codec=codec, level=level, chunk_size=chunk_size,
                           threads=threads, fsync=fsync, min_decode_gbps=min_decode_gbps)
    _core.mpk_rewrite(_cpath(src), _cpath(dst), byref(opts))


def decompress(src, dst, *, alignment: int = 0, fsync: bool = True) -> None:
    """Writes the model at `src` again at `dst` with every tensor stored raw (mappable, zero-copy)."""
    opts = _writer_options(alignment=alignment, codec="none", fsync=fsync)
    _core.mpk_rewrite(_cpath(src), _cpath(dst), byref(opts))


def quantize(src, dst, to: str = "int8", include: str | None = None, exclude: str | None = None, *,
             embeddings: bool = False, threads: int = 0, fsync: bool = True) -> list:
    """Writes `src` with its selected tensors quantized at `dst` (mpk_quantize), atomically.

    to: "int8" (per output channel), "int8-g32", "int8-g64", "int8-g128" (per group of the last
    dimension), "f16" (alias "fp16") or "bf16". include / exclude: ECMAScript regexes on tensor
    names (default: every float tensor of rank >= 2 but embeddings; embeddings=True adds those).
    int8 tensors get an f32 scale tensor "<name>.scale".

    Returns the report: one dict per quantized tensor, in file order (name, from, to, numel,
    max_abs_error, rmse, snr_db).
    """
    report, failures = [], []

    def on_tensor(_user, t):  # called from the calling thread, during mpk_quantize
        try:
            report.append(_quantize_report(t.contents))
        except BaseException as e:  # ctypes would print and drop it: keep it for after the call
            failures.append(e)

    callback = _ON_TENSOR(on_tensor)  # kept referenced until mpk_quantize returns
    opts = _QuantizeOptions()
    _core.mpk_quantize_options_init(byref(opts), ctypes.sizeof(opts))
    opts.target = _choice(_QUANT_TARGET, to, "to")
    opts.flags = (0 if fsync else 0x1) | (0x2 if embeddings else 0)  # NO_FSYNC, EMBEDDINGS
    opts.threads = _uint(threads, "threads")
    opts.include = None if include is None else _cstr(include, "include")
    opts.exclude = None if exclude is None else _cstr(exclude, "exclude")
    opts.on_tensor = callback
    _core.mpk_quantize(_cpath(src), _cpath(dst), byref(opts))
    if failures:
        raise failures[0]
    return report


def _quantize_report(r: _QuantizeTensor) -> dict:
    """One mpk_quantize_tensor (lent for the callback's duration) as a dict."""
    return {
        "name": r.name.decode("utf-8"),
        "from": _dtype_name(r.from_),
        "to": _dtype_name(r.to),
        "numel": r.numel,
        "max_abs_error": r.max_abs_error,
        "rmse": r.rmse,
        "snr_db": r.snr_db,
    }


def _patch_options(flags: int, level: int = 0, result_level: int = 0, threads: int = 0) -> _PatchOptions:
    opts = _PatchOptions()
    _core.mpk_patch_options_init(byref(opts), ctypes.sizeof(opts))
    opts.flags = flags
    opts.level = _level(level)
    opts.result_level = _level(result_level)
    opts.threads = _uint(threads, "threads")
    return opts


def diff(base, new, patch, two_way: bool = False, *, level: int = 0, result_level: int = 0,
         threads: int = 0, fsync: bool = True, low_rank: bool = True) -> None:
    """Writes at `patch` a delta patch turning the model `base` into the model `new` (mpk_diff).
    two_way: also store what the patch removes, replaces or cuts short, and use only deltas that
    reverse, so it applies in reverse too (one-way patches at level >= 6 may order float deltas by
    the base's exponents, which cannot be undone). Tensors that gained or lost rows at their end (a
    resized vocabulary) are deltas too. low_rank=False: never take an f32 matrix's difference against
    the base plus a fitted low-rank product (tried at level >= 6 on one-way patches; not reversible)."""
    flags = (0x1 if two_way else 0) | (0 if fsync else 0x2) | (0 if low_rank else 0x8)
    # MPK_PATCH_TWO_WAY, MPK_PATCH_NO_FSYNC, MPK_PATCH_NO_LOW_RANK
    opts = _patch_options(flags, level, result_level, threads)
    _core.mpk_diff(_cpath(base), _cpath(new), _cpath(patch), byref(opts))


def patch(base, patches, out, reverse: bool = False, *, threads: int = 0, fsync: bool = True) -> None:
    """Applies a chain of patches (a list of paths, oldest first) to `base`, writing `out`
    (mpk_patch), atomically. reverse: `base` is the chain's result; rebuild its start. Raises
    Error MPK_ERR_WRONG_BASE if a patch does not start from the model it is given."""
    if isinstance(patches, (str, bytes, os.PathLike)):
        raise TypeError("patches must be a list of paths, not a single path")
    paths = [_cpath(p) for p in patches]
    flags = (0x4 if reverse else 0) | (0 if fsync else 0x2)  # MPK_PATCH_REVERSE, MPK_PATCH_NO_FSYNC
    opts = _patch_options(flags, threads=threads)
    _core.mpk_patch(_cpath(base), (c_char_p * max(len(paths), 1))(*paths), len(paths), _cpath(out), byref(opts))


# ---- signatures (FORMAT.md 7.13) ------------------------------------------------------------------

def keygen(path, overwrite: bool = False) -> None:
    """Writes a new Ed25519 key pair: `path` (the secret key, mode 0600) and `path`.pub (mpk_keygen)."""
    _core.mpk_keygen(_cpath(path), 1 if overwrite else 0)


def public_key(path) -> bytes:
    """The 32-byte public key in a .pub file (mpk_public_key_load)."""
    buf = (ctypes.c_uint8 * 32)()
    _core.mpk_public_key_load(_cpath(path), buf)
    return bytes(buf)


def _key_block(keys):
    if isinstance(keys, (str, bytes, os.PathLike)) and not (isinstance(keys, bytes) and len(keys) == 32):
        keys = [keys]
    block = b"".join(k if isinstance(k, bytes) and len(k) == 32 else public_key(k) for k in keys)
    return ctypes.create_string_buffer(block, len(block))


def sign(path, key, out=None, *, fsync: bool = True) -> None:
    """Signs the model at `path` with the secret key file `key` (mpk_sign): in place, or a signed copy
    at `out` (atomically). The model is checked completely first."""
    _core.mpk_sign(_cpath(path), _cpath(key), _cpath(out) if out is not None else None, 0 if fsync else 1)


def verify_signature(path, trusted_keys, full: bool = True, threads: int = 0) -> None:
    """Requires a signature by one of `trusted_keys` (32-byte keys or .pub paths) and checks it, over
    every byte with full=True (mpk_verify_signature). Raises Error MPK_ERR_SIGNATURE."""
    keys = _key_block(trusted_keys)
    _core.mpk_verify_signature(_cpath(path), ctypes.cast(keys, POINTER(ctypes.c_uint8)), len(keys) // 32,
                               2 if full else 1, _uint(threads, "threads"))


# ---- running (libmodelpack_runtime) --------------------------------------------------------------


def _need_runtime():
    if _rt is None:
        raise RuntimeUnavailable(f"modelpack: the runtime is not available: {_runtime_load_error}")
    return _rt


def _as_input(value, dtype: np.dtype, what: str) -> np.ndarray:
    """An input as a C-contiguous little-endian array of `dtype`. NumPy arrays of another dtype
    are converted only when NumPy calls that cast safe (int32 -> int64, f16 -> f32); float64 -> f32
    or float -> int64 are refused (TypeError): cast explicitly. Lists and scalars take `dtype`."""
    if not isinstance(value, (np.ndarray, np.generic)):
        value = np.asarray(value, dtype=dtype)
    if value.dtype != dtype:
        if not np.can_cast(value.dtype, dtype, casting="safe"):
            raise TypeError(f"{what}: {value.dtype} cannot be converted safely to {dtype}; cast it explicitly")
        value = value.astype(dtype)
    return _little_endian(np.asarray(value))


class Runtime:
    """A kernel context (mpk_runtime): oneDNN's engine and a cache of packed weights (LRU, at most
    `cache_budget_bytes`; 0 packs nothing). Any number of threads may use one Runtime."""

    def __init__(self, cache_budget_bytes: int = 1 << 30):
        rt = _need_runtime()
        opts = _RuntimeOptions()
        rt.mpk_runtime_options_init(byref(opts), ctypes.sizeof(opts))
        opts.cache_budget_bytes = _uint(cache_budget_bytes, "cache_budget_bytes", 64)
        out = c_void_p()
        rt.mpk_runtime_create(byref(out), byref(opts))
        self._handle = _Handle(out.value, rt.mpk_runtime_free)

    def _h(self) -> _Handle:
        handle = self._handle
        if handle is None:
            raise Error(ERR_STATE, "runtime is closed")
        return handle

    def close(self) -> None:
        """Drops this object's hold; the C runtime is freed once no Graph needs it."""
        self._handle = None

    def __enter__(self) -> "Runtime":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def stats(self) -> dict:
        """The packed-weight cache's counters (mpk_runtime_stats_get)."""
        s = _RuntimeStats()
        s.struct_size = ctypes.sizeof(s)
        h = self._h()  # held until the call returns (see _Handle)
        _rt.mpk_runtime_stats_get(h.ptr, byref(s))
        return {f: getattr(s, f) for f, _ in _RuntimeStats._fields_ if f not in ("struct_size", "reserved")}

    def clear_cache(self) -> None:
        """Drops every cached packed weight."""
        h = self._h()  # held until the call returns (see _Handle)
        _rt.mpk_runtime_clear_cache(h.ptr)

    def save_packed(self, path) -> int:
        """Writes the packed weights this runtime holds for model tensors to `path` (atomically): a
        later process skips oneDNN's reorder with :meth:`load_packed` (mpk_runtime_save_packed).
        Returns the number of weights written."""
        n = c_uint64()
        h = self._h()  # held until the call returns (see _Handle)
        _rt.mpk_runtime_save_packed(h.ptr, os.fsencode(path), byref(n))
        return n.value

    def load_packed(self, path, trusted_keys=None, threads: int = 0) -> int:
        """Offers a packed-weights file's weights to this runtime: the same weights packed to the
        same layout are used in place, checked against their checksums on first use
        (mpk_runtime_load_packed). With trusted_keys (32-byte keys or .pub paths) the file must be
        signed by one of them, checked over every byte on `threads` threads before anything is
        offered (mpk_runtime_load_packed_signed; Error MPK_ERR_SIGNATURE). Raises Error (e.g.
        ERR_UNSUPPORTED_FEATURE: written by another oneDNN or for another CPU). Returns the number
        of weights offered."""
        n = c_uint64()
        h = self._h()  # held until the call returns (see _Handle)
        if trusted_keys:
            keys = _key_block(trusted_keys)
            _rt.mpk_runtime_load_packed_signed(h.ptr, os.fsencode(path), ctypes.cast(keys, POINTER(ctypes.c_uint8)),
                                               len(keys) // 32, _uint(threads, "threads"), byref(n))
        else:
            _rt.mpk_runtime_load_packed(h.ptr, os.fsencode(path), byref(n))
        return n.value

    def linear(self, model: Model, weight: str, x, bias=None, threads: int = 0) -> np.ndarray:
        """y = x . W^T + bias with W = tensor `weight` stored [n, k] (nn.Linear) (mpk_run_linear).
        x: [m, k] f32; bias: [n] f32 or None. Returns y [m, n] f32."""
        return self._run(_rt.mpk_run_linear, 0, model, weight, x, bias, threads)

    def matmul(self, model: Model, weight: str, x, bias=None, threads: int = 0) -> np.ndarray:
        """y = x . W + bias with W stored [k, n] (mpk_run_matmul); otherwise as :meth:`linear`."""
        return self._run(_rt.mpk_run_matmul, 1, model, weight, x, bias, threads)

    def _run(self, fn, n_axis: int, model: Model, weight: str, x, bias, threads: int) -> np.ndarray:
        rh, mh = self._h(), model._h()
        index = model._index(mh, weight)
        shape = model.info(weight)["shape"]
        # The C call takes no length for y or bias: they are sized from W here, so W must be 2-D.
        if len(shape) != 2:
            raise Error(ERR_BAD_SHAPE, f"weight {weight!r} has shape {list(shape)}, not 2-D")
        n = shape[n_axis]
        x = _as_input(x, np.dtype("<f4"), "x")
        if x.ndim != 2:
            raise Error(ERR_BAD_SHAPE, f"x has shape {list(x.shape)}, not [m, k]")
        m, k = x.shape
        if bias is not None:
            bias = _as_input(bias, np.dtype("<f4"), "bias")
            if bias.shape != (n,):
                raise Error(ERR_BAD_SHAPE, f"bias has shape {list(bias.shape)}, not [{n}]")
        y = np.empty((m, n), dtype=np.float32)
        opts = _RunOptions(ctypes.sizeof(_RunOptions), _uint(threads, "threads"))
        fn(rh.ptr, mh.ptr, index, x.ctypes.data if x.size else None, m, k, k,
           None if bias is None else bias.ctypes.data, y.ctypes.data if y.size else None, n, byref(opts))
        return y


class Graph:
    """A graph bound to a model and a runtime (mpk_graph_load), validated; immutable, so any number
    of Sessions may run it at once. arch: None for the model's own graph, "mlp" or "gpt2" for a
    template built from the model's tensors; config: the template's JSON config, as a dict (dumped
    with json) or a JSON string (gpt2 needs Hugging Face's config.json).

    Attributes: ``inputs`` (names), ``input_dtypes`` (name -> "f32" / "i64"), ``outputs`` (names).
    The Graph keeps its Model and Runtime alive.
    """

    def __init__(self, runtime: Runtime, model: Model, arch: str | None = None, config=None):
        rt = _need_runtime()
        rh, mh = runtime._h(), model._h()
        if config is not None and not isinstance(config, str):
            config = _json.dumps(config)
        out = c_void_p()
        rt.mpk_graph_load(rh.ptr, mh.ptr, None if arch is None else _cstr(arch, "arch"),
                          None if config is None else _cstr(config, "config"), byref(out))
        self._handle = _Handle(out.value, rt.mpk_graph_free, deps=(rh, mh))
        g = out.value
        self.inputs = [rt.mpk_graph_input_name(g, i).decode("utf-8") for i in range(rt.mpk_graph_input_count(g))]
        self.input_dtypes = {name: _dtype_name(rt.mpk_graph_input_dtype(g, i)) for i, name in enumerate(self.inputs)}
        self.outputs = [rt.mpk_graph_output_name(g, i).decode("utf-8") for i in range(rt.mpk_graph_output_count(g))]

    def _h(self) -> _Handle:
        handle = self._handle
        if handle is None:
            raise Error(ERR_STATE, "graph is closed")
        return handle

    def close(self) -> None:
        """Drops this object's hold; the C graph is freed once no Session needs it."""
        self._handle = None

    def __enter__(self) -> "Graph":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<modelpack.Graph inputs={self.inputs} outputs={self.outputs}>"


class Session:
    """One user's state for running a Graph (mpk_session_*): value buffers and KV caches.

    threads: kernel threads per call (0 = the OpenMP default); profile: time every node. A Session
    is for one thread at a time (calls on it are serialised by a lock); use one Session per thread.
    It keeps its Graph alive.
    """

    def __init__(self, graph: Graph, threads: int = 0, profile: bool = False):
        rt = _need_runtime()
        gh = graph._h()
        opts = _SessionOptions(ctypes.sizeof(_SessionOptions), _uint(threads, "threads"), 1 if profile else 0, 0)
        out = c_void_p()
        rt.mpk_session_create(gh.ptr, byref(opts), byref(out))
        self._handle = _Handle(out.value, rt.mpk_session_free, deps=(gh,))
        self.graph = graph
        self.outputs = list(graph.outputs)  # what run() returns (select_outputs)
        self._lock = threading.Lock()

    def select_outputs(self, names=None) -> None:
        """Which graph outputs later runs compute and return, in this order (None or []: all, the
        default). Nodes none of them depends on are skipped (attention nodes always run, so the KV
        caches stay in step): ``select_outputs(["next_logits"])`` on a gpt2 graph projects only the
        last position. An unknown name raises Error (MPK_ERR_NOT_FOUND) and changes nothing."""
        names = list(names or [])
        raw = [_cstr(n, "output name") for n in names]
        arr = (c_char_p * max(len(raw), 1))(*raw)
        with self._lock:
            h = self._h()
            _rt.mpk_session_select_outputs(h.ptr, arr, len(raw))
            self.outputs = names or list(self.graph.outputs)

    def _h(self) -> _Handle:
        handle = self._handle
        if handle is None:
            raise Error(ERR_STATE, "session is closed")
        return handle

    def close(self) -> None:
        self._handle = None

    def __enter__(self) -> "Session":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def run(self, inputs: dict | None = None, /, **kwargs) -> list:
        """Runs the graph: ``run(x=array)`` or ``run({"x": array})``. Each graph input must be given
        exactly once (the library reports a missing or unknown one: MPK_ERR_NOT_FOUND; a wrong shape:
        MPK_ERR_BAD_SHAPE). Inputs are converted to the graph input's dtype only when the cast is
        safe (see _as_input). Returns copies of the outputs, in ``graph.outputs`` order (or the
        order chosen with :meth:`select_outputs`), as NumPy arrays (float32 or int64)."""
        given = dict(inputs or {})
        for name in kwargs:
            if name in given:
                raise TypeError(f"input {name!r} given twice")
        given.update(kwargs)
        h = self._h()
        arrays, names, shapes = [], [], []
        for name, value in given.items():
            declared = self.graph.input_dtypes.get(name)
            if declared is None:
                # Not a graph input: handed over all the same, for the library to report it
                # (MPK_ERR_NOT_FOUND, with its message); its values are never used.
                value = np.asarray(value)
                array = value.astype("<i8" if value.dtype.kind in "iub" else "<f4", order="C")
            else:
                dtype = np.dtype("<f4") if declared == "f32" else np.dtype("<i8")
                array = _as_input(value, dtype, f"input {name!r}")
            arrays.append(array)
            names.append(_cstr(name, "input name"))
            shapes.append((c_int64 * max(array.ndim, 1))(*array.shape))
        args = (_TensorArg * max(len(arrays), 1))()
        for i, array in enumerate(arrays):
            args[i].name = names[i]
            args[i].dtype = _DTYPE_F32 if array.dtype == np.float32 else _DTYPE_I64
            args[i].ndim = array.ndim
            args[i].shape = shapes[i]
            args[i].data = array.ctypes.data if array.size else None
        with self._lock:  # the outputs are lent until the next run: copy them under the lock
            _rt.mpk_session_run(h.ptr, args, len(arrays))
            return [self._output(h, i) for i in range(len(self.outputs))]

    @staticmethod
    def _output(h: _Handle, index: int) -> np.ndarray:
        dtype, ndim, shape, data = c_int(), c_uint32(), POINTER(c_int64)(), c_void_p()
        _rt.mpk_session_output(h.ptr, index, byref(dtype), byref(ndim), byref(shape), byref(data))
        if dtype.value not in (_DTYPE_F32, _DTYPE_I64):  # runtime.h promises only these two
            raise Error(ERR_BAD_DTYPE, f"output {index} has dtype {_dtype_name(dtype.value)}")
        dims = tuple(shape[d] for d in range(ndim.value))
        np_dtype = np.dtype("<f4") if dtype.value == _DTYPE_F32 else np.dtype("<i8")
        if 0 in dims:
            return np.empty(dims, dtype=np_dtype)
        return np.array(_lent_array(h, data.value, np_dtype, dims), copy=True)

    def reset(self) -> None:
        """Forgets the KV caches (a new sequence) and the outputs."""
        with self._lock:
            h = self._h()  # held until the call returns (see _Handle)
            _rt.mpk_session_reset(h.ptr)

    @property
    def cached_tokens(self) -> int:
        """Tokens held by the KV caches (0 for graphs without attention)."""
        with self._lock:
            h = self._h()  # held until the call returns (see _Handle)
            return _rt.mpk_session_cached_tokens(h.ptr)

    def profile(self) -> list:
        """Per node, in graph order: (name, op, calls, seconds); zeros unless profile=True."""
        h = self._h()
        rows = []
        with self._lock:
            # The C ABI has no node count: ask for nodes until the index is out of range. The first
            # index that fails must be that one (MPK_ERR_INVALID_ARGUMENT); any other error is real.
            index = 0
            while True:
                name, op, calls, seconds = c_char_p(), c_char_p(), c_uint64(), c_double()
                try:
                    _rt.mpk_session_profile(h.ptr, index, byref(name), byref(op), byref(calls), byref(seconds))
                except Error as e:
                    # The handle and every out-pointer are valid, so INVALID_ARGUMENT can only be
                    # the index past the last node.
                    if e.code == ERR_INVALID_ARGUMENT:
                        break
                    raise
                rows.append((name.value.decode("utf-8"), op.value.decode("utf-8"), calls.value, seconds.value))
                index += 1
        return rows


def run(model_path, inputs: dict, arch: str | None = None, config=None, threads: int = 0) -> list:
    """One-shot: opens `model_path`, builds its graph (or the `arch` template) and runs it once on
    `inputs` (a dict name -> array). Returns the outputs as :meth:`Session.run` does."""
    with open(model_path) as model:
        runtime = Runtime()
        graph = Graph(runtime, model, arch=arch, config=config)
        return Session(graph, threads=threads).run(inputs)
