#!/usr/bin/env bash
# What an https:// upstream costs against an http:// one, in one sitting:
# the same nginx upstream (one worker, CPU 1) serves the same 100-byte body
# on a plain and a TLS port; the gateway (one worker, CPU 0) has a route to
# each; wrk (CPU 1) drives 64 kept-alive connections at one route, then the
# other, ROUNDS times. auth = "none": the session path is not what is measured.
#
#   SG_BIN=target/dist/sessiongate ROUNDS=3 DURATION=10 docs/results/session-28/upstream-tls.sh
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../../.." && pwd)
source "$ROOT/bench/lib.sh"
SG_BIN=${SG_BIN:-$ROOT/target/dist/sessiongate}
ROUNDS=${ROUNDS:-3} DURATION=${DURATION:-10}
bench_work "$(mktemp -d /tmp/sg-uptls.XXXXXX)"
W=$BENCH_WORK
"$SG_BIN" gen-cert --out-dir "$W" --host localhost --host 127.0.0.1 >/dev/null 2>&1
mkdir -p "$W/up" && "$SG_BIN" gen-cert --out-dir "$W/up" --host localhost --host 127.0.0.1 >/dev/null 2>&1
head -c 32 /dev/urandom | base64 >"$W/admin-token"
BODY='{"ok":true,"from":"bench-upstream","pad":"abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKLMNOPQRST"}'
user=""; [[ $(id -u) == 0 ]] && user="user root;"
cat >"$W/up.conf" <<CONF
$user
worker_processes 1; daemon off; master_process on; pid $W/up.pid;
error_log $W/up.err warn; worker_rlimit_nofile 65536;
events { worker_connections 16384; }
http {
  access_log off; server_tokens off; keepalive_timeout 75s; keepalive_requests 100000000;
  client_body_temp_path $W/cb; proxy_temp_path $W/px; fastcgi_temp_path $W/fc; uwsgi_temp_path $W/uw; scgi_temp_path $W/sc;
  default_type text/plain;
  server { listen 127.0.0.1:18380 backlog=4096; location / { return 200 '$BODY'; } }
  server { listen 127.0.0.1:18381 ssl backlog=4096; ssl_certificate $W/up/cert.pem; ssl_certificate_key $W/up/key.pem;
           location / { return 200 '$BODY'; } }
}
CONF
start 1 "$W/up.out" nginx -c "$W/up.conf" -e "$W/up.err"
{ gateway_head 18745 127.0.0.1:18790 "$W"
  cat <<TOML
[store]
kind = "memory"
[upstream_tls]
ca = "$W/up/cert.pem"
[[routes]]
path_prefix = "/plain/"
upstream = "http://127.0.0.1:18380"
[[routes]]
path_prefix = "/tls/"
upstream = "https://localhost:18381"
TOML
} >"$W/gw.toml"
start 0 "$W/gw.out" "$SG_BIN" --config "$W/gw.toml"
for _ in $(seq 100); do curl -sk -o /dev/null https://127.0.0.1:18745/plain/x && break; sleep 0.1; done
for path in plain tls; do
  code=$(curl -sk -o /dev/null -w '%{http_code}' "https://127.0.0.1:18745/$path/x")
  [[ $code == 200 ]] || { echo "/$path/ answered $code" >&2; cat "$W/gw.out" >&2; exit 1; }
done
echo "round path req/s p50 p99"
for r in $(seq "$ROUNDS"); do
  for path in plain tls; do
    wait_quiet
    out=$(taskset -c 1 wrk -t1 -c64 -d"${DURATION}s" --latency "https://127.0.0.1:18745/$path/x")
    rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
    p50=$(awk '$1=="50%" {print $2}' <<<"$out"); p99=$(awk '$1=="99%" {print $2}' <<<"$out")
    echo "$r $path $rps $p50 $p99"
  done
done
