#!/usr/bin/python3
"""differential.py - damages a .mpk file in many ways and checks that read_mpk.py (written from
docs/FORMAT.md) and libmodelpack (through the `mpk` CLI) reach the same verdict on every variant.

Usage: differential.py FILE MPK [--max-header-mutations N] [--keep DIR]

Variants: truncations; damaged magics; every preamble byte flipped; preamble fields set to edge
values with the preamble checksum recomputed ("re-signed"); header bytes flipped, re-signed so that
the damage reaches the FlatBuffers Verifier and the semantic rules of FORMAT.md section 12; tensor
dtypes and metadata union tags (top level and inside lists) rewritten with other values, re-signed;
tensor and padding bytes flipped; trailing bytes. For each variant the status of `read_mpk.py --verify full`
must equal the status of `mpk verify` (which opens with header verification, then hashes every
tensor), and when both accept the file, `mpk inspect --json` must equal read_mpk's summary.

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
    for bit in (0, 1, 2, 5, 63):
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
    with tempfile.TemporaryDirectory(prefix="mpk-diff-") as tmp:
        path = os.path.join(tmp, "variant.mpk")
        for label, data in mutations(orig, args.max_header_mutations):
            with open(path, "wb") as out:
                out.write(data)
            c, cmsg = cli_status(args.mpk, path)
            p, pmsg, summ = py_status(path)
            ok = c == p
            detail = ""
            if ok and p == "MPK_OK":
                r = subprocess.run([args.mpk, "inspect", "--json", path], stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, timeout=60)
                lib = json.loads(r.stdout) if r.returncode == 0 else None
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
    print("verdicts: " + ", ".join(f"{k} {v}" for k, v in sorted(seen.items())))
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
