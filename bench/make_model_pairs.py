#!/usr/bin/python3
"""make_model_pairs.py - base/variant model pairs for the delta-patch feature (issue 5), and measurements.

Three sub-commands (all write into / read from one directory):

  train OUTDIR   Trains a small GPT-style byte-level LM on CPU on the installed Python standard library's
                 sources (the base), then derives three variants from it:
                   ft    full fine-tune: every parameter, AdamW at a small learning rate (3e-5) on different
                         text (C headers under /usr/include), a few hundred steps;
                   part  partial fine-tune: only the last 2 transformer blocks trainable (lr 1e-4, same text);
                   lora  rank-8 LoRA on the attention weights (qkv, proj) of every block, trained, then merged
                         into the weights: W += (B @ A) * alpha / r (alpha 16, r 8); biases etc. untouched.
                   vocab the vocabulary resized: --vocab-add tokens (default 64) appended to the embedding and
                         the output head (each new row the mean of the old rows plus N(0, 0.02) noise, as
                         Hugging Face's resize_token_embeddings does), then fine-tuned as ft (every parameter,
                         same lr and steps). The byte-level texts never use the new ids, so their rows move
                         only through the head's softmax and weight decay, like rarely used special tokens.
                 Each of base/ft/part/lora/vocab is written as safetensors in fp32 and bf16 (bf16 = round to
                 nearest even of the fp32 bits): OUTDIR/{base,ft,part,lora,vocab}.{f32,bf16}.safetensors.
                 Prints held-out losses on both texts before and after each phase. With --only vocab, the
                 base is read from OUTDIR/base.f32.safetensors and only the vocab variant is made.

  peers OUTDIR   For each pair base -> {ft,part,lora} x {f32,bf16} of OUTDIR/*.mpk (convert them first with
                 `mpk convert X.safetensors X.mpk --no-fsync`), runs zstd -19 --long --patch-from, bsdiff and
                 xdelta3 -9 (create and apply, under /usr/bin/time -v), checks the round trip, and writes
                 OUTDIR/peers.json (patch bytes, seconds, peak RSS).

  proto OUTDIR   Prototype of per-tensor delta encodings (numpy + zstandard, no library code): for each pair
                 and tensor, the size of keep / plain / XOR / XOR+rotl1 / integer difference / zigzag integer
                 difference / zigzag "ulp" difference (float bits mapped to ordered integers first), each as
                 byte planes, every plane compressed with zstd -19 and also costed at its order-0 Shannon
                 entropy; per tensor the smallest wins. Writes OUTDIR/proto.json.

Usage: /usr/bin/python3 bench/make_model_pairs.py train /tmp/pairs [--threads 1] [--only vocab]
       /usr/bin/python3 bench/make_model_pairs.py peers /tmp/pairs
       /usr/bin/python3 bench/make_model_pairs.py proto /tmp/pairs
Needs Debian's python3-torch and libopenblas0-pthread (train), python3-numpy and python3-zstandard (proto),
zstd, bsdiff and xdelta3 (peers).
"""
import argparse
import glob
import json
import math
import os
import re
import subprocess
import sys
import time

VARIANTS = ["ft", "part", "lora", "vocab"]
DTYPES = ["f32", "bf16"]


# ----------------------------------------------------------------------------------------------------------
# safetensors, by hand
# ----------------------------------------------------------------------------------------------------------

def write_safetensors(path, tensors):
    """tensors: list of (name, dtype string 'F32'/'BF16', shape, little-endian bytes)."""
    header, off = {}, 0
    for name, dt, shape, data in tensors:
        header[name] = {"dtype": dt, "shape": list(shape), "data_offsets": [off, off + len(data)]}
        off += len(data)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)  # the data starts 8-byte aligned, as the reference writer does
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(len(h).to_bytes(8, "little"))
        f.write(h)
        for _, _, _, data in tensors:
            f.write(data)
    os.replace(tmp, path)


def read_safetensors(path):
    """-> list of (name, dtype, shape, bytes) in data order."""
    import numpy as np  # noqa: F401
    with open(path, "rb") as f:
        buf = f.read()
    n = int.from_bytes(buf[:8], "little")
    header = json.loads(buf[8 : 8 + n])
    header.pop("__metadata__", None)
    base = 8 + n
    items = sorted(header.items(), key=lambda kv: kv[1]["data_offsets"][0])
    return [(k, v["dtype"], v["shape"], buf[base + v["data_offsets"][0] : base + v["data_offsets"][1]])
            for k, v in items]


def f32_to_bf16_bits(u32):
    """numpy uint32 array of f32 bits -> uint16 bf16 bits, round to nearest even (NaNs kept quiet NaNs)."""
    import numpy as np
    u = u32.astype(np.uint64)
    r = (u + 0x7FFF + ((u >> 16) & 1)) >> 16
    out = r.astype(np.uint16)
    nan = (u32 & 0x7FFFFFFF) > 0x7F800000
    out[nan] = ((u32[nan] >> 16) | 0x40).astype(np.uint16)
    return out


def save_state(model, outdir, stem):
    import numpy as np
    f32, bf16 = [], []
    for name, t in model.state_dict().items():
        a = t.detach().to("cpu").float().contiguous().numpy().astype("<f4")
        f32.append((name, "F32", a.shape, a.tobytes()))
        b = f32_to_bf16_bits(a.view(np.uint32)).astype("<u2")
        bf16.append((name, "BF16", a.shape, b.tobytes()))
    write_safetensors(os.path.join(outdir, f"{stem}.f32.safetensors"), f32)
    write_safetensors(os.path.join(outdir, f"{stem}.bf16.safetensors"), bf16)


# ----------------------------------------------------------------------------------------------------------
# train
# ----------------------------------------------------------------------------------------------------------

def corpus(patterns, max_bytes):
    from make_weights import read_text  # imports torch: only for `train`
    files = []
    for p in patterns:
        files += sorted(glob.glob(p, recursive=True))
    return read_text(files, max_bytes, f"make_model_pairs ({patterns})")


def train_main(a):
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    # The same GPT as the codec benchmark's trained weights (one definition, in make_weights.py).
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from make_weights import GPT

    class LoRALinear(nn.Module):
        def __init__(self, base, r, alpha):
            super().__init__()
            self.base = base
            self.scale = alpha / r
            self.A = nn.Parameter(torch.randn(r, base.in_features) / math.sqrt(base.in_features))
            self.B = nn.Parameter(torch.zeros(base.out_features, r))

        def forward(self, x):
            return self.base(x) + (x @ self.A.t() @ self.B.t()) * self.scale

        def merged(self):
            with torch.no_grad():
                self.base.weight += (self.B @ self.A) * self.scale
            return self.base

    t_all = time.time()
    os.makedirs(a.outdir, exist_ok=True)
    torch.manual_seed(a.seed)
    torch.set_num_threads(a.threads)
    torch.set_flush_denormal(True)
    heads = max(1, a.d // 64)
    model = GPT(a.d, a.layers, heads, a.ctx)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"model: d={a.d} layers={a.layers} heads={heads} ctx={a.ctx}: {n_params / 1e6:.2f} M parameters "
          f"({n_params * 4 / (1 << 20):.1f} MiB f32), {a.threads} thread(s)", flush=True)

    py = corpus(["/usr/lib/python3*/**/*.py"], 16 << 20)
    hdr = corpus(["/usr/include/**/*.h"], 16 << 20)
    print(f"texts: Python sources {len(py) / (1 << 20):.1f} MiB (base), C headers {len(hdr) / (1 << 20):.1f} MiB "
          f"(fine-tunes)", flush=True)
    texts = {}
    for key, data in (("py", py), ("c", hdr)):
        split = int(len(data) * 0.95)
        texts[key] = (data[:split], data[split:])
    gen = torch.Generator().manual_seed(a.seed)

    def batch(src):
        ix = torch.randint(len(src) - a.ctx - 1, (a.batch,), generator=gen)
        return (torch.stack([src[i : i + a.ctx] for i in ix]),
                torch.stack([src[i + 1 : i + 1 + a.ctx] for i in ix]))

    held = {k: [batch(v[1]) for _ in range(4)] for k, v in texts.items()}

    @torch.no_grad()
    def held_losses(m):
        m.eval()
        out = {k: sum(F.cross_entropy(m(x).flatten(0, 1), y.flatten()).item() for x, y in bs) / len(bs)
               for k, bs in held.items()}
        m.train()
        return out

    def fmt(ls):
        return f"held-out loss python {ls['py']:.3f}, C headers {ls['c']:.3f}"

    def run(m, params, text, lr, steps, seconds, wd, warmup, label):
        opt = torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.95), weight_decay=wd)
        t0 = time.time()
        step = 0
        while step < steps and time.time() - t0 < seconds:
            for g in opt.param_groups:
                g["lr"] = lr * min(1.0, (step + 1) / warmup)
            x, y = batch(texts[text][0])
            loss = F.cross_entropy(m(x).flatten(0, 1), y.flatten())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            step += 1
            if step % 25 == 0:
                print(f"  [{label}] step {step:4d}  train loss {loss.item():.3f}  ({time.time() - t0:.0f} s)",
                      flush=True)
        return step, time.time() - t0

    def phase_vocab(model, base_state, summary):
        # (d) vocabulary resized by a.vocab_add tokens, then fine-tuned like (a).
        m = GPT(a.d, a.layers, heads, a.ctx)
        m.load_state_dict(base_state)
        g = torch.Generator().manual_seed(a.seed + 4)
        with torch.no_grad():
            for attr in ("tok", "head"):
                old = getattr(m, attr).weight
                rows = old.mean(0, keepdim=True) + torch.randn(a.vocab_add, old.shape[1], generator=g) * 0.02
                new = nn.Embedding(old.shape[0] + a.vocab_add, old.shape[1]) if attr == "tok" else \
                    nn.Linear(old.shape[1], old.shape[0] + a.vocab_add, bias=False)
                new.weight.copy_(torch.cat([old, rows]))
                setattr(m, attr, new)
        steps, secs = run(m, list(m.parameters()), "c", a.ft_lr, a.ft_steps, a.ft_seconds, 0.01, 20, "vocab")
        ls = held_losses(m)
        print(f"[vocab] +{a.vocab_add} tokens, after {steps} steps ({secs:.0f} s, lr {a.ft_lr}): {fmt(ls)}", flush=True)
        summary["phases"]["vocab"] = {"steps": steps, "seconds": secs, "after": ls, "lr": a.ft_lr,
                                      "tokens_added": a.vocab_add}
        save_state(m, a.outdir, "vocab")

    if a.only == "vocab":  # the base of an earlier run
        summary = json.load(open(os.path.join(a.outdir, "train.json")))
        sd = {}
        for name, dt, shape, data in read_safetensors(os.path.join(a.outdir, "base.f32.safetensors")):
            sd[name] = torch.frombuffer(bytearray(data), dtype=torch.float32).reshape(shape)
        model.load_state_dict(sd)
        base_state = {k: v.clone() for k, v in model.state_dict().items()}
        phase_vocab(model, base_state, summary)
        with open(os.path.join(a.outdir, "train.json"), "w") as f:
            json.dump(summary, f, indent=1)
        print(f"wrote {a.outdir}/vocab.{{f32,bf16}}.safetensors; total {time.time() - t_all:.0f} s", flush=True)
        return

    summary = {"d": a.d, "layers": a.layers, "params": n_params, "phases": {}}
    ls0 = held_losses(model)
    print(f"[base] before: {fmt(ls0)}  (ln 256 = {math.log(256):.3f})", flush=True)
    steps, secs = run(model, list(model.parameters()), "py", 1e-3, a.base_steps, a.base_seconds, 0.1, 10, "base")
    ls1 = held_losses(model)
    print(f"[base] after {steps} steps ({secs:.0f} s): {fmt(ls1)}", flush=True)
    summary["phases"]["base"] = {"steps": steps, "seconds": secs, "before": ls0, "after": ls1, "lr": 1e-3}
    if not ls1["py"] < ls0["py"] - 0.5:
        sys.exit("make_model_pairs: the base loss did not go down enough")
    save_state(model, a.outdir, "base")
    base_state = {k: v.clone() for k, v in model.state_dict().items()}

    def fresh():
        m = GPT(a.d, a.layers, heads, a.ctx)
        m.load_state_dict(base_state)
        return m

    # (a) full fine-tune: all parameters, small lr, different text.
    m = fresh()
    steps, secs = run(m, list(m.parameters()), "c", a.ft_lr, a.ft_steps, a.ft_seconds, 0.01, 20, "ft")
    ls = held_losses(m)
    print(f"[ft] after {steps} steps ({secs:.0f} s, lr {a.ft_lr}): {fmt(ls)}", flush=True)
    summary["phases"]["ft"] = {"steps": steps, "seconds": secs, "after": ls, "lr": a.ft_lr}
    save_state(m, a.outdir, "ft")

    # (b) partial fine-tune: only the last 2 blocks.
    m = fresh()
    for p in m.parameters():
        p.requires_grad_(False)
    params = []
    for blk in m.blocks[-2:]:
        for p in blk.parameters():
            p.requires_grad_(True)
            params.append(p)
    steps, secs = run(m, params, "c", a.part_lr, a.part_steps, a.part_seconds, 0.01, 20, "part")
    ls = held_losses(m)
    print(f"[part] after {steps} steps ({secs:.0f} s, lr {a.part_lr}, last 2 blocks, "
          f"{sum(p.numel() for p in params) / 1e6:.2f} M trainable): {fmt(ls)}", flush=True)
    summary["phases"]["part"] = {"steps": steps, "seconds": secs, "after": ls, "lr": a.part_lr}
    save_state(m, a.outdir, "part")

    # (c) rank-8 LoRA on qkv and proj of every block, merged.
    m = fresh()
    for p in m.parameters():
        p.requires_grad_(False)
    params = []
    for blk in m.blocks:
        blk.qkv = LoRALinear(blk.qkv, 8, 16.0)
        blk.proj = LoRALinear(blk.proj, 8, 16.0)
        params += [blk.qkv.A, blk.qkv.B, blk.proj.A, blk.proj.B]
    steps, secs = run(m, params, "c", a.lora_lr, a.lora_steps, a.lora_seconds, 0.0, 20, "lora")
    ls = held_losses(m)
    for blk in m.blocks:
        blk.qkv = blk.qkv.merged()
        blk.proj = blk.proj.merged()
    ls_m = held_losses(m)
    print(f"[lora] after {steps} steps ({secs:.0f} s, lr {a.lora_lr}, "
          f"{sum(p.numel() for p in params) / 1e6:.3f} M adapter params): {fmt(ls)}; merged: {fmt(ls_m)}",
          flush=True)
    summary["phases"]["lora"] = {"steps": steps, "seconds": secs, "after": ls, "merged": ls_m, "lr": a.lora_lr}
    save_state(m, a.outdir, "lora")

    phase_vocab(model, base_state, summary)

    summary["total_seconds"] = time.time() - t_all
    with open(os.path.join(a.outdir, "train.json"), "w") as f:
        json.dump(summary, f, indent=1)
    print(f"wrote {a.outdir}/{{base,ft,part,lora,vocab}}.{{f32,bf16}}.safetensors; total {time.time() - t_all:.0f} s",
          flush=True)


# ----------------------------------------------------------------------------------------------------------
# peers
# ----------------------------------------------------------------------------------------------------------

def timed(cmd):
    """Runs cmd under /usr/bin/time -v -> (seconds, peak RSS KiB)."""
    t0 = time.time()
    p = subprocess.run(["/usr/bin/time", "-v"] + cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                       text=True)
    dt = time.time() - t0
    if p.returncode != 0:
        raise RuntimeError(f"{cmd} failed: {p.stderr[-2000:]}")
    rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", p.stderr).group(1))
    return dt, rss


def same(a, b):
    return subprocess.run(["cmp", "-s", a, b]).returncode == 0


def peers_main(a):
    d = a.outdir
    results = []
    for dt in DTYPES:
        base = os.path.join(d, f"base.{dt}.mpk")
        for v in VARIANTS:
            if a.pairs and f"{v}.{dt}" not in a.pairs.split(","):
                continue
            new = os.path.join(d, f"{v}.{dt}.mpk")
            if not os.path.exists(new):
                continue
            n = os.path.getsize(new)
            # zstd --long=W needs 2^W >= the base size to find matches anywhere in it; 31 is its maximum.
            wlog = max(10, min(31, math.ceil(math.log2(max(os.path.getsize(base), n)))))
            tools = {
                "zstd": (["zstd", "-q", "-f", "-19", f"--long={wlog}", f"--patch-from={base}", new, "-o", "{P}"],
                         ["zstd", "-q", "-f", "-d", f"--long={wlog}", f"--patch-from={base}", "{P}", "-o", "{O}"]),
                "bsdiff": (["bsdiff", base, new, "{P}"], ["bspatch", base, "{O}", "{P}"]),
                "xdelta3": (["xdelta3", "-9", "-f", "-e", "-s", base, new, "{P}"],
                            ["xdelta3", "-f", "-d", "-s", base, "{P}", "{O}"]),
            }
            for tool, (enc, dec) in tools.items():
                if tool not in a.tools.split(","):
                    continue
                pth = os.path.join(d, f"patch.{v}.{dt}.{tool}")
                out = pth + ".out"
                sub = lambda c: [x.replace("{P}", pth).replace("{O}", out) for x in c]  # noqa: E731
                ct, crss = timed(sub(enc))
                at, arss = timed(sub(dec))
                ok = same(out, new)
                os.remove(out)
                r = {"pair": f"base->{v}", "dtype": dt, "tool": tool, "new_bytes": n,
                     "patch_bytes": os.path.getsize(pth), "frac": os.path.getsize(pth) / n,
                     "create_s": ct, "create_rss_kib": crss, "apply_s": at, "apply_rss_kib": arss,
                     "roundtrip_ok": ok, "cmd": " ".join(sub(enc))}
                results.append(r)
                print(f"{r['pair']:>11} {dt:>4} {tool:>7}: {r['frac'] * 100:6.2f}% of {n} B; create {ct:6.1f} s "
                      f"{crss / 1024:6.0f} MiB; apply {at:5.1f} s {arss / 1024:6.0f} MiB; ok={ok}", flush=True)
                with open(os.path.join(d, a.json), "w") as f:
                    json.dump(results, f, indent=1)


# ----------------------------------------------------------------------------------------------------------
# proto
# ----------------------------------------------------------------------------------------------------------

def proto_main(a):
    import numpy as np
    import zstandard

    cctx = zstandard.ZstdCompressor(level=19)

    def h0_bytes(plane):
        c = np.bincount(plane, minlength=256).astype(np.float64)
        c = c[c > 0]
        p = c / plane.size
        return float(-(c * np.log2(p)).sum() / 8.0)

    def cost(words, nbytes):
        """words: unsigned array -> per byte plane (zstd bytes, order-0 entropy bytes); each plane
        costs at most its raw size (a stored plane); zstd is skipped (raw) when H0 > 7.97 bits/byte."""
        planes = words.view(np.uint8).reshape(-1, nbytes).T
        z, h = [], []
        for j in range(nbytes):
            pl = np.ascontiguousarray(planes[j])
            e = h0_bytes(pl)
            h.append(min(e, pl.size))
            if e > 0.99625 * pl.size:
                z.append(pl.size)
            else:
                z.append(min(len(cctx.compress(pl.tobytes())), pl.size))
        return z, h

    def rotl1(u, bits):
        return (u << 1) | (u >> (bits - 1))

    def zigzag(diff_signed, bits, ut):
        s = diff_signed
        return ((s << 1) ^ (s >> (bits - 1))).view(ut)

    def ordered(u, bits, st):
        """float bits -> two's complement integers ordered like the float values (negative: flip the magnitude bits)."""
        s = u.view(st)
        return np.where(s < 0, s ^ st((1 << (bits - 1)) - 1), s).astype(st)  # bijective: -0 -> -1

    # mix_rot: per byte plane the smaller of plain_rot and xor_rot (rotl1(n ^ b) = rotl1(n) ^ rotl1(b), so
    # each plane of the rotated new word is decodable from its own plane alone, whichever of the two it is).
    encs = ["plain_rot", "xor", "xor_rot", "sub", "sub_zz", "ulp_zz", "mix_rot"]
    results = []
    t_all = time.time()
    for dt in DTYPES:
        base = {n: (dty, shp, b) for n, dty, shp, b in read_safetensors(os.path.join(a.outdir,
                                                                                     f"base.{dt}.safetensors"))}
        bits = 32 if dt == "f32" else 16
        ut, st = (np.uint32, np.int32) if bits == 32 else (np.uint16, np.int16)
        nb = bits // 8
        for v in ("ft", "part", "lora"):  # (not vocab: its resized tensors have no same-shape base here)
            t0 = time.time()
            mpk = os.path.join(a.outdir, f"{v}.{dt}.mpk")
            new_path = os.path.join(a.outdir, f"{v}.{dt}.safetensors")
            new_size = os.path.getsize(mpk) if os.path.exists(mpk) else os.path.getsize(new_path)
            tot = {e: [0.0, 0.0] for e in encs + ["keep", "best"]}
            tensors_info = {"keep": 0, "changed": 0, "changed_bytes": 0}
            winners = {}
            planes_tot = {}
            changed_only = [0.0, 0.0]  # plain (plane+zstd / H0) cost of the changed tensors alone
            for name, _, shape, nbytes_ in read_safetensors(new_path):
                nw = np.frombuffer(nbytes_, dtype=ut)
                bw = np.frombuffer(base[name][2], dtype=ut)
                if np.array_equal(nw, bw):
                    tensors_info["keep"] += 1
                    winners["keep"] = winners.get("keep", 0) + 1
                    continue  # cost 0 (plus a name in the manifest)
                tensors_info["changed"] += 1
                tensors_info["changed_bytes"] += len(nbytes_)
                cands = {
                    "plain_rot": rotl1(nw, bits),
                    "xor": nw ^ bw,
                    "xor_rot": rotl1(nw ^ bw, bits),
                    "sub": (nw.view(st) - bw.view(st)).view(ut),
                    "sub_zz": zigzag(nw.view(st) - bw.view(st), bits, ut),
                    "ulp_zz": zigzag(ordered(nw, bits, st) - ordered(bw, bits, st), bits, ut),
                }
                costs, per_plane = {}, {}
                with np.errstate(over="ignore"):
                    for e, w in cands.items():
                        per_plane[e] = cost(np.ascontiguousarray(w.astype(ut)), nb)
                        costs[e] = (sum(per_plane[e][0]), sum(per_plane[e][1]))
                pz = [min(x, y) for x, y in zip(per_plane["plain_rot"][0], per_plane["xor_rot"][0])]
                ph = [min(x, y) for x, y in zip(per_plane["plain_rot"][1], per_plane["xor_rot"][1])]
                costs["mix_rot"] = (sum(pz), sum(ph))
                for j in range(nb):  # per byte plane totals (plane 0 = least significant byte after rotl1)
                    for e in ("plain_rot", "xor_rot", "sub_zz", "ulp_zz"):
                        planes_tot.setdefault(e, [[0.0] * nb, [0.0] * nb])
                        planes_tot[e][0][j] += per_plane[e][0][j]
                        planes_tot[e][1][j] += per_plane[e][1][j]
                for e in encs:
                    tot[e][0] += costs[e][0]
                    tot[e][1] += costs[e][1]
                changed_only[0] += costs["plain_rot"][0]
                changed_only[1] += costs["plain_rot"][1]
                bz = min(encs, key=lambda e: costs[e][0])
                bh = min(encs, key=lambda e: costs[e][1])
                tot["best"][0] += costs[bz][0]
                tot["best"][1] += costs[bh][1]
                winners[bz] = winners.get(bz, 0) + 1
            r = {"pair": f"base->{v}", "dtype": dt, "new_bytes": new_size, "tensors": tensors_info,
                 "winners_zstd": winners, "changed_only_plain": changed_only,
                 "zstd": {e: tot[e][0] for e in tot}, "h0": {e: tot[e][1] for e in tot}, "planes": planes_tot,
                 "seconds": time.time() - t0}
            results.append(r)
            fr = lambda x: f"{x / new_size * 100:6.2f}%"  # noqa: E731
            print(f"{r['pair']:>11} {dt:>4}: " + "  ".join(f"{e} {fr(tot[e][0])}/{fr(tot[e][1])}" for e in encs)
                  + f"  BEST {fr(tot['best'][0])}/{fr(tot['best'][1])}  changed {tensors_info['changed']}"
                  f"/{tensors_info['changed'] + tensors_info['keep']}  winners {winners}  ({r['seconds']:.0f} s)",
                  flush=True)
            with open(os.path.join(a.outdir, "proto.json"), "w") as f:
                json.dump(results, f, indent=1)
    print(f"proto total {time.time() - t_all:.0f} s")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("cmd", choices=["train", "peers", "proto"])
    ap.add_argument("outdir")
    ap.add_argument("--d", type=int, default=384)
    ap.add_argument("--layers", type=int, default=6)
    ap.add_argument("--ctx", type=int, default=128)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--tools", default="zstd,bsdiff,xdelta3", help="peers: which tools (comma-separated)")
    ap.add_argument("--pairs", default="", help="peers: only these pairs, e.g. ft.f32,lora.bf16 (default all)")
    ap.add_argument("--json", default="peers.json", help="peers: output file name in OUTDIR")
    ap.add_argument("--base-steps", type=int, default=100000)
    ap.add_argument("--base-seconds", type=float, default=120)
    ap.add_argument("--ft-steps", type=int, default=300)
    ap.add_argument("--ft-seconds", type=float, default=120)
    ap.add_argument("--ft-lr", type=float, default=3e-5)
    ap.add_argument("--part-steps", type=int, default=300)
    ap.add_argument("--part-seconds", type=float, default=60)
    ap.add_argument("--part-lr", type=float, default=1e-4)
    ap.add_argument("--lora-steps", type=int, default=300)
    ap.add_argument("--lora-seconds", type=float, default=60)
    ap.add_argument("--lora-lr", type=float, default=1e-3)
    ap.add_argument("--vocab-add", type=int, default=64, help="train: tokens the vocab variant adds")
    ap.add_argument("--only", choices=["vocab"], help="train: make only this variant, from OUTDIR's base")
    a = ap.parse_args()
    {"train": train_main, "peers": peers_main, "proto": proto_main}[a.cmd](a)


if __name__ == "__main__":
    main()
