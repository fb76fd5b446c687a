#!/usr/bin/env bash
# How long does a NEW visitor's TLS handshake take while established
# connections keep the gateway's CPU busy? The price of
# [server] tls_handshakes = "background" (handshakes in SCHED_IDLE threads:
# established connections go first) against "inline" (handshakes on the
# worker, between requests, as nginx does).
#
# The gateway (one worker) and an nginx upstream share CPU 0; wrk and curl
# run on CPU 1. Per mode, for each load level: wrk keeps CONNS keep-alive
# connections busy for DURATION s, at full speed (wrk) or at a fixed rate
# (RATE req/s, oha -q) and meanwhile curl makes PROBES new connections, one
# every 0.25 s, each a full TLS handshake and one request. Prints, per mode
# and load, the handshake time (curl's time_appconnect - time_connect) p50
# and max, and the keep-alive load's req/s and p99.
#
#   SG_BIN=/path/to/sessiongate bench/connect-under-load.sh
#
# Knobs: MODES="background inline" CONNS=64 DURATION=10 PROBES=30 RATE=2000
#        OHA=oha (for the fixed-rate level; skipped if missing)
#        SUT_CPUS=0 LG_CPUS=1 UP_PORT=18380 SG_PORT=18745 SG_ADMIN=127.0.0.1:18995
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
MODES=${MODES:-background inline} CONNS=${CONNS:-64} DURATION=${DURATION:-10} PROBES=${PROBES:-30}
RATE=${RATE:-2000} OHA=${OHA:-oha}
SUT_CPUS=${SUT_CPUS:-0} LG_CPUS=${LG_CPUS:-1}
UP_PORT=${UP_PORT:-18380} SG_PORT=${SG_PORT:-18745} SG_ADMIN=${SG_ADMIN:-127.0.0.1:18995}
: "${SG_BIN:?set SG_BIN to a sessiongate binary (cargo build --profile dist)}"
for tool in nginx wrk curl taskset setsid awk; do
  command -v "$tool" >/dev/null || { echo "missing tool: $tool" >&2; exit 1; }
done

TMP=$(mktemp -d /tmp/sg-connect.XXXXXX)
chmod 755 "$TMP"
source "$ROOT/bench/lib.sh"
bench_work "$TMP"

"$SG_BIN" gen-cert --out-dir "$TMP" --host 127.0.0.1 >/dev/null
head -c 24 /dev/urandom | base64 | tr -d '/+=' >"$TMP/admin-token"
start_upstream "$SUT_CPUS" "$UP_PORT" 'ok from the bench upstream'

URL=https://127.0.0.1:$SG_PORT/
# probe_loop OUT: PROBES new connections, one every 0.25 s; "handshake_ms" per line
probe_loop() {
  local i
  for i in $(seq "$PROBES"); do
    taskset -c "$LG_CPUS" curl -sk -o /dev/null --max-time 15 -H 'Connection: close' \
      -w '%{time_connect} %{time_appconnect} %{http_code}\n' "$URL" || echo "0 0 000"
    sleep 0.25
  done | awk '{ printf "%.3f %s\n", ($2 - $1) * 1000, $3 }' >"$1"
}
stats() {  # stats FILE -> "p50 max failed"
  sort -n "$1" | awk '{ v[NR] = $1; if ($2 != 200) bad++ } END { printf "%.2f %.2f %d\n", v[int((NR + 1) / 2)], v[NR], bad + 0 }'
}

printf '%-11s %-12s %10s %10s %10s %10s %7s\n' mode load ka_req/s ka_p99_ms hs_p50_ms hs_max_ms failed
for mode in $MODES; do
  SG_HANDSHAKES=$mode gateway_head "$SG_PORT" "$SG_ADMIN" "$TMP" >"$TMP/sg-$mode.toml"
  cat >>"$TMP/sg-$mode.toml" <<TOML
[store]
kind = "memory"
[[routes]]
path_prefix = "/"
upstream = "http://127.0.0.1:$UP_PORT"
auth = "none"
TOML
  start "$SUT_CPUS" "$TMP/sg-$mode.out" "$SG_BIN" --config "$TMP/sg-$mode.toml"
  sg=$LAST
  for _ in $(seq 100); do curl -fsS "http://$SG_ADMIN/healthz" >/dev/null 2>&1 && break; sleep 0.1; done
  curl -fsSk -o /dev/null "$URL" || { echo "FAILED: gateway does not answer" >&2; tail "$TMP/sg-$mode.out" >&2; exit 1; }

  loads=(idle saturated)
  command -v "$OHA" >/dev/null && loads+=("${RATE}/s")
  for load in "${loads[@]}"; do
    rps=- p99=-
    case $load in
      idle) probe_loop "$TMP/probe.txt" ;;
      saturated)
        taskset -c "$LG_CPUS" wrk -t1 -c"$CONNS" -d"${DURATION}s" --latency "$URL" >"$TMP/wrk.txt" 2>&1 &
        w=$!; sleep 1; probe_loop "$TMP/probe.txt"; wait "$w"
        rps=$(awk '/^Requests\/sec/ { printf "%.0f", $2 }' "$TMP/wrk.txt")
        p99=$(awk '$1 == "99%" { v = $2; u = v; gsub(/[0-9.]/, "", u); gsub(/[a-z]/, "", v);
                 printf "%.2f", (u == "us") ? v / 1000 : (u == "s") ? v * 1000 : v }' "$TMP/wrk.txt") ;;
      *)
        taskset -c "$LG_CPUS" "$OHA" --no-tui --output-format json -z "${DURATION}s" -q "$RATE" -c 16 --insecure \
          "$URL" >"$TMP/oha.json" 2>/dev/null &
        w=$!; sleep 1; probe_loop "$TMP/probe.txt"; wait "$w"
        read -r rps p99 < <(python3 -c 'import json,sys; j=json.load(open(sys.argv[1]));
print(round(j["summary"]["requestsPerSec"]), round(j["latencyPercentiles"]["p99"]*1000, 2))' "$TMP/oha.json") ;;
    esac
    read -r p50 max bad < <(stats "$TMP/probe.txt")
    printf '%-11s %-12s %10s %10s %10s %10s %7s\n' "$mode" "$load" "$rps" "$p99" "$p50" "$max" "$bad"
  done
  kill -TERM -- "-$sg" 2>/dev/null || true
  for _ in $(seq 50); do kill -0 "$sg" 2>/dev/null || break; sleep 0.1; done
done
echo "(hs_*: curl's time_appconnect - time_connect of $PROBES new connections per row; ka_*: the keep-alive load's own figures)"
