#!/usr/bin/env bash
# Started by ../shared/bench/peers.sh as GATEWAY_CMD: writes a sessiongate
# config from the harness's environment and execs the gateway in the
# foreground, with as many workers as the harness gives every peer
# (TOKIO_WORKER_THREADS, its WORKERS knob). SG_BENCH_DIR holds the session store (with the pre-minted
# session) and the admin token; SG_BENCH_AUTH picks the route's auth mode;
# SG_BENCH_REDIS=redis://... selects the Redis store instead of the embedded one;
# SG_HANDSHAKES=background|inline sets [server] tls_handshakes (unset: the default);
# SG_RECHECK=1 sets [session] recheck_each_request = true (every request looks its
# session up from scratch, as issue 5 defines a fully verified request);
# SG_HSTS=0 sets [tls] hsts = false (no Strict-Transport-Security on responses,
# as the nginx peer sends none).
set -euo pipefail
: "${GATEWAY_LISTEN:?} ${GATEWAY_UPSTREAM:?} ${GATEWAY_TLS_CERT:?} ${GATEWAY_TLS_KEY:?} ${SG_BENCH_DIR:?}"
cfg=${BENCH_TMP:-$SG_BENCH_DIR}/sessiongate-bench.toml
cat >"$cfg" <<TOML
[server]
listen = "$GATEWAY_LISTEN"
access_log = ${SG_BENCH_ACCESS_LOG:-false}
workers = ${TOKIO_WORKER_THREADS:-1}
$([[ -z ${SG_HANDSHAKES:-} ]] || printf 'tls_handshakes = "%s"' "$SG_HANDSHAKES")
[tls]
cert = "$GATEWAY_TLS_CERT"
key = "$GATEWAY_TLS_KEY"
$([[ ${SG_HSTS:-1} != 0 ]] || printf 'hsts = false')
[admin]
listen = "${SG_BENCH_ADMIN:-127.0.0.1:18990}"
token_file = "$SG_BENCH_DIR/admin-token"
$([[ -z ${SG_RECHECK:-} ]] || printf '[session]\nrecheck_each_request = true\n')
$(if [[ -n ${SG_BENCH_REDIS:-} ]]; then
  printf '[store]\nkind = "redis"\nurl = "%s"\n' "$SG_BENCH_REDIS"
else
  printf '[store]\nkind = "embedded"\npath = "%s"\n' "$SG_BENCH_DIR/sessions.redb"
fi)
[[routes]]
path_prefix = "/"
upstream = "$GATEWAY_UPSTREAM"
auth = "${SG_BENCH_AUTH:-required}"
TOML
exec "${SG_BIN:-$(dirname "$0")/../target/release/sessiongate}" --config "$cfg"
