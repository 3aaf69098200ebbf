#!/usr/bin/env bash
# check-install.sh — installs a built authd tree to a temporary prefix,
# moves that prefix elsewhere (the pkg-config and CMake files must not
# remember where they were installed), and builds tests/install/consumer/consumer.c
# against it four ways:
#
#   consumer_pc_shared     cc + pkg-config --cflags --libs authd-client
#   consumer_pc_static     cc + pkg-config --static (libauthd-client.a)
#   consumer_cmake_shared  find_package(authd-client CONFIG): authd::client
#   consumer_cmake_static  the same: authd::client_static
#
#   tests/install/check-install.sh BUILD_DIR OUT_DIR [EXTRA_CFLAGS]
#
# OUT_DIR/prefix is the moved install tree, OUT_DIR/bin the four programs
# (the ctest integration.install then runs them against authd). EXTRA_CFLAGS
# (e.g. the sanitizer flags of the build) go to every compile and link.
# Exits non-zero, with the failing command's output, at the first failure.
set -euo pipefail
here=$(cd "$(dirname "$0")/consumer" && pwd)
build=$(cd "$1" && pwd)
out=$2
extra=${3:-}
cc=${CC:-cc}

rm -rf "$out"
mkdir -p "$out/bin"
out=$(cd "$out" && pwd)
cmake --install "$build" --prefix "$out/staging" >"$out/install.log"
mv "$out/staging" "$out/prefix"
prefix=$out/prefix

# Everything the package promises is there.
for f in bin/authd bin/authctl bin/authbench bin/authd-fsck include/authd/client.h include/authd/guard.h \
    include/authd/client_rpc.h include/authd/v1/auth.pb-c.h include/authd/v1/envelope.pb-c.h \
    share/authd/proto/authd/v1/auth.proto share/authd/proto/authd/v1/envelope.proto \
    share/man/man1/authd.1 share/man/man1/authctl.1 share/man/man1/authbench.1; do
    [ -e "$prefix/$f" ] || { echo "check-install: $f is not installed" >&2; exit 1; }
done
pc=$(find "$prefix" -name authd-client.pc | head -1)
[ -n "$pc" ] || { echo "check-install: no authd-client.pc" >&2; exit 1; }
libdir=$(dirname "$(dirname "$pc")")
for f in libauthd-client.a libauthd-client.so.0; do
    [ -e "$libdir/$f" ] || { echo "check-install: $libdir/$f is not installed" >&2; exit 1; }
done
soname=$(objdump -p "$libdir/libauthd-client.so" | awk '$1 == "SONAME" { print $2 }')
[ "$soname" = libauthd-client.so.0 ] || { echo "check-install: SONAME is '$soname'" >&2; exit 1; }

# pkg-config, from the moved prefix: the paths must point into it.
export PKG_CONFIG_PATH=$(dirname "$pc")
inc=$(pkg-config --variable=includedir authd-client)
[ "$(cd "$inc" && pwd)" = "$prefix/include" ] || {
    echo "check-install: pkg-config includedir $inc is not $prefix/include" >&2
    exit 1
}
# shellcheck disable=SC2046,SC2086 # word splitting of compiler flags is meant
$cc $extra -o "$out/bin/consumer_pc_shared" "$here/consumer.c" \
    $(pkg-config --cflags --libs authd-client) -Wl,-rpath,"$libdir"
# Static: the archive, then what pkg-config --static says it needs.
static_libs=$(pkg-config --static --libs authd-client)
static_libs=${static_libs/-lauthd-client/-l:libauthd-client.a}
# shellcheck disable=SC2046,SC2086
$cc $extra -o "$out/bin/consumer_pc_static" "$here/consumer.c" \
    $(pkg-config --cflags authd-client) $static_libs
if objdump -p "$out/bin/consumer_pc_static" | grep -q 'NEEDED.*libauthd-client'; then
    echo "check-install: consumer_pc_static links the shared library" >&2
    exit 1
fi

# find_package, from the moved prefix.
cmake -S "$here" -B "$out/cmake-build" -DCMAKE_PREFIX_PATH="$prefix" \
    -DCMAKE_C_FLAGS="$extra" -DCMAKE_EXE_LINKER_FLAGS="$extra" >"$out/cmake.log"
cmake --build "$out/cmake-build" >>"$out/cmake.log"
cp "$out/cmake-build/consumer_cmake_shared" "$out/cmake-build/consumer_cmake_static" "$out/bin/"
if objdump -p "$out/bin/consumer_cmake_static" | grep -q 'NEEDED.*libauthd-client'; then
    echo "check-install: consumer_cmake_static links the shared library" >&2
    exit 1
fi
objdump -p "$out/bin/consumer_cmake_shared" | grep -q 'NEEDED.*libauthd-client.so.0' || {
    echo "check-install: consumer_cmake_shared does not link libauthd-client.so.0" >&2
    exit 1
}
echo "check-install: four consumers built against $prefix"
