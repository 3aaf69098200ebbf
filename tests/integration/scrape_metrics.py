"""scrape_metrics.py URL OUT -- fetch authd's /metrics and parse it with
Prometheus's own parser (python3-prometheus-client's
text_string_to_metric_families).

Writes to OUT one line per sample, labels sorted by name:
    name{a="x",b="y"} value
so a C test can look values up by exact series. Exits non-zero when the
fetch fails, the content type is not the text format 0.0.4, the parser
refuses the text, a family lacks its TYPE, or a histogram is malformed
(buckets not rising, no +Inf bucket, +Inf not equal to _count).

Run by tests/integration/it_metrics.c through /usr/bin/python3 (the
interpreter that sees Debian's python3-* packages).
"""

import sys
import urllib.request

from prometheus_client.parser import text_string_to_metric_families


def main():
    url, out = sys.argv[1], sys.argv[2]
    with urllib.request.urlopen(url, timeout=10) as r:
        if r.status != 200:
            sys.exit("status %d" % r.status)
        ctype = r.headers.get("Content-Type", "")
        if not ctype.startswith("text/plain") or "version=0.0.4" not in ctype:
            sys.exit("content type %r is not the text format 0.0.4" % ctype)
        text = r.read().decode("utf-8")
    lines = []
    for fam in text_string_to_metric_families(text):
        if fam.type not in ("counter", "gauge", "histogram"):
            sys.exit("family %s has type %s" % (fam.name, fam.type))
        if fam.type == "histogram":
            check_histogram(fam)
        for s in fam.samples:
            labels = ",".join('%s="%s"' % (k, s.labels[k]) for k in sorted(s.labels))
            lines.append("%s{%s} %r" % (s.name, labels, float(s.value)))
    with open(out, "w") as f:
        f.write("\n".join(lines) + "\n")


def check_histogram(fam):
    series = {}
    for s in fam.samples:
        key = tuple(sorted((k, v) for k, v in s.labels.items() if k != "le"))
        series.setdefault(key, {"buckets": [], "count": None})
        if s.name.endswith("_bucket"):
            series[key]["buckets"].append((float(s.labels["le"]), s.value))
        elif s.name.endswith("_count"):
            series[key]["count"] = s.value
    for key, h in series.items():
        b = h["buckets"]
        les = [le for le, _ in b]
        if les != sorted(les) or not les or les[-1] != float("inf"):
            sys.exit("%s%r: bucket bounds %r" % (fam.name, key, les))
        if any(x > y for (_, x), (_, y) in zip(b, b[1:])):
            sys.exit("%s%r: buckets not cumulative" % (fam.name, key))
        if h["count"] != b[-1][1]:
            sys.exit("%s%r: +Inf %r != _count %r" % (fam.name, key, b[-1][1], h["count"]))


if __name__ == "__main__":
    main()
