#!/usr/bin/env bash
# Instructions per proxied request, counted by valgrind's callgrind: a figure
# that does not move with the shared machine's noise (wall-clock benchmarks on
# this 2-core kind drift ±10 % between runs), so that a hot-path change can be
# judged on its own before the peer benchmark confirms it.
#
# It starts the bench upstream (nginx, fixed ~100-byte body), then, for each
# target, the proxy under callgrind; warms up, zeroes the counters, runs wrk
# keep-alive load for DURATION seconds, dumps the counters and divides the
# instructions by the requests wrk completed.
#
#   bench/ir-per-request.sh                     # sessiongate (verified session) and the floor proxy
#   TARGETS=sessiongate bench/ir-per-request.sh
#   TARGETS="sessiongate nginx" bench/ir-per-request.sh   # and nginx as the peer harness runs it
#                                               # (TLS proxy, pooled upstream, one process):
#                                               # instructions in user space only, see COUNT=syscalls
#
#   PROTO=h2 TARGETS=sessiongate bench/ir-per-request.sh   # HTTP/2: h2load, H2_CONNS x H2_STREAMS
#
#   COUNT=syscalls bench/ir-per-request.sh      # system calls per request instead: the proxy
#                                               # runs natively, perf stat counts raw_syscalls:sys_enter
#   COUNT=profile bench/ir-per-request.sh       # where the real CPU time goes: the proxy runs
#                                               # natively, perf record samples it (cpu-clock, user
#                                               # and kernel) during the long run; prints µs of CPU per
#                                               # request and the top symbols (OUT/perf-NAME.txt)
#
#   SG_COOKIES=1000 TARGETS=sessiongate bench/ir-per-request.sh   # every request a DIFFERENT
#                                               # session (1000 minted, bench/cookies.lua): the
#                                               # connection's memory never answers
#
# Knobs: TARGETS="sessiongate floor" DURATION=10 CONNS=8 SG_RECHECK=1 (every request
# looks its session up from scratch: [session] recheck_each_request) SG_BIN (default
# target/release/sessiongate, built if missing) FLOOR_BIN SG_AUTH=required|optional|none
# SG_SERVER_EXTRA='key = value' (lines for the gateway's [server] table, bench/lib.sh)
# SG_SERVERS=2 (the route lists that many servers, sticky: see below)
# UP_PORT PX_PORT ADMIN_PORT, OUT=dir (callgrind files, kept for callgrind_annotate; names are not
# compressed, so each dump part annotates on its own). PROTO=h1|h2; for h2
# the short and long runs are H2_SHORT=4000 and H2_LONG=12000 requests over
# H2_CONNS=16 connections with H2_STREAMS=10 streams each (the floor proxy
# speaks HTTP/1.1 only and is skipped).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
TARGETS=${TARGETS:-"sessiongate floor"}
DURATION=${DURATION:-10}
CONNS=${CONNS:-8}
SG_BIN=${SG_BIN:-$ROOT/target/release/sessiongate}
FLOOR_BIN=${FLOOR_BIN:-/tmp/sessiongate-bench/floor-target/release/floor-proxy}
SG_AUTH=${SG_AUTH:-required}
OUT=${OUT:-$(mktemp -d /tmp/sg-ir.XXXXXX)}
mkdir -p "$OUT"
UA=ir-bench/1
LUA=()
PROTO=${PROTO:-h1}
COUNT=${COUNT:-instructions}
H2_SHORT=${H2_SHORT:-4000} H2_LONG=${H2_LONG:-12000} H2_CONNS=${H2_CONNS:-16} H2_STREAMS=${H2_STREAMS:-10}
UP_PORT=${UP_PORT:-18280}
PX_PORT=${PX_PORT:-18645}
ADMIN=127.0.0.1:${ADMIN_PORT:-18690}
BODY='{"ok":true,"from":"bench-upstream","pad":"abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKLMNOPQRST"}'
tools="valgrind callgrind_control"; [[ $COUNT == syscalls || $COUNT == profile ]] && tools=perf
for tool in $tools wrk nginx curl; do
  command -v $tool >/dev/null || { echo "missing $tool (apt-get install valgrind wrk nginx-light curl)" >&2; exit 1; }
done
if [[ $PROTO == h2 ]] && ! command -v h2load >/dev/null; then
  echo "missing h2load (apt-get install nghttp2-client)" >&2; exit 1
fi
[[ -x $SG_BIN ]] || (cd "$ROOT" && cargo build --release --quiet)

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

user_line=""; [[ $(id -u) == 0 ]] && user_line="user root;"
# SG_SERVERS=n: the route lists n servers, 127.0.0.1..n on the upstream's
# port, all this one nginx (the balanced path: sticky, one session).
SG_SERVERS=${SG_SERVERS:-1}
extra_listens="" servers="\"http://127.0.0.1:$UP_PORT\""
for i in $(seq 2 "$SG_SERVERS"); do
  extra_listens+="listen 127.0.0.$i:$UP_PORT; "
  servers+=", \"http://127.0.0.$i:$UP_PORT\""
done
cat >"$OUT/upstream.conf" <<NGINX
$user_line
worker_processes 1; daemon off; master_process off; pid $OUT/up.pid; error_log $OUT/up.err warn;
events { worker_connections 1024; }
http { access_log off; keepalive_requests 100000000;
  client_body_temp_path $OUT/cb; proxy_temp_path $OUT/px; fastcgi_temp_path $OUT/fc; uwsgi_temp_path $OUT/uw; scgi_temp_path $OUT/sc;
  server { listen 127.0.0.1:$UP_PORT; $extra_listens location / { default_type text/plain; return 200 '$BODY'; } } }
NGINX
nginx -c "$OUT/upstream.conf" -e "$OUT/up.err" & pids+=($!)

"$SG_BIN" gen-cert --out-dir "$OUT" --host 127.0.0.1 >/dev/null
head -c 24 /dev/urandom | base64 | tr -d '/+=' >"$OUT/admin-token"
source "$ROOT/bench/lib.sh"
gateway_head "$PX_PORT" "$ADMIN" "$OUT" >"$OUT/sg.toml"
cat >>"$OUT/sg.toml" <<TOML
[session]
$([[ -z ${SG_RECHECK:-} ]] || echo 'recheck_each_request = true')
$([[ -z ${SG_COOKIES:-} ]] || echo "max_per_user = $((SG_COOKIES + 10))")
[store]
kind = "memory"
[[routes]]
path_prefix = "/"
upstream = $([[ $SG_SERVERS == 1 ]] && echo "$servers" || echo "[$servers]")
auth = "$SG_AUTH"
TOML

wait_up() { for _ in $(seq 600); do curl -fsk -o /dev/null -A "$UA" ${2:+-H "Cookie: $2"} "$1" && return 0; sleep 0.1; done; echo "no answer from $1" >&2; exit 1; }

measure() { # name pid cookie
  local name=$1 pid=$2 cookie=$3 url="https://127.0.0.1:$PX_PORT/"
  wait_up "$url" "$cookie"
  local hdr=(-H "User-Agent: $UA"); [[ -n $cookie ]] && hdr+=(-H "Cookie: $cookie")
  if [[ $PROTO == h2 ]]; then
    hdr=(-H "user-agent: $UA"); [[ -n $cookie ]] && hdr+=(-H "cookie: $cookie")
    h2load -n 2000 -c "$H2_CONNS" -m "$H2_STREAMS" "${hdr[@]}" "$url" >/dev/null
  else
    wrk -t1 -c"$CONNS" -d2 "${hdr[@]}" "${LUA[@]}" "$url" >/dev/null
  fi
  # Two runs with the same connection count, short and long: their
  # difference cancels the per-connection cost (handshakes, setup), leaving
  # the instructions of the extra requests only.
  local run reqs=() irs=()
  for run in short long; do
    local perf_pid=""
    if [[ $COUNT == syscalls ]]; then
      perf stat -x, -e raw_syscalls:sys_enter -p "$pid" -o "$OUT/perf-$name-$run.csv" & perf_pid=$!
      sleep 0.5 # attached before the load starts; the idle proxy makes next to no calls
    elif [[ $COUNT == profile ]]; then
      [[ $run == long ]] && { perf record -q -e cpu-clock -F "${PERF_HZ:-4999}" -p "$pid" -o "$OUT/perf-$name.data" 2>/dev/null & perf_pid=$!; sleep 0.5; }
    else
      callgrind_control -d "before-$run" "$pid" >/dev/null 2>&1
    fi
    if [[ $PROTO == h2 ]]; then
      local n=$H2_SHORT; [[ $run == long ]] && n=$H2_LONG
      reqs+=("$(h2load -n "$n" -c "$H2_CONNS" -m "$H2_STREAMS" "${hdr[@]}" "$url" | awk '/^requests:/ {print $8}')")
    else
      local d=$DURATION; [[ $run == long ]] && d=$((DURATION * 2))
      reqs+=("$(wrk -t1 -c"$CONNS" -d"$d" "${hdr[@]}" "${LUA[@]}" "$url" | awk '/requests in/ {print $1}')")
    fi
    if [[ $COUNT == syscalls ]]; then
      kill -INT "$perf_pid"; wait "$perf_pid" 2>/dev/null || true
      irs+=("$(awk -F, '/raw_syscalls:sys_enter/ {print $1; exit}' "$OUT/perf-$name-$run.csv")")
      continue
    fi
    if [[ $COUNT == profile ]]; then
      [[ -n $perf_pid ]] && { kill -INT "$perf_pid"; wait "$perf_pid" 2>/dev/null || true; }
      continue
    fi
    callgrind_control -d "$name-$run" "$pid" >/dev/null 2>&1
    sleep 1
    irs+=("$(awk '/^summary:|^totals:/ {print $2; exit}' "$(ls -t "$OUT"/callgrind.out.* | head -1)")")
  done
  if [[ $COUNT == profile ]]; then
    local samples
    perf report -i "$OUT/perf-$name.data" --no-children --sort dso,sym --stdio 2>/dev/null |
      awk -v n="${PERF_TOP:-60}" '!/^#/ && NF && c++ < n' >"$OUT/perf-$name.txt"
    samples=$(perf script -i "$OUT/perf-$name.data" -F comm 2>/dev/null | wc -l)
    printf '%-12s requests %7d  CPU µs/request %s  (%s)\n' "$name" "${reqs[1]}" \
      "$(awk -v s="$samples" -v hz="${PERF_HZ:-4999}" -v r="${reqs[1]}" 'BEGIN { printf "%.2f", s / hz / r * 1e6 }')" "$OUT/perf-$name.txt"
    kill "$pid"; wait "$pid" 2>/dev/null || true
    return
  fi
  if [[ $COUNT == syscalls ]]; then
    printf '%-12s requests %7d / %7d  syscalls/request %s\n' "$name" "${reqs[0]}" "${reqs[1]}" \
      "$(awk -v a="${irs[0]}" -v b="${irs[1]}" -v r="${reqs[0]}" -v q="${reqs[1]}" 'BEGIN { printf "%.3f", (b - a) / (q - r) }')"
    kill "$pid"; wait "$pid" 2>/dev/null || true
    return
  fi
  local file; file=$(ls -t "$OUT"/callgrind.out.* | head -1)
  printf '%-12s requests %7d / %7d  Ir/request %8d  (%s)\n' "$name" "${reqs[0]}" "${reqs[1]}" \
    $(((irs[1] - irs[0]) / (reqs[1] - reqs[0]))) "$file"
  kill "$pid"; wait "$pid" 2>/dev/null || true
}

# The command line prefix a proxy runs under: callgrind, or nothing when counting syscalls.
under() {
  [[ $COUNT == syscalls || $COUNT == profile ]] && return
  echo valgrind --tool=callgrind --compress-strings=no --compress-pos=no "--callgrind-out-file=$OUT/callgrind.out.%p"
}

for t in $TARGETS; do
  case $t in
    sessiongate)
      $(under) "$SG_BIN" --config "$OUT/sg.toml" 2>"$OUT/sg.log" & pid=$!; pids+=($pid)
      cookie=""
      if [[ $SG_AUTH != none ]]; then
        for _ in $(seq 600); do curl -fsS -o /dev/null "http://$ADMIN/healthz" 2>/dev/null && break; sleep 0.1; done
        cookie=$("$SG_BIN" session mint --admin "http://$ADMIN" --token-file "$OUT/admin-token" \
          --user bench --client-ip 127.0.0.1 --header "User-Agent: $UA")
        if [[ -n ${SG_COOKIES:-} ]]; then
          "$SG_BIN" session mint --admin "http://$ADMIN" --token-file "$OUT/admin-token" \
            --user bench --client-ip 127.0.0.1 --header "User-Agent: $UA" --count "$SG_COOKIES" >"$OUT/cookies.txt"
          export COOKIE_FILE=$OUT/cookies.txt
          LUA=(-s "$ROOT/bench/cookies.lua")
        fi
      fi
      measure sessiongate "$pid" "$cookie" ;;
    floor)
      [[ $PROTO == h2 ]] && { echo "floor proxy: HTTP/1.1 only, skipped for PROTO=h2" >&2; continue; }
      [[ -x $FLOOR_BIN ]] || { echo "floor proxy not built: run ../shared/bench/setup.sh" >&2; continue; }
      TOKIO_WORKER_THREADS=1 $(under) "$FLOOR_BIN" "127.0.0.1:$PX_PORT" "127.0.0.1:$UP_PORT" "$OUT/cert.pem" "$OUT/key.pem" 2>"$OUT/floor.log" &
      pid=$!; pids+=($pid)
      measure floor "$pid" "" ;;
    nginx)
      # The peer harness's TLS proxy (../shared/bench/conf/proxy.nginx.conf.tmpl),
      # in one process: no master, so the counted process is the one serving.
      cat >"$OUT/proxy.conf" <<NGINX
$user_line
worker_processes 1; daemon off; master_process off; pid $OUT/proxy.pid; error_log $OUT/proxy.err warn;
events { worker_connections 1024; }
http { access_log off; server_tokens off; keepalive_timeout 75s; keepalive_requests 100000000;
  client_body_temp_path $OUT/cb; proxy_temp_path $OUT/px; fastcgi_temp_path $OUT/fc; uwsgi_temp_path $OUT/uw; scgi_temp_path $OUT/sc;
  upstream bench_up { server 127.0.0.1:$UP_PORT; keepalive 64; keepalive_requests 100000000; keepalive_timeout 75s; }
  server { listen 127.0.0.1:$PX_PORT ssl$([[ $PROTO == h2 ]] && echo " http2"); ssl_certificate $OUT/cert.pem; ssl_certificate_key $OUT/key.pem;
    ssl_protocols TLSv1.2 TLSv1.3;
    location / { proxy_pass http://bench_up; proxy_http_version 1.1; proxy_set_header Connection ""; } } }
NGINX
      $(under) nginx -c "$OUT/proxy.conf" -e "$OUT/proxy.err" 2>"$OUT/nginx.log" & pid=$!; pids+=($pid)
      measure nginx "$pid" "" ;;
    *) echo "unknown target $t" >&2 ;;
  esac
done
[[ $COUNT == syscalls || $COUNT == profile ]] || echo "callgrind files in $OUT (callgrind_annotate FILE | head -60)"
