#!/bin/sh
# abi_check.sh check|update|selftest LIBRARY HEADER BASELINE
#
# The C ABI's layout, pinned with libabigail (Debian's abigail-tools): the functions LIBRARY exports
# under the mpk_ prefix, with every type reachable from them as declared in HEADER (struct sizes and
# member offsets, enum values, parameter and return types), written by abidw and compared by abidiff
# against the BASELINE in the repository.
#   check     abidiff BASELINE LIBRARY; any change but added functions fails (exit 1) with the report.
#             Appending a field to a versioned option struct is a reviewed change: run `update`.
#   update    rewrite BASELINE from LIBRARY (after such a review).
#   selftest  prove that the check can fail: a copy of BASELINE whose first struct member is moved
#             by 8 bytes must be reported as an ABI change.
# The opaque handles (mpk_model, mpk_writer, mpk_runtime) are suppressed: their layout is private.
# Needs debug information (-g: RelWithDebInfo and Debug builds have it).
set -eu
mode=$1 lib=$2 header=$3 baseline=$4
here=$(cd "$(dirname "$0")" && pwd)
supp=$here/abi.suppr
list=$(mktemp)
tmp=$(mktemp)
trap 'rm -f "$list" "$tmp" "$tmp.bad"' EXIT
{
  echo "[abi_whitelist]"
  nm -D --defined-only "$lib" | awk 'NF >= 3 { print $3 }' | sed 's/@.*//' | grep '^mpk_' | sort -u | sed 's/^/  /'
} > "$list"
dump() {
  abidw --header-file "$header" --exported-interfaces-only -w "$list" \
        --suppressions "$supp" --no-corpus-path --no-comp-dir-path --no-show-locs "$lib" > "$1"
}
case "$mode" in
  update)
    dump "$baseline"
    echo "wrote $baseline ($(grep -c '<elf-symbol' "$baseline") functions)"
    ;;
  check|selftest)
    [ -f "$baseline" ] || { echo "no baseline $baseline: run $0 update" >&2; exit 1; }
    against=$baseline
    if [ "$mode" = selftest ]; then
      # Move the second member of mpk_tensor_info (its dtype) by 32 bits.
      awk '/<class-decl name=.mpk_tensor_info. / { in_t = 1 } in_t && /<data-member/ { n++ }
           in_t && n == 2 && !done && /layout-offset-in-bits=/ { sub(/layout-offset-in-bits=.[0-9]+./, "layout-offset-in-bits=\x27" 96 "\x27"); done = 1 }
           { print }' "$baseline" > "$tmp.bad"
      if cmp -s "$baseline" "$tmp.bad"; then echo "selftest: could not alter the baseline" >&2; exit 1; fi
      against=$tmp.bad
    fi
    dump "$tmp"
    set +e
    abidiff --no-added-syms --suppressions "$supp" "$against" "$tmp" > "$tmp.report" 2>&1
    rc=$?
    set -e
    if [ "$mode" = selftest ]; then
      rm -f "$tmp.report"
      [ $rc -ne 0 ] || { echo "selftest: a moved struct member was not reported" >&2; exit 1; }
      echo "selftest: a moved struct member is reported (abidiff exit $rc)"
      exit 0
    fi
    if [ $rc -ne 0 ]; then
      cat "$tmp.report"
      rm -f "$tmp.report"
      echo "C ABI of $(basename "$lib") differs from $baseline (abidiff exit $rc). If the change is" >&2
      echo "intended (a field appended to a versioned struct), run: $0 update $lib $header $baseline" >&2
      exit 1
    fi
    rm -f "$tmp.report"
    echo "C ABI of $(basename "$lib") matches $(basename "$baseline"): $(grep -c '<elf-symbol' "$baseline") functions"
    ;;
  *) echo "usage: $0 check|update|selftest LIBRARY HEADER BASELINE" >&2; exit 2 ;;
esac
