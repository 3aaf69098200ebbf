#!/usr/bin/env bash
# test.sh — install what is missing, build with -Werror, run the whole
# suite (unit + integration against the real authd over TLS), then build
# again with AddressSanitizer + UBSan and run the suite once more; then the
# CI versions of the crash and soak tests.
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
if [ "$quick" = 0 ]; then
    # Crash and soak tests (scripts/durability.sh, scripts/soak.sh): their CI
    # versions, about 2 minutes in all. Not in --quick: they are long for
    # the check before every commit, and CI runs the full script.
    echo "== test: durability (5 kills, MAP_FULL) and soak (1 minute), plain build" >&2
    bash scripts/durability.sh --ci --build build-test
    bash scripts/soak.sh --ci --build build-test
    echo "== test: soak under ASan with leak checking (30 s)" >&2
    bash scripts/soak.sh --asan --seconds 30 --build build-asan
fi
echo "test: all passes green" >&2
