#!/usr/bin/env bash
# The project's benchmark in one command: build, pre-mint a logged-in session
# bound to the load tool (127.0.0.1, User-Agent peers-bench/1), then run the
# shared peer benchmark (nginx, haproxy, the bare hyper+rustls floor proxy and
# sessiongate side by side, same upstream, same certificate) and print the
# table. Every request to sessiongate carries the session cookie on an
# auth = "required" route, so it is fully verified.
#
#   bench/run.sh                       # ROUNDS=3 by default; any peers.sh knob works
#   SG_BENCH_AUTH=none bench/run.sh    # sessiongate without session work
#
# Needs ../shared/bench/setup.sh once per machine (installs the peers and wrk).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PEERS=${PEERS:-$ROOT/../shared/bench/peers.sh}
[[ -x $PEERS ]] || { echo "peer benchmark not found at $PEERS (set PEERS=...)" >&2; exit 1; }
export SG_BENCH_DIR=${SG_BENCH_DIR:-$(mktemp -d /tmp/sg-bench.XXXXXX)}
# The dist profile (fat LTO, one codegen unit) is what we ship and what the
# floor proxy is built with; SG_PROFILE=release measures a quicker build.
SG_PROFILE=${SG_PROFILE:-dist}
# SG_BIN=path measures that binary as it is (no build): for A/B runs.
if [[ -z ${SG_BIN:-} ]]; then
  export SG_BIN=$ROOT/target/$SG_PROFILE/sessiongate
  (cd "$ROOT" && cargo build --profile "$SG_PROFILE" --quiet)
fi
export SG_BIN
export SG_BENCH_ADMIN=${SG_BENCH_ADMIN:-127.0.0.1:18990}
UA=${BENCH_UA:-peers-bench/1}

head -c 24 /dev/urandom | base64 | tr -d '/+=' >"$SG_BENCH_DIR/admin-token"

# Pre-mint: run the gateway once on the same store, mint through the admin
# API, stop it. The session is durable, so the gateway peers.sh starts finds it.
"$SG_BIN" gen-cert --out-dir "$SG_BENCH_DIR" --host 127.0.0.1 >/dev/null
GATEWAY_LISTEN=127.0.0.1:0 GATEWAY_UPSTREAM=http://127.0.0.1:9 GATEWAY_TLS_CERT=$SG_BENCH_DIR/cert.pem \
  GATEWAY_TLS_KEY=$SG_BENCH_DIR/key.pem BENCH_TMP=$SG_BENCH_DIR "$ROOT/bench/gateway-cmd.sh" \
  2>"$SG_BENCH_DIR/premint.log" &
pid=$!
trap 'kill $pid 2>/dev/null || true' EXIT
for _ in $(seq 100); do
  curl -fsS "http://$SG_BENCH_ADMIN/healthz" >/dev/null 2>&1 && break
  sleep 0.1
done
COOKIE=$("$SG_BIN" session mint --admin "http://$SG_BENCH_ADMIN" --token-file "$SG_BENCH_DIR/admin-token" \
  --user bench --client-ip 127.0.0.1 --header "User-Agent: $UA")
kill -TERM $pid; wait $pid || true
trap - EXIT

echo "session minted for user bench, bound to 127.0.0.1 and User-Agent $UA" >&2
GATEWAY_CMD="$ROOT/bench/gateway-cmd.sh" GATEWAY_COOKIE="$COOKIE" GATEWAY_NAME=${GATEWAY_NAME:-sessiongate} \
  BENCH_UA="$UA" ROUNDS=${ROUNDS:-3} "$PEERS"
