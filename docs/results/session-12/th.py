import sys,re,collections
for f in sys.argv[1:]:
    runs=collections.defaultdict(list); delay=collections.defaultdict(list)
    for line in open(f):
        p=line.split()
        if len(p)<6 or not p[1].startswith('['): continue
        name=' '.join(p[2:-3])
        try: sch=float(p[-2]); run=float(p[-1])
        except: continue
        m=re.match(r'(sg-auto-dist|sg-tls-0|sg-argon2-\d|tokio-runtime-w|nginx|oha|python3)',name)
        if not m: continue
        key=m.group(1)
        if key=='sessiongate' and '/' in name: key='sessiongate-other'
        runs[key].append(run); delay[key].append(sch)
    print('==',f)
    for k in sorted(runs):
        r=sorted(runs[k]); d=sorted(delay[k]); n=len(r)
        print(f"  {k:18s} n={n:6d} run total {sum(r):8.1f} ms  run>0.3ms {sum(x>0.3 for x in r):4d} max {r[-1]:.2f} | sch delay p99 {d[int(n*.99)]:.3f} >0.3ms {sum(x>0.3 for x in d):4d} max {d[-1]:.2f}")
