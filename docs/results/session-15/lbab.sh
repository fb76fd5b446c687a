#!/bin/bash
# alternate variants: VARIANTS="name:ENV=val,ENV2=val ..." PASSES=n TAG=x
for p in $(seq ${PASSES:-2}); do
  for v in $VARIANTS; do
    name=${v%%:*}; envs=${v#*:}; [[ $envs == "$v" ]] && envs=
    env $(echo "$envs" | tr ',' ' ') SG_BIN=${SG_BIN} OHA=/tmp/oha-build/bin/oha ROUNDS=${ROUNDS:-3} DURATION=${DURATION:-8} QUIET_MAX=10 /work/main/bench/login-burst.sh > /tmp/s15/$TAG-$name-$p.txt 2>&1
    echo "$name $p: $(grep 'median over' /tmp/s15/$TAG-$name-$p.txt)"
  done
done
