#!/usr/bin/env bash
# Requests that write the session store, against requests that only read it
# (logged-in, verified on a cache hit), alternated within each round on the
# same gateway:
#   anonymous   no cookie on an `optional` route: every request creates a session
#   data        the logged-in session on /data/, where the upstream answers with
#               X-Session-Data-Set (new on every response): every request
#               rewrites the session's data
#   logged-in   the logged-in session on /: no store write
# It reports requests/s, sessions created, p99, and each writing mode's
# requests/s ÷ logged-in's in the same round (median and min-max).
#
# sessiongate (one worker) and an nginx upstream share CPU $SUT_CPUS; wrk runs
# on CPU $LG_CPUS. The store is the embedded one (redb, on the work dir's
# file system) unless STORE=memory.
#
#   bench/store-writes.sh                               # build (dist profile), 3 rounds
#   SG_BIN=/path/to/sessiongate bench/store-writes.sh   # this binary, no build
#
# Knobs (environment): ROUNDS=3 DURATION=8 CONNS=64 STORE=embedded|memory SUT_CPUS=0 LG_CPUS=1
#   MODES="anonymous data" (the writing modes) UP_PORT=18281 SG_PORT=18646 SG_ADMIN=127.0.0.1:18993
#   KEEP_TMP=1
#
# Needs wrk, nginx, curl, taskset (../shared/bench/setup.sh installs them).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
ROUNDS=${ROUNDS:-3} DURATION=${DURATION:-8} CONNS=${CONNS:-64} STORE=${STORE:-embedded}
SUT_CPUS=${SUT_CPUS:-0} LG_CPUS=${LG_CPUS:-1}
UP_PORT=${UP_PORT:-18281} SG_PORT=${SG_PORT:-18646} SG_ADMIN=${SG_ADMIN:-127.0.0.1:18993}
UA=store-writes-bench/1 MODES=${MODES:-anonymous data}

for tool in nginx wrk curl taskset setsid awk; do
  command -v "$tool" >/dev/null || { echo "missing tool: $tool" >&2; exit 1; }
done
if [[ -z ${SG_BIN:-} ]]; then
  (cd "$ROOT" && cargo build --profile "${SG_PROFILE:-dist}" --quiet)
  SG_BIN=$ROOT/target/${SG_PROFILE:-dist}/sessiongate
fi

TMP=$(mktemp -d /tmp/sg-store-writes.XXXXXX)
chmod 755 "$TMP"
source "$ROOT/bench/lib.sh"
bench_work "$TMP"

"$SG_BIN" gen-cert --out-dir "$TMP" --host localhost --host 127.0.0.1 >/dev/null
start_upstream "$SUT_CPUS" "$UP_PORT" 'hello from the upstream'
head -c 24 /dev/urandom | base64 | tr -d '/+=' >"$TMP/admin-token"
gateway_head "$SG_PORT" "$SG_ADMIN" "$TMP" >"$TMP/sessiongate.toml"
{
  # One address (the load tool's) makes every session.
  printf '[session]\nnew_per_ip_per_minute = 60000000\n'
  echo "[store]"
  echo "kind = \"$STORE\""
  [[ $STORE == embedded ]] && echo "path = \"$TMP/sessions.redb\""
  cat <<TOML
[[users]]
name = "bench"
password_hash = "$(printf 'unused-%s' "$RANDOM" | "$SG_BIN" hash-password)"
[[routes]]
path_prefix = "/"
upstream = "http://127.0.0.1:$UP_PORT"
auth = "optional"
TOML
} >>"$TMP/sessiongate.toml"
start "$SUT_CPUS" "$TMP/sessiongate.out" "$SG_BIN" --config "$TMP/sessiongate.toml"
for _ in $(seq 100); do curl -fsS "http://$SG_ADMIN/healthz" >/dev/null 2>&1 && break; sleep 0.1; done
COOKIE=$("$SG_BIN" session mint --admin "http://$SG_ADMIN" --token-file "$TMP/admin-token" \
  --user bench --client-ip 127.0.0.1 --header "User-Agent: $UA")
URL=https://127.0.0.1:$SG_PORT/

created() { curl -fsS "http://$SG_ADMIN/metrics" | awk '/^sessiongate_sessions_created_total/ { printf "%d", $2 }'; }
# run MODE -> "req/s created non2xx p99_ms"
run() {
  local -a hdr=(-H "User-Agent: $UA")
  local url=$URL
  [[ $1 == anonymous ]] || hdr+=(-H "Cookie: $COOKIE")
  [[ $1 == data ]] && url=${URL}data/cart
  local c0 c1 out
  c0=$(created)
  out=$(taskset -c "$LG_CPUS" wrk -t1 -c"$CONNS" -d"${DURATION}s" --latency "${hdr[@]}" "$url")
  c1=$(created)
  awk -v created=$((c1 - c0)) '
    /Requests\/sec/ { rps = $2 }
    /Non-2xx/ { bad = $NF }
    $1 == "99%" { v = $2; ms = v + 0; if (v ~ /us$/) ms /= 1000; else if (v ~ /[0-9]s$/ && v !~ /ms$/) ms *= 1000; p99 = ms }
    END { printf "%s %d %d %.2f\n", rps, created, bad + 0, p99 }' <<<"$out"
}

echo "# $(date -u +%FT%TZ)  sessiongate: $SG_BIN  store: $STORE"
echo "# wrk -t1 -c$CONNS -d${DURATION}s on CPU $LG_CPUS; gateway (one worker) + nginx upstream on CPU $SUT_CPUS; auth = \"optional\""
printf '%-5s %-10s %10s %10s %8s %8s\n' round mode req/s created non2xx p99_ms
RES=$TMP/results
: >"$RES"
for ((r = 1; r <= ROUNDS; r++)); do
  if ((r % 2)); then order="$MODES logged-in"; else order="logged-in $MODES"; fi
  for m in $order; do
    read -r rps made bad p99 <<<"$(run "$m")"
    printf '%-5s %-10s %10s %10s %8s %8s\n' "$r" "$m" "$rps" "$made" "$bad" "$p99"
    echo "$r $m $rps" >>"$RES"
  done
done
for m in $MODES; do
  awk -v m="$m" '{ v[$1, $2] = $3; n = ($1 > n) ? $1 : n }
    END {
      for (r = 1; r <= n; r++) x[r] = v[r, m] / v[r, "logged-in"]
      for (i = 2; i <= n; i++) for (j = i; j > 1 && x[j - 1] > x[j]; j--) { t = x[j]; x[j] = x[j - 1]; x[j - 1] = t }
      printf "%s ÷ logged-in req/s, median over %d rounds: %.3f [%.3f-%.3f]\n", m, n, x[int((n + 1) / 2)], x[1], x[n]
    }' "$RES"
done
[[ $STORE == embedded ]] && echo "store file: $(du -h "$TMP/sessions.redb" | cut -f1)"
