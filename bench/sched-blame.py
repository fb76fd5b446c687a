#!/usr/bin/env python3
"""Who held the CPU while a thread waited for it: reads `perf sched timehist`
output and, for every run of one thread that began after a scheduling delay
of at least THRESHOLD ms, lists what ran on that CPU during the delay.

    perf sched record -C 0 -o sched.data -- sleep 6     # while the load runs
    perf sched timehist -i sched.data > sched.th
    bench/sched-blame.py sched.th 'sessiongate[1234]' 0.3

The thread is named as timehist names it (`comm[tid]`, or `comm[tid/pid]`
for a thread that is not its process's main thread). Prints the first few
delays with what ran in them, the thread's delay percentiles over all its
runs, and the milliseconds each other command ran inside the delays. Written
in session 22, where it showed that bench/login-burst.sh's `SPIN=1` loop, not
the store's commit thread, held the worker for up to a tick.
"""

import collections
import re
import sys


def rows_of(path):
    """(switch-out time s, name, wait ms, delay ms, run ms) per timehist row."""
    rows = []
    for line in open(path).read().splitlines()[3:]:
        parts = line.split()
        if len(parts) < 6:
            continue
        try:
            t, wait, delay, run = float(parts[0]), float(parts[-3]), float(parts[-2]), float(parts[-1])
        except ValueError:
            continue
        rows.append((t, " ".join(parts[2:-3]), wait, delay, run))
    return rows


def command(name):
    return re.sub(r"\[.*", "", name)


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    rows = rows_of(sys.argv[1])
    thread, threshold = sys.argv[2], float(sys.argv[3]) if len(sys.argv) > 3 else 1.0
    blame, delays, shown = collections.Counter(), [], 0
    for i, (t, name, _, delay, run) in enumerate(rows):
        if name != thread:
            continue
        delays.append(delay)
        if delay < threshold:
            continue
        # The delay is the stretch before this run began.
        start, end = t - (run + delay) / 1000, t - run / 1000
        ran, j = [], i - 1
        while j >= 0 and rows[j][0] > start:
            s, e = max(rows[j][0] - rows[j][4] / 1000, start), min(rows[j][0], end)
            if e > s:
                blame[command(rows[j][1])] += (e - s) * 1000
                ran.append((command(rows[j][1]), round((e - s) * 1000, 3)))
            j -= 1
        if shown < 15:
            print(f"{t:.6f}  waited {delay:.3f} ms; ran meanwhile: {ran[::-1]}")
            shown += 1
    if not delays:
        sys.exit(f"no runs of {thread} in {sys.argv[1]}")
    delays.sort()
    n = len(delays)
    pct = lambda q: delays[min(n - 1, int(n * q))]
    print(f"{thread}: {n} runs, delay p50 {pct(0.5):.3f} p99 {pct(0.99):.3f} "
          f"p99.9 {pct(0.999):.3f} max {delays[-1]:.3f} ms")
    long = sum(1 for d in delays if d >= threshold)
    print(f"{long} delays >= {threshold} ms; ms run by others inside them: "
          + ", ".join(f"{c} {ms:.1f}" for c, ms in blame.most_common(10)))


if __name__ == "__main__":
    main()
