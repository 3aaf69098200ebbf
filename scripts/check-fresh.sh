#!/usr/bin/env bash
# check-fresh.sh — authd as a new user meets it, on a fresh Debian 12 root,
# and its Docker image built and run from that same root. CI runs it after
# the test suite (.ci/run).
#
#   scripts/check-fresh.sh [--quick] [--keep]
#
#   --quick  leave out the README's second command (the whole test suite
#            inside the fresh root, the longest step); for local iteration.
#   --keep   keep the work directory, containers and image for a look.
#
# Needs root. Installs debootstrap and docker.io with apt-get if missing,
# and starts a Docker daemon (dockerd --bridge=none --iptables=false) if
# none answers, stopping it again at the end. No image registry is used:
# everything runs with --network host, so the only traffic off loopback is
# apt-get's, to Debian's archive.
#
# 1. A minimal Debian 12 root is made with debootstrap (once; kept as the
#    image authd-fresh:bookworm, also tagged debian:bookworm-slim, the
#    Dockerfile's FROM).
# 2. A clone of this repository's HEAD is copied into a container of that
#    image. There, the README's quick start runs as written: its first
#    command (scripts/run-dev.sh) until authd listens, then authctl makes a
#    round trip (register, login, verify, logout, verify refused);
#    `cmake --install build` to a prefix, which is then moved; a program out
#    of the tree (tests/install/consumer) is built against it with
#    pkg-config and with find_package(authd-client CONFIG), shared and
#    static, and each build calls the running authd; authd stops cleanly on
#    SIGTERM. Then the README's second command (scripts/test.sh, the whole
#    suite) unless --quick.
# 3. A probe build lists what the build context holds with keys, data and a
#    build tree planted in it (.dockerignore must keep them out). The
#    Dockerfile is built (docker build --network host) FROM that root and
#    run (--network host, not as root) with the dev TLS material owned as
#    its comment says; authctl from step 2 makes a round trip against it;
#    its HEALTHCHECK must turn healthy; `docker stop` must drain (the
#    shutting_down and stopped log lines) and exit 0.
#
# Prints one line per step with its time, and "check-fresh: PASS (N s)" at
# the end; exits non-zero at the first failure with the tail of that step's
# log.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
quick=0
keep=0
for a in "$@"; do
    case $a in
    --quick) quick=1 ;;
    --keep) keep=1 ;;
    -h | --help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    *) echo "check-fresh: unknown option $a (see --help)" >&2; exit 2 ;;
    esac
done
[ "$(id -u)" -eq 0 ] || { echo "check-fresh: run as root" >&2; exit 2; }

t0=$(date +%s)
tstep=$t0
step() { # step MESSAGE: the time the previous step took, then this one
    local now
    now=$(date +%s)
    printf 'check-fresh: [%4ss, +%ss] %s\n' "$((now - t0))" "$((now - tstep))" "$*" >&2
    tstep=$now
}

# ---- 0. tools: debootstrap, docker, a daemon ---------------------------------------------
missing=()
command -v debootstrap >/dev/null || missing+=(debootstrap)
command -v docker >/dev/null || missing+=(docker.io)
command -v dockerd >/dev/null || missing+=(docker.io)
if [ ${#missing[@]} -gt 0 ]; then
    step "apt-get install ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        "${missing[@]}" >/dev/null
fi

work=$(mktemp -d /tmp/authd-fresh.XXXXXX)
cname=authd-fresh-$$
iname=authd-fresh-image-$$
dockerd_pid=""
cleanup() {
    local rc=$?
    trap - EXIT
    if [ "$keep" = 0 ]; then
        docker rm -f "$cname" "$cname-img" >/dev/null 2>&1 || true
        docker rmi -f "$iname" >/dev/null 2>&1 || true
        # The Dockerfile's build stage (untagged, ~1 GB), and only that.
        docker image prune -f --filter label=org.authd.stage=build >/dev/null 2>&1 || true
        rm -rf "$work"
    else
        echo "check-fresh: kept $work, containers $cname $cname-img, image $iname" >&2
    fi
    if [ -n "$dockerd_pid" ]; then # only the daemon this script started
        kill "$dockerd_pid" 2>/dev/null || true
        for _ in $(seq 150); do kill -0 "$dockerd_pid" 2>/dev/null || break; sleep 0.2; done
    fi
    exit $rc
}
trap cleanup EXIT
fail() { # fail LOG MESSAGE
    tail -60 "$1" >&2 || true
    echo "check-fresh: FAIL: $2 (log: $1)" >&2
    exit 1
}
poll() { # poll SECONDS COMMAND...: until COMMAND succeeds; 1 at the deadline
    local deadline=$(($(date +%s) + $1))
    shift
    until "$@" >/dev/null 2>&1; do
        [ "$(date +%s)" -lt "$deadline" ] || return 1
        sleep 0.5
    done
}

in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; } # in_use PORT: someone listens

if ! docker info >/dev/null 2>&1; then
    step "starting a Docker daemon (dockerd --bridge=none --iptables=false)"
    dockerd --bridge=none --iptables=false >"$work/dockerd.log" 2>&1 &
    dockerd_pid=$!
    poll 60 docker info || fail "$work/dockerd.log" "dockerd did not answer within 60 s"
fi

# ---- 1. the fresh root --------------------------------------------------------------------
if ! docker image inspect authd-fresh:bookworm >/dev/null 2>&1; then
    step "debootstrap: a minimal Debian 12 root, imported as authd-fresh:bookworm"
    debootstrap --variant=minbase bookworm "$work/rootfs" http://deb.debian.org/debian \
        >"$work/debootstrap.log" 2>&1 || fail "$work/debootstrap.log" "debootstrap"
    tar -C "$work/rootfs" -c . | docker import - authd-fresh:bookworm >/dev/null
    rm -rf "$work/rootfs"
fi
docker image inspect debian:bookworm-slim >/dev/null 2>&1 \
    || docker tag authd-fresh:bookworm debian:bookworm-slim

# ---- 2. the README in the fresh root ---------------------------------------------------------
step "fresh clone of $(git -C "$root" rev-parse --short HEAD) into a fresh container"
git clone -q "$root" "$work/src"
# The README's quick start: its indented command lines, exactly two.
mapfile -t readme_cmds < <(awk '/^## Quick start/ { f = 1; next } /^## / { f = 0 }
    f && /^    [^ ]/ { sub(/^    /, ""); print }' "$work/src/README.md")
[ ${#readme_cmds[@]} -eq 2 ] || {
    echo "check-fresh: the README's quick start has ${#readme_cmds[@]} commands, not 2: ${readme_cmds[*]}" >&2
    exit 1
}
# --init: an init that reaps authd once it exits (kill -0 must see it gone).
docker run -d --init --name "$cname" --network host authd-fresh:bookworm sleep infinity >/dev/null
docker cp "$work/src" "$cname:/root/authd" >/dev/null
inside() { docker exec -w /root/authd "$cname" bash -c "$1"; }

# The quick start listens on its default port, 7443, on the host's network.
if in_use 7443; then
    echo "check-fresh: port 7443 is taken on this machine; the quick start needs it" >&2
    exit 1
fi
step "README command 1: ${readme_cmds[0]} (until authd listens)"
inside "nohup ${readme_cmds[0]} >/root/run-dev.log 2>&1 & echo \$! >/root/run-dev.pid"
listening() { inside 'grep -q "\"event\":\"listening\"" /root/run-dev.log'; }
# Installing and building on a machine that has nothing yet takes a while;
# run-dev.sh execs authd, so the pid is authd's once it listens.
ok=0
for _ in $(seq 1800); do
    if listening 2>/dev/null; then ok=1; break; fi
    inside 'kill -0 "$(cat /root/run-dev.pid)" 2>/dev/null' || break
    sleep 1
done
docker cp "$cname:/root/run-dev.log" "$work/run-dev.log" >/dev/null 2>&1 || true
[ "$ok" = 1 ] || fail "$work/run-dev.log" "${readme_cmds[0]} did not start authd"

step "authctl round trip against it: register, login, verify, logout, verify refused"
inside 'set -e
    a=./build/clients/authctl
    pw="correct horse battery staple 42"
    printf "%s\n%s\n" "$pw" "$pw" | $a register --username freshuser --email fresh@example.com --password-stdin
    tok=$(printf "%s\n" "$pw" | $a login --login freshuser --password-stdin)
    echo "$tok" | $a verify
    echo "$tok" | $a logout
    if echo "$tok" | $a verify; then echo "verify after logout succeeded" >&2; exit 1; fi
    echo authctl-ok' >"$work/authctl.log" 2>&1 || fail "$work/authctl.log" "authctl round trip"
grep -q authctl-ok "$work/authctl.log" || fail "$work/authctl.log" "authctl round trip"

step "cmake --install build; tests/install/consumer with pkg-config and find_package"
inside 'bash tests/install/check-install.sh build /root/install-check' >"$work/install.log" 2>&1 \
    || fail "$work/install.log" "cmake --install and the out-of-tree builds"
inside 'set -e
    for b in consumer_pc_shared consumer_pc_static consumer_cmake_shared consumer_cmake_static; do
        /root/install-check/bin/$b tls+tcp://127.0.0.1:7443 var/tls/ca.crt "u$b"
    done
    echo consumers-ok' >"$work/consumers.log" 2>&1 || fail "$work/consumers.log" "the consumers against authd"
grep -q consumers-ok "$work/consumers.log" || fail "$work/consumers.log" "the consumers against authd"

step "SIGTERM: authd drains and stops cleanly"
inside 'pid=$(cat /root/run-dev.pid); kill -TERM "$pid"
    for _ in $(seq 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    ! kill -0 "$pid" 2>/dev/null && grep -q "\"event\":\"stopped\"" /root/run-dev.log' \
    >"$work/stop.log" 2>&1 || {
    docker cp "$cname:/root/run-dev.log" "$work/run-dev.log" >/dev/null 2>&1 || true
    fail "$work/run-dev.log" "authd (run-dev.sh) did not stop cleanly on SIGTERM"
}

if [ "$quick" = 0 ]; then
    step "README command 2: ${readme_cmds[1]} (the whole suite)"
    inside "timeout 4800 ${readme_cmds[1]}" >"$work/test.log" 2>&1 || fail "$work/test.log" "${readme_cmds[1]}"
    grep -E 'tests passed|all passes green' "$work/test.log" | sed 's/^/    /' >&2
else
    step "README command 2 (${readme_cmds[1]}) left out: --quick"
fi

# ---- 3. the image --------------------------------------------------------------------------
step ".dockerignore: keys, TLS material, data and build trees stay out of the build context"
# Plant what must never reach a build daemon, then list what a COPY of the
# context receives (the same .dockerignore applies).
mkdir -p "$work/src/var/tls" "$work/src/var/data" "$work/src/build-x" "$work/src/sub"
for f in var/signing.key var/tls/server.key var/data/data.mdb build-x/authd sub/leak.pem sub/leak.key; do
    echo planted >"$work/src/$f"
done
printf 'FROM authd-fresh:bookworm\nCOPY . /ctx\nRUN cd /ctx && find . -type f | sort >/ctx-list\n' \
    | docker build --network host -q -t "$iname-ctx" -f - "$work/src" >"$work/ctx-build.log" 2>&1 \
    || fail "$work/ctx-build.log" "the build-context probe"
docker run --rm "$iname-ctx" cat /ctx-list >"$work/ctx-list.txt"
docker rmi -f "$iname-ctx" >/dev/null 2>&1 || true
grep -q '^./src/main.c$' "$work/ctx-list.txt" || fail "$work/ctx-list.txt" "the probe saw no source"
if grep -E '(\.key|\.pem|\.crt|\.mdb)$|^\./(var|build|\.git)/' "$work/ctx-list.txt" >"$work/ctx-leaks.txt"; then
    fail "$work/ctx-leaks.txt" "secrets or build trees reach the build context"
fi
rm -rf "$work/src/var" "$work/src/build-x" "$work/src/sub"

step "docker build --network host (FROM the fresh root)"
docker build --network host -t "$iname" "$work/src" >"$work/docker-build.log" 2>&1 \
    || fail "$work/docker-build.log" "docker build"
# The image's user owns what it must read, with the modes the Dockerfile's
# comment documents: key 0640 root:authd, certificates 0644, a state
# directory of its own (0700) holding a signing key (0600).
uid=$(docker run --rm --entrypoint id "$iname" -u)
gid=$(docker run --rm --entrypoint id "$iname" -g)
[ "$uid" != 0 ] || { echo "check-fresh: FAIL: the image runs as root" >&2; exit 1; }
mkdir -p "$work/img/tls" "$work/img/state"
docker cp "$cname:/root/authd/var/tls/." "$work/img/tls/" >/dev/null
chown 0:"$gid" "$work/img/tls/server.key" && chmod 0640 "$work/img/tls/server.key"
chmod 0644 "$work/img/tls/server.crt" "$work/img/tls/ca.crt"
rm -f "$work/img/tls/ca.key" "$work/img/tls/"client.*
(umask 077 && head -c 64 /dev/urandom >"$work/img/state/signing.key")
chown -R "$uid:$gid" "$work/img/state" && chmod 0700 "$work/img/state"
# A port nobody listens on (host networking: other services share it).
port=17443
while in_use "$port"; do port=$((port + 1)); done
step "docker run --network host on 127.0.0.1:$port"
docker run -d --name "$cname-img" --network host --stop-timeout 30 \
    -e AUTHD_LISTEN=tls+tcp://127.0.0.1:$port -e AUTHD_URL=tls+tcp://127.0.0.1:$port \
    -v "$work/img/tls:/etc/authd/tls:ro" -v "$work/img/state:/var/lib/authd" \
    "$iname" >/dev/null
img_listening() { docker logs "$cname-img" 2>&1 | grep -q '"event":"listening"'; }
img_running() { [ "$(docker inspect -f '{{.State.Running}}' "$cname-img")" = true ]; }
ok=0
for _ in $(seq 120); do
    if img_listening; then ok=1; break; fi
    img_running || break
    sleep 0.5
done
docker logs "$cname-img" >"$work/image.log" 2>&1 || true
[ "$ok" = 1 ] || fail "$work/image.log" "the image did not start"

step "authctl round trip against the container"
inside "set -e
    a='./build/clients/authctl --url tls+tcp://127.0.0.1:$port'
    pw='another fine passphrase 77'
    printf '%s\n%s\n' \"\$pw\" \"\$pw\" | \$a register --username imguser --email img@example.com --password-stdin
    tok=\$(printf '%s\n' \"\$pw\" | \$a login --login imguser --password-stdin)
    echo \"\$tok\" | \$a verify
    echo image-ok" >"$work/image-call.log" 2>&1 || fail "$work/image-call.log" "authctl against the image"
grep -q image-ok "$work/image-call.log" || fail "$work/image-call.log" "authctl against the image"

step "HEALTHCHECK turns healthy"
health() { docker inspect -f '{{if .State.Health}}{{.State.Health.Status}}{{end}}' "$cname-img"; }
healthy() { [ "$(health)" = healthy ]; }
if ! poll 120 healthy; then
    docker inspect -f '{{json .State.Health}}' "$cname-img" >"$work/health.log" 2>&1 || true
    fail "$work/health.log" "the container is '$(health)', not healthy, after 120 s"
fi

step "docker stop: drains and exits 0"
docker stop -t 30 "$cname-img" >/dev/null
docker logs "$cname-img" >"$work/image.log" 2>&1 || true
code=$(docker inspect -f '{{.State.ExitCode}}' "$cname-img")
[ "$code" = 0 ] || fail "$work/image.log" "the container exited $code"
grep -q '"event":"shutting_down"' "$work/image.log" || fail "$work/image.log" "no shutting_down line"
grep -q '"event":"stopped"' "$work/image.log" || fail "$work/image.log" "no stopped line"

step "PASS"
echo "check-fresh: PASS ($(($(date +%s) - t0)) s)"
