#!/usr/bin/env bash
cd /work/main
export OHA=/tmp/oha-build/bin/oha SG_BIN=/tmp/s27/sg-head2 ROUNDS=3 DURATION=40 INTERLEAVE=2 OHA_SCHED=fifo NO_HALT=1 WIRE=1
for run in keys-1 def-1 keys-2 keys-3; do
  echo "== $run $(date -u +%T)"
  case $run in
    keys-*) HASH_CPUS=1 SG_SERVER_EXTRA='background_cpus = [1]' bench/login-burst.sh > /tmp/s27/lb-final-$run.txt 2>&1 ;;
    def-*) bench/login-burst.sh > /tmp/s27/lb-final-$run.txt 2>&1 ;;
  esac
  echo "rc=$?"
done
echo "== done $(date -u +%T)"
