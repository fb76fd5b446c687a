#!/usr/bin/env bash
cd /work/main
for i in 1 2; do
  SG_BIN=<this build> bench/store-writes.sh > /tmp/s14/an3-new-$i.txt 2>&1
  SG_BIN=<session 13 build> bench/store-writes.sh > /tmp/s14/an3-old-$i.txt 2>&1
  STORE=memory SG_BIN=<this build> bench/store-writes.sh > /tmp/s14/an3-mem-$i.txt 2>&1
done
touch /tmp/s14/anonab3.done
