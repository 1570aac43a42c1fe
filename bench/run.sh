#!/usr/bin/env bash
# Builds bench_container (Release) and runs it: 5 repetitions, medians, repetitions of different
# benchmarks interleaved at random (the machine is shared; load drift then hits all alike), JSON out,
# then prints the Markdown report (ratios against the same-run baselines, targets pass/fail).
#
# Usage: bench/run.sh [extra Google Benchmark flags, e.g. --benchmark_filter='^open/']
#        bench/run.sh convert [flags]   the converter benchmarks (bench_convert) instead, e.g.
#        bench/run.sh convert --benchmark_filter='^paired/convert_vs_cp/'   (the target's paired ratio)
# Environment: MPK_BENCH_BUILD (build dir, default <repo>/build-bench), MPK_BENCH_OUT (JSON file,
# default <build>/<benchmark>.json), MPK_BENCH_DIR (fixture dir root, default /tmp; needs ~3 GiB
# free), MPK_BENCH_REPS (default 5; 1 for convert, whose paired benchmarks repeat in pairs),
# MPK_BENCH_PAIRS (convert: pairs per paired benchmark, default 15).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
build=${MPK_BENCH_BUILD:-$root/build-bench}
target=bench_container
if [ "${1:-}" = convert ]; then
  target=bench_convert
  shift
fi
out=${MPK_BENCH_OUT:-$build/$target.json}
if [ "$target" = bench_convert ]; then reps=${MPK_BENCH_REPS:-1}; else reps=${MPK_BENCH_REPS:-5}; fi

"$root/scripts/deps.sh" test
cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release -DMPK_BUILD_BENCH=ON -DMPK_BUILD_TESTS=OFF \
  -DMPK_BUILD_TOOLS=OFF -DMPK_BUILD_EXAMPLES=OFF >/dev/null
cmake --build "$build" -j2 --target "$target"

load=$(cut -d' ' -f1 /proc/loadavg)
if awk -v l="$load" 'BEGIN { exit !(l > 0.7) }'; then
  echo "warning: load average is $load on $(nproc) CPUs; expect noisy figures (compare the same-run ratios)" >&2
fi
echo "== $(date -u +%FT%TZ) load $load; running $target ($reps repetitions) -> $out" >&2
if [ "$target" = bench_convert ]; then
  "$build/bench/bench_convert" --benchmark_repetitions="$reps" \
    --benchmark_out="$out" --benchmark_out_format=json "$@" >&2
  # The paired ratios (base time / ours: our speed as a fraction of the base's), median and IQR.
  /usr/bin/python3 - "$out" <<'EOF'
import json, sys
for b in json.load(open(sys.argv[1]))["benchmarks"]:
    if "ratio_median" in b:
        ms = "  ".join("%s %.0f" % (k, v) for k, v in b.items() if k.endswith("_ms"))
        print("%-46s ratio median %.3f  IQR %.3f (q1 %.3f, q3 %.3f)  n %d  cpu-time ratio %.3f (IQR %.3f)  %s"
              % (b["name"].split("/iterations")[0], b["ratio_median"], b["ratio_iqr"], b["ratio_q1"],
                 b["ratio_q3"], b["pairs"], b["cpu_ratio_median"], b["cpu_ratio_iqr"], ms))
EOF
  exit 0
fi
"$build/bench/bench_container" \
  --benchmark_repetitions="$reps" \
  --benchmark_report_aggregates_only=true \
  --benchmark_enable_random_interleaving=true \
  --benchmark_out="$out" --benchmark_out_format=json \
  "$@" >&2
/usr/bin/python3 "$here/report.py" "$out"
