#!/usr/bin/python3
"""read_mpk.py - an independent reader of modelpack (.mpk) files, written from docs/FORMAT.md alone.

It shares no code with libmodelpack: the preamble, the FlatBuffers header (tables, vtables, vectors,
strings, unions) and every validation rule are implemented here with `struct`, following the
numbered rules of docs/FORMAT.md section 12 in their order. It exists to prove that the document is
enough to write a reader, and to cross-check libmodelpack against it (tests/spec/test_spec.sh).
It reads format 1.1: the extended dtypes with their blocks (§7.2-7.4, rules T8a-T10), incompatible
feature bit 1, and the metadata value types 11-13 (typed scalar, typed array, list; §6.5, §9.1,
rules M4 and M5).

Usage: read_mpk.py FILE [--verify none|header|full] [--max-header-bytes N]

On success prints a JSON summary (the keys of `mpk inspect --json`, plus "verified") and exits 0.
On a broken file prints "read_mpk: error: MPK_ERR_<NAME>: <message>" to stderr and exits 1.
Requires Python 3 and the `xxhash` module (Debian: python3-xxhash) for XXH3-64 / XXH3-128.
"""

import argparse
import json
import math
import os
import struct
import sys

import xxhash

# ---- FORMAT.md §15.5: status codes ----------------------------------------------------------------
BAD_MAGIC = "MPK_ERR_BAD_MAGIC"
UNSUPPORTED_VERSION = "MPK_ERR_UNSUPPORTED_VERSION"
UNSUPPORTED_FEATURE = "MPK_ERR_UNSUPPORTED_FEATURE"
TRUNCATED = "MPK_ERR_TRUNCATED"
CHECKSUM = "MPK_ERR_CHECKSUM"
CORRUPT_HEADER = "MPK_ERR_CORRUPT_HEADER"
OUT_OF_BOUNDS = "MPK_ERR_OUT_OF_BOUNDS"
OVERLAP = "MPK_ERR_OVERLAP"
MISALIGNED = "MPK_ERR_MISALIGNED"
OVERFLOW = "MPK_ERR_OVERFLOW"
DUPLICATE = "MPK_ERR_DUPLICATE"
UNSORTED = "MPK_ERR_UNSORTED"
BAD_SHAPE = "MPK_ERR_BAD_SHAPE"
BAD_DTYPE = "MPK_ERR_BAD_DTYPE"
LIMIT = "MPK_ERR_LIMIT"
BAD_NAME = "MPK_ERR_BAD_NAME"
IO = "MPK_ERR_IO"


class MpkError(Exception):
    def __init__(self, status, message):
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message


def fail(status, message):
    raise MpkError(status, message)


# ---- FORMAT.md §1, §3, §7.2, §14: constants -------------------------------------------------------
U64 = (1 << 64) - 1
PREAMBLE_SIZE = 96
MAGIC = bytes([0x89, 0x4D, 0x50, 0x4B, 0x0D, 0x0A, 0x1A, 0x0A])
FORMAT_MAJOR = 1
FEATURE_EXTENDED_DTYPES = 1 << 1  # §4.2, §15.4: incompatible bit 1, "extended-dtypes" (format 1.1)
KNOWN_INCOMPATIBLE = FEATURE_EXTENDED_DTYPES
MAX_RANK = 32
MAX_NAME_BYTES = 65535
MAX_ALIGNMENT = 65536
DEFAULT_MAX_HEADER_BYTES = 256 * 1024 * 1024
CONTENT_ID_DOMAIN = b"modelpack content id v1\x00"

# §7.2: value -> (name, block elements, block bytes, how blocks run). Ordinary dtypes have blocks of
# one element; "whole": packed narrow floats, blocks over the whole tensor (the element count is a
# multiple of the block); "rows": ggml types, blocks along each row (rank >= 1 and the innermost
# dimension a multiple of the block). §7.3, rule T8a.
DTYPES = {
    1: ("f64", 1, 8, None), 2: ("f32", 1, 4, None), 3: ("f16", 1, 2, None), 4: ("bf16", 1, 2, None),
    5: ("i64", 1, 8, None), 6: ("i32", 1, 4, None), 7: ("i16", 1, 2, None), 8: ("i8", 1, 1, None),
    9: ("u64", 1, 8, None), 10: ("u32", 1, 4, None), 11: ("u16", 1, 2, None), 12: ("u8", 1, 1, None),
    13: ("bool", 1, 1, None),
    # format 1.1, incompatible feature bit 1
    14: ("f8_e4m3", 1, 1, None), 15: ("f8_e5m2", 1, 1, None), 16: ("f8_e8m0", 1, 1, None),
    17: ("f6_e2m3", 4, 3, "whole"), 18: ("f6_e3m2", 4, 3, "whole"), 19: ("f4_e2m1", 2, 1, "whole"),
    20: ("c64", 1, 8, None),
    32: ("q4_0", 32, 18, "rows"), 33: ("q4_1", 32, 20, "rows"), 34: ("q5_0", 32, 22, "rows"),
    35: ("q5_1", 32, 24, "rows"), 36: ("q8_0", 32, 34, "rows"), 37: ("q8_1", 32, 36, "rows"),
    38: ("q2_k", 256, 84, "rows"), 39: ("q3_k", 256, 110, "rows"), 40: ("q4_k", 256, 144, "rows"),
    41: ("q5_k", 256, 176, "rows"), 42: ("q6_k", 256, 210, "rows"), 43: ("q8_k", 256, 292, "rows"),
}

# §9.1: the dtypes a typed metadata value (tags 11, 12) may have: values 1..13, with their sizes.
TYPED_DTYPES = {v: DTYPES[v][2] for v in range(1, 14)}

# §9.1: union tag -> type name as `mpk inspect --json` prints it
META_TYPES = {
    1: "string", 2: "int64", 3: "float64", 4: "bool", 5: "bytes",
    6: "string[]", 7: "int64[]", 8: "float64[]", 9: "bool[]", 10: "bytes[]",
    11: "typed", 12: "typed[]", 13: "list",  # format 1.1
}
MAX_META_DEPTH = 16  # §9.1, rule M5: list items deeper than this are refused

# §5.2 rule 9: tables nested more than 64 deep (the root Header at depth 1) fail verification. A list
# value at depth d is 2d + 1 tables deep (Header > MetaEntry > ValueList > ListItem > ValueList ...),
# 2d + 2 in component metadata, so lists that rule M5 refuses pass the Verifier up to depth 31.
MAX_TABLE_DEPTH = 64


def hexq(v):
    return f"0x{v:x}"


def quote(b):
    return repr(bytes(b))[1:]


# ---- FORMAT.md §1: names --------------------------------------------------------------------------
def valid_utf8_no_nul(s):
    """Well-formed UTF-8 (no overlongs, no surrogates, <= U+10FFFF) without NUL bytes."""
    if b"\x00" in s:
        return False
    try:
        s.decode("utf-8", errors="strict")  # Python's decoder rejects overlongs and surrogates
    except UnicodeDecodeError:
        return False
    return True


def valid_name(s):
    return 0 < len(s) <= MAX_NAME_BYTES and valid_utf8_no_nul(s)


# ---- FORMAT.md §3, §12.1: preamble ----------------------------------------------------------------
def magic_diagnosis(b):
    def has(prefix):
        return b[:len(prefix)] == prefix

    if has(bytes([0x89]) + b"MPK\x0a\x1a\x0a"):
        return "damaged in transfer: CR LF was turned into LF (text-mode transfer)"
    if has(bytes([0x89]) + b"MPK\x0d\x0d\x0a") or has(bytes([0x89]) + b"MPK\x0d\x0a\x1a\x0d\x0a"):
        return "damaged in transfer: LF was turned into CR LF (text-mode transfer)"
    if has(b"\x09MPK"):
        return "damaged in transfer: the high bit was stripped (7-bit channel)"
    if has(bytes([0x89]) + b"MPK"):
        return "damaged magic"
    if has(b"GGUF"):
        return "this is a GGUF file"
    if has(b"\x93NUMPY"):
        return "this is a NumPy .npy file"
    if has(b"PK\x03\x04"):
        return "this is a zip archive (NumPy .npz?)"
    return "not a modelpack file"


def parse_preamble(b, file_size, max_header):
    avail = len(b)
    if avail == 0:                                                              # P1
        fail(TRUNCATED, "file is empty")
    if avail < 8 and b == MAGIC[:avail]:                                        # P2
        fail(TRUNCATED, f"file is {file_size} bytes, shorter than the 96-byte preamble")
    if b[:8] != MAGIC:                                                          # P3
        fail(BAD_MAGIC, "bad magic: " + magic_diagnosis(b))
    if avail < 16:                                                              # P4
        fail(TRUNCATED, f"file is {file_size} bytes, shorter than the 96-byte preamble")
    major, minor, psize = struct.unpack_from("<HHI", b, 8)
    if major != FORMAT_MAJOR:                                                   # P5
        fail(UNSUPPORTED_VERSION, f"format version {major}.{minor} is not supported (this reader reads 1.x)")
    if psize != PREAMBLE_SIZE:                                                  # P6
        fail(CORRUPT_HEADER, f"preamble size field is {psize}, format 1.x requires 96")
    if avail < PREAMBLE_SIZE:                                                   # P7
        fail(TRUNCATED, f"file is {file_size} bytes, shorter than the 96-byte preamble")
    (stored,) = struct.unpack_from("<Q", b, 88)
    computed = xxhash.xxh3_64_intdigest(b[:88])
    if stored != computed:                                                      # P8
        fail(CHECKSUM, f"preamble checksum mismatch: stored {hexq(stored)}, computed {hexq(computed)}")
    (incompat, compat, h_off, h_size, d_off, d_size, h_xxh3) = struct.unpack_from("<7Q", b, 16)
    p = dict(major=major, minor=minor, incompatible=incompat, compatible=compat,
             header_offset=h_off, header_size=h_size, data_offset=d_off, data_size=d_size,
             header_xxh3=h_xxh3)
    h_end, d_end = h_off + h_size, d_off + d_size
    if h_end > U64:                                                             # P9
        fail(OVERFLOW, f"header offset {hexq(h_off)} + size {hexq(h_size)} overflows")
    if d_end > U64:                                                             # P10
        fail(OVERFLOW, f"data offset {hexq(d_off)} + size {hexq(d_size)} overflows")
    if h_size > min(max_header, (1 << 31) - 2):                                 # P11 (and §5.2: FlatBuffers < 2^31 - 1)
        fail(LIMIT, f"header of {h_size} bytes exceeds the limit of {max_header} bytes")
    if h_size < 16:                                                             # P12
        fail(CORRUPT_HEADER, f"header size {h_size} is too small for a header")
    if h_off < PREAMBLE_SIZE or h_off % 8 != 0:                                 # P13
        fail(MISALIGNED, f"header offset {hexq(h_off)} must be a multiple of 8 past the preamble")
    if d_off < PREAMBLE_SIZE:                                                   # P14
        fail(OUT_OF_BOUNDS, f"data offset {hexq(d_off)} lies inside the preamble")
    if h_end > file_size:                                                       # P15
        fail(TRUNCATED, f"header [{hexq(h_off)},{hexq(h_end)}) extends past the end of the file ({file_size} bytes)")
    if d_end > file_size:                                                       # P16
        fail(TRUNCATED, f"data section [{hexq(d_off)},{hexq(d_end)}) extends past the end of the file ({file_size} bytes)")
    if d_size > 0 and h_off < d_end and d_off < h_end:                          # P17
        fail(OVERLAP, f"header [{hexq(h_off)},{hexq(h_end)}) overlaps the data section [{hexq(d_off)},{hexq(d_end)})")
    return p


# ---- FORMAT.md §5: FlatBuffers, hand-parsed and verified ------------------------------------------
class Corrupt(Exception):
    """A Verifier failure (§5.2); reported as MPK_ERR_CORRUPT_HEADER."""


class Table:
    def __init__(self, fb, pos, vt, vsize):
        self.fb, self.pos, self.vt, self.vsize = fb, pos, vt, vsize

    def entry(self, fid):
        """The field's position relative to the table, 0 when absent (§5.1)."""
        e = 4 + 2 * fid
        if e >= self.vsize:
            return 0
        return self.fb.u16(self.vt + e)

    def scalar(self, fid, fmt, default):
        off = self.entry(fid)
        if off == 0:
            return default
        size = struct.calcsize(fmt)
        p = self.pos + off
        self.fb.check(p % size == 0, f"misaligned {size}-byte field at h+{p:#x}")   # §5.2 rule 3
        self.fb.need(p, size)
        return struct.unpack_from("<" + fmt, self.fb.b, p)[0]

    def ref(self, fid):
        """Target position of a reference field, or None when absent (§5.2 rule 4)."""
        off = self.entry(fid)
        if off == 0:
            return None
        p = self.pos + off
        self.fb.check(p % 4 == 0, f"misaligned uoffset at h+{p:#x}")
        self.fb.need(p, 4)
        o = self.fb.u32(p)
        self.fb.check(o != 0 and o < (1 << 31), f"bad uoffset {o:#x} at h+{p:#x}")
        self.fb.need(p + o, 1)
        return p + o


class FB:
    def __init__(self, b):
        self.b = b
        self.size = len(b)
        self.visits = 0
        self.max_visits = min(self.size // 4 + 16, 1 << 30)
        self.depth = 0

    def check(self, ok, what):
        if not ok:
            raise Corrupt(what)

    def need(self, pos, n):
        self.check(0 <= pos and pos + n <= self.size, f"range h+{pos:#x}+{n} is outside the {self.size}-byte header")

    def u16(self, p):
        return struct.unpack_from("<H", self.b, p)[0]

    def u32(self, p):
        return struct.unpack_from("<I", self.b, p)[0]

    # §5.2 rule 2 and 9
    def table(self, pos):
        self.visits += 1
        self.depth += 1
        self.check(self.visits <= self.max_visits and self.depth <= MAX_TABLE_DEPTH,
                   "too many or too deeply nested tables")
        self.check(pos % 4 == 0, f"misaligned table at h+{pos:#x}")
        self.need(pos, 4)
        (soff,) = struct.unpack_from("<i", self.b, pos)
        vt = pos - soff
        self.check(vt % 2 == 0, f"misaligned vtable at h+{vt:#x}")
        self.need(vt, 2)
        vsize = self.u16(vt)
        self.check(vsize % 2 == 0, "odd vtable size")
        self.need(vt, vsize)
        return Table(self, pos, vt, vsize)

    def end_table(self):
        self.depth -= 1

    # §5.2 rule 5
    def vector(self, pos, esize):
        self.check(pos % 4 == 0, f"misaligned vector at h+{pos:#x}")
        self.need(pos, 4)
        n = self.u32(pos)
        self.need(pos, 4 + n * esize)
        return n

    def string(self, pos):
        if pos is None:
            return None
        n = self.vector(pos, 1)
        end = pos + 4 + n
        self.need(end, 1)
        self.check(self.b[end] == 0, f"string at h+{pos:#x} lacks its NUL terminator")
        return bytes(self.b[pos + 4:end])

    def scalars(self, pos, fmt):
        if pos is None:
            return []
        size = struct.calcsize(fmt)
        n = self.vector(pos, size)
        # Element alignment is not a Verifier check (§5.2 rule 5); the 8-byte vectors are checked
        # later, by rules T6 and M4 (see misaligned8).
        return list(struct.unpack_from(f"<{n}{fmt}", self.b, pos + 4))


    # §5.2 rule 6
    def elements(self, pos):
        """Positions of the objects a vector of tables or strings refers to."""
        if pos is None:
            return []
        n = self.vector(pos, 4)
        return [pos + 4 + 4 * i + self.u32(pos + 4 + 4 * i) for i in range(n)]

    def strings(self, pos):
        return [self.string(p) for p in self.elements(pos)]


def misaligned8(fb, pos):
    """True for a non-empty vector at pos whose elements are not at a multiple of 8 (§5.2, T6, M4)."""
    return pos is not None and fb.u32(pos) > 0 and (pos + 4) % 8 != 0


class Meta:
    """A metadata value (§9.1): its type name as `mpk inspect --json` prints it ("unknown" for what
    reads as unknown), its Python value, whether it breaks M4 (an 8-byte array whose elements are not
    8-aligned), and for a list its items (Meta objects; a list's value is that list)."""

    def __init__(self, type_, value=None, misaligned=False):
        self.type, self.value, self.misaligned = type_, value, misaligned


UNKNOWN = "unknown"


def parse_union(fb, tag, pos):
    """The value of a union field pair (MetaEntry.value_type/value or ListItem's, §6.4, §6.5): a tag
    and the position its uoffset points to (None when absent). Unknown tags, tag 0 and a known tag
    without value read as unknown (§9.1); only known tags are verified further (§5.2 rule 8)."""
    if tag not in META_TYPES or pos is None:
        return Meta(UNKNOWN)
    return parse_value(fb, tag, pos)


def parse_value(fb, tag, pos):
    """A metadata value table of a known tag (§6.5), verified as that table (§5.2)."""
    t = fb.table(pos)
    m = Meta(META_TYPES[tag])
    if tag == 1:
        v = fb.string(t.ref(0))
        m.value = b"" if v is None else v
    elif tag == 2:
        m.value = t.scalar(0, "q", 0)
    elif tag == 3:
        m.value = t.scalar(0, "d", 0.0)
    elif tag == 4:
        m.value = t.scalar(0, "B", 0) != 0
    elif tag == 5:
        m.value = bytes(fb.scalars(t.ref(0), "B"))
    elif tag == 6:
        m.value = fb.strings(t.ref(0))
    elif tag in (7, 8):
        vpos = t.ref(0)
        m.value = fb.scalars(vpos, "q" if tag == 7 else "d")
        m.misaligned = misaligned8(fb, vpos)                                     # checked by M4
    elif tag == 9:
        m.value = [x != 0 for x in fb.scalars(t.ref(0), "B")]
    elif tag == 10:  # a vector of BytesValue tables
        m.value = []
        for p in fb.elements(t.ref(0)):
            item = fb.table(p)
            m.value.append(bytes(fb.scalars(item.ref(0), "B")))
            fb.end_table()
    elif tag == 11:  # TypedScalar: dtype (id 0), bits (id 1)
        dtype = t.scalar(0, "H", 0)
        bits = t.scalar(1, "Q", 0)
        if dtype in TYPED_DTYPES:
            # The value is in the low `dtype size` bytes; readers ignore the others (§9.1).
            m.value = (dtype, [bits.to_bytes(8, "little")[:TYPED_DTYPES[dtype]]])
        else:                                                                    # §9.1: reads as unknown
            m = Meta(UNKNOWN)
    elif tag == 12:  # TypedArray: dtype (id 0), data (id 1), no alignment required
        dtype = t.scalar(0, "H", 0)
        data = bytes(fb.scalars(t.ref(1), "B"))
        size = TYPED_DTYPES.get(dtype)
        if size is not None and len(data) % size == 0:
            m.value = (dtype, [data[i:i + size] for i in range(0, len(data), size)])
        else:                                                                    # §9.1: reads as unknown
            m = Meta(UNKNOWN)
    else:  # 13: ValueList: items (id 0), a vector of ListItem tables (value_type id 0, value id 1)
        m.value = []
        for p in fb.elements(t.ref(0)):
            item = fb.table(p)
            m.value.append(parse_union(fb, item.scalar(0, "B", 0), item.ref(1)))
            fb.end_table()
    fb.end_table()
    return m


def parse_metadata(fb, pos):
    out = []
    for p in fb.elements(pos):
        t = fb.table(p)
        key = fb.string(t.ref(0))
        fb.check(key is not None, "MetaEntry.key is required")                   # §5.2 rule 7
        value = parse_union(fb, t.scalar(1, "B", 0), t.ref(2))                    # §5.2 rule 8, §9.1
        fb.end_table()
        out.append(dict(key=key, value=value))
    return out


def parse_header(b):
    """Verifies (§5.2) and reads the whole header (§6) into Python values."""
    fb = FB(b)
    fb.check(fb.size >= 12, "header too small")
    fb.check(b[4:8] == b"MPKH", "no MPKH identifier")
    root = fb.u32(0)
    fb.check(root != 0 and root < (1 << 31), "bad root offset")
    fb.need(root, 1)
    h = fb.table(root)
    hdr = dict(
        format_major=h.scalar(0, "H", 0),
        format_minor=h.scalar(1, "H", 0),
        alignment=h.scalar(2, "I", 64),
    )
    tensors = []
    for p in fb.elements(h.ref(3)):
        t = fb.table(p)
        name = fb.string(t.ref(0))
        fb.check(name is not None, "Tensor.name is required")
        shape_pos = t.ref(2)
        tensors.append(dict(
            name=name,
            dtype=t.scalar(1, "H", 0),
            shape=fb.scalars(shape_pos, "Q"),
            shape_misaligned=misaligned8(fb, shape_pos),
            component=t.scalar(3, "I", 0),
            offset=t.scalar(4, "Q", 0),
            size=t.scalar(5, "Q", 0),
            xxh3=t.scalar(6, "Q", 0),
            encoding=t.scalar(7, "B", 0),
        ))
        fb.end_table()
    hdr["tensors"] = tensors
    order_pos = h.ref(4)
    hdr["data_order"] = fb.scalars(order_pos, "I")
    components = []
    for p in fb.elements(h.ref(5)):
        t = fb.table(p)
        name = fb.string(t.ref(0))
        fb.check(name is not None, "Component.name is required")
        kind = fb.string(t.ref(1))
        components.append(dict(name=name, kind=b"" if kind is None else kind, metadata=parse_metadata(fb, t.ref(2))))
        fb.end_table()
    hdr["components"] = components
    hdr["metadata"] = parse_metadata(fb, h.ref(6))
    hdr["content_id"] = fb.string(h.ref(7))
    features = []
    for p in fb.elements(h.ref(8)):
        t = fb.table(p)
        features.append(dict(bit=t.scalar(0, "B", 0), incompatible=t.scalar(1, "B", 0) != 0, name=fb.string(t.ref(2))))
        fb.end_table()
    hdr["feature_names"] = features
    w = fb.string(h.ref(9))
    hdr["writer"] = b"" if w is None else w
    fb.end_table()
    return hdr


# ---- FORMAT.md §11: content id --------------------------------------------------------------------
def content_id(tensors):
    m = bytearray(CONTENT_ID_DOMAIN)
    for t in tensors:
        m += struct.pack("<I", len(t["name"])) + t["name"]
        m += struct.pack("<HI", t["dtype"], len(t["shape"]))
        m += struct.pack(f"<{len(t['shape'])}Q", *t["shape"])
        m += struct.pack("<Q", t["xxh3"])
    digest = xxhash.xxh3_128_intdigest(bytes(m))
    hi, lo = digest >> 64, digest & U64
    return f"mpk1-{hi:016x}{lo:016x}"


# ---- FORMAT.md §12.2, §12.3: validation ------------------------------------------------------------
def check_value(m, depth, where):
    """M4 and M5 for a value at `depth` (a top-level value is at depth 1), then, for a list, for each
    of its items in order at depth + 1 (§9.1, §12.3)."""
    if m.misaligned:                                                            # M4
        fail(CORRUPT_HEADER, f"{where}: array is not 8-byte aligned")
    if m.type == "list":
        if m.value and depth >= MAX_META_DEPTH:                                 # M5
            fail(LIMIT, f"{where}: list items at depth {depth + 1}, deeper than {MAX_META_DEPTH}")
        for i, item in enumerate(m.value):
            check_value(item, depth + 1, f"{where}[{i}]")


def check_metadata(entries, where):
    prev = None
    for i, e in enumerate(entries):
        key = e["key"]
        if not valid_name(key):                                                 # M1
            fail(BAD_NAME, f"{where} entry {i} has an invalid key {quote(key)}")
        if prev is not None:
            if key == prev:                                                     # M2
                fail(DUPLICATE, f"{where} key {quote(key)} appears twice")
            if key < prev:                                                      # M3 (bytes compare byte-wise)
                fail(UNSORTED, f"{where} keys are not sorted: {quote(prev)} before {quote(key)}")
        prev = key
        check_value(e["value"], 1, f"{where} {quote(key)}")                      # M4, M5


def validate(pre, hb, verify):
    if verify != "none":                                                        # H1
        computed = xxhash.xxh3_64_intdigest(hb)
        if computed != pre["header_xxh3"]:
            fail(CHECKSUM, f"header checksum mismatch: stored {hexq(pre['header_xxh3'])}, computed {hexq(computed)}")
    if hb[4:8] != b"MPKH":                                                      # H2
        fail(CORRUPT_HEADER, "the header does not carry the 'MPKH' identifier")
    try:                                                                        # H3
        hdr = parse_header(hb)
    except Corrupt as e:
        fail(CORRUPT_HEADER, f"the header is not a valid modelpack FlatBuffer ({e})")

    unknown = pre["incompatible"] & ~KNOWN_INCOMPATIBLE                         # H4
    if unknown:
        names = []
        for bit in range(64):
            if unknown >> bit & 1:
                name = None
                for f in hdr["feature_names"]:
                    if f["bit"] == bit and f["incompatible"] and f["name"] is not None:
                        name = f["name"]
                names.append(f"{quote(name)} (bit {bit})" if name is not None else f"bit {bit}")
        fail(UNSUPPORTED_FEATURE, "the file needs incompatible feature(s) " + ", ".join(names))

    align = hdr["alignment"]
    if align == 0 or align & (align - 1) or align > MAX_ALIGNMENT:             # H5
        fail(CORRUPT_HEADER, f"alignment {align} is not a power of two in [1, 65536]")
    if pre["data_offset"] % align:                                              # H6
        fail(MISALIGNED, f"data section offset {hexq(pre['data_offset'])} is not a multiple of the alignment {align}")

    comps = hdr["components"]
    seen = set()
    for i, c in enumerate(comps):
        if not valid_name(c["name"]):                                           # C1
            fail(BAD_NAME, f"component {i} has an invalid name {quote(c['name'])}")
        if len(c["kind"]) > MAX_NAME_BYTES or not valid_utf8_no_nul(c["kind"]):  # C2
            fail(BAD_NAME, f"component {quote(c['name'])} has an invalid kind {quote(c['kind'])}")
        if c["name"] in seen:                                                   # C3
            fail(DUPLICATE, f"component {quote(c['name'])} appears twice")
        seen.add(c["name"])
        check_metadata(c["metadata"], f"component {quote(c['name'])} metadata")  # C4
    check_metadata(hdr["metadata"], "metadata")                                 # M1-M5

    tensors = hdr["tensors"]
    d_off, d_size = pre["data_offset"], pre["data_size"]
    prev = None
    for i, t in enumerate(tensors):
        name = t["name"]
        if not valid_name(name):                                                # T1
            fail(BAD_NAME, f"tensor {i} has an invalid name {quote(name)}")
        if prev is not None:
            if name == prev:                                                    # T2
                fail(DUPLICATE, f"tensor {quote(name)} appears twice")
            if name < prev:                                                     # T3
                fail(UNSORTED, f"tensors are not sorted by name: {quote(prev)} before {quote(name)}")
        prev = name
        if t["dtype"] not in DTYPES:                                            # T4
            fail(BAD_DTYPE, f"tensor {quote(name)} has unknown dtype {t['dtype']}")
        if t["encoding"] != 0:                                                  # T5
            fail(UNSUPPORTED_FEATURE, f"tensor {quote(name)} uses encoding {t['encoding']}, which format 1.1 does not define")
        if t["shape_misaligned"]:                                               # T6
            fail(CORRUPT_HEADER, f"tensor {quote(name)}: shape vector is not 8-byte aligned")
        if len(t["shape"]) > MAX_RANK:                                          # T7
            fail(BAD_SHAPE, f"tensor {quote(name)} has {len(t['shape'])} dimensions, more than {MAX_RANK}")
        n = 1
        for d in t["shape"]:
            n *= d
            if n > U64:                                                         # T8
                fail(OVERFLOW, f"tensor {quote(name)}: element count of its shape overflows 64 bits")
        _, block_elems, block_bytes, blocks = DTYPES[t["dtype"]]
        if blocks == "rows" and (not t["shape"] or t["shape"][-1] % block_elems):  # T8a
            fail(BAD_SHAPE, f"tensor {quote(name)}: a {DTYPES[t['dtype']][0]} tensor needs rank >= 1 and an "
                            f"innermost dimension that is a multiple of {block_elems}, not shape {t['shape']}")
        if blocks == "whole" and n % block_elems:                               # T8a
            fail(BAD_SHAPE, f"tensor {quote(name)}: a {DTYPES[t['dtype']][0]} tensor needs an element count "
                            f"that is a multiple of {block_elems}, not {n}")
        nbytes = n // block_elems * block_bytes
        if nbytes > U64:                                                        # T9
            fail(OVERFLOW, f"tensor {quote(name)}: byte size of its shape overflows 64 bits")
        if nbytes != t["size"]:                                                 # T10
            fail(BAD_SHAPE, f"tensor {quote(name)} declares {t['size']} bytes but its shape needs {nbytes}")
        t["numel"] = n
        if t["component"] >= len(comps):                                        # T11
            fail(OUT_OF_BOUNDS, f"tensor {quote(name)} refers to component {t['component']} but the file has {len(comps)}")
        end = t["offset"] + t["size"]
        if end > U64:                                                           # T12
            fail(OVERFLOW, f"tensor {quote(name)}: offset + size overflows")
        if end > d_size:                                                        # T13
            fail(OUT_OF_BOUNDS, f"tensor {quote(name)} extends past the data section")
        if (d_off + t["offset"]) % align:                                       # T14
            fail(MISALIGNED, f"tensor {quote(name)} at {hexq(d_off + t['offset'])} is not aligned to {align} bytes")

    order = hdr["data_order"]
    if len(order) != len(tensors):                                              # D1
        fail(CORRUPT_HEADER, f"data_order has {len(order)} entries for {len(tensors)} tensors")
    seen_idx = [False] * len(tensors)
    prev = last = None  # previous entry; last non-empty entry
    for k, idx in enumerate(order):
        if idx >= len(tensors):                                                 # D2
            fail(CORRUPT_HEADER, f"data_order entry {k} is {idx}, past the {len(tensors)} tensors")
        if seen_idx[idx]:                                                       # D3
            fail(CORRUPT_HEADER, f"data_order lists tensor {quote(tensors[idx]['name'])} twice")
        seen_idx[idx] = True
        x = tensors[idx]
        if prev is not None and x["offset"] < prev["offset"]:                   # D4
            fail(UNSORTED, f"data_order is not in offset order: {quote(x['name'])} comes after {quote(prev['name'])}")
        if last is not None and x["size"] > 0 and x["offset"] < last["offset"] + last["size"]:  # D5
            fail(OVERLAP, f"tensor {quote(x['name'])} overlaps {quote(last['name'])}")
        prev = x
        if x["size"] > 0:
            last = x

    cid = content_id(tensors)
    stored = hdr["content_id"]
    if verify != "none" and stored is not None and stored != cid.encode():      # I1
        fail(CHECKSUM, f"content id mismatch: header says {quote(stored)}, the tensors give '{cid}'")
    hdr["computed_content_id"] = cid
    return hdr


# ---- FORMAT.md §12.4: tensor bytes -----------------------------------------------------------------
def verify_tensors(f, pre, hdr):
    for idx in hdr["data_order"]:                                               # X1, file order
        t = hdr["tensors"][idx]
        h = xxhash.xxh3_64()
        off, left = pre["data_offset"] + t["offset"], t["size"]
        f.seek(off)
        while left:
            chunk = f.read(min(left, 1 << 20))
            if not chunk:
                fail(TRUNCATED, f"file ends at {hexq(off)} inside tensor {quote(t['name'])}")
            h.update(chunk)
            left -= len(chunk)
            off += len(chunk)
        if h.intdigest() != t["xxh3"]:
            fail(CHECKSUM, f"tensor {quote(t['name'])} checksum mismatch: stored {hexq(t['xxh3'])}, computed {hexq(h.intdigest())}")


# ---- reading a file and summarising it ---------------------------------------------------------------
def read(path, verify="full", max_header=DEFAULT_MAX_HEADER_BYTES):
    try:
        f = open(path, "rb")
    except OSError as e:
        fail(IO, f"cannot open {path!r}: {e.strerror}")
    with f:
        file_size = os.fstat(f.fileno()).st_size
        pre = parse_preamble(f.read(PREAMBLE_SIZE), file_size, max_header)
        f.seek(pre["header_offset"])
        hb = f.read(pre["header_size"])
        if len(hb) != pre["header_size"]:
            fail(TRUNCATED, "the file shrank while it was read")
        hdr = validate(pre, hb, verify)
        if verify == "full":
            verify_tensors(f, pre, hdr)
    return file_size, pre, hdr


def text(b):
    return b.decode("utf-8", errors="replace")


def typed_element(dtype, b):
    """One element of a typed value (§9.1; little-endian bytes b) as JSON: integers exact, floats
    widened to double exactly (NaN and infinities: null, as for float64 values), bool: byte != 0."""
    if dtype in (9, 10, 11, 12):                                                # u64 u32 u16 u8
        return int.from_bytes(b, "little")
    if dtype in (5, 6, 7, 8):                                                   # i64 i32 i16 i8
        return int.from_bytes(b, "little", signed=True)
    if dtype == 13:                                                             # bool
        return b[0] != 0
    if dtype == 4:                                                              # bf16: upper half of an f32
        x = struct.unpack("<f", b"\x00\x00" + b)[0]
    else:                                                                       # f64 f32 f16
        x = struct.unpack("<" + {1: "d", 2: "f", 3: "e"}[dtype], b)[0]
    return x if math.isfinite(x) else None


def json_value(m):
    """A Meta as `mpk inspect --json` prints its "value"."""
    type_, v = m.type, m.value
    if type_ == UNKNOWN:
        return None
    if type_ == "string":
        return text(v)
    if type_ == "float64":
        return v if math.isfinite(v) else None
    if type_ == "bytes":
        return v.hex()
    if type_ == "string[]":
        return [text(x) for x in v]
    if type_ == "float64[]":
        return [x if math.isfinite(x) else None for x in v]
    if type_ == "bytes[]":
        return [x.hex() for x in v]
    if type_ == "typed":  # {"dtype": "u32", "value": 7}
        dtype, elems = v
        return {"dtype": DTYPES[dtype][0], "value": typed_element(dtype, elems[0])}
    if type_ == "typed[]":  # {"dtype": "f32", "values": [...]}
        dtype, elems = v
        return {"dtype": DTYPES[dtype][0], "values": [typed_element(dtype, e) for e in elems]}
    if type_ == "list":  # the items as the top-level entries, without "key"
        return [{"type": item.type, "value": json_value(item)} for item in v]
    return v


def offset_alignment(offset):
    if offset == 0:
        return MAX_ALIGNMENT
    return min(offset & -offset, MAX_ALIGNMENT)


def summary(path, file_size, pre, hdr, verify):
    comps = hdr["components"]
    counts = [[0, 0] for _ in comps]
    for t in hdr["tensors"]:
        counts[t["component"]][0] += 1
        counts[t["component"]][1] += t["size"]
    return {
        "file": path,
        "file_size": file_size,
        "format_version": {"major": pre["major"], "minor": pre["minor"]},
        "features": {"incompatible": pre["incompatible"], "compatible": pre["compatible"]},
        "alignment": hdr["alignment"],
        "header": {"offset": pre["header_offset"], "size": pre["header_size"]},
        "data": {"offset": pre["data_offset"], "size": pre["data_size"]},
        "content_id": hdr["computed_content_id"],
        "writer": text(hdr["writer"]),
        "components": [
            {"name": text(c["name"]), "kind": text(c["kind"]), "tensors": n, "bytes": nb}
            for c, (n, nb) in zip(comps, counts)
        ],
        "metadata": [
            {"key": text(e["key"]), "type": e["value"].type, "value": json_value(e["value"])}
            for e in hdr["metadata"]
        ],
        "tensors": [
            {
                "name": text(t["name"]),
                "dtype": DTYPES[t["dtype"]][0],
                "shape": t["shape"],
                "numel": t["numel"],
                "bytes": t["size"],
                "offset": pre["data_offset"] + t["offset"],
                "alignment": offset_alignment(pre["data_offset"] + t["offset"]),
                "component": text(comps[t["component"]]["name"]),
                "xxh3": f"{t['xxh3']:016x}",
            }
            for t in hdr["tensors"]
        ],
        "verified": verify,
    }


def main(argv=None):
    ap = argparse.ArgumentParser(description="Independent reader of .mpk files (docs/FORMAT.md).")
    ap.add_argument("file")
    ap.add_argument("--verify", choices=["none", "header", "full"], default="full")
    ap.add_argument("--max-header-bytes", type=int, default=DEFAULT_MAX_HEADER_BYTES)
    args = ap.parse_args(argv)
    try:
        file_size, pre, hdr = read(args.file, args.verify, args.max_header_bytes)
    except MpkError as e:
        print(f"read_mpk: error: {e.status}: {e.message}", file=sys.stderr)
        return 1
    json.dump(summary(args.file, file_size, pre, hdr, args.verify), sys.stdout, indent=2, ensure_ascii=False)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
