#!/usr/bin/env bash
# perf of the gateway over a whole scale run, with each round's end time (CLOCK_MONOTONIC)
cd /work/main
LOG=/tmp/s20/pscale.log
mono() { python3 -c 'import time;print("%.3f"%time.monotonic())'; }
SG_BIN=/tmp/s20/sg-dbg ROUNDS=5 bash bench/scale.sh > $LOG 2>&1 &
S=$!
until grep -q "^minted" $LOG; do sleep 0.2; done
PID=$(sed -n 's/.*(pid \([0-9]*\)).*/\1/p' $LOG)
echo "start $(mono)" > /tmp/s20/pscale.times
perf record -F 1999 -k mono -p $PID -o /tmp/s20/pscale.data > /tmp/s20/pscale-rec.log 2>&1 &
P=$!
n=0
while kill -0 $S 2>/dev/null; do
  c=$(grep -c "^round" $LOG)
  if [ "$c" -gt "$n" ]; then echo "$(grep "^round" $LOG | tail -1 | cut -c1-14) end $(mono)" >> /tmp/s20/pscale.times; n=$c; fi
  [ "$c" -ge 10 ] && break
  sleep 0.1
done
kill -INT $P; wait $P
wait $S
echo done >> /tmp/s20/pscale.times
