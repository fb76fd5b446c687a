import sys
def load(f):
    d={}
    for l in open(f):
        p=l.split(None,3)
        if len(p)<4: continue
        try: per=int(p[1])
        except: continue
        d[(p[2],p[3].strip())]=per
    return d
q=load(sys.argv[1]); s=load(sys.argv[2])
for name,d in (("quiet",q),("storm",s)):
    print(name, "total %.1f kernel %.1f user %.1f ms/s"%(sum(d.values())/1e6/15, sum(v for k,v in d.items() if 'kernel' in k[0])/1e6/15, sum(v for k,v in d.items() if 'kernel' not in k[0])/1e6/15))
keys=set(q)|set(s)
diff=sorted(((s.get(k,0)-q.get(k,0))/1e6/15,k) for k in keys)
print("up:", "; ".join("%s %+.2f"%(k[1][4:40],d) for d,k in diff[::-1][:6]))
print("down:", "; ".join("%s %+.2f"%(k[1][4:40],d) for d,k in diff[:6]))
