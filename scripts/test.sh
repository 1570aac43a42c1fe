#!/usr/bin/env bash
# The whole test suite, from a fresh Debian machine: installs missing packages, then
#   1. a RelWithDebInfo build (g++): every test (unit, hostile, C ABI, CLI, spec, ABI, package,
#      Python binding, fuzz corpus replays), incl. >4 GiB files;
#   2. a clang AddressSanitizer + UndefinedBehaviorSanitizer build with assertions on (-O1): the
#      same tests but the >4 GiB, package and crash-safety ones (the fuzz targets are libFuzzer
#      binaries here and replay their corpora under ctest too);
#   3. a ThreadSanitizer build of the concurrency tests (scripts/tsan.sh);
#   4. libFuzzer on every parser of untrusted bytes, reusing build 2, MPK_FUZZ_SECONDS each
#      (default 60, one target per core at a time; scripts/fuzz.sh; BENCHMARKS.md has the longer runs).
# Usage: scripts/test.sh            (MPK_JOBS=N to change build parallelism, default 2)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh test
jobs=${MPK_JOBS:-2}
start=$(date +%s)

stage_times=()
echo "== [1/4] release build and tests"
t=$(date +%s)
cmake -S . -B build/release -DCMAKE_BUILD_TYPE=RelWithDebInfo -DMPK_BUILD_BENCH=ON >/dev/null
cmake --build build/release -j"$jobs"
ctest --test-dir build/release --output-on-failure -j"$jobs"
stage_times+=("release $(( $(date +%s) - t ))")

echo "== [2/4] AddressSanitizer + UndefinedBehaviorSanitizer build (clang, libFuzzer targets) and tests"
t=$(date +%s)
# An older checkout configured build/asan with g++; a compiler change needs a fresh cache.
if [ -f build/asan/CMakeCache.txt ] && ! grep -q '^CMAKE_CXX_COMPILER:.*clang' build/asan/CMakeCache.txt; then
  rm -rf build/asan
fi
CC=clang CXX=clang++ cmake -S . -B build/asan -DCMAKE_BUILD_TYPE=RelWithDebInfo \
      -DCMAKE_C_FLAGS_RELWITHDEBINFO="-O1 -g" -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -g" \
      -DMPK_SANITIZE=address,undefined -DMPK_FUZZ=ON \
      -DMPK_LARGE_TESTS=OFF -DMPK_BUILD_BENCH=OFF >/dev/null
cmake --build build/asan -j"$jobs"
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:strict_string_checks=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
ctest --test-dir build/asan --output-on-failure -j"$jobs" -LE "package|crash"
# Both compilers must write the same bytes for the same model (tests/spec/make_sample's files).
if ! diff <(cd build/release/tests/spec && sha256sum -- *.mpk) <(cd build/asan/tests/spec && sha256sum -- *.mpk); then
  echo "the g++ and clang builds wrote different bytes for the same samples (above)" >&2
  exit 1
fi
stage_times+=("asan $(( $(date +%s) - t ))")

echo "== [3/4] ThreadSanitizer"
t=$(date +%s)
scripts/tsan.sh
stage_times+=("tsan $(( $(date +%s) - t ))")

echo "== [4/4] fuzzing"
t=$(date +%s)
# 45 s per target (was 60): the suite stays under its 25 minutes on this host's slower hours (1,503 s
# at 60 s on 2026-12-06); the long runs of BENCHMARKS.md "Fuzzing" are where depth comes from.
MPK_FUZZ_BUILD=build/asan scripts/fuzz.sh "${MPK_FUZZ_SECONDS:-45}"
stage_times+=("fuzz $(( $(date +%s) - t ))")

echo "== all tests passed in $(( $(date +%s) - start )) s (stages, s: ${stage_times[*]})"
