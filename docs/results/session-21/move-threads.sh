#!/usr/bin/env bash
# bench/login-burst.sh with ONE of the gateway's thread kinds ($1: a comm pattern) moved to CPU 1
PAT=$1 LOG=$2; shift 2
cd /work/main
env "$@" bash bench/login-burst.sh > "$LOG" 2>&1 &
LB=$!
until sg=$(pgrep -f "sessiongate.toml" | head -1) && [[ -n $sg ]] && grep -qs commit /proc/$sg/task/*/comm && grep -qs sg-tls /proc/$sg/task/*/comm; do sleep 0.1; done
sleep 0.3
for t in /proc/$sg/task/*; do
  c=$(cat $t/comm)
  [[ $c == $PAT ]] && taskset -p -c 1 ${t##*/} >/dev/null && echo "moved $c" >> "$LOG.moved"
done
wait $LB
