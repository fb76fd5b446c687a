#!/usr/bin/env python3
"""Poll for gateway processes running BIN; renice threads whose name is in NAMES to NICE."""
import os, sys, time
BIN, NAMES, NICE = sys.argv[1], set(sys.argv[2].split(",")), int(sys.argv[3])
done = set()
while True:
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            if os.readlink(f"/proc/{pid}/exe") != BIN:
                continue
            tids = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for tid in tids:
            if (pid, tid) in done:
                continue
            try:
                comm = open(f"/proc/{pid}/task/{tid}/comm").read().strip()
            except OSError:
                continue
            if comm in NAMES:
                os.setpriority(os.PRIO_PROCESS, int(tid), NICE)
                print(f"{time.strftime('%T')} pid {pid} tid {tid} {comm}: nice {NICE}", flush=True)
                done.add((pid, tid))
    time.sleep(0.5)
