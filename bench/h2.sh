#!/usr/bin/env bash
# HTTP/2 throughput: sessiongate vs nginx, both TLS-terminating reverse proxies
# serving h2 (ALPN) in front of the same nginx upstream (a fixed 100-byte
# body), measured with h2load (several streams per connection), alternating
# the two targets within each round.
#
# Every request to sessiongate carries a minted, logged-in session cookie on
# an auth = "required" route, so every stream is fully verified (cookie
# parsed, token hashed, cache hit, binding checked, identity headers
# rewritten). The session is bound to 127.0.0.1 and to the User-Agent that
# h2load sends; we pass it explicitly (-H 'user-agent: $UA'), because h2load's
# own default is "h2load nghttp2/<version>".
#
# Per round and target it records requests/s, h2load's mean time per request,
# and the CPU time the server under test spent per request (utime+stime of
# its processes from /proc, over the measured window, warm-up excluded); it
# prints the median ratio sessiongate ÷ nginx (req/s and CPU) with min-max.
#
#   bench/h2.sh                        # build (dist profile), 3 rounds
#   SG_BIN=/path/to/sessiongate bench/h2.sh   # use this binary, no build
#
# Knobs (environment):
#   ROUNDS=3          rounds; each round measures nginx then sessiongate (order
#                     alternates between rounds)
#   DURATION=8        h2load -D (seconds measured)      WARMUP=2  --warm-up-time
#   CONNS=16          h2load -c (connections)           STREAMS=10  h2load -m
#   H2_THREADS=1      h2load -t
#   BENCH_UA=h2-bench/1   User-Agent sent by h2load and curl (the session is bound to it)
#   SG_BIN            sessiongate binary; unset = cargo build --profile $SG_PROFILE
#   SG_PROFILE=dist   cargo profile when building
#   SG_BENCH_AUTH=required   the route's auth mode ("none" = no session work)
#   SUT_CPUS=0 LG_CPUS=1     taskset CPU lists: servers under test + upstream, load tool
#   UP_PORT=18180 NGX_PORT=18543 SG_PORT=18545 SG_ADMIN=127.0.0.1:18991   ports
#   QUIET_PCT=15 QUIET_MAX=30  before each measurement wait (at most QUIET_MAX s)
#                     until the machine's busy CPU over 1 s is below QUIET_PCT % of one CPU
#   KEEP_TMP=1        keep the scratch dir (configs, logs, h2load outputs)
#
# Needs nginx, h2load (nghttp2-client), curl, openssl, taskset, setsid.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)

ROUNDS=${ROUNDS:-3} DURATION=${DURATION:-8} WARMUP=${WARMUP:-2}
CONNS=${CONNS:-16} STREAMS=${STREAMS:-10} H2_THREADS=${H2_THREADS:-1}
UA=${BENCH_UA:-h2-bench/1}
SUT_CPUS=${SUT_CPUS:-0} LG_CPUS=${LG_CPUS:-1}
UP_PORT=${UP_PORT:-18180} NGX_PORT=${NGX_PORT:-18543} SG_PORT=${SG_PORT:-18545}
SG_ADMIN=${SG_ADMIN:-127.0.0.1:18991}
QUIET_PCT=${QUIET_PCT:-15} QUIET_MAX=${QUIET_MAX:-30}
CLK_TCK=$(getconf CLK_TCK)
# exactly 100 bytes, as in ../shared/bench/peers.sh
UP_BODY='{"ok":true,"from":"bench-upstream","pad":"abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKLMNOPQRST"}'

for tool in nginx h2load curl openssl taskset setsid awk; do
  command -v "$tool" >/dev/null || { echo "missing tool: $tool" >&2; exit 1; }
done
for p in "$UP_PORT" "$NGX_PORT" "$SG_PORT" "${SG_ADMIN##*:}"; do
  [[ -z $(ss -Hltn "sport = :$p" 2>/dev/null) ]] || { echo "port $p is in use; set the *_PORT knobs" >&2; exit 1; }
done

if [[ -z ${SG_BIN:-} ]]; then
  SG_PROFILE=${SG_PROFILE:-dist}
  (cd "$ROOT" && cargo build --profile "$SG_PROFILE" --quiet)
  SG_BIN=$ROOT/target/$SG_PROFILE/sessiongate
fi
export SG_BIN

# ---------------------------------------------------------------------------
# processes: each in its own session (pid == sid); cleanup by recorded id only
# ---------------------------------------------------------------------------
TMP=$(mktemp -d /tmp/sg-h2.XXXXXX)
chmod 755 "$TMP"
source "$ROOT/bench/lib.sh"
bench_work "$TMP"

cpu_ticks() {             # utime+stime summed over the live processes of session $1
  local sid=$1 total=0 f s rest
  local -a a
  for f in /proc/[0-9]*/stat; do
    { read -r s <"$f"; } 2>/dev/null || continue
    rest=${s##*) }
    read -r -a a <<<"$rest"
    [[ ${a[3]} == "$sid" ]] && total=$((total + a[11] + a[12]))
  done
  echo "$total"
}

# ---------------------------------------------------------------------------
# certificate, upstream, nginx h2 proxy, sessiongate
# ---------------------------------------------------------------------------
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=localhost \
  -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
  -keyout "$TMP/key.pem" -out "$TMP/cert.pem" 2>"$TMP/openssl.log"
USER_LINE=""; [[ $(id -u) == 0 ]] && USER_LINE="user root;"
# nginx >= 1.25.1 spells HTTP/2 as its own directive; older ones as a listen flag.
ngx_ver=$(nginx -v 2>&1 | sed 's|.*nginx/||')
if printf '1.25.1\n%s\n' "$ngx_ver" | sort -V -C; then H2_LISTEN="ssl"; H2_DIRECTIVE="http2 on;"
else H2_LISTEN="ssl http2"; H2_DIRECTIVE=""; fi

common_http="access_log off; server_tokens off; keepalive_timeout 75s; keepalive_requests 100000000;
    client_body_temp_path $TMP/cb; proxy_temp_path $TMP/px; fastcgi_temp_path $TMP/fc;
    uwsgi_temp_path $TMP/uw; scgi_temp_path $TMP/sc;"
cat >"$TMP/proxy.conf" <<EOF
$USER_LINE
worker_processes 1; daemon off; master_process on; pid $TMP/proxy.pid;
error_log $TMP/proxy.error.log warn; worker_rlimit_nofile 65536;
events { worker_connections 16384; }
http {
    $common_http
    # h2load keeps its streams on one connection for the whole run
    http2_max_concurrent_streams 128;
    upstream bench_up { server 127.0.0.1:$UP_PORT; keepalive 128; keepalive_requests 100000000; keepalive_timeout 75s; }
    server {
        listen 127.0.0.1:$NGX_PORT $H2_LISTEN backlog=4096;
        $H2_DIRECTIVE
        ssl_certificate $TMP/cert.pem; ssl_certificate_key $TMP/key.pem;
        ssl_protocols TLSv1.2 TLSv1.3;
        location / { proxy_pass http://bench_up; proxy_http_version 1.1; proxy_set_header Connection ""; }
    }
}
EOF
start_upstream "$SUT_CPUS" "$UP_PORT" "$UP_BODY"; UP_SID=$LAST
start "$SUT_CPUS" "$TMP/nginx.out" nginx -c "$TMP/proxy.conf" -e "$TMP/proxy.error.log"; NGX_SID=$LAST

head -c 24 /dev/urandom | base64 | tr -d '/+=' >"$TMP/admin-token"
start "$SUT_CPUS" "$TMP/sessiongate.out" env TOKIO_WORKER_THREADS=1 GATEWAY_LISTEN="127.0.0.1:$SG_PORT" \
  GATEWAY_UPSTREAM="http://127.0.0.1:$UP_PORT" GATEWAY_TLS_CERT="$TMP/cert.pem" GATEWAY_TLS_KEY="$TMP/key.pem" \
  SG_BENCH_DIR="$TMP" SG_BENCH_ADMIN="$SG_ADMIN" "$ROOT/bench/gateway-cmd.sh"; SG_SID=$LAST
for _ in $(seq 100); do curl -fsS "http://$SG_ADMIN/healthz" >/dev/null 2>&1 && break; sleep 0.1; done
COOKIE=$("$SG_BIN" session mint --admin "http://$SG_ADMIN" --token-file "$TMP/admin-token" \
  --user bench --client-ip 127.0.0.1 --header "User-Agent: $UA")

declare -A URL=([nginx]="https://127.0.0.1:$NGX_PORT/" [sessiongate]="https://127.0.0.1:$SG_PORT/")
declare -A SIDOF=([nginx]=$NGX_SID [sessiongate]=$SG_SID)
hdrs() { [[ $1 == sessiongate ]] && printf '%s\n' "cookie: $COOKIE"; printf '%s\n' "user-agent: $UA"; }

# Before measuring: both answer 200 with the upstream's exact body over h2.
for t in nginx sessiongate; do
  ok=0
  for _ in $(seq 50); do
    mapfile -t H < <(hdrs "$t")
    args=(); for h in "${H[@]}"; do args+=(-H "$h"); done
    out=$(curl -sk --http2 --max-time 3 -o "$TMP/probe.body" -w '%{http_code} %{http_version}' "${args[@]}" "${URL[$t]}" || true)
    if [[ $out == "200 2" && $(cat "$TMP/probe.body") == "$UP_BODY" ]]; then ok=1; break; fi
    sleep 0.2
  done
  ((ok)) || { echo "FAILED: $t did not answer 200 over HTTP/2 with the upstream body (got '$out')" >&2; tail -5 "$TMP"/*.out "$TMP"/*.error.log >&2 || true; exit 1; }
done

echo "# $(date -u +%FT%TZ)  $(nginx -v 2>&1 | sed 's/.*: //')  $(h2load --version | head -1)  sessiongate: $SG_BIN"
echo "# layout: sessiongate (workers = 1) or nginx (1 worker) + nginx upstream on CPU $SUT_CPUS; h2load on CPU $LG_CPUS"
echo "# load:   h2load -t$H2_THREADS -c$CONNS -m$STREAMS -D $DURATION --warm-up-time=$WARMUP, user-agent: $UA; sessiongate requests carry the session cookie (auth = ${SG_BENCH_AUTH:-required})"

RES=$TMP/results.tsv
: >"$RES"
measure() {               # measure ROUND TARGET -> a row in $RES
  local r=$1 t=$2 sid=${SIDOF[$2]} out=$TMP/h2load-$1-$2.out s0 s1 u0 u1 pid
  local -a args=(-t"$H2_THREADS" -c"$CONNS" -m"$STREAMS" -D "$DURATION" --warm-up-time="$WARMUP")
  mapfile -t H < <(hdrs "$t")
  for h in "${H[@]}"; do args+=(-H "$h"); done
  for p in $(pgrep -s "$sid") $(pgrep -s "$UP_SID"); do taskset -a -p -c "$SUT_CPUS" "$p" >/dev/null; done
  wait_quiet
  taskset -c "$LG_CPUS" h2load "${args[@]}" "${URL[$t]}" >"$out" 2>&1 &
  pid=$!
  sleep "$WARMUP"            # CPU counted over the measured window only
  s0=$(cpu_ticks "$sid"); u0=$(cpu_ticks "$UP_SID")
  wait "$pid" || { echo "FAILED: h2load against $t:" >&2; cat "$out" >&2; exit 1; }
  s1=$(cpu_ticks "$sid"); u1=$(cpu_ticks "$UP_SID")
  awk -v r="$r" -v t="$t" -v ds=$((s1 - s0)) -v du=$((u1 - u0)) -v hz="$CLK_TCK" -v d="$DURATION" '
    /^finished in/ { rps = $4 }
    /^requests:/   { done = $6; ok = $8; failed = $10; errored = $12; timeout = $14 }
    /^status codes:/ { s2 = $3 }
    /^time for request:/ { mean = $6 }
    END {
      if (ok == "") { exit 1 }
      # mean is e.g. 12.34ms or 950us
      if (mean ~ /ms$/) m = mean + 0; else if (mean ~ /us$/) m = (mean + 0) / 1000; else m = (mean + 0) * 1000
      printf "%s\t%s\t%.1f\t%.3f\t%.2f\t%.1f\t%d\t%d\t%d\t%d\t%d\n", r, t, rps, m, ok ? ds / hz * 1e6 / ok : 0,
             du / hz / d * 100, ok, failed + errored + timeout, s2, done - s2, 0 }' "$out" >>"$RES" ||
    { echo "FAILED: no h2load result for $t:" >&2; cat "$out" >&2; exit 1; }
  local bad; bad=$(awk -F'\t' -v r="$r" -v t="$t" '$1 == r && $2 == t { print $8 + $10 }' "$RES")
  ((bad == 0)) || { echo "FAILED: $t had $bad failed/errored/non-2xx requests:" >&2; grep -E '^(requests|status)' "$out" >&2; exit 1; }
}

for ((r = 1; r <= ROUNDS; r++)); do
  if ((r % 2)); then order="nginx sessiongate"; else order="sessiongate nginx"; fi
  for t in $order; do echo "round $r/$ROUNDS: $t" >&2; measure "$r" "$t"; done
done

awk -F'\t' -v rounds="$ROUNDS" '
  function med(a, n,   i, j, t) { for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t }
                                  return (n % 2) ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2 }
  { R[$1, $2] = $3; L[$1, $2] = $4; C[$1, $2] = $5; U[$1, $2] = $6; N[$1, $2] = $7 }
  END {
    printf "\n%-5s %-12s %9s %12s %12s %8s %10s %10s\n", "round", "target", "req/s", "mean_lat_ms", "cpu_us/req", "up_cpu%", "x_nginx", "cpu_x_ngx"
    for (r = 1; r <= rounds; r++) for (k = 1; k <= 2; k++) { t = (k == 1) ? "nginx" : "sessiongate"
      printf "%-5d %-12s %9.0f %12.3f %12.2f %8.1f %10.3f %10.3f\n", r, t, R[r, t], L[r, t], C[r, t], U[r, t],
             R[r, t] / R[r, "nginx"], C[r, t] / C[r, "nginx"]
      if (t == "sessiongate") { x[r] = R[r, t] / R[r, "nginx"]; c[r] = C[r, t] / C[r, "nginx"]; l[r] = L[r, t] / L[r, "nginx"] } }
    for (r = 1; r <= rounds; r++) { xs[r] = x[r]; cs[r] = c[r]; ls[r] = l[r] }
    mx = med(xs, rounds); mc = med(cs, rounds); ml = med(ls, rounds)
    printf "\nsessiongate ÷ nginx, median over %d rounds [min-max]:\n", rounds
    printf "  req/s         %.3f [%.3f-%.3f]\n", mx, xs[1], xs[rounds]
    printf "  CPU per req   %.3f [%.3f-%.3f]\n", mc, cs[1], cs[rounds]
    printf "  mean latency  %.3f [%.3f-%.3f]\n", ml, ls[1], ls[rounds]
  }' "$RES"
