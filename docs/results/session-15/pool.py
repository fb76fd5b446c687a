# Pools the rounds of bench/login-burst.sh outputs: one line per glob pattern.
#   python3 pool.py 'hc-hc-*.txt' 'hc-base-*.txt'
import sys, glob, statistics as st
for pat in sys.argv[1:]:
    xs=[];q=[];s=[];cq=[];cs=[];wq=[];ws=[]
    for f in sorted(glob.glob(pat)):
        rows=[l.split() for l in open(f) if l.split() and l.split()[0].isdigit()]
        for r in rows:
            if len(r)==9: q.append(float(r[4])); s.append(float(r[5])); xs.append(float(r[6]))
            elif len(r)==6: cq.append(float(r[1])); cs.append(float(r[2])); wq.append(float(r[4])); ws.append(float(r[5]))
    n=len(xs)
    print(f"{pat}: rounds {n}  p99 ratio median {st.median(xs):.3f} [{min(xs):.2f}-{max(xs):.2f}] rounds<=1.2: {sum(x<=1.2 for x in xs)}  p99 quiet med {st.median(q):.2f} storm med {st.median(s):.2f} ms  ratio of medians {st.median(s)/st.median(q):.3f}  cpu_us {st.median(cq):.1f}->{st.median(cs):.1f} wait_us {st.median(wq):.1f}->{st.median(ws):.1f}")
