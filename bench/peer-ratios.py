#!/usr/bin/env python3
"""Per-round ratios of sessiongate to its peers, from peers.sh TSV files.

    bench/peer-ratios.py /tmp/sessiongate-bench/results/peers-*.tsv
    MAX_OTHER=10 bench/peer-ratios.py FILES...   # only rounds where no target saw
                                                 # more than 10 % foreign CPU load

`peers.sh summarize` gives medians per target and the req/s and CPU ratios
per round; this adds the p99 ratio per round and the ratios to the floor
proxy. Each round's sessiongate figure is divided by the peer's in the same
round, then the median is taken over rounds: the machine drifts between
rounds, not within one. Keep-alive rows ("ka") only.
"""
import csv
import os
import statistics
import sys


def rounds(paths):
    """{(file, run, round): {target: row}} for the keep-alive rows."""
    by_round = {}
    for path in paths:
        with open(path, newline="") as f:
            for row in csv.DictReader(f, delimiter="\t"):
                if row["test"] == "ka":
                    key = (path, row["run_id"], row["round"])
                    by_round.setdefault(key, {})[row["target"]] = row
    return by_round


def ratio(a, b, field):
    return float(a[field]) / float(b[field])


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    max_other = float(os.environ.get("MAX_OTHER", "inf"))
    series = {}
    for targets in rounds(sys.argv[1:]).values():
        sg, ngx, floor = (targets.get(t) for t in ("sessiongate", "nginx-tls", "floor-tls"))
        if sg is None or ngx is None:
            continue
        if max(float(t["other_cpu_pct"]) for t in targets.values()) > max_other:
            continue
        series.setdefault("req/s / nginx", []).append(ratio(sg, ngx, "rps"))
        series.setdefault("p99 / nginx", []).append(ratio(sg, ngx, "p99_us"))
        series.setdefault("CPU per request / nginx", []).append(ratio(sg, ngx, "sut_us_per_req"))
        if floor is not None:
            series.setdefault("req/s / floor", []).append(ratio(sg, floor, "rps"))
            series.setdefault("CPU per request / floor", []).append(ratio(sg, floor, "sut_us_per_req"))
    if not series:
        sys.exit("no keep-alive round with sessiongate and nginx-tls")
    for name, values in series.items():
        at_or_above = sum(v >= 1.0 for v in values)
        print(
            f"{name:24} {statistics.median(values):.3f} [{min(values):.2f}-{max(values):.2f}]"
            f"  rounds {len(values)}, >= 1.0 in {at_or_above}"
        )


if __name__ == "__main__":
    main()
