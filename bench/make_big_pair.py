#!/usr/bin/python3
"""make_big_pair.py - a multi-GiB base / "fine-tuned" model pair for the delta-patch memory benchmark (issue 5).

Writes OUTDIR/big_base.safetensors and OUTDIR/big_ft.safetensors (float32), streaming piece by piece so
that this script stays far below 1 GiB of memory whatever the model size:

  layers.{i}.weight   --layers tensors (default 24) of --tensor-mib MiB each (default 128), N(0, 0.02);
                      in the fine-tuned copy each gets N(0, --noise) added (default 1e-4), in float32
  frozen.{j}.weight   --frozen tensors (default 4) of --frozen-mib MiB each (default 32), N(0, 0.02),
                      identical in both files (a patch keeps them)

Defaults give 24 x 128 MiB + 4 x 32 MiB = 3.125 GiB per file. Both files are written in one pass: each
piece of 4 Mi values is drawn once (numpy's PCG64, seeded per tensor, so the output is reproducible), written
to the base file, then the noise is added and it is written to the fine-tuned file.

Usage: /usr/bin/python3 bench/make_big_pair.py OUTDIR [--layers 24] [--tensor-mib 128] [--frozen 4]
                                               [--frozen-mib 32] [--noise 1e-4] [--seed 5]
Prints one JSON line: file sizes, tensor count, largest tensor bytes, seconds, peak RSS of this script.
Needs python3-numpy only.
"""
import argparse
import json
import os
import resource
import sys
import time

import numpy as np

PIECE = 4 << 20  # values per piece: 16 MiB of float32


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("outdir")
    ap.add_argument("--layers", type=int, default=24)
    ap.add_argument("--tensor-mib", type=int, default=128)
    ap.add_argument("--frozen", type=int, default=4)
    ap.add_argument("--frozen-mib", type=int, default=32)
    ap.add_argument("--noise", type=float, default=1e-4)
    ap.add_argument("--seed", type=int, default=5)
    a = ap.parse_args()
    t0 = time.time()
    os.makedirs(a.outdir, exist_ok=True)

    # (name, shape, changed); the shapes keep 4096 columns where the size allows
    tensors = []
    for i in range(a.layers):
        n = a.tensor_mib << 18  # MiB of float32 -> values
        tensors.append((f"layers.{i}.weight", [n // 4096, 4096] if n % 4096 == 0 else [n], True))
    for j in range(a.frozen):
        n = a.frozen_mib << 18
        tensors.append((f"frozen.{j}.weight", [n // 4096, 4096] if n % 4096 == 0 else [n], False))

    header, off = {}, 0
    for name, shape, _ in tensors:
        nbytes = int(np.prod(shape)) * 4
        header[name] = {"dtype": "F32", "shape": shape, "data_offsets": [off, off + nbytes]}
        off += nbytes
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)

    paths = [os.path.join(a.outdir, "big_base.safetensors"), os.path.join(a.outdir, "big_ft.safetensors")]
    files = [open(p + ".tmp", "wb") for p in paths]
    for f in files:
        f.write(len(h).to_bytes(8, "little"))
        f.write(h)
    for k, (name, shape, changed) in enumerate(tensors):
        rng = np.random.Generator(np.random.PCG64([a.seed, k]))
        noise_rng = np.random.Generator(np.random.PCG64([a.seed, k, 1]))
        left = int(np.prod(shape))
        while left:
            m = min(PIECE, left)
            w = rng.standard_normal(m, dtype=np.float32)
            w *= np.float32(0.02)
            files[0].write(w.data)
            if changed:
                d = noise_rng.standard_normal(m, dtype=np.float32)
                d *= np.float32(a.noise)
                w += d
                del d
            files[1].write(w.data)
            del w
            left -= m
    for f, p in zip(files, paths):
        f.close()
        os.replace(p + ".tmp", p)

    largest = max(int(np.prod(s)) * 4 for _, s, _ in tensors)
    print(json.dumps({
        "files": {p: os.path.getsize(p) for p in paths},
        "tensors": len(tensors), "changed": sum(1 for t in tensors if t[2]),
        "largest_tensor_bytes": largest, "seconds": round(time.time() - t0, 1),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }), flush=True)


if __name__ == "__main__":
    sys.exit(main())
