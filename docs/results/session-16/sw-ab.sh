#!/usr/bin/env bash
# Alternates store-writes runs: HEAD (this session) and base (36dbec9), each with its own script.
for i in 1 2; do
  (cd /work/main && SG_BIN=/tmp/s16/sg-head-dist ROUNDS=3 bash bench/store-writes.sh > /tmp/s16/sw-head-$i.txt 2>/tmp/s16/sw-head-$i.err)
  (cd /tmp/s16/base && SG_BIN=/tmp/s16/sg-base-dist ROUNDS=3 bash bench/store-writes.sh > /tmp/s16/sw-base-$i.txt 2>/tmp/s16/sw-base-$i.err)
done
echo done > /tmp/s16/sw-done
