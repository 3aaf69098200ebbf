#!/usr/bin/env bash
# durability.sh — crash tests of authd's store: kill -9 under load, restart,
# and check that nothing acknowledged was lost and nothing half-written was
# left; then fill a tiny store to MAP_FULL and check it stays whole.
#
#   scripts/durability.sh                 20 kills (the full run)
#   scripts/durability.sh --ci            5 kills (the CI version)
#   scripts/durability.sh --kills N --seed S --build DIR --keep --load-threads N
#
# Each round: start authd (TLS on 127.0.0.1, a port of its choosing, a temp
# data dir, cheap argon2) -> authd-durload check (the journal against the
# restarted server and a dump of the store) -> authd-durload load (Register,
# Login + Refresh, Logout from --load-threads threads (default 8), every
# acknowledged operation fsynced to the journal before it counts) -> kill -9
# authd after a random 0.3..3 s (with that many writes in flight, authd's
# write pool commits several in one transaction: group commit) ->
# authd-fsck (index consistency walk) and mdb_stat/mdb_dump on the data dir.
# A last restart is checked, then authd is stopped with SIGTERM (exit 0).
#
# Checked after every kill:
#   (a) every acknowledged Register is in the store under its username AND
#       its email with the acknowledged id, and a sample logs in with its
#       password; every acknowledged Login's token still verifies (same
#       session, same user) until it expires; every acknowledged Logout's
#       token verifies REVOKED; the refresh token of every acknowledged
#       Refresh (every other Login is refreshed once) is still the live one:
#       it refreshes OK (unless a later Refresh was in flight at the kill);
#   (b) every Register in flight at the kill (or refused) is all there (by
#       username and email, same id, and Login works both ways) or absent
#       from both indexes; what a check once saw stays so;
#   (c) mdb_stat and mdb_dump read the whole environment without error, and
#       authd-fsck finds every index entry backed by its record and vice versa.
# MAP_FULL: authd on --map-size-mb 1 registers until RESOURCE_EXHAUSTED
# (reason STORE_FULL); Logout and Login on the full store answer OK or
# STORE_FULL; SIGTERM exits 0; a restart on the full store works; (a)-(c) hold.
# Negative controls: a journal that claims a write authd never acknowledged,
# and a store with one index entry removed, must both FAIL the checks.
#
# authd is driven through its flags only. Add flags for every authd started
# here with AUTHD_EXTRA_FLAGS (word-split), e.g.
#   AUTHD_EXTRA_FLAGS="--io-threads 2" scripts/durability.sh
# --insecure-weak-params is added by itself when authd --help lists it (the
# argon2 parameter floors need it for the cheap test parameters).
set -euo pipefail
cd "$(dirname "$0")/.."

kills=20
build="build-test"
keep=0
load_threads=8
seed=${RANDOM}${RANDOM}
while [ $# -gt 0 ]; do
    case $1 in
    --ci) kills=5 ;;
    --kills) kills=$2; shift ;;
    --seed) seed=$2; shift ;;
    --build) build=$2; shift ;;
    --keep) keep=1 ;;
    --load-threads) load_threads=$2; shift ;;
    -h | --help) sed -n '2,41p' "$0"; exit 0 ;;
    *) echo "durability: unknown argument $1" >&2; exit 2 ;;
    esac
    shift
done
RANDOM=$seed

if [ ! -f "$build/CMakeCache.txt" ]; then
    cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
fi
cmake --build "$build" -j"$(nproc)" --target authd authd-fsck authd-durload >/dev/null
authd=$build/authd
fsck=$build/authd-fsck
dl=$build/tests/durability/authd-durload
for tool in mdb_stat mdb_dump mdb_load; do
    command -v $tool >/dev/null || { echo "durability: $tool missing (apt-get install lmdb-utils)" >&2; exit 2; }
done

work=$(mktemp -d "${TMPDIR:-/tmp}/authd-durability.XXXXXX")
pid=""
load_pid=""
ok=0
cleanup() {
    for p in $load_pid $pid; do kill -9 "$p" 2>/dev/null || true; done
    if [ "$keep" = 1 ] || [ "$ok" = 0 ]; then
        echo "durability: work dir kept: $work" >&2
    else
        rm -rf "$work"
    fi
}
trap cleanup EXIT
die() { echo "durability: FAIL: $*" >&2; [ -n "$pid" ] && tail -n 20 "$work/authd.log" >&2; exit 1; }

bash scripts/dev-tls.sh "$work/tls" >/dev/null 2>&1
ca=$work/tls/ca.crt
# The signing key is written here, never created by authd.
head -c 64 /dev/urandom >"$work/signing.key"
chmod 600 "$work/signing.key"

# The flags of every authd started here, in one place.
base_flags=(--listen tls+tcp://127.0.0.1:0 --url-file "$work/url"
    --signing-key "$work/signing.key"
    --tls-cert "$work/tls/server.crt" --tls-key "$work/tls/server.key"
    --argon2-ops 1 --argon2-mem-kib 64)
# (--help is read whole first: with pipefail, grep -q closing the pipe
# early would fail the pipeline through authd's SIGPIPE.)
authd_help=$("$authd" --help 2>&1 || true)
if grep -q -- '--insecure-weak-params' <<<"$authd_help"; then
    base_flags+=(--insecure-weak-params)
fi
# The load comes from one address (127.0.0.1) and repeats logins of a few
# accounts on purpose: the per-caller abuse limits would refuse it as
# designed, which is not what this run measures. Production defaults
# otherwise.
if grep -q -- '--caller-registrations' <<<"$authd_help"; then
    base_flags+=(--caller-registrations 0 --caller-login-failures 0 --login-free-attempts 100)
fi
# shellcheck disable=SC2206 # word splitting is the point
base_flags+=(${AUTHD_EXTRA_FLAGS:-})

# start_authd DATA-DIR [FLAGS...]: start authd in the background, wait
# until it answers; sets pid and url.
start_authd() {
    local data=$1; shift
    rm -f "$work/url"
    echo "== start: $authd --data-dir $data ${base_flags[*]} $*" >>"$work/authd.log"
    "$authd" --data-dir "$data" "${base_flags[@]}" "$@" >>"$work/authd.log" 2>&1 &
    pid=$!
    url=$("$dl" wait --url-file "$work/url" --ca "$ca" --deadline-ms 60000 --pid "$pid") \
        || die "authd did not come up"
}

# stop_authd: SIGTERM, which must end authd with status 0.
stop_authd() {
    local rc=0
    kill -TERM "$pid"
    wait "$pid" || rc=$?
    pid=""
    [ "$rc" = 0 ] || die "authd exited $rc on SIGTERM"
}

# check_store DATA-DIR DUMP: (c), with authd down. mdb_stat -a reads every
# table's root; mdb_dump -a walks every page of every table; authd-fsck
# walks every record and index entry.
check_store() {
    local data=$1 dump=$2
    mdb_stat -e "$data" >"$work/mdb_stat.out" 2>&1 || die "mdb_stat -e: $(cat "$work/mdb_stat.out")"
    mdb_stat -a "$data" >>"$work/mdb_stat.out" 2>&1 || die "mdb_stat -a: $(tail -n 3 "$work/mdb_stat.out")"
    mdb_dump -a "$data" >/dev/null 2>"$work/mdb_dump.err" || die "mdb_dump -a: $(cat "$work/mdb_dump.err")"
    "$fsck" --quiet --data-dir "$data" --dump "$dump" || die "authd-fsck found problems in $data"
    stat_ok=$((stat_ok + 1))
}

# kv KEY LINE: the value of key=value in LINE.
kv() { sed -n "s/.*\\b$1=\\([0-9]*\\).*/\\1/p" <<<"$2"; }

echo "durability: $kills kills, seed $seed, work dir $work" >&2
data=$work/data
journal=$work/journal
stat_ok=0
checks_ok=0
sum_reg=0 sum_login=0 sum_logout=0 sum_unknown=0
t_start=$(date +%s)

start_authd "$data"
for ((k = 1; k <= kills; k++)); do
    "$dl" load --url "$url" --ca "$ca" --journal "$journal" --tag "r$k" --threads "$load_threads" \
        >"$work/load.out" 2>"$work/load.err" &
    load_pid=$!
    # A random moment 0.3 .. 3.0 s into the load.
    ms=$((300 + RANDOM % 2700))
    sleep "$(printf '%d.%03d' $((ms / 1000)) $((ms % 1000)))"
    kill -0 "$load_pid" 2>/dev/null || die "the load ended early: $(cat "$work/load.err")"
    kill -9 "$pid"
    wait "$pid" 2>/dev/null || true
    pid=""
    kill -TERM "$load_pid"
    wait "$load_pid" || die "load failed: $(cat "$work/load.err")"
    load_pid=""
    line=$(cat "$work/load.out")
    sum_reg=$((sum_reg + $(kv registered "$line")))
    sum_login=$((sum_login + $(kv logins "$line")))
    sum_logout=$((sum_logout + $(kv logouts "$line")))
    sum_unknown=$((sum_unknown + $(kv register_unknown "$line") + $(kv login_unknown "$line") + $(kv logout_unknown "$line")))

    check_store "$data" "$work/dump"
    start_authd "$data"
    "$dl" check --url "$url" --ca "$ca" --journal "$journal" --dump "$work/dump" --timeout-ms 15000 \
        --login-sample 10 >"$work/check.out" 2>"$work/check.err" \
        || { cat "$work/check.err" "$work/check.out" >&2; die "check after kill $k failed"; }
    checks_ok=$((checks_ok + 1))
    printf 'kill %2d at %4d ms: %s\n' "$k" "$ms" "$line" >&2
    printf '        %s\n' "$(cat "$work/check.out")" >&2
done

# Negative controls against the last restart: a journal claiming writes
# authd never acknowledged must fail the check.
cp "$journal" "$work/journal.bad"
printf 'R? dfake-1 dfake-1@durability.example.com AAAAAAAAAAAAAAAAAAAAAA\nR dfake-1 %s\n' \
    "$(printf '%032d' 0)" >>"$work/journal.bad"
tok=$(grep -m1 '^L ' "$journal" | cut -d' ' -f5)
printf 'L dfake-1 %s %d %s\n' "$(printf '%032d' 1)" $(($(date +%s) + 600)) "${tok%?}" >>"$work/journal.bad"
# A Refresh authd never acknowledged: the last refresh token of a session
# never logged out, with its last character changed.
fline=$(awk '$1 == "O" || $1 == "O?" { out[$2] = 1 } $1 == "F" { f[$2] = $3 }
    END { for (sid in f) if (!(sid in out)) { print sid, f[sid]; exit } }' "$journal")
[ -n "$fline" ] || die "negative control: no refreshed live session in the journal"
fsid=${fline%% *}
ftok=${fline#* }
case ${ftok: -1} in A) flast=B ;; *) flast=A ;; esac
printf 'F %s %s\n' "$fsid" "${ftok%?}$flast" >>"$work/journal.bad"
if "$dl" check --url "$url" --ca "$ca" --journal "$work/journal.bad" --dump "$work/dump" \
    --login-sample 0 >/dev/null 2>"$work/neg.err"; then
    die "negative control: a forged acknowledged Register passed the check"
fi
grep -q "acknowledged Register of dfake-1" "$work/neg.err" || die "negative control: wrong failure: $(head -n 3 "$work/neg.err")"
grep -q "acknowledged Login session 0*1 " "$work/neg.err" || die "negative control: a forged Login passed: $(head -n 3 "$work/neg.err")"
grep -q "acknowledged Refresh of session $fsid lost" "$work/neg.err" || die "negative control: a forged Refresh passed: $(head -n 3 "$work/neg.err")"
stop_authd
check_store "$data" "$work/dump"
final=$(grep -o 'store_users=[0-9]* store_sessions=[0-9]*' "$work/check.out")

# Negative control: the same store with one users_by_email entry dropped
# (a half-written user) must fail authd-fsck.
mdb_dump -a "$data" >"$work/store.dump"
awk '/^database=users_by_email$/ { db = 1 } db && /^HEADER=END/ { hdr = 1; print; next }
     db && hdr && /^ / && drop < 2 { drop++; next } { print }' "$work/store.dump" >"$work/store-bad.dump"
mkdir -p "$work/bad"
mdb_load -f "$work/store-bad.dump" "$work/bad" 2>"$work/neg.err" || die "mdb_load: $(cat "$work/neg.err")"
if "$fsck" --quiet --data-dir "$work/bad" 2>"$work/neg.err"; then
    die "negative control: a store missing an email index entry passed authd-fsck"
fi
grep -q "users_by_email" "$work/neg.err" || die "negative control: wrong fsck failure: $(head -n 3 "$work/neg.err")"

# MAP_FULL on a 1 MiB map.
full=$work/full
start_authd "$full" --map-size-mb 1
"$dl" fill --url "$url" --ca "$ca" --journal "$work/full.journal" --tag f \
    >"$work/fill.out" 2>"$work/fill.err" \
    || { cat "$work/fill.err" "$work/fill.out" >&2; die "MAP_FULL: fill failed"; }
stop_authd
check_store "$full" "$work/full.dump"
start_authd "$full" --map-size-mb 1
"$dl" check --url "$url" --ca "$ca" --journal "$work/full.journal" --dump "$work/full.dump" --timeout-ms 15000 \
    --login-sample 10 --store-full-ok >"$work/fullcheck.out" 2>"$work/fullcheck.err" \
    || { cat "$work/fullcheck.err" "$work/fullcheck.out" >&2; die "MAP_FULL: check after restart failed"; }
stop_authd
check_store "$full" "$work/full.dump"
fill_line=$(grep '^fill: registered' "$work/fill.out")

t_end=$(date +%s)
ok=1
{
    echo "durability: PASS seed=$seed kills=$kills seconds=$((t_end - t_start))"
    echo "durability: acknowledged registers=$sum_reg logins=$sum_login logouts=$sum_logout (in flight at a kill, outcome unknown: $sum_unknown)"
    echo "durability: checks passed=$checks_ok/$kills store checks clean (mdb_stat, mdb_dump, authd-fsck)=$stat_ok final $final"
    echo "durability: negative controls failed as they must: forged Register, Login and Refresh acks, missing index entry"
    echo "durability: MAP_FULL (--map-size-mb 1): $fill_line"
    grep '^fill: \(first\|Logout\|Login\)' "$work/fill.out" | sed 's/^/durability: MAP_FULL /'
    echo "durability: MAP_FULL after restart: $(cat "$work/fullcheck.out")"
} | tee "$work/summary" >&2
