#!/usr/bin/python3
"""The second half of the demo (scripts/demo.sh): the whole path on two models trained by PyTorch
(tests/fixtures/runtime/, made by tests/fixtures/make_runtime_fixtures.py) - a digits MLP and a
character-level GPT-2 in the Hugging Face layout - driven through the `mpk` CLI:

  convert (with the architecture's graph) -> quantize to bf16, fp16, int8 -> run each, with size, open
  time, first-inference time and accuracy / held-out loss beside PyTorch's -> generate text -> make a
  fine-tuned version of the MLP (a few epochs of plain NumPy SGD on the digits' training images),
  ship it as a patch (size beside the full file), apply it, check it byte for byte, run it.

Usage: walkthrough.py MPK_BINARY OUTDIR      (needs python3-numpy and python3-sklearn)
"""
import json
import os
import re
import struct
import subprocess
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
FIX = os.path.join(HERE, "..", "..", "tests", "fixtures", "runtime")
MPK = None


def mpk(*args):
    p = subprocess.run([MPK, *map(str, args)], capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit(f"mpk {' '.join(map(str, args))} failed:\n{p.stderr}")
    return p.stdout + p.stderr


def run_timed(model, x, out):
    """Runs the model's graph on x; returns (open ms, first inference ms = graph build + run)."""
    text = mpk("run", model, "--input", x, "-o", out, "--no-fsync")
    m = re.search(r"open ([\d.]+) ms, graph ([\d.]+) ms, run ([\d.]+) ms", text)
    return float(m[1]), float(m[2]) + float(m[3])


def read_safetensors(path):
    raw = open(path, "rb").read()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    out = {}
    for k, v in header.items():
        if k != "__metadata__":
            a, b = v["data_offsets"]
            out[k] = np.frombuffer(raw[8 + n + a:8 + n + b], dtype="<f4").reshape(v["shape"]).copy()
    return out, header.get("__metadata__", {})


def write_safetensors(path, tensors, metadata):
    header, off = {"__metadata__": metadata}, 0
    for name, a in tensors.items():
        header[name] = {"dtype": "F32", "shape": list(a.shape), "data_offsets": [off, off + a.nbytes]}
        off += a.nbytes
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h)
        for a in tensors.values():
            f.write(np.ascontiguousarray(a, dtype="<f4").tobytes())


def loss_of(logits, targets):
    z = logits.astype(np.float64)
    z -= z.max(-1, keepdims=True)
    return float((np.log(np.exp(z).sum(-1)) - z[np.arange(len(targets)), targets]).mean())


def kib(path):
    return f"{os.path.getsize(path) / 1024:.0f} KiB"


def main():
    global MPK
    MPK, out = os.path.abspath(sys.argv[1]), sys.argv[2]
    os.makedirs(out, exist_ok=True)
    ref = json.load(open(os.path.join(FIX, "reference.json")))
    rows = []
    # ---- the digits MLP, every dtype
    mlp = os.path.join(out, "mlp.f32.mpk")
    mpk("convert", os.path.join(FIX, "mlp.safetensors"), mlp, "--arch", "mlp", "--no-fsync")
    x, y = os.path.join(FIX, "mlp_x.npy"), np.load(os.path.join(FIX, "mlp_y.npy"))
    yp = os.path.join(out, "y.npy")
    for dt in ("f32", "bf16", "fp16", "int8"):
        path = os.path.join(out, f"mlp.{dt}.mpk")
        if dt != "f32":
            mpk("quantize", mlp, path, "--to", dt, "-q", "--no-fsync")
        o, first = run_timed(path, x, yp)
        acc = float((np.load(yp).argmax(1) == y).mean())
        rows.append(("digits MLP", dt, kib(path), o, first, f"accuracy {100 * acc:.2f}%"))
    # ---- the character-level GPT-2, every dtype
    g = os.path.join(out, "gpt2.f32.mpk")
    mpk("convert", os.path.join(FIX, "gpt2.safetensors"), g, "--arch", "gpt2", "--config",
        os.path.join(FIX, "gpt2_config.json"), "--no-fsync")
    windows = np.load(os.path.join(FIX, "gpt2_eval.npy"))
    ip = os.path.join(out, "ids.npy")
    for dt in ("f32", "bf16", "fp16", "int8"):
        path = os.path.join(out, f"gpt2.{dt}.mpk")
        if dt != "f32":
            mpk("quantize", g, path, "--to", dt, "-q", "--no-fsync")
        losses, first_times, opens = [], [], []
        for w in windows[:8]:
            np.save(ip, w[:-1])
            o, first = run_timed(path, ip, yp)
            opens.append(o)
            first_times.append(first)
            losses.append(loss_of(np.load(yp), w[1:]))
        rows.append(("char GPT-2", dt, kib(path), np.median(opens), np.median(first_times),
                     f"held-out loss {np.mean(losses):.4f}"))
    print(f"   PyTorch (f32, in tests/fixtures/runtime/reference.json): MLP accuracy "
          f"{100 * ref['mlp']['test_accuracy']:.2f}% on {ref['mlp']['test_images']} images; GPT-2 held-out loss "
          f"{ref['gpt2']['heldout_loss']:.4f} on {ref['gpt2']['heldout_windows']} windows (the table: 8 of them)\n")
    print(f"   {'model':<11} {'dtype':<5} {'file':>9} {'open ms':>8} {'1st inference ms':>17}  quality")
    for r in rows:
        print(f"   {r[0]:<11} {r[1]:<5} {r[2]:>9} {r[3]:>8.2f} {r[4]:>17.2f}  {r[5]}")
    # ---- text
    text = mpk("generate", os.path.join(out, "gpt2.int8.mpk"), "--prompt", "This License", "-n", "48",
               "--temperature", "0.7", "--seed", "1")
    print("\n   mpk generate gpt2.int8.mpk --prompt 'This License' -n 48 --temperature 0.7:")
    print("     " + text.splitlines()[0].replace("\n", " "))
    print("     " + text.strip().splitlines()[-1])
    # ---- an update: fine-tune the MLP a little with NumPy, ship the difference as a patch
    from sklearn.datasets import load_digits
    w, meta = read_safetensors(os.path.join(FIX, "mlp.safetensors"))
    d = load_digits()
    xs = (d.data / 16.0).astype(np.float32)
    perm = np.random.default_rng(0).permutation(len(xs))
    tr = perm[360:]  # the images make_runtime_fixtures.py trained on (its first 360 are held out)
    rng = np.random.default_rng(1)
    for epoch in range(3):
        for i in range(0, len(tr), 32):
            b = tr[rng.permutation(len(tr))][:32]
            xb, yb = xs[b], d.target[b]
            h = np.maximum(xb @ w["fc1.weight"].T + w["fc1.bias"], 0)
            z = h @ w["fc2.weight"].T + w["fc2.bias"]
            p = np.exp(z - z.max(1, keepdims=True))
            p /= p.sum(1, keepdims=True)
            p[np.arange(len(yb)), yb] -= 1
            p /= len(yb)
            gh = (p @ w["fc2.weight"]) * (h > 0)
            lr = 0.01
            w["fc2.weight"] -= lr * p.T @ h
            w["fc2.bias"] -= lr * p.sum(0)
            w["fc1.weight"] -= lr * gh.T @ xb
            w["fc1.bias"] -= lr * gh.sum(0)
    v2st = os.path.join(out, "mlp.v2.safetensors")
    write_safetensors(v2st, {k: v.astype(np.float32) for k, v in w.items()}, meta)
    v2 = os.path.join(out, "mlp.v2.mpk")
    mpk("convert", v2st, v2, "--arch", "mlp", "--no-fsync")
    patch = os.path.join(out, "mlp.v1-v2.mpkd")
    mpk("diff", mlp, v2, "-o", patch, "--two-way", "--no-fsync")
    applied = os.path.join(out, "mlp.v2.applied.mpk")
    mpk("patch", mlp, patch, "-o", applied, "--no-fsync")
    same = open(applied, "rb").read() == open(v2, "rb").read()
    o, first = run_timed(applied, x, yp)
    acc = float((np.load(yp).argmax(1) == y).mean())
    back = os.path.join(out, "mlp.v1.rolled-back.mpk")
    mpk("patch", "--reverse", applied, patch, "-o", back, "--no-fsync")
    rolled = open(back, "rb").read() == open(mlp, "rb").read()
    print(f"\n   update: 3 epochs of NumPy SGD on the MLP -> mlp.v2.mpk ({kib(v2)}); "
          f"patch {kib(patch)} = {100 * os.path.getsize(patch) / os.path.getsize(v2):.1f}% of the full file "
          f"(two-way, so it also rolls back)")
    print(f"   mpk patch mlp.f32.mpk mlp.v1-v2.mpkd: byte-identical to v2: {'yes' if same else 'NO'}; "
          f"it runs: accuracy {100 * acc:.2f}% (open {o:.2f} ms, first inference {first:.2f} ms); "
          f"mpk patch --reverse gives v1 back byte for byte: {'yes' if rolled else 'NO'}")
    return 0 if same and rolled else 1


if __name__ == "__main__":
    sys.exit(main())
