#!/usr/bin/python3
"""make_weights.py - trained weights for the codec benchmark (bench_codec, MPK_BENCH_WEIGHTS).

Trains a small GPT-style byte-level language model on CPU for a fixed time budget, on real text (the
Python standard library's sources installed on this machine), and writes every parameter as one raw
little-endian float32 blob (state_dict order), plus a JSON index <out>.json (name, shape, offset).

Initialisation is GPT-2's (N(0, 0.02), residual projections N(0, 0.02/sqrt(2L)), zero biases, unit
LayerNorm gains); training is AdamW (lr 1e-3, weight decay 0.1). It prints the held-out loss before and
after, and fails if the loss did not go down.

Usage: /usr/bin/python3 bench/make_weights.py [--out /tmp/mpk_weights.f32] [--mib 128] [--seconds 100]
Needs Debian's python3-torch with libopenblas0-pthread (without it torch runs on the reference BLAS,
~50x slower): apt-get install -y python3-torch libopenblas0-pthread
"""
import argparse
import glob
import json
import math
import os
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


def read_text(files, max_bytes, who):
    """The files concatenated, up to max_bytes, as a tensor of byte values; exits below 1 MiB."""
    out, n = [], 0
    for f in files:
        try:
            with open(f, "rb") as fh:
                b = fh.read()
        except OSError:
            continue
        out.append(b)
        n += len(b)
        if n >= max_bytes:
            break
    data = b"".join(out)[:max_bytes]
    if len(data) < 1 << 20:
        sys.exit(f"{who}: found under 1 MiB of training text")
    return torch.frombuffer(bytearray(data), dtype=torch.uint8).long()


def corpus(max_bytes):
    """Real text: the installed Python standard library's sources, concatenated (bytes)."""
    files = sorted(glob.glob("/usr/lib/python3*/**/*.py", recursive=True))
    if not files:
        files = sorted(glob.glob("/usr/share/common-licenses/*"))
    return read_text(files, max_bytes, "make_weights")


class Block(nn.Module):
    def __init__(self, d, heads):
        super().__init__()
        self.heads = heads
        self.ln1 = nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)
        self.ln2 = nn.LayerNorm(d)
        self.fc = nn.Linear(d, 4 * d)
        self.fc_proj = nn.Linear(4 * d, d)

    def forward(self, x, mask):
        b, t, d = x.shape
        h = self.heads
        q, k, v = self.qkv(self.ln1(x)).split(d, dim=2)
        q = q.view(b, t, h, d // h).transpose(1, 2)
        k = k.view(b, t, h, d // h).transpose(1, 2)
        v = v.view(b, t, h, d // h).transpose(1, 2)
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(d // h))
        att = att.masked_fill(mask[:t, :t], float("-inf")).softmax(dim=-1)
        y = (att @ v).transpose(1, 2).reshape(b, t, d)
        x = x + self.proj(y)
        return x + self.fc_proj(F.gelu(self.fc(self.ln2(x))))


class GPT(nn.Module):
    def __init__(self, d, layers, heads, ctx, vocab=256):
        super().__init__()
        self.tok = nn.Embedding(vocab, d)
        self.pos = nn.Embedding(ctx, d)
        self.blocks = nn.ModuleList(Block(d, heads) for _ in range(layers))
        self.ln_f = nn.LayerNorm(d)
        self.head = nn.Linear(d, vocab, bias=False)
        self.register_buffer("mask", torch.triu(torch.ones(ctx, ctx, dtype=torch.bool), 1), persistent=False)
        for name, p in self.named_parameters():
            if name.endswith("bias"):
                nn.init.zeros_(p)
            elif ".ln" in name or name.startswith("ln_"):
                nn.init.ones_(p)
            elif name.endswith("proj.weight"):
                nn.init.normal_(p, 0.0, 0.02 / math.sqrt(2 * layers))
            else:
                nn.init.normal_(p, 0.0, 0.02)

    def forward(self, idx):
        t = idx.shape[1]
        x = self.tok(idx) + self.pos(torch.arange(t))
        for blk in self.blocks:
            x = blk(x, self.mask)
        return self.head(self.ln_f(x))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="/tmp/mpk_weights.f32", help="output blob (raw little-endian float32)")
    ap.add_argument("--mib", type=float, default=128, help="approximate size of the blob in MiB (default 128)")
    ap.add_argument("--seconds", type=float, default=120, help="training time budget (default 120)")
    ap.add_argument("--max-steps", type=int, default=100000)
    ap.add_argument("--layers", type=int, default=6)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--ctx", type=int, default=128)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--seed", type=int, default=1234)
    a = ap.parse_args()
    t0 = time.time()
    torch.manual_seed(a.seed)
    torch.set_num_threads(a.threads)
    torch.set_flush_denormal(True)  # tiny Adam moments otherwise make steps several times slower

    # Shape from the size: ~12 d^2 parameters per layer (+ embeddings), d a multiple of 64.
    params = a.mib * (1 << 20) / 4
    layers = a.layers
    d = max(128, min(2048, int(round(math.sqrt(params / (12 * layers)) / 64)) * 64))
    heads = max(1, d // 64)
    model = GPT(d, layers, heads, a.ctx)
    n_params = sum(p.numel() for p in model.parameters())

    data = corpus(16 << 20)
    split = int(len(data) * 0.95)
    train, held = data[:split], data[split:]
    gen = torch.Generator().manual_seed(a.seed)

    def batch(src, b):
        ix = torch.randint(len(src) - a.ctx - 1, (b,), generator=gen)
        x = torch.stack([src[i : i + a.ctx] for i in ix])
        y = torch.stack([src[i + 1 : i + 1 + a.ctx] for i in ix])
        return x, y

    held_batches = [batch(held, a.batch) for _ in range(4)]

    @torch.no_grad()
    def held_loss():
        model.eval()
        ls = [F.cross_entropy(model(x).flatten(0, 1), y.flatten()).item() for x, y in held_batches]
        model.train()
        return sum(ls) / len(ls)

    print(f"model: d={d} layers={layers} heads={heads} ctx={a.ctx}: {n_params / 1e6:.1f} M parameters "
          f"({n_params * 4 / (1 << 20):.0f} MiB f32); corpus {len(data) / (1 << 20):.1f} MiB of Python sources",
          flush=True)
    loss0 = held_loss()
    print(f"held-out loss before training: {loss0:.3f} (ln 256 = {math.log(256):.3f})", flush=True)

    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.95), weight_decay=0.1)
    warmup = 10
    start = time.time()
    step = 0
    while step < a.max_steps and time.time() - start < a.seconds:
        for g in opt.param_groups:
            g["lr"] = 1e-3 * min(1.0, (step + 1) / warmup)
        x, y = batch(train, a.batch)
        loss = F.cross_entropy(model(x).flatten(0, 1), y.flatten())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        if step % 10 == 0:
            print(f"  step {step:4d}  train loss {loss.item():.3f}  ({time.time() - start:.0f} s)", flush=True)
    train_s = time.time() - start
    loss1 = held_loss()
    print(f"held-out loss after {step} steps ({train_s:.0f} s, {step * a.batch * a.ctx} tokens): {loss1:.3f}",
          flush=True)

    # Dump: every parameter, state_dict order, float32 little-endian, back to back.
    index, off = [], 0
    tmp = a.out + ".tmp"
    with open(tmp, "wb") as f:
        for name, t in model.state_dict().items():
            arr = t.detach().to(torch.float32).contiguous().numpy()
            if sys.byteorder != "little":
                arr = arr.byteswap()
            f.write(arr.tobytes())
            index.append({"name": name, "shape": list(t.shape), "offset": off, "bytes": arr.nbytes})
            off += arr.nbytes
    os.replace(tmp, a.out)
    with open(a.out + ".json", "w") as f:
        json.dump({"loss_before": loss0, "loss_after": loss1, "steps": step, "d": d, "layers": layers,
                   "tensors": index}, f, indent=1)
    print(f"wrote {a.out}: {off / (1 << 20):.1f} MiB ({len(index)} tensors; index {a.out}.json); "
          f"total {time.time() - t0:.0f} s", flush=True)
    if not loss1 < loss0 - 0.5:
        sys.exit(f"make_weights: the loss did not go down enough ({loss0:.3f} -> {loss1:.3f})")


if __name__ == "__main__":
    main()
