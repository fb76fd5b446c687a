#!/usr/bin/env bash
# Started by ../shared/bench/peers.sh as GATEWAY_CMD: writes a sessiongate
# config from the harness's environment and execs the gateway in the
# foreground. SG_BENCH_DIR holds the session store (with the pre-minted
# session) and the admin token; SG_BENCH_AUTH picks the route's auth mode.
set -euo pipefail
: "${GATEWAY_LISTEN:?} ${GATEWAY_UPSTREAM:?} ${GATEWAY_TLS_CERT:?} ${GATEWAY_TLS_KEY:?} ${SG_BENCH_DIR:?}"
cfg=${BENCH_TMP:-$SG_BENCH_DIR}/sessiongate-bench.toml
cat >"$cfg" <<TOML
[server]
listen = "$GATEWAY_LISTEN"
access_log = ${SG_BENCH_ACCESS_LOG:-false}
[tls]
cert = "$GATEWAY_TLS_CERT"
key = "$GATEWAY_TLS_KEY"
[admin]
listen = "${SG_BENCH_ADMIN:-127.0.0.1:18990}"
token_file = "$SG_BENCH_DIR/admin-token"
[store]
kind = "embedded"
path = "$SG_BENCH_DIR/sessions.redb"
[[routes]]
path_prefix = "/"
upstream = "$GATEWAY_UPSTREAM"
auth = "${SG_BENCH_AUTH:-required}"
TOML
exec "${SG_BIN:-$(dirname "$0")/../target/release/sessiongate}" --config "$cfg"
