#!/usr/bin/env bash
cd /work/main
export OHA=/tmp/oha-build/bin/oha SG_BIN=/tmp/s27/sg-aa76 ROUNDS=3 DURATION=40 INTERLEAVE=2 OHA_SCHED=fifo NO_HALT=1 WIRE=1
for run in unp-1 pin-1 unp-2 pin-2 unp-3; do
  echo "== $run $(date -u +%T)"
  case $run in
    unp-*) SUT_CPUS=0,1 bench/login-burst.sh > /tmp/s27/lb-$run.txt 2>&1 ;;
    pin-*) bench/login-burst.sh > /tmp/s27/lb-$run.txt 2>&1 ;;
  esac
  echo "rc=$?"
done
echo "== done $(date -u +%T)"
