#!/usr/bin/env bash
cd /work/main
for i in 1 2; do
  for v in all:<this build> creations:<creations-only build> s13:<session 13 build>; do
    SG_BIN=${v#*:} bench/store-writes.sh > /tmp/s14/sw-${v%%:*}-$i.txt 2>&1
  done
done
touch /tmp/s14/swab.done
