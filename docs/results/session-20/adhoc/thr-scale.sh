#!/usr/bin/env bash
# per-thread CPU of the gateway, sampled every second, over a scale run
cd /work/main
LOG=/tmp/s20/tscale.log
SG_BIN=/tmp/s20/sg-dbg ROUNDS=3 bash bench/scale.sh > $LOG 2>&1 &
S=$!
until grep -q "^gateway" $LOG; do sleep 0.2; done
PID=$(sed -n 's/.*(pid \([0-9]*\)).*/\1/p' $LOG)
: > /tmp/s20/tscale.samples
while kill -0 $S 2>/dev/null && kill -0 $PID 2>/dev/null; do
  t=$(date +%s.%N | cut -c1-14)
  for d in /proc/$PID/task/*; do
    [ -r $d/stat ] || continue
    awk -v t=$t '{ s=$0; sub(/^[0-9]+ \(/,"",s); name=substr(s,1,index(s,")")-1); sub(/^[^)]*\) /,"",s); split(s,f," "); print t, name, f[12]+f[13] }' $d/stat
  done >> /tmp/s20/tscale.samples
  sleep 1
done
wait $S
