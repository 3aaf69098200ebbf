#!/usr/bin/env bash
# callgrind-rpc.sh — user-space instructions per request of authd (Verify) or
# of authd-echo on authd's own transport, under valgrind's callgrind: the
# robust per-request figure on a noisy shared machine (instruction counts do
# not move with the load; the kernel and SHA-NI are invisible to it: valgrind
# hides the SHA extensions, so OpenSSL's SHA-256 runs its plain code path).
#
#   scripts/callgrind-rpc.sh [--workload verify|echo] [--connections C]
#                            [--rate R] [--seconds S] [--settle S]
#                            [--build DIR] [--authd BIN] [--out DIR]
#                            [--flag F]...
#
#   --workload W     verify (default) or echo
#   --connections C  TLS connections, one request in flight each (default 100)
#   --rate R         requests per second, open loop (default 300: low enough
#                    for the server under callgrind to keep up)
#   --seconds S      the measured window (default 10)
#   --settle S       seconds between starting the load and zeroing the
#                    counters: handshakes and authbench's setup (logins) are
#                    left out (default 25)
#   --build DIR      a Release build tree (default ./build-bench, as bench.sh
#                    makes it)
#   --authd BIN      another authd binary (e.g. a baseline), run without the
#                    flags it may not know
#   --out DIR        where callgrind.out.* and the annotations go (default a
#                    temporary directory, removed)
#   --flag F         one more authd flag (repeatable), e.g. --flag
#                    --verify-cache-entries=0 to measure Verify without its cache
#
# Prints requests, total instructions and instructions per request of the
# window, then the inclusive cost per request of the functions on the hot
# path. One I/O thread (--io-threads 1), cheap argon2 (the logins of the
# setup only), authbench outside valgrind.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
wl=verify conns=100 rate=300 secs=10 settle=25 bdir=$root/build-bench authd_bin= out=
flags=()
while [ $# -gt 0 ]; do
    case $1 in
    --workload) wl=${2:?}; shift 2 ;;
    --connections) conns=${2:?}; shift 2 ;;
    --rate) rate=${2:?}; shift 2 ;;
    --seconds) secs=${2:?}; shift 2 ;;
    --settle) settle=${2:?}; shift 2 ;;
    --build) bdir=${2:?}; shift 2 ;;
    --authd) authd_bin=${2:?}; shift 2 ;;
    --out) out=${2:?}; shift 2 ;;
    --flag) flags+=("${2:?}"); shift 2 ;;
    -h | --help) sed -n '2,33p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "callgrind-rpc.sh: unknown option $1 (--help)" >&2; exit 2 ;;
    esac
done
case $wl in verify | echo) ;; *) echo "callgrind-rpc.sh: --workload verify|echo" >&2; exit 2 ;; esac
command -v valgrind >/dev/null || { echo "callgrind-rpc.sh: valgrind is not installed" >&2; exit 1; }

work=$(mktemp -d /tmp/authd-cg.XXXXXX)
[ -n "$out" ] || out=$work/out
mkdir -p "$out"
pid=
cleanup() {
    [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT

(umask 077; head -c 64 /dev/urandom >"$work/signing.key")
bash "$root/scripts/dev-tls.sh" "$work/tls" >/dev/null 2>&1
tls=(--tls-cert "$work/tls/server.crt" --tls-key "$work/tls/server.key")
cg=(valgrind --tool=callgrind --callgrind-out-file="$out/callgrind.out" --dump-instr=no)
if [ "$wl" = echo ]; then
    "${cg[@]}" "$bdir/clients/authd-echo" --engine authd --io-threads 1 \
        --listen tls+tcp://127.0.0.1:0 --url-file "$work/url" "${tls[@]}" >"$out/server.log" 2>&1 &
elif [ -n "$authd_bin" ]; then
    "${cg[@]}" "$authd_bin" --io-threads 1 --argon2-mem-kib 64 --argon2-ops 1 \
        --listen tls+tcp://127.0.0.1:0 --url-file "$work/url" --data-dir "$work/data" "${tls[@]}" \
        --signing-key "$work/signing.key" --log-level warn 2>"$out/server.log" &
else
    "${cg[@]}" "$bdir/authd" --io-threads 1 --insecure-weak-params --argon2-mem-kib 64 --argon2-ops 1 \
        --max-connections-per-source 100000 --caller-registrations 0 --caller-login-failures 0 \
        --login-free-attempts 100 --log-failure-rate 0 \
        --listen tls+tcp://127.0.0.1:0 --url-file "$work/url" --data-dir "$work/data" "${tls[@]}" \
        --signing-key "$work/signing.key" --log-level warn ${flags[@]+"${flags[@]}"} 2>"$out/server.log" &
fi
pid=$!
for _ in $(seq 600); do [ -s "$work/url" ] && break; sleep 0.1; done
[ -s "$work/url" ] || { echo "callgrind-rpc.sh: the server did not come up ($out/server.log)" >&2; exit 1; }

"$bdir/clients/authbench" --url "$(cat "$work/url")" --ca "$work/tls/ca.crt" --workload "$wl" \
    --connections "$conns" --inflight "$conns" --rate "$rate" --warmup 1 \
    --duration $((settle + secs + 5)) --timeout-ms 30000 --no-progress >"$out/authbench.txt" 2>&1 &
bpid=$!
sleep "$settle"
callgrind_control -z "$pid" >/dev/null
sleep "$secs"
callgrind_control -d "$pid" >/dev/null
wait "$bpid" || true
grep '^bench=' "$out/authbench.txt" || true

dump=$(ls "$out"/callgrind.out.* | sort | tail -1)
callgrind_annotate --inclusive=yes --tree=calling --threshold=100 "$dump" >"$out/tree.txt" 2>/dev/null
# requests: calls of conn_read with a frame (Verify: of authd_handle_verify)
fn=authd_handle_verify
[ "$wl" = echo ] && fn=conn_read
n=$(grep -E "> .*:$fn \(" "$out/tree.txt" | sed -E 's/.*\(([0-9,]+)x\).*/\1/' | tr -d , |
    awk '{s += $1} END {print s + 0}')
tot=$(grep 'PROGRAM TOTALS' "$out/tree.txt" | awk '{gsub(",", "", $1); print $1}')
[ "$n" -gt 0 ] || { echo "callgrind-rpc.sh: no requests in the window" >&2; exit 1; }
echo "requests=$n instructions=$tot per_request=$((tot / n))"
for g in conn_read parse_input authd_dispatch authd_handle_verify authd_token_verify_cached \
    authd_token_verify hmac crypto_shorthash_siphash24 CRYPTO_memcmp \
    authd_store_verify_lookup authd_call_finish request_done conn_flush SSL_read SSL_write; do
    v=$(grep -E "\* .*:$g \[" "$out/tree.txt" | head -1 | awk '{gsub(",", "", $1); print $1}')
    [ -n "$v" ] && printf '  %-28s %8d per request (inclusive)\n' "$g" $((v / n))
done
