#!/usr/bin/env bash
# Scale with sessions: what 1,000,000 cached sessions cost in memory, and
# whether verified throughput holds up with them.
#
#   bench/scale.sh                     # build (dist profile), then measure; ROUNDS=3
#   SG_BIN=target/release/sessiongate bench/scale.sh    # skip the build
#
# One gateway (embedded store, cache_capacity above the session count, one
# tokio worker, access log off) and the nginx bench upstream share CPU 0; the
# load tool (wrk -t1) and the mint client run on CPU 1, as in
# ../shared/bench/peers.sh. Steps:
#   1. RSS (VmRSS) after start; mint SMALL (1,000) sessions; RSS; mint up to
#      LARGE (1,000,000) with `session mint --count` (batches of 100,000,
#      one store commit each); RSS. bytes/session = ΔRSS / (LARGE - SMALL).
#   2. Keep-alive throughput, every request a DIFFERENT cookie (bench/cookies.lua
#      cycles over the file from a random start): once over the SMALL set
#      (the first SMALL minted), once over all LARGE, alternated ROUNDS times
#      (the order flips every round); each run is a WARMUP s wrk run and a
#      DURATION s measured one. Per run also the gateway's CPU µs per
#      request (from /proc; steadier than req/s on a shared machine), the
#      session-cache misses it counted, its RSS afterwards, and wrk's own CPU
#      (% of its CPU: near 100, the load tool set the pace, not the gateway).
#   3. A table, the per-round ratio LARGE ÷ SMALL, median [min-max].
# Every session is bound to what wrk sends: 127.0.0.1 and User-Agent $UA.
#
# ROUNDS=0 measures memory only (steps 1 and 3, no load runs).
# Knobs: ROUNDS=3 DURATION=8 WARMUP=2 CONNS=64 SMALL=1000 LARGE=1000000
#        CACHE_CAPACITY=1100000 SG_PROFILE=dist KEEP_TMP=1 (keep the work dir)
#        SG_CPUS=0 LG_CPUS=1  UP_PORT=18180 GW_PORT=18545 ADMIN_PORT=18991
#        SETTLE=0 (seconds to wait between the mint and the first load run)
#        INTERLEAVE=S  instead of separate runs per set, one wrk run of 2 × DURATION s
#                 per round that switches sets every S s (bench/cookies-interleaved.lua):
#                 noise that lasts longer than a slot falls on both sets alike. Reports
#                 req/s per set (mean over its whole seconds) and the ratio per round.
#        STORE_EXTRA='touch_interval = "1h"'   extra [store] lines (experiments)
# Caveat (session 18): a session's last_seen is written to the store on its
# first request in each touch_interval window (default 60 s, aligned to the
# clock). With the default, a large-set round that runs in the mint's window
# writes nothing and one in a later window writes on nearly every request,
# so large-set rounds differ by up to a third in CPU per request. To measure
# one case on purpose: STORE_EXTRA='touch_interval = "1s"' (every request of
# the large set writes) or STORE_EXTRA='touch_interval = "1h"' (none does).
# Processes are started with setsid and stopped by their own pid on exit;
# nothing is killed by name.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
ROUNDS=${ROUNDS:-3} DURATION=${DURATION:-8} WARMUP=${WARMUP:-2} CONNS=${CONNS:-64}
SMALL=${SMALL:-1000} LARGE=${LARGE:-1000000} CACHE_CAPACITY=${CACHE_CAPACITY:-1100000}
SG_CPUS=${SG_CPUS:-0} LG_CPUS=${LG_CPUS:-1}
UP_PORT=${UP_PORT:-18180} GW_PORT=${GW_PORT:-18545} ADMIN_PORT=${ADMIN_PORT:-18991}
UA=${BENCH_UA:-scale-bench/1}
UPSTREAM_TMPL=${UPSTREAM_TMPL:-$ROOT/../shared/bench/conf/upstream.nginx.conf.tmpl}
(( LARGE > SMALL && SMALL > 0 )) || { echo "need 0 < SMALL < LARGE" >&2; exit 2; }
(( CACHE_CAPACITY >= LARGE )) || { echo "CACHE_CAPACITY must hold LARGE sessions" >&2; exit 2; }
for tool in wrk nginx curl taskset setsid awk /usr/bin/time; do
  command -v "$tool" >/dev/null || { echo "missing: $tool" >&2; exit 1; }
done
[[ -r $UPSTREAM_TMPL ]] || { echo "upstream template not found: $UPSTREAM_TMPL" >&2; exit 1; }

if [[ -z ${SG_BIN:-} ]]; then
  SG_PROFILE=${SG_PROFILE:-dist}
  (cd "$ROOT" && cargo build --profile "$SG_PROFILE" --quiet)
  SG_BIN=${CARGO_TARGET_DIR:-$ROOT/target}/$SG_PROFILE/sessiongate
fi
[[ -x $SG_BIN ]] || { echo "no gateway binary at $SG_BIN" >&2; exit 1; }

DIR=$(mktemp -d /tmp/sg-scale.XXXXXX)
source "$ROOT/bench/lib.sh"
bench_work "$DIR"

wait_http() {             # wait_http URL [CURL_ARGS...]: up to 20 s for a 200
  local url=$1; shift
  for _ in $(seq 200); do
    curl -fsS -o /dev/null "$@" "$url" 2>/dev/null && return 0
    sleep 0.1
  done
  echo "no answer from $url" >&2; return 1
}

rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$GW_PID/status"; }

# CPU time the gateway used (all threads, user + system), in clock ticks: the
# CPU per request is steadier than req/s on a shared machine.
cpu_ticks() { awk '{ sub(/.*\) /, ""); print $12 + $13 }' "/proc/$GW_PID/stat"; }
HZ=$(getconf CLK_TCK)

metric() {                # metric NAME: the gateway's counter value (0 if absent)
  curl -fsS "http://127.0.0.1:$ADMIN_PORT/metrics" |
    awk -v n="$1" '$1 == n || index($1, n "{") == 1 { s += $2 } END { printf "%d\n", s }'
}

# --- upstream (the peers' nginx, fixed 100-byte body) --------------------------
UP_BODY='{"ok":true,"from":"bench-upstream","pad":"abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKLMNOPQRST"}'
USER_LINE=""; [[ $(id -u) == 0 ]] && USER_LINE="user root;"
sed -e "s|@USER_LINE@|$USER_LINE|g" -e "s|@TMP@|$DIR|g" -e "s|@UP_PORT@|$UP_PORT|g" \
    -e "s|@UP_BODY@|$UP_BODY|g" "$UPSTREAM_TMPL" >"$DIR/upstream.conf"
start "$SG_CPUS" "$DIR/upstream.out" nginx -c "$DIR/upstream.conf" -e "$DIR/upstream.error.log"
wait_http "http://127.0.0.1:$UP_PORT/"

# --- gateway -------------------------------------------------------------------
"$SG_BIN" gen-cert --out-dir "$DIR" --host 127.0.0.1 >/dev/null
head -c 24 /dev/urandom | base64 | tr -d '/+=' >"$DIR/admin-token"
gateway_head "$GW_PORT" "127.0.0.1:$ADMIN_PORT" "$DIR" >"$DIR/gateway.toml"
cat >>"$DIR/gateway.toml" <<TOML
[session]
# Every session is the one bench user's.
max_per_user = $LARGE
[store]
kind = "embedded"
path = "$DIR/sessions.redb"
cache_capacity = $CACHE_CAPACITY
${STORE_EXTRA:-}
[[routes]]
path_prefix = "/"
upstream = "http://127.0.0.1:$UP_PORT"
auth = "required"
TOML
start "$SG_CPUS" "$DIR/gateway.log" "$SG_BIN" --config "$DIR/gateway.toml"
GW_PID=$LAST
wait_http "http://127.0.0.1:$ADMIN_PORT/healthz"
URL="https://127.0.0.1:$GW_PORT/"

mint() {                  # mint COUNT FILE: COUNT cookies bound to wrk, appended to FILE
  taskset -c "$LG_CPUS" "$SG_BIN" session mint --admin "http://127.0.0.1:$ADMIN_PORT" \
    --token-file "$DIR/admin-token" --user bench --client-ip 127.0.0.1 \
    --header "User-Agent: $UA" --count "$1" >>"$2"
}

# --- memory --------------------------------------------------------------------
echo "gateway $SG_BIN (pid $GW_PID), work dir $DIR" >&2
RSS0=$(rss_kib)
t0=$(date +%s.%N)
mint "$SMALL" "$DIR/cookies-small.txt"
RSS1=$(rss_kib)
cp "$DIR/cookies-small.txt" "$DIR/cookies-large.txt"
mint $((LARGE - SMALL)) "$DIR/cookies-large.txt"
t1=$(date +%s.%N)
RSS2=$(rss_kib)
n_small=$(wc -l <"$DIR/cookies-small.txt") n_large=$(wc -l <"$DIR/cookies-large.txt")
[[ $n_small == "$SMALL" && $n_large == "$LARGE" ]] ||
  { echo "minted $n_small / $n_large cookies, wanted $SMALL / $LARGE" >&2; exit 1; }
cached=$(metric sessiongate_sessions_active)
echo "minted $LARGE sessions in $(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }') s; cached: $cached" >&2
# Every cookie must work, or the throughput below measures refusals.
code=$(curl -sk -o /dev/null -w '%{http_code}' -A "$UA" -H "Cookie: $(tail -n 1 "$DIR/cookies-large.txt")" "$URL")
[[ $code == 200 ]] || { echo "a minted cookie got $code, not 200" >&2; exit 1; }

# --- throughput ----------------------------------------------------------------
# SETTLE=s waits that long after the mint before the first run: whether a
# slow round comes with the time since start or with the passes made.
sleep "${SETTLE:-0}"
run_wrk() {               # run_wrk FILE SECONDS OUT: wrk's own CPU seconds (user system) in OUT.time
  COOKIE_FILE=$1 /usr/bin/time -f '%U %S' -o "$3.time" taskset -c "$LG_CPUS" wrk -t1 -c"$CONNS" -d"$2"s \
    -H "User-Agent: $UA" -s "$ROOT/bench/cookies.lua" "$URL" >"$3" 2>&1
}

ROWS=$DIR/rows.tsv
: >"$ROWS"
measure() {               # measure ROUND LABEL FILE
  local round=$1 label=$2 file=$3 out=$DIR/wrk-$1-$2.txt miss0 miss1 cpu0 cpu1 rps non2xx us lg
  run_wrk "$file" "$WARMUP" "$DIR/warmup.txt"
  miss0=$(metric sessiongate_session_cache_misses_total) cpu0=$(cpu_ticks)
  run_wrk "$file" "$DURATION" "$out"
  cpu1=$(cpu_ticks) miss1=$(metric sessiongate_session_cache_misses_total)
  rps=$(awk '/^Requests\/sec:/ { print $2 }' "$out")
  non2xx=$(awk '/Non-2xx or 3xx responses:/ { print $NF }' "$out")
  eval "$(grep -o 'requests=[0-9]* duration_us=[0-9]* p50_us=[0-9]* p99_us=[0-9]*' "$out" | tr ' ' '\n')"
  us=$(awk -v t=$((cpu1 - cpu0)) -v hz="$HZ" -v n="$requests" 'BEGIN { printf "%.1f", n ? t * 1e6 / hz / n : 0 }')
  # The load tool's CPU over the run, in % of its one CPU: near 100 it, not
  # the gateway, set the pace (then compare the gateway's CPU per request).
  lg=$(tail -n 1 "$out.time" | awk -v d="$duration_us" '{ printf "%.0f", d ? ($1 + $2) * 1e8 / d : 0 }')
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$round" "$label" "$rps" "$p50_us" "$p99_us" \
    "${non2xx:-0}" $((miss1 - miss0)) "$(rss_kib)" "$us" "$lg" >>"$ROWS"
  printf 'round %s %-5s %9s req/s  p50 %s µs  p99 %s µs  gateway CPU %s µs/req  wrk CPU %s %%  non-2xx %s  cache misses %s\n' \
    "$round" "$label" "$rps" "$p50_us" "$p99_us" "$us" "$lg" "${non2xx:-0}" $((miss1 - miss0)) >&2
}
# INTERLEAVE=S: per round ONE wrk run of 2 × DURATION s that switches between
# the sets every S s (bench/cookies-interleaved.lua), so that noise falls on
# both alike; req/s per set is the mean over its whole seconds.
IL_ROWS=$DIR/interleaved.tsv
: >"$IL_ROWS"
measure_il() {            # measure_il ROUND
  local out=$DIR/wrk-il-$1.txt cpu0 cpu1 lg line
  SMALL=$SMALL SLOT=$INTERLEAVE COOKIE_FILE=$DIR/cookies-large.txt taskset -c "$LG_CPUS" wrk -t1 -c"$CONNS" \
    -d"$WARMUP"s -H "User-Agent: $UA" -s "$ROOT/bench/cookies-interleaved.lua" "$URL" >/dev/null 2>&1
  cpu0=$(cpu_ticks)
  SMALL=$SMALL SLOT=$INTERLEAVE COOKIE_FILE=$DIR/cookies-large.txt /usr/bin/time -f '%U %S %e' -o "$out.time" \
    taskset -c "$LG_CPUS" wrk -t1 -c"$CONNS" -d$((2 * DURATION))s -H "User-Agent: $UA" \
    -s "$ROOT/bench/cookies-interleaved.lua" "$URL" >"$out" 2>&1
  cpu1=$(cpu_ticks)
  line=$(grep '^RESULT_IL' "$out") || { echo "wrk gave no RESULT_IL line:" >&2; cat "$out" >&2; exit 1; }
  eval "$(echo "$line" | grep -o '[a-z_]*=[0-9.]*' | tr '\n' ' ')"
  lg=$(tail -n 1 "$out.time" | awk '{ printf "%.0f", $3 ? ($1 + $2) * 100 / $3 : 0 }')
  (( err_status == 0 )) || { echo "round $1: $err_status non-2xx responses" >&2; exit 1; }
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$1" "$small_rps" "$large_rps" "$small_secs" "$large_secs" "$lg" \
    "$(awk -v t=$((cpu1 - cpu0)) -v hz="$HZ" -v n="$requests" 'BEGIN { printf "%.1f", n ? t * 1e6 / hz / n : 0 }')" >>"$IL_ROWS"
  printf 'round %s interleaved  small %s req/s (%s s)  large %s req/s (%s s)  wrk CPU %s %%\n' \
    "$1" "$small_rps" "$small_secs" "$large_rps" "$large_secs" "$lg" >&2
}
if [[ -n ${INTERLEAVE:-} ]]; then
  for round in $(seq "$ROUNDS"); do measure_il "$round"; done
else
  for round in $(seq "$ROUNDS"); do
    if (( round % 2 )); then order="small large"; else order="large small"; fi
    for label in $order; do measure "$round" "$label" "$DIR/cookies-$label.txt"; done
  done
fi
RSS3=$(rss_kib)

# --- report --------------------------------------------------------------------
awk -v small="$SMALL" -v large="$LARGE" -v r0="$RSS0" -v r1="$RSS1" -v r2="$RSS2" -v r3="$RSS3" '
  function mib(k) { return sprintf("%.1f MiB", k / 1024) }
  function med(a, n,   i, j, t) { for (i = 2; i <= n; i++) for (j = i; j > 1 && a[j-1] > a[j]; j--) { t = a[j]; a[j] = a[j-1]; a[j-1] = t }
                                 return (n % 2) ? a[(n+1)/2] : (a[n/2] + a[n/2+1]) / 2 }
  BEGIN { FS = "\t" }
  { rps[$1, $2] = $3; p50[$1, $2] = $4; p99[$1, $2] = $5; bad[$1, $2] = $6; miss[$1, $2] = $7; rss[$1, $2] = $8
    us[$1, $2] = $9; lg[$1, $2] = $10; if ($1 > rounds) rounds = $1 }
  END {
    per = (r2 - r1) * 1024 / (large - small)
    printf "\n## memory (VmRSS of the gateway)\n\n| point | RSS |\n|---|---|\n"
    printf "| after start | %s |\n| %d sessions | %s |\n| %d sessions | %s |\n| after the load runs | %s |\n", mib(r0), small, mib(r1), large, mib(r2), mib(r3)
    printf "\nbytes per session (ΔRSS %d → %d sessions): **%.0f**\n", small, large, per
    printf "total RSS with %d sessions: **%s** (target ≤ 512 MiB: %s)\n", large, mib(r2), (r2 <= 512 * 1024) ? "met" : "NOT met"
    if (rounds == 0) exit
    printf "\n## verified keep-alive throughput, a different cookie per request\n\n"
    printf "| round | req/s over %d | req/s over %d | ratio | gateway CPU µs/req (small/large) | CPU ratio | wrk CPU %% (small/large) | p99 µs (small/large) | non-2xx | cache misses (large) |\n|---|---|---|---|---|---|---|---|---|---|\n", small, large
    for (r = 1; r <= rounds; r++) {
      ratio[r] = rps[r, "large"] / rps[r, "small"]
      cr[r] = (us[r, "large"] > 0) ? us[r, "small"] / us[r, "large"] : 0
      printf "| %d | %.0f | %.0f | %.3f | %.1f / %.1f | %.3f | %s / %s | %d / %d | %d | %d |\n", r, rps[r, "small"], rps[r, "large"], ratio[r],
        us[r, "small"], us[r, "large"], cr[r], lg[r, "small"], lg[r, "large"], p99[r, "small"], p99[r, "large"], bad[r, "small"] + bad[r, "large"], miss[r, "large"]
      lo = (r == 1 || ratio[r] < lo) ? ratio[r] : lo; hi = (r == 1 || ratio[r] > hi) ? ratio[r] : hi
      clo = (r == 1 || cr[r] < clo) ? cr[r] : clo; chi = (r == 1 || cr[r] > chi) ? cr[r] : chi
      s[r] = rps[r, "small"]; l[r] = rps[r, "large"]
    }
    m = med(ratio, rounds); cm = med(cr, rounds)
    printf "\nmedian req/s: %.0f over %d, %.0f over %d\n", med(s, rounds), small, med(l, rounds), large
    printf "ratio %d ÷ %d: **%.3f** [%.3f-%.3f] (target ≥ 0.9: %s)\n", large, small, m, lo, hi, (m >= 0.9) ? "met" : "NOT met"
    printf "CPU-bound equivalent (gateway CPU µs/req %d ÷ %d, i.e. req/s per CPU second): %.3f [%.3f-%.3f]\n", small, large, cm, clo, chi
  }' "$ROWS"
if [[ -s $IL_ROWS ]]; then
  awk -v small="$SMALL" -v large="$LARGE" -v slot="$INTERLEAVE" '
    function med(a, n,   i, j, t) { for (i = 2; i <= n; i++) for (j = i; j > 1 && a[j-1] > a[j]; j--) { t = a[j]; a[j] = a[j-1]; a[j-1] = t }
                                   return (n % 2) ? a[(n+1)/2] : (a[n/2] + a[n/2+1]) / 2 }
    BEGIN { FS = "\t"; printf "\n## verified keep-alive throughput, the sets interleaved every %s s in one wrk run per round\n\n", slot
            printf "| round | req/s over %d | req/s over %d | ratio | seconds (small/large) | wrk CPU %% | gateway CPU µs/req (both) |\n|---|---|---|---|---|---|---|\n", small, large }
    { n++; r[n] = $3 / $2; printf "| %d | %.0f | %.0f | %.3f | %d / %d | %s | %s |\n", $1, $2, $3, r[n], $4, $5, $6, $7
      lo = (n == 1 || r[n] < lo) ? r[n] : lo; hi = (n == 1 || r[n] > hi) ? r[n] : hi }
    END { m = med(r, n); printf "\nratio %d ÷ %d (interleaved): **%.3f** [%.3f-%.3f] over %d rounds (target ≥ 0.9: %s)\n", large, small, m, lo, hi, n, (m >= 0.9) ? "met" : "NOT met" }' "$IL_ROWS"
fi
