#!/usr/bin/env bash
# Moves the gateway's sg-argon2-* threads into an idle CPU cgroup (v1) as they appear.
CG=/sys/fs/cgroup/cpu/sg-hash-idle
mkdir -p $CG && echo 1 > $CG/cpu.idle
declare -A done_tids
while [[ ! -e /tmp/s23/mover.stop ]]; do
  for pid in $(pgrep -f '^/tmp/s2[0-9]/sg'); do
    for t in /proc/$pid/task/[0-9]*; do
      tid=${t##*/}
      [[ -n ${done_tids[$tid]:-} ]] && continue
      read -r c < $t/comm 2>/dev/null || continue
      [[ $c == sg-argon2-* ]] || continue
      echo $tid > $CG/tasks && done_tids[$tid]=1 && echo "$(date +%T) moved $tid $c" >> /tmp/s23/mover.log
    done
  done
  sleep 1
done
