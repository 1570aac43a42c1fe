#!/usr/bin/env bash
# Builds bench_container (Release) and runs it: 5 repetitions, medians, repetitions of different
# benchmarks interleaved at random (the machine is shared; load drift then hits all alike), JSON out,
# then prints the Markdown report (ratios against the same-run baselines, targets pass/fail).
#
# Usage: bench/run.sh [extra Google Benchmark flags, e.g. --benchmark_filter='^open/']
# Environment: MPK_BENCH_BUILD (build dir, default <repo>/build-bench), MPK_BENCH_OUT (JSON file,
# default <build>/bench_container.json), MPK_BENCH_DIR (fixture dir root, default /tmp; needs ~3 GiB
# free), MPK_BENCH_REPS (default 5).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
build=${MPK_BENCH_BUILD:-$root/build-bench}
out=${MPK_BENCH_OUT:-$build/bench_container.json}
reps=${MPK_BENCH_REPS:-5}

"$root/scripts/deps.sh" test
cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release -DMPK_BUILD_BENCH=ON -DMPK_BUILD_TESTS=OFF \
  -DMPK_BUILD_TOOLS=OFF -DMPK_BUILD_EXAMPLES=OFF >/dev/null
cmake --build "$build" -j2 --target bench_container

load=$(cut -d' ' -f1 /proc/loadavg)
if awk -v l="$load" 'BEGIN { exit !(l > 0.7) }'; then
  echo "warning: load average is $load on $(nproc) CPUs; expect noisy figures (compare the same-run ratios)" >&2
fi
echo "== $(date -u +%FT%TZ) load $load; running bench_container ($reps repetitions) -> $out" >&2
"$build/bench/bench_container" \
  --benchmark_repetitions="$reps" \
  --benchmark_report_aggregates_only=true \
  --benchmark_enable_random_interleaving=true \
  --benchmark_out="$out" --benchmark_out_format=json \
  "$@" >&2
/usr/bin/python3 "$here/report.py" "$out"
