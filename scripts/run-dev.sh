#!/usr/bin/env bash
# run-dev.sh — quick start: install what is missing, build, make dev TLS
# material, and run authd in the foreground on its embedded defaults:
#
#   listen  tls+tcp://127.0.0.1:7443
#   store   ./var/data (LMDB)
#   TLS     ./var/tls (dev CA, server and client certificates)
#   key     ./var/signing.key (created on first start: this script passes
#           --create-signing-key, which authd leaves off by default)
#
# Extra arguments go to authd (e.g. scripts/run-dev.sh --log-level debug).
# Ctrl-C stops it cleanly. Afterwards `cmake --install build --prefix DIR`
# installs what it built.
set -euo pipefail
umask 077 # ./var and the key: only this user (authd refuses a key others could swap)
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
# The whole tree without the tests: everything `cmake --install build` installs
# (authd, authctl, authbench, the client library, man pages) is then built.
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo -DAUTHD_TESTS=OFF >/dev/null
cmake --build build -j"$(nproc)"
bash scripts/dev-tls.sh ./var/tls
echo "run-dev: starting authd; try: ./build/clients/authctl --help" >&2
exec ./build/authd --create-signing-key "$@"
