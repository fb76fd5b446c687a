#!/usr/bin/env bash
# Verified requests/s with the Redis store vs the embedded store, measured in
# the same run (alternating, ROUNDS times), plus the latency of a request
# whose session must be read from Redis (a cache miss) vs a cache hit.
#
#   bench/redis-vs-embedded.sh        # ROUNDS=3 DURATION=8 by default
#
# Needs wrk, nginx (../shared/bench/setup.sh installs them), redis-server, curl.
# Everything listens on 127.0.0.1 only and is stopped on exit.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
ROUNDS=${ROUNDS:-3} DURATION=${DURATION:-8} CONNS=${CONNS:-64} MISSES=${MISSES:-100}
SG_PROFILE=${SG_PROFILE:-dist}
export SG_BIN=$ROOT/target/$SG_PROFILE/sessiongate
W=$(mktemp -d /tmp/sg-redis-bench.XXXXXX)
export SG_BENCH_DIR=$W
UA=redis-bench/1
UP=18180 GW=18545 GW2=18546 ADMIN=18991 ADMIN2=18992 RP=18379
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$W"; }
trap cleanup EXIT

(cd "$ROOT" && cargo build --profile "$SG_PROFILE" --quiet)
head -c 24 /dev/urandom | base64 | tr -d '/+=' >"$W/admin-token"
"$SG_BIN" gen-cert --out-dir "$W" --host 127.0.0.1 >/dev/null

cat >"$W/up.conf" <<NGX
worker_processes 1; daemon off; pid $W/up.pid; error_log $W/up.err warn;
events { worker_connections 4096; }
http { access_log off; client_body_temp_path $W/cb; proxy_temp_path $W/pt; fastcgi_temp_path $W/ft;
  uwsgi_temp_path $W/ut; scgi_temp_path $W/st; keepalive_requests 100000000;
  server { listen 127.0.0.1:$UP; location / { return 200 'ok from the bench upstream'; } } }
NGX
taskset -c 0 nginx -c "$W/up.conf" >/dev/null 2>&1 & pids+=($!)
taskset -c 0 redis-server --port $RP --bind 127.0.0.1 --save "" --appendonly no >"$W/redis.log" 2>&1 & pids+=($!)
for _ in $(seq 50); do redis-cli -p $RP ping >/dev/null 2>&1 && break; sleep 0.1; done

start_gw() { # start_gw STORE(embedded|redis) PORT ADMINPORT -> pid in $gw_pid
  local redis=""; [[ $1 == redis ]] && redis="redis://127.0.0.1:$RP"
  mkdir -p "$W/$1-$2"
  SG_BENCH_REDIS=$redis GATEWAY_LISTEN=127.0.0.1:$2 GATEWAY_UPSTREAM=http://127.0.0.1:$UP \
    GATEWAY_TLS_CERT=$W/cert.pem GATEWAY_TLS_KEY=$W/key.pem BENCH_TMP=$W/$1-$2 SG_BENCH_ADMIN=127.0.0.1:$3 \
    TOKIO_WORKER_THREADS=1 taskset -c 0 "$ROOT/bench/gateway-cmd.sh" 2>"$W/gw-$1-$2.log" &
  gw_pid=$!; pids+=($gw_pid)
  for _ in $(seq 100); do curl -fsS "http://127.0.0.1:$3/healthz" >/dev/null 2>&1 && return 0; sleep 0.05; done
  echo "gateway ($1) did not start" >&2; cat "$W/gw-$1-$2.log" >&2; exit 1
}
mint() { "$SG_BIN" session mint --admin "http://127.0.0.1:$1" --token-file "$W/admin-token" --user bench \
  --client-ip 127.0.0.1 --header "User-Agent: $UA"; }

printf 'round\tstore\trps\tp99_ms\n' >"$W/rps.tsv"
for r in $(seq "$ROUNDS"); do
  for store in embedded redis; do
    start_gw $store $GW $ADMIN
    c=$(mint $ADMIN)
    taskset -c 1 wrk -t1 -c"$CONNS" -d2s -H "Cookie: $c" -H "User-Agent: $UA" "https://127.0.0.1:$GW/" >/dev/null
    out=$(taskset -c 1 wrk -t1 -c"$CONNS" -d"${DURATION}s" --latency -H "Cookie: $c" -H "User-Agent: $UA" "https://127.0.0.1:$GW/")
    rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
    p99=$(awk '$1 == "99%" {v=$2; if (v ~ /us$/) {sub(/us$/,"",v); v/=1000} else if (v ~ /ms$/) sub(/ms$/,"",v); else if (v ~ /s$/) {sub(/s$/,"",v); v*=1000}; print v}' <<<"$out")
    printf '%s\t%s\t%s\t%s\n' "$r" "$store" "$rps" "$p99" >>"$W/rps.tsv"
    kill "$gw_pid"; wait "$gw_pid" 2>/dev/null || true
  done
done
echo "== verified requests/s, keep-alive, $CONNS connections, ${DURATION}s per round"
awk -F'\t' 'NR > 1 { v[$1, $2] = $3; p[$1, $2] = $4; n = ($1 > n) ? $1 : n }
  END { printf "%-6s %10s %10s %8s %12s %12s\n", "round", "embedded", "redis", "ratio", "p99_emb_ms", "p99_redis_ms"
        for (i = 1; i <= n; i++)
          printf "%-6s %10.0f %10.0f %8.3f %12.2f %12.2f\n", i, v[i, "embedded"], v[i, "redis"], v[i, "redis"] / v[i, "embedded"], p[i, "embedded"], p[i, "redis"] }' \
  "$W/rps.tsv" | tee "$W/ratios.txt"
awk 'NR > 1 { print $4 }' "$W/ratios.txt" | sort -n | awk '{ r[NR] = $1 } END { m = (NR % 2) ? r[(NR + 1) / 2] : (r[NR / 2] + r[NR / 2 + 1]) / 2; printf "median ratio redis / embedded: %.3f\n", m }'

# Cache-miss latency: sessions minted through instance A are in A's cache
# only; the first request through instance B must read Redis, the second on
# the same connection is a cache hit. Server time = time to first byte minus
# the TLS handshake.
start_gw redis $GW $ADMIN; a=$gw_pid
start_gw redis $GW2 $ADMIN2
: >"$W/lat.tsv"
for _ in $(seq "$MISSES"); do
  c=$(mint $ADMIN)
  curl -sk -o /dev/null -w '%{time_appconnect} %{time_starttransfer}\n' -H "Cookie: $c" -A "$UA" "https://127.0.0.1:$GW2/" \
    --next -sk -o /dev/null -w '%{time_appconnect} %{time_starttransfer}\n' -H "Cookie: $c" -A "$UA" "https://127.0.0.1:$GW2/" |
    paste -sd' ' >>"$W/lat.tsv"
done
echo "== latency through the second instance, $MISSES sessions (ms; server time after the TLS handshake)"
pct() { sort -n | awk -v q="$1" '{ v[NR] = $1 } END { i = int(NR * q); if (i < 1) i = 1; printf "%.3f", v[i] }'; }
awk '{ printf "%.6f\n", ($2 - $1) * 1000 }' "$W/lat.tsv" >"$W/miss"
awk '{ printf "%.6f\n", ($4 - $3) * 1000 }' "$W/lat.tsv" >"$W/hit"
echo "cache miss (reads Redis): p50 $(pct 0.5 <"$W/miss")  p90 $(pct 0.9 <"$W/miss")"
echo "cache hit:                p50 $(pct 0.5 <"$W/hit")  p90 $(pct 0.9 <"$W/hit")"
