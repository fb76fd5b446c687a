#!/usr/bin/env bash
# Latency spectrum and scheduler counters of the keep-alive benchmark: where
# does sessiongate's p99 come from, next to nginx's?
#
# Runs bench/run.sh (so: the shared peer harness, every request to
# sessiongate verified) on a private copy of ../shared/bench whose wrk
# script also records p75, p95, p99.5, p99.9 and p99.99 (the shared one
# prints p50, p90 and p99), and samples the kernel's per-thread counters of
# the servers under test while it runs (/proc/PID/task/TID/schedstat and
# status, every 0.2 s). Prints, per target, the median of each percentile
# over the rounds, and per server thread its CPU time, run-queue wait and
# context switches over the whole run.
#
#   bench/spectrum.sh                                  # ROUNDS=4 DURATION=10
#   SG_BIN=/path/to/sessiongate ROUNDS=4 bench/spectrum.sh
#
# Knobs: everything bench/run.sh and peers.sh take; TARGETS defaults to
# "nginx-tls sessiongate", HS_MODES to "" (keep-alive only).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
SHARED=${SHARED_BENCH:-$ROOT/../shared/bench}
[[ -x $SHARED/peers.sh ]] || { echo "peer benchmark not found at $SHARED (set SHARED_BENCH=...)" >&2; exit 1; }

WORK=$(mktemp -d /tmp/sg-spectrum.XXXXXX)
trap 'touch "$WORK/stop"; wait 2>/dev/null || true; [[ -n ${KEEP_TMP:-} ]] || rm -rf "$WORK"' EXIT
cp -r "$SHARED" "$WORK/peers"
cat >>"$WORK/peers/conf/report.lua" <<LUA
-- added by bench/spectrum.sh: one more line per wrk run, with more percentiles
local shared_done = done
done = function(summary, latency, requests)
  shared_done(summary, latency, requests)
  local f = io.open("$WORK/percentiles.txt", "a")
  if f then
    f:write(string.format("%s %d %d %d %d %d %d %d %d %d %d %d\n", tostring(wrk.port), summary.requests,
      summary.duration, latency:percentile(50), latency:percentile(75), latency:percentile(90),
      latency:percentile(95), latency:percentile(99), latency:percentile(99.5),
      latency:percentile(99.9), latency:percentile(99.99), latency.max))
    f:close()
  end
end
LUA

# sample PID TID COMM RUN_NS WAIT_NS VOLUNTARY INVOLUNTARY | ROLE, every 0.2 s
sample() {
  local p t role run wait rest vol inv
  while [[ ! -e $WORK/stop ]]; do
    for p in $(pgrep -x nginx) $(pgrep -f 'sessiongate-bench.toml') $(pgrep -f floor-proxy); do
      role=$(tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null) || continue
      case $role in
        *sessiongate-bench.toml*) role=sessiongate ;;
        *floor-proxy*) role=floor-tls ;;
        "nginx: worker process"*)
          case $(tr '\0' ' ' <"/proc/$(awk '{print $4}' "/proc/$p/stat" 2>/dev/null)/cmdline" 2>/dev/null) in
            *proxy.conf*) role=nginx-tls ;;
            *upstream.conf*) role=upstream ;;
            *) continue ;;
          esac ;;
        *) continue ;;
      esac
      for t in /proc/"$p"/task/*; do
        read -r run wait rest <"$t/schedstat" 2>/dev/null || continue
        vol=$(awk '/^voluntary_ctxt/ {print $2}' "$t/status" 2>/dev/null)
        inv=$(awk '/^nonvoluntary_ctxt/ {print $2}' "$t/status" 2>/dev/null)
        echo "$p ${t##*/} $(cat "$t/comm" 2>/dev/null) $run $wait ${vol:-0} ${inv:-0} $role"
      done
    done >>"$WORK/sched.txt"
    sleep 0.2
  done
}
sample &

export ROUNDS=${ROUNDS:-4} DURATION=${DURATION:-10} HS_MODES=${HS_MODES-}
export TARGETS=${TARGETS:-nginx-tls sessiongate}
PEERS=$WORK/peers/peers.sh RESULTS=$WORK/results.tsv "$ROOT/bench/run.sh" >"$WORK/run.out" 2>&1 ||
  { echo "bench/run.sh failed:" >&2; tail -20 "$WORK/run.out" >&2; exit 1; }
touch "$WORK/stop"; wait

# Ports -> targets, as peers.sh numbers them (GW_PORT etc. override both).
declare -A NAME=([${NGX_TLS_PORT:-18443}]=nginx-tls [${GW_PORT:-18445}]=sessiongate
  [${FLOOR_PORT:-18446}]=floor-tls [${HAP_TLS_PORT:-18444}]=haproxy-tls)
echo "# keep-alive latency spectrum, ms: median over $ROUNDS rounds of ${DURATION} s (warm-up runs left out)"
printf '%-12s %7s %7s %7s %7s %7s %7s %7s %7s %7s %9s\n' target p50 p75 p90 p95 p99 p99.5 p99.9 p99.99 max 'p99/p50'
while read -r port; do
  # warm-up runs last WARMUP s; measured ones DURATION s
  awk -v port="$port" -v min=$((DURATION * 1000000 * 9 / 10)) '$1 == port && $3 >= min' "$WORK/percentiles.txt" |
    python3 -c '
import statistics, sys
rows = [list(map(int, l.split()[3:])) for l in sys.stdin if l.strip()]
if rows:
    med = [statistics.median(c) / 1000 for c in zip(*rows)]
    print(sys.argv[1].ljust(12), " ".join(f"{m:7.2f}" for m in med), f"{med[4] / med[0]:9.2f}")
' "${NAME[$port]:-port-$port}"
done < <(awk '{print $1}' "$WORK/percentiles.txt" | sort -u)

echo
echo "# scheduler counters over the whole run (every round and warm-up), per thread that ran >= 0.1 s"
printf '%-12s %-18s %9s %9s %12s %12s\n' server thread cpu_s wait_s voluntary involuntary
awk '{ k = $8 " " $2 " " $3; if (!(k in f)) { f[k] = $0 } l[k] = $0 }
     END { for (k in f) { split(f[k], a, " "); split(l[k], b, " ")
             if ((b[4] - a[4]) >= 1e8) printf "%-12s %-18s %9.2f %9.2f %12d %12d\n", b[8], b[3], (b[4] - a[4]) / 1e9, (b[5] - a[5]) / 1e9, b[6] - a[6], b[7] - a[7] } }' \
  "$WORK/sched.txt" | sort
echo
echo "# requests per target (rounds, warm-ups left out): $(awk -F'\t' '$4 == "ka" { n[$5] += $14 } END { for (t in n) printf "%s %d  ", t, n[t] }' "$WORK/results.tsv")"
echo "# results: $WORK/results.tsv$([[ -n ${KEEP_TMP:-} ]] && echo " (kept)" || echo " (deleted; KEEP_TMP=1 keeps it)")"
