#!/usr/bin/env bash
# test_spec.sh - checks libmodelpack against docs/FORMAT.md through read_mpk.py, an independent
# reader written from that document alone.
#
# Usage: test_spec.sh FILE.mpk [MPK]     one file (e.g. written by make_sample)
#        test_spec.sh --crafted [MPK]    the hand-built files of craft.py
#
#   FILE.mpk   read with read_mpk.py (full verification) and, if FILE.lib.json sits next to it
#              (make_sample writes one: what libmodelpack reported), the two summaries must match.
#   MPK        the `mpk` CLI, optional. With it: `mpk inspect --json` must match read_mpk's summary,
#              `mpk verify` must pass, and differential.py damages FILE in ~1000-3000 ways and
#              requires both readers to give every variant the same status.
#   --patches DIR   apply_patch.py (a patch applier written from FORMAT.md 7.10) rebuilds the patch
#              samples make_sample writes into DIR.
#   --crafted  craft.py builds ~545 files (formats 1.0 to 1.4) with its own FlatBuffers encoder
#              (and, for 1.2, its own planes / rANS-Nx16 encoders) and checks that read_mpk (and the
#              CLI, if given) give each the status FORMAT.md predicts; files on which libmodelpack is
#              known to disagree with the document are listed as KNOWN, not failed.
#
# Needs Python 3 with the xxhash module (Debian: python3-xxhash), and for compressed files (format
# 1.2) and --crafted the zstandard module (Debian: python3-zstandard); $PYTHON overrides
# /usr/bin/python3. Exit status: 0 pass, 1 fail, 77 skipped (a module missing).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
py="${PYTHON:-/usr/bin/python3}"

if [ $# -lt 1 ] || [ $# -gt 2 ]; then
  echo "usage: $0 FILE.mpk [MPK] | $0 --crafted [MPK] | $0 --patches DIR" >&2
  exit 2
fi
if ! "$py" -c "import xxhash" 2>/dev/null; then
  echo "SKIP: $py cannot import xxhash (apt-get install python3-xxhash, or set PYTHON)"
  exit 77
fi
file="$1"
mpk="${2:-}"
# zstd chunks (format 1.2) are decoded with the zstandard module: needed for --crafted, and for a
# file that sets incompatible feature bit 0 (compressed-tensors).
needs_zstd=0
if [ "$file" = "--crafted" ] || [ "$file" = "--patches" ]; then
  needs_zstd=1
elif [ -f "$file" ] && "$py" -c 'import sys; b = open(sys.argv[1], "rb").read(24); sys.exit(0 if len(b) == 24 and b[16] & 1 else 1)' "$file"; then
  needs_zstd=1
fi
if [ "$needs_zstd" = 1 ] && ! "$py" -c "import zstandard" 2>/dev/null; then
  echo "SKIP: $py cannot import zstandard (apt-get install python3-zstandard, or set PYTHON)"
  exit 77
fi
if [ "$file" != "--patches" ] && [ -n "$mpk" ] && [ ! -x "$mpk" ]; then
  echo "FAIL: $mpk is not an executable" >&2
  exit 1
fi

if [ "$file" = "--crafted" ]; then
  exec "$py" "$here/craft.py" ${mpk:+"$mpk"}
fi

# --patches DIR: apply_patch.py, written from FORMAT.md 7.10 alone, must rebuild make_sample's patch
# samples (every operation, SUB_SORTED included) forward, and the two-way one in reverse too; the
# one-way one must not reverse.
if [ "$file" = "--patches" ]; then
  d="$mpk"
  out="$(mktemp)"
  trap 'rm -f "$out"' EXIT
  st=0
  run() {
    if "$py" "$here/apply_patch.py" "$@" >"$out" 2>&1; then echo "ok: apply_patch.py $* ($(tr '\n' ' ' <"$out"))"
    else echo "FAIL: apply_patch.py $*: $(cat "$out")"; st=1; fi
  }
  run "$d/patch_a.mpk" "$d/patch_oneway.mpkd" "$d/patch_b.mpk"
  grep -q "^SUB_SORTED: 5$" "$out" || { echo "FAIL: the one-way patch did not use SUB_SORTED on its 5 float tensors"; st=1; }
  grep -q "^resized sources: 2$" "$out" || { echo "FAIL: the one-way patch did not resize 2 sources"; st=1; }
  grep -q "^low-rank sources: 1$" "$out" || { echo "FAIL: the one-way patch did not predict 1 source by a low-rank product"; st=1; }
  run "$d/patch_a.mpk" "$d/patch_twoway.mpkd" "$d/patch_b.mpk"
  run "$d/patch_b.mpk" "$d/patch_twoway.mpkd" "$d/patch_a.mpk" --reverse
  grep -q "^SUB: " "$out" || { echo "FAIL: the two-way patch used no SUB"; st=1; }
  grep -q "^resized sources: 1$" "$out" || { echo "FAIL: the two-way patch's reverse did not resize the grown tensor's source"; st=1; }
  if "$py" "$here/apply_patch.py" "$d/patch_b.mpk" "$d/patch_oneway.mpkd" "$d/patch_a.mpk" --reverse >"$out" 2>&1; then
    echo "FAIL: the one-way patch applied in reverse"; st=1
  elif ! grep -q "is MISSING from this patch" "$out"; then
    echo "FAIL: the one-way patch in reverse failed for another reason: $(cat "$out")"; st=1
  else
    echo "ok: the one-way patch does not reverse ($(cat "$out"))"
  fi
  exit $st
fi

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
fails=0
pass() { echo "ok: $*"; }
failed() { echo "FAIL: $*"; fails=$((fails + 1)); }

# Compares two JSON summaries, ignoring the keys that differ by construction.
same_json() {
  "$py" - "$1" "$2" <<'EOF'
import json, sys
a, b = (json.load(open(p)) for p in sys.argv[1:3])
for d in (a, b):
    d.pop("file", None)
    d.pop("verified", None)
if a != b:
    for k in sorted(set(a) | set(b)):
        if a.get(k) != b.get(k):
            print(f"  {k}: {json.dumps(a.get(k))}\n  {' ' * len(k)}  {json.dumps(b.get(k))}")
    sys.exit(1)
EOF
}

if "$py" "$here/read_mpk.py" --verify full "$file" >"$tmp/py.json" 2>"$tmp/py.err"; then
  pass "read_mpk.py reads and fully verifies $file"
else
  failed "read_mpk.py refused $file: $(cat "$tmp/py.err")"
fi

lib_json="${file%.mpk}.lib.json"
if [ -f "$lib_json" ]; then
  if same_json "$lib_json" "$tmp/py.json"; then
    pass "read_mpk.py reports what libmodelpack reported ($lib_json)"
  else
    failed "read_mpk.py and libmodelpack ($lib_json) disagree"
  fi
fi

if [ -n "$mpk" ]; then
  if "$mpk" inspect --json "$file" >"$tmp/cli.json" 2>"$tmp/cli.err"; then
    if same_json "$tmp/cli.json" "$tmp/py.json"; then
      pass "read_mpk.py reports what \`mpk inspect --json\` reports"
    else
      failed "read_mpk.py and \`mpk inspect --json\` disagree"
    fi
  else
    failed "mpk inspect refused $file: $(cat "$tmp/cli.err")"
  fi
  if "$mpk" verify "$file" >/dev/null 2>"$tmp/verify.err"; then
    pass "mpk verify accepts $file"
  else
    failed "mpk verify refused $file: $(cat "$tmp/verify.err")"
  fi
  # MPK_SPEC_HEADER_MUTATIONS bounds the re-signed header flips (default 1000). The variants go to
  # `mpk verify --json` by batches of 128 (one process start each, slow for an instrumented mpk).
  if "$py" "$here/differential.py" "$file" "$mpk" --max-header-mutations "${MPK_SPEC_HEADER_MUTATIONS:-1000}" \
       >"$tmp/diff.out" 2>&1; then
    pass "differential: $(tail -n 1 "$tmp/diff.out")"
  else
    failed "differential: read_mpk.py and mpk disagree on damaged variants of $file:"
    cat "$tmp/diff.out"
  fi
fi

if [ "$fails" -gt 0 ]; then
  echo "$fails check(s) failed"
  exit 1
fi
echo "all checks passed"
