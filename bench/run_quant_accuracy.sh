#!/usr/bin/env bash
# Accuracy of quantized weights on a small real model (issue 6): trains the digits MLP of the demo
# (examples/demo/train_digits.py: NumPy, scikit-learn's bundled 8x8 digits, a few seconds), packs it,
# quantizes its weights to int8 (per channel), int8-g32/g64/g128, fp16 and bf16 with `mpk quantize`
# (the test set stays f32: --exclude '^data/'), and runs every file through the runtime's kernels with
# bench/quant_accuracy. Prints a Markdown table; then the same on the CPU oneDNN sees with
# ONEDNN_MAX_CPU_ISA=AVX2 (no VNNI, no bf16: the fallback paths).
#
# Usage: bench/run_quant_accuracy.sh     (MPK_BENCH_BUILD: build dir, default <repo>/build-bench;
#                                         MPK_ACC_WORK: work dir, default /tmp/mpk-quant-accuracy)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
build=${MPK_BENCH_BUILD:-$root/build-bench}
work=${MPK_ACC_WORK:-/tmp/mpk-quant-accuracy}
py=/usr/bin/python3

echo "== building mpk and quant_accuracy in $build" >&2
cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release -DMPK_BUILD_TESTS=OFF -DMPK_BUILD_BENCH=ON >/dev/null
cmake --build "$build" -j2 --target mpk quant_accuracy >/dev/null
mpk=$build/tools/mpk
rm -rf "$work"
mkdir -p "$work"
"$py" "$root/examples/demo/train_digits.py" train "$work" >&2
"$mpk" pack "$work/npy" -o "$work/f32.mpk" --no-fsync >/dev/null
files=("$work/f32.mpk")
for t in int8 int8-g32 int8-g64 int8-g128 fp16 bf16; do
  "$mpk" quantize "$work/f32.mpk" "$work/$t.mpk" --to "$t" --exclude '^data/' --no-fsync >&2
  files+=("$work/$t.mpk")
done
echo "### $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) vCPU, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
echo
"$build/bench/quant_accuracy" "${files[@]}"
echo
echo "### The same with ONEDNN_MAX_CPU_ISA=AVX2 (int8 activations in 7 bits, bf16 widened to f32)"
echo
ONEDNN_MAX_CPU_ISA=AVX2 "$build/bench/quant_accuracy" "${files[@]}"
