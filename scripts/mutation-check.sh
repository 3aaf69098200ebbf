#!/usr/bin/env bash
# mutation-check.sh — makes, one at a time, the breaks that an earlier
# review found the suite did not catch (issue 7, finding 12), runs the
# suite against each, and says which tests caught it. Every break must
# make the suite fail; the script fails if one does not.
#
#   scripts/mutation-check.sh [--only NAME[,NAME...]] [--list]
#
# Works on a copy of the tree in a temporary directory (the checkout is
# never touched) with a -Werror RelWithDebInfo build. Each break is an
# exact text replacement that must match exactly once: when the code it
# names has moved, the script says so instead of testing nothing.
# About a minute per break on 2 cores.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
only=
while [ $# -gt 0 ]; do
    case $1 in
    --only) only=${2:?--only needs names}; shift 2 ;;
    --list) list=1; shift ;;
    -h | --help) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "mutation-check: unknown option $1" >&2; exit 2 ;;
    esac
done

# mut NAME FILE TEXT REPLACEMENT WHAT: one break (\n in TEXT and
# REPLACEMENT stands for a newline).
names=() files=() texts=() repls=() whats=()
mut() { names+=("$1"); files+=("$2"); texts+=("$3"); repls+=("$4"); whats+=("$5"); }
mut frame-limit-x2 src/server.c \
    'sp_frame_next(c->rbuf + pos, c->rlen - pos, s->max_msg, &f, &need)' \
    'sp_frame_next(c->rbuf + pos, c->rlen - pos, 2 * s->max_msg, &f, &need)' \
    "the frame limit doubled"
mut frame-limit-x15 src/server.c \
    'sp_frame_next(c->rbuf + pos, c->rlen - pos, s->max_msg, &f, &need)' \
    'sp_frame_next(c->rbuf + pos, c->rlen - pos, 15 * s->max_msg, &f, &need)' \
    "the frame limit multiplied by 15"
mut max-msg-ignored src/main.c \
    '.max_msg = (size_t)cfg.max_msg_bytes,' '.max_msg = 65536,' \
    "--max-msg-bytes ignored (the default used)"
mut inflight-unenforced src/server.c \
    'if (st == SP_FRAME_NEED_MORE || c->inflight >= s->max_inflight)' \
    'if (st == SP_FRAME_NEED_MORE)' \
    "--max-inflight not enforced when frames are parsed"
mut no-dummy-verify src/service.c \
    'bool match = authd_password_verify(' 'bool match = found && authd_password_verify(' \
    "unknown users skip the dummy argon2 verify"
mut commit-own-reason src/service.c \
    'login_refused(job, "user_disabled");\n        job = NULL;' \
    'authd_call_finish(call, AUTHD_UNAUTHENTICATED, "USER_DISABLED", "user is disabled", NULL);' \
    "a user disabled between the password check and the commit gets its own reason"
mut ciphers-default src/server.c \
    'SSL_CTX_set_cipher_list(ctx, "ECDHE+AESGCM:ECDHE+CHACHA20")' \
    'SSL_CTX_set_cipher_list(ctx, "DEFAULT")' \
    "the TLS 1.2 cipher list widened to DEFAULT"

if [ "${list:-0}" = 1 ]; then
    for i in "${!names[@]}"; do printf '%-22s %s\n' "${names[$i]}" "${whats[$i]}"; done
    exit 0
fi

work=$(mktemp -d /tmp/authd-mut.XXXXXX)
trap 'rm -rf "$work"' EXIT
echo "mutation-check: copying the tree to $work" >&2
git -C "$root" ls-files -z --cached --others --exclude-standard | (cd "$root" && xargs -0 cp --parents -t "$work")
bash "$root/scripts/install-deps.sh"
cmake -S "$work" -B "$work/build" -DAUTHD_WERROR=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$work/build" -j"$(nproc)" >"$work/build.log" 2>&1 || { tail -20 "$work/build.log"; exit 1; }

# The suite must pass before any break is made, or a failure would prove
# nothing.
if ! (cd "$work/build" && ctest -j"$(nproc)" --timeout 300 --output-on-failure >"$work/ctest-baseline.log" 2>&1); then
    grep -E '^\s+[0-9]+ - ' "$work/ctest-baseline.log" >&2 || true
    cp "$work/ctest-baseline.log" /tmp/mutation-check-baseline.log
    echo "mutation-check: the suite fails without any break (log: /tmp/mutation-check-baseline.log)" >&2
    exit 1
fi

# apply FILE TEXT REPLACEMENT: exactly one occurrence, else exit 3.
apply() {
    python3 - "$1" "$2" "$3" <<'EOF'
import sys
path, old, new = sys.argv[1], sys.argv[2].replace('\\n', '\n'), sys.argv[3].replace('\\n', '\n')
s = open(path).read()
n = s.count(old)
if n != 1:
    sys.exit(3)
open(path, 'w').write(s.replace(old, new))
EOF
}

missed=0
stale=0
for i in "${!names[@]}"; do
    name=${names[$i]} file=${files[$i]} text=${texts[$i]} repl=${repls[$i]} what=${whats[$i]}
    if [ -n "$only" ] && [[ ",$only," != *",$name,"* ]]; then continue; fi
    cp "$work/$file" "$work/$file.orig"
    if ! apply "$work/$file" "$text" "$repl"; then
        echo "mutation-check: $name: the code it breaks is not where it was ($file); update this script" >&2
        stale=$((stale + 1))
        continue
    fi
    if ! cmake --build "$work/build" -j"$(nproc)" >"$work/build-$name.log" 2>&1; then
        echo "mutation-check: $name: does not build:" >&2
        tail -5 "$work/build-$name.log" >&2
        stale=$((stale + 1))
    elif (cd "$work/build" && ctest -j"$(nproc)" --timeout 300 --output-on-failure >"$work/ctest-$name.log" 2>&1); then
        echo "MISSED  $name: $what — the suite still passes"
        missed=$((missed + 1))
    else
        caught=$(grep -E '^\s+[0-9]+ - ' "$work/ctest-$name.log" | sed 's/^\s*[0-9]* - //; s/ (.*//' | tr '\n' ' ')
        cp "$work/ctest-$name.log" "/tmp/mutation-check-$name.log"
        echo "CAUGHT  $name: $what — failed: $caught"
    fi
    mv "$work/$file.orig" "$work/$file"
    touch "$work/$file" # the original's mtime is older than the mutant's object file
done
cmake --build "$work/build" -j"$(nproc)" >/dev/null 2>&1 || true
if [ "$missed" -gt 0 ] || [ "$stale" -gt 0 ]; then
    echo "mutation-check: $missed missed, $stale could not be made" >&2
    exit 1
fi
echo "mutation-check: every break was caught"
