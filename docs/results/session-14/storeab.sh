#!/usr/bin/env bash
# alternate STORE=memory / embedded login-burst runs
cd /work/main
for i in 1 2; do
  for st in embedded memory; do
    STORE=$st SG_BIN=<session 13 build> OHA=/tmp/oha-build/bin/oha ROUNDS=3 DURATION=8 QUIET_MAX=10 bench/login-burst.sh > /tmp/s14/lb-store-$st-$i.txt 2>&1
  done
done
touch /tmp/s14/storeab.done
