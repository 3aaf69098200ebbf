#!/usr/bin/env bash
# check-unit.sh — checks packaging/authd.service: `systemd-analyze verify`
# (with ExecStart pointed at the authd binary given, since /usr/bin/authd
# is not installed here) and the directives the hardening promises.
#
#   scripts/check-unit.sh [AUTHD_BINARY]
#
# Exit 77 (ctest: skipped) when systemd-analyze is not installed.
set -euo pipefail
cd "$(dirname "$0")/.."
unit=packaging/authd.service
bin=${1:-/usr/bin/authd}
fail=0
for d in 'Type=notify' 'NoNewPrivileges=yes' 'ProtectSystem=strict' 'ProtectHome=yes' \
    'PrivateTmp=yes' 'StateDirectory=authd' 'StateDirectoryMode=0700' \
    'ConfigurationDirectory=authd' 'CapabilityBoundingSet=' 'MemoryDenyWriteExecute=yes' \
    'RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX' 'SystemCallFilter=@system-service' \
    'User=authd' 'WatchdogSec=' 'TimeoutStopSec='; do
    grep -qxF -- "$d" "$unit" || grep -q -- "^$d[0-9]" "$unit" || { echo "check-unit: missing $d" >&2; fail=1; }
done
# The stop timeout must outlast the drain (--shutdown-grace-ms, default 10 s).
stop=$(sed -n 's/^TimeoutStopSec=\([0-9]*\)s$/\1/p' "$unit")
[ -n "$stop" ] && [ "$stop" -gt 10 ] || { echo "check-unit: TimeoutStopSec must exceed the 10 s drain" >&2; fail=1; }
command -v systemd-analyze >/dev/null || { echo "check-unit: systemd-analyze not installed: skipped" >&2; exit 77; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
sed "s#^ExecStart=.*#ExecStart=$(readlink -f "$bin")#" "$unit" > "$tmp/authd.service"
out=$(systemd-analyze verify "$tmp/authd.service" 2>&1) || { echo "$out" >&2; fail=1; }
# verify prints warnings without failing: any line about our unit is a finding.
if printf '%s\n' "$out" | grep -q 'authd.service'; then echo "$out" >&2; fail=1; fi
[ "$fail" = 0 ] && echo "check-unit: $unit verified"
exit "$fail"
