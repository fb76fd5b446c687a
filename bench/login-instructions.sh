#!/usr/bin/env bash
# Instructions per form login, per thread of the gateway, counted by
# valgrind's callgrind: what a login leaves on the worker (and on the
# handshake, commit and hashing threads), in a figure that does not move
# with the shared machine's noise. The login-burst benchmark (target 6)
# asks how much a login disturbs other users' requests; this tells what a
# login's own work is, part by part.
#
# It starts the gateway under callgrind (one worker, embedded store, a
# near-free argon2id hash so that callgrind's slowdown does not turn each
# login into seconds), runs WARMUP logins (bench/login-storm.py), zeroes the
# counters, runs LOGINS logins at LOGIN_RATE/s, dumps the counters, and
# prints per login: each thread's instructions, and for the worker the
# parts that matter (the TLS handshake, the HTTP exchanges, the login
# handler, logging). Nothing else talks to the gateway, so with the
# default `tls_handshakes = "auto"` the handshakes run on the worker; under
# the benchmark's kept-alive traffic they run on the sg-tls thread instead.
#
#   bench/login-instructions.sh                    # build (dist profile), 40 logins
#   SG_BIN=/path/to/sessiongate bench/login-instructions.sh
#
# Knobs (environment): LOGINS=40 WARMUP=16 LOGIN_RATE=2, SG_PORT=18747
# SG_ADMIN=127.0.0.1:18997, KEEP_TMP=1 keeps the scratch dir (the callgrind
# files: callgrind_annotate --inclusive=yes cg.out.1-01 for the worker).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"
for tool in valgrind callgrind_control callgrind_annotate python3 curl; do
  command -v "$tool" >/dev/null || { echo "needs $tool (apt-get install valgrind python3 curl)" >&2; exit 1; }
done
if [[ -z ${SG_BIN:-} ]]; then
  (cd "$ROOT" && cargo build --profile dist --quiet)
  SG_BIN=$ROOT/target/dist/sessiongate
fi
LOGINS=${LOGINS:-40} WARMUP=${WARMUP:-16} LOGIN_RATE=${LOGIN_RATE:-2}
SG_PORT=${SG_PORT:-18747} SG_ADMIN=${SG_ADMIN:-127.0.0.1:18997}
TMP=$(mktemp -d /tmp/sg-login-ir.XXXXXX)
VG_PID=""
cleanup() {
  [[ -n $VG_PID ]] && kill -TERM "$VG_PID" 2>/dev/null && wait "$VG_PID" 2>/dev/null
  [[ -n ${KEEP_TMP:-} ]] && echo "kept $TMP" >&2 || rm -rf "$TMP"
}
trap cleanup EXIT

# A near-free argon2id hash (m=8, t=1) of PASSWORD: the login path is the
# same as with the default cost, only the hashing thread's work shrinks.
PASSWORD=cheap-storm-password
HASH='$argon2id$v=19$m=8,t=1,p=1$WMJC2FFrh0j0VyHB/tAhQA$7uuOJpCfWNcgGrny8wDtG8J67A2KTRd3BjadOeSnZrk'
"$SG_BIN" gen-cert --out-dir "$TMP" --host localhost --host 127.0.0.1 >/dev/null
head -c 24 /dev/urandom | base64 | tr -d '/+=' >"$TMP/admin-token"
{
  gateway_head "$SG_PORT" "$SG_ADMIN" "$TMP"
  printf '[store]\nkind = "embedded"\npath = "%s"\n' "$TMP/sessions.redb"
  login_cost_toml "$HASH"
} >"$TMP/sessiongate.toml"

valgrind --tool=callgrind --separate-threads=yes --callgrind-out-file="$TMP/cg.out" \
  "$SG_BIN" --config "$TMP/sessiongate.toml" >"$TMP/gateway.out" 2>&1 &
VG_PID=$!
for _ in $(seq 300); do curl -fsS "http://$SG_ADMIN/healthz" >/dev/null 2>&1 && break; sleep 0.2; done
curl -fsS "http://$SG_ADMIN/healthz" >/dev/null || { echo "gateway did not start: $(tail -5 "$TMP/gateway.out")" >&2; exit 1; }

logins() {               # logins COUNT
  python3 "$ROOT/bench/login-storm.py" --url "https://127.0.0.1:$SG_PORT" --user cost \
    --password "$PASSWORD" --rate "$LOGIN_RATE" --duration "$(python3 -c "print($1 / $LOGIN_RATE)")" \
    >"$TMP/storm.out" 2>&1 || { echo "FAILED: logins: $(cat "$TMP/storm.out")" >&2; exit 1; }
}
logins "$WARMUP"
callgrind_control -z "$VG_PID" >/dev/null 2>&1
logins "$LOGINS"
ok=$(sed -n 's/.* ok=\([0-9]*\) .*/\1/p' "$TMP/storm.out")
(( ${ok:-0} > 0 )) || { echo "no login counted: $(cat "$TMP/storm.out")" >&2; exit 1; }
callgrind_control -d "$VG_PID" >/dev/null 2>&1
for _ in $(seq 50); do compgen -G "$TMP/cg.out.1-*" >/dev/null && break; sleep 0.2; done
sleep 1   # the dump writes one file per thread

echo "# $(date -u +%FT%TZ)  $SG_BIN  $ok logins (303) counted, after $WARMUP warm-up logins, at $LOGIN_RATE/s"
echo "# instructions per login"
printf '%-22s %12s\n' thread instructions
for f in "$TMP"/cg.out.1-*; do
  total=$(sed -n 's/^summary: //p' "$f")
  # The thread's name is not in callgrind's file; tell it by what it ran.
  name=other
  if grep -q 'accept_loop' "$f"; then name=worker
  elif grep -q 'argon2::Argon2::fill_blocks' "$f"; then name=sg-argon2
  elif grep -q 'WriteTransaction::commit' "$f"; then name=sg-store-commit
  elif grep -q 'embedded::user_sessions\|EmbeddedStore' "$f"; then name=sg-blocking
  elif grep -q 'ExpectClientHello' "$f"; then name=sg-tls
  fi
  printf '%-22s %12d\n' "$name" $((total / ok))
done
worker=$(grep -l 'accept_loop' "$TMP"/cg.out.1-* | head -1)
echo
echo "# the worker's parts (inclusive), per login"
# Each part once: the first (largest) line of its function; drop_in_place lines do not match.
callgrind_annotate --inclusive=yes --threshold=100 "$worker" 2>/dev/null | awk -v n="$ok" '
  function part(label) { if (seen[label]++) return; gsub(",", "", $1); printf "%-52s %10d\n", label, $1 / n }
  /\?\?\?:sessiongate::server::Worker::accept_loop::/   { part("the worker, in all") }
  /\?\?\?:<rustls::server::hs::ExpectClientHello as/     { part("TLS handshake: ClientHello to server Finished") }
  /\?\?\?:<rustls::server::tls13::ExpectFinished as/     { part("TLS handshake: client Finished, tickets") }
  /\?\?\?:sessiongate::server::Connection::serve::/      { part("the HTTP exchanges (Connection::serve)") }
  /\?\?\?:sessiongate::auth::endpoints::handle::/        { part("  the login endpoints") }
  /\?\?\?:sessiongate::auth::endpoints::login_with_form::/ { part("    the POST (login_with_form)") }
  /\?\?\?:<tracing_subscriber::fmt::Subscriber/          { part("logging (tracing events)") }'
