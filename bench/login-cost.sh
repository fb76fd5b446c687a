#!/usr/bin/env bash
# Login cost: what one password verification costs the gateway's process,
# counted by the kernel per thread (/proc/PID/task/TID/stat and status), so
# the figure does not depend on how busy the rest of the machine is.
#
# For each binary in turn (alternating over ROUNDS), start a gateway (one
# tokio worker, pinned to SUT_CPUS), run WARMUP logins (not counted: a
# hashing thread's first hash sets up its memory), then LOGINS successful
# form logins (bench/login-storm.py, LOGIN_RATE/s, well below what the CPU
# can hash, so they do not overlap much), and report per login:
#   hash_minflt   minor page faults of the sg-argon2-* threads
#   hash_cpu_ms   user+system CPU of those threads (and the system part alone)
#   proc_minflt   minor page faults of the whole gateway process
#   proc_cpu_ms   user+system CPU of the whole gateway process
#   tlb_shootdown machine-wide TLB shootdown interrupts (/proc/interrupts "TLB"), noisy
#   rss_mib       gateway VmRSS after the logins
# and, from the kernel's per-thread scheduler counters (schedstat, ns), the
# CPU time per login in microseconds of each group of the gateway's threads:
#   worker_us     the worker (the main thread, with one worker)
#   blocking_us   tokio's blocking pool (sg-blocking; tokio-rt-worker in
#                 builds before session 24): the embedded store's reads
#   commit_us     the embedded store's commit thread (sg-store-commit)
#   tls_us        the handshake threads (sg-tls-*)
# Every login is the same user's, so from the 11th on each one also ends
# that user's least recently used session ([session] max_per_user = 10).
#
#   SG_BINS="/tmp/before/sessiongate /tmp/after/sessiongate" bench/login-cost.sh
#
# Knobs (environment): SG_BINS (required, space-separated), ROUNDS=3,
# LOGINS=100, WARMUP=16, LOGIN_RATE=5, SUT_CPUS=0, LG_CPUS=1,
# STORE=memory (or embedded: a redb file in the scratch dir),
# HASH_CPUS ([login] hash_cpus), SG_SERVER_EXTRA (lines for [server], e.g.
# 'background_cpus = [1]'),
# SG_PORT=18646 SG_ADMIN=127.0.0.1:18993, KEEP_TMP=1 keeps the scratch dir.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
: "${SG_BINS:?set SG_BINS to one or more sessiongate binaries}"
ROUNDS=${ROUNDS:-3} LOGINS=${LOGINS:-100} WARMUP=${WARMUP:-16} LOGIN_RATE=${LOGIN_RATE:-5}
SUT_CPUS=${SUT_CPUS:-0} LG_CPUS=${LG_CPUS:-1}
SG_PORT=${SG_PORT:-18646} SG_ADMIN=${SG_ADMIN:-127.0.0.1:18993}
CLK_TCK=$(getconf CLK_TCK)
PASSWORD=cost-password-$RANDOM
read -r -a BINS <<<"$SG_BINS"

TMP=$(mktemp -d /tmp/sg-login-cost.XXXXXX)
source "$ROOT/bench/lib.sh"
bench_work "$TMP"
SG_PID=""
stop_gateway() {
  [[ -n $SG_PID ]] || return 0
  kill -TERM "$SG_PID" 2>/dev/null || true
  wait "$SG_PID" 2>/dev/null || true
  SG_PID=""
}

"${BINS[0]}" gen-cert --out-dir "$TMP" --host localhost --host 127.0.0.1 >/dev/null
head -c 24 /dev/urandom | base64 | tr -d '/+=' >"$TMP/admin-token"
HASH=$(printf '%s' "$PASSWORD" | "${BINS[0]}" hash-password)
gateway_head "$SG_PORT" "$SG_ADMIN" "$TMP" >"$TMP/sessiongate.toml"
cat >>"$TMP/sessiongate.toml" <<TOML
[store]
$( if [[ ${STORE:-memory} == embedded ]]; then printf 'kind = "embedded"\npath = "%s"\n' "$TMP/sessions.redb"; else echo 'kind = "memory"'; fi )
$( [[ -n ${HASH_CPUS:-} ]] && printf '[login]\nhash_cpus = [%s]\n' "$HASH_CPUS" )
TOML
login_cost_toml "$HASH" >>"$TMP/sessiongate.toml"

logins() {                # logins COUNT
  local rate=$LOGIN_RATE
  taskset -c "$LG_CPUS" python3 "$ROOT/bench/login-storm.py" --url "https://127.0.0.1:$SG_PORT" \
    --user cost --password "$PASSWORD" --rate "$rate" --duration "$(python3 -c "print($1 / $rate)")" >"$TMP/storm.out" 2>&1 ||
    { echo "FAILED: logins: $(cat "$TMP/storm.out")" >&2; exit 1; }
}
# counters PID -> "hash_minflt hash_utime hash_stime proc_minflt proc_utime proc_stime tlb" (ticks)
counters() {
  local pid=$1 t stat rest hm=0 hu=0 hs=0 pm pu ps tlb
  for t in /proc/"$pid"/task/*; do
    stat=$(cat "$t/stat" 2>/dev/null) || continue
    [[ $stat == *"(sg-argon2-"* ]] || continue
    rest=${stat##*) }
    read -r -a f <<<"$rest"       # f[0] is field 3 (state)
    hm=$((hm + f[7])) hu=$((hu + f[11])) hs=$((hs + f[12]))
  done
  stat=$(cat /proc/"$pid"/stat); rest=${stat##*) }; read -r -a f <<<"$rest"
  pm=${f[7]} pu=${f[11]} ps=${f[12]}
  tlb=$(awk '$1 == "TLB:" { s = 0; for (i = 2; i <= NF; i++) if ($i ~ /^[0-9]+$/) s += $i; print s }' /proc/interrupts)
  echo "$hm $hu $hs $pm $pu $ps ${tlb:-0}"
}

# groups PID -> "worker blocking commit tls" CPU ns (schedstat) summed per thread group
groups() {
  local t comm run rest
  for t in /proc/"$1"/task/*; do
    comm=$(cat "$t/comm" 2>/dev/null) || continue
    read -r run rest <"$t/schedstat" 2>/dev/null || continue
    [[ ${t##*/} == "$1" ]] && comm=main   # the main thread has the binary's name
    echo "${t##*/} $run $comm"
  done
}
# group_delta BEFORE AFTER LOGINS -> "worker_us blocking_us commit_us tls_us" per login (a thread
# that started between the snapshots counts from zero; one that ended is left out)
group_delta() {
  awk -v n="$3" 'NR == FNR { r[$1] = $2; next }
    { d = $2 - (($1 in r) ? r[$1] : 0); g = $3
      if (g == "main") w += d
      else if (g ~ /^(sg-blocking|tokio-r)/) b += d
      else if (g == "sg-store-commit") c += d
      else if (g ~ /^sg-tls-/) t += d }
    END { printf "%.1f %.1f %.1f %.1f\n", w / 1000 / n, b / 1000 / n, c / 1000 / n, t / 1000 / n }' "$1" "$2"
}

printf '%-5s %-40s %11s %11s %12s %11s %11s %13s %8s %10s %12s %10s %8s\n' round binary hash_minflt hash_cpu_ms hash_sys_ms proc_minflt proc_cpu_ms tlb_shootdown rss_mib worker_us blocking_us commit_us tls_us
for ((r = 1; r <= ROUNDS; r++)); do
  # Alternate the order of the binaries between rounds.
  if ((r % 2)); then order=("${BINS[@]}"); else order=(); for ((i = ${#BINS[@]} - 1; i >= 0; i--)); do order+=("${BINS[i]}"); done; fi
  for bin in "${order[@]}"; do
    rm -f "$TMP/sessions.redb"   # each gateway starts from an empty store
    taskset -c "$SUT_CPUS" "$bin" --config "$TMP/sessiongate.toml" >"$TMP/gateway.out" 2>&1 &
    SG_PID=$!
    for _ in $(seq 100); do curl -fsS "http://$SG_ADMIN/healthz" >/dev/null 2>&1 && break; sleep 0.1; done
    logins "$WARMUP"
    read -r a0 a1 a2 a3 a4 a5 a6 <<<"$(counters "$SG_PID")"
    groups "$SG_PID" >"$TMP/groups.before"
    logins "$LOGINS"
    groups "$SG_PID" >"$TMP/groups.after"
    read -r b0 b1 b2 b3 b4 b5 b6 <<<"$(counters "$SG_PID")"
    per_group=$(group_delta "$TMP/groups.before" "$TMP/groups.after" "$LOGINS")
    rss=$(awk '/^VmRSS/ { printf "%.1f", $2 / 1024 }' /proc/"$SG_PID"/status)
    stop_gateway
    awk -v n="$LOGINS" -v hz="$CLK_TCK" -v r="$r" -v bin="$bin" -v rss="$rss" \
      -v hm=$((b0 - a0)) -v hc=$((b1 - a1 + b2 - a2)) -v hs=$((b2 - a2)) \
      -v pm=$((b3 - a3)) -v pc=$((b4 - a4 + b5 - a5)) -v tlb=$((b6 - a6)) -v g="$per_group" 'BEGIN {
      split(g, u, " ")
      printf "%-5d %-40s %11.1f %11.2f %12.2f %11.1f %11.2f %13.1f %8s %10s %12s %10s %8s\n", r, bin, hm / n, hc * 1000 / hz / n,
             hs * 1000 / hz / n, pm / n, pc * 1000 / hz / n, tlb / n, rss, u[1], u[2], u[3], u[4] }'
  done
done
echo "(per login, after $WARMUP warm-up logins; $LOGINS logins at $LOGIN_RATE/s per row; CPU in ms from $CLK_TCK Hz ticks)"
