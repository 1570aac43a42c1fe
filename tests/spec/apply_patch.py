#!/usr/bin/env python3
"""apply_patch.py - applies a delta patch the way docs/FORMAT.md §7.10 says, from that document alone,
with read_mpk.py (the independent reader) for the containers. A check of the specification: another
team's applier, written from the text, must rebuild what libmodelpack's `mpk patch` rebuilds.

Usage: apply_patch.py FROM PATCH TO [--reverse]
  FROM     the model the patch starts from (its base; with --reverse, its result)
  PATCH    the patch
  TO       the model it must make: every tensor of the patch's result side (base side with --reverse)
           is rebuilt from FROM's tensors and the payloads, and must hash to the side's xxh3 and equal
           TO's decoded tensor of that name; the side's content id must be FROM's / TO's.
Prints one line per operation kind used, then "ok"; exit status 0, or 1 with the first difference.
Needs python3-xxhash (and python3-zstandard for zstd chunks, as read_mpk.py).
"""
import array
import os
import struct
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import read_mpk as R  # noqa: E402

xxhash = R.xxhash

OP_NAMES = {0: "COPY", 1: "LITERAL", 2: "XOR", 3: "SUB", 4: "MISSING", 5: "SUB_SORTED"}
SORTED_SUB_BIT = 1  # Patch.incompatible bit 0
RESIZED_BIT = 2     # Patch.incompatible bit 1 (rev. 6): a delta's source and payload may differ in size
GROUP = 1 << 20     # SUB_SORTED: bytes per group
EXPONENT = {3: (10, 5), 4: (7, 8), 2: (23, 8), 20: (23, 8), 1: (52, 11)}  # dtype -> (shift, bits)
ARRAY_CODE = {1: "B", 2: "H", 4: "I", 8: "Q"}  # unsigned integers of w bytes (checked below)


def op_width(dtype):
    """§7.10: the dtype's size for whole-byte dtypes of 1, 2, 4 or 8 bytes, 4 for c64, else 1."""
    if dtype == 20:
        return 4
    _, elems, nbytes, _ = R.DTYPES[dtype]
    return nbytes if elems == 1 and nbytes in (1, 2, 4, 8) else 1


def tensor_bytes(path, pre, t):
    """The decoded bytes of tensor t (§12.4), raw or chunked."""
    with open(path, "rb") as f:
        off = pre["data_offset"] + t["offset"]
        if t["encoding"] != R.ENCODING_CHUNKED:
            return R.read_exact(f, off, t["size"], t)
        out = bytearray()
        c, d = t["chunk_size"], t["decoded_size"]
        for k, (_, size, codec) in enumerate(t["chunks"]):
            out += R.decode_chunk(codec, R.read_exact(f, off, size, t), min(c, d - k * c))
            off += size
        return bytes(out)


def side_nbytes(t):
    """A PatchTensor's size n (§7.3-7.4): elements of its shape, in whole blocks of its dtype."""
    _, elems, nbytes, _ = R.DTYPES[t["dtype"]]
    count = 1
    for d in t["shape"]:
        count *= d
    return count // elems * nbytes


class Model:
    def __init__(self, path):
        self.path = path
        _, self.pre, self.hdr = R.read(path, verify="full")
        self.by_name = {t["name"]: t for t in self.hdr["tensors"]}
        names = sorted(self.by_name)
        self.content_id = R.content_id([self.by_name[n] for n in names])

    def bytes_of(self, name):
        return tensor_bytes(self.path, self.pre, self.by_name[name])


def words(b, w):
    a = array.array(ARRAY_CODE[w])
    assert a.itemsize == w, "this platform's array sizes"
    a.frombytes(b)
    if sys.byteorder != "little":
        a.byteswap()
    return a


def unzigzag(z):
    return (z >> 1) ^ -(z & 1)


def sub(src, pay, w, sign, order=None):
    """result element i = src[i] + sign * unzigzag(pay[k]) mod 2^(8w), with k = i or order[i]."""
    s, p = words(src, w), words(pay, w)
    mask = (1 << (8 * w)) - 1
    out = array.array(ARRAY_CODE[w], bytes(len(src)))
    for i in range(len(s)):
        out[i] = (s[i] + sign * unzigzag(p[i if order is None else order[i]])) & mask
    if sys.byteorder != "little":
        out.byteswap()
    return out.tobytes()


def sorted_order(src, w, dtype):
    """For SUB_SORTED: the payload index of each element. Per group of 2^20 bytes, the elements in
    increasing order of (key, index), key = the source element's exponent field; payload element k
    of the group belongs to the k-th of them."""
    shift, bits = EXPONENT[dtype]
    s = words(src, w)
    per_group = GROUP // w
    order = [0] * len(s)
    for g in range(0, len(s), per_group):
        idx = range(g, min(len(s), g + per_group))
        keys = {i: (s[i] >> shift) & ((1 << bits) - 1) for i in idx}
        for k, i in enumerate(sorted(idx, key=lambda i: (keys[i], i))):
            order[i] = g + k
    return order


def main(argv):
    reverse = "--reverse" in argv
    args = [a for a in argv if a != "--reverse"]
    if len(args) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    src, want = Model(args[0]), Model(args[2])
    _, ppre, phdr = R.read(args[1], verify="full")
    patch = phdr["patch"]
    if patch is None:
        print(f"{args[1]} is not a patch", file=sys.stderr)
        return 1
    if patch["version"] != 1 or patch["incompatible"] & ~(SORTED_SUB_BIT | RESIZED_BIT):
        print(f"unsupported patch: version {patch['version']}, incompatible bits {patch['incompatible']:#x}",
              file=sys.stderr)
        return 1
    payloads = {t["name"]: t for t in phdr["tensors"]}
    frm, to = (patch["result"], patch["base"]) if reverse else (patch["base"], patch["result"])
    sign = -1 if reverse else 1
    if frm["content_id"].decode() != src.content_id:
        print(f"the patch starts from {frm['content_id'].decode()}, {args[0]} is {src.content_id}", file=sys.stderr)
        return 1
    if to["content_id"].decode() != want.content_id:
        print(f"the patch makes {to['content_id'].decode()}, {args[2]} is {want.content_id}", file=sys.stderr)
        return 1
    used = {}
    for t in to["tensors"]:
        name, op, dtype = t["name"], t["op"], t["dtype"]
        used[OP_NAMES.get(op, op)] = used.get(OP_NAMES.get(op, op), 0) + 1
        if op == 4:
            print(f"tensor {R.quote(name)} is MISSING from this patch", file=sys.stderr)
            return 1
        source = frm["tensors"][t["source"]]["name"] if op in (0, 2, 3, 5) else None
        pay = tensor_bytes(args[1], ppre, payloads[t["payload"]]) if t["payload"] is not None else b""
        n = side_nbytes(t)
        if op in (2, 3, 5):  # a delta: its source as n bytes (cut or zero-extended), its payload's first n
            s = src.bytes_of(source)
            if len(s) != n and not patch["incompatible"] & RESIZED_BIT:
                print(f"tensor {R.quote(name)}: a source of another size without bit 1", file=sys.stderr)
                return 1
            if len(s) > 4 * n:
                print(f"tensor {R.quote(name)}: a source of more than 4 times its size", file=sys.stderr)
                return 1
            if len(pay) != n and not (len(s) > n and len(pay) == len(s)):
                print(f"tensor {R.quote(name)}: its payload holds {len(pay)} bytes, not {n}", file=sys.stderr)
                return 1
            if len(s) != n:
                used["resized sources"] = used.get("resized sources", 0) + 1
            src_bytes, pay = s[:n] + bytes(max(0, n - len(s))), pay[:n]
        elif (op == 0 and len(src.bytes_of(source)) != n) or (op == 1 and len(pay) != n):
            print(f"tensor {R.quote(name)}: its source or payload is not {n} bytes", file=sys.stderr)
            return 1
        if op == 0:
            got = src.bytes_of(source)
        elif op == 1:
            got = pay
        elif op == 2:
            got = bytes(a ^ b for a, b in zip(src_bytes, pay))
        elif op == 3:
            got = sub(src_bytes, pay, op_width(dtype), sign)
        elif op == 5:
            if not patch["incompatible"] & SORTED_SUB_BIT or dtype not in EXPONENT:
                print(f"tensor {R.quote(name)}: SUB_SORTED without bit 0, or on dtype {dtype}", file=sys.stderr)
                return 1
            got = sub(src_bytes, pay, op_width(dtype), sign, sorted_order(src_bytes, op_width(dtype), dtype))
        else:
            print(f"tensor {R.quote(name)}: unknown operation {op}", file=sys.stderr)
            return 1
        if xxhash.xxh3_64_intdigest(got) != t["xxh3"]:
            print(f"tensor {R.quote(name)} ({OP_NAMES[op]}) does not hash to the side's xxh3", file=sys.stderr)
            return 1
        if got != want.bytes_of(name):
            print(f"tensor {R.quote(name)} ({OP_NAMES[op]}) differs from {args[2]}'s", file=sys.stderr)
            return 1
    for k in sorted(used):
        print(f"{k}: {used[k]}")
    print("ok")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except R.MpkError as e:
        print(f"{e}", file=sys.stderr)
        sys.exit(1)
