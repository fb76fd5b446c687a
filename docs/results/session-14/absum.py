import sys,glob,statistics as st,collections
tag=sys.argv[1]
rows=collections.defaultdict(list)
for f in sorted(sum([glob.glob(f'./{t}-*.tsv') for t in tag.split(',')],[])):
    name=f.split('/')[-1].split('-',1)[1].rsplit('-',1)[0]
    R={}
    for l in open(f):
        c=l.rstrip('\n').split('\t')
        if c[0]=='run_id' or c[3]!='ka': continue
        R.setdefault((c[0],c[1]),{})[c[4]]=c
    for k,d in R.items():
        if 'nginx-tls' in d and 'sessiongate' in d:
            n,s=d['nginx-tls'],d['sessiongate']
            rows[name].append((float(s[5])/float(n[5]), float(s[7])/float(n[7]), float(s[9])/float(n[9]), float(s[7])/float(s[6]), float(n[7])/float(n[6])))
for name,r in rows.items():
    med=lambda i: st.median(x[i] for x in r)
    print(f"{name}: rounds={len(r)} rps×ngx={med(0):.3f} [{min(x[0] for x in r):.2f}-{max(x[0] for x in r):.2f}] ≥1: {sum(x[0]>=1 for x in r)} p99×ngx={med(1):.3f} cpu×ngx={med(2):.3f} p99/p50 sg={med(3):.2f} ngx={med(4):.2f}")
