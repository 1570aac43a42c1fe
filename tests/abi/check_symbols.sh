#!/bin/sh
# check_symbols.sh LIBRARY LIST HEADER...
#
# Checks the dynamic symbol table of libmodelpack.so:
#  1. C symbols (mpk_*): the exported set, the set declared with MPK_API in the HEADERs
#     (modelpack.h, and later experimental.h) and the checked-in LIST must be identical. A symbol missing from the library is a declared
#     function nobody defined; one missing from the list is an unreviewed ABI addition; one in the
#     list but gone from the library is an ABI break (existing binaries stop loading).
#  2. Every other exported symbol must be C++ that demangles into namespace mpk (mpk::..., or the
#     typeinfo/vtable of an mpk:: class), and not into an internal namespace (mpk::detail,
#     mpk::capi; mpk::bridge is the reviewed exception: capi/capi_bridge.hpp, what libmodelpack_runtime's
#     C ABI needs from the core). Anything else (std:: template instances, FlatBuffers, xxHash, zstd, ...) leaking
#     from the library is an error.
#
# Policy: C++ symbols are checked by this namespace rule only, not against a list. The C ABI is
# the stable one (MPK_ABI_VERSION); the mangled names of the C++ API change with every signature
# and std:: implementation detail, so an exact list would churn with each C++ API change without
# protecting anyone: C++ users rebuild against the headers of the version they use.
#
# Environment: NM (default nm), CXXFILT (default c++filt).
set -eu

if [ $# -lt 3 ]; then
  echo "usage: $0 LIBRARY LIST HEADER..." >&2
  exit 2
fi
lib=$1
list=$2
shift 2
headers="$*"
NM=${NM:-nm}
CXXFILT=${CXXFILT:-c++filt}
here=$(cd "$(dirname "$0")" && pwd)

tmp=$(mktemp -d "${TMPDIR:-/tmp}/mpk-symbols.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

# Defined dynamic symbols, without version suffixes (name@@VERSION).
"$NM" -D --defined-only "$lib" | awk 'NF >= 3 { print $3 }' | sed 's/@.*//' | sort -u > "$tmp/all"
if [ ! -s "$tmp/all" ]; then
  echo "FAIL: no dynamic symbols found in $lib (is it a shared library?)" >&2
  exit 1
fi

grep '^mpk_' "$tmp/all" > "$tmp/c_exported" || true
# Declarations: 'MPK_API <return type> mpk_name(' on one line.
cat "$@" | grep '^MPK_API' | sed -n 's/^[^(]*[^a-zA-Z0-9_]\(mpk_[a-zA-Z0-9_]*\)(.*/\1/p' | sort -u > "$tmp/c_declared"
grep -v '^[[:space:]]*#' "$list" | grep -v '^[[:space:]]*$' | sort -u > "$tmp/c_listed"

status=0
report() {  # report TITLE FILE_A NAME_A FILE_B NAME_B
  if ! cmp -s "$2" "$4"; then
    echo "FAIL: $1"
    echo "--- $3"
    echo "+++ $5"
    diff "$2" "$4" | sed -n 's/^< /-  /p; s/^> /+  /p'
    echo
    status=1
  fi
}
report "the C symbols exported by the library differ from the checked-in list" \
  "$tmp/c_listed" "$list" "$tmp/c_exported" "$lib"
report "the C functions declared in the header differ from the checked-in list" \
  "$tmp/c_listed" "$list" "$tmp/c_declared" "$headers"

# C++: everything that is not mpk_* must demangle into namespace mpk.
grep -v '^mpk_' "$tmp/all" > "$tmp/other" || true
: > "$tmp/bad"
ncxx=0
while IFS= read -r sym; do
  case "$sym" in
    _Z*) ;;
    *) echo "$sym  (not a C++ symbol and not mpk_*)" >> "$tmp/bad"; continue ;;
  esac
  ncxx=$((ncxx + 1))
  name=$(printf '%s\n' "$sym" | "$CXXFILT")
  case "$name" in
    "mpk::detail::"* | "mpk::capi::"* | *" for mpk::detail::"* | *" for mpk::capi::"*)
      echo "$sym  ($name: internal namespace)" >> "$tmp/bad" ;;
    "mpk::"* | "typeinfo for mpk::"* | "typeinfo name for mpk::"* | "vtable for mpk::"*) ;;
    *) echo "$sym  ($name)" >> "$tmp/bad" ;;
  esac
done < "$tmp/other"
if [ -s "$tmp/bad" ]; then
  echo "FAIL: symbols exported outside the C ABI (mpk_*) and the C++ namespace mpk:"
  sed 's/^/  /' "$tmp/bad"
  echo "  Give them hidden visibility or fix cmake/modelpack.map."
  echo
  status=1
fi

if [ $status -ne 0 ]; then
  echo "If the C ABI change is intended (additions only, unless MPK_ABI_VERSION moves), update the"
  echo "list with:  $here/update_symbols.sh $lib"
  echo "and commit tests/abi/exported_symbols.txt with the change."
  exit 1
fi
echo "OK: $(wc -l < "$tmp/c_exported") C symbols match $list and $headers;" \
  "$ncxx C++ symbols, all in namespace mpk"
