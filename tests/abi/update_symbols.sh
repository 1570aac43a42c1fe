#!/bin/sh
# update_symbols.sh [LIBRARY]
#
# Rewrites tests/abi/exported_symbols.txt from the C symbols (mpk_*) that LIBRARY exports
# (default: build/libmodelpack.so under the source tree). Review the diff before committing it:
# a removed line is an ABI break.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
lib=${1:-$here/../../build/libmodelpack.so}
NM=${NM:-nm}
list=$here/exported_symbols.txt
if [ ! -f "$lib" ]; then
  echo "usage: $0 [path/to/libmodelpack.so]   ($lib not found)" >&2
  exit 2
fi
{
  echo "# The C ABI of libmodelpack: every mpk_* symbol libmodelpack.so exports, sorted."
  echo "# Checked by tests/abi/check_symbols.sh against the library and include/modelpack/modelpack.h."
  echo "# Regenerate with tests/abi/update_symbols.sh; a removed line breaks the ABI."
  "$NM" -D --defined-only "$lib" | awk 'NF >= 3 { print $3 }' | sed 's/@.*//' | grep '^mpk_' | sort -u
} > "$list.tmp"
mv "$list.tmp" "$list"
echo "wrote $list ($(grep -c '^mpk_' "$list") symbols)"
git -C "$here" diff --stat -- exported_symbols.txt 2>/dev/null || true
