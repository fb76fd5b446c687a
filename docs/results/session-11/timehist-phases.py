import re,collections,sys
rows=[]
for line in open(sys.argv[1]):
    p=line.split()
    if len(p)<6: continue
    try: t=float(p[0]); wait=float(p[-3]); sch=float(p[-2]); run=float(p[-1])
    except: continue
    rows.append((t,p[1],' '.join(p[2:-3]),wait,sch,run))
q0,q1,s0,s1=map(float,sys.argv[2:6]); W=sys.argv[6]
def ph(t):
    if q0<=t<q1: return 'quiet'
    if s0<=t<s1: return 'storm'
for phase in ['quiet','storm']:
    w=[r for r in rows if ph(r[0])==phase and r[2].startswith(W)]
    runs=sorted(r[5] for r in w); sch=sorted(r[4] for r in w); n=len(w)
    print(phase,'worker sw',n,'run p50 %.3f p99 %.3f max %.3f'%(runs[n//2],runs[int(n*.99)],runs[-1]),'| sch p50 %.3f p99 %.3f max %.3f'%(sch[n//2],sch[int(n*.99)],sch[-1]),'| run>0.3ms',sum(x>0.3 for x in runs),'sch>0.3ms',sum(x>0.3 for x in sch), 'sum sch>0.3', round(sum(x for x in sch if x>0.3),1))
    tot=collections.Counter()
    for r in rows:
        if ph(r[0])==phase and r[1]=='[0000]': tot[re.sub(r'\[.*','',r[2])+('' if not r[2].startswith('tokio') else r[2][r[2].find('['):])]+=r[5]
    print('  cpu0 run ms:',[(k,round(v,1)) for k,v in tot.most_common(9)])
