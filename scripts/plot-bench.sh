#!/usr/bin/env bash
# plot-bench.sh — turns authbench results into PNG plots with gnuplot:
#
#   scripts/plot-bench.sh [-o DIR] [-t TITLE] FILE...
#
# FILE is either authbench CSV (--format csv / --out FILE.csv) or a file of
# key=value lines: authbench's summary lines, or the gRPC peer's
# (../shared/peers/grpc-verify/run.sh prints "peer=grpc-cxx-tls inflight=N
# rps=R p50_us=.. p99_us=.. p999_us=.."). Closed-loop rows only (an open
# loop's in-flight number is a cap, not the load).
#
# Writes DIR/throughput.png (throughput against requests in flight, one line
# per system) and DIR/latency.png (p50, p99 and p99.9 against in flight),
# plus DIR/bench.tsv, the merged data. A series is the run's --label, or
# else the bench (authd, echo, or the peer's name), then workload:group when
# the row is one group of a composite workload (mixed, or either group of
# verify-under-login-flood), then c=N when there were N != 1 connections.
#
# Needs gnuplot (Debian: gnuplot-nox), installed with apt-get when missing.
set -euo pipefail

out=.
title="authd benchmark"
while getopts "o:t:h" opt; do
    case $opt in
    o) out=$OPTARG ;;
    t) title=$OPTARG ;;
    h) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) exit 2 ;;
    esac
done
shift $((OPTIND - 1))
[ $# -gt 0 ] || { echo "usage: plot-bench.sh [-o DIR] [-t TITLE] FILE..." >&2; exit 2; }

if ! command -v gnuplot >/dev/null 2>&1; then
    echo "plot-bench: installing gnuplot-nox" >&2
    sudo=; [ "$(id -u)" -eq 0 ] || sudo=sudo
    $sudo apt-get update -qq && $sudo apt-get install -y -qq gnuplot-nox >/dev/null
fi
mkdir -p "$out"
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
tsv="$out/bench.tsv"

# One TSV row per result: series, inflight, rps, p50, p90, p99, p99.9 (us).
# A missing number is "NaN" (gnuplot skips it).
awk -v OFS='\t' '
function csvsplit(line, f,    n, i, c, q, cur) {
    n = 0; cur = ""; q = 0
    for (i = 1; i <= length(line); i++) {
        c = substr(line, i, 1)
        if (q) {
            if (c == "\"") {
                if (substr(line, i + 1, 1) == "\"") { cur = cur "\""; i++ } else q = 0
            } else cur = cur c
        } else if (c == "\"") q = 1
        else if (c == ",") { f[++n] = cur; cur = "" }
        else cur = cur c
    }
    f[++n] = cur
    return n
}
function num(v) { return v == "" ? "NaN" : v }
function series(label, bench, workload, group, conns,    s) {
    s = label != "" ? label : bench
    if (group != "" && group != workload) s = s "/" workload ":" group
    if (conns != "" && conns != 1) s = s " c=" conns
    return s
}
FNR == 1 { csv = ($0 ~ /^bench,/); if (csv) { delete col; n = csvsplit($0, h); for (i = 1; i <= n; i++) col[h[i]] = i; next } }
csv {
    csvsplit($0, f)
    if (f[col["mode"]] == "open") next
    print series(f[col["label"]], f[col["bench"]], f[col["workload"]], f[col["group"]], f[col["conns"]]),
        f[col["inflight"]], num(f[col["rps"]]), num(f[col["p50_us"]]), num(f[col["p90_us"]]),
        num(f[col["p99_us"]]), num(f[col["p999_us"]])
    next
}
/(^| )(bench|peer)=/ {
    delete kv
    for (i = 1; i <= NF; i++) { p = index($i, "="); if (p > 0) kv[substr($i, 1, p - 1)] = substr($i, p + 1) }
    if (kv["mode"] == "open" || kv["inflight"] == "") next
    bench = ("bench" in kv) ? kv["bench"] : kv["peer"]
    print series(kv["label"], bench, kv["workload"], kv["group"], kv["conns"]),
        kv["inflight"], num(kv["rps"]), num(kv["p50_us"]), num(kv["p90_us"]),
        num(kv["p99_us"]), num(kv["p999_us"])
}' "$@" | sort -t$'\t' -k1,1 -k2,2n > "$tsv"

[ -s "$tsv" ] || { echo "plot-bench: no closed-loop results in $*" >&2; exit 1; }

# One data file per series, for gnuplot's titles.
plots_rps=(); plots_p50=(); plots_p99=(); plots_p999=()
i=0
while IFS= read -r s; do
    i=$((i + 1))
    f="$tmp/s$i.dat"
    awk -F'\t' -v s="$s" -v OFS='\t' '$1 == s { print $2, $3, $4, $5, $6, $7 }' "$tsv" > "$f"
    t=${s//\"/}
    plots_rps+=("'$f' using 1:2 with linespoints lw 2 pt 7 title \"$t\"")
    plots_p50+=("'$f' using 1:3 with linespoints lw 2 pt 7 title \"$t\"")
    plots_p99+=("'$f' using 1:5 with linespoints lw 2 pt 7 title \"$t\"")
    plots_p999+=("'$f' using 1:6 with linespoints lw 2 pt 7 title \"$t\"")
done < <(cut -f1 "$tsv" | sort -u)

join() { local IFS=','; echo "$*"; }

gnuplot <<EOF
set terminal pngcairo size 1000,640 noenhanced font ",11"
set datafile separator "\t"
set datafile missing "NaN"
set grid
set key top left
set logscale x 2
set xlabel "requests in flight"

set output "$out/throughput.png"
set title "$title: throughput"
set ylabel "requests / s (log scale)"
set logscale y 10
set yrange [*:*]
set format y "%.0s%c"
plot $(join "${plots_rps[@]}")

set output "$out/latency.png"
set terminal pngcairo size 1500,560 noenhanced font ",11"
set multiplot layout 1,3 title "$title: latency (closed loop)"
set key below font ",9"
set logscale y 10
set yrange [*:*]
set format y "%g"
set ylabel "microseconds"
set title "p50"
plot $(join "${plots_p50[@]}")
set title "p99"
unset ylabel
plot $(join "${plots_p99[@]}")
set title "p99.9"
plot $(join "${plots_p999[@]}")
unset multiplot
EOF
echo "plot-bench: wrote $out/throughput.png $out/latency.png ($(cut -f1 "$tsv" | sort -u | wc -l) series, $(wc -l < "$tsv") points)" >&2
