#!/usr/bin/env bash
# readme_protocol.sh — the README's "one call from the shell" (Protocol
# section), run as written: protoc's text-format encoder makes a
# RequestEnvelope, a stock nng client (nngcat, Debian's nng-utils) sends it
# over TLS to the real authd, protoc decodes the ReplyEnvelope. Also checks
# the README's warning: dialling the IP address fails under nng's mbedTLS.
#
#   readme_protocol.sh AUTHD_BIN SOURCE_DIR TLS_DIR
set -euo pipefail
authd=$1 src=$2 tls=$3
for t in nngcat protoc; do
    command -v "$t" >/dev/null || { echo "readme_protocol: $t not installed (scripts/install-deps.sh)"; exit 77; }
done
work=$(mktemp -d /tmp/authd-readme.XXXXXX)
pid=
cleanup() {
    [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT
fail() { echo "readme_protocol: FAIL: $*" >&2; cat "$work/authd.log" >&2 || true; exit 1; }

"$authd" --listen tls+tcp://127.0.0.1:0 --url-file "$work/url" --data-dir "$work/data" \
    --tls-cert "$tls/server.crt" --tls-key "$tls/server.key" \
    --signing-key "$work/signing.key" --create-signing-key --log-level warn 2>"$work/authd.log" &
pid=$!
deadline=$((SECONDS + 30))
until [ -s "$work/url" ]; do
    kill -0 "$pid" 2>/dev/null || fail "authd exited at start"
    [ $SECONDS -lt $deadline ] || fail "authd did not write its URL in 30 s"
    sleep 0.05
done
port=$(sed 's/.*://' "$work/url")

cd "$work"
proto=$src/proto
printf 'method: "/authd.v1.Auth/GetJwks"\nrequest_id: 7\n' |
    protoc --encode=authd.v1.RequestEnvelope -I "$proto" "$proto/authd/v1/envelope.proto" >req.bin
nngcat --req --dial "tls+tcp://localhost:$port" --cacert "$tls/ca.crt" \
    --file req.bin --raw --count 1 --interval 5 >reply.bin || fail "nngcat by name"
protoc --decode=authd.v1.ReplyEnvelope -I "$proto" "$proto/authd/v1/envelope.proto" <reply.bin >reply.txt
cat reply.txt
grep -qx 'request_id: 7' reply.txt || fail "request id not echoed"
grep -q '^code:' reply.txt && fail "code is not OK"
grep -q '^body: ".*{\\"keys\\":\[' reply.txt || fail "no JWKS in the body"

# The README says: an IP address fails under mbedTLS although the dev
# certificate lists 127.0.0.1. If this starts to pass, the README is wrong.
if nngcat --req --dial "tls+tcp://127.0.0.1:$port" --cacert "$tls/ca.crt" \
    --file req.bin --raw --count 1 --interval 5 >reply-ip.bin 2>err-ip.txt && [ -s reply-ip.bin ]; then
    fail "dialling the IP address worked: update the README's warning"
fi
echo "readme_protocol: PASS"
