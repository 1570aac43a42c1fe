#!/usr/bin/python3
"""Cold start with and without a packed-weights file (issue 6, item 6): `mpk generate` on a GPT-2-layout
model, each stored dtype, in fresh processes, the same run interleaving both.

Usage: bench/packed_cold_start.py MPK_BINARY [--layers 12 --embd 768 --heads 12 --vocab 50257]
       [--prompt 16] [--tokens 8] [--threads 1] [--reps 5] [--dtypes f32,int8,bf16,fp16] [--work DIR]

The model is made as bench/gpt2_vs_torch.py makes it (random weights, GPT-2 small's shape by default),
converted and quantized with `mpk`. Per dtype, the packed-weights file is written once beforehand by
`mpk generate --packed FILE`; then each repetition runs
  without  `mpk generate MODEL`               : the prompt on the weights as stored, the first decode
                                                step reorders every weight oneDNN runs packed
  with     `mpk generate MODEL --packed FILE` : those weights used in place from FILE's map
with every file put in the same page-cache state first (written back, dropped, read once: a model
stored earlier). Times are what `mpk generate` reports: open + graph + prompt ("cold start"), the first
decode step, the median later step; "to 2nd token" = cold start + first decode step.
"""
import os
import re
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gpt2_vs_torch import median, model_args, warm, write_model  # noqa: E402

LINE = re.compile(r"open ([\d.]+) ms, graph ([\d.]+) ms; prompt of \d+ tokens: ([\d.]+) ms; \d+ tokens generated: "
                  r"first decode step ([\d.]+) ms \([^)]*\), then ([\d.]+) ms per token")


def run(cmd, env):
    t0 = time.perf_counter()
    q = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env)
    wall = (time.perf_counter() - t0) * 1e3
    m = LINE.search(q.stderr)
    if not m:
        sys.exit(f"unexpected output of {' '.join(cmd)}:\n{q.stderr}")
    o, g, p, s1, tok = (float(x) for x in m.groups())
    ids = q.stdout.split("ids:")[1].split()
    return {"cold": o + g + p, "step1": s1, "second": o + g + p + s1, "tok": tok, "wall": wall, "ids": ids}


def main():
    ap = model_args(tokens=8, reps=5)
    ap.add_argument("--dtypes", default="f32,int8,bf16,fp16")
    ap.add_argument("--work", default="/tmp/mpk-packed-bench")
    a = ap.parse_args()
    os.makedirs(a.work, exist_ok=True)
    st, cfg, nbytes = write_model(a.work, a)
    f32 = os.path.join(a.work, "f32.mpk")
    subprocess.run([a.mpk, "convert", st, f32, "--arch", "gpt2", "--config", cfg, "--no-fsync"],
                   check=True, capture_output=True)
    os.remove(st)
    env = dict(os.environ, OMP_NUM_THREADS=str(a.threads))
    prompt = ",".join(str(i % a.vocab) for i in range(a.prompt))
    dtypes = a.dtypes.split(",")
    models, sides = {}, {}
    for dt in dtypes:
        models[dt] = f32 if dt == "f32" else os.path.join(a.work, dt + ".mpk")
        if dt != "f32":
            subprocess.run([a.mpk, "quantize", f32, models[dt], "--to", dt, "--embeddings", "-q", "--no-fsync"],
                           check=True, capture_output=True)
        sides[dt] = os.path.join(a.work, dt + ".packed.mpk")
        if os.path.exists(sides[dt]):
            os.remove(sides[dt])
        gen = [a.mpk, "generate", models[dt], "--prompt-ids", prompt, "-n", str(a.tokens + 1), "--threads", str(a.threads)]
        subprocess.run(gen + ["--packed", sides[dt]], check=True, capture_output=True, env=env)
    rows = {}
    for rep in range(a.reps):
        for dt in dtypes:
            gen = [a.mpk, "generate", models[dt], "--prompt-ids", prompt, "-n", str(a.tokens + 1), "--threads", str(a.threads)]
            warm(models[dt])
            rows.setdefault((dt, "without"), []).append(run(gen, env))
            warm(models[dt])
            warm(sides[dt])
            rows.setdefault((dt, "with"), []).append(run(gen + ["--packed", sides[dt]], env))
    print(f"### Packed-weights file vs packing at start: GPT-2 layout, {a.layers} layers x {a.embd}, vocab {a.vocab} "
          f"({nbytes / 2**20:.0f} MiB f32); prompt {a.prompt}, {a.tokens} decode steps, {a.threads} thread(s), "
          f"medians of {a.reps} fresh processes")
    print()
    print("| dtype | packed file MiB | run | cold start ms | first decode step ms | to 2nd token ms | ratio (without / with) | later steps ms/token | process wall ms | same ids |")
    print("|---|---:|---|---:|---:|---:|---:|---:|---:|---|")
    for dt in dtypes:
        base = median([r["second"] for r in rows[(dt, "without")]])
        for how in ("without", "with"):
            rs = rows[(dt, how)]
            sec = median([r["second"] for r in rs])
            same = all(r["ids"] == rows[(dt, "without")][0]["ids"] for r in rs)
            ratio = "1 (baseline)" if how == "without" else f"{base / sec:.2f}x"
            print(f"| {dt} | {os.path.getsize(sides[dt]) / 2**20:.0f} | {how} | {median([r['cold'] for r in rs]):.0f} | "
                  f"{median([r['step1'] for r in rs]):.0f} | {sec:.0f} | {ratio} | {median([r['tok'] for r in rs]):.2f} | "
                  f"{median([r['wall'] for r in rs]):.0f} | {'yes' if same else 'no'} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
