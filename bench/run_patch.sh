#!/usr/bin/env bash
# Delta-patch benchmark (issue 5): builds mpk (Release, its own build directory), makes the trained model
# pairs if missing (bench/make_model_pairs.py train, ~6 min), converts them to .mpk, then for each pair
# base -> {ft,part,lora,vocab} x {f32,bf16} runs ours (`mpk diff`, `mpk patch`, --no-fsync; also --level 9 on ft)
# and the peers zstd -19 --long --patch-from, bsdiff and xdelta3 -9, one command at a time, each under
# /usr/bin/time -v (wall time, CPU time, peak RSS), checking every applied output against NEW with cmp.
# For part and lora it also builds the changed-tensors-alone references (a .mpk of only the tensors whose
# checksum differs; `mpk compress` and `mpk diff` of it at levels 3 and 19) and the patch's own overhead
# (file bytes - stored bytes of its payload tensors). With MPK_PATCH_BIG=1 it also makes a multi-GiB pair
# (bench/make_big_pair.py, numpy), and measures diff/patch peak RSS against the largest tensor and apply GB/s,
# then deletes those files. Writes a JSON file and prints Markdown tables on stdout (progress on stderr).
#
# Usage: bench/run_patch.sh
# Environment: MPK_BENCH_BUILD (build dir, default <repo>/build-pairs), MPK_PAIRS_DIR (trained pairs, default
# /tmp/pairs; *.safetensors made there when missing), MPK_PATCH_WORK (.mpk files, patches and outputs,
# default $MPK_PAIRS_DIR/patchbench), MPK_PATCH_OUT (JSON, default $MPK_PATCH_WORK/patch_bench.json),
# MPK_PATCH_PEERS (comma-separated subset of zstd,xdelta3,bsdiff; default all three; bsdiff takes minutes
# per pair and ~15x the file size in RAM), MPK_PATCH_REPS (runs of ours' diff and of every apply, median
# kept; default 3), MPK_PATCH_ONLY (only these pairs, e.g. ft.f32,lora.bf16), MPK_PATCH_PROTO=1 (also run
# make_model_pairs.py proto when proto.json is missing or older than the pairs: the prototype's best
# encoding becomes one more changed-tensors reference), MPK_PATCH_BIG=1 (the big pair), MPK_BIG_DIR
# (default /tmp/bigpair), MPK_BIG_ARGS (make_big_pair.py options; default 24 x 128 MiB + 4 x 32 MiB
# = 3.1 GiB per file; scaled down automatically when /tmp has under 20 GB free).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
build=${MPK_BENCH_BUILD:-$root/build-pairs}
pairs=${MPK_PAIRS_DIR:-/tmp/pairs}
work=${MPK_PATCH_WORK:-$pairs/patchbench}
out=${MPK_PATCH_OUT:-$work/patch_bench.json}
bigdir=${MPK_BIG_DIR:-/tmp/bigpair}
py=/usr/bin/python3
mpk=$build/tools/mpk

for t in zstd bsdiff bspatch xdelta3 cmp /usr/bin/time; do
  command -v "$t" >/dev/null || { echo "run_patch: $t is missing: apt-get install -y zstd bsdiff xdelta3 time" >&2; exit 1; }
done

echo "== building mpk in $build" >&2
cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release -DMPK_BUILD_TESTS=OFF -DMPK_BUILD_BENCH=OFF >/dev/null
cmake --build "$build" -j2 --target mpk >&2

mkdir -p "$pairs" "$work"
missing=0
for s in base ft part lora; do for d in f32 bf16; do [ -s "$pairs/$s.$d.safetensors" ] || missing=1; done; done
if [ $missing = 1 ]; then
  if ! $py -c 'import torch' 2>/dev/null; then
    echo "run_patch: python3-torch is missing: apt-get install -y python3-torch libopenblas0-pthread" >&2
    exit 1
  fi
  echo "== training the model pairs in $pairs (bench/make_model_pairs.py, ~8 min)" >&2
  $py "$here/make_model_pairs.py" train "$pairs" --threads 1 >&2
elif [ ! -s "$pairs/vocab.f32.safetensors" ] || [ ! -s "$pairs/vocab.bf16.safetensors" ]; then
  echo "== the vocab pair from the existing base (make_model_pairs.py train --only vocab, ~2.5 min)" >&2
  $py "$here/make_model_pairs.py" train "$pairs" --threads 1 --only vocab >&2
fi
if [ "${MPK_PATCH_PROTO:-0}" = 1 ] && { [ ! -s "$pairs/proto.json" ] || [ -n "$(find "$pairs" -name '*.safetensors' -newer "$pairs/proto.json")" ]; }; then
  echo "== prototype encodings (make_model_pairs.py proto, ~1.5 min)" >&2
  # proto reads OUTDIR/*.mpk: it needs the converted files beside the safetensors
  for f in "$pairs"/*.safetensors; do "$mpk" convert "$f" "${f%.safetensors}.mpk" --no-fsync >/dev/null; done
  $py "$here/make_model_pairs.py" proto "$pairs" >&2
fi

echo "== converting the pairs to .mpk in $work" >&2
for f in "$pairs"/*.safetensors; do
  b=$(basename "$f" .safetensors)
  "$mpk" convert "$f" "$work/$b.mpk" --no-fsync >/dev/null
done

rm -f "$out"
load0=$(cut -d' ' -f1-3 /proc/loadavg)
start=$(date +%s)
echo "== $(date -u +%FT%TZ) load $load0; pairs -> $out" >&2
$py "$here/patch_bench.py" pairs "$out" "$mpk" "$pairs" "$work"

if [ "${MPK_PATCH_BIG:-0}" = 1 ]; then
  avail=$(df -B1 --output=avail "$(dirname "$bigdir")" | tail -1)
  args=${MPK_BIG_ARGS:-}
  # 2 safetensors + 2 .mpk + patch + output = about 5.5x one file while both .mpk exist; needs ~18 GB at 3.1 GiB
  if [ -z "$args" ] && [ "$avail" -lt 20000000000 ]; then
    layers=$(( avail / 6 / 134217728 - 1 ))
    [ "$layers" -ge 4 ] || { echo "run_patch: only $avail B free: not enough for the big pair" >&2; exit 1; }
    [ "$layers" -lt 24 ] || layers=24
    args="--layers $layers"
    echo "== only $((avail / 1000000000)) GB free: big pair scaled down to $layers x 128 MiB" >&2
  fi
  mkdir -p "$bigdir"
  trap 'rm -f "$bigdir"/big_base.* "$bigdir"/big_ft.* "$bigdir"/big.mpkp "$bigdir"/big_out.mpk* ; rmdir "$bigdir" 2>/dev/null || true' EXIT
  echo "== $(date -u +%FT%TZ) making the big pair in $bigdir (make_big_pair.py $args)" >&2
  gen=$($py "$here/make_big_pair.py" "$bigdir" $args)
  echo "$gen" >&2
  for s in big_base big_ft; do
    /usr/bin/time -f "convert $s: %e s, %M KiB peak RSS" "$mpk" convert "$bigdir/$s.safetensors" "$bigdir/$s.mpk" --no-fsync >/dev/null
    rm -f "$bigdir/$s.safetensors"
  done
  sync  # the converted files' dirty pages go to disk before the timed runs, not during them
  echo "== $(date -u +%FT%TZ) load $(cut -d' ' -f1-3 /proc/loadavg); big pair: diff and patch" >&2
  $py "$here/patch_bench.py" big "$out" "$mpk" "$bigdir" "$gen"
fi

load1=$(cut -d' ' -f1-3 /proc/loadavg)
echo "== took $(($(date +%s) - start)) s; load average before: $load0, after: $load1" >&2
$py "$here/patch_bench.py" report "$out"
