#!/usr/bin/env bash
# test.sh — install what is missing, build with -Werror, run the whole
# suite (unit + integration against the real authd over TLS), then build
# again with AddressSanitizer + UBSan and run the suite once more.
#
#   scripts/test.sh            both passes
#   scripts/test.sh --quick    the plain pass only
#
# Build trees: ./build-test and ./build-asan. ctest output is printed as is.
set -euo pipefail
cd "$(dirname "$0")/.."
quick=0
[ "${1:-}" = "--quick" ] && quick=1
bash scripts/install-deps.sh
jobs=$(nproc)

run_pass() { # run_pass DIR CMAKE-ARGS...
    local dir=$1; shift
    cmake -S . -B "$dir" -DAUTHD_WERROR=ON "$@" >/dev/null
    cmake --build "$dir" -j"$jobs"
    (cd "$dir" && ctest --output-on-failure -j"$jobs" --timeout 300)
}

echo "== test: -Werror build" >&2
run_pass build-test -DCMAKE_BUILD_TYPE=RelWithDebInfo
if [ "$quick" = 0 ]; then
    echo "== test: ASan + UBSan build" >&2
    ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
        run_pass build-asan -DCMAKE_BUILD_TYPE=Debug -DAUTHD_SANITIZE=ON
    # The fuzz/ harnesses, 15 s each from their seeds (clang, ASan + UBSan,
    # ./build-fuzz); the pass above replayed their corpora already.
    echo "== test: fuzzers, 15 s each" >&2
    bash scripts/fuzz.sh --seconds 15
fi
echo "test: all passes green" >&2
