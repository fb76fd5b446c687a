# Shared by the bench scripts (source it; it defines functions only).
#
#   bench_work DIR      use DIR as the work directory and install the exit
#                       traps: every process started with `start` is stopped
#                       by its process group (never by name), then DIR is
#                       removed (KEEP_TMP=1 keeps it)
#   start CPUS LOG CMD...   CMD in a session of its own (pid == sid), pinned
#                       to CPUS, output to LOG; its pid in $LAST
#   start_upstream CPUS PORT BODY   an nginx upstream (one worker) pinned to CPUS that
#                       answers every request 200 with BODY (under /data/ with an
#                       X-Session-Data-Set header too, new on every response); config and
#                       logs in the work dir
#   wait_quiet          wait (at most QUIET_MAX s, default 30) until the machine's
#                       busy CPU over 1 s is below QUIET_PCT % (default 15) of one CPU
#   gateway_head PORT ADMIN DIR   (one worker unless SG_WORKERS=N, as every peer has one;
#                       SG_HANDSHAKES=background|inline sets [server] tls_handshakes;
#                       SG_SERVER_EXTRA='key = value' adds lines to [server])
#                       the [server], [tls] and [admin] tables of a bench
#                       gateway (access log off, DIR/cert.pem, DIR/key.pem,
#                       DIR/admin-token); the caller adds store, users, routes

bench_work() {
  BENCH_WORK=$1
  STARTED=()
  trap bench_cleanup EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
}

bench_cleanup() {
  local rc=$? pid
  trap - EXIT INT TERM
  for pid in "${STARTED[@]}"; do kill -TERM -- "-$pid" 2>/dev/null || true; done
  for pid in "${STARTED[@]}"; do
    for _ in $(seq 50); do kill -0 -- "-$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL -- "-$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  if [[ ${KEEP_TMP:-0} == 1 ]]; then echo "kept $BENCH_WORK" >&2; else rm -rf "$BENCH_WORK"; fi
  exit "$rc"
}

start() {
  local cpus=$1 log=$2; shift 2
  setsid taskset -c "$cpus" "$@" >"$log" 2>&1 </dev/null &
  LAST=$!
  STARTED+=("$LAST")
}

start_upstream() {
  local user=""
  [[ $(id -u) == 0 ]] && user="user root;"
  cat >"$BENCH_WORK/upstream.conf" <<EOF
$user
worker_processes 1; daemon off; master_process on; pid $BENCH_WORK/upstream.pid;
error_log $BENCH_WORK/upstream.error.log warn; worker_rlimit_nofile 65536;
events { worker_connections 16384; }
http {
    access_log off; server_tokens off; keepalive_timeout 75s; keepalive_requests 100000000;
    client_body_temp_path $BENCH_WORK/cb; proxy_temp_path $BENCH_WORK/px; fastcgi_temp_path $BENCH_WORK/fc;
    uwsgi_temp_path $BENCH_WORK/uw; scgi_temp_path $BENCH_WORK/sc;
    default_type text/plain;
    server {
        listen 127.0.0.1:$2 backlog=4096;
        location / { return 200 '$3'; }
        location /data/ { add_header X-Session-Data-Set "cart=\$msec"; return 200 '$3'; }
    }
}
EOF
  start "$1" "$BENCH_WORK/upstream.out" nginx -c "$BENCH_WORK/upstream.conf" -e "$BENCH_WORK/upstream.error.log"
}

gateway_head() {
  cat <<TOML
[server]
listen = "127.0.0.1:$1"
access_log = false
workers = ${SG_WORKERS:-1}
$([[ -z ${SG_HANDSHAKES:-} ]] || printf 'tls_handshakes = "%s"' "$SG_HANDSHAKES")
${SG_SERVER_EXTRA:-}
[tls]
cert = "$3/cert.pem"
key = "$3/key.pem"
[admin]
listen = "$2"
token_file = "$3/admin-token"
TOML
}

# login_cost_toml HASH: the end of a gateway config for benchmarks that only
# log in (login-cost.sh, login-instructions.sh): one user, "cost", with
# password hash HASH, and a required route whose upstream is never reached.
# Printed last, after the [store] and any [login] table.
login_cost_toml() {
  cat <<TOML
[session]
# Every login's form makes an anonymous session, all from one address.
new_per_ip_per_minute = 60000000
[[users]]
name = "cost"
password_hash = "$1"
[[routes]]
path_prefix = "/"
upstream = "http://127.0.0.1:9"
auth = "required"
TOML
}

busy_ticks() {
  local c u n sy id io irq sirq st rest
  read -r c u n sy id io irq sirq st rest </proc/stat
  echo $((u + n + sy + irq + sirq + st))
}

wait_quiet() {
  local deadline=$((SECONDS + ${QUIET_MAX:-30})) hz b0 b1 pct
  hz=$(getconf CLK_TCK)
  while :; do
    b0=$(busy_ticks); sleep 1; b1=$(busy_ticks); pct=$(((b1 - b0) * 100 / hz))
    ((pct < ${QUIET_PCT:-15})) && return 0
    ((SECONDS >= deadline)) && { echo "warning: machine still busy (${pct}% of a CPU); measuring anyway" >&2; return 0; }
  done
}
