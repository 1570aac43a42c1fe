#!/usr/bin/env bash
# Builds bench_kernels and runs it: repetitions interleaved at random (the machine is shared), medians,
# JSON out, then prints the Markdown report (ratios against oneDNN f32 of the same run, fractions of the
# same run's measured FMA peak and read bandwidth, targets PASS/FAIL). About 6 minutes.
#
# Usage: bench/run_kernels.sh [extra Google Benchmark flags, e.g. --benchmark_filter='/K:1024/']
#        bench/run_kernels.sh --report FILE.json    only print the report of an earlier run
# Environment: MPK_BENCH_BUILD (build dir, default <repo>/build-rt), MPK_BENCH_OUT (JSON, default
# <build>/bench_kernels.json), MPK_BENCH_REPS (default 5), MPK_BENCH_MIN_TIME (seconds, default 0.05).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
build=${MPK_BENCH_BUILD:-$root/build-rt}
out=${MPK_BENCH_OUT:-$build/bench_kernels.json}
reps=${MPK_BENCH_REPS:-5}
min_time=${MPK_BENCH_MIN_TIME:-0.05}

if [ "${1:-}" = --report ]; then
  out=$2
else
  cmake -S "$root" -B "$build" -DMPK_BUILD_BENCH=ON >/dev/null
  cmake --build "$build" -j2 --target bench_kernels
  load=$(cut -d' ' -f1 /proc/loadavg)
  if awk -v l="$load" 'BEGIN { exit !(l > 0.7) }'; then
    echo "warning: load average is $load on $(nproc) CPUs; expect noisy figures (compare the same-run ratios)" >&2
  fi
  echo "== $(date -u +%FT%TZ) load $load; bench_kernels ($reps repetitions, min time ${min_time}s) -> $out" >&2
  "$build/bench/bench_kernels" --benchmark_repetitions="$reps" --benchmark_min_time="$min_time" \
    --benchmark_enable_random_interleaving=true --benchmark_report_aggregates_only=true \
    --benchmark_out="$out" --benchmark_out_format=json "$@" >&2
fi

/usr/bin/python3 - "$out" <<'EOF'
import json, re, sys
doc = json.load(open(sys.argv[1]))
R = {}
for b in doc["benchmarks"]:
    if b.get("run_type") == "aggregate" and b.get("aggregate_name") != "median":
        continue
    name = re.sub(r"/(real_time|manual_time|iterations:\d+)", "", b["run_name"])
    R[name] = b
ctx = doc["context"]
print("Run: %s, %s, %d CPUs at %s MHz, LLC %.0f MiB, load %s" % (
    ctx.get("date", "?"), ctx.get("host_name", "?"), ctx.get("num_cpus", 0), ctx.get("mhz_per_cpu", "?"),
    int(ctx.get("llc_bytes", 0)) / 2**20, ctx.get("load_avg", "?")))
print()

def g(name, key="GFLOPs"):
    b = R.get(name)
    return b.get(key) if b else None

peak = {T: g("peak/fma_f32/T:%d" % T) for T in (1, 2)}
bw = {T: g("peak/read/T:%d" % T, "GBps") for T in (1, 2)}
print("## Ceilings (same run)\n")
print("| threads | f32 FMA GFLOP/s | vdpbf16ps GFLOP/s | vpdpbusd GOP/s | read GB/s |")
print("|---|---|---|---|---|")
f = lambda v, fmt="%.1f": "-" if v is None else fmt % v
for T in (1, 2):
    print("| %d | %s | %s | %s | %s |" % (T, f(peak[T]), f(g("peak/dpbf16/T:%d" % T)), f(g("peak/vnni/T:%d" % T)), f(bw[T])))
print()

D = ["f32", "bf16", "f16", "int8", "int8baked"]
print("## linear y[M,N] = x[M,K] . W^T, K = N\n")
print("Cell: GFLOP/s (ratio to f32 of the same M/K/threads/mode; warm: % of the f32 FMA peak; "
      "dram: weight bytes streamed per second as % of the read bandwidth).\n")
print("| K=N | T | M | mode | " + " | ".join(D) + " |")
print("|---|---|---|---|" + "---|" * len(D))
for K in (1024, 4096):
    for T in (1, 2):
        for mode in ("warm", "dram"):
            for M in (1, 8, 64, 256):
                base = g("%s/f32/M:%d/K:%d/T:%d" % (mode, M, K, T))
                if base is None:
                    continue
                cells = []
                for d in D:
                    n = "%s/%s/M:%d/K:%d/T:%d" % (mode, d, M, K, T)
                    v = g(n)
                    if v is None:
                        cells.append("-")
                        continue
                    frac = (v / peak[T] * 100) if mode == "warm" and peak[T] else (g(n, "WGBps") / bw[T] * 100 if bw[T] else 0)
                    cells.append("%.1f (%.2fx, %.0f%%)" % (v, v / base, frac))
                print("| %d | %d | %d | %s | %s |" % (K, T, M, mode, " | ".join(cells)))
print()

print("## Targets\n")
print("| target | K=N | T | measured | result |")
print("|---|---|---|---|---|")
def check(label, num, den, K, T, want):
    a, b = g(num), g(den)
    if a is None or b is None:
        return
    r = a / b
    print("| %s | %d | %d | %.2fx | %s |" % (label, K, T, r, "PASS" if r >= want else "FAIL"))
for K in (1024, 4096):
    for T in (1, 2):
        for M in (64, 256):
            check("int8 >= 4x f32, M=%d warm" % M, "warm/int8/M:%d/K:%d/T:%d" % (M, K, T), "warm/f32/M:%d/K:%d/T:%d" % (M, K, T), K, T, 4.0)
        check("int8 >= 3.5x f32, M=1 dram", "dram/int8/M:1/K:%d/T:%d" % (K, T), "dram/f32/M:1/K:%d/T:%d" % (K, T), K, T, 3.5)
        check("f16 >= 1.8x f32, M=1 dram", "dram/f16/M:1/K:%d/T:%d" % (K, T), "dram/f32/M:1/K:%d/T:%d" % (K, T), K, T, 1.8)
        check("bf16 >= 1.8x f32, M=1 dram", "dram/bf16/M:1/K:%d/T:%d" % (K, T), "dram/f32/M:1/K:%d/T:%d" % (K, T), K, T, 1.8)
print()

print("## Direct kernels (own, weights read as stored) vs oneDNN, K=N=4096\n")
print("f16: own kernel vs W converted once to f32 and packed (oneDNN f32). bf16: own kernel vs oneDNN bf16 "
      "(or, without bf16 matmul, W converted to f32). int8 (one scale per output channel): own kernel vs oneDNN "
      "u8 x s8. Cell: median time per call in us, direct / oneDNN (ratio = oneDNN / direct, > 1: direct faster).\n")
print("| weights | op | T | mode | " + " | ".join("M=%d" % M for M in (1, 2, 4, 8, 16, 32, 64)) + " |")
print("|---|---|---|---|" + "---|" * 7)
for (dw, other, label) in (("f16direct", "f16conv", "f16"), ("bf16direct", "bf16onednn", "bf16"), ("i8direct", "i8onednn", "int8")):
    for op in ("", "-mm"):
        for T in (1, 2):
            for mode in ("warm", "dram"):
                cells = []
                for M in (1, 2, 4, 8, 16, 32, 64):
                    a = R.get("%s%s/%s/M:%d/K:4096/T:%d" % (mode, op, dw, M, T))
                    c = R.get("%s%s/%s/M:%d/K:4096/T:%d" % (mode, op, other, M, T))
                    cells.append("-" if not a or not c else "%.0f / %.0f (%.2f)" % (a["real_time"], c["real_time"], c["real_time"] / a["real_time"]))
                if any(x != "-" for x in cells):
                    print("| %s | %s | %d | %s | %s |" % (label, "matmul" if op else "linear", T, mode, " | ".join(cells)))
print()

print("## Plain layout (key 0, no packing) vs packed, M=1\n")
print("| K=N | T | dtype | plain us | packed (warm) us | packed speed-up |")
print("|---|---|---|---|---|---|")
for K in (1024, 4096):
    for T in (1, 2):
        for d in ("f32", "bf16onednn", "int8"):
            p, w = R.get("plain/%s/M:1/K:%d/T:%d" % (d, K, T)), R.get("warm/%s/M:1/K:%d/T:%d" % (d, K, T))
            if p and w:
                print("| %d | %d | %s | %.1f | %.1f | %.2fx |" % (K, T, d, p["real_time"], w["real_time"], p["real_time"] / w["real_time"]))
print()

print("## Cold start, 4096x4096, M=1, 1 thread (first call: pack + primitive creation)\n")
print("With a packed-weights file (load_packed + first call: map, checksum check, primitive creation):")
print("file pages in the page cache / dropped first (read from disk).\n")
print("| dtype | first call ms | with packed file ms (ratio) | from disk ms (ratio) | warm call ms | plain call ms | path |")
print("|---|---|---|---|---|---|---|")
for d in ("f32", "bf16", "bf16onednn", "f16", "f16conv", "int8"):
    c = R.get("cold/%s/M:1/K:4096" % d)
    if not c:
        continue
    warm = R.get("warm/%s/M:1/K:4096/T:1" % d)
    plain = R.get("plain/%s/M:1/K:4096/T:1" % d)
    cf, cd = R.get("coldfile/%s/M:1/K:4096" % d), R.get("coldfile-disk/%s/M:1/K:4096" % d)
    fr = lambda x: "%.2f (%.2fx)" % (x["real_time"], c["real_time"] / x["real_time"]) if x and x.get("real_time") else "-"
    print("| %s | %.2f | %s | %s | %s | %s | %s |" % (d, c["real_time"], fr(cf), fr(cd),
          "%.3f" % (warm["real_time"] / 1000) if warm else "-",
          "%.3f" % (plain["real_time"] / 1000) if plain else "-", c.get("label", "")))
print()
print("## What ran (labels)\n")
for n in sorted(R):
    if n.startswith(("warm/", "dram/")) and "/K:4096/T:1" in n and n.split("/")[1] in D:
        print("- `%s`: %s" % (n, R[n].get("label", "")))
EOF
