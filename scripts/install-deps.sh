#!/usr/bin/env bash
# install-deps.sh — installs, with apt-get, whatever authd needs to build,
# test and run that is not already on this Debian 12 machine.
#
#   scripts/install-deps.sh            build + test dependencies
#   scripts/install-deps.sh --build    only what building without the tests
#                                      (-DAUTHD_TESTS=OFF) and installing need
#   scripts/install-deps.sh --runtime  only the shared libraries authd needs to run
#
# Used by the README quick start, .ci/run and the Dockerfile, so all three
# install exactly the same thing.
set -euo pipefail

build=(build-essential cmake pkg-config git
       libprotobuf-c-dev protobuf-c-compiler
       libnng-dev libmbedtls-dev libsodium-dev libjwt-dev libjansson-dev liblmdb-dev
       libssl-dev openssl libcmocka-dev libinih-dev)
# man pages of authd, authctl and authbench, made at build time
build+=(help2man)
runtime=(libprotobuf-c1 libssl3 libnng1 libsodium23 libjansson4 liblmdb0 libinih1 openssl ca-certificates)

# password strength (src/strength.c): zxcvbn, dictionary compiled in
build+=(libzxcvbn-dev)
runtime+=(libzxcvbn0)
# the side HTTP port (src/http.c) and the example service (clients/examples): libmicrohttpd
build+=(libmicrohttpd-dev)
runtime+=(libmicrohttpd12)
# systemd Type=notify (src/notify.c): sd_notify from libsystemd
build+=(libsystemd-dev)
runtime+=(libsystemd0)
want=("${build[@]}")
[ "${1:-}" = "--runtime" ] && want=("${runtime[@]}")
# crash tests (scripts/durability.sh): mdb_stat, mdb_dump, mdb_load
[ "${1:-}" = "--runtime" ] || want+=(lmdb-utils)
# ES256 tokens checked by an independent JWS implementation against the
# JWKS (tests/integration/it_keys.c): PyJWT, with python3-cryptography
[ "${1:-}" = "--runtime" ] || want+=(python3-jwt python3-cryptography)
# the README's Protocol example, run by tests/integration/readme_protocol.sh:
# a stock nng client (nngcat) and protoc's text-format encoder/decoder
[ "${1:-}" = "--runtime" ] || want+=(nng-utils protobuf-compiler)

# the side port's nginx auth_request test (tests/integration/it_nginx.c) and
# wrk for its measurement (scripts/bench.sh --only proxy), curl, and Caddy for
# tests/proxy/proxy_caddy.sh (Debian 12 packages caddy 2.6.2)
[ "${1:-}" = "--runtime" ] || want+=(nginx wrk curl caddy)
# /metrics parsed by Prometheus's own Python parser (tests/unit/test_metrics.c,
# tests/integration/it_metrics.c)
[ "${1:-}" = "--runtime" ] || want+=(python3-prometheus-client)

missing=()
# libFuzzer harnesses (scripts/fuzz.sh): clang, and libFuzzer's runtime,
# which is only a Recommends of clang
[ "${1:-}" = "--runtime" ] || want+=(clang libclang-rt-14-dev)
# --build (the Dockerfile's build stage): without the test-only tools
if [ "${1:-}" = "--build" ]; then
    test_only=" libcmocka-dev lmdb-utils python3-jwt python3-cryptography clang libclang-rt-14-dev "
    kept=()
    for p in "${want[@]}"; do
        [[ $test_only == *" $p "* ]] || kept+=("$p")
    done
    want=("${kept[@]}")
fi
for p in "${want[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

sudo=""
[ "$(id -u)" -ne 0 ] && sudo="sudo"
echo "install-deps: installing ${missing[*]}" >&2
$sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq
$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
