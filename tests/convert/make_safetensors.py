#!/usr/bin/python3
"""Writes .safetensors files laid out exactly as the reference writer does (huggingface/safetensors,
`serialize` / `prepare` in safetensors/src/tensor.rs), for the modelpack converter tests.

Usage: make_safetensors.py OUTDIR     (writes OUTDIR/*.safetensors and OUTDIR/manifest.txt)

Needs only the standard library and numpy (the `safetensors` package is not required). The layout:
  - tensors sorted by dtype descending in the reference's Dtype enum order, ties by name;
  - data packed back to back in that order, offsets relative to the first data byte;
  - header: compact JSON (serde_json: no spaces, non-ASCII raw, control bytes escaped),
    "__metadata__" first when given, then {"dtype","shape","data_offsets"} per tensor in data order;
  - header padded with spaces to a multiple of 8; 8-byte little-endian length first.
The reference keeps __metadata__ in a HashMap (unspecified order); we write its keys sorted.
"""
import json
import os
import struct
import sys

import numpy as np

# Position in the reference's `Dtype` enum (safetensors >= 0.5; same relative order before).
RANK = {"BOOL": 0, "F4": 1, "F6_E2M3": 2, "F6_E3M2": 3, "U8": 4, "I8": 5, "F8_E5M2": 6,
        "F8_E4M3": 7, "F8_E8M0": 8, "I16": 9, "U16": 10, "F16": 11, "BF16": 12, "I32": 13,
        "U32": 14, "F32": 15, "C64": 16, "F64": 17, "I64": 18, "U64": 19}
NUMPY = {"BOOL": "|b1", "U8": "|u1", "I8": "|i1", "I16": "<i2", "U16": "<u2", "F16": "<f2",
         "BF16": "<u2", "I32": "<i4", "U32": "<u4", "F32": "<f4", "F64": "<f8", "I64": "<i8",
         "U64": "<u8"}


def dumps(obj):
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def serialize(tensors, metadata=None):
    """tensors: {name: (dtype, shape, bytes)}; metadata: {str: str} or None."""
    items = sorted(tensors.items(), key=lambda kv: (-RANK[kv[1][0]], kv[0]))
    parts = []
    if metadata is not None:
        parts.append(dumps("__metadata__") + ":" +
                     "{" + ",".join(dumps(k) + ":" + dumps(v) for k, v in sorted(metadata.items())) + "}")
    offset = 0
    blobs = []
    for name, (dtype, shape, data) in items:
        info = "{" + '"dtype":' + dumps(dtype) + ',"shape":' + dumps(list(shape)) + \
               ',"data_offsets":' + dumps([offset, offset + len(data)]) + "}"
        parts.append(dumps(name) + ":" + info)
        offset += len(data)
        blobs.append(data)
    header = ("{" + ",".join(parts) + "}").encode("utf-8")
    header += b" " * ((8 - len(header) % 8) % 8)
    return struct.pack("<Q", len(header)) + header + b"".join(blobs)


def tensor(dtype, shape, rng):
    n = int(np.prod(shape, dtype=np.int64)) if shape else 1
    if dtype == "BOOL":
        a = rng.integers(0, 2, n).astype("|b1")
    elif dtype in ("F16", "F32", "F64"):
        a = rng.standard_normal(n).astype(NUMPY[dtype])
    else:
        info = np.iinfo(np.dtype(NUMPY[dtype]))
        a = rng.integers(info.min, info.max, n, dtype=np.dtype(NUMPY[dtype]), endpoint=True)
    return (dtype, list(shape), a.astype(NUMPY[dtype]).tobytes())


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    rng = np.random.default_rng(1)
    files = {}
    every = {}
    for i, dt in enumerate(["F64", "F32", "F16", "BF16", "I64", "I32", "I16", "I8", "U64", "U32",
                            "U16", "U8", "BOOL"]):
        every["t.%s" % dt.lower()] = tensor(dt, [3, i + 1], rng)
        every["scalar.%s" % dt.lower()] = tensor(dt, [], rng)
        every["empty.%s" % dt.lower()] = tensor(dt, [0, 5], rng)
    files["dtypes"] = serialize(every, {"format": "pt", "quote\"back\\slash": "line\nbreak\ttab\x01",
                                        "unicode": "h\u00e9llo \u2603", "": "empty key"})
    files["no_metadata"] = serialize({"b": tensor("F32", [2, 2], rng), "a": tensor("F32", [4], rng),
                                      "c": tensor("I8", [7], rng)})
    files["empty"] = serialize({})
    files["metadata_only"] = serialize({}, {"framework": "pt"})
    files["names"] = serialize({"w\u00fcrde": tensor("U8", [3], rng), "x\"y\\z": tensor("U8", [2], rng),
                                "ctl\x1f\x7f": tensor("U8", [1], rng), "Z": tensor("U8", [1], rng),
                                "\u2603.snow/man": tensor("F16", [2, 1, 1], rng)})
    files["large"] = serialize({"big": tensor("F32", [3 * 1024 * 1024 + 5], rng),
                                "small": tensor("U16", [3], rng)}, {"k": "v"})
    for name, blob in files.items():
        with open(os.path.join(out, name + ".safetensors"), "wb") as f:
            f.write(blob)
    with open(os.path.join(out, "manifest.txt"), "w") as f:
        f.write("".join(n + ".safetensors\n" for n in files))


if __name__ == "__main__":
    main()
