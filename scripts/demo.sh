#!/usr/bin/env bash
# The modelpack demo, in one command on a fresh Debian machine:   scripts/demo.sh
#
# Installs missing Debian packages (scripts/deps.sh demo), builds the `mpk` tool (Release, into
# build-demo/), trains a small real model (an MLP on scikit-learn's bundled digits, plain NumPy, a
# few seconds), saves it as .npy files, then packs, inspects, verifies and extracts it with mpk and
# checks that the extracted tensors equal the originals and give the same test accuracy. Then
# (examples/demo/walkthrough.py) the runtime on two models trained by PyTorch (tests/fixtures/runtime):
# convert with their graph, quantize to bf16/fp16/int8, a table of size, open time, first-inference
# time and accuracy / held-out loss; generated text; a fine-tuned MLP shipped as a patch, applied,
# checked byte for byte, run and rolled back.
# Everything it writes goes to out/demo/ (git-ignored); it is recreated on each run.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
out=out/demo
build=build-demo
py=/usr/bin/python3   # Debian's python3 (with python3-numpy and python3-sklearn)

step() { printf '\n== %s\n' "$*"; }
ms_since() { # milliseconds since a $EPOCHREALTIME value
  local now=$EPOCHREALTIME
  awk -v a="$1" -v b="$now" 'BEGIN { printf "%.0f", (b - a) * 1000 }'
}
timed() { # timed LABEL CMD...: runs CMD, prints its output indented, records "LABEL  N ms"
  local label=$1; shift
  local t0=$EPOCHREALTIME
  "$@" 2>&1 | sed 's/^/   /'
  local ms; ms=$(ms_since "$t0")
  timings+=("$(printf '%-28s %6s ms' "$label" "$ms")")
}
timings=()

step "1/7 dependencies (scripts/deps.sh demo)"
scripts/deps.sh demo
echo "   ok"

step "2/7 build mpk (Release, $build/, -j2)"
t0=$EPOCHREALTIME
log="$build/demo-build.log"
mkdir -p "$build"
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release \
  -DMPK_BUILD_TESTS=OFF -DMPK_BUILD_BENCH=OFF -DMPK_BUILD_EXAMPLES=OFF >"$log" 2>&1 || { cat "$log"; exit 1; }
cmake --build "$build" -j2 --target mpk >>"$log" 2>&1 || { tail -50 "$log"; exit 1; }
mpk="$root/$build/tools/mpk"
echo "   built $build/tools/mpk in $(ms_since "$t0") ms (log: $log)"

rm -rf "$out"
mkdir -p "$out"

step "3/7 train a digit classifier with NumPy, save it as .npy files"
t0=$EPOCHREALTIME
"$py" examples/demo/train_digits.py train "$out"
timings+=("$(printf '%-28s %6s ms' "train + save .npy" "$(ms_since "$t0")")")
mapfile -t meta <"$out/meta.args"

step "4/7 mpk pack $out/npy -o $out/digits.mpk (with metadata)"
timed "mpk pack" "$mpk" pack "$out/npy" -o "$out/digits.mpk" "${meta[@]}"
npy_bytes=$(find "$out/npy" -name '*.npy' -printf '%s\n' | awk '{ s += $1 } END { print s }')
npy_files=$(find "$out/npy" -name '*.npy' | wc -l)
mpk_bytes=$(stat -c %s "$out/digits.mpk")

step "5/7 mpk inspect, mpk verify, mpk compress"
timed "mpk inspect (open + print)" "$mpk" inspect "$out/digits.mpk"
timed "mpk verify (full)" "$mpk" verify "$out/digits.mpk"
timed "mpk compress" "$mpk" compress "$out/digits.mpk" "$out/digits.z.mpk"
timed "mpk verify (compressed)" "$mpk" verify --mode full "$out/digits.z.mpk"
z_bytes=$(stat -c %s "$out/digits.z.mpk")

step "6/7 mpk extract (from the compressed file), compare with the originals, re-run inference"
mkdir -p "$out/extracted/model/fc1" "$out/extracted/model/fc2" "$out/extracted/data"
timed "mpk extract model/fc1/weight" \
  "$mpk" extract "$out/digits.z.mpk" model/fc1/weight -o "$out/extracted/model/fc1/weight.npy"
# The other tensors, quietly.
for name in model/fc1/bias model/fc2/weight model/fc2/bias data/test_x data/test_y data/label_names; do
  "$mpk" extract "$out/digits.z.mpk" "$name" -o "$out/extracted/$name.npy" >/dev/null
done
echo "   (extracted the other 6 tensors the same way)"
"$py" examples/demo/train_digits.py check "$out/npy" "$out/extracted"

step "7/7 the runtime: models trained by PyTorch, in every dtype, then an update shipped as a patch"
"$py" examples/demo/walkthrough.py "$mpk" "$out/runtime"

step "summary"
printf '   %-28s %9s bytes in %d files\n' ".npy files" "$npy_bytes" "$npy_files"
printf '   %-28s %9s bytes in 1 file (%s)\n' ".mpk file" "$mpk_bytes" "$out/digits.mpk"
printf '   %-28s %9s bytes in 1 file (%s)\n' ".mpk file, compressed" "$z_bytes" "$out/digits.z.mpk"
for t in "${timings[@]}"; do echo "   $t"; done
echo
echo "   try: $build/tools/mpk inspect --json $out/digits.mpk"
