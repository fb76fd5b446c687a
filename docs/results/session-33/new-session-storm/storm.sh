#!/usr/bin/env bash
# New-session storm on a sticky route: every request has no cookie, so each creates a session
# (one store write) and, with two servers, pins it (one more write, in the background).
# SERVERS=1|2 SG_BIN=... DURATION=8
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../../../.." && pwd)
SERVERS=${SERVERS:-1} DURATION=${DURATION:-8}
OUT=$(mktemp -d /tmp/sg-storm.XXXXXX)
pids=(); cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$OUT"; }
trap cleanup EXIT
UP=18281 PX=18646 ADMIN=127.0.0.1:18691
servers="\"http://127.0.0.1:$UP\""; listens=""
[[ $SERVERS == 2 ]] && { servers+=", \"http://127.0.0.2:$UP\""; listens="listen 127.0.0.2:$UP;"; }
cat >"$OUT/up.conf" <<NGINX
user root; worker_processes 1; daemon off; master_process off; pid $OUT/up.pid; error_log $OUT/up.err warn;
events { worker_connections 1024; }
http { access_log off; client_body_temp_path $OUT/cb; proxy_temp_path $OUT/px; fastcgi_temp_path $OUT/fc; uwsgi_temp_path $OUT/uw; scgi_temp_path $OUT/sc;
  server { listen 127.0.0.1:$UP; $listens location / { return 200 'ok'; } } }
NGINX
nginx -c "$OUT/up.conf" -e "$OUT/up.err" & pids+=($!)
"$SG_BIN" gen-cert --out-dir "$OUT" --host 127.0.0.1 >/dev/null
head -c 24 /dev/urandom | base64 | tr -d '/+=' >"$OUT/admin-token"
source "$ROOT/bench/lib.sh"
gateway_head "$PX" "$ADMIN" "$OUT" >"$OUT/sg.toml"
cat >>"$OUT/sg.toml" <<TOML
[session]
new_per_ip_per_minute = 60000000
[store]
kind = "embedded"
path = "$OUT/sessions.redb"
[[routes]]
path_prefix = "/"
upstream = [$servers]
auth = "optional"
TOML
"$SG_BIN" -c "$OUT/sg.toml" 2>"$OUT/sg.err" & pids+=($!)
for _ in $(seq 100); do curl -fsk -o /dev/null "https://127.0.0.1:$PX/" && break; sleep 0.1; done
wrk -t1 -c32 -d"${DURATION}s" "https://127.0.0.1:$PX/" | grep -E "Requests/sec|Latency"
curl -s -H "Authorization: Bearer $(cat "$OUT/admin-token")" "http://$ADMIN/metrics" | grep -E "^sessiongate_session_pins_total|^sessiongate_sessions_created_total|^sessiongate_store_errors" || true
