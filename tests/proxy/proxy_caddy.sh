#!/usr/bin/env bash
# proxy_caddy.sh — Caddy (Debian 12's caddy 2.6.2) with forward_auth to
# authd's side port, in front of a small upstream (upstream.py), configured
# by examples/proxies/Caddyfile with only the site address and the ports
# changed (and Caddy's admin API and automatic HTTPS off). Checks: a valid
# token reaches the upstream with the identity headers and none of the
# forged ones (also the "_" spelling); a user without roles arrives without
# X-Auth-Roles (not Caddy 2.6's placeholder text); no token, a malformed, a
# tampered and a revoked token → 401 with WWW-Authenticate: Bearer; a user
# without the role → 403 on /admin/, one with it → 200.
#
#   proxy_caddy.sh AUTHD_BIN AUTHCTL_BIN SOURCE_DIR TLS_DIR
set -euo pipefail
authd=$1 authctl=$2 src=$3 tls=$4
command -v caddy >/dev/null || { echo "proxy_caddy: caddy not installed (scripts/install-deps.sh)"; exit 77; }
command -v curl >/dev/null || { echo "proxy_caddy: curl not installed"; exit 77; }
py=/usr/bin/python3
work=$(mktemp -d /tmp/authd-caddy.XXXXXX)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
fail() {
    echo "proxy_caddy: FAIL: $*" >&2
    for f in authd.log caddy.log; do echo "--- $f" >&2; tail -20 "$work/$f" >&2 || true; done
    exit 1
}
wait_file() { # wait_file FILE PID WHAT
    local deadline=$((SECONDS + 30))
    until [ -s "$1" ]; do
        kill -0 "$2" 2>/dev/null || fail "$3 exited at start"
        [ $SECONDS -lt $deadline ] || fail "$3 did not start in 30 s"
        sleep 0.05
    done
}
freeport() { $py -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

weak=(--argon2-ops 1 --argon2-mem-kib 8 --insecure-weak-params --password-min-bits 26)
pw='correct horse battery staple 42'
echo "$pw" | "$authd" user add boss --email boss@example.com --role admin --password-stdin \
    --data-dir "$work/data" "${weak[@]}" >/dev/null || fail "authd user add"

"$authd" --listen tls+tcp://127.0.0.1:0 --url-file "$work/url" --data-dir "$work/data" \
    --http-listen http://127.0.0.1:0 --http-url-file "$work/http-url" \
    --http-trusted-proxies 127.0.0.1/32 \
    --tls-cert "$tls/server.crt" --tls-key "$tls/server.key" \
    --signing-key "$work/signing.key" --create-signing-key "${weak[@]}" \
    --login-fail-floor-ms 1 --log-level warn 2>"$work/authd.log" &
pids+=($!)
wait_file "$work/http-url" "${pids[-1]}" authd
wait_file "$work/url" "${pids[-1]}" authd
url=$(cat "$work/url")
http=$(cat "$work/http-url")
authport=${http##*:}

$py "$src/tests/proxy/upstream.py" "$work/up-port" &
pids+=($!)
wait_file "$work/up-port" "${pids[-1]}" upstream
upport=$(cat "$work/up-port")

# The example Caddyfile: site address and ports changed, admin API and
# automatic HTTPS off (global options first). The port comes from the
# kernel and is then bound by Caddy: another process may take it in
# between, so a Caddy that exits at start is retried on a new port.
start_caddy() {
    cport=$(freeport)
    {
        printf '{\n\tadmin off\n\tauto_https off\n}\n\n'
        sed -e "s/^app\.example\.com {/http:\/\/127.0.0.1:$cport {/" \
            -e "s/127\.0\.0\.1:9090/127.0.0.1:$authport/g" -e "s/127\.0\.0\.1:8080/127.0.0.1:$upport/g" \
            "$src/examples/proxies/Caddyfile"
    } >"$work/Caddyfile"
    grep -q "127.0.0.1:$cport {" "$work/Caddyfile" || fail "the example Caddyfile's site address changed: update this test"
    XDG_DATA_HOME=$work XDG_CONFIG_HOME=$work HOME=$work \
        caddy run --config "$work/Caddyfile" --adapter caddyfile >>"$work/caddy.log" 2>&1 &
    cpid=$!
    local deadline=$((SECONDS + 30))
    until curl -s -o /dev/null "http://127.0.0.1:$cport/"; do
        kill -0 "$cpid" 2>/dev/null || return 1
        [ $SECONDS -lt $deadline ] || fail "caddy did not answer in 30 s"
        sleep 0.1
    done
    pids+=("$cpid")
}
start_caddy || start_caddy || start_caddy || fail "caddy exited at start three times"

ctl() { "$authctl" --url "$url" --ca "$tls/ca.crt" "$@"; }
echo "$pw" | ctl register --username alice --email alice@example.com --password-stdin >/dev/null || fail register
alice=$(echo "$pw" | ctl login --login alice --password-stdin 2>/dev/null) || fail "login alice"
boss=$(echo "$pw" | ctl login --login boss --password-stdin 2>/dev/null) || fail "login boss"

# req PATH [curl args...]: one request through Caddy; sets s (the status)
# and n (the number of its body$n and hdr$n files).
n=0
req() {
    local p=$1
    shift
    n=$((n + 1))
    s=$(curl -s -o "$work/body$n" -D "$work/hdr$n" -w '%{http_code}' "$@" "http://127.0.0.1:$cport$p")
}
expect() { # expect WANT GOT WHAT
    [ "$1" = "$2" ] || fail "$3: want HTTP $1, got $2 ($(head -c 300 "$work/body$n"))"
    echo "ok: $3 → $2"
}

req /app; expect 401 "$s" "no token"
grep -qi '^WWW-Authenticate: Bearer' "$work/hdr$n" || fail "401 without WWW-Authenticate: Bearer"
req /app -H "Authorization: Bearer not.a.token"; expect 401 "$s" "malformed token"
req /app -H "Authorization: Bearer ${alice}x"; expect 401 "$s" "tampered token"

req /app -H "Authorization: Bearer $alice" -H "X-Auth-User-Id: forged-admin" \
    -H "X-Auth-Roles: admin" -H "X_Auth_User_Id: forged-too"
expect 200 "$s" "valid token with forged identity headers"
$py - "$work/body$n" <<'PY' || fail "identity headers at the upstream"
import json, sys
h = json.load(open(sys.argv[1]))["headers"]
assert h.get("x-auth-username") == "alice", h
assert len(h.get("x-auth-user-id", "")) == 32 and h["x-auth-user-id"] != "forged-admin", h
assert h.get("x-auth-roles", "") == "", h          # alice has no roles: no forged, no placeholder
assert "x_auth_user_id" not in h, h
PY
echo "ok: the upstream saw alice's identity, none of the forged headers"

req /admin/x -H "Authorization: Bearer $alice"; expect 403 "$s" "no admin role"
req /admin/x -H "Authorization: Bearer $boss"; expect 200 "$s" "admin role"
grep -q '"x-auth-roles": "admin"' "$work/body$n" || fail "the admin's roles were not passed on"

AUTHD_TOKEN=$alice ctl logout >/dev/null 2>&1 || fail "logout"
req /app -H "Authorization: Bearer $alice"; expect 401 "$s" "revoked token (after logout)"
echo "proxy_caddy: PASS"
