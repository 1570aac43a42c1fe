#!/usr/bin/python3
"""differential.py - damages a .mpk file in many ways and checks that read_mpk.py (written from
docs/FORMAT.md) and libmodelpack (through the `mpk` CLI) reach the same verdict on every variant.

Usage: differential.py FILE MPK [--max-header-mutations N] [--keep DIR]

Variants: truncations; damaged magics; every preamble byte flipped; preamble fields set to edge
values with the preamble checksum recomputed ("re-signed"); header bytes flipped, re-signed so that
the damage reaches the FlatBuffers Verifier and the semantic rules of FORMAT.md section 12; tensor
dtypes and metadata union tags (top level and inside lists) rewritten with other values, re-signed;
tensor and padding bytes flipped; trailing bytes. For chunked tensors (format 1.2, §7.9): encoding,
chunk_size, size and chunk-table fields (count, codec, size, checksum) rewritten, re-signed (rules
T5, K1-K6, X2); chunk payload bytes flipped (X2); and chunk payloads damaged in their structure with
the chunk checksum recomputed, so that the damage reaches the decoders (X3): planes transform, width,
methods and plane sizes, rANS-Nx16 flags and size, zstd frame magic, bytes of raw chunks and raw
planes (X1). For quantization records (format 1.4, §7.11): scheme, axis, group and source dtype
rewritten, scale names damaged, the record dropped, re-signed (rules Q1-Q10 and the content id, I1).
(Damage inside rANS-coded bytes is left to the unsigned flips: such a stream may read
past its end or start with a state of 2^31 or more, which §7.9.1 leaves without a defined output,
MPK_ERR_CORRUPT_DATA and MPK_ERR_CHECKSUM both conforming, so two conforming readers may differ.)
For each variant the status of `read_mpk.py --verify full` must equal the status of `mpk verify`
(which opens with header verification, then hashes every tensor), and when both accept the file,
`mpk inspect --json` must equal read_mpk's summary.

Prints one line per disagreement and a closing "N passed, N failed" line; exits 1 on any failure.
"""

import argparse
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

U64 = (1 << 64) - 1


def resign(b, header=True):
    """Recomputes the header checksum (optional) and the preamble checksum of b (a bytearray)."""
    if len(b) < 96:
        return b
    if header:
        h_off, h_size = struct.unpack_from("<QQ", b, 32)
        if h_off + h_size <= len(b):
            struct.pack_into("<Q", b, 64, xxhash.xxh3_64_intdigest(bytes(b[h_off:h_off + h_size])))
    struct.pack_into("<Q", b, 88, xxhash.xxh3_64_intdigest(bytes(b[:88])))
    return b


def set_field(orig, off, fmt, value, header=False):
    b = bytearray(orig)
    struct.pack_into("<" + fmt, b, off, value & ((1 << (8 * struct.calcsize(fmt))) - 1))
    return resign(b, header)


def header_fields(f):
    """File offsets of the tensors' dtype fields and of the metadata union tags (MetaEntry.value_type,
    and ListItem.value_type inside lists, FORMAT.md §6.4, §6.5), found with read_mpk's parser. Only
    fields present in the file are listed (the reference writer writes every non-default one)."""
    h_off, h_size = struct.unpack_from("<QQ", f, 32)
    fb = read_mpk.FB(f[h_off:h_off + h_size])

    def table(pos):
        t = fb.table(pos)
        fb.end_table()
        return t

    dtypes, tags = [], []

    def union(t, tag_id, value_id):
        e = t.entry(tag_id)
        if not e:
            return
        tags.append(h_off + t.pos + e)
        vpos = t.ref(value_id)
        if f[h_off + t.pos + e] == 13 and vpos is not None:  # a list: its items
            for p in fb.elements(table(vpos).ref(0)):
                union(table(p), 0, 1)

    h = table(fb.u32(0))
    for p in fb.elements(h.ref(3)):
        e = table(p).entry(1)
        if e:
            dtypes.append(h_off + p + e)
    for p in fb.elements(h.ref(5)):
        for q in fb.elements(table(p).ref(2)):
            union(table(q), 1, 2)
    for p in fb.elements(h.ref(6)):
        union(table(p), 1, 2)
    return dtypes, tags


def quant_fields(f):
    """For each tensor with a quantization record (Tensor.quant, id 10; FORMAT.md §7.11), the file
    offsets of the record's present fields (scheme, axis, group, source_dtype; the scale string's
    bytes) and of the Tensor vtable entry that points to it, found with read_mpk's parser."""
    h_off, h_size = struct.unpack_from("<QQ", f, 32)
    fb = read_mpk.FB(f[h_off:h_off + h_size])
    out = []
    root = fb.table(fb.u32(0))
    for p in fb.elements(root.ref(3)):
        t = fb.table(p)
        fb.end_table()
        qpos = t.ref(10)
        if qpos is None:
            continue
        q = fb.table(qpos)
        fb.end_table()
        rec = {"vtable_entry": h_off + t.vt + 4 + 2 * 10}
        for fid, key in ((0, "scheme"), (1, "axis"), (2, "group"), (4, "source_dtype")):
            e = q.entry(fid)
            if e:
                rec[key] = h_off + q.pos + e
        spos = q.ref(3)
        if spos is not None:
            rec["scale"] = (h_off + spos + 4, fb.u32(spos))  # (first byte, length)
        out.append(rec)
    return out


def quant_mutations(f):
    """Quantization records rewritten and re-signed (§7.11, rules Q1-Q10; §11: int8 records enter the
    content id, so most changes that keep a record valid are I1 mismatches)."""
    for k, rec in enumerate(quant_fields(f)):
        if "scheme" in rec:
            for v in (0, 1, 2, 3, 4, 5, 255):
                if v != f[rec["scheme"]]:
                    yield f"quant {k} scheme {v}", bytes(set_field(f, rec["scheme"], "B", v, header=True))
        if "axis" in rec:
            for v in (0, 1, 2, 3, 31, 0xFFFFFFFF):
                yield f"quant {k} axis {v}", bytes(set_field(f, rec["axis"], "I", v, header=True))
        if "group" in rec:
            for v in (0, 1, 3, 5, 31, 33, 81, 0xFFFFFFFF):
                yield f"quant {k} group {v}", bytes(set_field(f, rec["group"], "I", v, header=True))
        if "source_dtype" in rec:
            for v in (0, 1, 2, 3, 4, 5, 8, 12, 21, 32, 44, 65535):
                yield f"quant {k} source_dtype {v}", bytes(set_field(f, rec["source_dtype"], "H", v, header=True))
        if "scale" in rec:
            at, n = rec["scale"]
            for i in sorted({0, n // 2, n - 1}):
                if 0 <= i < n:
                    b = bytearray(f)
                    b[at + i] ^= 0x01
                    yield f"quant {k} scale byte {i} ^ 0x01", bytes(resign(b))
            if n:  # the scale name cut short by one byte (its terminator moved)
                b = bytearray(f)
                struct.pack_into("<I", b, at - 4, n - 1)
                b[at + n - 1] = 0
                yield f"quant {k} scale name shortened", bytes(resign(b))
        # The record dropped: the Tensor vtable entry for field 10 zeroed (vtables may be shared).
        yield f"quant {k} dropped", bytes(set_field(f, rec["vtable_entry"], "H", 0, header=True))


def chunk_fields(f):
    """For each CHUNKED tensor (§6.2, §7.9), the file offsets of its fields and chunk table entries
    and where each chunk's stored bytes are, found with read_mpk's parser."""
    h_off, h_size, d_off = struct.unpack_from("<QQQ", f, 32)
    fb = read_mpk.FB(f[h_off:h_off + h_size])
    out = []
    root = fb.table(fb.u32(0))
    for p in fb.elements(root.ref(3)):
        t = fb.table(p)
        fb.end_table()
        if t.scalar(7, "B", 0) != read_mpk.ENCODING_CHUNKED:
            continue
        dtype = t.scalar(1, "H", 0)
        shape = fb.scalars(t.ref(2), "Q")
        _, block_elems, block_bytes, _ = read_mpk.DTYPES[dtype]
        n = 1
        for d in shape:
            n *= d
        decoded = n // block_elems * block_bytes
        c = t.scalar(8, "I", 0)
        vec = t.ref(9)
        at = d_off + t.scalar(4, "Q", 0)
        chunks = []
        for k, (x, size, codec) in enumerate(fb.chunks(vec)):
            chunks.append(dict(entry=h_off + vec + 4 + 16 * k, payload=at, size=size, codec=codec,
                               length=min(c, decoded - k * c)))
            at += size
        out.append(dict(name=fb.string(t.ref(0)), encoding=h_off + p + t.entry(7), chunk_size=h_off + p + t.entry(8),
                        size=h_off + p + t.entry(5), vector=h_off + vec, c=c, block=block_bytes, chunks=chunks))
    return out


def planes_layout(b):
    """(transform, width, [(method, position, size)]) of an undamaged planes chunk."""
    w = b[1]
    at, planes = 2 + 5 * w, []
    for j in range(w):
        method, size = struct.unpack_from("<BI", b, 2 + 5 * j)
        planes.append((method, at, size))
        at += size
    return b[0], w, planes


def chunk_mutations(f):
    """Damage to the chunk tables and chunk payloads of compressed tensors (§7.9, rules T5, K1-K6,
    X1-X3). Yields (label, bytes)."""
    for ti, t in enumerate(chunk_fields(f)):
        tag = f"tensor {t['name'].decode()}"
        for v in (0, 2, 7, 255):                                                # T10 as RAW, T5
            yield f"{tag} encoding {v}", set_field(f, t["encoding"], "B", v, header=True)
        c, block = t["c"], t["block"]
        for v in sorted({0, 1, block - 1, c - 1, c + 1, c - block, c + block, 2 * c, c // 2, 1 << 26, (1 << 26) + 1,
                         (1 << 26) // block * block, (1 << 32) - 1} - {c}):         # K2, K4
            if 0 <= v < 1 << 32:
                yield f"{tag} chunk_size {v}", set_field(f, t["chunk_size"], "I", v, header=True)
        size = struct.unpack_from("<Q", f, t["size"])[0]
        for v in (size - 1, size + 1, 0, size + (1 << 32)):                       # K6
            yield f"{tag} size {v}", set_field(f, t["size"], "Q", v, header=True)
        n = len(t["chunks"])
        for v in (n - 1, n + 1, 0, n + 2):                                        # K4, or the Verifier
            yield f"{tag} chunk count {v}", set_field(f, t["vector"], "I", v, header=True)
        for k, ch in enumerate(t["chunks"]):
            e, pay, sz, codec = ch["entry"], ch["payload"], ch["size"], ch["codec"]
            where = f"{tag} chunk {k}"
            yield f"{where} xxh3 ^ 1", set_field(f, e, "Q", struct.unpack_from("<Q", f, e)[0] ^ 1, header=True)  # X2
            for v in (3, 255):                                                    # K5
                yield f"{where} codec {v}", set_field(f, e + 12, "B", v, header=True)
            # Another codec for the same bytes (X3); a raw chunk's bytes read as planes could be
            # anything, so only when its first byte already is no transform.
            for v in {0: (1,) + ((2,) if f[pay] > 1 else ()), 1: (0, 2), 2: (0, 1)}[codec]:
                yield f"{where} codec {codec} -> {v}", set_field(f, e + 12, "B", v, header=True)
            for v in (0, sz - 1, sz + 1, (1 << 32) - 1):                          # K5, K6
                yield f"{where} size {v}", set_field(f, e + 8, "I", v, header=True)
            if k + 1 < n:  # sizes still summing to `size`: the chunks' checksums catch it (X2)
                b = bytearray(f)
                struct.pack_into("<I", b, e + 8, sz + 1)
                struct.pack_into("<I", b, e + 16 + 8, t["chunks"][k + 1]["size"] - 1)
                yield f"{where} size +1, chunk {k + 1} size -1", bytes(resign(b))
            yield f"{where} codec padding set", set_field(f, e + 13, "B", 0xAB, header=True)  # ignored
            # Stored bytes flipped, checksum not updated: X2.
            for i in sorted({0, sz // 2, sz - 1}):
                b = bytearray(f)
                b[pay + i] ^= 0x04
                yield f"{where} payload byte {i} ^ 0x04", bytes(b)
            # Stored bytes damaged in their structure, the chunk checksum recomputed: X3 (or X1).
            for label, damage in payload_damage(bytes(f[pay:pay + sz]), codec):
                b = bytearray(f)
                b[pay:pay + sz] = damage
                struct.pack_into("<Q", b, e, xxhash.xxh3_64_intdigest(bytes(damage)))
                yield f"{where} ({read_mpk_codec(codec)}) {label}, re-signed", bytes(resign(b))


def read_mpk_codec(codec):
    return {0: "raw", 1: "zstd", 2: "planes"}.get(codec, str(codec))


def payload_damage(p, codec):
    """(label, damaged stored bytes) whose verdict a decoder that follows §7.9.1 cannot doubt."""
    def at(i, v):
        b = bytearray(p)
        b[i] = v
        return bytes(b)

    if codec == 0:
        yield "byte 0 ^ 0x80 (X1)", at(0, p[0] ^ 0x80)
        return
    if codec == 1:
        yield "zstd magic damaged", at(0, p[0] ^ 0x01)
        yield "zstd byte in the middle ^ 0x10", at(len(p) // 2, p[len(p) // 2] ^ 0x10)
        return
    transform, w, planes = planes_layout(p)
    for v in (2, 7, 255):
        yield f"transform {v}", at(0, v)
    for v in (0, 3, 5, 16):
        yield f"width {v}", at(1, v)
    yield "plane 0 method 3", at(2, 3)
    b = bytearray(p)
    struct.pack_into("<I", b, 3, planes[0][2] + 1)
    yield "plane 0 size + 1", bytes(b)
    struct.pack_into("<I", b, 3, planes[0][2] - 1)
    yield "plane 0 size - 1", bytes(b)
    if planes[0][0] == 0 and w > 1 and planes[1][0] == 0:  # two raw planes: sizes that still tile
        b = bytearray(p)
        struct.pack_into("<I", b, 3, planes[0][2] + 1)
        struct.pack_into("<I", b, 8, planes[1][2] - 1)
        yield "raw planes 0/1 sizes +1/-1", bytes(b)
    done = set()
    for j, (method, pos, size) in enumerate(planes):
        if method in done:
            continue
        done.add(method)
        if method == 0:
            yield f"raw plane {j} byte ^ 0x01 (X1)", at(pos + size // 2, p[pos + size // 2] ^ 0x01)
        elif method == 1:
            yield f"plane {j} zstd magic damaged", at(pos + 1, p[pos + 1] ^ 0x40)
        else:
            for flag in (0x08, 0x10, 0x40, 0x80):
                yield f"plane {j} rANS flags | {flag:#04x}", at(pos, p[pos] | flag)
            yield f"plane {j} rANS size ^ 1", at(pos + 1, p[pos + 1] ^ 0x01)


def mutations(orig, max_header):
    """Yields (label, bytes) pairs."""
    f = bytes(orig)
    n = len(f)
    h_off, h_size, d_off, d_size = struct.unpack_from("<QQQQ", f, 32)

    # Truncations.
    for size in sorted({0, 1, 7, 8, 9, 15, 16, 50, 95, 96, n - 1, h_off + h_size - 1, d_off + d_size - 1}):
        if 0 <= size < n:
            yield f"truncate to {size}", f[:size]

    # Damaged magics (§3.1) and other formats.
    yield "CRLF->LF", f[:4] + f[5:]
    yield "LF->CRLF at byte 7", f[:7] + b"\r" + f[7:]
    yield "LF->CRLF everywhere", f.replace(b"\n", b"\r\n")
    yield "high bit stripped", bytes([f[0] & 0x7F]) + f[1:]
    yield "all high bits stripped", bytes(x & 0x7F for x in f)
    yield "GGUF", b"GGUF" + f[4:]
    yield "npy", b"\x93NUMPY" + f[6:]
    yield "zip", b"PK\x03\x04" + f[4:]
    yield "text", b"hello, world\n"
    yield "magic prefix only", f[:5]

    # Every preamble byte flipped, not re-signed: the checks before the checksum (P1-P7) or P8.
    for i in range(96):
        b = bytearray(f)
        b[i] ^= 0x01
        yield f"preamble byte {i} ^ 0x01", bytes(b)

    # Preamble fields at edge values, re-signed (§3, §12.1).
    yield "major 0", set_field(f, 8, "H", 0)
    yield "major 2", set_field(f, 8, "H", 2)
    yield "major 2, size 200", set_field(set_field(f, 8, "H", 2), 12, "I", 200)
    yield "minor 7", set_field(f, 10, "H", 7)
    yield "minor 65535", set_field(f, 10, "H", 65535)
    yield "preamble_size 95", set_field(f, 12, "I", 95)
    yield "preamble_size 0", set_field(f, 12, "I", 0)
    for bit in (0, 1, 2, 4, 5, 63):
        yield f"incompatible bit {bit}", set_field(f, 16, "Q", 1 << bit)
    yield "incompatible bits 0+3", set_field(f, 16, "Q", 9)
    yield "incompatible bits 0+1", set_field(f, 16, "Q", 3)
    yield "incompatible bits 1+2", set_field(f, 16, "Q", 6)
    yield "compatible bit 3", set_field(f, 24, "Q", 1 << 3)
    yield "compatible all", set_field(f, 24, "Q", U64)
    yield "reserved bytes set", bytes(resign(bytearray(f[:72] + b"\xAA" * 16 + f[88:]), False))
    for label, v in [("0", 0), ("8", 8), ("95", 95), ("96", 96), ("+1", h_off + 1), ("+4", h_off + 4),
                     ("+8", h_off + 8), ("-8", h_off - 8), ("data_offset", d_off), ("end", n),
                     ("2^63", 1 << 63), ("max-7", U64 - 7), ("max", U64)]:
        yield f"header_offset {label}", set_field(f, 32, "Q", v)
    for label, v in [("0", 0), ("15", 15), ("16", 16), ("-1", h_size - 1), ("+1", h_size + 1), ("+8", h_size + 8),
                     ("cap", max_header), ("cap+1", max_header + 1), ("2^31", 1 << 31), ("max", U64)]:
        yield f"header_size {label}", set_field(f, 40, "Q", v)
    for label, v in [("0", 0), ("95", 95), ("96", 96), ("+1", d_off + 1), ("+8", d_off + 8), ("+64", d_off + 64),
                     ("-64", d_off - 64), ("header", h_off), ("end", n), ("max", U64)]:
        yield f"data_offset {label}", set_field(f, 48, "Q", v)
    for label, v in [("0", 0), ("-1", d_size - 1), ("+1", d_size + 1), ("to header end", h_off + h_size - d_off),
                     ("to end", n - d_off), ("past end", n - d_off + 1), ("max", U64)]:
        yield f"data_size {label}", set_field(f, 56, "Q", v)
    yield "header_xxh3 wrong", set_field(f, 64, "Q", struct.unpack_from("<Q", f, 64)[0] ^ 1)
    # Header and data sections swapped in meaning: a header pointing into the data section.
    yield "header inside data", set_field(set_field(f, 32, "Q", d_off), 40, "Q", max(16, min(h_size, d_size)))

    # Header bytes flipped. Not re-signed: the header checksum (H1) catches them.
    for i in range(0, h_size, max(1, h_size // 8)):
        b = bytearray(f)
        b[h_off + i] ^= 0x10
        yield f"header byte {i} ^ 0x10 (unsigned)", bytes(resign(b, header=False))
    # Re-signed: the damage reaches the Verifier and the rules of §12.2-12.3.
    masks = (0x01, 0x02, 0x04, 0x08, 0x10, 0x20, 0x40, 0x80, 0xFF, 0x03)
    step = max(1, -(-h_size // max_header)) if max_header else 1
    for k in range(-(-h_size // step)):
        i = k * step + k % step  # every residue mod step gets its turn, not only multiples of it
        if i >= h_size:
            break
        b = bytearray(f)
        m = masks[(i * 7 + 3) % len(masks)]
        b[h_off + i] ^= m
        yield f"header byte {i} ^ {m:#04x}", bytes(resign(b))

    # Fields rewritten with every value that matters, re-signed: tensor dtypes (T4, T8a-T10 with the
    # extended dtypes of format 1.1) and metadata union tags, at the top and inside lists (a value
    # table verified as another type, typed values, unknown tags).
    dtypes, tags = header_fields(f)
    every = list(range(0, 46)) + [255, 256, 65535]
    some = [0, 4, 13, 14, 17, 19, 20, 21, 31, 32, 36, 38, 43, 44]
    for k, pos in enumerate(dtypes):
        for v in (every if k < 3 else some):
            if v != struct.unpack_from("<H", f, pos)[0]:
                yield f"tensor {k} dtype {v}", bytes(set_field(f, pos, "H", v, header=True))
    for k, pos in enumerate(tags):
        for v in list(range(0, 15)) + [255]:
            if v != f[pos]:
                yield f"metadata tag {k} = {v}", bytes(set_field(f, pos, "B", v, header=True))

    # Format 1.2: chunk tables and chunk payloads of compressed tensors.
    yield "incompatible 0 (K1)", set_field(f, 16, "Q", 0)
    yield from chunk_mutations(f)
    # Format 1.4: quantization records.
    yield "incompatible bit 4 cleared (Q4)", set_field(f, 16, "Q", struct.unpack_from("<Q", f, 16)[0] & ~(1 << 4))
    yield from quant_mutations(f)

    # Data bytes: inside tensors (X1) and in padding (ignored).
    if d_size:
        for i in sorted({0, d_size // 3, d_size // 2, d_size - 1}):
            b = bytearray(f)
            b[d_off + i] ^= 0x40
            yield f"data byte {i} ^ 0x40", bytes(b)
    # Bytes outside the sections are ignored (§2).
    yield "trailing zeros", f + b"\x00" * 100
    yield "trailing junk", f + b"junk" * 1000
    gap = h_off - (d_off + d_size)
    if gap > 0:
        b = bytearray(f)
        b[d_off + d_size] ^= 0xFF
        yield "gap before header", bytes(b)
    if d_off > 96:
        b = bytearray(f)
        b[96] ^= 0xFF
        yield "gap after preamble", bytes(b)


CLI_STATUS = re.compile(r"mpk: error: (MPK_[A-Z_]+):")


def cli_status(mpk, path):
    r = subprocess.run([mpk, "verify", path], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                       errors="replace", timeout=60)
    if r.returncode == 0:
        return "MPK_OK", ""
    m = CLI_STATUS.search(r.stderr)
    if not m:
        return f"CLI exit {r.returncode}", r.stderr.strip()
    return m.group(1), r.stderr.strip()


def cli_statuses(mpk, paths):
    """`mpk verify --json` of many files in one process (an instrumented mpk takes ~0.5 s to start).
    Exactly one JSON line per file is required; if the process dies part way (a crash), every file
    of the batch is checked again on its own, so the crashing variant is named."""
    r = subprocess.run([mpk, "verify", "--json", *paths], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       text=True, errors="replace", timeout=60 + 5 * len(paths))
    lines = r.stdout.splitlines()
    out = []
    try:
        for path, line in zip(paths, lines):
            j = json.loads(line)
            if j["file"] != path:
                raise ValueError(f"line for {j['file']} where {path} was expected")
            out.append((j["status"], "" if j["status"] == "MPK_OK" else j["message"]))
    except (ValueError, KeyError) as e:
        out = None
        print(f"note: mpk verify --json printed something unreadable ({e}); checking one by one")
    if out is None or len(out) != len(paths) or r.returncode not in (0, 1, 3) or r.stderr.strip():
        return [cli_status(mpk, p) for p in paths]
    return out


def cli_inspect(mpk, paths):
    """`mpk inspect --json` of many files in one process: one document (or error object) per line;
    None for a file it could not read."""
    if not paths:
        return []
    r = subprocess.run([mpk, "inspect", "--json", *paths], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       timeout=60 + 5 * len(paths))
    if len(paths) == 1:
        return [json.loads(r.stdout) if r.returncode == 0 else None]
    docs = [json.loads(line) for line in r.stdout.splitlines()]
    if len(docs) != len(paths):
        raise RuntimeError(f"mpk inspect --json printed {len(docs)} lines for {len(paths)} files "
                           f"(exit {r.returncode}): {r.stderr.decode(errors='replace')}")
    return [None if "status" in d else d for d in docs]


def py_status(path):
    try:
        size, pre, hdr = read_mpk.read(path, "full")
        return "MPK_OK", "", read_mpk.summary(path, size, pre, hdr, "full")
    except read_mpk.MpkError as e:
        return e.status, e.message, None
    except Exception as e:  # a bug in read_mpk.py: the document was not enough, or misread
        return f"PYTHON {type(e).__name__}", str(e), None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("file")
    ap.add_argument("mpk")
    ap.add_argument("--max-header-mutations", type=int, default=1000,
                    help="at most this many re-signed header byte flips (spread evenly)")
    ap.add_argument("--keep", help="copy the variants that disagree into this directory")
    args = ap.parse_args()

    orig = open(args.file, "rb").read()
    passed = failed = 0
    seen = {}
    batch = 128

    def check(tmp, variants):
        nonlocal passed, failed
        paths = []
        for k, (label, data) in enumerate(variants):
            paths.append(os.path.join(tmp, f"variant{k}.mpk"))
            with open(paths[-1], "wb") as out:
                out.write(data)
        verdicts = []
        for path, (c, cmsg) in zip(paths, cli_statuses(args.mpk, paths)):
            p, pmsg, summ = py_status(path)
            verdicts.append((c, cmsg, p, pmsg, summ))
        # Both accept: what they report must match too (one `mpk inspect --json` for all of them).
        both_ok = [k for k, v in enumerate(verdicts) if v[0] == v[2] == "MPK_OK"]
        libs = dict(zip(both_ok, cli_inspect(args.mpk, [paths[k] for k in both_ok])))
        for k, ((label, data), (c, cmsg, p, pmsg, summ)) in enumerate(zip(variants, verdicts)):
            ok = c == p
            detail = ""
            if k in libs:
                lib = libs[k]
                for d in (lib, summ):
                    if d:
                        d.pop("file", None)
                        d.pop("verified", None)
                if lib != summ:
                    ok = False
                    detail = " (both accept, but `mpk inspect --json` and read_mpk differ)"
            seen[p] = seen.get(p, 0) + 1
            if ok:
                passed += 1
            else:
                failed += 1
                print(f"DIFFER {label}: mpk {c} [{cmsg}] vs read_mpk {p} [{pmsg}]{detail}")
                if args.keep:
                    os.makedirs(args.keep, exist_ok=True)
                    safe = re.sub(r"[^A-Za-z0-9_.+-]+", "_", label)
                    with open(os.path.join(args.keep, safe + ".mpk"), "wb") as out:
                        out.write(data)
        for path in paths:
            os.unlink(path)

    with tempfile.TemporaryDirectory(prefix="mpk-diff-") as tmp:
        pending = []
        for label, data in mutations(orig, args.max_header_mutations):
            pending.append((label, data))
            if len(pending) == batch:
                check(tmp, pending)
                pending = []
        if pending:
            check(tmp, pending)
    print("verdicts: " + ", ".join(f"{k} {v}" for k, v in sorted(seen.items())))
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
