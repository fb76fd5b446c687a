import sys,glob,statistics as st,re
for pat in sys.argv[1:]:
    rows=[]
    for f in sorted(glob.glob(pat)):
        sec=False
        for line in open(f):
            if line.startswith('round     req/s'): sec=True; continue
            if sec:
                p=line.split()
                if len(p)<9: sec=False; continue
                rows.append(tuple(map(float,p[1:8])))
    if not rows: continue
    q=[r[3] for r in rows]; s=[r[4] for r in rows]; x=[r[5] for r in rows]
    print(f"{pat:40s} n={len(rows):2d} p99 quiet {st.median(q):.3f}  storm {st.median(s):.3f}  ratio median {st.median(x):.3f} [{min(x):.2f}-{max(x):.2f}]  storm p99 mean {st.mean(s):.3f}")
