#!/usr/bin/env bash
# A/B: TAG PASSES VARIANTS="name:ENV=a,ENV2=b name2:" SG_BIN
set -u
cd "$(dirname "$0")/../../.."
for p in $(seq ${PASSES:-3}); do
  for v in $VARIANTS; do
    name=${v%%:*}; envs=${v#*:}
    ( IFS=,; for e in $envs; do [ -n "$e" ] && export "$e"; done
      RESULTS=${OUT:-/tmp}/$TAG-$name-$p.tsv SG_BIN=$SG_BIN ROUNDS=${ROUNDS:-3} DURATION=${DURATION:-8} HS_MODES="" TARGETS="nginx-tls sessiongate" QUIET_MAX=${QUIET_MAX:-10} bench/run.sh >${OUT:-/tmp}/$TAG-$name-$p.log 2>&1 )
    echo "done $name $p $(date +%T)"
  done
done
