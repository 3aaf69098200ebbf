#!/usr/bin/env bash
# bench.sh — the issue-3 benchmark in one command: builds a Release tree,
# starts authd-echo and authd on loopback, drives them with authbench, runs
# the gRPC peer, and prints every result and the ratios against the targets.
#
#   scripts/bench.sh [--duration S] [--out DIR] [--only LIST] [--peer RUN.SH]
#                    [--rounds N] [--baseline AUTHD]
#
#   --duration S   measured seconds of every run (default 5; +1 s warm-up)
#   --out DIR      where the rows, logs and plots go (default ./bench-out)
#   --only LIST    a comma-separated subset of the sections below
#   --peer FILE    the gRPC peer's run.sh (default ../shared/peers/grpc-verify/run.sh)
#   --rounds N     rounds of the conns, refresh and guard sections (default 5)
#   --baseline B   an authd binary to compare with (guard section), e.g. one
#                  built from an earlier commit: git worktree add /tmp/old
#                  COMMIT && cmake -S /tmp/old -B /tmp/old/b -DCMAKE_BUILD_TYPE=Release
#                  -DAUTHD_TESTS=OFF && cmake --build /tmp/old/b --target authd
#
# Sections:
#   transport  echo (authd-echo on nng, and on authd's own transport), authd Verify
#              and the gRPC peer, 1/16/128 in flight
#   flood      Verify at 16 in flight, idle and under a login flood
#   login      Login throughput at authd's argon2 defaults vs cores / one hash time
#   rss        authd's RSS idle, with 1,000 connections, and with 1,000 + a login flood
#   scale      Verify and Login at 16 with 1,000 and 1,000,000 users (authd-seed)
#   conns      100 and 1,000 connections x 1 in flight: Verify vs the echo on authd's
#              own transport, alternating rounds, the median of the per-round ratios
#   refresh    Refresh at 64 in flight (4 connections), group commit off
#              (--write-batch-max 1: a commit and fsync per write) vs on (the default),
#              two authd processes, alternating rounds, the median of the per-round ratios
#   proxy      nginx with auth_request to authd's /forward-auth vs the same nginx with no
#              auth, both in front of an nginx upstream (wrk, 50 connections), and
#              /forward-auth alone (wrk) vs the echo on authd's transport (authbench),
#              alternating rounds, the medians of the per-round ratios (needs nginx, wrk)
#   guard      (with --baseline) this authd's Verify vs the baseline binary's, at 1/16/128
#              in flight and 100/1,000 connections, rounds in the order A B B A, medians
#
# One run, ratios only: these are figures to read, not a timed test. The
# machine's cores are shared by authd, authbench and the peer. Writes into
# DIR: <section>.csv (authbench rows), results.csv (all of them), peer.txt,
# hash.txt, summary.txt (this output), logs/, and throughput.png and
# latency.png of the transport section (scripts/plot-bench.sh).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
dur=5
warm=1
out=./bench-out
only=transport,flood,login,rss,scale,conns,refresh,proxy
rounds=5
baseline=
peer="$root/../shared/peers/grpc-verify/run.sh"

while [ $# -gt 0 ]; do
    case $1 in
    --duration) dur=${2:?--duration needs seconds}; shift 2 ;;
    --out) out=${2:?--out needs a directory}; shift 2 ;;
    --only) only=${2:?--only needs a list}; shift 2 ;;
    --peer) peer=${2:?--peer needs a file}; shift 2 ;;
    --rounds) rounds=${2:?--rounds needs a number}; shift 2 ;;
    --baseline) baseline=${2:?--baseline needs an authd binary}; shift 2 ;;
    -h | --help) sed -n '2,36p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "bench.sh: unknown option $1 (--help)" >&2; exit 2 ;;
    esac
done
[[ $dur =~ ^[0-9]+([.][0-9]+)?$ ]] || { echo "bench.sh: --duration: want seconds" >&2; exit 2; }
for s in ${only//,/ }; do
    case $s in transport | flood | login | rss | scale | conns | refresh | proxy | guard) ;; *)
        echo "bench.sh: --only: unknown section '$s'" >&2; exit 2 ;;
    esac
done
want() { [[ ",$only," == *",$1,"* ]]; }
[[ $rounds =~ ^[1-9][0-9]*$ ]] || { echo "bench.sh: --rounds: want a positive number" >&2; exit 2; }
if [ -n "$baseline" ]; then
    [ -x "$baseline" ] || { echo "bench.sh: --baseline $baseline: not an executable" >&2; exit 2; }
    baseline=$(cd "$(dirname "$baseline")" && pwd)/$(basename "$baseline")
    [[ ",$only," == *",guard,"* ]] || only=$only,guard
elif [[ ",$only," == *",guard,"* ]]; then
    echo "bench.sh: the guard section needs --baseline AUTHD" >&2; exit 2
fi

mkdir -p "$out/logs"
out=$(cd "$out" && pwd)
logs=$out/logs
summary=$out/summary.txt
for f in transport flood login rss scale conns refresh proxy guard results; do rm -f "$out/$f.csv"; done
rm -f "$out/peer.txt" "$out/hash.txt" "$out"/seed-*.txt "$summary" "$logs"/*.log \
    "$out/throughput.png" "$out/latency.png" "$out/bench.tsv"

say() { printf '%s\n' "$*" | tee -a "$summary"; }

# ---- processes: everything started here is stopped on exit ----------------------
work=$(mktemp -d /tmp/authd-bench.XXXXXX)
(umask 077; head -c 64 /dev/urandom >"$work/signing.key") # authd creates none unless asked
pids=()
stop_pid() { # stop_pid PID: SIGTERM, up to 5 s, then SIGKILL
    local p=$1
    kill -TERM "$p" 2>/dev/null || return 0
    for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
}
cleanup() {
    local p
    for p in "${pids[@]}"; do stop_pid "$p"; done
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---- build -------------------------------------------------------------------------
bash "$root/scripts/install-deps.sh" >"$logs/install-deps.log" 2>&1 \
    || { echo "bench.sh: install-deps failed, see $logs/install-deps.log" >&2; exit 1; }
bdir=$root/build-bench
echo "bench.sh: building Release in $bdir" >&2
if ! { cmake -S "$root" -B "$bdir" -DCMAKE_BUILD_TYPE=Release -DAUTHD_TESTS=OFF \
    && cmake --build "$bdir" -j"$(nproc)" --target authd authd-echo authbench authd-seed authctl; } \
    >"$logs/build.log" 2>&1; then
    tail -20 "$logs/build.log" >&2
    echo "bench.sh: build failed, see $logs/build.log" >&2
    exit 1
fi
authd=$bdir/authd
echo_srv=$bdir/clients/authd-echo
bench=$bdir/clients/authbench
seed=$bdir/authd-seed
authctl=$bdir/clients/authctl

tls=$work/tls
bash "$root/scripts/dev-tls.sh" "$tls" >"$logs/dev-tls.log" 2>&1
cores=$(nproc)

# wait_url FILE PID: the bound URL, once the server has written it (10 s).
wait_url() {
    local f=$1 p=$2
    for _ in $(seq 200); do
        if [ -s "$f" ]; then cat "$f"; return 0; fi
        kill -0 "$p" 2>/dev/null || break
        sleep 0.05
    done
    echo "bench.sh: the server (pid $p) did not come up; see $logs" >&2
    return 1
}

# start_authd NAME DATADIR [authd options...]: sets srv_pid and srv_url.
# The limits meant for abuse get out of the load generator's way: every
# connection comes from 127.0.0.1, and the register and login workloads
# fail and repeat on purpose. Not passed to a --baseline binary, which may
# not know them.
bench_flags=(--max-connections-per-source 100000 --caller-registrations 0
    --caller-login-failures 0 --login-free-attempts 100 --log-failure-rate 0)
start_authd() {
    local name=$1 data=$2 extra=()
    shift 2
    [ -z "${authd_bin:-}" ] && extra=("${bench_flags[@]}")
    rm -f "$work/$name.url"
    "${authd_bin:-$authd}" "${extra[@]}" --listen tls+tcp://127.0.0.1:0 --url-file "$work/$name.url" --data-dir "$data" \
        --tls-cert "$tls/server.crt" --tls-key "$tls/server.key" \
        --signing-key "$work/signing.key" --log-level warn --shutdown-grace-ms 1000 "$@" \
        2>>"$logs/authd-$name.log" &
    srv_pid=$!
    pids+=("$srv_pid")
    srv_url=$(wait_url "$work/$name.url" "$srv_pid")
}

# start_echo ENGINE: authd-echo on nng's rep0 socket (nng) or on authd's own
# transport in echo mode (authd).
start_echo() {
    rm -f "$work/echo.url"
    "$echo_srv" --engine "$1" --listen tls+tcp://127.0.0.1:0 --url-file "$work/echo.url" \
        --tls-cert "$tls/server.crt" --tls-key "$tls/server.key" \
        >>"$logs/authd-echo-$1.log" 2>&1 &
    srv_pid=$!
    pids+=("$srv_pid")
    srv_url=$(wait_url "$work/echo.url" "$srv_pid")
}

failures=0
nrun=0
# run LABEL CSV URL PID [authbench options...]: one authbench run; prints its
# result lines, keeps its table and messages in logs/NN-LABEL.log.
run() {
    local label=$1 csv=$2 url=$3 pid=$4 rc=0 log
    shift 4
    nrun=$((nrun + 1))
    log=$logs/$(printf '%02d' $nrun)-$label.log
    echo "authbench --label $label $*" >"$log"
    "$bench" --url "$url" --ca "$tls/ca.crt" --duration "$dur" --warmup "$warm" --no-progress \
        --server-pid "$pid" --label "$label" --out "$out/$csv.csv" "$@" >>"$log" 2>&1 || rc=$?
    grep '^bench=' "$log" | tee -a "$summary" || true
    if [ "$rc" -ne 0 ]; then
        failures=$((failures + 1))
        say "!! $label: authbench exit status $rc (see $log):"
        grep '^authbench:' "$log" | tail -3 | tee -a "$summary" || true
    fi
}

# col CSV LABEL GROUP COLUMN: a column of the row of that label and group.
col() {
    [ -f "$out/$1.csv" ] || return 0
    awk -F, -v l="$2" -v g="$3" -v c="$4" '
        NR == 1 { for (i = 1; i <= NF; i++) h[$i] = i; next }
        $h["label"] == l && $h["group"] == g { v = $h[c] }
        END { if (v != "") print v }' "$out/$1.csv"
}
# colw CSV LABEL INFLIGHT COLUMN: the same, by label and requests in flight.
colw() {
    [ -f "$out/$1.csv" ] || return 0
    awk -F, -v l="$2" -v n="$3" -v c="$4" '
        NR == 1 { for (i = 1; i <= NF; i++) h[$i] = i; next }
        $h["label"] == l && $h["inflight"] == n { v = $h[c] }
        END { if (v != "") print v }' "$out/$1.csv"
}
# peer_get INFLIGHT KEY: a value of the gRPC peer's line.
peer_get() {
    [ -f "$out/peer.txt" ] || return 0
    awk -v n="$1" -v k="$2" '$1 == "peer=grpc-cxx-tls" {
        delete kv; for (i = 1; i <= NF; i++) { p = index($i, "="); kv[substr($i, 1, p - 1)] = substr($i, p + 1) }
        if (kv["inflight"] == n) v = kv[k] } END { if (v != "") print v }' "$out/peer.txt"
}
calc() { awk "BEGIN { printf \"%.${2:-3}f\", $1 }"; }
# median: of the numbers on stdin, one a line (empty if none).
median() { sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) exit; if (NR % 2) printf "%.3f", v[(NR + 1) / 2]; else printf "%.3f", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

# ---- the targets table -----------------------------------------------------------------
targets=()
# target NAME MEASURED OP LIMIT DETAIL: OP is >= or <=; MEASURED may be empty.
target() {
    local name=$1 m=$2 op=$3 lim=$4 detail=$5 verdict
    if [ -z "$m" ]; then
        verdict="NO DATA"
    else
        verdict=$(awk -v m="$m" -v op="$op" -v t="$lim" 'BEGIN {
            if (op == ">=") { if (m >= t) print "PASS"; else printf "FALL SHORT: %.0f%% below\n", 100 * (1 - m / t) }
            else { if (m <= t) print "PASS"; else printf "FALL SHORT: %.0f%% above\n", 100 * (m / t - 1) } }')
    fi
    targets+=("$(printf '%-44s %9s %2s %-5s %-25s %s' "$name" "${m:--}" "$op" "$lim" "$verdict" "$detail")")
}

# cpu_busy: percent of all cores busy over one second (other work on the machine).
cpu_busy() {
    local a b
    a=$(head -1 /proc/stat)
    sleep 1
    b=$(head -1 /proc/stat)
    printf '%s\n%s\n' "$a" "$b" | awk '{ idle[NR] = $5 + $6; tot[NR] = 0; for (i = 2; i <= NF; i++) tot[NR] += $i }
        END { d = tot[2] - tot[1]; printf "%.0f", (d > 0 ? 100 * (1 - (idle[2] - idle[1]) / d) : 0) }'
}

{
    say "== authd benchmark, $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    say "commit $(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo '?')$(git -C "$root" diff --quiet 2>/dev/null || echo ' (with uncommitted changes)'), Release build in $bdir"
    say "machine: $cores cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')), $(uname -sr)"
    say "note: authd, the load generator (authbench) and the gRPC peer's client all share these"
    say "      $cores cores: every figure includes the client's CPU (client_cpu_pct / server_cpu_pct)."
    busy=$(cpu_busy)
    say "before the run: ${busy}% of the cores busy with other work, load average $(cut -d' ' -f1-3 /proc/loadavg)"
    [ "$busy" -lt 10 ] || say "WARNING: the machine is not idle: other processes share the cores, the figures are lower and noisier"
    say "runs: ${dur} s measured after ${warm} s warm-up (the gRPC peer measures from its first call);"
    say "      one connection unless said; sections: $only"
}

main_pid=
main_url=
start_main() {
    [ -n "$main_pid" ] && return 0
    start_authd main "$work/data-main"
    main_pid=$srv_pid
    main_url=$srv_url
}

# ---- transport: echo, authd Verify, gRPC peer at 1 / 16 / 128 in flight -------------
if want transport; then
    say ""
    say "== transport: echo vs authd Verify vs gRPC peer, 1/16/128 in flight"
    say "   echo: authd-echo on an nng rep0 socket (the issue's baseline); echo-authd: authd's"
    say "   own transport (epoll + OpenSSL) echoing, the ceiling of what authd runs on"
    start_echo nng
    echo_pid=$srv_pid
    for n in 1 16 128; do run echo transport "$srv_url" "$echo_pid" --workload echo --inflight $n; done
    stop_pid "$echo_pid"
    start_echo authd
    echo_pid=$srv_pid
    for n in 1 16 128; do
        run echo-authd transport "$srv_url" "$echo_pid" --workload echo --inflight $n
    done
    stop_pid "$echo_pid"
    start_main
    for n in 1 16 128; do run authd transport "$main_url" "$main_pid" --workload verify --inflight $n; done
    if [ -f "$peer" ]; then
        bash "$peer" "$dur" 1 16 128 >"$out/peer.txt" 2>"$logs/peer.log" &
        ppid_=$!
        pids+=("$ppid_")
        wait "$ppid_" || { failures=$((failures + 1)); say "!! gRPC peer failed (see $logs/peer.log)"; }
        grep '^peer=' "$out/peer.txt" | tee -a "$summary" || true
    else
        say "!! no gRPC peer at $peer"
    fi
    for n in 16 128; do
        v=$(colw transport authd $n rps)
        e=$(colw transport echo $n rps)
        p=$(peer_get $n rps)
        r=; [ -n "$v" ] && [ -n "$e" ] && r=$(calc "$v / $e")
        target "Verify rps / echo rps @$n" "$r" ">=" 0.85 "verify $v/s, echo $e/s"
        e=$(colw transport echo-authd $n rps)
        r=; [ -n "$v" ] && [ -n "$e" ] && r=$(calc "$v / $e")
        target "(Verify rps / echo-authd rps @$n)" "$r" ">=" 0.85 "verify $v/s, echo-authd $e/s"
        r=; [ -n "$v" ] && [ -n "$p" ] && r=$(calc "$v / $p")
        target "Verify rps / gRPC peer rps @$n" "$r" ">=" 1.3 "verify $v/s, peer ${p:-?}/s"
    done
    v=$(colw transport authd 1 p50_us)
    p=$(peer_get 1 p50_us)
    r=; [ -n "$v" ] && [ -n "$p" ] && r=$(calc "$v / $p")
    target "Verify p50 / gRPC peer p50 @1" "$r" "<=" 1.0 "verify ${v} us, peer ${p:-?} us"
fi

# ---- flood: Verify at 16, idle and under a login flood ---------------------------------
if want flood; then
    say ""
    say "== flood: Verify at 16 in flight, idle, then beside a login flood (32 logins in flight"
    say "   on a second connection, argon2id t=2 m=19456 KiB, $cores hash workers at nice +10)"
    start_main
    run verify-idle flood "$main_url" "$main_pid" --workload verify --inflight 16
    run verify-flood flood "$main_url" "$main_pid" --workload verify-under-login-flood \
        --inflight 16 --flood-inflight 32
    ip99=$(col flood verify-idle verify p99_us)
    irps=$(col flood verify-idle verify rps)
    fp99=$(col flood verify-flood verify p99_us)
    frps=$(col flood verify-flood verify rps)
    lrps=$(col flood verify-flood login rps)
    r=; [ -n "$ip99" ] && [ -n "$fp99" ] && r=$(calc "$fp99 / $ip99")
    target "Verify p99 under flood / idle p99 @16" "$r" "<=" 2.0 "idle ${ip99} us, flood ${fp99} us"
    r=; [ -n "$irps" ] && [ -n "$frps" ] && r=$(calc "$frps / $irps")
    target "Verify rps under flood / idle rps @16" "$r" ">=" 0.5 "idle ${irps}/s, flood ${frps}/s (logins ${lrps}/s)"
fi

# ---- login: throughput vs cores / one argon2id hash -------------------------------------
if want login; then
    say ""
    say "== login: Login throughput at authd's defaults (argon2id t=2, m=19456 KiB) vs cores / hash time"
    say "   (hash time: median of one thread hashing alone; the second line is $cores threads hashing"
    say "   at once, what parallel argon2 costs on this machine: memory bandwidth, a shared L3)"
    "$seed" --time-hash --repeat 7 | tee "$out/hash.txt" | tee -a "$summary"
    "$seed" --time-hash --repeat 7 --threads "$cores" | tee -a "$out/hash.txt" | tee -a "$summary"
    hash_ms=$(sed -n '1s/.*hash_ms=\([0-9.]*\).*/\1/p' "$out/hash.txt")
    par=$(sed -n '2s/.*hashes_per_s=\([0-9.]*\).*/\1/p' "$out/hash.txt")
    start_main
    run login login "$main_url" "$main_pid" --workload login --inflight 16
    lr=$(col login login login rps)
    ideal=$(calc "$cores * 1000 / $hash_ms" 1)
    r=; [ -n "$lr" ] && r=$(calc "$lr / $ideal")
    target "Login rps / (cores / hash time)" "$r" ">=" 0.8 \
        "login ${lr}/s, $cores / ${hash_ms} ms = ${ideal}/s; $cores threads at once: ${par}/s"
fi

# ---- rss: idle, 1,000 connections, 1,000 connections + login flood ----------------------
# Peaks are of each measured window (--server-peak-window): the users and
# tokens set up before it are hashed with argon2 too. The first 1,000
# connections of a process cost less than later ones (memory freed when
# connections close stays with the allocator), so the connections are
# measured twice and the bound uses the second, steady-state, figure.
if want rss; then
    say ""
    say "== rss: a fresh authd (defaults, $cores hash workers): idle, then 1,000 connections with one"
    say "   Verify each in flight (twice: first, then steady state), then the same beside a login"
    say "   flood (32 in flight); peaks are of each measured window"
    start_authd rss "$work/data-rss"
    rss_pid=$srv_pid
    rss_url=$srv_url
    sleep 0.5
    idle_kb=$(awk '/^VmRSS:/ { print $2 }' "/proc/$rss_pid/status" 2>/dev/null || true)
    say "authd idle, 0 connections: rss_kb=$idle_kb"
    for l in rss-conns-first rss-conns; do
        run $l rss "$rss_url" "$rss_pid" --workload verify --connections 1000 --inflight 1000 \
            --server-peak-window
    done
    run rss-flood rss "$rss_url" "$rss_pid" --workload verify-under-login-flood \
        --connections 1000 --inflight 1000 --flood-inflight 32 --server-peak-window
    first_kb=$(col rss rss-conns-first verify server_rss_peak_kb)
    conns_kb=$(col rss rss-conns verify server_rss_peak_kb)
    peak_kb=$(col rss rss-flood verify server_rss_peak_kb)
    stop_pid "$rss_pid"
    if [ -n "$idle_kb" ] && [ -n "$first_kb" ] && [ -n "$conns_kb" ] && [ -n "$peak_kb" ]; then
        per_first=$(calc "($first_kb - $idle_kb) / 1000" 1)
        per_conn=$(calc "($conns_kb - $idle_kb) / 1000" 1)
        argon_kb=$((19456 * cores))
        bound=$(calc "$idle_kb + $argon_kb + 1000 * $per_conn" 0)
        say "rss: idle ${idle_kb} KiB; 1,000 connections: first ${first_kb} KiB (${per_first} KiB each), steady ${conns_kb} KiB (${per_conn} KiB each)"
        say "rss: 1,000 connections + login flood: peak ${peak_kb} KiB, $((peak_kb - conns_kb)) KiB above the same without the flood (argon2: ${argon_kb} KiB)"
        say "rss: bound = idle + argon2 19456 KiB x $cores workers + 1,000 x ${per_conn} KiB = ${bound} KiB"
        target "peak RSS, 1,000 conns + flood / bound" "$(calc "$peak_kb / $bound")" "<=" 1.0 \
            "peak ${peak_kb} KiB, bound ${bound} KiB, ${per_conn} KiB/connection"
    else
        target "peak RSS, 1,000 conns + flood / bound" "" "<=" 1.0 ""
    fi
fi

# ---- scale: 1,000 vs 1,000,000 seeded users ----------------------------------------------
# Both stores are served at once and measured in the order A B B A, so a
# drift in what else the machine is doing falls on both alike; each figure
# is the mean of its two runs.
if want scale; then
    say ""
    say "== scale: Verify and Login at 16 in flight with 1,000 and 1,000,000 users (authd-seed:"
    say "   seed%07u, one password hashed once with argon2id t=1 m=8 KiB; authd run with the same"
    say "   parameters so logins do not re-hash; Verify uses tokens of 1,000 users spread over the"
    say "   range; runs in the order 1k 1M 1M 1k, each figure the mean of its two; the issue sets"
    say "   no number for 'does not grow': this script asks for >= 0.9 of the 1,000-user figure)"
    declare -A spid surl
    for tag in 1k 1m; do
        n=$([ $tag = 1k ] && echo 1000 || echo 1000000)
        "$seed" --data-dir "$work/data-$tag" --count "$n" --argon2-ops 1 --argon2-mem-kib 8 \
            2>"$logs/seed-$tag.log" | tee "$out/seed-$tag.txt" | tee -a "$summary"
        start_authd "scale-$tag" "$work/data-$tag" --argon2-ops 1 --argon2-mem-kib 8 --insecure-weak-params
        spid[$tag]=$srv_pid
        surl[$tag]=$srv_url
    done
    for w in verify login; do
        for step in 1k:a 1m:a 1m:b 1k:b; do
            tag=${step%:*}
            n=$([ "$tag" = 1k ] && echo 1000 || echo 1000000)
            run "$w-$tag-${step#*:}" scale "${surl[$tag]}" "${spid[$tag]}" --workload $w \
                --inflight 16 --user-pattern 'seed%07u' --user-count "$n" --users 1000
        done
    done
    for tag in 1k 1m; do stop_pid "${spid[$tag]}"; done
    rm -rf "$work/data-1k" "$work/data-1m"
    mean() { # mean W TAG COLUMN: of the runs a and b, empty if either is missing
        local x y
        x=$(col scale "$1-$2-a" "$1" "$3")
        y=$(col scale "$1-$2-b" "$1" "$3")
        [ -n "$x" ] && [ -n "$y" ] && calc "($x + $y) / 2" 1
    }
    for w in verify login; do
        a=$(mean $w 1k rps || true)
        b=$(mean $w 1m rps || true)
        pa=$(mean $w 1k p50_us || true)
        pb=$(mean $w 1m p50_us || true)
        r=; [ -n "$a" ] && [ -n "$b" ] && r=$(calc "$b / $a")
        say "scale: $w at 16 in flight: 1,000 users ${a:-?}/s p50 ${pa:-?} us; 1,000,000 users ${b:-?}/s p50 ${pb:-?} us"
        target "${w^} rps 1,000,000 users / 1,000 users" "$r" ">=" 0.9 \
            "1k ${a}/s p50 ${pa} us, 1M ${b}/s p50 ${pb} us (means of 2)"
    done
fi

# ---- conns: many connections x 1 in flight, Verify vs echo on authd's transport -----------
# Both servers run at once; every round measures both, the order flipping
# from round to round, and each round gives one ratio: what drifts on the
# machine during a round falls on both alike. The figure is the median
# ratio (these shapes were seen from 0.68 to 1.14 in single runs).
if want conns; then
    say ""
    say "== conns: 100 and 1,000 connections x 1 in flight, Verify vs the echo on authd's own"
    say "   transport; $rounds rounds, alternating which runs first; median of per-round ratios"
    start_echo authd
    cecho_pid=$srv_pid
    cecho_url=$srv_url
    start_main
    for c in 100 1000; do
        for r in $(seq "$rounds"); do
            if [ $((r % 2)) -eq 1 ]; then order="echo verify"; else order="verify echo"; fi
            for w in $order; do
                if [ "$w" = echo ]; then
                    run "echo-authd-c$c-r$r" conns "$cecho_url" "$cecho_pid" --workload echo \
                        --connections "$c" --inflight "$c"
                else
                    run "authd-c$c-r$r" conns "$main_url" "$main_pid" --workload verify \
                        --connections "$c" --inflight "$c"
                fi
            done
        done
        ratios=$(for r in $(seq "$rounds"); do
            v=$(col conns "authd-c$c-r$r" verify rps)
            e=$(col conns "echo-authd-c$c-r$r" echo rps)
            [ -n "$v" ] && [ -n "$e" ] && calc "$v / $e"
            echo
        done | grep . || true)
        med=$(printf '%s\n' "$ratios" | median)
        vmed=$(for r in $(seq "$rounds"); do col conns "authd-c$c-r$r" verify rps; echo; done | grep . | median || true)
        emed=$(for r in $(seq "$rounds"); do col conns "echo-authd-c$c-r$r" echo rps; echo; done | grep . | median || true)
        say "conns: $c connections: per-round Verify/echo ratios $(echo $ratios | tr ' ' ','); median $med (Verify median ${vmed}/s, echo ${emed}/s)"
        target "Verify / echo-authd, $c conns x 1 (median)" "$med" ">=" 0.9 \
            "$rounds rounds; Verify ${vmed}/s, echo ${emed}/s"
    done
    stop_pid "$cecho_pid"
fi

# ---- refresh: group commit off vs on, Refresh at 64 in flight ---------------------------
if want refresh; then
    say ""
    say "== refresh: Refresh at 64 in flight (4 connections), group commit off (--write-batch-max 1)"
    say "   vs on (default), two authd processes; $rounds rounds, alternating which runs first;"
    say "   median of the per-round ratios on / off"
    start_authd gc-off "$work/data-gc-off" --write-batch-max 1
    off_pid=$srv_pid
    off_url=$srv_url
    start_authd gc-on "$work/data-gc-on"
    on_pid=$srv_pid
    on_url=$srv_url
    for r in $(seq "$rounds"); do
        if [ $((r % 2)) -eq 1 ]; then order="off on"; else order="on off"; fi
        for w in $order; do
            if [ "$w" = off ]; then
                run "refresh-off-r$r" refresh "$off_url" "$off_pid" --workload refresh \
                    --connections 4 --inflight 64
            else
                run "refresh-on-r$r" refresh "$on_url" "$on_pid" --workload refresh \
                    --connections 4 --inflight 64
            fi
        done
    done
    ratios=$(for r in $(seq "$rounds"); do
        a=$(col refresh "refresh-on-r$r" refresh rps)
        b=$(col refresh "refresh-off-r$r" refresh rps)
        [ -n "$a" ] && [ -n "$b" ] && calc "$a / $b"
        echo
    done | grep . || true)
    med=$(printf '%s\n' "$ratios" | median)
    onmed=$(for r in $(seq "$rounds"); do col refresh "refresh-on-r$r" refresh rps; echo; done | grep . | median || true)
    offmed=$(for r in $(seq "$rounds"); do col refresh "refresh-off-r$r" refresh rps; echo; done | grep . | median || true)
    say "refresh: per-round on/off ratios $(echo $ratios | tr ' ' ','); median $med (on median ${onmed}/s, off ${offmed}/s)"
    target "Refresh 64 in flight, batch on / off (median)" "$med" ">=" 8 \
        "$rounds rounds; on ${onmed}/s, off ${offmed}/s"
    stop_pid "$off_pid"
    stop_pid "$on_pid"
fi

# ---- guard: this authd vs a baseline binary, same shapes, one run -----------------------
if want guard; then
    say ""
    say "== guard: Verify of this build (B) vs the baseline $baseline (A), $rounds rounds"
    say "   in the order A B B A ..., median of the per-pair ratios B / A"
    authd_bin=$baseline start_authd base "$work/data-base"
    base_pid=$srv_pid
    base_url=$srv_url
    start_main
    shapes=("1:1" "1:16" "1:128" "100:100" "1000:1000")
    for sh in "${shapes[@]}"; do
        c=${sh%:*}
        n=${sh#*:}
        for r in $(seq "$rounds"); do
            if [ $((r % 2)) -eq 1 ]; then order="A B"; else order="B A"; fi
            for w in $order; do
                if [ "$w" = A ]; then
                    run "base-c$c-n$n-r$r" guard "$base_url" "$base_pid" --workload verify \
                        --connections "$c" --inflight "$n"
                else
                    run "authd-c$c-n$n-r$r" guard "$main_url" "$main_pid" --workload verify \
                        --connections "$c" --inflight "$n"
                fi
            done
        done
        ratios=$(for r in $(seq "$rounds"); do
            b=$(col guard "authd-c$c-n$n-r$r" verify rps)
            a=$(col guard "base-c$c-n$n-r$r" verify rps)
            [ -n "$a" ] && [ -n "$b" ] && calc "$b / $a"
            echo
        done | grep . || true)
        med=$(printf '%s\n' "$ratios" | median)
        say "guard: $c conn(s) x $n in flight: per-round B/A $(echo $ratios | tr ' ' ','); median $med"
        target "Verify now / baseline, $c conn x $n (median)" "$med" ">=" 0.97 "$rounds rounds"
    done
    stop_pid "$base_pid"
fi

# ---- proxy: nginx auth_request to /forward-auth, and /forward-auth vs the echo -------------
# wrk drives nginx (and the side port); authbench drives the echo. nginx runs
# examples/proxies/nginx.conf as written (ports filled in), plus two server
# blocks: the upstream (return 200) and the same proxy without auth.
if want proxy; then
    say ""
    say "== proxy: nginx + auth_request to authd vs nginx without auth (same upstream), and"
    say "   /forward-auth alone vs the echo on authd's transport; 50 connections, $rounds rounds,"
    say "   alternating which runs first; medians of the per-round ratios"
    if ! command -v nginx >/dev/null || ! command -v wrk >/dev/null; then
        say "!! proxy: nginx or wrk not installed (scripts/install-deps.sh); section skipped"
    else
        freeport() { /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
        rm -f "$work/proxy-http.url"
        start_authd proxy "$work/data-proxy" --http-listen http://127.0.0.1:0 \
            --http-url-file "$work/proxy-http.url" --http-trusted-proxies 127.0.0.1/32
        px_pid=$srv_pid
        px_url=$srv_url
        px_http=$(wait_url "$work/proxy-http.url" "$px_pid")
        pw='bench proxy password, long enough 7'
        echo "$pw" | "$authctl" --url "$px_url" --ca "$tls/ca.crt" register --username benchproxy \
            --email benchproxy@example.com --password-stdin >>"$logs/proxy-authctl.log" 2>&1
        tok=$(echo "$pw" | "$authctl" --url "$px_url" --ca "$tls/ca.crt" login --login benchproxy \
            --password-stdin 2>>"$logs/proxy-authctl.log")
        ngx=$work/nginx
        mkdir -p "$ngx"
        p_auth=$(freeport) p_noauth=$(freeport) p_app=$(freeport)
        cp "$root/examples/proxies/authd_subrequest.conf" "$root/examples/proxies/authd_identity.conf" "$ngx/"
        sed -e "s|@PREFIX@|$ngx|g" -e "s|@LISTEN@|127.0.0.1:$p_auth|g" \
            -e "s|@AUTHD@|${px_http#http://}|g" -e "s|@APP@|127.0.0.1:$p_app|g" \
            "$root/examples/proxies/nginx.conf" \
            | awk '{ l[NR] = $0 } /^}/ { last = NR } END { for (i = 1; i < last; i++) print l[i] }' \
            >"$ngx/nginx.conf" # without the http block's closing brace: two servers follow
        cat >>"$ngx/nginx.conf" <<NGX
    server {
        listen 127.0.0.1:$p_app;
        access_log off;
        location / { return 200 "ok\n"; }
    }
    server {
        listen 127.0.0.1:$p_noauth;
        access_log off;
        location / { proxy_http_version 1.1; proxy_set_header Connection ""; proxy_pass http://app; }
    }
}
NGX
        sed -i "s|access_log $ngx/access.log;|access_log off;|" "$ngx/nginx.conf"
        nginx -p "$ngx" -c "$ngx/nginx.conf" -g 'daemon off;' >>"$logs/nginx.log" 2>&1 &
        ngx_pid=$!
        pids+=("$ngx_pid")
        for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$p_noauth/" && break; sleep 0.1; done
        start_echo authd
        pecho_pid=$srv_pid
        pecho_url=$srv_url
        # wrkrun LABEL URL: one wrk run; the rate, or nothing when any answer was not 2xx.
        wrkrun() {
            local l=$1 u=$2 f
            f=$logs/wrk-$l.log
            wrk -t1 -c50 -d"${dur}s" -H "Authorization: Bearer $tok" "$u" >"$f" 2>&1 || true
            if grep -q 'Non-2xx' "$f"; then
                echo "!! $l: answers other than 2xx (see $f)" >&2
                return 0
            fi
            awk '/^Requests\/sec:/ { print $2 }' "$f"
        }
        declare -A pr
        for r in $(seq "$rounds"); do
            if [ $((r % 2)) -eq 1 ]; then order="auth noauth fa echo"; else order="noauth auth echo fa"; fi
            for w in $order; do
                case $w in
                auth) pr[auth$r]=$(wrkrun "nginx-auth-r$r" "http://127.0.0.1:$p_auth/") ;;
                noauth) pr[noauth$r]=$(wrkrun "nginx-noauth-r$r" "http://127.0.0.1:$p_noauth/") ;;
                fa) pr[fa$r]=$(wrkrun "forward-auth-r$r" "$px_http/forward-auth") ;;
                echo)
                    run "echo-authd-c50-r$r" proxy "$pecho_url" "$pecho_pid" --workload echo \
                        --connections 50 --inflight 50
                    pr[echo$r]=$(col proxy "echo-authd-c50-r$r" echo rps)
                    ;;
                esac
            done
            say "proxy: round $r: nginx+auth ${pr[auth$r]:-?}/s, nginx no auth ${pr[noauth$r]:-?}/s, /forward-auth ${pr[fa$r]:-?}/s, echo-authd ${pr[echo$r]:-?}/s"
        done
        r1=$(for r in $(seq "$rounds"); do [ -n "${pr[auth$r]:-}" ] && [ -n "${pr[noauth$r]:-}" ] && calc "${pr[auth$r]} / ${pr[noauth$r]}"; echo; done | grep . || true)
        r2=$(for r in $(seq "$rounds"); do [ -n "${pr[fa$r]:-}" ] && [ -n "${pr[echo$r]:-}" ] && calc "${pr[fa$r]} / ${pr[echo$r]}"; echo; done | grep . || true)
        m1=$(printf '%s\n' "$r1" | median)
        m2=$(printf '%s\n' "$r2" | median)
        say "proxy: nginx+auth / nginx no auth per round $(echo $r1 | tr ' ' ','); median $m1"
        say "proxy: /forward-auth (wrk) / echo-authd (authbench) per round $(echo $r2 | tr ' ' ','); median $m2"
        target "nginx auth_request / nginx no auth (median)" "$m1" ">=" 0.5 "$rounds rounds, wrk -c50"
        say "   (/forward-auth alone / echo-authd: $m2 — the issue asks for the figure, no target)"
        stop_pid "$ngx_pid"
        stop_pid "$pecho_pid"
        stop_pid "$px_pid"
    fi
fi

# ---- all rows, plots, the table -----------------------------------------------------
for f in transport flood login rss scale conns refresh proxy guard; do
    [ -f "$out/$f.csv" ] || continue
    if [ -f "$out/results.csv" ]; then tail -n +2 "$out/$f.csv" >>"$out/results.csv"; else cp "$out/$f.csv" "$out/results.csv"; fi
done
if [ -f "$out/transport.csv" ]; then
    plot_in=("$out/transport.csv")
    [ -s "$out/peer.txt" ] && plot_in+=("$out/peer.txt")
    bash "$root/scripts/plot-bench.sh" -o "$out" -t "authd transport (${cores} cores shared)" \
        "${plot_in[@]}" 2>>"$logs/plot.log" || say "!! plot-bench failed (see $logs/plot.log)"
fi

say ""
say "== targets (one run on $cores shared cores; ratios, not a timed test)"
say "$(printf '%-44s %9s %2s %-5s %-25s %s' target measured "" limit result detail)"
for t in "${targets[@]}"; do say "$t"; done
say ""
say "rows: $out/results.csv$([ -s "$out/peer.txt" ] && echo " and $out/peer.txt"); logs: $logs"
[ -f "$out/throughput.png" ] && say "plots: $out/throughput.png $out/latency.png"
[ "$failures" -eq 0 ] || { say "bench.sh: $failures run(s) failed"; exit 1; }
