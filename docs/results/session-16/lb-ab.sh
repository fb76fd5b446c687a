#!/usr/bin/env bash
# Alternates login-burst runs: this session's final build (per-user limit on, default 10: every
# storm login past the tenth ends the storm user's least recent session) and session 15's build.
export OHA=/tmp/oha-build/bin/oha ROUNDS=3 DURATION=8 QUIET_MAX=10 KEEP_TMP=0
for i in 1 2 3; do
  (cd /work/main && SG_BIN=/tmp/s16/sg-final-dist bash bench/login-burst.sh > /tmp/s16/lb-final-$i.txt 2>&1)
  (cd /tmp/s16/base && SG_BIN=/tmp/s16/sg-base-dist bash bench/login-burst.sh > /tmp/s16/lb-base-$i.txt 2>&1)
done
echo done > /tmp/s16/lb-done
