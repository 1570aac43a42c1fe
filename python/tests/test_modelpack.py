"""Tests of the modelpack Python binding against the real libraries (no mocks).

Run from the repository root:
    MPK_LIBRARY_DIR=/path/to/libs python3 -m pytest -q python/tests
"""

import ctypes
import gc
import json
import os
import pickle
import struct
import subprocess
import sys
import threading
import weakref

import numpy as np
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import modelpack  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
needs_runtime = pytest.mark.skipif(not modelpack.runtime_available(), reason="libmodelpack_runtime not loaded")

# Every dtype write() takes, with values that use the type's range.
ALL_DTYPES = {
    "t_f64": np.array([[1.5, -2.25], [np.pi, 1e300]], dtype=np.float64),
    "t_f32": np.arange(12, dtype=np.float32).reshape(3, 4) / 7,
    "t_f16": np.array([0.5, -65504, 1e-4], dtype=np.float16),
    "t_i8": np.array([-128, 0, 127], dtype=np.int8),
    "t_i16": np.array([-32768, 32767], dtype=np.int16),
    "t_i32": np.array([[-(2**31), 2**31 - 1]], dtype=np.int32),
    "t_i64": np.array([-(2**63), 2**63 - 1, 0], dtype=np.int64),
    "t_u8": np.arange(256, dtype=np.uint8).reshape(16, 16),
    "t_u16": np.array([0, 65535], dtype=np.uint16),
    "t_u32": np.array([2**32 - 1], dtype=np.uint32),
    "t_u64": np.array([2**64 - 1, 1], dtype=np.uint64),
    "t_bool": np.array([[True, False, True]]),
    "t_scalar": np.array(3.25, dtype=np.float32),
    "t_empty": np.zeros((0, 3), dtype=np.float32),
}


def make_mlp(tmp_path, name="mlp.mpk", seed=0, d_in=4, d_hidden=8, d_out=3):
    """A 2-layer MLP in PyTorch's layout (weights [out, in]); returns (path, weights)."""
    rng = np.random.default_rng(seed)
    w = {
        "fc1.weight": rng.standard_normal((d_hidden, d_in)).astype(np.float32),
        "fc1.bias": rng.standard_normal(d_hidden).astype(np.float32),
        "fc2.weight": rng.standard_normal((d_out, d_hidden)).astype(np.float32),
        "fc2.bias": rng.standard_normal(d_out).astype(np.float32),
    }
    path = tmp_path / name
    modelpack.write(path, w)
    return path, w


def mlp_reference(w, x, activation=lambda h: np.maximum(h, 0)):
    """The MLP in float64 NumPy."""
    x = x.astype(np.float64)
    h = activation(x @ w["fc1.weight"].T.astype(np.float64) + w["fc1.bias"])
    return h @ w["fc2.weight"].T.astype(np.float64) + w["fc2.bias"]


def mapped_ranges(path):
    """(start, end) of every mapping of `path` in this process (Linux)."""
    real = os.path.realpath(path)
    ranges = []
    with open("/proc/self/maps") as f:
        for line in f:
            parts = line.split(None, 5)
            if len(parts) == 6 and parts[5].strip() == real:
                start, end = (int(v, 16) for v in parts[0].split("-"))
                ranges.append((start, end))
    return ranges


def expect_error(status, fn, *args, **kwargs):
    """Calls fn, asserts it raises modelpack.Error with `status` (name and code), returns it."""
    with pytest.raises(modelpack.Error) as info:
        fn(*args, **kwargs)
    err = info.value
    assert err.status == status, f"expected {status}, got {err}"
    assert isinstance(err.code, int) and modelpack._status_name(err.code) == status
    assert err.message, "an Error carries the library's message"
    return err


# ---- the binding itself ------------------------------------------------------------------------------


def test_struct_sizes_match_the_headers():
    expected = {
        "_SessionOptions": 16, "_RuntimeOptions": 16, "_RunOptions": 8, "_OpenOptions": 64,
        "_TensorInfo": 96, "_WriterOptions": 40, "_ConvertOptions": 48, "_PatchOptions": 24,
        "_QuantInfo": 32, "_QuantizeOptions": 48, "_QuantizeTensor": 56, "_RuntimeStats": 104,
        "_TensorArg": 32,
    }
    for name, size in expected.items():
        assert ctypes.sizeof(getattr(modelpack, name)) == size, name


def test_versions():
    assert modelpack.version().count(".") == 2
    assert modelpack.abi_version() == 0
    major, minor = modelpack.format_version()
    assert (major, minor) >= (1, 5)


@pytest.mark.skipif(not os.path.exists("/proc/self/maps"), reason="needs /proc")
def test_one_copy_of_libmodelpack_is_loaded():
    # The runtime must bind to the very libmodelpack we loaded: two copies would mean two
    # last-error messages (an Error from the runtime would then carry "").
    paths = set()
    with open("/proc/self/maps") as f:
        for line in f:
            field = line.split()[-1]
            if os.path.basename(field).startswith("libmodelpack.so"):
                paths.add(os.path.realpath(field))
    assert len(paths) == 1, paths
    if os.environ.get("MPK_LIBRARY_DIR"):
        assert paths.pop().startswith(os.path.realpath(os.environ["MPK_LIBRARY_DIR"]))


def run_python(code, env_dir):
    env = dict(os.environ, MPK_LIBRARY_DIR=str(env_dir))
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          cwd=os.path.join(REPO, "python"), timeout=120)


def test_missing_library_dir_fails_import(tmp_path):
    r = run_python("import modelpack", tmp_path)  # an empty folder: no fallback elsewhere
    assert r.returncode != 0
    assert "ImportError" in r.stderr and "MPK_LIBRARY_DIR" in r.stderr


def test_runtime_is_optional(tmp_path):
    lib = os.path.realpath(modelpack.library_path)
    os.symlink(lib, tmp_path / "libmodelpack.so")
    code = (
        "import modelpack, numpy as np, sys\n"
        "p = sys.argv[0]\n"
        f"modelpack.write({str(tmp_path / 'm.mpk')!r}, {{'a': np.arange(3, dtype=np.float32)}})\n"
        f"m = modelpack.open({str(tmp_path / 'm.mpk')!r})\n"
        "assert m.tensor('a').tolist() == [0, 1, 2]\n"
        "assert not modelpack.runtime_available()\n"
        "try:\n"
        "    modelpack.Runtime()\n"
        "except modelpack.RuntimeUnavailable as e:\n"
        "    print('unavailable:', e)\n"
    )
    r = run_python(code, tmp_path)
    assert r.returncode == 0, r.stderr
    assert "unavailable:" in r.stdout and "libmodelpack_runtime" in r.stdout


# ---- writing and reading tensors ---------------------------------------------------------------------


def test_write_then_zero_copy_views(tmp_path):
    path = tmp_path / "all.mpk"
    modelpack.write(path, ALL_DTYPES)
    with modelpack.open(path) as model:
        assert model.tensor_names() == sorted(ALL_DTYPES)  # byte-wise name order
        assert len(model) == len(ALL_DTYPES)
        assert "t_f32" in model and "nope" not in model
        assert model.content_id.startswith("mpk1-") and len(model.content_id) == 37
        assert model.format_version[0] == 1
        spans = mapped_ranges(path)
        assert spans, "access='map' maps the file"
        for name, expected in ALL_DTYPES.items():
            view = model.tensor(name)
            assert view.dtype == expected.dtype.newbyteorder("<") and view.shape == expected.shape
            np.testing.assert_array_equal(view, expected)
            assert not view.flags.writeable
            with pytest.raises(ValueError):
                view.flags.writeable = True
            # The base chain holds the model's handle: the memory cannot be freed under the view.
            assert view.base.owner is model._handle
            # Zero-copy: a non-empty view points into the file's mapping, and two views of a
            # tensor are the same memory; read() is a separate, writable copy.
            if view.size:
                address = view.__array_interface__["data"][0]
                assert any(start <= address and address + view.nbytes <= end for start, end in spans)
                assert np.shares_memory(view, model.tensor(name))
                copy = model.read(name)
                np.testing.assert_array_equal(copy, expected)
                assert copy.flags.writeable and not np.shares_memory(copy, view)


def test_info_fields(tmp_path):
    path = tmp_path / "m.mpk"
    modelpack.write(path, {"w": ALL_DTYPES["t_f32"], "b": ALL_DTYPES["t_bool"]})
    with modelpack.open(path) as model:
        info = model.info("w")
        assert info["name"] == "w" and info["index"] == 1
        assert info["dtype"] == "f32" and info["shape"] == (3, 4) and info["numel"] == 12
        assert info["nbytes"] == 48 and info["stored_bytes"] == 48 and info["encoding"] == "raw"
        assert info["component"] == "weights" and info["offset"] % 64 == 0
        assert len(info["xxh3"]) == 16 and int(info["xxh3"], 16) >= 0
        assert model.info("b")["dtype"] == "bool"
        assert model.components() == [{"name": "weights", "kind": "weights", "tensors": 2, "nbytes": 51}]
        expect_error("MPK_ERR_NOT_FOUND", model.info, "missing")
        expect_error("MPK_ERR_NOT_FOUND", model.tensor, "missing")
        expect_error("MPK_ERR_NOT_FOUND", model.component, "missing")
        cli = os.path.join(REPO, "build", "release", "tools", "mpk")
        if os.path.exists(cli):  # cross-check with the CLI's reading of the same file
            doc = json.loads(subprocess.run([cli, "inspect", "--json", str(path)], capture_output=True,
                                            text=True, check=True).stdout)
            by_name = {t["name"]: t for t in doc["tensors"]}
            assert by_name["w"]["xxh3"] == info["xxh3"] and by_name["w"]["offset"] == info["offset"]


def test_access_read(tmp_path):
    path = tmp_path / "m.mpk"
    modelpack.write(path, ALL_DTYPES)
    with modelpack.open(path, access="read", verify="full") as model:
        for name, expected in ALL_DTYPES.items():
            np.testing.assert_array_equal(model.tensor(name), expected)
            np.testing.assert_array_equal(model.read(name), expected)


def test_non_contiguous_and_big_endian_arrays_are_written_by_value(tmp_path):
    path = tmp_path / "m.mpk"
    a = np.asfortranarray(np.arange(6, dtype=np.float32).reshape(2, 3))
    b = np.arange(4, dtype=">i4")
    modelpack.write(path, {"a": a, "b": b, "c": np.arange(10, dtype=np.int16)[::2]})
    with modelpack.open(path) as model:
        np.testing.assert_array_equal(model.tensor("a"), a)
        np.testing.assert_array_equal(model.tensor("b"), b)
        np.testing.assert_array_equal(model.tensor("c"), [0, 2, 4, 6, 8])


def test_write_refuses_what_it_cannot_store(tmp_path):
    path = tmp_path / "bad.mpk"
    with pytest.raises(TypeError):
        modelpack.write(path, {"c": np.zeros(2, dtype=np.complex128)})
    with pytest.raises(TypeError):
        modelpack.write(path, {"o": np.array(["x"], dtype=object)})
    with pytest.raises(ValueError):
        modelpack.write(path, {"a\0b": np.zeros(1)})
    expect_error("MPK_ERR_DUPLICATE", lambda: _write_twice(path))
    assert not path.exists(), "a failed write leaves nothing behind"


def _write_twice(path):
    with modelpack.Writer(path) as w:
        w.add_tensor("x", np.zeros(1))
        w.add_tensor("x", np.zeros(1))


def test_writer_streaming_components_and_raw_dtypes(tmp_path):
    path = tmp_path / "m.mpk"
    values = np.arange(1000, dtype=np.float32)
    bf16_bits = (np.array([1.0, -2.5, 0.15625], dtype=np.float32).view(np.uint32) >> 16).astype(np.uint16)
    with modelpack.Writer(path, alignment=128) as w:
        w.add_component("extra", "aux")
        w.begin_tensor("streamed", np.float32, (10, 100), component="extra")
        for piece in np.split(values, 4):
            w.write(piece)
        w.end_tensor()
        w.add_tensor("bf", bf16_bits, dtype="bf16")
        w.add_tensor("f8", np.array([0x38, 0x40], dtype=np.uint8), dtype="f8_e4m3")
    with modelpack.open(path) as model:
        np.testing.assert_array_equal(model.tensor("streamed"), values.reshape(10, 100))
        assert model.info("streamed")["component"] == "extra"
        assert model.component("extra") == {"name": "extra", "kind": "aux", "tensors": 1, "nbytes": 4000}
        assert model.alignment == 128
        # dtypes without a NumPy equivalent come back as raw words of the same shape.
        bf = model.tensor("bf")
        assert model.info("bf")["dtype"] == "bf16" and bf.dtype == np.uint16 and bf.shape == (3,)
        np.testing.assert_array_equal((bf.astype(np.uint32) << 16).view(np.float32), [1.0, -2.5, 0.15625])
        f8 = model.tensor("f8")
        assert model.info("f8")["dtype"] == "f8_e4m3" and f8.dtype == np.uint8
        assert f8.tolist() == [0x38, 0x40]


def test_writer_errors(tmp_path):
    path = tmp_path / "m.mpk"
    w = modelpack.Writer(path)
    w.begin_tensor("t", "f32", (4,))
    w.write(np.zeros(3, dtype=np.float32))
    expect_error("MPK_ERR_SIZE_MISMATCH", w.end_tensor)
    expect_error("MPK_ERR_STATE", w.add_tensor, "u", np.zeros(2))  # "t" is still open
    w.write(np.zeros(1, dtype=np.float32))  # the missing bytes: now it ends
    w.end_tensor()
    expect_error("MPK_ERR_BAD_DTYPE", w.add_tensor, "u", np.zeros(2, np.uint8), dtype="float32")
    expect_error("MPK_ERR_NOT_FOUND", w.add_tensor, "v", np.zeros(2), component="undeclared")
    w.close()
    assert not path.exists(), "an uncommitted writer leaves nothing"
    expect_error("MPK_ERR_STATE", w.add_tensor, "x", np.zeros(1))  # closed
    with modelpack.Writer(path) as w2:
        w2.add_tensor("x", np.zeros(1))
    expect_error("MPK_ERR_STATE", w2.add_tensor, "y", np.zeros(1))  # committed
    with pytest.raises(TypeError):
        modelpack.Writer(tmp_path / "o.mpk", bogus=1)
    with pytest.raises(ValueError):
        modelpack.Writer(tmp_path / "o.mpk", codec="lz4")


# ---- metadata ----------------------------------------------------------------------------------------

METADATA = {
    "s.plain": "hello",
    "s.unicode": "h\u00e9llo \u2603",
    "s.empty": "",
    "s.not_utf8": b"\xff\xfe ok".decode("utf-8", "surrogateescape"),
    "i.pos": 42,
    "i.min": -(2**63),
    "i.max": 2**63 - 1,
    "f.pi": 3.141592653589793,
    "f.inf": float("inf"),
    "b.true": True,
    "b.false": False,
    "y.bytes": b"\x00\x01\xff",
    "y.empty": b"",
    "a.str": ["a", "", "\u00fc"],
    "a.int": [1, -2, 2**62],
    "a.float": [0.5, -1e-300],
    "a.bool": [True, False, True],
    "a.bytes": [b"x", b"", b"\x00"],
    "a.np_str": [np.str_("numpy"), "text"],
    "t.u8": np.uint8(255),
    "t.u16": np.uint16(65535),
    "t.u32": np.uint32(7),
    "t.u64": np.uint64(2**64 - 1),
    "t.i8": np.int8(-128),
    "t.i16": np.int16(-3),
    "t.i32": np.int32(-(2**31)),
    "t.i64": np.int64(5),
    "t.f16": np.float16(0.333),
    "t.f32": np.float32(0.1),
    "t.f64": np.float64(0.1),
    "t.bool": np.bool_(True),
    "ta.u32": np.array([1, 2, 2**32 - 1], dtype=np.uint32),
    "ta.i8": np.array([-1, 1], dtype=np.int8),
    "ta.f32": np.array([0.25, -1.5], dtype=np.float32),
    "ta.f16": np.array([1.0, 2.0], dtype=np.float16),
    "ta.u64": np.array([2**64 - 1], dtype=np.uint64),
    "ta.bool": np.array([True, False]),
    "ta.empty": np.array([], dtype=np.int64),
}
EXPECTED_TYPES = {
    "s": "string", "i": "int64", "f": "float64", "b": "bool", "y": "bytes", "t": "typed", "ta": "typed[]",
    "a.str": "string[]", "a.np_str": "string[]", "a.int": "int64[]", "a.float": "float64[]", "a.bool": "bool[]", "a.bytes": "bytes[]",
}


def test_metadata_round_trip_of_every_type(tmp_path):
    path = tmp_path / "m.mpk"
    modelpack.write(path, {"x": np.zeros(1, np.float32)}, METADATA)
    with modelpack.open(path) as model:
        meta = model.metadata()
        types = model.metadata_types()
    assert list(meta) == sorted(METADATA, key=lambda k: k.encode())  # key order
    for key, expected in METADATA.items():
        got = meta[key]
        assert types[key] == (EXPECTED_TYPES.get(key) or EXPECTED_TYPES[key.split(".")[0]]), key
        if isinstance(expected, np.ndarray):
            assert isinstance(got, np.ndarray) and got.dtype == expected.dtype, key
            np.testing.assert_array_equal(got, expected)
        elif isinstance(expected, np.generic):
            assert type(got) is type(expected) and got == expected, key  # the exact type survives
        else:
            assert type(got) is type(expected) and got == expected, key
            if isinstance(expected, list):
                # Items come back as plain Python values (np.str_ as str).
                assert [type(a) for a in got] == [str if isinstance(b, str) else type(b) for b in expected], key
    assert meta["s.not_utf8"].encode("utf-8", "surrogateescape") == b"\xff\xfe ok"
    with modelpack.open(path) as model:
        assert model.metadata_value("a.int") == METADATA["a.int"]
        assert type(model.metadata_value("t.u16")) is np.uint16
        expect_error("MPK_ERR_NOT_FOUND", model.metadata_value, "absent")


@pytest.mark.parametrize("value, exc", [
    ([], TypeError),            # an empty list has no type
    ([1, 2.5], TypeError),      # mixed types are refused, not converted
    ([True, 1], TypeError),
    ([np.float64(1.0), 2.0], TypeError),  # NumPy numbers go in a NumPy array (typed)
    ({"a": 1}, TypeError),
    (None, TypeError),
    (2**63, OverflowError),
    ("a\0b", ValueError),       # a C string cannot carry NUL
    (np.zeros((2, 2)), ValueError),
])
def test_metadata_values_that_cannot_be_stored(tmp_path, value, exc):
    path = tmp_path / "m.mpk"
    with pytest.raises(exc):
        modelpack.write(path, {"x": np.zeros(1)}, {"k": value})
    assert not path.exists()


def gguf_file(path):
    """A minimal GGUF v3 file: a u32 value, an array of arrays (a metadata list), one f32 tensor."""
    def text(s):
        raw = s.encode()
        return struct.pack("<Q", len(raw)) + raw

    kv_u32 = text("test.u32") + struct.pack("<II", 4, 7)  # GGUF type 4: uint32
    inner = struct.pack("<IQ", 5, 2) + struct.pack("<ii", 1, 2) + struct.pack("<IQ", 5, 1) + struct.pack("<i", 3)
    kv_nested = text("test.nested") + struct.pack("<I", 9) + struct.pack("<IQ", 9, 2) + inner  # 9: array
    tensor = text("t") + struct.pack("<I", 1) + struct.pack("<Q", 4) + struct.pack("<I", 0) + struct.pack("<Q", 0)
    head = b"GGUF" + struct.pack("<IQQ", 3, 1, 2) + kv_u32 + kv_nested + tensor
    head += b"\0" * (-len(head) % 32)  # general.alignment defaults to 32
    path.write_bytes(head + np.arange(4, dtype="<f4").tobytes())


def test_metadata_list_is_reported_not_dropped(tmp_path):
    src, dst = tmp_path / "m.gguf", tmp_path / "m.mpk"
    gguf_file(src)
    modelpack.convert(src, dst)
    with modelpack.open(dst) as model:
        meta = model.metadata()
        assert model.metadata_types()["test.nested"] == "list"
        np.testing.assert_array_equal(model.tensor("t"), [0, 1, 2, 3])
    assert meta["test.u32"] == 7 and type(meta["test.u32"]) is np.uint32
    # The C ABI has no getter for list items: the value says so instead of vanishing.
    assert meta["test.nested"] == modelpack.UnsupportedValue("list", 2)


# ---- verification and damaged files ------------------------------------------------------------------


def test_verify_passes_then_a_flipped_byte_fails_with_the_tensor_named(tmp_path):
    path = tmp_path / "m.mpk"
    modelpack.write(path, {"good": np.ones(16, np.float32), "victim": np.arange(16, dtype=np.float32)})
    with modelpack.open(path) as model:
        model.verify()
        model.verify("header")
        offset = model.info("victim")["offset"]
    data = bytearray(path.read_bytes())
    data[offset + 5] ^= 0x01
    path.write_bytes(bytes(data))
    with modelpack.open(path) as model:  # the header is intact: opening checks only it
        err = expect_error("MPK_ERR_CHECKSUM", model.verify, "full", 2)
        assert "victim" in err.message
        expect_error("MPK_ERR_CHECKSUM", model.verify_tensor, "victim")
        model.verify_tensor("good")
    err = expect_error("MPK_ERR_CHECKSUM", modelpack.open, path, verify="full")
    assert "victim" in err.message


def test_truncated_file_fails_open(tmp_path):
    path = tmp_path / "m.mpk"
    modelpack.write(path, {"w": np.ones((32, 32), np.float32)})
    data = path.read_bytes()
    for cut in (len(data) - 1, len(data) // 2, 20):
        short = tmp_path / f"short{cut}.mpk"
        short.write_bytes(data[:cut])
        err = expect_error("MPK_ERR_TRUNCATED", modelpack.open, short)
        assert str(short) in err.message and err.code == 7


def test_open_errors(tmp_path):
    err = expect_error("MPK_ERR_IO", modelpack.open, tmp_path / "absent.mpk")
    assert "absent.mpk" in err.message
    copy = pickle.loads(pickle.dumps(err))
    assert (copy.code, copy.status, copy.message) == (err.code, err.status, err.message)
    junk = tmp_path / "junk.mpk"
    junk.write_bytes(b"not a model at all" * 20)
    expect_error("MPK_ERR_BAD_MAGIC", modelpack.open, junk)
    with pytest.raises(ValueError):
        modelpack.open(junk, verify="paranoid")
    with pytest.raises(TypeError):
        modelpack.open(junk, bogus=True)


# ---- lifetimes ---------------------------------------------------------------------------------------


def test_use_after_close_raises(tmp_path):
    path, _ = make_mlp(tmp_path)
    model = modelpack.open(path)
    model.close()
    model.close()  # idempotent
    assert model.closed
    for call in (model.tensor_names, lambda: len(model), lambda: model.content_id, lambda: model.tensor("fc1.bias"),
                 model.metadata, model.verify):
        expect_error("MPK_ERR_STATE", call)


def test_views_outlive_the_model(tmp_path):
    path, w = make_mlp(tmp_path)
    model = modelpack.open(path)
    view = model.tensor("fc1.weight")
    row = view[1:3]  # a view of the view: the base chain still reaches the owner
    handle = weakref.ref(model._handle)
    model.close()
    del model
    gc.collect()
    assert handle() is not None, "the C model is kept while views exist"
    np.testing.assert_array_equal(view, w["fc1.weight"])  # reads the model's memory: must not crash
    del view
    gc.collect()
    assert handle() is not None
    np.testing.assert_array_equal(row, w["fc1.weight"][1:3])
    del row
    gc.collect()
    assert handle() is None, "the C model is freed with its last view"


# ---- file operations ---------------------------------------------------------------------------------


@pytest.mark.parametrize("ext", ["npz", "safetensors"])
def test_convert_round_trip_keeps_the_content_id(tmp_path, ext):
    src = tmp_path / "m.mpk"
    tensors = ALL_DTYPES
    modelpack.write(src, tensors)
    other, back = tmp_path / f"m.{ext}", tmp_path / "back.mpk"
    modelpack.convert(src, other)
    if ext == "npz":
        with np.load(other) as z:
            for name, expected in tensors.items():
                np.testing.assert_array_equal(z[name], expected)
    modelpack.convert(other, back)
    with modelpack.open(src) as a, modelpack.open(back) as b:
        assert a.content_id == b.content_id
        assert b.metadata()["convert.source_format"] == ext
        for name in tensors:
            np.testing.assert_array_equal(b.tensor(name), a.tensor(name))


def test_convert_options(tmp_path):
    src, _ = make_mlp(tmp_path)
    out = tmp_path / "m.npz"
    modelpack.convert(src, out, npz_deflate=True, fsync=False)
    with np.load(out) as z:
        assert sorted(z.files) == ["fc1.bias", "fc1.weight", "fc2.bias", "fc2.weight"]
    as_mpk = tmp_path / "aligned.bin"
    modelpack.convert(out, as_mpk, dst_format="mpk", alignment=4096, codec="zstd", level=5)
    with modelpack.open(as_mpk) as m:
        assert m.alignment == 4096
    with pytest.raises(TypeError):
        modelpack.convert(src, out, bogus=1)
    with pytest.raises(ValueError):
        modelpack.convert(src, out, dst_format="onnx")
    expect_error("MPK_ERR_INVALID_ARGUMENT", modelpack.convert, src, tmp_path / "x.npz", max_shard_bytes=10)
    assert not (tmp_path / "x.npz").exists()


def test_compress_and_decompress_keep_every_tensor(tmp_path):
    rng = np.random.default_rng(1)
    tensors = {
        "big": rng.standard_normal((128, 128)).astype(np.float32),
        "ints": np.repeat(np.arange(64, dtype=np.int64), 128),
        "small": np.arange(5, dtype=np.int16),
    }
    src, packed, unpacked = tmp_path / "m.mpk", tmp_path / "c.mpk", tmp_path / "d.mpk"
    modelpack.write(src, tensors, {"k": "v"})
    modelpack.compress(src, packed, codec="auto", level=3)
    modelpack.decompress(packed, unpacked)
    with modelpack.open(src) as a, modelpack.open(packed) as c, modelpack.open(unpacked) as d:
        assert a.content_id == c.content_id == d.content_id
        assert c.info("big")["encoding"] == "chunked" and c.info("ints")["stored_bytes"] < tensors["ints"].nbytes
        assert d.info("big")["encoding"] == "raw"
        assert c.metadata() == d.metadata() == {"k": "v"}
        c.verify()
        for name, expected in tensors.items():
            np.testing.assert_array_equal(c.tensor(name), expected)  # decoded, kept by the model
            np.testing.assert_array_equal(c.read(name), expected)
            np.testing.assert_array_equal(d.tensor(name), expected)
    with pytest.raises(TypeError):
        modelpack.compress(src, packed, bogus=1)


def test_quantize_int8(tmp_path):
    src, w = make_mlp(tmp_path, d_in=16, d_hidden=32)
    dst = tmp_path / "q.mpk"
    report = modelpack.quantize(src, dst, to="int8")
    assert sorted(r["name"] for r in report) == ["fc1.weight", "fc2.weight"]  # biases are 1-D: kept
    assert all(r["from"] == "f32" and r["to"] == "i8" and r["snr_db"] > 20 for r in report)
    with modelpack.open(dst) as model:
        assert "fc1.weight.scale" in model
        q = model.quant("fc1.weight")
        assert q == {"scheme": "int8-channel", "axis": 0, "group": 0, "scale": "fc1.weight.scale",
                     "source_dtype": "f32"}
        assert model.quant("fc1.bias") is None
        assert model.info("fc1.weight")["dtype"] == "i8"
        scale = model.tensor("fc1.weight.scale")
        assert scale.dtype == np.float32 and scale.shape == (32,)
        values = model.tensor("fc1.weight").astype(np.float32) * scale[:, None]
        max_err = next(r["max_abs_error"] for r in report if r["name"] == "fc1.weight")
        assert np.abs(values - w["fc1.weight"]).max() <= max_err * (1 + 1e-6)
        assert any(k.startswith("quantize.") for k in model.metadata())


def test_quantize_bf16_and_selection(tmp_path):
    src, w = make_mlp(tmp_path)
    dst = tmp_path / "q.mpk"
    report = modelpack.quantize(src, dst, to="bf16", include=r"^fc1\.", exclude="bias")
    assert [r["name"] for r in report] == ["fc1.weight"]
    with modelpack.open(dst) as model:
        assert model.info("fc1.weight")["dtype"] == "bf16" and model.info("fc2.weight")["dtype"] == "f32"
        assert model.quant("fc1.weight")["scheme"] == "cast"
        bits = model.tensor("fc1.weight")
        assert bits.dtype == np.uint16 and bits.shape == w["fc1.weight"].shape
        widened = (bits.astype(np.uint32) << 16).view(np.float32)
        np.testing.assert_allclose(widened, w["fc1.weight"], rtol=2**-8)
    with pytest.raises(ValueError):
        modelpack.quantize(src, dst, to="int4")
    expect_error("MPK_ERR_INVALID_ARGUMENT", modelpack.quantize, src, tmp_path / "r.mpk", include="([")


def test_quantize_refuses_nan(tmp_path):
    src, dst = tmp_path / "m.mpk", tmp_path / "q.mpk"
    w = np.ones((4, 4), np.float32)
    w[2, 3] = np.nan
    modelpack.write(src, {"layer.weight": w})
    err = expect_error("MPK_ERR_BAD_VALUE", modelpack.quantize, src, dst)
    assert "'layer.weight'" in err.message and "(2, 3)" in err.message
    assert not dst.exists()


def test_diff_and_patch_reproduce_the_file(tmp_path):
    base, w = make_mlp(tmp_path, "base.mpk")
    changed = dict(w)
    changed["fc2.bias"] = w["fc2.bias"] + 1
    changed["extra"] = np.arange(7, dtype=np.int32)
    new = tmp_path / "new.mpk"
    modelpack.write(new, changed, {"version": 2})
    p = tmp_path / "v1-v2.mpkpatch"
    modelpack.diff(base, new, p, two_way=True)
    out = tmp_path / "out.mpk"
    modelpack.patch(base, [p], out)
    assert out.read_bytes() == new.read_bytes()
    back = tmp_path / "back.mpk"
    modelpack.patch(new, [p], back, reverse=True)
    assert back.read_bytes() == base.read_bytes()


def test_sign_and_verify_with_trusted_keys(tmp_path):
    model, _ = make_mlp(tmp_path, "m.mpk", seed=1)
    key, other = tmp_path / "release", tmp_path / "other"
    modelpack.keygen(key)
    modelpack.keygen(other)
    expect_error("MPK_ERR_INVALID_ARGUMENT", modelpack.keygen, key)  # exists
    pub = modelpack.public_key(str(key) + ".pub")
    assert isinstance(pub, bytes) and len(pub) == 32
    expect_error("MPK_ERR_SIGNATURE", modelpack.verify_signature, model, [pub])  # unsigned
    size = os.path.getsize(model)
    modelpack.sign(model, key, fsync=False)
    assert os.path.getsize(model) == size + 192
    modelpack.verify_signature(model, [pub])
    modelpack.verify_signature(model, str(key) + ".pub", full=False)  # a path works too
    expect_error("MPK_ERR_SIGNATURE", modelpack.verify_signature, model, [str(other) + ".pub"])
    with modelpack.open(model, verify="full", trusted_keys=[str(other) + ".pub", pub]) as m:
        assert len(m) > 0
    expect_error("MPK_ERR_SIGNATURE", modelpack.open, model, trusted_keys=[str(other) + ".pub"])
    with modelpack.open(model) as m:  # without keys the trailer is ignored
        assert len(m) > 0
    # One flipped bit in the tensor bytes: the full check refuses it.
    data = bytearray(open(model, "rb").read())
    data[size // 2] ^= 0x10
    bad = tmp_path / "bad.mpk"
    bad.write_bytes(bytes(data))
    with pytest.raises(modelpack.Error) as info:  # the tensor's checksum or the signed digest
        modelpack.verify_signature(bad, [pub])
    assert info.value.status in ("MPK_ERR_SIGNATURE", "MPK_ERR_CHECKSUM", "MPK_ERR_CORRUPT_HEADER")
    copy = tmp_path / "copy.mpk"
    modelpack.sign(model, other, copy)
    modelpack.verify_signature(copy, [str(other) + ".pub"])


def test_patch_with_the_wrong_base_writes_nothing(tmp_path):
    base, _ = make_mlp(tmp_path, "base.mpk", seed=1)
    new, _ = make_mlp(tmp_path, "new.mpk", seed=2)
    other, _ = make_mlp(tmp_path, "other.mpk", seed=3)
    p = tmp_path / "p.mpkpatch"
    modelpack.diff(base, new, p)
    out = tmp_path / "out.mpk"
    expect_error("MPK_ERR_WRONG_BASE", modelpack.patch, other, [p], out)
    assert not out.exists()
    assert sorted(os.listdir(tmp_path)) == ["base.mpk", "new.mpk", "other.mpk", "p.mpkpatch"]  # no temporary
    with pytest.raises(TypeError):
        modelpack.patch(base, str(p), out)  # a single path, not a list
    expect_error("MPK_ERR_INVALID_ARGUMENT", modelpack.patch, base, [], out)
    # A one-way patch cannot be undone.
    expect_error("MPK_ERR_UNSUPPORTED_FEATURE", modelpack.patch, new, [p], out, reverse=True)
    assert not out.exists()


# ---- running -----------------------------------------------------------------------------------------


@needs_runtime
def test_session_mlp_matches_numpy(tmp_path):
    path, w = make_mlp(tmp_path)
    x = np.random.default_rng(5).standard_normal((6, 4)).astype(np.float32)
    with modelpack.open(path) as model:
        runtime = modelpack.Runtime()
        graph = modelpack.Graph(runtime, model, arch="mlp")
        assert graph.inputs == ["x"] and graph.input_dtypes == {"x": "f32"} and graph.outputs == ["logits"]
        session = modelpack.Session(graph, threads=1, profile=True)
        (logits,) = session.run(x=x)
        assert logits.dtype == np.float32 and logits.shape == (6, 3)
        np.testing.assert_allclose(logits, mlp_reference(w, x), atol=1e-5, rtol=1e-5)
        (again,) = session.run({"x": x})
        np.testing.assert_array_equal(again, logits)
        assert session.cached_tokens == 0
        profile = session.profile()
        assert [op for _, op, _, _ in profile].count("linear") == 2
        assert all(calls == 2 and seconds >= 0 for _, _, calls, seconds in profile)
        session.reset()
        np.testing.assert_array_equal(session.run(x=x)[0], logits)
        # The same through the one-shot helper, with a Python list converted to f32.
        np.testing.assert_array_equal(modelpack.run(path, {"x": x.tolist()}, arch="mlp")[0], logits)


@needs_runtime
@pytest.mark.parametrize("as_text", [False, True])
def test_graph_config(tmp_path, as_text):
    path, w = make_mlp(tmp_path)
    x = np.random.default_rng(6).standard_normal((2, 4)).astype(np.float32)
    config = {"layers": ["fc1", "fc2"], "activation": "tanh"}
    with modelpack.open(path) as model:
        graph = modelpack.Graph(modelpack.Runtime(), model, "mlp", json.dumps(config) if as_text else config)
        (logits,) = modelpack.Session(graph).run(x=x)
    np.testing.assert_allclose(logits, mlp_reference(w, x, np.tanh), atol=1e-5, rtol=1e-5)


@needs_runtime
def test_graph_errors(tmp_path):
    path, _ = make_mlp(tmp_path)
    with modelpack.open(path) as model:
        runtime = modelpack.Runtime()
        expect_error("MPK_ERR_NOT_FOUND", modelpack.Graph, runtime, model)  # no stored graph
        expect_error("MPK_ERR_INVALID_ARGUMENT", modelpack.Graph, runtime, model, "resnet")
        expect_error("MPK_ERR_INVALID_ARGUMENT", modelpack.Graph, runtime, model, "gpt2")  # needs a config
        expect_error("MPK_ERR_NOT_FOUND", modelpack.Graph, runtime, model, "mlp", {"layers": ["fc9"]})
    expect_error("MPK_ERR_STATE", modelpack.Graph, runtime, model, "mlp")  # model closed


@needs_runtime
def test_session_select_outputs(tmp_path):
    path, w = make_mlp(tmp_path)
    x = np.random.default_rng(8).standard_normal((3, 4)).astype(np.float32)
    with modelpack.open(path) as model:
        session = modelpack.Session(modelpack.Graph(modelpack.Runtime(), model, "mlp"))
        assert session.outputs == ["logits"]
        session.select_outputs(["logits"])
        (logits,) = session.run(x=x)
        np.testing.assert_allclose(logits, mlp_reference(w, x), atol=1e-5, rtol=1e-5)
        expect_error("MPK_ERR_NOT_FOUND", session.select_outputs, ["nope"])
        expect_error("MPK_ERR_DUPLICATE", session.select_outputs, ["logits", "logits"])
        assert session.outputs == ["logits"]  # unchanged by the refused choices
        session.select_outputs(None)
        assert len(session.run(x=x)) == 1


@needs_runtime
def test_session_input_errors(tmp_path):
    path, w = make_mlp(tmp_path)
    x = np.ones((2, 4), np.float32)
    with modelpack.open(path) as model:
        session = modelpack.Session(modelpack.Graph(modelpack.Runtime(), model, "mlp"))
        err = expect_error("MPK_ERR_NOT_FOUND", session.run)  # the input is missing
        assert "x" in err.message
        expect_error("MPK_ERR_NOT_FOUND", session.run, x=x, y=x)  # an unknown input
        expect_error("MPK_ERR_NOT_FOUND", session.run, x=x, y=np.zeros(3))  # of any dtype
        expect_error("MPK_ERR_BAD_SHAPE", session.run, x=np.ones((2, 5), np.float32))
        expect_error("MPK_ERR_BAD_SHAPE", session.run, x=np.ones((2, 2, 4), np.float32))
        with pytest.raises(TypeError):
            session.run(x=x.astype(np.float64))  # an unsafe cast is not made silently
        with pytest.raises(TypeError):
            session.run({"x": x}, x=x)
        # A failed run leaves the session usable.
        np.testing.assert_allclose(session.run(x=x)[0], mlp_reference(w, x), atol=1e-5, rtol=1e-5)


@needs_runtime
def test_two_sessions_in_two_threads(tmp_path):
    path, w = make_mlp(tmp_path, d_in=32, d_hidden=64, d_out=10)
    x = np.random.default_rng(7).standard_normal((16, 32)).astype(np.float32)
    with modelpack.open(path) as model:
        graph = modelpack.Graph(modelpack.Runtime(), model, "mlp")
        results, errors = [[], []], []
        barrier = threading.Barrier(2)

        def worker(slot):
            try:
                session = modelpack.Session(graph, threads=1)
                barrier.wait()
                for _ in range(50):
                    results[slot].append(session.run(x=x)[0])
            except BaseException as e:  # reported below
                errors.append(e)

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert not errors, errors
    assert len(results[0]) == len(results[1]) == 50
    for a, b in zip(results[0], results[1]):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(results[0][0], mlp_reference(w, x), atol=1e-5, rtol=1e-5)


@needs_runtime
def test_closing_order_is_safe(tmp_path):
    path, w = make_mlp(tmp_path)
    x = np.ones((1, 4), np.float32)
    model = modelpack.open(path)
    runtime = modelpack.Runtime()
    graph = modelpack.Graph(runtime, model, "mlp")
    session = modelpack.Session(graph)
    handles = [weakref.ref(o._handle) for o in (model, runtime, graph, session)]
    # Close and drop everything but the session, in the "wrong" order: the session still runs.
    model.close()
    runtime.close()
    graph.close()
    del model, runtime, graph
    gc.collect()
    assert all(h() is not None for h in handles)
    np.testing.assert_allclose(session.run(x=x)[0], mlp_reference(w, x), atol=1e-5, rtol=1e-5)
    session.close()
    expect_error("MPK_ERR_STATE", session.run, x=x)
    del session
    gc.collect()
    assert all(h() is None for h in handles), "every C object is freed once nothing needs it"


@needs_runtime
def test_runtime_packed_weights_file(tmp_path):
    rng = np.random.default_rng(9)
    w = rng.standard_normal((40, 24)).astype(np.float32)
    path, side = tmp_path / "m.mpk", tmp_path / "m.packed.mpk"
    modelpack.write(path, {"w": w})
    x = rng.standard_normal((3, 24)).astype(np.float32)
    with modelpack.open(path) as model:
        with modelpack.Runtime() as first:
            y = first.linear(model, "w", x)
            assert first.save_packed(side) == 1
        with modelpack.Runtime() as later:
            assert later.load_packed(side) == 1
            assert later.stats()["file_weights"] == 1
            y2 = later.linear(model, "w", x)
            s = later.stats()
            assert (s["file_used"], s["file_rejected"]) == (1, 0)
            assert np.array_equal(y, y2)  # the same packed bytes and the same kernel
            expect_error("MPK_ERR_BAD_FORMAT", later.load_packed, path)  # a model, not packed weights
            expect_error("MPK_ERR_IO", later.load_packed, tmp_path / "missing.mpk")
            assert later.stats()["file_weights"] == 1
        # Signed: the signer's key (a .pub path or its 32 bytes) loads it; unsigned or another key
        # is refused before anything is offered.
        modelpack.keygen(tmp_path / "packer")
        modelpack.keygen(tmp_path / "other")
        signed = tmp_path / "m.packed.signed.mpk"
        modelpack.sign(side, tmp_path / "packer", signed, fsync=False)
        with modelpack.Runtime() as checked:
            expect_error("MPK_ERR_SIGNATURE", checked.load_packed, side, tmp_path / "packer.pub")
            expect_error("MPK_ERR_SIGNATURE", checked.load_packed, signed, [tmp_path / "other.pub"])
            assert checked.stats()["file_weights"] == 0
            assert checked.load_packed(signed, [modelpack.public_key(tmp_path / "packer.pub")], threads=2) == 1
            assert np.array_equal(checked.linear(model, "w", x), y)
            assert checked.stats()["file_used"] == 1


def test_runtime_linear_and_matmul(tmp_path):
    rng = np.random.default_rng(8)
    w = rng.standard_normal((5, 3)).astype(np.float32)  # [n, k] for linear
    v = rng.standard_normal((3, 4)).astype(np.float32)  # [k, n] for matmul
    bias = rng.standard_normal(5).astype(np.float32)
    path = tmp_path / "m.mpk"
    modelpack.write(path, {"w": w, "v": v, "b": bias})
    x = rng.standard_normal((2, 3)).astype(np.float32)
    with modelpack.open(path) as model, modelpack.Runtime() as runtime:
        np.testing.assert_allclose(runtime.linear(model, "w", x, bias), x @ w.T + bias, atol=1e-5)
        np.testing.assert_allclose(runtime.matmul(model, "v", x), x @ v, atol=1e-5)
        assert runtime.stats()["budget"] == 1 << 30
        runtime.clear_cache()
        expect_error("MPK_ERR_BAD_SHAPE", runtime.linear, model, "w", np.ones((2, 4), np.float32))
        expect_error("MPK_ERR_BAD_SHAPE", runtime.linear, model, "w", x, bias[:3])
        expect_error("MPK_ERR_BAD_SHAPE", runtime.linear, model, "b", x)
        expect_error("MPK_ERR_NOT_FOUND", runtime.linear, model, "missing", x)
