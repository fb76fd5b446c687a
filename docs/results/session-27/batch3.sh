#!/usr/bin/env bash
cd /work/main
export OHA=/tmp/oha-build/bin/oha SG_BIN=/tmp/s27/sg-aa76 ROUNDS=3 DURATION=40 INTERLEAVE=2 OHA_SCHED=fifo NO_HALT=1 WIRE=1
for run in nice-1 base-4 nice-2 base-5 nice-3; do
  echo "== $run $(date -u +%T)"
  case $run in
    nice-*) chrt --idle 0 taskset -c 1 python3 /tmp/s27/nice.py /tmp/s27/sg-aa76 sg-store-commit,sg-blocking 19 > /tmp/s27/nice-$run.log 2>&1 & SP=$!
             bench/login-burst.sh > /tmp/s27/lb-$run.txt 2>&1; echo "rc=$?"; kill $SP ;;
    base-*) bench/login-burst.sh > /tmp/s27/lb-$run.txt 2>&1; echo "rc=$?" ;;
  esac
done
echo "== done $(date -u +%T)"
