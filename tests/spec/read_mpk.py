#!/usr/bin/python3
"""read_mpk.py - an independent reader of modelpack (.mpk) files, written from docs/FORMAT.md alone.

It shares no code with libmodelpack: the preamble, the FlatBuffers header (tables, vtables, vectors,
strings, unions) and every validation rule are implemented here with `struct`, following the
numbered rules of docs/FORMAT.md section 12 in their order. It exists to prove that the document is
enough to write a reader, and to cross-check libmodelpack against it (tests/spec/test_spec.sh).
It reads format 1.4: quantization records (§7.11: `Tensor.quant`, incompatible bit 4, rules Q1-Q10,
the int8 records in the content id, §11), the patch table (§7.10, structure only: incompatible bit 3;
`PatchTensor.quant` is verified as a table, not checked; rev. 7's `predictor` and `rank`, ids 10 and
11, are read and left to an applier to check), the extended dtypes with their blocks
(§7.2-7.4, rules T8a-T10), incompatible feature bit 1, the metadata value types 11-13 (typed
scalar, typed array, list; §6.5, §9.1, rules M4 and M5), and compressed tensors (incompatible feature bit 0, `encoding = CHUNKED`, §7.8-7.9,
rules K1-K6 and X1-X3): chunk codecs raw, zstd and planes, whose planes are raw, zstd or rANS-Nx16.
The rANS-Nx16 decoder below is written in pure Python from the CRAM 3.1 codecs specification
(samtools hts-specs, CRAMcodecs.tex, section "rANS Nx16"), and where CRAMcodecs does not say what a
wrong stream is, from §7.9.1 "rANS stream validity": bytes left in a plane after its stream are
ignored, a frequency table's symbols are a set, an order-1 shift other than 10 or 12 is
MPK_ERR_CORRUPT_DATA, and a stream that would read past its end or starts with a state of 2^31 or
more is reported as MPK_ERR_CORRUPT_DATA (the document also allows leaving it to the tensor
checksum). zstd frames are decoded with the `zstandard` module (Debian: python3-zstandard), after
this reader has checked that the stored bytes are exactly one RFC 8878 frame.

Usage: read_mpk.py FILE [--verify none|header|full] [--max-header-bytes N]

On success prints a JSON summary (the keys of `mpk inspect --json`, plus "verified") and exits 0.
On a broken file prints "read_mpk: error: MPK_ERR_<NAME>: <message>" to stderr and exits 1.
Requires Python 3 and the `xxhash` module (Debian: python3-xxhash) for XXH3-64 / XXH3-128; files
with zstd-compressed chunks also need `zstandard` (Debian: python3-zstandard).
"""

import argparse
import json
import math
import os
import struct
import sys

import xxhash

try:
    import zstandard
except ImportError:  # only files with zstd chunks or planes need it
    zstandard = None

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
CORRUPT_DATA = "MPK_ERR_CORRUPT_DATA"  # format 1.2: a chunk that does not decode (X3)
NOT_FOUND = "MPK_ERR_NOT_FOUND"  # format 1.4: a quantization record's scale tensor is missing (Q9)
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
FEATURE_COMPRESSED_TENSORS = 1 << 0  # §4.2, §15.4: incompatible bit 0, "compressed-tensors" (format 1.2)
FEATURE_EXTENDED_DTYPES = 1 << 1  # §4.2, §15.4: incompatible bit 1, "extended-dtypes" (format 1.1)
FEATURE_PATCH = 1 << 3  # §4.2, §15.4: incompatible bit 3, "patch" (format 1.3, §7.10)
FEATURE_QUANTIZED = 1 << 4  # §4.2, §15.4: incompatible bit 4, "quantized" (format 1.4, §7.11)
KNOWN_INCOMPATIBLE = FEATURE_COMPRESSED_TENSORS | FEATURE_EXTENDED_DTYPES | FEATURE_PATCH | FEATURE_QUANTIZED
ENCODING_RAW, ENCODING_CHUNKED = 0, 1  # §7.8, §15.2
MAX_CHUNK_BYTES = 1 << 26  # §7.9 rule K2, §14 (MPK_MAX_CHUNK_BYTES)
CHUNK_RAW, CHUNK_ZSTD, CHUNK_PLANES = 0, 1, 2  # §7.9.1, §15.2
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

# §7.11: QuantScheme values (BLOCK, 4, is never stored: rule Q1) and their names as
# `mpk inspect --json` prints them.
QUANT_NONE, QUANT_INT8_CHANNEL, QUANT_INT8_GROUP, QUANT_CAST = 0, 1, 2, 3
QUANT_NAMES = {QUANT_INT8_CHANNEL: "int8-channel", QUANT_INT8_GROUP: "int8-group", QUANT_CAST: "cast"}
DTYPE_F64, DTYPE_F32, DTYPE_F16, DTYPE_BF16, DTYPE_I8 = 1, 2, 3, 4, 8
WIDE_FLOATS = (DTYPE_F32, DTYPE_F64, DTYPE_F16, DTYPE_BF16)  # Q3, Q5: the source dtypes allowed

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

    def chunks(self, pos):
        """A vector of `Chunk` structs (§6.2: 16 bytes each, inline): (xxh3, size, codec) tuples.
        The Verifier checks the length field's alignment (4) and the extent only (§5.2 rule 5);
        the elements' alignment is rule K3, checked for CHUNKED tensors only."""
        if pos is None:
            return []
        n = self.vector(pos, 16)
        return [struct.unpack_from("<QIB", self.b, pos + 4 + 16 * i) for i in range(n)]

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
        chunks_pos = t.ref(9)
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
            # Format 1.2 (§6.2): verified whatever the encoding (§5.2), meaningful only for CHUNKED.
            chunk_size=t.scalar(8, "I", 0),
            chunks=fb.chunks(chunks_pos),
            chunks_misaligned=misaligned8(fb, chunks_pos),                      # checked by K3
            quant=parse_quant(fb, t.ref(10)),                                   # format 1.4, §7.11
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
    hdr["patch"] = parse_patch(fb, h.ref(10))                                  # format 1.3, §7.10
    fb.end_table()
    return hdr


def parse_quant(fb, pos):
    """§7.11 Quantization (Tensor id 10, PatchTensor id 9, format 1.4): verified as a table (§5.2)
    whatever its scheme; None when absent. `scale` is None when absent."""
    if pos is None:
        return None
    t = fb.table(pos)
    q = dict(scheme=t.scalar(0, "B", 0), axis=t.scalar(1, "I", 0), group=t.scalar(2, "I", 0),
             scale=fb.string(t.ref(3)), source_dtype=t.scalar(4, "H", 0))
    fb.end_table()
    return q


def parse_patch(fb, pos):
    """§7.10 Patch (id 10 of Header): verified like every other table (§5.2), including the fields
    the schema marks required (Patch.base, .result; PatchSide.content_id; PatchTensor.name). This
    reader checks the structure only: applying a patch is not part of reading a container."""
    if pos is None:
        return None
    t = fb.table(pos)
    p = dict(version=t.scalar(0, "H", 1), incompatible=t.scalar(1, "Q", 0), compatible=t.scalar(2, "Q", 0))
    for fid, side in ((3, "base"), (4, "result")):
        sp = t.ref(fid)
        fb.check(sp is not None, f"Patch.{side} is required")
        st = fb.table(sp)
        cid = fb.string(st.ref(0))
        fb.check(cid is not None, "PatchSide.content_id is required")
        d = dict(content_id=cid, alignment=st.scalar(1, "I", 64), level=st.scalar(2, "B", 3), components=[],
                 tensors=[])
        for q in fb.elements(st.ref(3)):
            c = fb.table(q)
            name = fb.string(c.ref(0))
            fb.check(name is not None, "Component.name is required")
            fb.string(c.ref(1))
            parse_metadata(fb, c.ref(2))
            fb.end_table()
            d["components"].append(name)
        d["metadata"] = parse_metadata(fb, st.ref(4))
        for q in fb.elements(st.ref(5)):
            x = fb.table(q)
            name = fb.string(x.ref(0))
            fb.check(name is not None, "PatchTensor.name is required")
            d["tensors"].append(dict(name=name, dtype=x.scalar(1, "H", 0), shape=fb.scalars(x.ref(2), "Q"),
                                     component=x.scalar(3, "I", 0), xxh3=x.scalar(4, "Q", 0),
                                     chunk_size=x.scalar(5, "I", 0), op=x.scalar(6, "B", 0),
                                     source=x.scalar(7, "I", 0xFFFFFFFF), payload=fb.string(x.ref(8)),
                                     quant=parse_quant(fb, x.ref(9)),
                                     predictor=fb.string(x.ref(10)), rank=x.scalar(11, "B", 0)))  # rev. 7
            fb.end_table()
        fb.end_table()
        p[side] = d
    fb.end_table()
    return p


# ---- FORMAT.md §11: content id --------------------------------------------------------------------
def quant_bytes(q):
    """Q(t) of §11 (format 1.4): the record of an INT8_CHANNEL or INT8_GROUP tensor, its fields as
    stored (an absent scale is the empty string); nothing for no record, NONE, CAST (informative)
    and (never in a valid file, Q1) unknown schemes."""
    if q is None or q["scheme"] not in (QUANT_INT8_CHANNEL, QUANT_INT8_GROUP):
        return b""
    scale = q["scale"] or b""
    return (struct.pack("<BIII", q["scheme"], q["axis"], q["group"], len(scale)) + scale
            + struct.pack("<H", q["source_dtype"]))


def content_id(tensors):
    """tensors: dicts with name, dtype, shape, xxh3 and (optional, format 1.4) quant, in name order."""
    m = bytearray(CONTENT_ID_DOMAIN)
    for t in tensors:
        m += struct.pack("<I", len(t["name"])) + t["name"]
        m += struct.pack("<HI", t["dtype"], len(t["shape"]))
        m += struct.pack(f"<{len(t['shape'])}Q", *t["shape"])
        m += struct.pack("<Q", t["xxh3"])
        m += quant_bytes(t.get("quant"))
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


def check_chunks(pre, t, decoded, block_bytes):
    """Rules K1-K6 of §7.9, in their order, for a CHUNKED tensor whose decoded size (T8-T9) is
    `decoded` bytes."""
    name = t["name"]
    if not pre["incompatible"] & FEATURE_COMPRESSED_TENSORS:                    # K1
        fail(CORRUPT_HEADER, f"tensor {quote(name)} is chunked but incompatible feature bit 0 "
                             "(compressed-tensors) is not set")
    c = t["chunk_size"]
    if c == 0 or c > MAX_CHUNK_BYTES or c % block_bytes:                        # K2
        fail(CORRUPT_HEADER, f"tensor {quote(name)} has chunk size {c} (1 .. 2^26, a multiple of {block_bytes})")
    chunks = t["chunks"]
    # K3 "starts at a multiple of 8" read as T6 reads it: the first element (after the u32 length)
    # is at a multiple of 8, as FlatBuffers builders place vectors of 8-aligned structs.
    if t["chunks_misaligned"]:                                                  # K3
        fail(CORRUPT_HEADER, f"tensor {quote(name)}: chunk table is not 8-byte aligned")
    n = -(-decoded // c)
    if len(chunks) != n:                                                        # K4
        fail(CORRUPT_HEADER, f"tensor {quote(name)} has {len(chunks)} chunks; "
                             f"{decoded} bytes in chunks of {c} need {n}")
    total = 0
    for k, (_, size, codec) in enumerate(chunks):                              # K5
        if codec not in (CHUNK_RAW, CHUNK_ZSTD, CHUNK_PLANES):
            fail(CORRUPT_HEADER, f"tensor {quote(name)} chunk {k} has unknown codec {codec}")
        if size == 0:
            fail(CORRUPT_HEADER, f"tensor {quote(name)} chunk {k} is empty")
        length = min(c, decoded - k * c)
        if codec == CHUNK_RAW and size != length:
            fail(CORRUPT_HEADER, f"tensor {quote(name)} chunk {k} is stored raw in {size} bytes but holds {length}")
        total += size
    if total != t["size"]:                                                      # K6
        fail(BAD_SHAPE, f"tensor {quote(name)} declares {t['size']} stored bytes but its chunks hold {total}")


def quant_scale_shape(scheme, shape, axis, group):
    """§7.11, the scale tensor's shape: [shape[axis]] for INT8_CHANNEL; for INT8_GROUP the shape with
    the last dimension n replaced by ceil(n / group)."""
    if scheme == QUANT_INT8_CHANNEL:
        return [shape[axis]]
    return shape[:-1] + [-(-shape[-1] // group)]


def check_quant(pre, tensors):
    """Rules Q1-Q10 of §7.11, in their order, for every tensor whose `quant` is present with a scheme
    other than NONE, tensors in name order (after T1-T14 and D1-D5, before I1: §12.3)."""
    by_name = {t["name"]: t for t in tensors}
    for t in tensors:
        q = t["quant"]
        if q is None or q["scheme"] == QUANT_NONE:
            continue
        name, scheme, src, dtype, shape = t["name"], q["scheme"], q["source_dtype"], t["dtype"], t["shape"]
        if scheme > QUANT_CAST:                                                 # Q1
            fail(UNSUPPORTED_FEATURE, f"tensor {quote(name)} uses quantization scheme {scheme}, "
                                      "which format 1.4 does not define")
        if src != 0 and src not in DTYPES:                                      # Q2
            fail(BAD_DTYPE, f"tensor {quote(name)} records unknown source dtype {src}")
        if scheme == QUANT_CAST:                                                # Q3
            if dtype not in (DTYPE_F16, DTYPE_BF16):
                fail(BAD_DTYPE, f"tensor {quote(name)} is {DTYPES[dtype][0]}: a cast record needs f16 or bf16")
            if src != 0 and (src not in WIDE_FLOATS or src == dtype):
                fail(BAD_DTYPE, f"tensor {quote(name)} records a cast from {DTYPES[src][0]} to {DTYPES[dtype][0]}")
            continue  # CAST has no scale tensor: Q4-Q10 are the int8 schemes' (§7.11 registry)
        if not pre["incompatible"] & FEATURE_QUANTIZED:                         # Q4
            fail(CORRUPT_HEADER, f"tensor {quote(name)} is int8-quantized but incompatible feature bit 4 "
                                 "(quantized) is not set")
        if dtype != DTYPE_I8:                                                   # Q5
            fail(BAD_DTYPE, f"tensor {quote(name)} is {DTYPES[dtype][0]}: {QUANT_NAMES[scheme]} stores i8")
        if not shape:
            fail(BAD_SHAPE, f"tensor {quote(name)} is a scalar: int8 quantization needs rank >= 1")
        if src != 0 and src not in WIDE_FLOATS:
            fail(BAD_DTYPE, f"tensor {quote(name)} records int8 quantization of {DTYPES[src][0]}")
        if scheme == QUANT_INT8_CHANNEL and q["axis"] >= len(shape):            # Q6
            fail(BAD_SHAPE, f"tensor {quote(name)} has rank {len(shape)}, its scales run along axis {q['axis']}")
        if scheme == QUANT_INT8_GROUP and q["group"] == 0:                      # Q7
            fail(CORRUPT_HEADER, f"tensor {quote(name)} has quantization group size 0")
        scale_name = q["scale"] or b""  # §7.11 Q9: an absent scale is the empty name
        if scale_name == name:                                                  # Q8
            fail(CORRUPT_HEADER, f"tensor {quote(name)} names itself as its scale tensor")
        s = by_name.get(scale_name)
        if s is None:                                                           # Q9
            fail(NOT_FOUND, f"tensor {quote(name)} names scale tensor {quote(scale_name)}, which the file lacks")
        if s["dtype"] != DTYPE_F32:
            fail(BAD_DTYPE, f"scale tensor {quote(scale_name)} of {quote(name)} is {DTYPES[s['dtype']][0]}, not f32")
        if s["quant"] is not None and s["quant"]["scheme"] != QUANT_NONE:
            fail(CORRUPT_HEADER, f"scale tensor {quote(scale_name)} of {quote(name)} is itself quantized")
        want = quant_scale_shape(scheme, shape, q["axis"], q["group"])
        if s["shape"] != want:                                                  # Q10
            fail(BAD_SHAPE, f"scale tensor {quote(scale_name)} of {quote(name)} has shape {s['shape']}, "
                            f"{QUANT_NAMES[scheme]} of shape {shape} needs {want}")


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
    if (hdr["patch"] is not None) != bool(pre["incompatible"] & FEATURE_PATCH):  # H4a (§7.10)
        fail(CORRUPT_HEADER, "a patch table without incompatible feature bit 3 (patch), or the bit without the table")

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
        if t["encoding"] not in (ENCODING_RAW, ENCODING_CHUNKED):               # T5
            fail(UNSUPPORTED_FEATURE, f"tensor {quote(name)} uses encoding {t['encoding']}, which format 1.4 does not define")
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
        if t["encoding"] == ENCODING_CHUNKED:                                   # T10 for CHUNKED: K1-K6
            check_chunks(pre, t, nbytes, block_bytes)
        elif nbytes != t["size"]:                                               # T10
            fail(BAD_SHAPE, f"tensor {quote(name)} declares {t['size']} bytes but its shape needs {nbytes}")
        t["numel"] = n
        t["decoded_size"] = nbytes  # §7.4: for RAW the stored size, for CHUNKED what the chunks decode to
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

    check_quant(pre, tensors)                                                   # Q1-Q10 (format 1.4)

    cid = content_id(tensors)
    stored = hdr["content_id"]
    if verify != "none" and stored is not None and stored != cid.encode():      # I1
        fail(CHECKSUM, f"content id mismatch: header says {quote(stored)}, the tensors give '{cid}'")
    hdr["computed_content_id"] = cid
    return hdr


# ---- FORMAT.md §7.9.1: chunk codecs ----------------------------------------------------------------
class Undecodable(Exception):
    """A chunk that passed its checksum but does not decode (§7.9.1): MPK_ERR_CORRUPT_DATA (X3)."""


def undecodable(what):
    raise Undecodable(what)


class Src:
    """Reads a byte string front to back; running past its end makes the stream invalid."""

    def __init__(self, b, what="stream"):
        self.b, self.pos, self.what = b, 0, what

    def left(self):
        return len(self.b) - self.pos

    def u8(self):
        if self.pos >= len(self.b):
            undecodable(f"{self.what} ends early")
        self.pos += 1
        return self.b[self.pos - 1]

    def u32(self):
        if self.left() < 4:
            undecodable(f"{self.what} ends early")
        self.pos += 4
        return struct.unpack_from("<I", self.b, self.pos - 4)[0]

    def take(self, n):
        if self.left() < n:
            undecodable(f"{self.what} ends early ({n} bytes wanted, {self.left()} left)")
        self.pos += n
        return bytes(self.b[self.pos - n:self.pos])

    def uint7(self):
        """CRAMcodecs "uint7": 7-bit groups, most significant first, the top bit set on every byte
        but the last. More than 5 bytes (35 bits) cannot be a 32-bit value: invalid here."""
        v = 0
        for _ in range(5):
            c = self.u8()
            v = (v << 7) | (c & 0x7F)
            if not c & 0x80:
                return v
        undecodable(f"{self.what}: a uint7 longer than 5 bytes")


# rANS-Nx16 (CRAMcodecs.tex, "rANS Nx16"): the first byte's flags. §7.9.1 allows only ORDER1, N32, CAT.
RANS_ORDER1, RANS_N32, RANS_STRIPE, RANS_NOSZ, RANS_CAT, RANS_RLE, RANS_PACK = 0x01, 0x04, 0x08, 0x10, 0x20, 0x40, 0x80
RANS_ALLOWED = RANS_ORDER1 | RANS_N32 | RANS_CAT
RANS_L = 1 << 15  # the renormalisation lower bound and the encoder's initial state

# §7.9.1 "rANS stream validity" decides what CRAMcodecs (which describes decoding, not rejection)
# leaves open, and this reader follows it:
# * a plane is one stream; bytes left in the plane after the stream's last renormalisation read (after
#   a CAT stream's m bytes) are ignored. By the same token (the document speaks only of the plane;
#   CRAMcodecs reads a compressed order-1 table as a c_size-byte block and parses the table from its
#   u_size decoded bytes), bytes of that block after the inner stream, and decoded table bytes after
#   the table, are ignored too;
# * the symbols of a frequency table are a set (rans_alphabet): the listing may be in any order and
#   may name a symbol twice (it is then one member); the frequencies that follow are read for the
#   members in ascending symbol order, and the cumulative frequencies built in that order;
# * an order-1 table shift other than 10 or 12 is MPK_ERR_CORRUPT_DATA;
# * a stream whose decoding would read past its end, or whose initial state is 2^31 or more, has no
#   defined output: a reader reports MPK_ERR_CORRUPT_DATA or produces bytes that the tensor checksum
#   refuses (X1). Of the two, this reader reports MPK_ERR_CORRUPT_DATA, and never reads outside the
#   plane.
# What the document still only calls "invalid" (§7.9.1: "a zstd or rANS stream that is invalid") this
# reader refuses as no CRAMcodecs encoder writes it and the decoding procedure cannot always carry it
# out: flags or a recorded size that §7.9.1 forbids; an alphabet run past symbol 255; a frequency
# table that does not total a power of two up to 2^bits, or an empty one in use; a uint7 longer than
# 5 bytes; an initial state below 2^15.


def rans_alphabet(src):
    """ReadAlphabet: symbols, runs of consecutive symbols as (first, second, count of the rest),
    terminated by 0. §7.9.1: the symbols are a set. Writers list them in ascending order, but any
    order is read (a run follows whichever symbol precedes it in the listing), and a symbol listed
    twice is one member. Returns the members in ascending order: the order in which their
    frequencies follow and their cumulative frequencies are built."""
    s = src.u8()
    last, rle, out = s, 0, []
    while True:
        out.append(s)
        if rle > 0:
            rle -= 1
            s += 1
            if s > 255:
                undecodable("rANS alphabet runs past symbol 255")
        else:
            s = src.u8()
            if s == last + 1:
                rle = src.u8()
        last = s
        if s == 0:
            break
    return sorted(set(out))


def rans_normalise(freqs, bits):
    """NormaliseFrequenciesNx16_0: scales a table whose total is a power of two up to 2^bits by a
    shift. Returns the total afterwards (0 for an empty table); a table that then does not total
    exactly 2^bits is invalid ("frequencies must always add up to a power of 2")."""
    tot = sum(freqs)
    if tot == 0:
        return 0
    shift = 0
    while tot < (1 << bits):
        tot *= 2
        shift += 1
    if tot != 1 << bits:
        undecodable(f"rANS frequencies total {sum(freqs)}, not a power of two up to 2^{bits}")
    if shift:
        for i in range(256):
            freqs[i] <<= shift
    return tot


class RansTable:
    """A normalised frequency table: slot -> symbol (bytes of 2^bits), F_s and C_s per symbol."""

    def __init__(self, freqs, bits):
        self.bits, self.mask = bits, (1 << bits) - 1
        self.freq = freqs
        self.cum, c = [0] * 256, 0
        parts = []
        for s in range(256):
            self.cum[s] = c
            if freqs[s]:
                parts.append(bytes([s]) * freqs[s])
                c += freqs[s]
        self.sym = b"".join(parts)


def rans_words(src):
    """The rest of the plane as the 16-bit little-endian words that renormalisation may read (an odd
    last byte cannot be one). Renormalisation wanting a word past them reads past the stream's end:
    §7.9.1 leaves the output undefined; this reader reports MPK_ERR_CORRUPT_DATA. Words it does
    not read are bytes after the stream: ignored."""
    rest = src.b[src.pos:len(src.b) - (src.left() & 1)]
    return struct.unpack(f"<{len(rest) // 2}H", rest)


def rans_states(src, n):
    states = [src.u32() for _ in range(n)]
    for r in states:
        # Encoder states lie in [2^15, 2^31): the flushed final state of a valid stream does too.
        # §7.9.1: a state of 2^31 or more has no defined output; this reader reports
        # MPK_ERR_CORRUPT_DATA (the other conforming choice: decode, and let X1 refuse the bytes).
        # Below 2^15: "invalid" by this reader's judgment (see above); htscodecs refuses it too.
        if r < RANS_L or r >= 1 << 31:
            undecodable(f"rANS state {r:#x} outside [2^15, 2^31)")
    return states


def rans_decode_o0(src, n, ways):
    """RansDecodeNx16_0: symbol i is decoded by state i mod N with the one 12-bit table."""
    freqs = [0] * 256
    for s in rans_alphabet(src):
        freqs[s] = src.uint7()
    if rans_normalise(freqs, 12) == 0:
        undecodable("rANS order-0 frequency table is empty")
    tab = RansTable(freqs, 12)
    sym, fr, cum = tab.sym, tab.freq, tab.cum
    states = rans_states(src, ways)
    words = rans_words(src)
    nw, w = len(words), 0
    out = bytearray(n)
    j = 0
    for i in range(n):
        r = states[j]
        f = r & 0xFFF
        s = sym[f]
        out[i] = s
        r = fr[s] * (r >> 12) + f - cum[s]
        if r < RANS_L:                                                  # RansRenormNx16
            if w >= nw:
                undecodable("rANS stream ends early (renormalisation wants more words)")
            r = (r << 16) | words[w]
            w += 1
        states[j] = r
        j += 1
        if j == ways:
            j = 0
    src.pos += 2 * w
    return bytes(out)


def rans_decode_o1(src, n, ways):
    """RansDecodeNx16_1: state j decodes the j-th of N equal segments (state N-1 also the rest),
    each symbol with the table of the previous symbol of its segment (0 at first)."""
    comp = src.u8()
    bits = comp >> 4
    if bits not in (10, 12):                                        # §7.9.1: 10 or 12, else CORRUPT_DATA
        undecodable(f"rANS order-1 frequency bits {bits} (10 or 12)")
    if comp & 1:  # the table is itself rANS order-0 coded, 4 states
        u_size = src.uint7()
        c_size = src.uint7()
        inner = Src(src.take(c_size), "rANS order-1 compressed table")
        # Bytes of the c_size block after the inner stream, and of the u_size decoded bytes after
        # the table, are ignored (as bytes after a plane's stream are, §7.9.1).
        tsrc = Src(rans_decode_o0(inner, u_size, 4), "rANS order-1 table")
    else:
        tsrc = src
    alphabet = rans_alphabet(tsrc)
    tables = {}
    for i in alphabet:
        freqs, run = [0] * 256, 0
        for j in alphabet:
            if run > 0:
                run -= 1
                continue
            freqs[j] = tsrc.uint7()
            if freqs[j] == 0:
                run = tsrc.u8()
        if rans_normalise(freqs, bits):
            tables[i] = RansTable(freqs, bits)
    states = rans_states(src, ways)
    words = rans_words(src)
    nw, w = len(words), 0
    out = bytearray(n)
    seg = n // ways
    mask = (1 << bits) - 1
    last = [0] * ways

    def table(ctx):
        t = tables.get(ctx)
        if t is None:
            undecodable(f"rANS order-1 context {ctx} has no frequencies")
        return t

    for i in range(seg):
        for j in range(ways):
            t = table(last[j])
            r = states[j]
            f = r & mask
            s = t.sym[f]
            out[i + j * seg] = s
            r = t.freq[s] * (r >> bits) + f - t.cum[s]
            if r < RANS_L:
                if w >= nw:
                    undecodable("rANS stream ends early (renormalisation wants more words)")
                r = (r << 16) | words[w]
                w += 1
            states[j] = r
            last[j] = s
    j = ways - 1
    for i in range(seg * ways, n):  # the remainder, by the last state
        t = table(last[j])
        r = states[j]
        f = r & mask
        s = t.sym[f]
        out[i] = s
        r = t.freq[s] * (r >> bits) + f - t.cum[s]
        if r < RANS_L:
            if w >= nw:
                undecodable("rANS stream ends early (renormalisation wants more words)")
            r = (r << 16) | words[w]
            w += 1
        states[j] = r
        last[j] = s
    src.pos += 2 * w
    return bytes(out)


def rans_nx16_decode(stream, m):
    """One rANS-Nx16 stream (§7.9.1 method 2) that must decode to exactly m bytes: flags byte
    (only ORDER1, N32, CAT), uint7 size (NOSZ clear), then CAT bytes or an order-0/1 body of
    4 or 32 interleaved states. Bytes of `stream` (the plane) after the stream's last
    renormalisation read, or after a CAT stream's m bytes, are ignored (§7.9.1)."""
    src = Src(stream, "rANS stream")
    flags = src.u8()
    if flags & ~RANS_ALLOWED:
        undecodable(f"rANS stream with flags {flags:#04x} (only order-1 0x01, N32 0x04 and CAT 0x20 are allowed)")
    size = src.uint7()
    if size != m:
        undecodable(f"rANS stream holds {size} bytes, not {m}")
    if flags & RANS_CAT:  # "the uncompressed data stream is the same as the compressed stream"
        out = src.take(size)
    elif flags & RANS_ORDER1:
        out = rans_decode_o1(src, size, 32 if flags & RANS_N32 else 4)
    else:
        out = rans_decode_o0(src, size, 32 if flags & RANS_N32 else 4)
    return out


ZSTD_MAGIC = 0xFD2FB528


def zstd_frame_size(b):
    """The compressed size of the RFC 8878 frame at the start of b (§3.1.1: frame header, blocks,
    optional checksum); a skippable or legacy frame, a reserved bit or block type, or a frame that
    runs past b is invalid."""
    src = Src(b, "zstd frame")
    if src.u32() != ZSTD_MAGIC:
        undecodable("not a zstd frame (magic)")
    fhd = src.u8()
    fcs_flag, single, reserved, checksum, dict_flag = fhd >> 6, fhd >> 5 & 1, fhd >> 3 & 1, fhd >> 2 & 1, fhd & 3
    if reserved:
        undecodable("zstd frame header with the reserved bit set")
    src.take((0 if single else 1) + (0, 1, 2, 4)[dict_flag] + ((1 if single else 0), 2, 4, 8)[fcs_flag])
    while True:
        h = src.u8() | src.u8() << 8 | src.u8() << 16
        last, btype, bsize = h & 1, h >> 1 & 3, h >> 3
        if btype == 3:
            undecodable("zstd block of the reserved type 3")
        src.take(1 if btype == 1 else bsize)
        if last:
            break
    if checksum:
        src.take(4)
    return src.pos


def zstd_decode(b, n):
    """One zstd frame (§7.9.1 codec 1, plane method 1) that decompresses to exactly n bytes and
    fills b: no second frame, no skippable frame."""
    if zstd_frame_size(b) != len(b):
        undecodable(f"{len(b) - zstd_frame_size(b)} bytes after the zstd frame (one frame only)")
    if zstandard is None:
        fail(IO, "this file has zstd-compressed chunks: install python3-zstandard")
    declared = zstandard.frame_content_size(b)  # -1: not recorded
    if declared >= 0 and declared != n:
        undecodable(f"zstd frame records {declared} bytes, not {n}")
    try:
        out = zstandard.ZstdDecompressor().decompress(b, max_output_size=n)
    except zstandard.ZstdError as e:
        undecodable(f"zstd: {e}")
    if len(out) != n:
        undecodable(f"zstd frame holds {len(out)} bytes, not {n}")
    return out


ROR1 = bytes(((b >> 1) | (b << 7)) & 0xFF for b in range(256))  # a byte rotated right by one bit
SHR1 = bytes(b >> 1 for b in range(256))
BIT0_TO_7 = bytes((b & 1) << 7 for b in range(256))


def planes_decode(stored, length):
    """A planes chunk (§7.9.1) of `length` decoded bytes: transform, width W, W plane entries
    (method, stored size), the planes back to back filling the chunk; word k has byte j from plane
    j; transform 1 rotates each word right by one bit."""
    if len(stored) < 2:
        undecodable("planes chunk shorter than its 2-byte header")
    transform, width = stored[0], stored[1]
    if transform > 1:
        undecodable(f"unknown plane transform {transform}")
    if width not in (1, 2, 4, 8):
        undecodable(f"plane width {width} (1, 2, 4 or 8)")
    if length % width:
        undecodable(f"plane width {width} does not divide the chunk's {length} bytes")
    m = length // width
    at = 2 + 5 * width
    if len(stored) < at:
        undecodable(f"planes chunk of {len(stored)} bytes, shorter than its {at}-byte header")
    entries = []
    for j in range(width):
        method, size = struct.unpack_from("<BI", stored, 2 + 5 * j)
        if method > 2:
            undecodable(f"plane {j}: unknown method {method}")
        if size > len(stored) - at:
            undecodable(f"plane {j}: {size} bytes at {at} run past the chunk's {len(stored)}")
        if method == 0 and size != m:
            undecodable(f"plane {j}: raw plane of {size} bytes, expected {m}")
        entries.append((method, bytes(stored[at:at + size])))
        at += size
    if at != len(stored):
        undecodable(f"the planes end at byte {at} of a {len(stored)}-byte chunk")
    planes = []
    for j, (method, b) in enumerate(entries):
        try:
            planes.append(b if method == 0 else zstd_decode(b, m) if method == 1 else rans_nx16_decode(b, m))
        except Undecodable as e:
            undecodable(f"plane {j}: {e}")
    if transform == 1:  # undo the writer's rotate-left: each word rotated right by one bit
        if width == 1:
            planes = [planes[0].translate(ROR1)]
        else:
            # Byte j of the rotated word: bits 1..7 of byte j, then bit 0 of byte j+1 (of byte 0
            # for the top byte) as its bit 7. Whole planes at once, as big integers.
            planes = [
                (int.from_bytes(planes[j].translate(SHR1), "little")
                 | int.from_bytes(planes[(j + 1) % width].translate(BIT0_TO_7), "little")).to_bytes(m, "little")
                for j in range(width)]
    if width == 1:
        return planes[0]
    out = bytearray(length)
    for j in range(width):
        out[j::width] = planes[j]
    return bytes(out)


DECODED = {}  # (codec, length, stored bytes) -> decoded bytes or the Undecodable message
DECODED_BYTES = [0]


def decode_chunk(codec, stored, length):
    """The decoded bytes of one chunk (§7.9.1), or Undecodable. Results are kept (a pure function
    of its arguments) so that the thousands of variants differential.py reads decode fast."""
    key = (codec, length, stored)
    hit = DECODED.get(key)
    if hit is None:
        try:
            if codec == CHUNK_RAW:
                hit = stored if len(stored) == length else "raw chunk of the wrong size"
            elif codec == CHUNK_ZSTD:
                hit = zstd_decode(stored, length)
            else:
                hit = planes_decode(stored, length)
        except Undecodable as e:
            hit = str(e)
        if DECODED_BYTES[0] > 256 << 20:
            DECODED.clear()
            DECODED_BYTES[0] = 0
        DECODED[key] = hit
        DECODED_BYTES[0] += len(stored) + (len(hit) if isinstance(hit, bytes) else 0)
    if isinstance(hit, str):
        raise Undecodable(hit)
    return hit


# ---- FORMAT.md §12.4: tensor bytes -----------------------------------------------------------------
def read_exact(f, off, n, t):
    f.seek(off)
    b = f.read(n)
    if len(b) != n:
        fail(TRUNCATED, f"file ends inside tensor {quote(t['name'])}")
    return b


def verify_tensors(f, pre, hdr):
    for idx in hdr["data_order"]:                                               # X1, file order
        t = hdr["tensors"][idx]
        h = xxhash.xxh3_64()
        off = pre["data_offset"] + t["offset"]
        if t["encoding"] == ENCODING_CHUNKED:
            # Each chunk: its stored checksum (X2), then decoded (X3) into the tensor checksum.
            c, d = t["chunk_size"], t["decoded_size"]
            for k, (xxh3, size, codec) in enumerate(t["chunks"]):
                stored = read_exact(f, off, size, t)
                computed = xxhash.xxh3_64_intdigest(stored)
                if computed != xxh3:                                            # X2
                    fail(CHECKSUM, f"tensor {quote(t['name'])} chunk {k} [{hexq(off)},{hexq(off + size)}) "
                                   f"checksum mismatch: stored {hexq(xxh3)}, computed {hexq(computed)}")
                try:
                    h.update(decode_chunk(codec, stored, min(c, d - k * c)))
                except Undecodable as e:                                        # X3
                    fail(CORRUPT_DATA, f"tensor {quote(t['name'])} chunk {k}: {e}")
                off += size
        else:
            left = t["size"]
            while left:
                piece = read_exact(f, off, min(left, 1 << 20), t)
                h.update(piece)
                left -= len(piece)
                off += len(piece)
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
    decoded = sum(t["decoded_size"] for t in hdr["tensors"])
    stored = sum(t["size"] for t in hdr["tensors"])
    for t in hdr["tensors"]:
        counts[t["component"]][0] += 1
        counts[t["component"]][1] += t["decoded_size"]
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
                "bytes": t["decoded_size"],
                "encoding": encoding_summary(t),
                "offset": pre["data_offset"] + t["offset"],
                "alignment": offset_alignment(pre["data_offset"] + t["offset"]),
                "component": text(comps[t["component"]]["name"]),
                "xxh3": f"{t['xxh3']:016x}",
                **quant_summary(t),
            }
            for t in hdr["tensors"]
        ],
        "tensor_bytes": {"decoded": decoded, "stored": stored, "ratio": stored / decoded if decoded else 1.0},
        "verified": verify,
    }


def quant_summary(t):
    """A tensor's quantization record as `mpk inspect --json` prints it (format 1.4): {"quant": {...}}
    when the stored record's scheme is not NONE, else nothing (ggml block dtypes carry their scales
    inline and have no record). "axis" for int8-channel, "group" for int8-group, "scale" for the int8
    schemes, "source_dtype" when recorded."""
    q = t["quant"]
    if q is None or q["scheme"] == QUANT_NONE:
        return {}
    out = {"scheme": QUANT_NAMES[q["scheme"]]}
    if q["scheme"] == QUANT_INT8_CHANNEL:
        out["axis"] = q["axis"]
    if q["scheme"] == QUANT_INT8_GROUP:
        out["group"] = q["group"]
    if q["scheme"] in (QUANT_INT8_CHANNEL, QUANT_INT8_GROUP):
        out["scale"] = text(q["scale"])
    if q["source_dtype"]:
        out["source_dtype"] = DTYPES[q["source_dtype"]][0]
    return {"quant": out}


def encoding_summary(t):
    """How a tensor is stored, as `mpk inspect --json` prints it: encoding name, stored bytes, stored /
    decoded; for a chunked tensor its chunk size and how many chunks each codec stores (§7.9)."""
    d = t["decoded_size"]
    out = {"name": "chunked" if t["encoding"] == ENCODING_CHUNKED else "raw", "stored_bytes": t["size"],
           "ratio": t["size"] / d if d else 1.0}
    if t["encoding"] == ENCODING_CHUNKED:
        out["chunk_size"] = t["chunk_size"]
        out["chunks"] = {name: sum(1 for ch in t["chunks"] if ch[2] == codec)
                         for name, codec in (("raw", CHUNK_RAW), ("zstd", CHUNK_ZSTD), ("planes", CHUNK_PLANES))}
    return out


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
