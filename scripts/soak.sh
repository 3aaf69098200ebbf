#!/usr/bin/env bash
# soak.sh — minutes of mixed load against one authd, sampling its memory,
# open file descriptors and error counts, and failing when they are not flat.
#
#   scripts/soak.sh                   10 minutes (the record run)
#   scripts/soak.sh --minutes 3       any length (--seconds S for tests)
#   scripts/soak.sh --ci              1 minute (the CI version)
#   scripts/soak.sh --asan --seconds 30   the ASan build with leak checking
#   options: --build DIR --rate R --interval S --csv FILE --keep
#
# Load (both through libauthd-client, both for the whole run):
#   authbench --workload mixed --mix 90,7,3 --invalid-share 5 --rate R
#       Verify-heavy, with Logins and Registers, 5% of Verifies with a
#       tampered or revoked token (which must be refused), open loop at R
#       requests/s (default 1000) over 4 connections;
#   authd-durload churn --rate 10: per cycle Login, Verify, Logout, Verify
#       (must say REVOKED), a tampered token (must be refused); a Register
#       every 10th cycle.
# Every --interval seconds (default 5) one CSV row:
#   t_s,rss_kb,rss_anon_kb,rss_file_kb,fds,threads,bench_errors,churn_ops,churn_errors
# (authd's /proc/PID/status and /proc/PID/fd; the error counts are the
# load's unexpected outcomes so far: expected refusals do not count).
#
# Flat means (after a warm-up of max(10 s, 10% of the run)):
#   - memory: the median RssAnon (heap, stacks: what a leak grows) of the
#     last third of the samples is at most 10% + 2 MiB above that of the
#     first third. VmRSS is reported but not judged: it includes the LMDB
#     map's pages (RssFile), which grow with the data the load writes.
#     Under --asan only reported (ASan's quarantine grows the heap).
#   - descriptors: never more than the baseline (before the load) + 32,
#     and back to the baseline within 15 s once the load has disconnected;
#   - errors: 0 unexpected outcomes in authbench and in the churn, no
#     wrong accept, authd alive all along and exiting 0 on SIGTERM;
#   - --asan: ASAN_OPTIONS=detect_leaks=1 for authd, and its log holds no
#     LeakSanitizer or AddressSanitizer report.
#
# authd is driven through its flags only; AUTHD_EXTRA_FLAGS (word-split) is
# added to them; --insecure-weak-params is added when authd --help lists it.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=600
build=""
asan=0
rate=1000
interval=5
csv=""
keep=0
while [ $# -gt 0 ]; do
    case $1 in
    --minutes) seconds=$(($2 * 60)); shift ;;
    --seconds) seconds=$2; shift ;;
    --ci) seconds=60 ;;
    --asan) asan=1 ;;
    --build) build=$2; shift ;;
    --rate) rate=$2; shift ;;
    --interval) interval=$2; shift ;;
    --csv) csv=$2; shift ;;
    --keep) keep=1 ;;
    -h | --help) sed -n '2,40p' "$0"; exit 0 ;;
    *) echo "soak: unknown argument $1" >&2; exit 2 ;;
    esac
    shift
done
if [ -z "$build" ]; then
    if [ "$asan" = 1 ]; then build="build-asan"; else build="build-test"; fi
fi
if [ ! -f "$build/CMakeCache.txt" ]; then
    if [ "$asan" = 1 ]; then
        cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Debug -DAUTHD_SANITIZE=ON >/dev/null
    else
        cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
    fi
fi
cmake --build "$build" -j"$(nproc)" --target authd authbench authd-durload >/dev/null
authd=$build/authd
bench=$build/clients/authbench
dl=$build/tests/durability/authd-durload

work=$(mktemp -d "${TMPDIR:-/tmp}/authd-soak.XXXXXX")
[ -n "$csv" ] || csv=$work/soak.csv
pid=""
bench_pid=""
churn_pid=""
ok=0
cleanup() {
    for p in $bench_pid $churn_pid $pid; do kill -9 "$p" 2>/dev/null || true; done
    if [ "$keep" = 1 ] || [ "$ok" = 0 ]; then
        echo "soak: work dir kept: $work" >&2
    else
        rm -rf "$work"
    fi
}
trap cleanup EXIT
die() { echo "soak: FAIL: $*" >&2; exit 1; }

bash scripts/dev-tls.sh "$work/tls" >/dev/null 2>&1
ca=$work/tls/ca.crt
head -c 64 /dev/urandom >"$work/signing.key"
chmod 600 "$work/signing.key"

# The flags of the authd under test, in one place.
flags=(--listen tls+tcp://127.0.0.1:0 --url-file "$work/url" --data-dir "$work/data"
    --signing-key "$work/signing.key"
    --tls-cert "$work/tls/server.crt" --tls-key "$work/tls/server.key"
    --argon2-ops 1 --argon2-mem-kib 64 --log-level warn)
# (--help is read whole first: with pipefail, grep -q closing the pipe
# early would fail the pipeline through authd's SIGPIPE.)
authd_help=$("$authd" --help 2>&1 || true)
if grep -q -- '--insecure-weak-params' <<<"$authd_help"; then
    flags+=(--insecure-weak-params)
fi
# The load comes from one address (127.0.0.1) and repeats logins of a few
# accounts on purpose: the per-caller abuse limits would refuse it as
# designed, which is not what this run measures. Production defaults
# otherwise.
if grep -q -- '--caller-registrations' <<<"$authd_help"; then
    flags+=(--caller-registrations 0 --caller-login-failures 0 --login-free-attempts 100)
fi
# shellcheck disable=SC2206 # word splitting is the point
flags+=(${AUTHD_EXTRA_FLAGS:-})

# Sanitizer options: leaks are checked in authd only (the load tools are
# not what this run judges).
if [ "$asan" = 1 ]; then
    export ASAN_OPTIONS=detect_leaks=0:abort_on_error=1
    authd_asan="detect_leaks=1:abort_on_error=0:log_path=$work/asan"
else
    authd_asan=${ASAN_OPTIONS:-}
fi

ASAN_OPTIONS=$authd_asan "$authd" "${flags[@]}" >"$work/authd.log" 2>&1 &
pid=$!
url=$("$dl" wait --url-file "$work/url" --ca "$ca" --deadline-ms 60000 --pid "$pid") \
    || die "authd did not come up: $(tail -n 5 "$work/authd.log")"

# sample T: one CSV row of authd's state at T seconds.
sample() {
    local st rss anon file thr fds be ce co
    st=$(cat "/proc/$pid/status" 2>/dev/null) || die "authd died: $(tail -n 5 "$work/authd.log")"
    rss=$(awk '/^VmRSS:/ { print $2 }' <<<"$st")
    anon=$(awk '/^RssAnon:/ { print $2 }' <<<"$st")
    file=$(awk '/^RssFile:/ { print $2 }' <<<"$st")
    thr=$(awk '/^Threads:/ { print $2 }' <<<"$st")
    fds=$(find "/proc/$pid/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l)
    be=0 co=0 ce=0
    if [ -f "$work/bench.err" ]; then
        be=$(tr '\r' '\n' <"$work/bench.err" | { grep -o 'errors [0-9]*' || true; } | tail -n 1 | cut -d' ' -f2)
    fi
    if [ -f "$work/churn.stats" ]; then
        co=$(sed -n 's/.*ops=\([0-9]*\).*/\1/p' "$work/churn.stats")
        ce=$(sed -n 's/.*errors=\([0-9]*\).*/\1/p' "$work/churn.stats")
    fi
    echo "$1,$rss,$anon,$file,$fds,$thr,${be:-0},${co:-0},${ce:-0}" >>"$csv"
}

echo "t_s,rss_kb,rss_anon_kb,rss_file_kb,fds,threads,bench_errors,churn_ops,churn_errors" >"$csv"
sample 0
fd_base=$(tail -n 1 "$csv" | cut -d, -f5)
echo "soak: $seconds s at $rate req/s + churn 10 cycles/s, authd pid $pid (asan=$asan), csv $csv" >&2

t0=$(date +%s)
"$bench" --url "$url" --ca "$ca" --workload mixed --mix 90,7,3 --invalid-share 5 \
    --rate "$rate" --connections 4 --inflight 64 --users 64 --warmup 1 \
    --duration "$((seconds - 1))" --timeout-ms 10000 --progress \
    >"$work/bench.out" 2>"$work/bench.err" &
bench_pid=$!
"$dl" churn --url "$url" --ca "$ca" --seconds "$seconds" --rate 10 --timeout-ms 10000 \
    --stats "$work/churn.stats" --tag s >"$work/churn.out" 2>"$work/churn.err" &
churn_pid=$!

# Sample on a fixed schedule until both loads are done.
next=$interval
while kill -0 "$bench_pid" 2>/dev/null || kill -0 "$churn_pid" 2>/dev/null; do
    now=$(($(date +%s) - t0))
    if [ "$now" -ge "$next" ]; then
        sample "$now"
        next=$((next + interval))
    fi
    sleep 0.5
done
bench_rc=0 churn_rc=0
wait "$bench_pid" || bench_rc=$?
bench_pid=""
wait "$churn_pid" || churn_rc=$?
churn_pid=""
t_load=$(($(date +%s) - t0))

# Descriptors back to the baseline once the clients are gone.
fd_end=""
for ((i = 0; i < 150; i++)); do
    fd_end=$(find "/proc/$pid/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l)
    [ "$fd_end" -le "$fd_base" ] && break
    sleep 0.1
done
sample "$(($(date +%s) - t0))"

# Stop authd: SIGTERM must end it with status 0.
kill -TERM "$pid"
authd_rc=0
wait "$pid" || authd_rc=$?
pid=""

# ---- verdict ------------------------------------------------------------------
fails=()
[ "$bench_rc" = 0 ] || fails+=("authbench exited $bench_rc (3 = an invalid token was accepted)")
[ "$churn_rc" = 0 ] || fails+=("churn exited $churn_rc: $(head -n 3 "$work/churn.err")")
[ "$authd_rc" = 0 ] || fails+=("authd exited $authd_rc on SIGTERM")
summary=$(cat "$work/bench.out" "$work/bench.err" | tr '\r' '\n' | grep 'bench=authd.* group=all ' || true)
[ -n "$summary" ] || fails+=("no authbench summary: $(tail -c 300 "$work/bench.err")")
bench_errors=$(grep -o ' errors=[0-9]*' <<<"$summary" | cut -d= -f2 | awk '{ s += $1 } END { print s + 0 }')
bench_requests=$(grep -o ' requests=[0-9]*' <<<"$summary" | cut -d= -f2 | awk '{ s += $1 } END { print s + 0 }')
bench_rejected=$(grep -o ' rejected=[0-9]*' <<<"$summary" | cut -d= -f2 | awk '{ s += $1 } END { print s + 0 }')
[ "$bench_errors" = 0 ] || fails+=("authbench: $bench_errors unexpected outcomes")
churn_line=$(cat "$work/churn.out")
last_row=$(tail -n 1 "$csv")
[ "$(cut -d, -f9 <<<"$last_row")" = 0 ] || fails+=("churn: errors in $last_row")
[ "$fd_end" -le "$fd_base" ] || fails+=("fds: $fd_end after the load, baseline $fd_base")

warm=$((seconds / 10 > 10 ? seconds / 10 : 10))
read -r fd_max anon_first anon_last rss_first rss_last n_rows < <(awk -F, -v warm="$warm" -v end="$t_load" '
    BEGIN { n = 0; fdmax = 0 }
    NR == 1 { next }
    { if ($5 + 0 > fdmax) fdmax = $5 + 0 }
    $1 >= warm && $1 <= end { t[n] = $1; a[n] = $3; r[n] = $2; n++ }
    function median(arr, lo, hi,   m, i, j, x, v) {
        m = 0
        for (i = lo; i < hi; i++) v[m++] = arr[i]
        for (i = 1; i < m; i++) { x = v[i]; for (j = i - 1; j >= 0 && v[j] > x; j--) v[j + 1] = v[j]; v[j + 1] = x }
        return m ? v[int((m - 1) / 2)] : 0
    }
    END {
        k = int(n / 3)
        printf "%d %d %d %d %d %d\n", fdmax, median(a, 0, k), median(a, n - k, n), median(r, 0, k), median(r, n - k, n), n
    }' "$csv")
[ "$fd_max" -le $((fd_base + 32)) ] || fails+=("fds: peak $fd_max, baseline $fd_base + 32 allowed")
anon_limit=$((anon_first + anon_first / 10 + 2048))
if [ "$n_rows" -lt 3 ]; then
    fails+=("too few samples after the warm-up ($n_rows) to judge memory: run longer")
elif [ "$asan" = 0 ] && [ "$anon_last" -gt "$anon_limit" ]; then
    fails+=("RssAnon grew: median $anon_first kB in the first third, $anon_last kB in the last (limit $anon_limit)")
fi
if [ "$asan" = 1 ]; then
    if ls "$work"/asan* >/dev/null 2>&1 || grep -q 'Sanitizer' "$work/authd.log"; then
        fails+=("sanitizer report: $(cat "$work"/asan* "$work/authd.log" 2>/dev/null | grep -m 3 -A 3 'ERROR')")
    fi
fi

{
    echo "soak: seconds=$seconds rate=$rate asan=$asan samples=$(($(wc -l <"$csv") - 1)) interval=${interval}s"
    echo "soak: authbench requests=$bench_requests errors=$bench_errors expected_rejections=$bench_rejected"
    echo "soak: $churn_line"
    echo "soak: fds baseline=$fd_base peak=$fd_max end=$fd_end"
    echo "soak: RssAnon median first third=${anon_first} kB last third=${anon_last} kB (limit ${anon_limit} kB, judged=$((1 - asan)))"
    echo "soak: VmRSS start=$(sed -n 2p "$csv" | cut -d, -f2) kB first third=${rss_first} kB last third=${rss_last} kB end=$(cut -d, -f2 <<<"$last_row") kB (includes the LMDB map's pages)"
    echo "soak: authd exit status on SIGTERM=$authd_rc"
} | tee "$work/summary" >&2
if [ ${#fails[@]} -gt 0 ]; then
    printf 'soak: FAIL: %s\n' "${fails[@]}" >&2
    exit 1
fi
ok=1
echo "soak: PASS" >&2
