#!/usr/bin/env bash
# Fuzzes every parser of untrusted bytes (tests/fuzz, docs/SECURITY.md "Fuzzing") with libFuzzer
# under AddressSanitizer + UndefinedBehaviorSanitizer, each for a bounded time, and prints per
# target the executions, their rate, the edges covered and the corpus size.
#
# Usage: scripts/fuzz.sh [SECONDS] [TARGET...]
#   SECONDS  per target (default 60; MPK_FUZZ_SECONDS overrides the default)
#   TARGET   mpk safetensors gguf npy npz patch chunk graph (default: all)
# Environment: MPK_JOBS (build parallelism, default 2), MPK_FUZZ_PARALLEL (targets fuzzed at once,
#   default the number of CPUs), MPK_FUZZ_BUILD (default build/fuzz; a build
#   already configured with MPK_FUZZ=ON is used as it is),
#   MPK_FUZZ_RUNS=N (stop each target after N executions instead of after SECONDS; the long run of
#   BENCHMARKS.md used MPK_FUZZ_RUNS=10000000).
# Exit status 1 when a target crashed, leaked or tripped a sanitizer: its input is kept under
# BUILD/fuzz-artifacts/TARGET/ and printed in hex; add it to tests/fuzz/regressions/TARGET/ with the
# fix, so that every later ctest run replays it.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh test
seconds=${1:-${MPK_FUZZ_SECONDS:-60}}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(mpk safetensors gguf npy npz patch chunk graph)
build=${MPK_FUZZ_BUILD:-build/fuzz}
jobs=${MPK_JOBS:-2}

echo "== libFuzzer build (clang, ASan + UBSan) in $build"
# A build already configured for fuzzing (scripts/test.sh's ASan stage) is used as it is.
if ! grep -qs '^MPK_FUZZ:BOOL=ON' "$build/CMakeCache.txt"; then
  CC=clang CXX=clang++ cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DMPK_SANITIZE=address,undefined \
    -DMPK_FUZZ=ON -DMPK_LARGE_TESTS=OFF -DMPK_BUILD_BENCH=OFF -DMPK_BUILD_EXAMPLES=OFF >/dev/null
fi
cmake --build "$build" -j"$jobs" --target fuzz_targets

export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:allocator_may_return_null=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
# One target per core at a time (MPK_FUZZ_PARALLEL, default: the number of CPUs): each libFuzzer
# process is single-threaded, so on CI's 2 cores two targets of 60 s take the wall time one took.
parallel=${MPK_FUZZ_PARALLEL:-$(nproc)}
out="$build/fuzz-results"
rm -rf "$out"
mkdir -p "$out"

fuzz_one() {  # TARGET: runs it, writes $out/TARGET (the summary line) and $out/TARGET.failed
  local t=$1 bin="$build/tests/fuzz/fuzz_$1" work art log status
  work=$(mktemp -d)
  art="$build/fuzz-artifacts/$t"
  mkdir -p "$art"
  local limit=(-max_total_time="$seconds")
  [ -n "${MPK_FUZZ_RUNS:-}" ] && limit=(-runs="$MPK_FUZZ_RUNS")
  log="$build/fuzz-$t.log"
  # New inputs go to $work (a scratch corpus); the committed seeds are read only.
  if "$bin" "${limit[@]}" -rss_limit_mb=2560 -timeout=25 -max_len=65536 -print_final_stats=1 \
       -artifact_prefix="$art/" "$work" "tests/fuzz/corpus/$t" \
       $( [ -d "tests/fuzz/regressions/$t" ] && echo "tests/fuzz/regressions/$t" ) >"$log" 2>&1; then
    status=ok
  else
    status=FAILED
    {
      echo "== fuzz_$t FAILED, end of $log:"
      tail -n 60 "$log"
      for f in "$art"/*; do
        [ -f "$f" ] || continue
        echo "-- input $f ($(stat -c %s "$f") bytes), first 512 bytes:"
        head -c 512 "$f" | od -A x -t x1z | head -n 40
      done
    } >"$out/$t.failed"
  fi
  local execs rate cov ft corp
  execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | tail -n 1 | grep -o '[0-9]*$' || true)
  rate=$(grep -o 'stat::average_exec_per_sec: *[0-9]*' "$log" | tail -n 1 | grep -o '[0-9]*$' || true)
  cov=$(grep -o 'cov: [0-9]*' "$log" | tail -n 1 | grep -o '[0-9]*$' || true)
  ft=$(grep -o 'ft: [0-9]*' "$log" | tail -n 1 | grep -o '[0-9]*$' || true)
  corp=$(grep -o 'corp: [0-9]*' "$log" | tail -n 1 | grep -o '[0-9]*$' || true)
  printf '%-12s %-6s %12s %10s %8s %8s %6s\n' "$t" "$status" "${execs:-?}" "${rate:-?}" "${cov:-?}" \
    "${ft:-?}" "${corp:-?}" >"$out/$t"
  rm -rf "$work"
  echo "== fuzz_$t: $status"
}

for t in "${targets[@]}"; do
  [ -x "$build/tests/fuzz/fuzz_$t" ] || { echo "no fuzz target '$t'" >&2; exit 2; }
done
echo "== fuzzing ${#targets[@]} targets, $parallel at a time, $( [ -n "${MPK_FUZZ_RUNS:-}" ] && echo "$MPK_FUZZ_RUNS runs" || echo "$seconds s" ) each"
running=0
for t in "${targets[@]}"; do
  if [ "$running" -ge "$parallel" ]; then
    wait -n || true
    running=$((running - 1))
  fi
  echo "== fuzz_$t started"
  fuzz_one "$t" &
  running=$((running + 1))
done
wait || true

failed=()
for t in "${targets[@]}"; do
  if [ -f "$out/$t.failed" ] || [ ! -f "$out/$t" ]; then
    failed+=("$t")
    cat "$out/$t.failed" 2>/dev/null || echo "fuzz_$t left no result"
  fi
done

echo "== fuzzing summary ($(nproc) CPUs, $(date -u +%Y-%m-%dT%H:%MZ))"
printf '%-12s %-6s %12s %10s %8s %8s %6s\n' target status execs "execs/s" "cov" "ft" corpus
for t in "${targets[@]}"; do cat "$out/$t" 2>/dev/null || true; done
if [ ${#failed[@]} -gt 0 ]; then
  echo "FAILED: ${failed[*]} (inputs under $build/fuzz-artifacts/)"
  exit 1
fi
