#!/usr/bin/env python3
"""Poll for gateway processes running BIN; set a custom EEVDF slice (sched_setattr,
SCHED_OTHER with sched_runtime) on each thread whose name is NAME (the worker).
Runs until killed; logs each thread it set."""
import ctypes, os, sys, time
BIN, NAME, SLICE_NS = sys.argv[1], sys.argv[2], int(sys.argv[3])
libc = ctypes.CDLL(None, use_errno=True)
class Attr(ctypes.Structure):
    _fields_ = [("size", ctypes.c_uint32), ("policy", ctypes.c_uint32), ("flags", ctypes.c_uint64),
                ("nice", ctypes.c_int32), ("prio", ctypes.c_uint32), ("runtime", ctypes.c_uint64),
                ("deadline", ctypes.c_uint64), ("period", ctypes.c_uint64), ("umin", ctypes.c_uint32), ("umax", ctypes.c_uint32)]
done = set()
while True:
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            exe = os.readlink(f"/proc/{pid}/exe")
        except OSError:
            continue
        if exe != BIN:
            continue
        for tid in os.listdir(f"/proc/{pid}/task"):
            if (pid, tid) in done:
                continue
            try:
                comm = open(f"/proc/{pid}/task/{tid}/comm").read().strip()
            except OSError:
                continue
            if comm != NAME:
                continue
            a = Attr(size=56, policy=0, runtime=SLICE_NS)
            r = libc.syscall(314, int(tid), ctypes.byref(a), 0)
            err = ctypes.get_errno()
            print(f"{time.strftime('%T')} pid {pid} tid {tid} {comm}: {'ok' if r == 0 else os.strerror(err)}", flush=True)
            done.add((pid, tid))
    time.sleep(0.5)
