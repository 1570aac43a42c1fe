#!/usr/bin/env python3
"""NumPy side of the .npz/.npy converter tests (tests/convert/test_npz.cpp).

  make_npz.py gen DIR          writes, with numpy itself:
      DIR/savez.npz            np.savez of every array below (stored members, zip64 extra fields)
      DIR/compressed.npz       np.savez_compressed of the same arrays (deflated members)
      DIR/ref/<i>.npy          np.save of array i (the reference bytes), names in DIR/names.txt
      DIR/fortran.npz          one Fortran-ordered 2-D array (which `mpk pack` refuses)
      DIR/single.npy           np.save of one array (big-endian float64)
  make_npz.py check OUT.npz DIR
      np.load(OUT.npz) must hold exactly the arrays of DIR/names.txt, each equal to its reference
      bit for bit (same shape; same dtype, little-endian; same bytes). Exit 0 if so, 1 otherwise.

Every dtype numpy shares with mpk (f64 f32 f16 i64 i32 i16 i8 u64 u32 u16 u8 bool), scalars,
zero-size dimensions, big-endian arrays, NaN payloads and -0.0, names with '/' and non-ASCII ones.
"""
import os
import sys

import numpy as np


def arrays():
    rng = np.random.default_rng(7)
    out = {}
    for code in ["f8", "f4", "f2", "i8", "i4", "i2", "i1", "u8", "u4", "u2", "u1"]:
        dt = np.dtype("<" + code)
        raw = rng.integers(0, 256, size=3 * 5 * dt.itemsize, dtype=np.uint8)
        out["m." + code] = raw.view(dt).reshape(3, 5)  # any bit pattern, NaN payloads included
        out["s." + code] = np.array(raw[: dt.itemsize].view(dt)[0], dtype=dt)  # shape ()
        out["z." + code] = np.zeros((4, 0, 2), dtype=dt)
    out["m.b1"] = rng.integers(0, 2, size=(7,)).astype(np.bool_)
    out["s.b1"] = np.array(True)
    out["z.b1"] = np.zeros((0,), dtype=np.bool_)
    out["be.f4"] = np.arange(12, dtype=">f4").reshape(3, 4) * -1.5
    out["be.i8"] = np.array([1, -2, 2**40, -(2**62)], dtype=">i8")
    out["be.u2"] = np.array([1, 0xFF00, 0x1234], dtype=">u2")
    out["neg_zero"] = np.array([-0.0, 0.0, np.inf, -np.inf], dtype="<f4")
    out["layer/0/weight"] = np.arange(6, dtype="<f4").reshape(2, 3)
    out["\u00e9t\u00e9/\u03c9"] = np.array([1, 2, 3], dtype="<i2")
    out["big"] = rng.standard_normal(300_000).astype("<f4")  # > one 1 MiB piece
    return out


def gen(d):
    os.makedirs(os.path.join(d, "ref"), exist_ok=True)
    a = arrays()
    np.savez(os.path.join(d, "savez.npz"), **a)
    np.savez_compressed(os.path.join(d, "compressed.npz"), **a)
    with open(os.path.join(d, "names.txt"), "w", encoding="utf-8") as f:
        for i, (name, arr) in enumerate(a.items()):
            np.save(os.path.join(d, "ref", "%d.npy" % i), arr)
            f.write(name + "\n")
    np.savez(os.path.join(d, "fortran.npz"), f=np.asfortranarray(np.arange(6, dtype="<f4").reshape(2, 3)))
    np.save(os.path.join(d, "single.npy"), np.array([[1.5, -2.25], [3.0, 1e300]], dtype=">f8"))


def check(path, d):
    with open(os.path.join(d, "names.txt"), encoding="utf-8") as f:
        names = [line.rstrip("\n") for line in f]
    z = np.load(path)
    if sorted(z.files) != sorted(names):
        print("members differ: %r vs %r" % (sorted(z.files), sorted(names)))
        return 1
    bad = 0
    for i, name in enumerate(names):
        ref = np.load(os.path.join(d, "ref", "%d.npy" % i))
        ref = ref.astype(ref.dtype.newbyteorder("<"))  # exports are little-endian
        got = z[name]
        if got.dtype != ref.dtype or got.shape != ref.shape or got.tobytes() != ref.tobytes():
            print("%s: got %s %s, expected %s %s" % (name, got.dtype, got.shape, ref.dtype, ref.shape))
            bad += 1
        if got.dtype.byteorder == ">":
            print("%s: big-endian dtype %s" % (name, got.dtype))
            bad += 1
    print("%d arrays checked, %d differ" % (len(names), bad))
    return 1 if bad else 0


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "gen":
        gen(sys.argv[2])
        sys.exit(0)
    if len(sys.argv) == 4 and sys.argv[1] == "check":
        sys.exit(check(sys.argv[2], sys.argv[3]))
    print(__doc__, file=sys.stderr)
    sys.exit(2)
