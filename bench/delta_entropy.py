#!/usr/bin/python3
"""delta_entropy.py - how small can a lossless f32 delta patch be? (issue 5, BENCHMARKS.md)

For a base / new pair of float32 safetensors files, over the tensors that changed, prints as fractions
of the f32 size:
  planes order0   the order-0 entropy of each byte plane of zigzag(new_bits - base_bits), summed: what
                  per-plane entropy coding (mpk diff's SUB payload) can reach
  cond-on-exp     the same, each plane's entropy conditioned on the base weight's exponent byte
  gaussian        a Gaussian model of the float difference new - base with one scale per tensor, per
                  row (2-D tensors) or per column, costed in units of the base weight's ulp

Usage: /usr/bin/python3 bench/delta_entropy.py BASE.safetensors NEW.safetensors   (python3-numpy)
"""
import json
import math
import struct
import sys

import numpy as np


def load(path):
    b = open(path, "rb").read()
    n = struct.unpack("<Q", b[:8])[0]
    h = json.loads(b[8:8 + n])
    data = b[8 + n:]
    out = {}
    for k, v in h.items():
        if k == "__metadata__" or v["dtype"] != "F32":
            continue
        s, e = v["data_offsets"]
        out[k] = (v["shape"], np.frombuffer(data[s:e], dtype=np.uint32))
    return out


def entropy(x):
    _, c = np.unique(x, return_counts=True)
    p = c / c.sum()
    return float(-(p * np.log2(p)).sum())


def main():
    base, new = load(sys.argv[1]), load(sys.argv[2])
    bits = {"planes order0": 0.0, "cond-on-exp": 0.0, "gaussian/tensor": 0.0, "gaussian/row": 0.0,
            "gaussian/col": 0.0}
    n_total = 0
    c = 0.5 * math.log2(2 * math.pi * math.e)
    for k, (shape, a) in base.items():
        if k not in new or np.array_equal(a, new[k][1]):
            continue
        b = new[k][1]
        d = (b.astype(np.int64) - a.astype(np.int64)) & 0xFFFFFFFF
        d = np.where(d >= 2 ** 31, d - 2 ** 32, d)
        z = ((d << 1) ^ (d >> 63)) & 0xFFFFFFFF
        n = len(z)
        n_total += n
        bits["planes order0"] += n * sum(entropy((z >> (8 * i)) & 255) for i in range(4))
        e = (a >> 23) & 255
        for ev in np.unique(e):
            m = e == ev
            bits["cond-on-exp"] += m.sum() * sum(entropy((z[m] >> (8 * i)) & 255) for i in range(4))
        D = b.view(np.float32).astype(np.float64) - a.view(np.float32).astype(np.float64)
        ulp = np.ldexp(1.0, np.maximum(e.astype(np.int64), 1) - 127 - 23)

        def cost(sig):
            return float(np.maximum(np.log2(np.maximum(sig, 1e-30)) + c - np.log2(ulp), 0).sum())

        bits["gaussian/tensor"] += cost(np.full_like(D, D.std()))
        if len(shape) == 2:
            M = D.reshape(shape)
            bits["gaussian/row"] += cost((M.std(axis=1, keepdims=True) * np.ones_like(M)).ravel())
            bits["gaussian/col"] += cost((M.std(axis=0, keepdims=True) * np.ones_like(M)).ravel())
        else:
            bits["gaussian/row"] += cost(np.full_like(D, D.std()))
            bits["gaussian/col"] += cost(np.full_like(D, D.std()))
    for name, v in bits.items():
        print(f"{name:16s} {v / n_total / 32:.3f}")


if __name__ == "__main__":
    main()
