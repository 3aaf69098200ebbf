#!/bin/bash
# operations_doc_true.sh — docs/operations.md names only things that exist,
# so the operators' procedure cannot drift from the code silently:
#
#   - every metric name (authd_..., without _bucket/_sum/_count) is
#     written by src/metrics.c;
#   - every long option (--name) is one authd, authctl or a script knows
#     (a string in src/, clients/ or scripts/), or one of the few other
#     tools' options listed below;
#   - every `snake_case` word (log events, audit causes, limits, store
#     indexes, test names) appears in src/, tests/integration/ or
#     docs/logging.md;
#   - every link to a file exists, and every #anchor (here or in the
#     README) names a heading.
# Usage: operations_doc_true.sh SOURCE_ROOT
set -euo pipefail
root=${1:-$(dirname "$0")/..}
doc=$root/docs/operations.md
[[ -r $doc ]] || { echo "missing $doc" >&2; exit 1; }
bad=0
fail() {
    echo "docs/operations.md: $*" >&2
    bad=$((bad + 1))
}

# Other programs' options and words shown in the page (cmake, docker,
# systemctl; nginx auth_request, Envoy ext_authz, Caddy forward_auth,
# Compose stop_grace_period).
foreign=" build install prefix stop-timeout now "
foreign_words=" auth_request ext_authz forward_auth stop_grace_period "

metrics=$(grep -o '\bauthd_[a-z_]*[a-z]' "$doc" | sed -E 's/_(bucket|sum|count)$//' | sort -u)
[[ -n $metrics ]] || fail "no metric names found: the pattern is broken"
for m in $metrics; do
    grep -q "\"$m[\"{ ]" "$root/src/metrics.c" || fail "metric $m is not in src/metrics.c"
done

opts=$(grep -oE '(^|[^-[:alnum:]])--[a-z][a-z0-9-]*[a-z0-9]' "$doc" | sed -E 's/^[^-]*--//' | sort -u)
for o in $opts; do
    [[ $foreign == *" $o "* ]] && continue
    grep -rqF -e "\"--$o\"" -e "\"$o\"" -e "--$o " "$root/src" "$root/clients" "$root/scripts" \
        || fail "option --$o is in no source file"
done

words=$(grep -oE '`[a-z][a-z0-9]*(_[a-z0-9]+)+`' "$doc" | tr -d '`' | grep -v '^authd_' | sort -u)
for w in $words; do
    [[ $foreign_words == *" $w "* ]] && continue
    grep -rqw -e "$w" "$root/src" "$root/tests/integration" "$root/docs/logging.md" \
        || fail "\`$w\` is in none of src/, tests/integration/, docs/logging.md"
done

# GitHub's heading anchors: lower case, punctuation dropped, spaces to '-'.
anchors() {
    perl -ne 'BEGIN { $in = 0 } $in = !$in if /^```/; next if $in;
        if (/^#+\s+(.*?)\s*$/) { $_ = lc $1; s/[^\w\- ]//g; s/ /-/g; print "$_\n" }' "$1"
}
own=$(anchors "$doc")
readme=$(anchors "$root/README.md")
links=$(grep -oE '\]\([^)]+\)' "$doc" | sed -E 's/^\]\((.*)\)$/\1/' | sort -u)
for l in $links; do
    case $l in
    http*) ;;
    \#*) grep -qxF "${l#\#}" <<<"$own" || fail "link $l: no such heading here" ;;
    ../README.md\#*) grep -qxF "${l#*#}" <<<"$readme" || fail "link $l: no such README heading" ;;
    *) [[ -e $root/docs/${l%%#*} ]] || fail "link $l: no such file" ;;
    esac
done

echo "$(wc -w <<<"$metrics") metrics, $(wc -w <<<"$opts") options, $(wc -w <<<"$words") names, $(wc -w <<<"$links") links checked; $bad problems"
[[ $bad -eq 0 ]]
