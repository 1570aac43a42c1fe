#!/usr/bin/env bash
# The issue-4 "done" check on a real model, side by side with the zstd CLI on the same bytes:
# trained weights (bench/make_weights.py: a small GPT trained briefly on CPU) -> a bf16 (and an f32)
# safetensors file -> mpk convert -> mpk compress -> mpk verify --mode full -> every tensor read back
# and compared -> sizes and times beside `zstd -3` and `zstd -19 -T1` of the same safetensors file.
#
# Usage: bench/compress_model.sh [BUILD_DIR]   (default build-bench-codec; builds the mpk CLI there)
# Environment: MPK_BENCH_WEIGHTS (default /tmp/mpk_weights.f32, made when missing), MPK_BENCH_DIR (/tmp).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
build=${1:-$root/build-bench-codec}
weights=${MPK_BENCH_WEIGHTS:-/tmp/mpk_weights.f32}
"$root/scripts/deps.sh" test >/dev/null
command -v zstd >/dev/null || { echo "compress_model: the zstd CLI is missing (apt-get install zstd)" >&2; exit 2; }
cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release -DMPK_BUILD_TOOLS=ON >/dev/null
cmake --build "$build" -j2 --target mpk >&2
mpk=$build/tools/mpk
[ -s "$weights" ] || /usr/bin/python3 "$here/make_weights.py" --out "$weights" >&2
work=$(mktemp -d "${MPK_BENCH_DIR:-/tmp}/mpk-compress-XXXXXX")
trap 'rm -rf "$work"' EXIT
/usr/bin/python3 - "$weights" "$work" <<'PY'
import json, struct, sys
import numpy as np
blob, work = sys.argv[1], sys.argv[2]
index = json.load(open(blob + ".json"))
raw = np.fromfile(blob, dtype="<f4")
def write(path, dtype_name, conv):
    header, datas, off = {}, [], 0
    for t in index["tensors"]:
        a = raw[t["offset"] // 4:(t["offset"] + t["bytes"]) // 4]
        b = conv(a).tobytes()
        header[t["name"]] = {"dtype": dtype_name, "shape": t["shape"], "data_offsets": [off, off + len(b)]}
        datas.append(b)
        off += len(b)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h)
        for b in datas:
            f.write(b)
def bf16(a):  # round to nearest even, as torch does
    u = a.view("<u4").astype(np.uint64)
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype("<u2")
write(f"{work}/w.bf16.safetensors", "BF16", bf16)
write(f"{work}/w.f32.safetensors", "F32", lambda a: a)
PY
now() { date +%s.%N; }
printf '| weights | safetensors | mpk compress (ratio, s) | verify full | zstd -3 (ratio, s) | zstd -19 (ratio, s) | zstd -d (s) | all tensors bit-exact |\n|---|---:|---|---|---|---|---:|---|\n'
for dt in bf16 f32; do
  st=$work/w.$dt.safetensors
  "$mpk" convert "$st" "$work/w.$dt.mpk" --no-fsync >/dev/null
  t0=$(now); "$mpk" compress "$work/w.$dt.mpk" "$work/z.$dt.mpk" --no-fsync >/dev/null; t1=$(now)
  "$mpk" verify "$work/z.$dt.mpk" --mode full >/dev/null && ok=pass || ok=FAIL
  "$mpk" convert "$work/z.$dt.mpk" "$work/back.$dt.safetensors" --no-fsync >/dev/null
  # Every tensor (name, dtype, shape, bytes) of the round trip equals the original's.
  same=$(/usr/bin/python3 - "$st" "$work/back.$dt.safetensors" <<'PY'
import json, struct, sys
def load(path):
    b = open(path, "rb").read()
    n = struct.unpack_from("<Q", b)[0]
    h = json.loads(b[8:8 + n])
    h.pop("__metadata__", None)
    return {k: (v["dtype"], v["shape"], b[8 + n + v["data_offsets"][0]:8 + n + v["data_offsets"][1]]) for k, v in h.items()}
a, b = load(sys.argv[1]), load(sys.argv[2])
print(f"yes ({len(a)} tensors)" if a == b else "NO")
PY
)
  t2=$(now); zstd -q -3 -T1 -f "$st" -o "$work/st.3.zst"; t3=$(now)
  zstd -q -19 -T1 -f "$st" -o "$work/st.19.zst"; t4=$(now)
  zstd -q -d -f "$work/st.3.zst" -o "$work/st.d"; t5=$(now)
  size=$(stat -c %s "$st")
  tensors=$(/usr/bin/python3 -c "import json,subprocess,sys; j=json.loads(subprocess.run([sys.argv[1],'inspect','--json',sys.argv[2]],capture_output=True,text=True).stdout); print(j['tensor_bytes']['stored']/j['tensor_bytes']['decoded'])" "$mpk" "$work/z.$dt.mpk")
  awk -v dt="$dt" -v size="$size" -v z="$(stat -c %s "$work/z.$dt.mpk")" -v t="$tensors" \
      -v c=$(echo "$t1 - $t0" | bc) -v z3=$(stat -c %s "$work/st.3.zst") -v c3=$(echo "$t3 - $t2" | bc) \
      -v z19=$(stat -c %s "$work/st.19.zst") -v c19=$(echo "$t4 - $t3" | bc) -v d3=$(echo "$t5 - $t4" | bc) \
      -v ok="$ok" -v same="$same" 'BEGIN {
        printf "| %s | %.1f MiB | file %.3f (tensors %.3f), %.2f s | %s | %.3f, %.2f s | %.3f, %.1f s | %.2f | %s |\n",
          dt, size / 1048576, z / size, t, c, ok, z3 / size, c3, z19 / size, c19, d3, same }'
done
echo
echo "machine: $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg); mpk compress uses all cores, zstd -T1 one"
