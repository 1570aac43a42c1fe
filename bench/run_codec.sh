#!/usr/bin/env bash
# Builds bench_codec (Release, its own build directory), makes trained weights if missing, runs the
# chunk-codec benchmarks (issue 4) and prints a compact Markdown report: sizes and speeds of ours beside
# the same-run baselines (zstd -3 / -19 per chunk, zstd -3 whole buffer, byte planes + zstd -1 / -19,
# memcpy), the chunk-size sweep, and the issue's targets.
#
# Usage: bench/run_codec.sh [extra Google Benchmark flags, e.g. --benchmark_filter=synth/bf16]
# Environment: MPK_BENCH_BUILD (build dir, default <repo>/build-bench-codec), MPK_BENCH_WEIGHTS (float32
# blob, default /tmp/mpk_weights.f32, made by bench/make_weights.py when missing; "none" to skip the
# real-weights set), MPK_BENCH_REPS (repetitions, default 3; medians are reported), MPK_BENCH_MIN_TIME
# (seconds per repetition, default 0.1), MPK_BENCH_SAMPLE_MIB (level-19 sample, default 8),
# MPK_BENCH_OUT (JSON, default <build>/bench_codec.json).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
build=${MPK_BENCH_BUILD:-$root/build-bench-codec}
out=${MPK_BENCH_OUT:-$build/bench_codec.json}
reps=${MPK_BENCH_REPS:-3}
min_time=${MPK_BENCH_MIN_TIME:-0.1}
weights=${MPK_BENCH_WEIGHTS:-/tmp/mpk_weights.f32}

cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release -DMPK_BUILD_BENCH=ON -DMPK_BUILD_TESTS=OFF \
  -DMPK_BUILD_TOOLS=OFF -DMPK_BUILD_EXAMPLES=OFF >/dev/null
cmake --build "$build" -j2 --target bench_codec >&2

if [ "$weights" = none ]; then
  weights=
elif [ ! -s "$weights" ]; then
  if ! /usr/bin/python3 -c 'import torch' 2>/dev/null; then
    echo "run_codec: python3-torch is missing: apt-get install -y python3-torch libopenblas0-pthread" >&2
    exit 1
  fi
  echo "== making trained weights: $weights (bench/make_weights.py, ~2.5 min)" >&2
  /usr/bin/python3 "$here/make_weights.py" --out "$weights" >&2
fi

load0=$(cut -d' ' -f1-3 /proc/loadavg)
echo "== $(date -u +%FT%TZ) load $load0; bench_codec ($reps repetitions, min_time $min_time s) -> $out" >&2
start=$(date +%s)
MPK_BENCH_WEIGHTS="$weights" "$build/bench/bench_codec" \
  --benchmark_repetitions="$reps" \
  --benchmark_min_time="$min_time" \
  --benchmark_report_aggregates_only=true \
  --benchmark_enable_random_interleaving=true \
  --benchmark_out="$out" --benchmark_out_format=json \
  "$@" >&2
load1=$(cut -d' ' -f1-3 /proc/loadavg)
echo "== bench_codec took $(($(date +%s) - start)) s; load average before: $load0, after: $load1" >&2

/usr/bin/python3 - "$out" "$load0" "$load1" "$reps" <<'EOF'
import json, re, sys
from collections import defaultdict

doc = json.load(open(sys.argv[1]))
R = {}  # (op, scheme, data, dtype, chunk, threads) -> median row
for b in doc["benchmarks"]:
    if b.get("aggregate_name", "median") != "median":
        continue
    m = re.match(r"(\w+)/(\w+)/(\w+)/(\w+)/chunk:(\w+)/threads:(\d)", b["run_name"] if "run_name" in b else b["name"])
    if m:
        R[m.groups()] = b

def g(op, scheme, data, dt, chunk, th="1", key="GBps"):
    b = R.get((op, scheme, data, dt, chunk, th))
    return None if b is None or key not in b else b[key]

def f(v, fmt="%.3f"):
    return "–" if v is None else fmt % v

def div(a, b):
    return None if a is None or b is None or b == 0 else a / b

sets = []
for k in R:
    if (k[2], k[3]) not in sets:
        sets.append((k[2], k[3]))
order = {"synth": 0, "real": 1, "bf16": 0, "fp16": 1, "fp32": 2}
sets.sort(key=lambda s: (order.get(s[0], 9), order.get(s[1], 9)))
ctx = doc.get("context", {})
print(f"## bench_codec ({ctx.get('date', '')}; load average before {sys.argv[2]}, after {sys.argv[3]}; "
      f"medians of {sys.argv[4]} repetitions)\n")
print("Sizes are stored/raw (smaller is better); * = level-19 schemes measured on an evenly spread sample of "
      "chunks, and `ours/p19` compares our size with planes+zstd-19 on the same chunks.\n")

print("### Size at 1 MiB chunks\n")
print("| data | dtype | ours L3 | ours L9 | ours L19* | zstd -3 | zstd -19* | planes+zstd -1 | planes+zstd -19* "
      "| zstd -3 whole | ours L3/zstd3 | ours L3/p19* | ours L9/p19* | ours L19/p19* |")
print("|---|---|" + "---|" * 12)
for d, t in sets:
    c = "1024K"
    r = lambda s, ch=c: g("decode", s, d, t, ch, key="ratio")
    v = lambda s, k: g("decode", s, d, t, c, key=k)
    print(f"| {d} | {t} | {f(r('ours_L3'))} | {f(r('ours_L9'))} | {f(r('ours_L19'))} | {f(r('zstd3'))} | "
          f"{f(r('zstd19'))} | {f(r('planes_zstd1'))} | {f(r('planes_zstd19'))} | {f(r('zstd3_whole', 'whole'))} | "
          f"{f(v('ours_L3', 'vs_zstd3_size'))} | {f(v('ours_L3', 'vs_planes19_size'))} | "
          f"{f(v('ours_L9', 'vs_planes19_size'))} | {f(v('ours_L19', 'vs_planes19_size'))} |")

print("\n### Speed at 1 MiB chunks (GB/s of decoded bytes; decode = into a pre-faulted buffer)\n")
print("| data | dtype | dec ours 1t | dec ours 2t | 2t/1t | ours/zstd3 dec (paired, 1t) | dec zstd -3 1t | "
      "dec zstd -3 2t | dec zstd -19* | dec planes+zstd -1 | dec planes+zstd -19* | dec zstd -3 whole | "
      "memcpy 1t | memcpy 2t | enc ours L1 | L3 | L9 | enc zstd -3 | enc planes+zstd -1 |")
print("|---|---|" + "---|" * 17)
for d, t in sets:
    c = "1024K"
    o1, o2 = g("decode", "ours_L3", d, t, c), g("decode", "ours_L3", d, t, c, "2")
    print(f"| {d} | {t} | {f(o1, '%.2f')} | {f(o2, '%.2f')} | {f(div(o2, o1), '%.2f')} | "
          f"{f(g('decode', 'ours_L3', d, t, c, key='vs_zstd3_decode'), '%.2f')} | "
          f"{f(g('decode', 'zstd3', d, t, c), '%.2f')} | {f(g('decode', 'zstd3', d, t, c, '2'), '%.2f')} | "
          f"{f(g('decode', 'zstd19', d, t, c), '%.2f')} | {f(g('decode', 'planes_zstd1', d, t, c), '%.2f')} | "
          f"{f(g('decode', 'planes_zstd19', d, t, c), '%.2f')} | {f(g('decode', 'zstd3_whole', d, t, 'whole'), '%.2f')} | "
          f"{f(g('copy', 'memcpy', d, t, 'whole'), '%.2f')} | {f(g('copy', 'memcpy', d, t, 'whole', '2'), '%.2f')} | "
          f"{f(g('encode', 'ours_L1', d, t, c), '%.2f')} | {f(g('encode', 'ours_L3', d, t, c), '%.2f')} | "
          f"{f(g('encode', 'ours_L9', d, t, c), '%.3f')} | {f(g('encode', 'zstd3', d, t, c), '%.2f')} | "
          f"{f(g('encode', 'planes_zstd1', d, t, c), '%.2f')} |")

print("\n### Chunk-size sweep (ours = level 3; decode 1 thread, GB/s)\n")
print("| data | dtype | chunk | ours | zstd -3 | zstd -19* | planes+zstd -1 | planes+zstd -19* | ours/p19* "
      "| dec ours | dec zstd -3 | ours/zstd3 dec (paired) | dec planes+zstd -1 |")
print("|---|---|---|" + "---|" * 10)
for d, t in sets:
    for c in ("256K", "1024K", "2048K", "4096K"):
        r = lambda s: g("decode", s, d, t, c, key="ratio")
        print(f"| {d} | {t} | {c} | {f(r('ours_L3'))} | {f(r('zstd3'))} | {f(r('zstd19'))} | {f(r('planes_zstd1'))} | "
              f"{f(r('planes_zstd19'))} | {f(g('decode', 'ours_L3', d, t, c, key='vs_planes19_size'))} | "
              f"{f(g('decode', 'ours_L3', d, t, c), '%.2f')} | {f(g('decode', 'zstd3', d, t, c), '%.2f')} | "
              f"{f(g('decode', 'ours_L3', d, t, c, key='vs_zstd3_decode'), '%.2f')} | "
              f"{f(g('decode', 'planes_zstd1', d, t, c), '%.2f')} |")

print("\n### Issue 4 targets (1 MiB chunks, level 3 unless noted)\n")
def verdict(ok):
    return "–" if ok is None else ("pass" if ok else "FAIL")
for d, t in sets:
    c = "1024K"
    rows = []
    ratio = g("decode", "ours_L3", d, t, c, key="ratio")
    if d == "synth":
        lim = 0.67 if t == "bf16" else 0.85
        rows.append(f"size {f(ratio)} <= {lim}: {verdict(None if ratio is None else ratio <= lim)}")
    else:
        for s in ("ours_L3", "ours_L9", "ours_L19"):
            v = g("decode", s, d, t, c, key="vs_planes19_size")
            rows.append(f"{s} vs planes+zstd-19 {f(v)} <= 1: {verdict(None if v is None else v <= 1)}")
    o1, o2 = g("decode", "ours_L3", d, t, c), g("decode", "ours_L3", d, t, c, "2")
    rows.append(f"decode 1t {f(o1, '%.2f')} >= 2.5: {verdict(None if o1 is None else o1 >= 2.5)}")
    rows.append(f"decode 2t/1t {f(div(o2, o1), '%.2f')} (~2)")
    e3 = g("encode", "ours_L3", d, t, c)
    rows.append(f"encode L3 {f(e3, '%.2f')} >= 0.5: {verdict(None if e3 is None else e3 >= 0.5)}")
    print(f"- {d}/{t}: " + "; ".join(rows))
EOF
