#!/usr/bin/env python3
"""Request latency as the wire saw it, from a packet capture on loopback.

`bench/login-burst.sh` (WIRE=1, interleaved mode) captures the segments that
carry data to and from the gateway's port with tcpdump while oha runs. This
script pairs, on each connection, a segment from the client with the first
data segment the gateway sends back: the time between them is the request's
latency at the gateway's socket (TLS, session checks, the upstream's answer),
without the load tool's own time before it sends and after it receives.

On a two-CPU machine the load tool shares a CPU with what a storm puts there
(hashes, with `hash_cpus`): oha's figure then also holds oha's own slowdown,
which clients on other machines would not have. This one does not.

Keep-alive HTTP/1.1 only (one request in flight per connection, as oha
sends). Connections with fewer than MIN_PAIRS exchanges (the storm's logins,
one per connection) are left out, and so are each connection's first
exchanges (the TLS handshake).

    wire-latency.py PORT SLOT GUARD TIMES PCAP [TIMES PCAP ...]

TIMES is a round's `il-N.times` (its first field: the storm's start, wall
clock); slots of SLOT s from there alternate quiet (even) and storm (odd),
the first GUARD s of each left out, as in login-burst.sh's own report.
"""
import statistics
import struct
import sys

MIN_PAIRS = 50
HANDSHAKE_PAIRS = 3


def packets(path):
    """(time, src port, dst port, payload bytes) of each IPv4 TCP packet."""
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < 24:
        return
    magic = struct.unpack("<I", data[:4])[0]
    if magic in (0xA1B2C3D4, 0xA1B23C4D):
        endian = "<"
    else:
        endian = ">"
        magic = struct.unpack(">I", data[:4])[0]
    if magic not in (0xA1B2C3D4, 0xA1B23C4D):
        raise SystemExit(f"{path}: not a pcap file")
    frac = 1e-9 if magic == 0xA1B23C4D else 1e-6
    linktype = struct.unpack(endian + "I", data[20:24])[0]
    link_len = {1: 14, 113: 16, 276: 20}.get(linktype)
    if link_len is None:
        raise SystemExit(f"{path}: link type {linktype} not handled")
    off = 24
    while off + 16 <= len(data):
        sec, sub, incl, _ = struct.unpack(endian + "IIII", data[off:off + 16])
        pkt = data[off + 16:off + 16 + incl]
        off += 16 + incl
        ip = pkt[link_len:]
        if len(ip) < 20 or ip[0] >> 4 != 4 or ip[9] != 6:
            continue
        ihl = (ip[0] & 0x0F) * 4
        total = struct.unpack(">H", ip[2:4])[0]
        tcp = ip[ihl:]
        if len(tcp) < 20:
            continue
        sport, dport = struct.unpack(">HH", tcp[:4])
        payload = total - ihl - (tcp[12] >> 4) * 4
        yield sec + sub * frac, sport, dport, payload


def exchanges(path, port):
    """(request time, latency in ms) of the keep-alive connections' exchanges."""
    conns = {}
    for t, sport, dport, payload in packets(path):
        if payload <= 0:
            continue
        if dport == port:
            c = conns.setdefault(sport, {"pending": None, "pairs": []})
            if c["pending"] is None:
                c["pending"] = t
        elif sport == port:
            c = conns.get(dport)
            if c is not None and c["pending"] is not None:
                c["pairs"].append((c["pending"], (t - c["pending"]) * 1000))
                c["pending"] = None
    out = []
    for c in conns.values():
        if len(c["pairs"]) >= MIN_PAIRS:
            out += c["pairs"][HANDSHAKE_PAIRS:]
    return out


def p(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else float("nan")


def by_slot(samples, t_storm, slot, guard):
    """Latencies by slot number, from (start time, latency) pairs: slots of
    `slot` s from `t_storm` (even quiet, odd storm), the first `guard` s of
    each left out. login-burst.sh's own report uses this too."""
    slots = {}
    for t, ms in samples:
        rel = t - t_storm
        if rel < 0:
            continue
        k = int(rel // slot)
        if rel - k * slot < guard:
            continue
        slots.setdefault(k, []).append(ms)
    return slots


def pair_ratios(slots):
    """p99 of each storm slot ÷ p99 of the quiet slot before it."""
    return [p(slots[k + 1], 0.99) / p(lat, 0.99) for k, lat in slots.items()
            if k % 2 == 0 and k + 1 in slots and len(lat) > 100 and len(slots[k + 1]) > 100]


def main():
    if len(sys.argv) < 6 or (len(sys.argv) - 4) % 2:
        raise SystemExit(__doc__)
    port, slot, guard = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3])
    rounds = list(zip(sys.argv[4::2], sys.argv[5::2]))
    pooled = {0: [], 1: []}
    pairs = []
    for r, (times, pcap) in enumerate(rounds, 1):
        t_storm = float(open(times).read().split()[0])
        slots = by_slot(exchanges(pcap, port), t_storm, slot, guard)
        per = {0: [], 1: []}
        for k, lat in slots.items():
            per[k % 2] += lat
            pooled[k % 2] += lat
        pairs += pair_ratios(slots)
        print(f"wire round {r}: {len(per[0])} / {len(per[1])} exchanges, p50 {p(per[0], 0.5):.3f} → {p(per[1], 0.5):.3f} ms, "
              f"p99 {p(per[0], 0.99):.3f} → {p(per[1], 0.99):.3f} ms ({p(per[1], 0.99) / p(per[0], 0.99):.3f})")
    q99, s99 = p(pooled[0], 0.99), p(pooled[1], 0.99)
    print(f"wire p99 storm ÷ quiet, pooled over {len(rounds)} rounds ({len(pooled[0])} / {len(pooled[1])} exchanges): "
          f"{s99 / q99:.3f} ({q99:.3f} → {s99:.3f} ms)   (target ≤ 1.20: {'met' if s99 / q99 <= 1.2 else 'NOT met'})")
    print(f"wire p50 storm ÷ quiet, pooled: {p(pooled[1], 0.5) / p(pooled[0], 0.5):.3f} "
          f"({p(pooled[0], 0.5):.3f} → {p(pooled[1], 0.5):.3f} ms)")
    if len(pairs) > 1:
        qs = statistics.quantiles(pairs, n=4)
        print(f"wire p99 ratio per slot pair, median over {len(pairs)} pairs: "
              f"{statistics.median(pairs):.3f} [quartiles {qs[0]:.3f}-{qs[2]:.3f}]")


if __name__ == "__main__":
    main()
