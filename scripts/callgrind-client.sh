#!/usr/bin/env bash
# callgrind-client.sh — user-space instructions per request of the *client*
# side (authbench on libauthd-client) under valgrind's callgrind, against a
# native authd (Verify) or authd-echo on authd's own transport (echo). The
# counterpart of callgrind-rpc.sh, which measures the server: at the many-
# connection shape client and server share the cores, so the client's CPU
# per request counts as much as the server's. Instruction counts do not move
# with the machine's load, so before/after figures are comparable here.
#
#   scripts/callgrind-client.sh [--workload verify|echo] [--connections C]
#                               [--rate R] [--seconds S] [--settle S]
#                               [--build DIR] [--authbench BIN] [--out DIR]
#
#   --workload W     verify (default) or echo
#   --connections C  TLS connections, one request in flight each (default 100)
#   --rate R         requests per second, open loop (default: closed loop, the
#                    shape of bench.sh's conns section: each reply's callback
#                    sends the next request)
#   --seconds S      the measured window (default 10)
#   --settle S       seconds between the end of authbench's setup (every
#                    connection open, users registered and logged in, every
#                    op's first call started: its first progress tick) and
#                    zeroing the counters, so that handshakes, setup and the
#                    first requests are left out (default 5; at 1,000
#                    connections use 60: redials of connections idle-closed
#                    during the slow setup finish after that tick)
#   --build DIR      a Release build tree (default ./build-bench, as bench.sh
#                    makes it)
#   --authbench BIN  another authbench binary (e.g. a baseline build)
#   --out DIR        where callgrind.out.* and the annotations go (default a
#                    temporary directory, removed)
#
# Prints requests, total instructions and instructions per request of the
# window (all of authbench's threads), then the inclusive cost per request of
# the client's hot-path functions. Requests are counted as calls of
# authbench's reply callback (on_reply, on_echo).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
wl=verify conns=100 rate= secs=10 settle=5 bdir=$root/build-bench bench_bin= out=
while [ $# -gt 0 ]; do
    case $1 in
    --workload) wl=${2:?}; shift 2 ;;
    --connections) conns=${2:?}; shift 2 ;;
    --rate) rate=${2:?}; shift 2 ;;
    --seconds) secs=${2:?}; shift 2 ;;
    --settle) settle=${2:?}; shift 2 ;;
    --build) bdir=${2:?}; shift 2 ;;
    --authbench) bench_bin=${2:?}; shift 2 ;;
    --out) out=${2:?}; shift 2 ;;
    -h | --help) sed -n '2,32p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "callgrind-client.sh: unknown option $1 (--help)" >&2; exit 2 ;;
    esac
done
case $wl in verify | echo) ;; *) echo "callgrind-client.sh: --workload verify|echo" >&2; exit 2 ;; esac
command -v valgrind >/dev/null || { echo "callgrind-client.sh: valgrind is not installed" >&2; exit 1; }
[ -n "$bench_bin" ] || bench_bin=$bdir/clients/authbench

work=$(mktemp -d /tmp/authd-cgc.XXXXXX)
[ -n "$out" ] || out=$work/out
mkdir -p "$out"
pid= bpid=
cleanup() {
    [ -n "$bpid" ] && kill "$bpid" 2>/dev/null && wait "$bpid" 2>/dev/null
    [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT

(umask 077; head -c 64 /dev/urandom >"$work/signing.key")
bash "$root/scripts/dev-tls.sh" "$work/tls" >/dev/null 2>&1
tls=(--tls-cert "$work/tls/server.crt" --tls-key "$work/tls/server.key")
if [ "$wl" = echo ]; then
    "$bdir/clients/authd-echo" --engine authd --listen tls+tcp://127.0.0.1:0 \
        --url-file "$work/url" "${tls[@]}" >"$out/server.log" 2>&1 &
else
    "$bdir/authd" --insecure-weak-params --argon2-mem-kib 64 --argon2-ops 1 \
        --max-connections-per-source 100000 --caller-registrations 0 --caller-login-failures 0 \
        --login-free-attempts 100 --log-failure-rate 0 \
        --listen tls+tcp://127.0.0.1:0 --url-file "$work/url" --data-dir "$work/data" "${tls[@]}" \
        --signing-key "$work/signing.key" --log-level warn 2>"$out/server.log" &
fi
pid=$!
for _ in $(seq 600); do [ -s "$work/url" ] && break; sleep 0.1; done
[ -s "$work/url" ] || { echo "callgrind-client.sh: the server did not come up ($out/server.log)" >&2; exit 1; }

load=(--connections "$conns" --inflight "$conns")
[ -n "$rate" ] && load+=(--rate "$rate")
valgrind --tool=callgrind --callgrind-out-file="$out/callgrind.out" --dump-instr=no \
    --max-threads=$((conns + 100)) \
    "$bench_bin" --url "$(cat "$work/url")" --ca "$work/tls/ca.crt" \
    --workload "$wl" "${load[@]}" --warmup 1 --duration 3600 \
    --timeout-ms 30000 --progress >"$out/authbench.txt" 2>&1 &
bpid=$!
# The setup under valgrind takes a while (at 1,000 connections minutes: the
# connections opened first are idle-closed and redialed by the first calls),
# longer on a busy machine. The first progress tick comes once every op has
# started its first call: wait for it (up to 20 minutes), then settle.
for _ in $(seq 12000); do
    grep -q '\[warm-up\|\[measure' "$out/authbench.txt" && break
    kill -0 "$bpid" 2>/dev/null || break
    sleep 0.1
done
grep -q '\[warm-up\|\[measure' "$out/authbench.txt" ||
    { echo "callgrind-client.sh: authbench's setup did not finish ($out/authbench.txt)" >&2; exit 1; }
sleep "$settle"
callgrind_control -z "$bpid" >/dev/null 2>&1
sleep "$secs"
callgrind_control -d "$bpid" >/dev/null 2>&1
kill -INT "$bpid"
wait "$bpid" || true
bpid=
grep '^bench=' "$out/authbench.txt" || true

dump=$(ls "$out"/callgrind.out.* | sort | tail -1)
callgrind_annotate --inclusive=yes --tree=calling --threshold=100 "$dump" >"$out/tree.txt" 2>/dev/null
callgrind_annotate --inclusive=no --threshold=100 "$dump" >"$out/self.txt" 2>/dev/null
fn=on_reply
[ "$wl" = echo ] && fn=on_echo
n=$(grep -E "> .*:$fn \(" "$out/tree.txt" | sed -E 's/.*\(([0-9,]+)x\).*/\1/' | tr -d , |
    awk '{s += $1} END {print s + 0}')
tot=$(grep 'PROGRAM TOTALS' "$out/tree.txt" | awk '{gsub(",", "", $1); print $1}')
[ "$n" -gt 0 ] || { echo "callgrind-client.sh: no requests in the window" >&2; exit 1; }
echo "requests=$n instructions=$tot per_request=$((tot / n))"
for g in io_round read_some SSL_read parse_frames run_batch cl_run_batch unpack_reply \
    protobuf_c_message_unpack protobuf_c_message_free_unpacked on_reply on_echo op_issue \
    authd_client_verify_async authd_client_call_async authd_client_call_raw_async \
    call_envelope start_call flush cl_flush SSL_write malloc free memset; do
    v=$(grep -E "\* .*:$g \[" "$out/tree.txt" | head -1 | awk '{gsub(",", "", $1); print $1}' || true)
    [ -n "$v" ] && printf '  %-34s %8d per request (inclusive)\n' "$g" $((v / n))
done
echo "top self cost per request:"
awk -v n="$n" '/^-+$/ { sep++; next }
    sep >= 4 && $1 ~ /^[0-9,]+$/ && $0 !~ /PROGRAM TOTALS|clone\.S|start_thread/ {
        v = $1; gsub(",", "", v); f = $0; sub(/^ *[0-9,]+ +\( *[0-9.]+%\) +/, "", f)
        printf "  %8d  %s\n", v / n, f
        if (++k == 25) exit }' "$out/self.txt"
