#!/usr/bin/python3
"""Cold start and per-token decode of a GPT-2-layout model: modelpack (`mpk generate`, every stored
dtype) beside PyTorch (Debian's python3-torch) running the same f32 weights, in the same run (issue 7).

Usage: bench/gpt2_vs_torch.py MPK_BINARY [--layers 12 --embd 768 --heads 12 --vocab 50257 --positions 1024]
       [--prompt 16] [--tokens 32] [--threads 1] [--reps 3] [--work DIR]

The model (random weights, N(0, 0.02), GPT-2 small's shape by default: 124 M parameters, 498 MB f32) is
made at benchmark time as a Hugging Face-layout safetensors file + config.json, converted with
`mpk convert --arch gpt2`, and quantized with `mpk quantize --to bf16|fp16|int8 --embeddings` (so
the tied output projection is narrow too). Both sides run one sequence (batch 1), 1 thread by default.

  cold start  = in-process time from nothing loaded to the logits of the last position of a
                PROMPT-token prompt (the first generated token's; both sides project only that row
                through the output matrix, as generation needs: ours selects gpt2's "next_logits"):
                ours: open + graph validation + first run (packing included), as `mpk generate`
                reports them; PyTorch: read the safetensors file (numpy memmap -> torch.from_numpy,
                zero-copy), build the module, first forward. `import torch` (~1-2 s) is NOT included;
                each side's process wall time (which includes it) is printed as well.
  per token   = median over TOKENS greedy decode steps with a KV cache after the prompt (PyTorch: the
                same cached decode written in plain torch below).
Prints a Markdown table (medians of REPS fresh processes per cell) with ratios to PyTorch f32.
"""
import argparse
import json
import math
import os
import re
import struct
import subprocess
import sys
import time

import numpy as np

TORCH_RUNNER = r'''
import json, math, struct, sys, time
t_start = time.perf_counter()
import numpy as np, torch
import torch.nn.functional as F
t_imported = time.perf_counter()
path, cfg_path, prompt_len, tokens, threads = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
torch.set_num_threads(threads)
torch.set_grad_enabled(False)
t0 = time.perf_counter()
cfg = json.load(open(cfg_path))
raw = np.memmap(path, dtype=np.uint8, mode="r")
n = struct.unpack("<Q", bytes(raw[:8]))[0]
header = json.loads(bytes(raw[8:8 + n]))
W = {}
for k, v in header.items():
    if k == "__metadata__":
        continue
    a, b = v["data_offsets"]
    W[k] = torch.from_numpy(np.frombuffer(raw, dtype=np.float32, count=(b - a) // 4, offset=8 + n + a).reshape(v["shape"]))
L, H, C = cfg["n_layer"], cfg["n_head"], cfg["n_embd"]
D = C // H
def ln(x, p):
    return F.layer_norm(x, (C,), W[p + ".weight"], W[p + ".bias"], 1e-5)
def forward(ids, cache):
    T = ids.shape[0]
    past = cache[0][0].shape[0] if cache[0] is not None else 0
    x = W["wte.weight"][ids] + W["wpe.weight"][past:past + T]
    for i in range(L):
        h = f"h.{i}."
        qkv = torch.addmm(W[h + "attn.c_attn.bias"], ln(x, h + "ln_1"), W[h + "attn.c_attn.weight"])
        q, k, v = qkv.split(C, dim=1)
        if cache[i] is not None:
            k = torch.cat([cache[i][0], k]); v = torch.cat([cache[i][1], v])
        cache[i] = (k, v)
        S = k.shape[0]
        q = q.view(T, H, D).transpose(0, 1); kk = k.view(S, H, D).transpose(0, 1); vv = v.view(S, H, D).transpose(0, 1)
        att = q @ kk.transpose(1, 2) / math.sqrt(D)
        if T > 1:
            att = att + torch.triu(torch.full((T, S), float("-inf")), past + 1)
        y = (att.softmax(-1) @ vv).transpose(0, 1).reshape(T, C)
        x = x + torch.addmm(W[h + "attn.c_proj.bias"], y, W[h + "attn.c_proj.weight"])
        f = F.gelu(torch.addmm(W[h + "mlp.c_fc.bias"], ln(x, h + "ln_2"), W[h + "mlp.c_fc.weight"]), approximate="tanh")
        x = x + torch.addmm(W[h + "mlp.c_proj.bias"], f, W[h + "mlp.c_proj.weight"])
    return ln(x[-1:], "ln_f") @ W["wte.weight"].T  # the last position: all generation needs
cache = [None] * L
ids = torch.arange(prompt_len) % cfg["vocab_size"]
logits = forward(ids, cache)
t_first = time.perf_counter()
steps = []
nxt = int(logits[-1].argmax())
out = [nxt]
for _ in range(tokens):
    s = time.perf_counter()
    logits = forward(torch.tensor([nxt]), cache)
    nxt = int(logits[-1].argmax())
    out.append(nxt)
    steps.append(time.perf_counter() - s)
# The BLAS PyTorch's matmuls ran on (Debian's alternatives pick it): the reference BLAS is 10-40x
# slower than OpenBLAS, and a comparison against it would say nothing.
blas = sorted({l.split()[-1] for l in open("/proc/self/maps") if "blas" in l.lower() and ".so" in l}) or ["none mapped"]
print(json.dumps({"blas": ", ".join(blas), "cold_ms": (t_first - t0) * 1e3, "import_ms": (t_imported - t_start) * 1e3,
                  "token_ms": sorted(steps)[len(steps) // 2] * 1e3, "ids": out[:8]}))
'''


def write_model(work, a):
    rng = np.random.default_rng(0)
    C, V, P, L = a.embd, a.vocab, a.positions, a.layers
    t = {"wte.weight": (V, C), "wpe.weight": (P, C), "ln_f.weight": (C,), "ln_f.bias": (C,)}
    for i in range(L):
        h = f"h.{i}."
        t.update({h + "ln_1.weight": (C,), h + "ln_1.bias": (C,), h + "attn.c_attn.weight": (C, 3 * C),
                  h + "attn.c_attn.bias": (3 * C,), h + "attn.c_proj.weight": (C, C), h + "attn.c_proj.bias": (C,),
                  h + "ln_2.weight": (C,), h + "ln_2.bias": (C,), h + "mlp.c_fc.weight": (C, 4 * C),
                  h + "mlp.c_fc.bias": (4 * C,), h + "mlp.c_proj.weight": (4 * C, C), h + "mlp.c_proj.bias": (C,)})
    header, off = {"__metadata__": {"format": "pt"}}, 0
    for k, s in t.items():
        nb = 4 * math.prod(s)
        header[k] = {"dtype": "F32", "shape": list(s), "data_offsets": [off, off + nb]}
        off += nb
    hb = json.dumps(header).encode()
    hb += b" " * (-len(hb) % 8)
    st = os.path.join(work, "gpt2.safetensors")
    with open(st, "wb") as f:
        f.write(struct.pack("<Q", len(hb)) + hb)
        for k, s in t.items():
            if k.endswith("ln_1.weight") or k.endswith("ln_2.weight") or k == "ln_f.weight":
                v = np.ones(s, np.float32)
            elif k.endswith(".bias"):
                v = np.zeros(s, np.float32)
            else:
                v = (rng.standard_normal(s) * 0.02).astype(np.float32)
            f.write(v.tobytes())
    cfg = os.path.join(work, "config.json")
    json.dump({"n_layer": L, "n_head": a.heads, "n_embd": C, "n_positions": P, "vocab_size": V,
               "layer_norm_epsilon": 1e-5, "activation_function": "gelu_new"}, open(cfg, "w"))
    return st, cfg, off


def warm(path):
    """Puts a model file in the same page-cache state before every run, whichever tool wrote it:
    written back, dropped from the cache, then read once from disk (by readahead, as a model stored
    earlier is). Just-written files were not comparable: on this VM, mapping and touching the pages
    of a file fresh from its writer took 2-4x longer (475 MiB: 120-290 ms) than the same file read
    back from disk (31 ms), and the safetensors file was written first, so it was cleaner than ours."""
    os.sync()
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        while os.read(fd, 1 << 24):
            pass
    finally:
        os.close(fd)


def versus(theirs, ours):
    """'2.10x faster' or '0.74x (slower)': their time over ours."""
    r = theirs / ours
    return f"{r:.2f}x faster" if r >= 1 else f"{r:.2f}x (slower)"


def median(v):
    v = sorted(v)
    return v[len(v) // 2]


def model_args(tokens, reps):
    """The command line shared with bench/packed_cold_start.py: the mpk binary, the model's shape, the
    run's prompt, steps, threads and repetitions."""
    ap = argparse.ArgumentParser()
    ap.add_argument("mpk")
    ap.add_argument("--layers", type=int, default=12)
    ap.add_argument("--embd", type=int, default=768)
    ap.add_argument("--heads", type=int, default=12)
    ap.add_argument("--vocab", type=int, default=50257)
    ap.add_argument("--positions", type=int, default=1024)
    ap.add_argument("--prompt", type=int, default=16)
    ap.add_argument("--tokens", type=int, default=tokens)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--reps", type=int, default=reps)
    return ap


def main():
    ap = model_args(tokens=32, reps=3)
    ap.add_argument("--work", default="/tmp/mpk-gpt2-bench")
    a = ap.parse_args()
    os.makedirs(a.work, exist_ok=True)
    st, cfg, nbytes = write_model(a.work, a)
    models = {"f32": os.path.join(a.work, "f32.mpk")}
    subprocess.run([a.mpk, "convert", st, models["f32"], "--arch", "gpt2", "--config", cfg, "--no-fsync"],
                   check=True, capture_output=True)
    for dt in ("bf16", "fp16", "int8"):
        models[dt] = os.path.join(a.work, dt + ".mpk")
        subprocess.run([a.mpk, "quantize", models["f32"], models[dt], "--to", dt, "--embeddings", "-q", "--no-fsync"],
                       check=True, capture_output=True)
    prompt = ",".join(str(i % a.vocab) for i in range(a.prompt))
    env = dict(os.environ, OMP_NUM_THREADS=str(a.threads))
    rows = {}
    torch_runs = []
    for rep in range(a.reps):  # interleaved: torch, then each of ours
        warm(st)
        t0 = time.perf_counter()
        p = subprocess.run([sys.executable, "-c", TORCH_RUNNER, st, cfg, str(a.prompt), str(a.tokens), str(a.threads)],
                           check=True, capture_output=True, text=True, env=env)
        wall = (time.perf_counter() - t0) * 1e3
        r = json.loads(p.stdout.strip().splitlines()[-1])
        r["wall_ms"] = wall
        torch_runs.append(r)
        for dt, path in models.items():
            warm(path)
            t0 = time.perf_counter()
            q = subprocess.run([a.mpk, "generate", path, "--prompt-ids", prompt, "-n", str(a.tokens + 1),
                                "--threads", str(a.threads)], check=True, capture_output=True, text=True, env=env)
            wall = (time.perf_counter() - t0) * 1e3
            m = re.search(r"open ([\d.]+) ms, graph ([\d.]+) ms; prompt of \d+ tokens: ([\d.]+) ms; \d+ tokens generated: "
                          r"first decode step [\d.]+ ms \(packs the weights\), then ([\d.]+) ms per token", q.stderr)
            ids = [int(x) for x in q.stdout.split("ids:")[1].split()]
            rows.setdefault(dt, []).append({"cold_ms": float(m[1]) + float(m[2]) + float(m[3]),
                                            "token_ms": float(m[4]), "wall_ms": wall, "ids": ids[:8]})
    tc, tt = median([r["cold_ms"] for r in torch_runs]), median([r["token_ms"] for r in torch_runs])
    tw = median([r["wall_ms"] for r in torch_runs])
    print(f"### GPT-2 layout, {a.layers} layers x {a.embd}, vocab {a.vocab}: {nbytes / 2**20:.0f} MiB f32; prompt "
          f"{a.prompt}, {a.tokens} decode steps, {a.threads} thread(s), medians of {a.reps} fresh processes")
    print()
    print(f"PyTorch {torch_runs[0].get('torch', '')}f32: cold start {tc:.0f} ms (import torch {median([r['import_ms'] for r in torch_runs]):.0f} ms "
          f"not included; process wall {tw:.0f} ms), decode {tt:.2f} ms/token; BLAS: {torch_runs[0]['blas']}")
    if "openblas" not in torch_runs[0]["blas"].lower():
        print("\nWARNING: PyTorch did not run on OpenBLAS (install libopenblas0: scripts/deps.sh fixtures); "
              "its figures below are not a fair baseline", file=sys.stderr)
    print()
    print("| ours | file MiB | cold start ms | vs PyTorch f32 | decode ms/token | vs PyTorch f32 | vs our f32 | process wall ms | greedy ids = PyTorch's |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---|")
    f32_tok = median([r["token_ms"] for r in rows["f32"]])
    for dt, rs in rows.items():
        c, t, w = median([r["cold_ms"] for r in rs]), median([r["token_ms"] for r in rs]), median([r["wall_ms"] for r in rs])
        same = rs[0]["ids"] == torch_runs[0]["ids"]
        print(f"| {dt} | {os.path.getsize(models[dt]) / 2**20:.0f} | {c:.0f} | {versus(tc, c)} | {t:.2f} | "
              f"{versus(tt, t)} | {f32_tok / t:.2f}x | {w:.0f} | {'yes' if same else 'no (first 8: ' + str(rs[0]['ids']) + ' vs ' + str(torch_runs[0]['ids']) + ')'} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
