#!/usr/bin/env bash
# ThreadSanitizer run of the concurrency tests (docs/SECURITY.md §7): every test case tagged
# [threads] - 8 threads reading and verifying one model, compressed tensors decoded from many threads
# through a cache too small to keep them, multi-threaded verification and patch application, the
# two-thread safetensors import pipeline, sessions on 4 threads sharing a graph and a kernel context,
# and 4 threads sharing one context's primitive cache while another drops and clears it.
#
# Usage: scripts/tsan.sh   (MPK_JOBS=N build parallelism, default 2; MPK_TSAN_BUILD, default build/tsan)
# oneDNN, OpenMP (libgomp), zstd, xxHash and htscodecs are not instrumented: tests/tsan.supp lists
# the reports inside them that TSan cannot judge (their own synchronization is invisible to it); a
# report with a frame of ours in it is never suppressed.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh test
jobs=${MPK_JOBS:-2}
build=${MPK_TSAN_BUILD:-build/tsan}

echo "== ThreadSanitizer build in $build"
# MPK_THREADS_TESTS_ONLY: the test binaries hold only the sources with [threads] cases (tests/CMakeLists.txt);
# -O1 as the ASan stage. Measured on the 2-core machine: 237 s -> 192 s for this script, 253 s before both.
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DMPK_SANITIZE=thread -DMPK_LARGE_TESTS=OFF \
  -DCMAKE_C_FLAGS_RELWITHDEBINFO="-O1 -g" -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -g" \
  -DMPK_BUILD_BENCH=OFF -DMPK_BUILD_EXAMPLES=OFF -DMPK_THREADS_TESTS_ONLY=ON >/dev/null
cmake --build "$build" -j"$jobs" --target mpk_tests mpk_convert_tests mpk_runtime_tests

export TSAN_OPTIONS="halt_on_error=1:second_deadlock_stack=1:suppressions=$PWD/tests/tsan.supp"
# One OpenMP thread per kernel call: the tests' own threads are what is under test, and libgomp's
# uninstrumented barriers would otherwise hide the ordering between a call's worker threads.
export OMP_NUM_THREADS=1
for t in mpk_tests convert/mpk_convert_tests runtime/mpk_runtime_tests; do
  bin="$build/tests/$t"
  [ -x "$bin" ] || bin="$build/tests/$(basename "$t")"
  echo "== $(basename "$t") [threads]"
  "$bin" "[threads]" --rng-seed 1
done
echo "== ThreadSanitizer: no data race in the [threads] tests"
