#!/usr/bin/python3
"""craft.py - builds .mpk files by hand from docs/FORMAT.md, with a small FlatBuffers encoder of its
own, and checks that read_mpk.py and (optionally) libmodelpack's `mpk` CLI give each file the status
the document predicts.

Usage: craft.py [MPK] [--keep DIR]

The files exercise what libmodelpack's writer never produces but the document allows or forbids:
the header before the data section, vtables after their tables, shared vtables and tables, unknown
metadata tags, feature names, empty tensors in odd places, misaligned 8-byte vectors, UTF-8 edge
cases, missing optional fields, a header table field unknown to format 1.0, and so on; and for format
1.1 (cases_1_1): every extended dtype, shapes that do or do not hold whole blocks (T8a), sizes in
blocks (T9, T10), feature bit 1 with and without extended dtypes, typed scalars and arrays of every
allowed dtype and of disallowed ones (read as unknown), lists of every item type, M4 inside lists,
list depth (M5), the Verifier's nesting bound, and the order of M4 and M5.

Prints one line per case that does not behave as documented and a closing "N passed, N failed" line.
"""

import argparse
import itertools
import json
import os
import re
import struct
import subprocess
import sys
import tempfile

import xxhash

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import read_mpk  # noqa: E402


# ---- a tiny FlatBuffers encoder (FORMAT.md §5.1), laying objects out front to back -----------------
class T:
    """A table: fields maps field id -> (kind, value); kind is a struct format letter or 'ref'."""

    def __init__(self, fields, vtable_after=False, vtable_extra=0):
        self.fields = fields
        self.vtable_after = vtable_after  # put the vtable after the table (negative soffset)
        self.vtable_extra = vtable_extra  # extra zero entries at the end of the vtable


class V:
    """A vector of scalars (fmt) or of references (fmt None)."""

    def __init__(self, items, fmt=None, misalign=False):
        self.items, self.fmt, self.misalign = items, fmt, misalign


class S:
    def __init__(self, data, nul=True):
        self.data = data if isinstance(data, bytes) else data.encode()
        self.nul = nul


class Encoder:
    def __init__(self):
        self.buf = bytearray()
        self.placed = {}  # id(obj) -> position (shared objects are written once)

    def pad_to(self, align, phase=0):
        while len(self.buf) % align != phase:
            self.buf.append(0)

    def place(self, obj):
        if id(obj) in self.placed:
            return self.placed[id(obj)]
        if isinstance(obj, S):
            self.pad_to(4)
            pos = len(self.buf)
            self.buf += struct.pack("<I", len(obj.data)) + obj.data + (b"\x00" if obj.nul else b"\x01")
            self.placed[id(obj)] = pos
            return pos
        if isinstance(obj, V):
            if obj.fmt:
                size = struct.calcsize(obj.fmt)
                align = max(4, size)
                # Elements at a multiple of their size, or (misalign) 4 bytes off. Byte vectors:
                # elements at a multiple of 8, or (misalign) at 4 modulo 8.
                if size == 1:
                    align = 8
                self.pad_to(align, (align - 4 + (4 if obj.misalign else 0)) % align)
                pos = len(self.buf)
                self.buf += struct.pack(f"<I{len(obj.items)}{obj.fmt}", len(obj.items), *obj.items)
                self.placed[id(obj)] = pos
                return pos
            self.pad_to(4)
            pos = len(self.buf)
            self.buf += struct.pack("<I", len(obj.items)) + b"\x00" * (4 * len(obj.items))
            self.placed[id(obj)] = pos
            for i, child in enumerate(obj.items):
                cpos = self.place(child)
                epos = pos + 4 + 4 * i
                struct.pack_into("<I", self.buf, epos, cpos - epos)
            return pos
        assert isinstance(obj, T)
        nfields = (max(obj.fields) + 1 if obj.fields else 0) + obj.vtable_extra
        vt_size = 4 + 2 * nfields
        # Inline layout: soffset, then fields largest first, each aligned to its size.
        layout, off = {}, 4
        order = sorted(obj.fields.items(), key=lambda kv: -self.size_of(kv[1][0]))
        for fid, (kind, _) in order:
            sz = self.size_of(kind)
            off = (off + sz - 1) // sz * sz
            layout[fid] = off
            off += sz
        tsize = off
        vt_bytes = struct.pack("<HH", vt_size, tsize) + b"".join(
            struct.pack("<H", layout.get(i, 0)) for i in range(nfields))
        if not obj.vtable_after:
            self.pad_to(2)
            vt = len(self.buf)
            self.buf += vt_bytes
        self.pad_to(8)
        pos = len(self.buf)
        self.buf += b"\x00" * tsize
        if obj.vtable_after:
            self.pad_to(2)
            vt = len(self.buf)
            self.buf += vt_bytes
        struct.pack_into("<i", self.buf, pos, pos - vt)
        self.placed[id(obj)] = pos
        refs = []
        for fid, (kind, value) in obj.fields.items():
            if kind == "ref":
                refs.append((pos + layout[fid], value))
            else:
                struct.pack_into("<" + kind, self.buf, pos + layout[fid], value)
        for fpos, child in refs:
            if isinstance(child, int):  # a raw uoffset (for hostile cases)
                struct.pack_into("<I", self.buf, fpos, child)
                continue
            cpos = self.place(child)
            struct.pack_into("<I", self.buf, fpos, cpos - fpos)
        return pos

    @staticmethod
    def size_of(kind):
        return 4 if kind == "ref" else struct.calcsize(kind)

    def finish(self, root, ident=b"MPKH"):
        self.buf += struct.pack("<I", 0) + ident
        pos = self.place(root)
        struct.pack_into("<I", self.buf, 0, pos)
        self.pad_to(8)
        return bytes(self.buf)


# ---- building modelpack headers and files (FORMAT.md §2, §3, §6) -----------------------------------
def ref(x):
    return ("ref", x)


def tensor(name, dtype, shape, offset, size, xxh3=None, component=None, encoding=None, **kw):
    f = {0: ref(S(name) if not isinstance(name, S) else name), 1: ("H", dtype), 4: ("Q", offset), 5: ("Q", size)}
    if shape is not None:
        f[2] = ref(shape if isinstance(shape, V) else V(shape, "Q"))
    if component is not None:
        f[3] = ("I", component)
    if encoding is not None:
        f[7] = ("B", encoding)
    t = T(f, **kw)
    t.xxh3 = xxh3
    return t


def meta(key, tag, value_table):
    f = {0: ref(S(key) if not isinstance(key, S) else key), 1: ("B", tag)}
    if value_table is not None:
        f[2] = ref(value_table)
    return T(f)


def component(name, kind=None, metadata=None):
    f = {0: ref(S(name))}
    if kind is not None:
        f[1] = ref(S(kind))
    if metadata is not None:
        f[2] = ref(V(metadata))
    return T(f)


def pattern(n, seed):
    x = seed * 2654435761 + 12345
    out = bytearray()
    for _ in range(n):
        x = (x * 6364136223846793005 + 1442695040888963407) & ((1 << 64) - 1)
        out.append(x >> 56)
    return bytes(out)


def build(tensors=(), components=("weights",), metadata=None, alignment=None, data_order=None, data_size=None,
          content_id=True, feature_names=None, incompatible=0, compatible=0, minor=0, header_first=False,
          extra_header_fields=None, header_vtable_after=False, data_offset=None, header_pad=0):
    """An .mpk file. Tensor checksums default to the true ones; data_order to offset order."""
    align = 64 if alignment is None else alignment
    dsize = data_size
    if dsize is None:
        dsize = max([t.fields[4][1] + t.fields[5][1] for t in tensors] + [0])
    data = pattern(dsize, 7)
    for t in tensors:
        off, size = t.fields[4][1], t.fields[5][1]
        x = t.xxh3 if t.xxh3 is not None else xxhash.xxh3_64_intdigest(data[off:off + size])
        t.fields[6] = ("Q", x)
    if data_order is None:
        data_order = sorted(range(len(tensors)), key=lambda i: tensors[i].fields[4][1])
    hf = {0: ("H", 1), 3: ref(V(list(tensors))), 4: ref(V(data_order, "I")),
          5: ref(V([c if isinstance(c, T) else component(c, c) for c in components])), 9: ref(S("craft.py"))}
    if minor:
        hf[1] = ("H", minor)
    if alignment is not None:
        hf[2] = ("I", alignment)
    if metadata is not None:
        hf[6] = ref(V(metadata))
    if content_id is True:
        rows = []
        for t in tensors:
            shape = t.fields[2][1].items if 2 in t.fields else []
            name = t.fields[0][1].data
            rows.append(dict(name=name, dtype=t.fields[1][1], shape=shape, xxh3=t.fields[6][1]))
        hf[7] = ref(S(read_mpk.content_id(rows)))
    elif content_id:
        hf[7] = ref(S(content_id))
    if feature_names is not None:
        hf[8] = ref(V([T({0: ("B", b), 1: ("B", inc), 2: ref(S(n))}) for b, inc, n in feature_names]))
    for fid, v in (extra_header_fields or {}).items():
        hf[fid] = v
    header = Encoder().finish(T(hf, vtable_after=header_vtable_after)) + b"\x00" * header_pad

    if header_first:
        h_off = 96
        d_off = read_mpk_align_up(h_off + len(header), align) if data_offset is None else data_offset
        end = max(h_off + len(header), d_off + dsize)
    else:
        d_off = read_mpk_align_up(96, align) if data_offset is None else data_offset
        h_off = read_mpk_align_up(d_off + dsize, 8)
        end = h_off + len(header)
    f = bytearray(end)
    f[d_off:d_off + dsize] = data
    f[h_off:h_off + len(header)] = header
    pre = bytearray(96)
    pre[0:8] = read_mpk.MAGIC
    struct.pack_into("<HHIQQQQQQQ", pre, 8, 1, minor, 96, incompatible, compatible, h_off, len(header), d_off, dsize,
                     xxhash.xxh3_64_intdigest(header))
    struct.pack_into("<Q", pre, 88, xxhash.xxh3_64_intdigest(bytes(pre[:88])))
    f[0:96] = pre
    return bytes(f)


def read_mpk_align_up(v, a):
    return (v + a - 1) & ~(a - 1)


# ---- the cases: (label, file bytes, the status FORMAT.md predicts) ----------------------------------
def cases():
    OK = "MPK_OK"
    f32 = 2
    yield "plain", build([tensor("a", f32, [4], 0, 16), tensor("b", f32, [2], 64, 8)]), OK
    yield "header before data (§2)", build([tensor("a", f32, [4], 0, 16)], header_first=True), OK
    yield "vtables after tables (§5.1)", build(
        [tensor("a", f32, [4], 0, 16, vtable_after=True)], header_vtable_after=True), OK
    yield "header field id 10 unknown to 1.0, minor 3 (§16)", build(
        [tensor("a", f32, [4], 0, 16)], minor=3, extra_header_fields={10: ("Q", 12345), 12: ref(S("future"))}), OK
    yield "vtable with trailing absent entries", build([tensor("a", f32, [4], 0, 16, vtable_extra=5)]), OK
    yield "content_id absent (§6.1)", build([tensor("a", f32, [4], 0, 16)], content_id=None), OK
    yield "content_id wrong (I1)", build([tensor("a", f32, [4], 0, 16)], content_id="mpk1-" + "0" * 32), \
        "MPK_ERR_CHECKSUM"
    yield "alignment absent = 64, data_offset 128", build([tensor("a", f32, [4], 0, 16)]), OK
    yield "alignment absent = 64, data_offset 96 (H6)", build(
        [tensor("a", f32, [4], 0, 16)], data_offset=96), "MPK_ERR_MISALIGNED"
    yield "alignment 3 (H5)", build([tensor("a", f32, [4], 0, 16)], alignment=3, data_offset=96), \
        "MPK_ERR_CORRUPT_HEADER"
    yield "alignment 131072 (H5)", build([tensor("a", f32, [4], 0, 16)], alignment=131072, data_offset=131072), \
        "MPK_ERR_CORRUPT_HEADER"
    yield "alignment 1, odd offsets", build(
        [tensor("a", 12, [3], 0, 3), tensor("b", 7, [1], 3, 2)], alignment=1, data_offset=97), OK
    yield "tensor misaligned (T14)", build([tensor("a", f32, [4], 4, 16)]), "MPK_ERR_MISALIGNED"
    yield "scalar: shape absent", build([tensor("s", f32, None, 0, 4)]), OK
    yield "scalar: size 8 (T10)", build([tensor("s", f32, None, 0, 8)]), "MPK_ERR_BAD_SHAPE"
    yield "rank 32", build([tensor("r", 12, [1] * 32, 0, 1)]), OK
    yield "rank 33 (T7)", build([tensor("r", 12, [1] * 33, 0, 1)]), "MPK_ERR_BAD_SHAPE"
    yield "element count overflow (T8)", build([tensor("o", 12, [1 << 32, 1 << 32], 0, 0)]), "MPK_ERR_OVERFLOW"
    yield "byte size overflow (T9)", build([tensor("o", f32, [1 << 62], 0, 0)]), "MPK_ERR_OVERFLOW"
    yield "zero dim with huge others", build([tensor("z", f32, [0, 1 << 63], 0, 0)]), OK
    yield "shape misaligned (T6)", build([tensor("a", f32, V([4], "Q", misalign=True), 0, 16)]), \
        "MPK_ERR_CORRUPT_HEADER"
    yield "empty shape misaligned is fine", build([tensor("s", f32, V([], "Q", misalign=True), 0, 4)]), OK
    yield "dtype 0 (T4)", build([tensor("a", 0, [4], 0, 16)]), "MPK_ERR_BAD_DTYPE"
    yield "dtype 21 (T4)", build([tensor("a", 21, [4], 0, 16)]), "MPK_ERR_BAD_DTYPE"
    yield "encoding 1 (T5)", build([tensor("a", f32, [4], 0, 16, encoding=1)]), "MPK_ERR_UNSUPPORTED_FEATURE"
    yield "encoding 0 written explicitly", build([tensor("a", f32, [4], 0, 16, encoding=0)]), OK
    yield "component 1 of 1 (T11)", build([tensor("a", f32, [4], 0, 16, component=1)]), "MPK_ERR_OUT_OF_BOUNDS"
    yield "tensors but no components (T11)", build([tensor("a", f32, [4], 0, 16)], components=()), \
        "MPK_ERR_OUT_OF_BOUNDS"
    yield "components without tensors", build([], components=("weights", "spare")), OK
    yield "past the data section (T13)", build([tensor("a", f32, [4], 0, 16)], data_size=8), \
        "MPK_ERR_OUT_OF_BOUNDS"
    yield "offset + size overflow (T12)", build(
        [tensor("a", 12, [16], (1 << 64) - 8, 16)], data_size=64), "MPK_ERR_OVERFLOW"
    yield "empty tensor at data_size", build([tensor("a", f32, [4], 0, 16), tensor("e", f32, [0], 64, 0)],
                                             data_size=64), OK
    yield "empty tensor past data_size (T13)", build([tensor("e", f32, [0], 128, 0)], data_size=64), \
        "MPK_ERR_OUT_OF_BOUNDS"
    yield "empty tensor inside another (§7.6)", build(
        [tensor("a", f32, [32], 0, 128), tensor("e", f32, [0], 64, 0)], data_order=[0, 1]), OK
    yield "empty tensor listed out of order, not first (§7.6 rule 3, D4)", build(
        [tensor("a", f32, [4], 0, 16), tensor("b", f32, [4], 64, 16), tensor("e", f32, [0], 128, 0)],
        data_order=[0, 2, 1], data_size=128), "MPK_ERR_UNSORTED"
    yield "empty tensor listed first at a high offset (D4)", build(
        [tensor("a", f32, [4], 0, 16), tensor("e", f32, [0], 64, 0)], data_order=[1, 0]), "MPK_ERR_UNSORTED"
    yield "overlap (D5)", build([tensor("a", f32, [32], 0, 128), tensor("b", f32, [4], 64, 16)]), "MPK_ERR_OVERLAP"
    yield "same offset, both non-empty (D5)", build([tensor("a", f32, [4], 0, 16), tensor("b", f32, [4], 0, 16)]), \
        "MPK_ERR_OVERLAP"
    yield "data_order reversed (D4)", build([tensor("a", f32, [4], 0, 16), tensor("b", f32, [4], 64, 16)],
                                            data_order=[1, 0]), "MPK_ERR_UNSORTED"
    yield "data_order short (D1)", build([tensor("a", f32, [4], 0, 16), tensor("b", f32, [4], 64, 16)],
                                         data_order=[0]), "MPK_ERR_CORRUPT_HEADER"
    yield "data_order index out of range (D2)", build([tensor("a", f32, [4], 0, 16)], data_order=[5]), \
        "MPK_ERR_CORRUPT_HEADER"
    yield "data_order duplicate (D3)", build([tensor("a", f32, [4], 0, 16), tensor("b", f32, [4], 64, 16)],
                                             data_order=[0, 0]), "MPK_ERR_CORRUPT_HEADER"
    yield "names byte-wise: B < a < \\xc3\\xa9", build(
        [tensor("B", f32, [1], 0, 4), tensor("a", f32, [1], 64, 4), tensor("\u00e9", f32, [1], 128, 4)]), OK
    yield "names unsorted (T3)", build([tensor("a", f32, [1], 0, 4), tensor("B", f32, [1], 64, 4)]), \
        "MPK_ERR_UNSORTED"
    yield "names duplicate (T2)", build([tensor("a", f32, [1], 0, 4), tensor("a", f32, [1], 64, 4)]), \
        "MPK_ERR_DUPLICATE"
    yield "prefix sorts first", build([tensor("a", f32, [1], 0, 4), tensor("a.b", f32, [1], 64, 4)]), OK
    for label, name in [("empty", b""), ("NUL", b"a\x00b"), ("overlong C0 80", b"\xc0\x80"),
                        ("overlong E0 80 80", b"\xe0\x80\x80"), ("surrogate ED A0 80", b"\xed\xa0\x80"),
                        ("above U+10FFFF", b"\xf4\x90\x80\x80"), ("F5 lead", b"\xf5\x80\x80\x80"),
                        ("stray continuation", b"a\x80"), ("truncated sequence", b"\xe6\x97"),
                        ("64 KiB", b"x" * 65536)]:
        yield f"tensor name {label} (T1)", build([tensor(S(name), f32, [1], 0, 4)]), "MPK_ERR_BAD_NAME"
    for label, name in [("U+10FFFF", b"\xf4\x8f\xbf\xbf"), ("U+FFFF", b"\xef\xbf\xbf"), ("emoji", b"\xf0\x9f\x98\x80"),
                        ("64 KiB - 1", b"x" * 65535)]:
        yield f"tensor name {label}", build([tensor(S(name), f32, [1], 0, 4)]), OK
    yield "string without NUL terminator (§5.2)", build([tensor(S("a", nul=False), f32, [1], 0, 4)]), \
        "MPK_ERR_CORRUPT_HEADER"
    yield "identifier MPKX (H2)", build_with_ident(b"MPKX"), "MPK_ERR_CORRUPT_HEADER"

    i64 = lambda v: T({0: ("q", v)})  # noqa: E731
    yield "every metadata type, byte-wise keys, a bool byte of 2", build([], metadata=[
        meta("B", 1, T({0: ref(S("x"))}))] + sorted([
        meta("a.bool", 4, T({0: ("B", 2)})), meta("a.bytes", 5, T({0: ref(V([1, 2], "B"))})),
        meta("a.f", 3, T({0: ("d", 0.5)})), meta("a.fa", 8, T({0: ref(V([1.0, -2.0], "d"))})),
        meta("a.i", 2, i64(-1)), meta("a.ia", 7, T({0: ref(V([1, 2], "q"))})),
        meta("a.sa", 6, T({0: ref(V([S("p"), S("")]))})), meta("a.ba", 9, T({0: ref(V([1, 0, 7], "B"))})),
        meta("a.ya", 10, T({0: ref(V([T({0: ref(V([9], "B"))}), T({})]))})), meta("a.empty", 2, T({})),
    ], key=lambda m: m.fields[0][1].data)), OK
    yield "metadata string value with NUL and bad UTF-8 (§9.1)", build(
        [], metadata=[meta("k", 1, T({0: ref(S(b"\x00\xff\xc0"))}))]), OK
    yield "unknown metadata tag 42, value pointing at a string (§9.1)", build(
        [], metadata=[meta("k", 42, S("not a table"))]), OK
    yield "tag 0 with a value", build([], metadata=[meta("k", 0, i64(1))]), OK
    yield "known tag without value", build([], metadata=[meta("k", 2, None)]), OK
    yield "metadata keys unsorted (M3)", build([], metadata=[meta("b", 2, i64(1)), meta("a", 2, i64(1))]), \
        "MPK_ERR_UNSORTED"
    yield "metadata keys duplicate (M2)", build([], metadata=[meta("a", 2, i64(1)), meta("a", 2, i64(2))]), \
        "MPK_ERR_DUPLICATE"
    yield "metadata key empty (M1)", build([], metadata=[meta("", 2, i64(1))]), "MPK_ERR_BAD_NAME"
    yield "unknown tag still counts for order (M3)", build(
        [], metadata=[meta("b", 99, i64(1)), meta("a", 2, i64(1))]), "MPK_ERR_UNSORTED"
    yield "int64 array misaligned (M4)", build(
        [], metadata=[meta("k", 7, T({0: ref(V([1, 2], "q", misalign=True))}))]), "MPK_ERR_CORRUPT_HEADER"
    yield "float64 array misaligned (M4)", build(
        [], metadata=[meta("k", 8, T({0: ref(V([1.0], "d", misalign=True))}))]), "MPK_ERR_CORRUPT_HEADER"
    yield "empty int64 array misaligned is fine", build(
        [], metadata=[meta("k", 7, T({0: ref(V([], "q", misalign=True)), }))]), OK
    yield "misaligned array under an unknown tag is not looked at", build(
        [], metadata=[meta("k", 77, T({0: ref(V([1], "q", misalign=True))}))]), OK
    yield "component metadata misaligned (C4/M4)", build([], components=(
        component("w", "weights", [meta("k", 7, T({0: ref(V([1], "q", misalign=True))}))]),)), \
        "MPK_ERR_CORRUPT_HEADER"
    yield "component metadata unsorted (C4)", build([], components=(
        component("w", "weights", [meta("b", 2, i64(1)), meta("a", 2, i64(1))]),)), "MPK_ERR_UNSORTED"
    yield "component kind absent", build([tensor("a", f32, [1], 0, 4)], components=(component("w"),)), OK
    yield "component kind empty", build([tensor("a", f32, [1], 0, 4)], components=(component("w", ""),)), OK
    yield "component kind with NUL (C2)", build([], components=(component("w", "a\x00"),)), "MPK_ERR_BAD_NAME"
    yield "component name empty (C1)", build([], components=(component(""),)), "MPK_ERR_BAD_NAME"
    yield "component names duplicate (C3)", build([], components=("w", "w")), "MPK_ERR_DUPLICATE"
    yield "components checked before metadata", build(
        [], components=("w", "w"), metadata=[meta("", 2, i64(1))]), "MPK_ERR_DUPLICATE"
    yield "metadata checked before tensors", build(
        [tensor("a", 0, [1], 0, 4)], metadata=[meta("", 2, i64(1))]), "MPK_ERR_BAD_NAME"

    yield "incompatible bit 7, named (H4)", build(
        [], incompatible=1 << 7, feature_names=[(7, 1, "zstd-chunked")]), "MPK_ERR_UNSUPPORTED_FEATURE"
    yield "incompatible bit checked before alignment", build(
        [], incompatible=1, alignment=3, data_offset=96), "MPK_ERR_UNSUPPORTED_FEATURE"
    yield "compatible bits ignored", build([], compatible=(1 << 64) - 1, feature_names=[(3, 0, "hint")]), OK
    yield "feature name for bit 200 names nothing", build([], feature_names=[(200, 1, "x")]), OK

    # Shared tables count once per reference (§5.2 rule 9).
    shared_meta = meta("k", 2, i64(1))
    comps = [component(f"c{i}") for i in range(100)]
    shared_comp = T({0: ref(S("w")), 2: ref(V([shared_meta] * 100))})
    small_comp = T({0: ref(S("w")), 2: ref(V([shared_meta] * 3))})
    yield "a shared table, few visits: component name twice (C3)", build(
        [], components=(small_comp, small_comp)), "MPK_ERR_DUPLICATE"
    yield "shared tables: visits over size/4 + 16 (§5.2 rule 9)", build(
        [], components=[shared_comp] * 200), "MPK_ERR_CORRUPT_HEADER"
    yield "100 distinct components", build([], components=comps), OK

    # Sections (§2).
    yield "empty data section inside the header", build([], data_size=0, header_first=True, data_offset=128,
                                                        header_pad=64), OK
    yield "trailing bytes ignored", build([tensor("a", f32, [4], 0, 16)]) + b"trailing" * 9, OK


# ---- format 1.1 (FORMAT.md §18): extended dtypes, feature bit 1, typed and list metadata --------
EXT = 1 << 1  # incompatible feature bit 1, "extended-dtypes" (§4.2, §15.4)
EXT_NAME = [(1, 1, "extended-dtypes")]


def ext(tensors, **kw):
    """A file with feature bit 1 set and named, as §7.2 requires for extended dtypes."""
    kw.setdefault("incompatible", EXT)
    kw.setdefault("feature_names", EXT_NAME)
    return build(tensors, **kw)


def typed(dtype, bits=None):
    f = {}
    if dtype is not None:
        f[0] = ("H", dtype)
    if bits is not None:
        f[1] = ("Q", bits)
    return T(f)


def typed_array(dtype, data=None, misalign=False):
    f = {0: ("H", dtype)}
    if data is not None:
        f[1] = ref(V(list(data), "B", misalign=misalign))
    return T(f)


def item(tag, value_table):
    """A ListItem (§6.5): value_type id 0, value id 1."""
    f = {0: ("B", tag)}
    if value_table is not None:
        f[1] = ref(value_table)
    return T(f)


def vlist(items):
    """A ValueList (§6.5) of (tag, value table) pairs; None for `items` leaves the field absent."""
    return T({} if items is None else {0: ref(V([item(t, v) for t, v in items]))})


def nested(depth, innermost_items):
    """A list value at depth 1 whose only item is a list at depth 2, ... down to a list at `depth`
    holding `innermost_items` (at depth + 1)."""
    v = vlist(innermost_items)
    for _ in range(depth - 1):
        v = vlist([(13, v)])
    return v


def int_table(v):
    return T({0: ("q", v)})


def cases_1_1():
    OK = "MPK_OK"
    f32 = 2
    BAD_SHAPE, OVERFLOW, BAD_DTYPE = "MPK_ERR_BAD_SHAPE", "MPK_ERR_OVERFLOW", "MPK_ERR_BAD_DTYPE"
    q4_0, q8_0, q4_k, q8_k, f4, f6a, f6b, c64, f8 = 32, 36, 40, 43, 19, 17, 18, 20, 14

    # §7.2, §7.3, §7.4: block sizes and shapes that hold whole blocks; rules T8a, T9, T10.
    yield "every extended dtype, right sizes (§7.2)", ext([
        tensor(f"d{v:02}", v, shape, 1024 * k, size) for k, (v, shape, size) in enumerate([
            (14, [5], 5), (15, [2, 3], 6), (16, [1], 1), (17, [4], 3), (18, [2, 6], 9), (19, [3, 2], 3),
            (20, [3], 24), (32, [64], 36), (33, [1, 32], 20), (34, [2, 32], 44), (35, [32], 24), (36, [3, 32], 102),
            (37, [32], 36), (38, [256], 84), (39, [256], 110), (40, [2, 512], 576), (41, [256], 176),
            (42, [256], 210), (43, [256], 292)])]), OK
    yield "q8_0 innermost 33 (T8a)", ext([tensor("q", q8_0, [2, 33], 0, 68)]), BAD_SHAPE
    yield "q8_0 innermost 32, 33 rows", ext([tensor("q", q8_0, [33, 32], 0, 33 * 34)]), OK
    yield "q8_0 element count a multiple of 32, innermost 16 (T8a)", ext([tensor("q", q8_0, [2, 16], 0, 34)]), BAD_SHAPE
    yield "q4_0 rank 0 (T8a)", ext([tensor("q", q4_0, None, 0, 18)]), BAD_SHAPE
    yield "q4_0 rank 0, shape vector empty (T8a)", ext([tensor("q", q4_0, [], 0, 18)]), BAD_SHAPE
    yield "q4_k innermost 128 (T8a)", ext([tensor("q", q4_k, [2, 128], 0, 144)]), BAD_SHAPE
    yield "q4_k innermost 0: empty", ext([tensor("q", q4_k, [3, 0], 0, 0)]), OK
    yield "q4_0 outer dimension 0: empty", ext([tensor("q", q4_0, [0, 64], 0, 0)]), OK
    yield "f4_e2m1 odd element count (T8a)", ext([tensor("f", f4, [3], 0, 2)]), BAD_SHAPE
    yield "f4_e2m1 odd innermost, even count", ext([tensor("f", f4, [2, 3], 0, 3)]), OK
    yield "f4_e2m1 scalar: 1 element (T8a)", ext([tensor("f", f4, None, 0, 1)]), BAD_SHAPE
    yield "f4_e2m1 empty", ext([tensor("f", f4, [0], 0, 0)]), OK
    yield "f6_e2m3 element count 6 (T8a)", ext([tensor("f", f6a, [6], 0, 6)]), BAD_SHAPE
    yield "f6_e3m2 element count 6 as [2, 3] (T8a)", ext([tensor("f", f6b, [2, 3], 0, 6)]), BAD_SHAPE
    yield "f6_e2m3 element count 12 as [3, 2, 2]", ext([tensor("f", f6a, [3, 2, 2], 0, 9)]), OK
    yield "T8a before T10: q8_0 [33] with size 0", ext([tensor("q", q8_0, [33], 0, 0)]), BAD_SHAPE
    yield "T8 before T8a: q8_0 count overflow, innermost 33", ext(
        [tensor("q", q8_0, [1 << 40, 1 << 40, 33], 0, 0)]), OVERFLOW
    yield "q4_0 size in elements, not blocks (T10)", ext([tensor("q", q4_0, [64], 0, 32)]), BAD_SHAPE
    yield "q4_0 size of 64 blocks for 2 (T10)", ext([tensor("q", q4_0, [64], 0, 64 * 18)]), BAD_SHAPE
    yield "q4_0 size 36 for [64]", ext([tensor("q", q4_0, [64], 0, 36)]), OK
    yield "f4_e2m1 size = count (T10)", ext([tensor("f", f4, [8], 0, 8)]), BAD_SHAPE
    yield "f6_e3m2 size = count (T10)", ext([tensor("f", f6b, [8], 0, 8)]), BAD_SHAPE
    yield "c64 size of an f32 (T10)", ext([tensor("c", c64, [3], 0, 12)]), BAD_SHAPE
    yield "q8_k size + 1 (T10)", ext([tensor("q", q8_k, [256], 0, 293)]), BAD_SHAPE
    yield "c64 byte size overflow (T9)", ext([tensor("c", c64, [1 << 61], 0, 0)]), OVERFLOW
    yield "q8_k byte size overflow (T9)", ext([tensor("q", q8_k, [(1 << 64) - 256], 0, 0)]), OVERFLOW
    # count * 3 would overflow; count / 4 * 3 (the document's order) does not: T10 holds, T13 fails.
    yield "f6 divides before it multiplies (T9, T13)", ext(
        [tensor("f", f6a, [(1 << 64) - 4], 0, 3 * ((1 << 62) - 1))], data_size=64), "MPK_ERR_OUT_OF_BOUNDS"
    yield "q4_0 divides before it multiplies (T9, T13)", ext(
        [tensor("q", q4_0, [1 << 63], 0, (1 << 58) * 18)], data_size=64), "MPK_ERR_OUT_OF_BOUNDS"
    yield "dtype 31 (T4)", ext([tensor("a", 31, [4], 0, 4)]), BAD_DTYPE
    yield "dtype 44 (T4)", ext([tensor("a", 44, [32], 0, 18)]), BAD_DTYPE
    yield "dtype 65535 (T4)", ext([tensor("a", 65535, [4], 0, 4)]), BAD_DTYPE
    yield "dtype 21 with bit 1 (T4)", ext([tensor("a", 21, [4], 0, 4)]), BAD_DTYPE

    # §4.2, §7.2: bit 1 is understood; a reader that implements it accepts extended dtypes either way.
    yield "bit 1 set, ordinary dtypes only", ext([tensor("a", f32, [4], 0, 16)]), OK
    yield "bit 1 set, no name, no tensors", build([], incompatible=EXT), OK
    yield "bit 1 set, extended dtype", ext([tensor("q", q8_0, [32], 0, 34), tensor("r", f8, [4], 64, 4)]), OK
    yield "extended dtype without bit 1 (§7.2)", build([tensor("q", q8_0, [32], 0, 34)]), OK
    yield "bit 1 named as compatible, set as incompatible", build(
        [tensor("q", c64, [1], 0, 8)], incompatible=EXT, feature_names=[(1, 0, "not this one")]), OK
    yield "bit 1 in compatible_features, extended dtype", build(
        [tensor("q", q4_k, [256], 0, 144)], compatible=EXT), OK
    yield "bit 0 still refused (H4)", build([], incompatible=1), "MPK_ERR_UNSUPPORTED_FEATURE"
    yield "bits 0 and 1 (H4)", ext([tensor("q", q8_0, [32], 0, 34)], incompatible=3,
                                   feature_names=EXT_NAME + [(0, 1, "zstd")]), "MPK_ERR_UNSUPPORTED_FEATURE"
    yield "bit 2 still refused (H4)", ext([], incompatible=EXT | 4), "MPK_ERR_UNSUPPORTED_FEATURE"
    yield "bit 1 with encoding 1 (T5)", ext([tensor("q", q8_0, [32], 0, 34, encoding=1)]), \
        "MPK_ERR_UNSUPPORTED_FEATURE"

    # §6.5, §9.1: typed scalars (tag 11). Value in the low `dtype size` bytes; the rest ignored.
    scalars = [(1, 0x400921FB54442D18), (2, 0x3FC00000), (3, 0x3C00), (4, 0x3FC0), (5, (1 << 64) - 5),
               (6, 0x80000000), (7, 0xFFFF), (8, 0x80), (9, (1 << 64) - 1), (10, 0xFFFFFFFF), (11, 0xABCD),
               (12, 0xFE), (13, 1)]
    for dt, bits in scalars:
        yield f"typed scalar {read_mpk.DTYPES[dt][0]} (§9.1)", build([], metadata=[meta("k", 11, typed(dt, bits))]), OK
    yield "typed scalars with junk above the value", build([], metadata=sorted([
        meta("u8", 11, typed(12, 0xFFFFFFFFFFFFFF07)), meta("i16", 11, typed(7, 0x12348000)),
        meta("f32", 11, typed(2, 0xDEADBEEF3F800000)), meta("f16", 11, typed(3, 0xFFFF0000FFFFC000)),
        meta("bf16", 11, typed(4, 0x11110000BF80)), meta("bool", 11, typed(13, 0xFF02)),
        meta("bool0", 11, typed(13, 0xFF00))], key=lambda m: m.fields[0][1].data)), OK
    yield "typed scalars: NaN, infinities, -0", build([], metadata=sorted([
        meta("f64nan", 11, typed(1, 0x7FF8000000000001)), meta("f32inf", 11, typed(2, 0xFF800000)),
        meta("f16nan", 11, typed(3, 0x7E00)), meta("bf16inf", 11, typed(4, 0x7F80)),
        meta("negzero", 11, typed(1, 1 << 63)), meta("f16sub", 11, typed(3, 0x0001))],
        key=lambda m: m.fields[0][1].data)), OK
    yield "typed scalar, bits absent = 0", build([], metadata=[meta("k", 11, typed(10))]), OK
    yield "typed scalar, dtype absent (INVALID): unknown", build([], metadata=[meta("k", 11, typed(None, 7))]), OK
    yield "typed scalar, empty table: unknown", build([], metadata=[meta("k", 11, T({}))]), OK
    for dt in (0, 14, 20, 32, 36, 43, 21, 999):
        yield f"typed scalar dtype {dt}: unknown (§9.1)", build([], metadata=[meta("k", 11, typed(dt, 1))]), OK
    yield "typed scalar without value: unknown", build([], metadata=[meta("k", 11, None)]), OK

    # typed arrays (tag 12): whole elements only, no alignment required.
    arrays = [(1, struct.pack("<2d", 1.5, -2.25)), (2, struct.pack("<3f", 0.1, 1e30, -0.0)),
              (3, struct.pack("<2H", 0x3555, 0xFC00)), (4, struct.pack("<2H", 0x4049, 0x0001)),
              (5, struct.pack("<2q", -(1 << 63), 7)), (6, struct.pack("<i", -1)), (7, struct.pack("<3h", 1, -2, 3)),
              (8, bytes([0x7F, 0x80, 0xFF])), (9, struct.pack("<Q", (1 << 64) - 1)),
              (10, struct.pack("<2I", 1, 1 << 31)),
              (11, struct.pack("<H", 65535)), (12, bytes(range(0, 250, 50))), (13, bytes([0, 1, 2, 255]))]
    for dt, data in arrays:
        yield f"typed array {read_mpk.DTYPES[dt][0]} (§9.1)", build(
            [], metadata=[meta("k", 12, typed_array(dt, data))]), OK
    yield "typed array u64 data at 4 mod 8 (§9.1: not required)", build(
        [], metadata=[meta("k", 12, typed_array(9, struct.pack("<2Q", 1, 2), misalign=True))]), OK
    yield "typed array f64 data at 4 mod 8", build(
        [], metadata=[meta("k", 12, typed_array(1, struct.pack("<d", 0.5), misalign=True))]), OK
    yield "typed array, empty data", build([], metadata=[meta("k", 12, typed_array(2, b""))]), OK
    yield "typed array, data absent", build([], metadata=[meta("k", 12, typed_array(6))]), OK
    yield "typed array u32 with 6 bytes: unknown (§9.1)", build(
        [], metadata=[meta("k", 12, typed_array(10, bytes(6)))]), OK
    yield "typed array f64 with 7 bytes: unknown", build([], metadata=[meta("k", 12, typed_array(1, bytes(7)))]), OK
    yield "typed array f16 with 1 byte: unknown", build([], metadata=[meta("k", 12, typed_array(3, b"\x01"))]), OK
    for dt in (0, 19, 36):
        yield f"typed array dtype {dt}: unknown", build([], metadata=[meta("k", 12, typed_array(dt, bytes(36)))]), OK
    yield "typed array, dtype absent: unknown", build([], metadata=[meta("k", 12, T({1: ref(V([1, 2], "B"))}))]), OK

    # lists (tag 13): any items, unknown ones included; depth rule M5; M4 inside lists.
    mixed = vlist([
        (1, T({0: ref(S("s"))})), (2, int_table(-3)), (3, T({0: ("d", 2.5)})), (4, T({0: ("B", 1)})),
        (5, T({0: ref(V([0xAB], "B"))})), (6, T({0: ref(V([S("x"), S("")]))})),
        (7, T({0: ref(V([1, -1], "q"))})), (8, T({0: ref(V([0.25], "d"))})), (9, T({0: ref(V([0, 3], "B"))})),
        (10, T({0: ref(V([T({0: ref(V([1, 2], "B"))})]))})), (11, typed(11, 300)),
        (12, typed_array(7, struct.pack("<2h", -1, 2))), (13, vlist([(2, int_table(1)), (13, vlist([]))])),
        (13, vlist([])), (13, vlist(None)), (0, None), (0, int_table(5)), (99, S("future")), (200, None),
        (2, None), (11, typed(36, 1)), (12, typed_array(2, bytes(3)))])
    yield "list of every item type, unknown items included (§9.1)", build([], metadata=[meta("k", 13, mixed)]), OK
    yield "empty list", build([], metadata=[meta("k", 13, vlist([]))]), OK
    yield "list, items absent", build([], metadata=[meta("k", 13, vlist(None))]), OK
    yield "list without value: unknown", build([], metadata=[meta("k", 13, None)]), OK
    yield "list of lists of typed values", build([], metadata=[meta("k", 13, vlist(
        [(13, vlist([(11, typed(2, 0x40490FDB)), (12, typed_array(12, b"\x01\x02"))])),
         (13, vlist([(13, vlist([]))]))]))]), OK
    leaf = [(2, int_table(16))]
    # Lists at depths 1..6 (Header > MetaEntry > ValueList > ListItem > ... stays within the 16 nested
    # tables of §5.2 rule 9), M4 inside them, and the order of M4 and M5.
    yield "items at depth 7 (16 nested tables)", build([], metadata=[meta("k", 13, nested(6, leaf))]), OK
    yield "empty list at depth 7", build([], metadata=[meta("k", 13, nested(7, []))]), OK
    yield "items at depth 6 in component metadata", build([], components=(
        component("w", "weights", [meta("k", 13, nested(5, leaf))]),)), OK
    yield "lists nested 40 deep: more than 16 nested tables (§5.2 rule 9)", build(
        [], metadata=[meta("k", 13, nested(40, []))]), "MPK_ERR_CORRUPT_HEADER"
    def mis(tag):  # a misaligned non-empty Int64Array (7) or Float64Array (8) item
        return tag, T({0: ref(V([1] if tag == 7 else [1.0], "q" if tag == 7 else "d", misalign=True))})
    yield "misaligned int64 array inside a list (M4)", build(
        [], metadata=[meta("k", 13, vlist([(2, int_table(1)), mis(7)]))]), "MPK_ERR_CORRUPT_HEADER"
    yield "misaligned float64 array at depth 5 (M4)", build(
        [], metadata=[meta("k", 13, nested(4, [mis(8)]))]), "MPK_ERR_CORRUPT_HEADER"
    yield "misaligned int64 array inside a component's list (C4/M4)", build([], components=(
        component("w", "weights", [meta("k", 13, vlist([mis(7)]))]),)), "MPK_ERR_CORRUPT_HEADER"
    yield "empty misaligned int64 array inside a list", build(
        [], metadata=[meta("k", 13, vlist([(7, T({0: ref(V([], "q", misalign=True))}))]))]), OK
    yield "misaligned array under an unknown item tag", build(
        [], metadata=[meta("k", 13, vlist([(42, T({0: ref(V([1], "q", misalign=True))}))]))]), OK
    yield "M4 of an item before M4 of a later, deeper item", build([], metadata=[meta("k", 13, vlist(
        [(13, nested(3, [(2, int_table(1))])), mis(8), (13, nested(2, [mis(7)]))]))]), "MPK_ERR_CORRUPT_HEADER"
    yield "M4 of an entry's list before M1 of the next entry", build([], metadata=[
        meta("a", 13, vlist([mis(7)])), meta("b\x00", 2, int_table(1))]), "MPK_ERR_CORRUPT_HEADER"
    yield "M1 of an entry before M4 of its list", build([], metadata=[
        meta("a\x00", 13, vlist([mis(7)]))]), "MPK_ERR_BAD_NAME"

    # Rule M5 at depth 16 (up to 35 nested tables, within the 64 of §5.2 rule 9).
    yield "items at depth 16 (M5)", build([], metadata=[meta("k", 13, nested(15, leaf))]), OK
    yield "lists at depth 16 holding items at depth 17 (M5)", build(
        [], metadata=[meta("k", 13, nested(16, leaf))]), "MPK_ERR_LIMIT"
    yield "empty list at depth 16 (M5)", build([], metadata=[meta("k", 13, nested(16, []))]), OK
    yield "list at depth 16, items absent", build([], metadata=[meta("k", 13, nested(16, None))]), OK
    yield "list at depth 16 holding a NONE item (M5)", build(
        [], metadata=[meta("k", 13, nested(16, [(0, None)]))]), "MPK_ERR_LIMIT"
    yield "list at depth 16 holding an unknown item (M5)", build(
        [], metadata=[meta("k", 13, nested(16, [(77, S("x"))]))]), "MPK_ERR_LIMIT"
    yield "list at depth 16 holding an empty list (M5)", build(
        [], metadata=[meta("k", 13, nested(16, [(13, vlist([]))]))]), "MPK_ERR_LIMIT"
    yield "list at depth 17 (M5)", build([], metadata=[meta("k", 13, nested(17, []))]), "MPK_ERR_LIMIT"
    yield "lists at depth 16 in component metadata (C4/M5)", build([], components=(
        component("w", "weights", [meta("k", 13, nested(16, leaf))]),)), "MPK_ERR_LIMIT"
    yield "items at depth 16 in component metadata", build([], components=(
        component("w", "weights", [meta("k", 13, nested(15, leaf))]),)), OK
    yield "many lists at depth 16, all empty", build([], metadata=[meta("k", 13, nested(
        15, [(13, vlist([])), (13, vlist([])), (13, vlist(None)), (11, typed(12, 1))]))]), OK
    yield "bytes array at depth 16", build([], components=(component("w", "weights", [meta("k", 13, nested(
        15, [(10, T({0: ref(V([T({0: ref(V([1], "B"))})]))}))]))]),)), OK
    yield "misaligned int64 array at depth 16 (M4)", build(
        [], metadata=[meta("k", 13, nested(15, [(2, int_table(0)), mis(7)]))]), "MPK_ERR_CORRUPT_HEADER"
    yield "M4 of an item before M5 of the next (M5)", build([], metadata=[meta("k", 13, vlist(
        [mis(7), (13, nested(16, leaf))]))]), "MPK_ERR_CORRUPT_HEADER"
    yield "M5 of an item before M4 of the next (M5)", build([], metadata=[meta("k", 13, vlist(
        [(13, nested(16, leaf)), mis(8)]))]), "MPK_ERR_LIMIT"
    yield "a list's M5 before its items' M4", build([], metadata=[meta("k", 13, nested(16, [mis(7)]))]), \
        "MPK_ERR_LIMIT"
    yield "M5 of an entry before M1 of the next", build([], metadata=[
        meta("a", 13, nested(16, leaf)), meta("b\x00", 2, int_table(1))]), "MPK_ERR_LIMIT"
    yield "M3 of an entry before its M5", build([], metadata=[
        meta("b", 2, int_table(1)), meta("a", 13, nested(16, leaf))]), "MPK_ERR_UNSORTED"
    yield "metadata M5 before tensors", build([tensor("a", 0, [1], 0, 4)], metadata=[
        meta("k", 13, nested(17, []))]), "MPK_ERR_LIMIT"
    # The Verifier's nesting bound (§5.2 rule 9: more than 64 nested tables, the root at 1) comes first:
    # a list at depth d is at table depth 2d + 1, 2d + 2 in component metadata.
    byts = lambda: (10, T({0: ref(V([T({0: ref(V([1], "B"))})]))}))  # noqa: E731  BytesArray > BytesValue
    in_comp = lambda v: build([], components=(component("w", "weights", [meta("k", 13, v)]),))  # noqa: E731
    yield "empty list at depth 31: 63 nested tables, then M5", build(
        [], metadata=[meta("k", 13, nested(31, []))]), "MPK_ERR_LIMIT"
    yield "list at depth 31 holding a NONE item: 64 nested tables, then M5", build(
        [], metadata=[meta("k", 13, nested(31, [(0, None)]))]), "MPK_ERR_LIMIT"
    yield "list at depth 31 holding an int64: 65 nested tables (§5.2 rule 9)", build(
        [], metadata=[meta("k", 13, nested(31, leaf))]), "MPK_ERR_CORRUPT_HEADER"
    yield "empty list at depth 32: 65 nested tables (§5.2 rule 9)", build(
        [], metadata=[meta("k", 13, nested(32, []))]), "MPK_ERR_CORRUPT_HEADER"
    yield "bytes array at depth 31: 64 nested tables, then M5", build(
        [], metadata=[meta("k", 13, nested(30, [byts()]))]), "MPK_ERR_LIMIT"
    yield "component: empty list at depth 31: 64 nested tables, then M5", in_comp(nested(31, [])), "MPK_ERR_LIMIT"
    yield "component: list at depth 31 holding a NONE item: 65 nested tables", in_comp(
        nested(31, [(0, None)])), "MPK_ERR_CORRUPT_HEADER"
    yield "component: bytes array at depth 31: 65 nested tables", in_comp(nested(30, [byts()])), \
        "MPK_ERR_CORRUPT_HEADER"
    yield "list item value out of the header (§5.2 rule 4)", build(
        [], metadata=[meta("k", 13, T({0: ref(V([T({0: ("B", 2), 1: ("ref", 0x7FFF0000)})]))}))]), \
        "MPK_ERR_CORRUPT_HEADER"
    yield "unknown list item, value out of the header (§5.2 rule 4)", build(
        [], metadata=[meta("k", 13, T({0: ref(V([T({0: ("B", 99), 1: ("ref", 0x7FFF0000)})]))}))]), \
        "MPK_ERR_CORRUPT_HEADER"
    yield "typed array data out of the header (§5.2 rule 4)", build(
        [], metadata=[meta("k", 12, T({0: ("H", 12), 1: ("ref", 0x7FFF0000)}))]), "MPK_ERR_CORRUPT_HEADER"
    yield "typed array of a disallowed dtype, data out of the header", build(
        [], metadata=[meta("k", 12, T({0: ("H", 14), 1: ("ref", 0x7FFF0000)}))]), "MPK_ERR_CORRUPT_HEADER"
    yield "extended dtypes and every 1.1 metadata type together", ext(
        [tensor("f", f4, [4], 64, 2), tensor("q", q4_0, [2, 32], 0, 36)], metadata=[
            meta("l", 13, mixed), meta("t", 11, typed(10, 32)), meta("ta", 12, typed_array(2, struct.pack("<f", 1.0)))],
        components=(component("weights", "weights", [meta("c", 13, nested(5, leaf))]),)), OK


def build_with_ident(ident):
    f = bytearray(build([tensor("a", 2, [4], 0, 16)]))
    h_off = struct.unpack_from("<Q", f, 32)[0]
    f[h_off + 4:h_off + 8] = ident
    h_size = struct.unpack_from("<Q", f, 40)[0]
    struct.pack_into("<Q", f, 64, xxhash.xxh3_64_intdigest(bytes(f[h_off:h_off + h_size])))
    struct.pack_into("<Q", f, 88, xxhash.xxh3_64_intdigest(bytes(f[:88])))
    return bytes(f)


CLI_STATUS = re.compile(r"mpk: error: (MPK_[A-Z_]+):")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("mpk", nargs="?")
    ap.add_argument("--keep", help="write every case into this directory")
    args = ap.parse_args()
    passed = failed = 0
    with tempfile.TemporaryDirectory(prefix="mpk-craft-") as tmp:
        for label, data, want in itertools.chain(cases(), cases_1_1()):
            name = re.sub(r"[^A-Za-z0-9_.+-]+", "_", label).strip("_") + ".mpk"
            path = os.path.join(args.keep or tmp, name)
            if args.keep:
                os.makedirs(args.keep, exist_ok=True)
            with open(path, "wb") as out:
                out.write(data)
            try:
                read_mpk.read(path, "full")
                got_py = "MPK_OK"
            except read_mpk.MpkError as e:
                got_py = e.status
            except Exception as e:
                got_py = f"PYTHON {type(e).__name__}: {e}"
            got_lib = "(not run)"
            if args.mpk:
                r = subprocess.run([args.mpk, "verify", path], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   text=True, errors="replace", timeout=60)
                m = CLI_STATUS.search(r.stderr)
                got_lib = "MPK_OK" if r.returncode == 0 else (m.group(1) if m else f"exit {r.returncode}")
            detail = ""
            if args.mpk and got_py == want == got_lib == "MPK_OK":
                # Both accept: what they report must match too (read_mpk summary vs mpk inspect).
                size, pre, hdr = read_mpk.read(path, "full")
                mine = read_mpk.summary(path, size, pre, hdr, "full")
                r = subprocess.run([args.mpk, "inspect", "--json", path], stdout=subprocess.PIPE, timeout=60)
                lib = json.loads(r.stdout)
                for d in (mine, lib):
                    d.pop("file", None)
                    d.pop("verified", None)
                if mine != lib:
                    detail = f" (summaries differ: {json.dumps(mine)} vs {json.dumps(lib)})"
            if got_py == want and (not args.mpk or got_lib == want) and not detail:
                passed += 1
            else:
                failed += 1
                print(f"FAIL {label}: documented {want}, read_mpk {got_py}, mpk {got_lib}{detail}")
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
