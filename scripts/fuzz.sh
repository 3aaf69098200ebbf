#!/usr/bin/env bash
# fuzz.sh — builds the libFuzzer harnesses of fuzz/ (clang, ASan + UBSan,
# in ./build-fuzz) and runs each in turn, from its checked-in seeds. Fails
# when any harness finds a crash, a leak, a sanitizer report, a timeout or
# a broken property (the input is saved in build-fuzz/artifacts/<harness>/).
#
#   scripts/fuzz.sh                     20 s per harness
#   scripts/fuzz.sh --seconds 15        what scripts/test.sh runs
#   scripts/fuzz.sh --runs 10000000     the long run recorded in docs/fuzzing.md
#   scripts/fuzz.sh --build-only
#   scripts/fuzz.sh [options] fuzz_token fuzz_log ...   only these harnesses
#
# New inputs each run finds go to build-fuzz/work/<harness>/ (kept between
# runs, never committed), and each run's output to build-fuzz/logs/. A
# summary line per harness gives executions, executions/s, cov: and ft:.
# One process per harness (no -jobs/-workers: one core each, in turn).
set -euo pipefail
cd "$(dirname "$0")/.."

FUZZERS=(fuzz_token fuzz_validate fuzz_log fuzz_dispatch fuzz_record fuzz_client_envelope)
# The SP framing harness, once the tree has src/sp_frame.c (fuzz/CMakeLists.txt).
[ -f src/sp_frame.c ] && FUZZERS+=(fuzz_sp_frame)
limit=(-max_total_time=20)
build_only=0
only=()
while [ $# -gt 0 ]; do
    case "$1" in
    --seconds) limit=(-max_total_time="$2"); shift 2 ;;
    --runs) limit=(-runs="$2"); shift 2 ;;
    --build-only) build_only=1; shift ;;
    fuzz_*) only+=("$1"); shift ;;
    *) echo "usage: $0 [--seconds N | --runs N | --build-only] [harness...]" >&2; exit 2 ;;
    esac
done
[ ${#only[@]} -gt 0 ] && FUZZERS=("${only[@]}")

dir=build-fuzz
echo "== fuzz: building ${FUZZERS[*]} in $dir (clang, ASan + UBSan)" >&2
CC=clang cmake -S . -B "$dir" -DAUTHD_FUZZ=ON -DAUTHD_TESTS=OFF -DAUTHD_WERROR=ON \
    -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$dir" -j"$(nproc)" --target "${FUZZERS[@]}"
[ "$build_only" = 1 ] && exit 0

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
failed=()
mkdir -p "$dir/logs"
for f in "${FUZZERS[@]}"; do
    work="$dir/work/$f" art="$dir/artifacts/$f" log="$dir/logs/$f.log"
    mkdir -p "$work" "$art"
    echo "== fuzz: $f ${limit[*]}" >&2
    rc=0
    nice -n 10 "$dir/fuzz/$f" "$work" "fuzz/corpus/$f" "${limit[@]}" -print_final_stats=1 \
        -timeout=60 -rss_limit_mb=2048 -artifact_prefix="$art/" >"$log" 2>&1 || rc=$?
    done_line=$(grep -E '^#[0-9]+[[:space:]]+(DONE|INITED)' "$log" | tail -1 || true)
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log")
    cov=$(grep -o 'cov: [0-9]*' <<<"$done_line" || true)
    ft=$(grep -o 'ft: [0-9]*' <<<"$done_line" || true)
    echo "fuzz: $f: ${runs:-?} runs, ${rate:-?} exec/s, ${cov:-cov: ?} ${ft:-ft: ?}, exit $rc" >&2
    if [ "$rc" != 0 ]; then
        failed+=("$f")
        grep -E 'fuzz check failed|ERROR: |SUMMARY: |runtime error|Test unit written' "$log" >&2 || true
        echo "fuzz: $f failed; full output in $log" >&2
    fi
done
if [ ${#failed[@]} -gt 0 ]; then
    echo "fuzz: FAILED: ${failed[*]}" >&2
    exit 1
fi
echo "fuzz: all harnesses clean" >&2
