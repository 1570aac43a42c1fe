#!/bin/sh
# run.sh BUILD_DIR SOURCE_DIR
#
# Installs the build into a temporary prefix and builds three consumers against it, as a user
# would, then runs them:
#   1. CMake: find_package(modelpack CONFIG REQUIRED) -> modelpack::modelpack (C++ and C programs)
#      and modelpack::modelpack_static (consumer/CMakeLists.txt);
#   2. pkg-config: cc main.c $(pkg-config --cflags --libs modelpack), after moving the installed
#      tree elsewhere: modelpack.pc is relocatable.
# Also checks that the prefix holds the public headers and no internal ones.
#
# Environment: CMAKE, CC, CXX, PKG_CONFIG (defaults: from PATH); MPK_SANITIZE_FLAGS, e.g.
# "-fsanitize=address,undefined" when the library was built with sanitizers (its consumers must
# link the same runtimes). Temporary files go under BUILD_DIR and are removed on exit.
set -eu

if [ $# -ne 2 ]; then
  echo "usage: $0 BUILD_DIR SOURCE_DIR" >&2
  exit 2
fi
build=$(cd "$1" && pwd)
src=$(cd "$2" && pwd)
CMAKE=${CMAKE:-cmake}
CC=${CC:-cc}
CXX=${CXX:-c++}
PKG_CONFIG=${PKG_CONFIG:-pkg-config}
san=${MPK_SANITIZE_FLAGS:-}

tmp=$(mktemp -d "$build/package-test.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
prefix=$tmp/prefix

step() { printf '\n== %s\n' "$*"; }
fail() { echo "FAIL: $*" >&2; exit 1; }

step "install into $prefix"
"$CMAKE" --install "$build" --prefix "$prefix" > "$tmp/install.log" 2>&1 ||
  { cat "$tmp/install.log"; fail "cmake --install"; }

# What a user gets.
for f in include/modelpack/modelpack.h include/modelpack/modelpack.hpp; do
  [ -f "$prefix/$f" ] || fail "$f is not installed"
done
config=$(find "$prefix" -name modelpackConfig.cmake | head -n 1)
[ -n "$config" ] || fail "modelpackConfig.cmake is not installed"
[ -n "$(find "$prefix" -name modelpackConfigVersion.cmake)" ] || fail "no modelpackConfigVersion.cmake"
pc=$(find "$prefix" -name modelpack.pc | head -n 1)
[ -n "$pc" ] || fail "modelpack.pc is not installed"
so=$(find "$prefix" -name 'libmodelpack.so.*' -type f | head -n 1)
[ -n "$so" ] || fail "libmodelpack.so.* is not installed"
libdir=$(dirname "$so")
[ -e "$libdir/libmodelpack.so" ] || fail "the libmodelpack.so development link is not installed"
[ -f "$libdir/libmodelpack.a" ] || fail "libmodelpack.a is not installed"
# Internal headers (lib/, generated FlatBuffers code) must not leak into the prefix.
extra=$(find "$prefix/include" -type f ! -path '*/modelpack/*.h' ! -path '*/modelpack/*.hpp' | head -n 5)
[ -z "$extra" ] || fail "unexpected files under include/: $extra"
leaked=$(grep -l -e 'flatbuffers' -e '"common.hpp"' -e 'modelpack_generated' "$prefix"/include/modelpack/* || true)
[ -z "$leaked" ] || fail "installed headers refer to internal headers: $leaked"
echo "installed: $(cd "$prefix" && find . -type f -o -type l | sort | tr '\n' ' ')"

step "CMake consumer (find_package)"
"$CMAKE" -S "$src/tests/package/consumer" -B "$tmp/cmake-build" \
  -DCMAKE_PREFIX_PATH="$prefix" -DCMAKE_FIND_PACKAGE_NO_PACKAGE_REGISTRY=ON \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_C_COMPILER="$CC" -DCMAKE_CXX_COMPILER="$CXX" \
  -DCMAKE_C_FLAGS="-Wall -Wextra -Werror $san" -DCMAKE_CXX_FLAGS="-Wall -Wextra -Werror $san" \
  -DCMAKE_EXE_LINKER_FLAGS="$san" > "$tmp/configure.log" 2>&1 ||
  { cat "$tmp/configure.log"; fail "configuring the consumer"; }
grep -q "modelpack_DIR:PATH=$prefix" "$tmp/cmake-build/CMakeCache.txt" ||
  fail "find_package found modelpack outside the temporary prefix: $(grep modelpack_DIR "$tmp/cmake-build/CMakeCache.txt")"
"$CMAKE" --build "$tmp/cmake-build" > "$tmp/build.log" 2>&1 ||
  { cat "$tmp/build.log"; fail "building the consumer"; }
for exe in consumer_cpp consumer_c consumer_static; do
  "$tmp/cmake-build/$exe" "$tmp/$exe.mpk" || fail "$exe"
done
# The static consumer must not need the shared library.
if command -v ldd > /dev/null 2>&1 && ldd "$tmp/cmake-build/consumer_static" | grep -q libmodelpack; then
  fail "consumer_static is linked against the shared libmodelpack"
fi

step "pkg-config consumer (C), after moving the installed tree"
# modelpack.pc finds its prefix from its own directory (${pcfiledir}): no --define-variable is
# needed, and it must still be right once the whole tree has moved somewhere else. An absolute
# configure-time prefix (/usr/local) fails the checks below.
moved=$tmp/moved-prefix
mv "$prefix" "$moved"
pcdir=$moved${pc#"$prefix"}
pcdir=$(dirname "$pcdir")
libdir=$moved${libdir#"$prefix"}
[ -f "$pcdir/modelpack.pc" ] || fail "modelpack.pc is not in $pcdir after the move"
# Only this .pc file, never one installed on the system; and no automatic relocation by the tool.
pc_opts=""
if "$PKG_CONFIG" --dont-define-prefix --version > /dev/null 2>&1; then
  pc_opts="--dont-define-prefix"
fi
pc_query() {
  # shellcheck disable=SC2086  # $pc_opts is empty or one option
  PKG_CONFIG_LIBDIR="$pcdir" PKG_CONFIG_PATH="" "$PKG_CONFIG" $pc_opts "$@"
}
flags=$(pc_query --cflags --libs modelpack) || fail "pkg-config --cflags --libs modelpack"
echo "pkg-config: $flags"
# Where pkg-config points must be, physically, the moved tree's include and lib directories.
real() { (cd "$1" 2> /dev/null && pwd -P) || echo "(missing: $1)"; }
want_inc=$(real "$moved/include")
want_lib=$(real "$libdir")
got_inc=$(real "$(pc_query --variable=includedir modelpack)")
got_lib=$(real "$(pc_query --variable=libdir modelpack)")
[ "$got_inc" = "$want_inc" ] || fail "includedir resolves to $got_inc, expected $want_inc"
[ "$got_lib" = "$want_lib" ] || fail "libdir resolves to $got_lib, expected $want_lib"
for f in $flags; do
  case "$f" in
    -I*) [ "$(real "${f#-I}")" = "$want_inc" ] || fail "$f is not $moved/include" ;;
    -L*) [ "$(real "${f#-L}")" = "$want_lib" ] || fail "$f is not $libdir" ;;
  esac
done
case "$flags" in
  *-I*) ;;
  *) fail "no -I in the pkg-config flags: $flags" ;;
esac
case "$flags" in
  *-L*) ;;
  *) fail "no -L in the pkg-config flags: $flags" ;;
esac
# shellcheck disable=SC2086  # $flags and $san are lists of words
"$CC" -std=c99 -Wall -Wextra -pedantic -Werror $san "$src/tests/package/consumer/main.c" $flags \
  -o "$tmp/consumer_pkgconfig" || fail "compiling main.c with pkg-config flags"
LD_LIBRARY_PATH="$libdir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" "$tmp/consumer_pkgconfig" "$tmp/pc.mpk" ||
  fail "consumer_pkgconfig"

step "OK"
