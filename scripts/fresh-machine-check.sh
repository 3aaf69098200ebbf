#!/usr/bin/env bash
# fresh-machine-check.sh — the README's quick start, tried as a new user
# would, on a fresh Debian 12 root, and the Dockerfile built from it.
#
#   scripts/fresh-machine-check.sh [--skip-tests] [--skip-docker-build]
#
# Needs root, debootstrap and a running Docker daemon (on a machine without
# a registry: dockerd --bridge=none --iptables=false). Everything runs with
# --network host, so the only network traffic is to Debian's archive (apt)
# and loopback.
#
# 1. A minimal Debian 12 root is made with debootstrap (once; cached as the
#    image authd-fresh:bookworm, also tagged debian:bookworm-slim so that
#    the Dockerfile's FROM resolves without a registry).
# 2. A fresh clone of this repository's HEAD is copied into a container of
#    that image, which runs the README's two commands: scripts/test.sh (the
#    whole suite; it installs its own dependencies) and scripts/run-dev.sh
#    (authd on its embedded defaults), which is then driven with authctl:
#    register, login, verify, logout, verify refused.
# 3. The Dockerfile is built (docker build --network host) and its image
#    run with dev TLS material and a signing key; authctl from step 2's
#    build talks to it.
#
# Prints one line per step and "fresh-machine-check: PASS" at the end;
# exits non-zero at the first failure with the log of the failed step.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
skip_tests=0
skip_build=0
for a in "$@"; do
    case $a in
    --skip-tests) skip_tests=1 ;;
    --skip-docker-build) skip_build=1 ;;
    -h | --help) sed -n '2,26p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "fresh-machine-check: unknown option $a" >&2; exit 2 ;;
    esac
done
[ "$(id -u)" -eq 0 ] || { echo "fresh-machine-check: run as root" >&2; exit 2; }
command -v docker >/dev/null || { echo "fresh-machine-check: docker is not installed" >&2; exit 2; }
docker info >/dev/null 2>&1 || {
    echo "fresh-machine-check: no Docker daemon (start one: dockerd --bridge=none --iptables=false &)" >&2
    exit 2
}

work=$(mktemp -d /tmp/authd-fresh.XXXXXX)
cname=authd-fresh-$$
cleanup() {
    docker rm -f "$cname" "$cname-img" >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT
step() { printf 'fresh-machine-check: %s\n' "$*" >&2; }
fail() { # fail LOG MESSAGE
    tail -40 "$1" >&2 || true
    echo "fresh-machine-check: FAIL: $2 (log: $1)" >&2
    trap - EXIT
    docker rm -f "$cname" "$cname-img" >/dev/null 2>&1 || true
    exit 1
}

# ---- 1. the fresh root ------------------------------------------------------------
if ! docker image inspect authd-fresh:bookworm >/dev/null 2>&1; then
    command -v debootstrap >/dev/null || { echo "fresh-machine-check: needs debootstrap (apt-get install debootstrap)" >&2; exit 2; }
    step "debootstrap: a minimal Debian 12 root"
    debootstrap --variant=minbase bookworm "$work/rootfs" http://deb.debian.org/debian \
        >"$work/debootstrap.log" 2>&1 || fail "$work/debootstrap.log" "debootstrap"
    tar -C "$work/rootfs" -c . | docker import - authd-fresh:bookworm >/dev/null
    rm -rf "$work/rootfs"
fi
docker image inspect debian:bookworm-slim >/dev/null 2>&1 || docker tag authd-fresh:bookworm debian:bookworm-slim

# ---- 2. the README's two commands in a fresh container -------------------------------
step "fresh clone of $(git -C "$root" rev-parse --short HEAD)"
git clone -q "$root" "$work/src"
docker run -d --name "$cname" --network host authd-fresh:bookworm sleep infinity >/dev/null
docker cp "$work/src" "$cname:/root/authd" >/dev/null
inside() { docker exec -w /root/authd "$cname" bash -c "$1"; }

if [ "$skip_tests" = 0 ]; then
    step "scripts/test.sh (the whole suite, both passes)"
    inside 'timeout 5400 bash scripts/test.sh' >"$work/test.log" 2>&1 || fail "$work/test.log" "scripts/test.sh"
    grep -E 'tests passed|test: all passes green' "$work/test.log" | sed 's/^/    /' >&2
fi

step "scripts/run-dev.sh (authd on its embedded defaults)"
inside 'nohup bash scripts/run-dev.sh >/root/run-dev.log 2>&1 & echo $! >/root/run-dev.pid'
ok=0
for _ in $(seq 600); do # building takes a while on a machine that has nothing yet
    if inside 'grep -q "\"event\":\"listening\"" /root/run-dev.log' 2>/dev/null; then ok=1; break; fi
    inside 'kill -0 "$(cat /root/run-dev.pid)" 2>/dev/null' || break # run-dev.sh execs authd
    sleep 1
done
docker cp "$cname:/root/run-dev.log" "$work/run-dev.log" >/dev/null 2>&1 || true
[ "$ok" = 1 ] || fail "$work/run-dev.log" "run-dev.sh did not start authd"

step "authctl: register, login, verify, logout"
inside 'set -e
    a=./build/clients/authctl
    pw="correct horse battery staple 42"
    printf "%s\n%s\n" "$pw" "$pw" | $a register --username freshuser --email fresh@example.com --password-stdin
    tok=$(printf "%s\n" "$pw" | $a login --login freshuser --password-stdin 2>/dev/null)
    echo "$tok" | $a verify
    echo "$tok" | $a logout
    if echo "$tok" | $a verify; then echo "verify after logout succeeded" >&2; exit 1; fi
    echo authctl-ok' >"$work/authctl.log" 2>&1 || fail "$work/authctl.log" "authctl session"
grep -q authctl-ok "$work/authctl.log" || fail "$work/authctl.log" "authctl session"

# ---- 3. the Dockerfile -------------------------------------------------------------------
if [ "$skip_build" = 0 ]; then
    step "docker build (the Dockerfile, FROM the fresh root)"
    docker build --network host -t authd-fresh-image "$work/src" >"$work/docker-build.log" 2>&1 \
        || fail "$work/docker-build.log" "docker build"
    step "docker run: the image serves; authctl from the container above calls it"
    inside 'mkdir -p /root/img && cp -r var/tls /root/img/tls && head -c 64 /dev/urandom >/root/img/signing.key && chmod 600 /root/img/signing.key && chown -R 999:999 /root/img 2>/dev/null || true'
    docker cp "$cname:/root/img" "$work/img" >/dev/null
    uid=$(docker run --rm --entrypoint id authd-fresh-image -u)
    chown -R "$uid" "$work/img"
    chmod 700 "$work/img"
    docker run -d --name "$cname-img" --network host \
        -e AUTHD_LISTEN=tls+tcp://127.0.0.1:17443 \
        -e AUTHD_SIGNING_KEY=/etc/authd/keys/signing.key \
        -v "$work/img/tls:/etc/authd/tls:ro" -v "$work/img:/etc/authd/keys:ro" \
        authd-fresh-image >/dev/null
    ok=0
    for _ in $(seq 100); do
        if docker logs "$cname-img" 2>&1 | grep -q '"event":"listening"'; then ok=1; break; fi
        [ "$(docker inspect -f '{{.State.Running}}' "$cname-img")" = true ] || break
        sleep 0.2
    done
    docker logs "$cname-img" >"$work/image.log" 2>&1 || true
    [ "$ok" = 1 ] || fail "$work/image.log" "the image did not start"
    inside 'pw="another fine passphrase 77"
        printf "%s\n%s\n" "$pw" "$pw" | ./build/clients/authctl --url tls+tcp://127.0.0.1:17443 register --username imguser --email img@example.com --password-stdin' \
        >"$work/image-call.log" 2>&1 || fail "$work/image-call.log" "register against the image"
fi

step "PASS"
echo "fresh-machine-check: PASS"
