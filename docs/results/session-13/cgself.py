import sys,re,collections
# self cost per function from a callgrind file (uncompressed names)
f=sys.argv[1]; reqs=float(sys.argv[2]) if len(sys.argv)>2 else 1
self_=collections.Counter(); incl=collections.Counter()
fn=None; after_calls=False; cfn=None
for line in open(f,errors='replace'):
    if line.startswith('fn='): fn=line[3:].strip(); continue
    if line.startswith('cfn='): cfn=line[4:].strip(); continue
    if line.startswith('calls='): after_calls=True; continue
    if line and (line[0].isdigit() or line[0] in '+-*'):
        parts=line.split()
        if len(parts)>=2:
            c=int(parts[1])
            if after_calls: incl[(fn,cfn)]+=c; after_calls=False
            else: self_[fn]+=c
tot=sum(self_.values())
print('total',tot, 'per req', tot/reqs)
def short(n): 
    n=re.sub(r'<[^<>]*>','',n); n=re.sub(r'<[^<>]*>','',n); n=re.sub(r'<[^<>]*>','',n)
    return n[:150]
for k,v in self_.most_common(int(sys.argv[3]) if len(sys.argv)>3 else 45):
    print(f"{v/reqs:8.0f} {100*v/tot:5.1f}% {short(k)}")
if len(sys.argv)>4:
    tgt=sys.argv[4]
    print('callers of',tgt)
    for (a,b),v in sorted(incl.items(), key=lambda x:-x[1]):
        if b and tgt in short(b): print(f"{v/reqs:8.0f} {short(a)}")
if len(sys.argv)>5:
    inc=collections.Counter()
    for k,v in self_.items(): inc[k]+=v
    for (a,b),v in incl.items():
        if a!=b: inc[a]+=v
    for k,v in inc.most_common():
        if re.search(sys.argv[5],k): print(f"{v/reqs:8.0f} {short(k)}")
if len(sys.argv)>6:
    print('callees of',sys.argv[6])
    for (a,b),v in sorted(incl.items(), key=lambda x:-x[1]):
        if a and sys.argv[6] in short(a): print(f"{v/reqs:8.0f} {short(b)}")
