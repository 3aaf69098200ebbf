#!/usr/bin/env bash
# dev-tls.sh — makes development TLS material with the openssl CLI:
#
#   scripts/dev-tls.sh [DIR]        (default ./var/tls)
#
#   ca.crt, ca.key          a dev certificate authority (EC P-256, 825 days)
#   server.crt, server.key  for localhost, 127.0.0.1 and ::1, signed by the CA
#   client.crt, client.key  a client certificate (CN=authd-dev-client) for mTLS
#
# Existing files are kept (so a running dev setup keeps working); delete the
# directory to start over. For development only: in production use your own
# PKI. Keys are written with mode 0600.
set -euo pipefail
dir=${1:-./var/tls}
mkdir -p "$dir"
chmod 700 "$dir"
cd "$dir"
umask 077
days=825

if [ ! -f ca.crt ] || [ ! -f ca.key ]; then
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
        -keyout ca.key -out ca.crt -days "$days" -subj "/CN=authd dev CA" \
        -addext "basicConstraints=critical,CA:TRUE" \
        -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
fi

issue() { # issue NAME SUBJECT EXTFILE-CONTENT
    local name=$1 subj=$2 ext=$3
    [ -f "$name.crt" ] && [ -f "$name.key" ] && return 0
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
        -keyout "$name.key" -out "$name.csr" -subj "$subj" 2>/dev/null
    printf '%s\n' "$ext" > "$name.ext"
    openssl x509 -req -in "$name.csr" -CA ca.crt -CAkey ca.key -CAcreateserial \
        -out "$name.crt" -days "$days" -extfile "$name.ext" 2>/dev/null
    rm -f "$name.csr" "$name.ext"
}

issue server "/CN=localhost" "subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1
extendedKeyUsage=serverAuth
keyUsage=critical,digitalSignature"
issue client "/CN=authd-dev-client" "extendedKeyUsage=clientAuth
keyUsage=critical,digitalSignature"

chmod 600 ./*.key
chmod 644 ./*.crt
echo "dev-tls: TLS material in $(pwd)" >&2
