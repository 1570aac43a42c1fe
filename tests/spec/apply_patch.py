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
Prints one line per operation kind used (and "resized sources: N", "low-rank sources: N"), then "ok";
exit status 0, or 1 with the first difference or broken rule.
Implements every operation and patch feature bit of §7.10: bit 0 `sorted-sub` (SUB_SORTED), bit 1
`resized-source` (a delta's source cut or zero-extended to its tensor's size) and bit 2
`low-rank-source` (rev. 7, "Low-rank sources": an f32 SUB / SUB_SORTED on the source predicted by
i8 factors; their checks, and the prediction in exactly the document's IEEE binary64 arithmetic,
which Python's floats are: binary64 rounded to nearest, ties to even, no fused multiply-add).
Needs python3-xxhash (and python3-zstandard for zstd chunks, as read_mpk.py). The prediction uses
numpy when it is importable (its float64 elementwise operations and float32 cast are the same IEEE
operations), else a pure-Python loop of the same steps.
"""
import array
import os
import struct
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import read_mpk as R  # noqa: E402

try:
    import numpy as np
except ImportError:  # the pure-Python prediction below is the same arithmetic, only slower
    np = None

xxhash = R.xxhash

OP_NAMES = {0: "COPY", 1: "LITERAL", 2: "XOR", 3: "SUB", 4: "MISSING", 5: "SUB_SORTED"}
SORTED_SUB_BIT = 1  # Patch.incompatible bit 0
RESIZED_BIT = 2     # Patch.incompatible bit 1 (rev. 6): a delta's source and payload may differ in size
LOW_RANK_BIT = 4    # Patch.incompatible bit 2 (rev. 7): an f32 delta's source may be predicted by a low-rank product
F32 = 2             # DType f32 (R.DTYPES)
MAX_RANK = 64       # a predictor's rank k is 1..64
MIN_NORMAL = 2.0 ** -126  # the smallest normal f32
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


def predictor_error(t, bits, payloads):
    """§7.10 "Low-rank sources", the checks at open of a PatchTensor t with `predictor` or `rank`, in
    the document's order: None when t has neither or passes them, else what is wrong."""
    k, pred, op, shape = t["rank"], t["predictor"], t["op"], t["shape"]
    if pred is None and k == 0:
        return None
    if not bits & LOW_RANK_BIT:
        return "a predictor or rank without Patch.incompatible bit 2 (low-rank-source)"
    if pred is None or not 1 <= k <= MAX_RANK:
        return f"rank {k} {'without' if pred is None else 'with'} a predictor (1..{MAX_RANK} exactly with one)"
    if op not in (3, 5):
        return f"a predictor on op {OP_NAMES.get(op, op)}, not SUB or SUB_SORTED"
    if t["dtype"] != F32:
        return f"a predictor on dtype {R.DTYPES.get(t['dtype'], (t['dtype'],))[0]}, not f32"
    if len(shape) < 2:
        return f"a predictor on a tensor with {len(shape)} dimension(s), not 2 or more"
    n = side_nbytes(t)
    if n == 0:
        return "a predictor on an empty tensor"
    rows, cols = shape[0], n // (4 * shape[0])
    if k > min(rows, cols):
        return f"rank {k} above min(R, C) = min({rows}, {cols})"
    if (4 + k) * (rows + cols) > n:
        return f"factors of (4 + {k}) * ({rows} + {cols}) bytes, more than the tensor's {n}"
    f = payloads.get(pred)
    if f is None:
        return f"its predictor {R.quote(pred)} is not a tensor of the patch"
    if side_nbytes(f) != (4 + k) * (rows + cols):
        return (f"its predictor {R.quote(pred)} holds {side_nbytes(f)} bytes, not (4 + {k}) * ({rows} + {cols}) = "
                f"{(4 + k) * (rows + cols)}")
    return None


def predicted_source(src, rows, cols, k, factors, use_numpy=None):
    """§7.10 "Low-rank sources", steps 1-3: the predicted source p (4 * rows * cols bytes) of the f32
    source src (already cut or zero-extended to that size), from the predictor's decoded bytes
    factors: su[rows], sv[cols] (f32), U[rows][k], V[k][cols] (i8, row-major). Raises ValueError when
    a scale is neither +-0 nor a finite normal f32 (MPK_ERR_CORRUPT_DATA)."""
    n = 4 * rows * cols
    assert len(src) == n and len(factors) == (4 + k) * (rows + cols)
    scale_bits = struct.unpack_from(f"<{rows + cols}I", factors, 0)
    for x, b in enumerate(scale_bits):
        if b & 0x7FFFFFFF and ((b >> 23) & 0xFF) in (0, 0xFF):
            which = f"su[{x}]" if x < rows else f"sv[{x - rows}]"
            raise ValueError(f"predictor scale {which} = {b:#010x} is neither +-0 nor a finite normal f32")
    scales = struct.unpack_from(f"<{rows + cols}f", factors, 0)  # exact: normal f32 -> binary64
    su, sv = scales[:rows], scales[rows:]
    u_at, v_at = 4 * (rows + cols), 4 * (rows + cols) + rows * k
    if use_numpy is None:
        use_numpy = np is not None
    if use_numpy:
        return _predicted_numpy(src, rows, cols, k, su, sv, factors[u_at:v_at], factors[v_at:])
    U = array.array("b", factors[u_at:v_at])
    V = array.array("b", factors[v_at:])
    v_cols = [V[j::cols] for j in range(cols)]  # V[t][j] for t < k
    s = words(src, 4)
    out = array.array("I", s)
    unpack_f, pack_f, unpack_i = struct.Struct("<f").unpack, struct.Struct("<f").pack, struct.Struct("<I").unpack
    for i in range(rows):
        u_row, su_i, base = U[i * k:(i + 1) * k], su[i], i * cols
        for j in range(cols):
            bits = s[base + j]
            if ((bits >> 23) & 0xFF) in (0, 0xFF):  # zero, subnormal, infinite, NaN: p = s
                continue
            a = sum(x * y for x, y in zip(u_row, v_cols[j]))            # 1. an exact integer
            r = unpack_f(bits.to_bytes(4, "little"))[0] + (float(a) * su_i) * sv[j]  # 2. binary64, RNE
            if abs(r) < MIN_NORMAL:                                      # 3. below the normal range
                continue
            try:
                q = unpack_i(pack_f(r))[0]                               # binary32, RNE
            except OverflowError:
                continue
            if (q >> 23) & 0xFF != 0xFF:                                 # not infinite
                out[base + j] = q
    if sys.byteorder != "little":
        out.byteswap()
    return out.tobytes()


def _predicted_numpy(src, rows, cols, k, su, sv, u_bytes, v_bytes):
    """predicted_source's steps with numpy, a band of rows at a time: the products of i8 factors are
    summed in int64 (exact), then the same binary64 multiplications and addition, elementwise."""
    s = np.frombuffer(src, dtype="<u4").reshape(rows, cols)
    U = np.frombuffer(u_bytes, dtype=np.int8).reshape(rows, k).astype(np.int64)
    V = np.frombuffer(v_bytes, dtype=np.int8).reshape(k, cols).astype(np.int64)
    su64 = np.array(su, dtype=np.float64)
    sv64 = np.array(sv, dtype=np.float64)
    out = np.empty((rows, cols), dtype="<u4")
    band = max(1, (1 << 20) // cols)
    with np.errstate(all="ignore"):
        for i0 in range(0, rows, band):
            i1 = min(rows, i0 + band)
            sb = s[i0:i1]
            a = U[i0:i1] @ V                                                       # 1.
            r = sb.view("<f4").astype(np.float64) + (a.astype(np.float64) * su64[i0:i1, None]) * sv64[None, :]  # 2.
            q = r.astype(np.float32).view(np.uint32)                               # 3. RNE; overflow -> inf
            e = (sb >> 23) & 0xFF
            keep = (e == 0) | (e == 0xFF) | (np.abs(r) < MIN_NORMAL) | (((q >> 23) & 0xFF) == 0xFF)
            out[i0:i1] = np.where(keep, sb, q)
    return out.tobytes()


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
    if patch["version"] != 1 or patch["incompatible"] & ~(SORTED_SUB_BIT | RESIZED_BIT | LOW_RANK_BIT):
        print(f"unsupported patch: version {patch['version']}, incompatible bits {patch['incompatible']:#x}",
              file=sys.stderr)
        return 1
    payloads = {t["name"]: t for t in phdr["tensors"]}
    for side in ("base", "result"):  # checked at open, both sides
        for t in patch[side]["tensors"]:
            err = predictor_error(t, patch["incompatible"], payloads)
            if err is not None:
                print(f"{side} tensor {R.quote(t['name'])}: {err}", file=sys.stderr)
                return 1
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
            if t["predictor"] is not None:  # the predicted source p in place of the source (keys from p)
                rows, k = t["shape"][0], t["rank"]
                factors = tensor_bytes(args[1], ppre, payloads[t["predictor"]])
                try:
                    src_bytes = predicted_source(src_bytes, rows, n // (4 * rows), k, factors)
                except ValueError as e:
                    print(f"tensor {R.quote(name)}: {e}", file=sys.stderr)
                    return 1
                used["low-rank sources"] = used.get("low-rank sources", 0) + 1
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
