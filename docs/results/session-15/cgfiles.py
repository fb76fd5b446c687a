# Exclusive Ir per source file (inlined code by its own file) from a callgrind out file:
#   python3 cgfiles.py callgrind.out.PID.N REQUESTS [file|line|fn] [TOP]
import sys, re, collections
# Aggregate exclusive Ir per source file (inlined files via fi/fe) and per (file,line) from a callgrind out file.
path=sys.argv[1]; reqs=float(sys.argv[2]) if len(sys.argv)>2 else 1
names={}
def resolve(kind,val):
    m=re.match(r'\((\d+)\)(?:\s+(.*))?',val)
    if m:
        k=(kind,m.group(1))
        if m.group(2): names[k]=m.group(2)
        return names.get(k,val)
    return val
perfile=collections.Counter(); perline=collections.Counter(); perfn=collections.Counter()
fl=fi=fn=None; skip=False; last_line=0
for raw in open(path):
    line=raw.rstrip('\n')
    if not line: continue
    if line.startswith('fl='): fl=resolve('fl',line[3:]); fi=None; continue
    if line.startswith('fi=') or line.startswith('fe='):
        f=resolve('fl',line[3:]); fi=None if f==fl else f; continue
    if line.startswith('fn='): fn=resolve('fn',line[3:]); continue
    if line.startswith(('cfn=','cfl=','cfi=','cob=','ob=')):
        if line.startswith(('cfn=',)): resolve('fn',line[4:])
        if line.startswith(('cfl=','cfi=')): resolve('fl',line[4:])
        if line.startswith('ob='): resolve('ob',line[3:])
        if line.startswith('cob='): resolve('ob',line[4:])
        continue
    if line.startswith('calls='): skip=True; continue
    c=line[0]
    if c.isdigit() or c in '+-*':
        parts=line.split()
        p=parts[0]
        if p.startswith('+'): ln=last_line+int(p[1:])
        elif p.startswith('-'): ln=last_line-int(p[1:])
        elif p=='*': ln=last_line
        else: ln=int(p)
        last_line=ln
        if skip: skip=False; continue
        ir=int(parts[1]) if len(parts)>1 else 0
        f=fi or fl
        perfile[f]+=ir; perline[(f,ln)]+=ir; perfn[fn]+=ir
tot=sum(perfile.values())
print('total Ir/req %.0f'%(tot/reqs))
mode=sys.argv[3] if len(sys.argv)>3 else 'file'
src={'file':perfile,'line':perline,'fn':perfn}[mode]
for k,v in src.most_common(int(sys.argv[4]) if len(sys.argv)>4 else 60):
    print('%8.0f %5.1f%% %s'%(v/reqs,100*v/tot,k))
