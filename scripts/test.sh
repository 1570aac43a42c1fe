#!/usr/bin/env bash
# The whole test suite, from a fresh Debian machine: installs missing packages, then
#   1. a RelWithDebInfo build: every test (unit, hostile, C ABI, CLI, spec, ABI, package, fuzz
#      corpus replays), incl. >4 GiB files;
#   2. an AddressSanitizer + UndefinedBehaviorSanitizer build: the same tests but the >4 GiB one;
#   3. a ThreadSanitizer build of the concurrency tests (scripts/tsan.sh);
#   4. libFuzzer (clang, ASan + UBSan) on every parser of untrusted bytes, MPK_FUZZ_SECONDS each
#      (default 45; scripts/fuzz.sh).
# Usage: scripts/test.sh            (MPK_JOBS=N to change build parallelism, default 2)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh test
jobs=${MPK_JOBS:-2}
start=$(date +%s)

echo "== [1/4] release build and tests"
cmake -S . -B build/release -DCMAKE_BUILD_TYPE=RelWithDebInfo -DMPK_BUILD_BENCH=ON >/dev/null
cmake --build build/release -j"$jobs"
ctest --test-dir build/release --output-on-failure -j"$jobs"

echo "== [2/4] AddressSanitizer + UndefinedBehaviorSanitizer build and tests"
cmake -S . -B build/asan -DCMAKE_BUILD_TYPE=Debug -DMPK_SANITIZE=address,undefined \
      -DMPK_LARGE_TESTS=OFF -DMPK_BUILD_BENCH=OFF >/dev/null
cmake --build build/asan -j"$jobs"
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:strict_string_checks=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
ctest --test-dir build/asan --output-on-failure -j"$jobs" -LE "package|crash"

echo "== [3/4] ThreadSanitizer"
scripts/tsan.sh

echo "== [4/4] fuzzing"
scripts/fuzz.sh "${MPK_FUZZ_SECONDS:-45}"

echo "== all tests passed in $(( $(date +%s) - start )) s"
