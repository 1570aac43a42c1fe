#!/usr/bin/python3
"""patch_bench.py - measurements behind bench/run_patch.sh (delta patches, issue 5). Run through run_patch.sh.

  pairs  JSON  MPK PAIRS WORK   For each pair base -> {ft,part,lora,vocab} x {f32,bf16} of WORK/*.mpk: `mpk diff`
                                and `mpk patch` (--no-fsync), and --level 9 for ft; the peers zstd -19 --long
                                --patch-from, bsdiff and xdelta3 -9 (create and apply); every command under
                                /usr/bin/time -v, one after another; every applied output checked with cmp
                                against NEW. Then, for part and lora, the changed-tensors-alone references
                                (see changed_refs), and for vocab the same pair with its resized tensors
                                unpaired (see unpaired_ref). Writes JSON (keys "pairs", "changed", "unpaired").
  big    JSON  MPK DIR          The multi-GiB pair of make_big_pair.py (DIR/big_{base,ft}.mpk): diff and
                                patch, peak RSS against the largest tensor, apply GB/s. Adds key "big".
  report JSON                   Prints the Markdown tables.

Environment (pairs): MPK_PATCH_PEERS (default zstd,xdelta3,bsdiff), MPK_PATCH_REPS (default 3: ours' diff
and every tool's apply are repeated and the median kept; peers' create runs once), MPK_PATCH_ONLY (e.g.
"ft.f32,lora.bf16": only these pairs).
"""
import json
import math
import os
import re
import statistics
import subprocess
import sys
import time

VARIANTS = ["ft", "part", "lora", "vocab"]  # vocab: when make_model_pairs.py has made it
DTYPES = ["f32", "bf16"]
ALL_PEERS = ["zstd", "bsdiff", "xdelta3"]


def loadavg():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def timed(cmd):
    """Runs cmd under /usr/bin/time -v -> dict(wall s, cpu s (user+sys), rss_kib, stdout)."""
    t0 = time.perf_counter()
    p = subprocess.run(["/usr/bin/time", "-v"] + cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({p.returncode}): {p.stderr[-3000:]}")

    def field(name):
        return re.search(re.escape(name) + r": ([\d.]+)", p.stderr).group(1)

    r = {"wall_s": wall, "cpu_s": float(field("User time (seconds)")) + float(field("System time (seconds)")),
         "rss_kib": int(field("Maximum resident set size (kbytes)")), "stdout": p.stdout.strip()}
    m = re.search(r"\bin ([\d.]+) (ms|s)\b", p.stdout)  # mpk's own timer (no process start and exit)
    if cmd[0].endswith("mpk") and m:
        r["self_s"] = float(m.group(1)) / (1000 if m.group(2) == "ms" else 1)
    return r


def median_run(cmd, reps, after=None):
    """reps runs of cmd; after(i) is called after each (checks). -> the median row by wall time, plus all walls."""
    runs = []
    for i in range(reps):
        r = timed(cmd)
        if after:
            after(i)
        runs.append(r)
    runs.sort(key=lambda r: r["wall_s"])
    m = dict(runs[len(runs) // 2])
    m["walls"] = sorted(r["wall_s"] for r in runs)
    if all("self_s" in r for r in runs):
        m["self_s"] = statistics.median(r["self_s"] for r in runs)
    m["rss_kib_max"] = max(r["rss_kib"] for r in runs)
    return m


def same(a, b):
    return subprocess.run(["cmp", "-s", a, b]).returncode == 0


def inspect(mpk, path):
    return json.loads(subprocess.run([mpk, "inspect", "--json", path], check=True, stdout=subprocess.PIPE).stdout)


def stored_bytes(doc):
    return sum(t["encoding"]["stored_bytes"] for t in doc["tensors"])


def save(path, doc):
    with open(path + ".tmp", "w") as f:
        json.dump(doc, f, indent=1)
    os.replace(path + ".tmp", path)


def load(path):
    if os.path.exists(path):
        with open(path) as f:
            return json.load(f)
    return {}


# ----------------------------------------------------------------------------------------------------------
# pairs
# ----------------------------------------------------------------------------------------------------------

def run_ours(mpk, base, new, work, tag, level, reps):
    load0 = loadavg()
    patch = os.path.join(work, f"patch.{tag}.L{level}.mpkp")
    out = os.path.join(work, f"out.{tag}.L{level}.mpk")
    diff_cmd = [mpk, "diff", base, new, "-o", patch, "--no-fsync"] + (["--level", str(level)] if level != 3 else [])
    sizes = []
    c = median_run(diff_cmd, reps, after=lambda i: sizes.append(os.path.getsize(patch)))
    ok = []

    def check(i):
        ok.append(same(out, new))
        os.remove(out)

    a = median_run([mpk, "patch", base, patch, "-o", out, "--no-fsync"], reps, after=check)
    return {"tool": "ours" if level == 3 else f"ours L{level}", "level": level, "patch": patch, "load": load0,
            "patch_bytes": sizes[-1], "patch_sizes_stable": len(set(sizes)) == 1,
            "create": c, "apply": a, "identical": all(ok), "cmd_create": " ".join(diff_cmd),
            "cmd_apply": f"{mpk} patch {base} {patch} -o OUT --no-fsync"}


def peer_cmds(tool, base, new, patch, out):
    # zstd --long=W needs 2^W >= the base size to find matches anywhere in it; 31 is its maximum.
    wlog = max(10, min(31, math.ceil(math.log2(max(os.path.getsize(base), os.path.getsize(new))))))
    return {
        "zstd": (["zstd", "-q", "-f", "-19", f"--long={wlog}", f"--patch-from={base}", new, "-o", patch],
                 ["zstd", "-q", "-f", "-d", f"--long={wlog}", f"--patch-from={base}", patch, "-o", out]),
        "bsdiff": (["bsdiff", base, new, patch], ["bspatch", base, out, patch]),
        "xdelta3": (["xdelta3", "-9", "-f", "-e", "-s", base, new, patch],
                    ["xdelta3", "-f", "-d", "-s", base, patch, out]),
    }[tool]


def run_peer(tool, base, new, work, tag, reps):
    load0 = loadavg()
    patch = os.path.join(work, f"patch.{tag}.{tool}")
    out = os.path.join(work, f"out.{tag}.{tool}")
    enc, dec = peer_cmds(tool, base, new, patch, out)
    c = timed(enc)
    c["walls"] = [c["wall_s"]]
    ok = []

    def check(i):
        ok.append(same(out, new))
        os.remove(out)

    a = median_run(dec, reps, after=check)
    return {"tool": tool, "patch": patch, "load": load0, "patch_bytes": os.path.getsize(patch), "create": c, "apply": a,
            "identical": all(ok), "cmd_create": " ".join(enc), "cmd_apply": " ".join(dec)}


def read_safetensors_header(path):
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        h = json.loads(f.read(n))
    h.pop("__metadata__", None)
    return h, 8 + n


def write_subset_safetensors(src, dst, names, rename=None):
    """Copies the tensors `names` of safetensors file src into a new safetensors file dst (same order),
    renamed by rename[name] where given."""
    h, base = read_safetensors_header(src)
    items = sorted(((k, v) for k, v in h.items() if k in names), key=lambda kv: kv[1]["data_offsets"][0])
    header, off = {}, 0
    for k, v in items:
        n = v["data_offsets"][1] - v["data_offsets"][0]
        header[(rename or {}).get(k, k)] = {"dtype": v["dtype"], "shape": v["shape"], "data_offsets": [off, off + n]}
        off += n
    hb = json.dumps(header, separators=(",", ":")).encode()
    hb += b" " * (-len(hb) % 8)
    with open(src, "rb") as f, open(dst + ".tmp", "wb") as o:
        o.write(len(hb).to_bytes(8, "little"))
        o.write(hb)
        for k, v in items:
            f.seek(base + v["data_offsets"][0])
            o.write(f.read(v["data_offsets"][1] - v["data_offsets"][0]))
    os.replace(dst + ".tmp", dst)


def changed_refs(mpk, pairs_dir, work, v, dt, ours, proto):
    """References for 'at most 5% larger than the best encoding of the changed tensors alone'."""
    base, new = os.path.join(work, f"base.{dt}.mpk"), os.path.join(work, f"{v}.{dt}.mpk")
    ib, inew = inspect(mpk, base), inspect(mpk, new)
    bsum = {t["name"]: t["xxh3"] for t in ib["tensors"]}
    changed = [t["name"] for t in inew["tensors"] if bsum.get(t["name"]) != t["xxh3"]]
    changed_bytes = sum(t["bytes"] for t in inew["tensors"] if t["name"] in set(changed))
    ip = inspect(mpk, ours["patch"])
    payload = stored_bytes(ip)
    r = {"pair": f"base->{v}", "dtype": dt, "tensors": len(inew["tensors"]), "changed": len(changed),
         "changed_bytes": changed_bytes, "new_bytes": os.path.getsize(new),
         "patch_bytes": ours["patch_bytes"], "patch_payload_tensors": len(ip["tensors"]),
         "payload_stored_bytes": payload, "overhead_bytes": ours["patch_bytes"] - payload}
    # the changed tensors alone, as models: NEW's changed tensors (and the same names from BASE)
    sub = {}
    for side, stem in (("new", v), ("base", "base")):
        st = os.path.join(work, f"sub.{v}.{dt}.{side}.safetensors")
        write_subset_safetensors(os.path.join(pairs_dir, f"{stem}.{dt}.safetensors"), st, set(changed))
        sub[side] = st[: -len(".safetensors")] + ".mpk"
        subprocess.run([mpk, "convert", st, sub[side], "--no-fsync"], check=True, stdout=subprocess.DEVNULL)
        os.remove(st)
    r["alone_raw_file"] = os.path.getsize(sub["new"])
    for level in (3, 9, 19):
        z = os.path.join(work, f"sub.{v}.{dt}.new.L{level}.mpk")
        subprocess.run([mpk, "compress", sub["new"], z, "--level", str(level), "--no-fsync"], check=True,
                       stdout=subprocess.DEVNULL)
        r[f"alone_compress_L{level}_file"] = os.path.getsize(z)
        r[f"alone_compress_L{level}_tensors"] = stored_bytes(inspect(mpk, z))
        p = os.path.join(work, f"sub.{v}.{dt}.L{level}.mpkp")
        subprocess.run([mpk, "diff", sub["base"], sub["new"], "-o", p, "--level", str(level), "--no-fsync"],
                       check=True, stdout=subprocess.DEVNULL)
        r[f"alone_delta_L{level}_file"] = os.path.getsize(p)
        r[f"alone_delta_L{level}_tensors"] = stored_bytes(inspect(mpk, p))
    files = [r[f"alone_{k}_L{lv}_file"] for k in ("compress", "delta") for lv in (3, 9, 19)]
    r["alone_best_file"] = min(files)
    r["alone_best_tensors"] = min(r[f"alone_{k}_L{lv}_tensors"] for k in ("compress", "delta") for lv in (3, 9, 19))
    # like for like: the best alone at the patch's own level (3), and at level 9 for the level-9 patch
    r["alone_best_L3_file"] = min(r["alone_compress_L3_file"], r["alone_delta_L3_file"])
    r["alone_best_L9_file"] = min(r["alone_compress_L9_file"], r["alone_delta_L9_file"])
    for row in proto:
        if row["pair"] == f"base->{v}" and row["dtype"] == dt:
            r["proto_best_zstd"] = row["zstd"]["best"]
            r["proto_best_h0"] = row["h0"]["best"]
    return r


def unpaired_ref(mpk, pairs_dir, work, v, dt, ours):
    """The same pair with NEW's resized tensors renamed, so that no delta pairs them with BASE's: what
    the patch would be without deltas across sizes (those tensors as new data)."""
    src = os.path.join(pairs_dir, f"{v}.{dt}.safetensors")
    h = read_safetensors_header(src)[0]
    bh = read_safetensors_header(os.path.join(pairs_dir, f"base.{dt}.safetensors"))[0]
    resized = sorted(k for k, t in h.items() if k in bh and t["shape"] != bh[k]["shape"])
    st = os.path.join(work, f"unpaired.{v}.{dt}.safetensors")
    write_subset_safetensors(src, st, set(h), {k: "unpaired." + k for k in resized})
    new = st[: -len(".safetensors")] + ".mpk"
    subprocess.run([mpk, "convert", st, new, "--no-fsync"], check=True, stdout=subprocess.DEVNULL)
    os.remove(st)
    patch = os.path.join(work, f"unpaired.{v}.{dt}.mpkp")
    subprocess.run([mpk, "diff", os.path.join(work, f"base.{dt}.mpk"), new, "-o", patch, "--no-fsync"], check=True,
                   stdout=subprocess.DEVNULL)
    r = {"pair": f"base->{v}", "dtype": dt, "resized": resized,
         "resized_bytes": sum(h[k]["data_offsets"][1] - h[k]["data_offsets"][0] for k in resized),
         "new_bytes": os.path.getsize(os.path.join(work, f"{v}.{dt}.mpk")), "patch_bytes": ours["patch_bytes"],
         "unpaired_patch_bytes": os.path.getsize(patch)}
    os.remove(new)
    return r


def pairs_main(json_path, mpk, pairs_dir, work):
    peers = [p for p in os.environ.get("MPK_PATCH_PEERS", "zstd,xdelta3,bsdiff").split(",") if p]
    for p in peers:
        if p not in ALL_PEERS:
            sys.exit(f"patch_bench: unknown peer {p!r} (MPK_PATCH_PEERS: {','.join(ALL_PEERS)})")
    peers = [p for p in ALL_PEERS if p in peers]
    reps = int(os.environ.get("MPK_PATCH_REPS", "3"))
    only = [p for p in os.environ.get("MPK_PATCH_ONLY", "").split(",") if p]
    proto_path = os.path.join(pairs_dir, "proto.json")
    proto = []
    if os.path.exists(proto_path) and os.path.getmtime(proto_path) >= max(
            os.path.getmtime(os.path.join(pairs_dir, f"{s}.{d}.safetensors")) for s in ["base", "ft", "part", "lora"]
            for d in DTYPES):
        proto = json.load(open(proto_path))
    doc = load(json_path)
    doc.update({"mpk": mpk, "pairs_dir": pairs_dir, "work": work, "peers": peers, "reps": reps,
                "nproc": os.cpu_count(), "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "load_before": loadavg(), "pairs": [], "changed": [], "unpaired": [], "proto_used": bool(proto)})
    t_all = time.time()
    for dt in DTYPES:
        base = os.path.join(work, f"base.{dt}.mpk")
        for v in VARIANTS:
            tag = f"{v}.{dt}"
            if only and tag not in only:
                continue
            new = os.path.join(work, f"{v}.{dt}.mpk")
            if not os.path.exists(new):
                print(f"patch_bench: no {new}: pair skipped", file=sys.stderr, flush=True)
                continue
            row = {"pair": f"base->{v}", "dtype": dt, "new_bytes": os.path.getsize(new),
                   "load_before": loadavg(), "tools": []}
            levels = [3, 9]  # the default, and the level that also tries SUB_SORTED and low-rank sources
            for level in levels:
                row["tools"].append(run_ours(mpk, base, new, work, tag, level, reps))
                log(row, row["tools"][-1])
            for p in peers:
                row["tools"].append(run_peer(p, base, new, work, tag, reps))
                log(row, row["tools"][-1])
            row["load_after"] = loadavg()
            doc["pairs"].append(row)
            save(json_path, doc)
    for dt in DTYPES:
        for v in ("part", "lora"):
            row = next((r for r in doc["pairs"] if r["pair"] == f"base->{v}" and r["dtype"] == dt), None)
            if row is None:
                continue
            ours = next(t for t in row["tools"] if t["tool"] == "ours")
            c = changed_refs(mpk, pairs_dir, work, v, dt, ours, proto)
            l9 = next((t for t in row["tools"] if t["tool"] == "ours L9"), None)
            if l9 is not None:  # the level-9 patch against the changed tensors alone at that level
                c["patch_L9_bytes"] = l9["patch_bytes"]
            doc["changed"].append(c)
            print(f"changed-tensors reference {c['pair']} {dt}: {c['changed']}/{c['tensors']} changed; patch "
                  f"{c['patch_bytes']} B = payload {c['payload_stored_bytes']} + overhead {c['overhead_bytes']}; "
                  f"alone best file {c['alone_best_file']} B", file=sys.stderr, flush=True)
            save(json_path, doc)
    for dt in DTYPES:
        row = next((r for r in doc["pairs"] if r["pair"] == "base->vocab" and r["dtype"] == dt), None)
        if row is not None:
            u = unpaired_ref(mpk, pairs_dir, work, "vocab", dt, next(t for t in row["tools"] if t["tool"] == "ours"))
            doc["unpaired"].append(u)
            print(f"vocab {dt}: patch {u['patch_bytes']} B; with {u['resized']} unpaired (new data): "
                  f"{u['unpaired_patch_bytes']} B", file=sys.stderr, flush=True)
            save(json_path, doc)
    doc["load_after"] = loadavg()
    doc["seconds"] = round(time.time() - t_all, 1)
    save(json_path, doc)


def log(row, t):
    print(f"{row['pair']:>11} {row['dtype']:>4} {t['tool']:>8}: {100 * t['patch_bytes'] / row['new_bytes']:6.2f}% "
          f"of {row['new_bytes']} B; create {t['create']['wall_s']:7.2f} s {t['create']['rss_kib'] / 1024:5.0f} MiB; "
          f"apply {t['apply']['wall_s']:6.3f} s {t['apply']['rss_kib'] / 1024:5.0f} MiB; identical={t['identical']}; "
          f"load {loadavg()}", file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------------------------------------
# big
# ----------------------------------------------------------------------------------------------------------

def big_main(json_path, mpk, d, gen_json):
    base, new = os.path.join(d, "big_base.mpk"), os.path.join(d, "big_ft.mpk")
    patch, out = os.path.join(d, "big.mpkp"), os.path.join(d, "big_out.mpk")
    inew = inspect(mpk, new)
    largest = max(t["bytes"] for t in inew["tensors"])
    r = {"gen": json.loads(gen_json) if gen_json else None, "base_bytes": os.path.getsize(base),
         "new_bytes": os.path.getsize(new), "tensors": len(inew["tensors"]), "largest_tensor_bytes": largest,
         "load_before": loadavg()}
    c = timed([mpk, "diff", base, new, "-o", patch, "--no-fsync"])
    r["create"] = c
    r["patch_bytes"] = os.path.getsize(patch)
    r["load_mid"] = loadavg()
    # Apply and the same-run baseline, a plain copy of NEW (what writing that many bytes costs on this
    # machine), alternate, each from the same state: the inputs re-read into the page cache, then a
    # pause. On the benchmark VM pages freed (the previous output deleted) go back to the host within
    # seconds and the first write to one is slow, so a command started right after a deletion reuses
    # warm pages that one started later does not get; the pause gives both the cold ones.
    reps = int(os.environ.get("MPK_PATCH_REPS", "3"))
    pause = float(os.environ.get("MPK_PATCH_PAUSE", "4"))
    copy = os.path.join(d, "big_copy.mpk")

    def warm():
        for f in (base, patch, new):
            subprocess.run(["cat", f], stdout=subprocess.DEVNULL, check=True)
        time.sleep(pause)

    ok, applies, copies = [], [], []
    for i in range(reps):
        warm()
        applies.append(timed([mpk, "patch", base, patch, "-o", out, "--no-fsync"]))
        ok.append(same(out, new))
        os.remove(out)
        warm()
        copies.append(timed(["cp", new, copy]))
        os.remove(copy)

    def median_of(runs):
        runs = sorted(runs, key=lambda x: x["wall_s"])
        m = dict(runs[len(runs) // 2])
        m["walls"] = [x["wall_s"] for x in runs]
        m["cpu_s_all"] = sorted(x["cpu_s"] for x in runs)
        if all("self_s" in x for x in runs):
            m["self_s"] = statistics.median(x["self_s"] for x in runs)
        m["rss_kib_max"] = max(x["rss_kib"] for x in runs)
        return m

    r["apply"] = median_of(applies)
    r["cp"] = median_of(copies)
    r["apply_over_cp"] = sorted(a["wall_s"] / c["wall_s"] for a, c in zip(applies, copies))  # per pair of runs
    r["identical"] = all(ok)
    r["load_after"] = loadavg()
    r["cmd_create"] = f"{mpk} diff {base} {new} -o {patch} --no-fsync"
    r["cmd_apply"] = f"{mpk} patch {base} {patch} -o {out} --no-fsync"
    doc = load(json_path)
    doc["big"] = r
    save(json_path, doc)
    a = r["apply"]
    print(f"big: NEW {r['new_bytes']} B, largest tensor {largest} B; patch {r['patch_bytes']} B; create "
          f"{c['wall_s']:.1f} s {c['rss_kib'] / 1024:.0f} MiB; apply {a['wall_s']:.2f} s {a['rss_kib'] / 1024:.0f} MiB "
          f"(cp {r['cp']['wall_s']:.2f} s); identical={r['identical']}", file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------------------------------------
# report
# ----------------------------------------------------------------------------------------------------------

MIB = 1024 * 1024


def pct(a, b):
    return f"{100 * a / b:.2f}%"


def report_main(json_path):
    doc = load(json_path)
    out = []
    p = out.append
    rows = doc.get("pairs", [])
    targets = []
    if rows:
        p(f"Run {doc['started']} on {doc['nproc']} CPUs; load average before {doc['load_before']}, after "
          f"{doc.get('load_after', '?')}; {doc.get('seconds', '?')} s. Ours: `mpk diff` default (--level 3, "
          f"--threads 0 = one per core), `mpk patch`; {doc['reps']} runs of ours' diff and of every apply "
          f"(median), one create per peer. Peers: {', '.join(doc['peers'])}.")
        p("")
        p("### Patch size (% of NEW) and ours against the best peer")
        p("")
        peers = doc["peers"]
        p("| pair | dtype | NEW bytes | ours | ours L9 | " + " | ".join(peers) +
          " | best peer | ours / best peer | ours smaller by | ours L9 / best peer | L9 smaller by | all outputs identical |")
        p("|---|---|---:|---:|---:|" + "---:|" * len(peers) + "---|---:|---:|---:|---:|---|")
        for r in rows:
            t = {x["tool"]: x for x in r["tools"]}
            n = r["new_bytes"]
            ours = t["ours"]["patch_bytes"]
            peer_sizes = {k: t[k]["patch_bytes"] for k in peers if k in t}
            best = min(peer_sizes, key=peer_sizes.get) if peer_sizes else None
            l9 = pct(t["ours L9"]["patch_bytes"], n) if "ours L9" in t else "–"
            cells = [pct(t[k]["patch_bytes"], n) if k in t else "–" for k in peers]
            ident = all(x["identical"] for x in r["tools"])
            if best:
                ratio = ours / peer_sizes[best]
                r9 = t["ours L9"]["patch_bytes"] / peer_sizes[best] if "ours L9" in t else None
                l9cells = f"{r9:.3f} | {100 * (1 - r9):.1f}%" if r9 is not None else "– | –"
                p(f"| {r['pair']} | {r['dtype']} | {n:,} | {pct(ours, n)} | {l9} | " + " | ".join(cells) +
                  f" | {best} {pct(peer_sizes[best], n)} | {ratio:.3f} | {100 * (1 - ratio):.1f}% | {l9cells} | "
                  f"{'yes' if ident else '**NO**'} |")
                targets.append(("smaller than every peer", f"{r['pair']} {r['dtype']}", ratio < 1,
                                f"{ratio:.3f} of {best}"))
                if r["pair"] in ("base->ft", "base->vocab"):  # full fine-tunes
                    targets.append(("full fine-tune >= 25% smaller than the best peer (default level)",
                                    f"{r['pair']} {r['dtype']}", ratio <= 0.75, f"{100 * (1 - ratio):.1f}% smaller"))
                    if r9 is not None:
                        targets.append(("full fine-tune >= 25% smaller than the best peer (--level 9)",
                                        f"{r['pair']} {r['dtype']}", r9 <= 0.75, f"{100 * (1 - r9):.1f}% smaller"))
            else:
                p(f"| {r['pair']} | {r['dtype']} | {n:,} | {pct(ours, n)} | {l9} | | – | – | – | – | – | "
                  f"{'yes' if ident else '**NO**'} |")
            if not ident:
                targets.append(("output identical to NEW", f"{r['pair']} {r['dtype']}", False,
                                ", ".join(x["tool"] for x in r["tools"] if not x["identical"])))
        p("")
        p("### Every tool: create and apply (wall = median of the runs; CPU = user + sys; RSS = peak resident)")
        p("")
        p("| pair | dtype | tool | patch bytes | % of NEW | create s | create CPU s | create RSS MiB | apply s | "
          "apply CPU s | apply GB/s | apply GB/s (mpk's timer) | apply RSS MiB | identical | load before |")
        p("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|")
        for r in rows:
            n = r["new_bytes"]
            for x in r["tools"]:
                c, a = x["create"], x["apply"]
                self_gbs = f"{n / a['self_s'] / 1e9:.2f}" if "self_s" in a else "–"
                p(f"| {r['pair']} | {r['dtype']} | {x['tool']} | {x['patch_bytes']:,} | {pct(x['patch_bytes'], n)} | "
                  f"{c['wall_s']:.2f} | {c['cpu_s']:.2f} | {c['rss_kib'] / 1024:.0f} | {a['wall_s']:.3f} | "
                  f"{a['cpu_s']:.2f} | {n / a['wall_s'] / 1e9:.2f} | "
                  f"{self_gbs} | "
                  f"{a['rss_kib_max'] / 1024:.0f} | {'yes' if x['identical'] else '**NO**'} | {x.get('load', r['load_before'])} |")
                if x["tool"] == "ours":
                    targets.append(("apply >= 1 GB/s of output (small pairs; wall incl. process start, and mpk's timer)",
                                    f"{r['pair']} {r['dtype']}", n / a["wall_s"] / 1e9 >= 1,
                                    f"{n / a['wall_s'] / 1e9:.2f} GB/s wall, {self_gbs} GB/s own timer"))
        p("")
    ch = doc.get("changed", [])
    if ch:
        p("### Partial fine-tune and merged adapter against the changed tensors alone")
        p("")
        p("Patch = ours at the default level (L3) and at --level 9. Overhead = patch file bytes − the stored bytes "
          "of its payload tensors (`mpk inspect --json PATCH`): header, patch table, alignment padding. \"Alone\" = a "
          ".mpk holding only the changed tensors (those whose XXH3 differs between BASE and NEW), made from the "
          "safetensors; compress = `mpk compress` of NEW's changed tensors (replace, no delta); delta = `mpk diff` "
          "from BASE's changed tensors to NEW's; file bytes. Like for like: each patch against the best alone at "
          "its own level; last, the smaller patch against the best alone at any level.")
        p("")
        p("| pair | dtype | changed tensors | changed bytes (% of NEW) | patch L3 | overhead (% of payload) | patch L9 | "
          "alone compress L3 / L9 / L19 | alone delta L3 / L9 / L19 | L3 patch / best alone L3 | "
          "L9 patch / best alone L9 | best patch / best alone | prototype best (zstd -19 planes) | patch / prototype |")
        p("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for c in ch:
            proto = c.get("proto_best_zstd")
            l9 = c.get("patch_L9_bytes")
            best_patch = min(c["patch_bytes"], l9) if l9 else c["patch_bytes"]
            l9_ratio = f"{l9 / c['alone_best_L9_file']:.4f}" if l9 else "–"
            p(f"| {c['pair']} | {c['dtype']} | {c['changed']}/{c['tensors']} | {c['changed_bytes']:,} "
              f"({pct(c['changed_bytes'], c['new_bytes'])}) | {c['patch_bytes']:,} | "
              f"{c['overhead_bytes']:,} ({pct(c['overhead_bytes'], c['payload_stored_bytes'])}) | "
              f"{f'{l9:,}' if l9 else '–'} | "
              f"{c['alone_compress_L3_file']:,} / {c['alone_compress_L9_file']:,} / {c['alone_compress_L19_file']:,} | "
              f"{c['alone_delta_L3_file']:,} / {c['alone_delta_L9_file']:,} / {c['alone_delta_L19_file']:,} | "
              f"{c['patch_bytes'] / c['alone_best_L3_file']:.4f} | "
              f"{l9_ratio} | "
              f"{best_patch / c['alone_best_file']:.4f} | " +
              (f"{int(proto):,} | {c['patch_bytes'] / proto:.4f} |" if proto else "– | – |"))
            targets.append(("part/lora <= 1.05 x changed tensors' best encoding at the same level (L3)",
                            f"{c['pair']} {c['dtype']}", c["patch_bytes"] <= 1.05 * c["alone_best_L3_file"],
                            f"{c['patch_bytes'] / c['alone_best_L3_file']:.4f}"))
            if l9:
                targets.append(("part/lora <= 1.05 x changed tensors' best encoding at the same level (L9)",
                                f"{c['pair']} {c['dtype']}", l9 <= 1.05 * c["alone_best_L9_file"],
                                f"{l9 / c['alone_best_L9_file']:.4f}"))
            targets.append(("part/lora overhead <= 5% of the payload", f"{c['pair']} {c['dtype']}",
                            c["overhead_bytes"] <= 0.05 * c["payload_stored_bytes"],
                            pct(c["overhead_bytes"], c["payload_stored_bytes"])))
            if proto:
                targets.append(("part/lora <= 1.05 x prototype best (no container bytes)", f"{c['pair']} {c['dtype']}",
                                c["patch_bytes"] <= 1.05 * proto, f"{c['patch_bytes'] / proto:.4f}"))
        p("")
    up = doc.get("unpaired", [])
    if up:
        p("### Resized vocabulary: deltas across sizes against the same tensors unpaired")
        p("")
        p("The vocab pair (make_model_pairs.py: tokens appended to the embedding and the head, then every parameter "
          "fine-tuned as ft). Unpaired = the same NEW with its resized tensors renamed, so that `mpk diff` (default "
          "level) carries them as new data, as it did before deltas across sizes (FORMAT.md 7.10 rev. 6).")
        p("")
        p("| pair | dtype | resized tensors | their bytes (% of NEW) | ours | unpaired | saved (% of NEW) |")
        p("|---|---|---|---:|---:|---:|---:|")
        for u in up:
            n = u["new_bytes"]
            p(f"| {u['pair']} | {u['dtype']} | {', '.join(u['resized'])} | {u['resized_bytes']:,} "
              f"({pct(u['resized_bytes'], n)}) | {u['patch_bytes']:,} ({pct(u['patch_bytes'], n)}) | "
              f"{u['unpaired_patch_bytes']:,} ({pct(u['unpaired_patch_bytes'], n)}) | "
              f"{u['unpaired_patch_bytes'] - u['patch_bytes']:,} "
              f"({pct(u['unpaired_patch_bytes'] - u['patch_bytes'], n)}) |")
        p("")
    b = doc.get("big")
    if b:
        p("### Big pair (make_big_pair.py): bounded memory and apply speed")
        p("")
        lt = b["largest_tensor_bytes"]
        p("| NEW bytes | tensors | largest tensor | patch bytes (% of NEW) | step | wall s | CPU s | peak RSS MiB | "
          "RSS − largest tensor MiB | GB/s of NEW (wall) | GB/s (mpk's timer) | identical | load before |")
        p("|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---|---|")
        for step, key, ld in (("diff", "create", b["load_before"]), ("patch", "apply", b["load_mid"])):
            x = b[key]
            rss = x.get("rss_kib_max", x["rss_kib"])  # the largest of the repeated runs
            self_gbs = f"{b['new_bytes'] / x['self_s'] / 1e9:.2f}" if "self_s" in x else "–"
            p(f"| {b['new_bytes']:,} | {b['tensors']} | {lt / MIB:.0f} MiB | {b['patch_bytes']:,} "
              f"({pct(b['patch_bytes'], b['new_bytes'])}) | {step} | {x['wall_s']:.2f} | {x['cpu_s']:.2f} | "
              f"{rss / 1024:.0f} | {(rss * 1024 - lt) / MIB:.0f} | {b['new_bytes'] / x['wall_s'] / 1e9:.2f} | "
              f"{self_gbs} | {'yes' if b['identical'] else '**NO**'} | {ld} |")
            targets.append((f"big pair: {step} peak RSS < largest tensor + 256 MiB", "big",
                            rss * 1024 < lt + 256 * MIB, f"{rss / 1024:.0f} MiB vs {(lt + 256 * MIB) / MIB:.0f} MiB"))
        if "cp" in b:
            cp = b["cp"]["wall_s"]
            p("")
            p(f"Same-run baseline: `cp NEW` {cp:.2f} s ({b['new_bytes'] / cp / 1e9:.2f} GB/s); apply / cp time "
              f"{b['apply']['wall_s'] / cp:.2f}x (apply walls {b['apply'].get('walls')}, cp walls {b['cp'].get('walls')}"
              + (f"; apply / cp per pair of runs {[round(x, 2) for x in b['apply_over_cp']]}" if "apply_over_cp" in b else "")
              + ").")
        targets.append(("big pair: apply >= 1 GB/s of output", "big",
                        b["new_bytes"] / b["apply"]["wall_s"] / 1e9 >= 1,
                        f"{b['new_bytes'] / b['apply']['wall_s'] / 1e9:.2f} GB/s"))
        if not b["identical"]:
            targets.append(("big pair output identical to NEW", "big", False, "differs"))
        p("")
        p(f"Load average: {b['load_before']} before diff, {b['load_mid']} before patch, {b['load_after']} after.")
        p("")
    if targets:
        p("### Targets")
        p("")
        p("| target | case | pass | value |")
        p("|---|---|---|---|")
        for name, case, ok, val in targets:
            p(f"| {name} | {case} | {'yes' if ok else '**no**'} | {val} |")
        p("")
    print("\n".join(out))


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    cmd = sys.argv[1]
    if cmd == "pairs":
        pairs_main(*sys.argv[2:6])
    elif cmd == "big":
        big_main(sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5] if len(sys.argv) > 5 else "")
    elif cmd == "report":
        report_main(sys.argv[2])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
