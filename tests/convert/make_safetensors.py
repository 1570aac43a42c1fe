#!/usr/bin/python3
"""Writes .safetensors files laid out exactly as the reference writer does (huggingface/safetensors,
`serialize` / `prepare` in safetensors/src/tensor.rs), for the modelpack converter tests.

Usage: make_safetensors.py OUTDIR
  writes OUTDIR/*.safetensors and OUTDIR/manifest.txt (single files), sharded checkpoints in
  OUTDIR/<case>/ listed in OUTDIR/sharded.txt ("<case> <index file> <joined file or ->"), and the
  expected results of re-splitting single files in OUTDIR/<case>/ listed in OUTDIR/split.txt
  ("<source file> <max shard bytes> <case> <index file>").

Needs only the standard library and numpy (the `safetensors` package is not required). The layout:
  - tensors sorted by dtype descending in the reference's Dtype enum order, ties by name;
  - data packed back to back in that order, offsets relative to the first data byte;
  - header: compact JSON (serde_json: no spaces, non-ASCII raw, control bytes escaped),
    "__metadata__" first when given, then {"dtype","shape","data_offsets"} per tensor in data order;
  - header padded with spaces to a multiple of 8; 8-byte little-endian length first.
The reference keeps __metadata__ in a HashMap (unspecified order); we write its keys sorted.

Sharded checkpoints are written as transformers' save_pretrained writes them (huggingface_hub's
split_state_dict_into_shards_factory): tensors taken in state-dict order; a tensor that would take
the current shard over max_shard_size closes it; a tensor larger than max_shard_size becomes a
shard of its own at once (so it is numbered before the shard being filled); shards are named
model-%05d-of-%05d.safetensors; the index is json.dumps(index, indent=2, sort_keys=True) + "\n"
with index["metadata"]["total_size"] the sum of the tensor sizes in bytes.
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
# Bits per element (the reference's Dtype::bitsize); the narrow dtypes get random bytes.
BITS = {"F4": 4, "F6_E2M3": 6, "F6_E3M2": 6, "F8_E5M2": 8, "F8_E4M3": 8, "F8_E8M0": 8, "C64": 64}
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
    if dtype in BITS:
        assert n * BITS[dtype] % 8 == 0, (dtype, shape)
        return (dtype, list(shape), rng.bytes(n * BITS[dtype] // 8))
    if dtype == "BOOL":
        a = rng.integers(0, 2, n).astype("|b1")
    elif dtype in ("F16", "F32", "F64"):
        a = rng.standard_normal(n).astype(NUMPY[dtype])
    else:
        info = np.iinfo(np.dtype(NUMPY[dtype]))
        a = rng.integers(info.min, info.max, n, dtype=np.dtype(NUMPY[dtype]), endpoint=True)
    return (dtype, list(shape), a.astype(NUMPY[dtype]).tobytes())


def split(items, max_size):
    """huggingface_hub's greedy split: items is [(name, tensor)] in state-dict order."""
    shard_list, current, current_size = [], [], 0
    for name, t in items:
        size = len(t[2])
        if size > max_size:
            shard_list.append([(name, t)])
            continue
        if current_size + size > max_size:
            shard_list.append(current)
            current, current_size = [], 0
        current.append((name, t))
        current_size += size
    if current:
        shard_list.append(current)
    return shard_list


def save_sharded(directory, items, max_size, weights="model.safetensors", shard_metadata=None,
                 index_metadata=None):
    """Writes the shards and the index as save_pretrained does. shard_metadata: a dict for every
    shard, or a list with one dict (or None) per shard. Returns the index file name."""
    os.makedirs(directory, exist_ok=True)
    shards = split(items, max_size)
    assert len(shards) > 1, "transformers writes an index only for more than one shard"
    weight_map = {}
    for k, shard in enumerate(shards):
        name = weights.replace(".safetensors", "-%05d-of-%05d.safetensors" % (k + 1, len(shards)))
        meta = shard_metadata[k] if isinstance(shard_metadata, list) else shard_metadata
        with open(os.path.join(directory, name), "wb") as f:
            f.write(serialize(dict(shard), meta))
        for tensor_name, _ in shard:
            weight_map[tensor_name] = name
    metadata = dict(index_metadata or {})
    metadata["total_size"] = sum(len(t[2]) for _, t in items)
    index_name = weights + ".index.json"
    with open(os.path.join(directory, index_name), "w", encoding="utf-8") as f:
        f.write(json.dumps({"metadata": metadata, "weight_map": weight_map}, indent=2, sort_keys=True) + "\n")
    return index_name


def reference_order(tensors):
    """The data order of a file the reference wrote: [(name, tensor)]."""
    return sorted(tensors.items(), key=lambda kv: (-RANK[kv[1][0]], kv[0]))


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
    narrow = {}
    for dt, shape in [("F8_E4M3", [3, 5]), ("F8_E5M2", [7]), ("F8_E8M0", [2, 2]), ("F6_E2M3", [2, 4]),
                      ("F6_E3M2", [12]), ("F4", [3, 2]), ("C64", [2, 3]), ("F4", [0]), ("C64", [])]:
        narrow["n.%s.%d" % (dt.lower(), len(narrow))] = tensor(dt, shape, rng)
    for dt in ["F32", "BOOL", "U8", "F64", "BF16"]:  # neighbours in the sort order
        narrow["w.%s" % dt.lower()] = tensor(dt, [2, 2], rng)
    files["narrow_dtypes"] = serialize(narrow, {"format": "pt"})
    for name, blob in files.items():
        with open(os.path.join(out, name + ".safetensors"), "wb") as f:
            f.write(blob)
    with open(os.path.join(out, "manifest.txt"), "w") as f:
        f.write("".join(n + ".safetensors\n" for n in files))

    # Sharded checkpoints, as transformers writes them.
    sharded = []
    # A small model: state-dict order, not name order; "big" is over the limit and becomes shard 1
    # while (a, b) are still being filled; a later shard is exactly at the limit.
    basic = [("model.embed.a", tensor("F32", [10], rng)), ("model.embed.b", tensor("F32", [10], rng)),
             ("model.big", tensor("BF16", [200], rng)), ("model.layer.c", tensor("F32", [10], rng)),
             ("model.layer.d", tensor("F16", [30], rng)), ("lm_head.e", tensor("I64", [1], rng)),
             ("lm_head.scalar", tensor("F64", [], rng)), ("lm_head.empty", tensor("F32", [0, 3], rng))]
    index = save_sharded(os.path.join(out, "sharded_basic"), basic, 100, shard_metadata={"format": "pt"},
                         index_metadata={"total_parameters": 262})
    with open(os.path.join(out, "sharded_basic.joined.safetensors"), "wb") as f:
        f.write(serialize(dict(basic), {"format": "pt"}))
    sharded.append(("sharded_basic", index, "sharded_basic.joined.safetensors"))
    # Names and index metadata that exercise the JSON writers; shards with different __metadata__.
    meta_items = [("h\u00e9llo.w", tensor("U8", [40], rng)), ("snow\u2603.w", tensor("I8", [40], rng)),
                  ("emoji\U0001F600", tensor("U16", [20], rng)), ('q"uote\\back', tensor("BOOL", [30], rng)),
                  ("ctl\x01\x7f", tensor("F32", [5], rng)), ("z.last", tensor("U8", [64], rng))]
    index = save_sharded(os.path.join(out, "sharded_meta"), meta_items, 64,
                         shard_metadata=[{"format": "pt"}, {"format": "pt", "note": "second"}, None,
                                         {"format": "np"}, {"format": "pt"}],
                         index_metadata={"ratio": 0.1, "tiny": 1e-05, "huge": 1e20, "whole": 100.0,
                                         "long": 123456789012345680.0, "flag": True,
                                         "off": False, "neg": -7, "text": "h\u00e9 \U0001F600 \"q\"\n",
                                         "total_parameters": 9})
    sharded.append(("sharded_meta", index, "-"))
    # The narrow dtypes across shards, under another weights name.
    narrow_items = [(n, t) for n, t in narrow.items()]
    index = save_sharded(os.path.join(out, "sharded_narrow"), narrow_items, 24,
                         weights="diffusion_pytorch_model.safetensors", shard_metadata={"format": "pt"})
    sharded.append(("sharded_narrow", index, "-"))
    with open(os.path.join(out, "sharded.txt"), "w") as f:
        f.write("".join("%s %s %s\n" % c for c in sharded))

    # What splitting an unsharded file must give: its tensors in its own (reference) data order,
    # every shard with the file's __metadata__, index metadata {"total_size": ...} only.
    splits = []
    for source, tensors, metadata, max_size in [("dtypes", every, {"format": "pt", "quote\"back\\slash":
                                                  "line\nbreak\ttab\x01", "unicode": "h\u00e9llo \u2603",
                                                  "": "empty key"}, 64),
                                                 ("narrow_dtypes", narrow, {"format": "pt"}, 20)]:
        case = "split_" + source
        index = save_sharded(os.path.join(out, case), reference_order(tensors), max_size,
                             shard_metadata=metadata)
        splits.append((source + ".safetensors", max_size, case, index))
    with open(os.path.join(out, "split.txt"), "w") as f:
        f.write("".join("%s %d %s %s\n" % c for c in splits))


if __name__ == "__main__":
    main()
