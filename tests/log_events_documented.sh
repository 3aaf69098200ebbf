#!/bin/bash
# log_events_documented.sh — every log event name and every audit name
# written by src/ must appear in docs/logging.md's tables (as `name`), so
# the operators' reference cannot fall behind the code.
#
# Event names are the string literals given to the functions that start a
# line: authd_log_begin/authd_log_msg, and the helpers that take an event
# name (fatal, log_conn, log_limit, log_event, audit, authd_call_audit,
# refresh_failed, token_failed). A helper added later with another name is
# not seen: add it to the pattern below.
# Usage: log_events_documented.sh SOURCE_ROOT
set -euo pipefail
root=${1:-$(dirname "$0")/..}
doc=$root/docs/logging.md
[[ -r $doc ]] || { echo "missing $doc" >&2; exit 1; }

names=$(perl -0777 -ne '
    while (/\b(?:authd_log_begin\s*\(\s*&?\w+\s*,\s*[\w]+\s*,|authd_log_msg\s*\(\s*\w+\s*,|fatal\s*\(|log_conn\s*\(\s*\w+\s*,|log_limit\s*\([^;"]*?,|log_event\s*\(|audit\s*\((?:[^;"]*\?)?|authd_call_audit\s*\(\s*[\w>.-]+\s*,|refresh_failed\s*\(\s*\w+\s*,|token_failed\s*\(\s*\w+\s*,\s*\w+\s*,)\s*"([a-z][a-z0-9_]*)"(?:\s*:\s*"([a-z][a-z0-9_]*)")?/gs) {
        print "$1\n"; print "$2\n" if defined $2;
    }' "$root"/src/*.c "$root"/src/*/*.c 2>/dev/null | sort -u)

[[ -n $names ]] || { echo "found no event names in $root/src: the pattern is broken" >&2; exit 1; }
missing=0
for n in $names; do
    if ! grep -q "\`$n\`" "$doc"; then
        echo "log event '$n' (src/) is not documented in docs/logging.md" >&2
        missing=$((missing + 1))
    fi
done
echo "$(wc -w <<<"$names") event names checked, $missing missing"
[[ $missing -eq 0 ]]
