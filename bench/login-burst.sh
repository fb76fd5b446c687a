#!/usr/bin/env bash
# Login burst: does a storm of (deliberately slow, argon2id) logins raise the
# latency of other users' proxied requests?
#
# sessiongate (one tokio worker) and an nginx upstream (a fixed 100-byte
# body) share CPU 0; the load tools share CPU 1. "Other users" send
# logged-in requests (a minted session, auth = "required" route) at a FIXED
# rate with oha, well below saturation, so p99 measures latency, not
# queueing. Each round runs two phases of the same length, alternating their
# order between rounds:
#   quiet   only the fixed-rate traffic
#   storm   the same traffic plus LOGIN_RATE successful form logins per second
#           (bench/login-storm.py: GET the form for the cookie and csrf
#           field, POST username/password/csrf, expect 303)
# and reports p99 (and p50) of the proxied requests in each phase, the ratio
# storm ÷ quiet per round, and the median ratio with min-max. Target (issue
# 5, target 6): a 20 logins/s burst raises p99 by at most 20 % (ratio ≤ 1.2).
# To tell why p99 moves, it also reads the kernel's per-thread scheduler
# counters (/proc/PID/task/TID/schedstat) of the gateway's threads other than
# the background threads (sg-argon2-* hashing, sg-tls-* handshakes), over each oha
# run, per proxied request:
#   cpu_us   CPU time they ran (the proxy's own work, plus the login
#            requests' TLS and form handling in the storm; slower when the
#            hashes evict its caches)
#   wait_us  time they were runnable but waiting for the CPU (run-queue delay)
# and the same two per thread group (the thread's name without its number:
# the worker, which has the binary's name, sg-store-commit, sg-tls-,
# sg-argon- for sg-argon2-*, tokio-rt-worker for the blocking pool), medians
# over rounds, background threads included: where the storm's CPU goes.
#
#   bench/login-burst.sh                            # build (dist profile), 3 rounds
#   SG_BIN=/path/to/sessiongate bench/login-burst.sh   # this binary, no build
#
# Knobs (environment):
#   ROUNDS=3 DURATION=10    rounds; seconds per phase (oha -z)
#   RATE=2000 CONNS=16      other users' fixed request rate (oha -q) and connections (oha -c)
#   LOGIN_RATE=20           logins started per second during the storm phase
#   MAX_CONCURRENT          [login] max_concurrent (unset: the config default)
#   HASH_CPUS               [login] hash_cpus of the gateway, e.g. 1: its password-hashing threads
#                           run on these CPUs instead of beside the worker on $SUT_CPUS (unset:
#                           the default, where the process runs)
#   LATENCY_CORRECTION=0    1 = oha --latency-correction (count time behind schedule)
#   INTERLEAVE=S            instead of alternating quiet and storm phases of DURATION s, one oha
#                           run of DURATION s per round in which quiet and storm slots of S s
#                           alternate (the storm client starts logins only in every second slot;
#                           each request counts in the slot it started in, the first GUARD=0.5 s
#                           of each slot left out); reports p99 pooled over all storm slots ÷ all
#                           quiet slots, and the median of per-slot-pair ratios. Host noise that
#                           lasts longer than a slot then falls on both alike. E.g. INTERLEAVE=2
#                           DURATION=60 ROUNDS=3. Needs oha's csv output (oha 1.x).
#   WIRE=0                  1 (with INTERLEAVE) = also capture the gateway port's data segments
#                           on loopback (tcpdump, on $LG_CPUS) and report the same ratios for the
#                           latency at the gateway's socket, from a request's arrival to the
#                           first segment of its answer (bench/wire-latency.py): without the
#                           load tool's own time, which a storm on the load tool's CPU (the
#                           hashes, with HASH_CPUS=$LG_CPUS) lengthens as well
#   SPIN=0                  1 = a busy loop in SCHED_IDLE on each CPU ($SUT_CPUS and $LG_CPUS)
#                           for the whole measurement, so that no CPU ever idles. A control for
#                           virtual machines whose idle vCPUs halt (cpuidle haltpoll with
#                           guest_halt_poll_ns=0 here): waking a halted vCPU goes through the
#                           hypervisor, so an idle CPU answers slower than a busy one, and a storm
#                           that keeps the CPUs busy (the hashes) can make the storm phase look
#                           faster than the quiet one. Every other thread preempts the loops at once.
#                           FLAWED as a control, kept to reproduce session 21's figures: a
#                           scheduler trace (perf sched, session 22) shows the worker waiting up to a
#                           tick behind the loop whenever a thread of the gateway that woke it then
#                           blocks on the same CPU (the store's commit thread after each commit):
#                           between groups the kernel may pick the idle group's loop first, and the
#                           loop then runs until the next tick. Use NO_HALT=1 instead.
#                           SPIN=lg: the loop on $LG_CPUS only, where oha (with OHA_SCHED=fifo)
#                           is above it anyway: a control that keeps the load tools' CPU busy in
#                           both phases, as the hashes placed there keep it busy in the storm.
#   NO_HALT=0               1 = hold /dev/cpu_dma_latency at 0 for the whole run (needs root), so
#                           that idle CPUs poll instead of halting (the cpuidle POLL state), without
#                           anything runnable that the scheduler could pick instead of the gateway.
#                           The control SPIN=1 meant to be; what latency benchmarks such as
#                           cyclictest do. The request ends when the holder exits.
#   OHA_SCHED=normal        fifo = oha runs in SCHED_FIFO (chrt -f 1; needs root or CAP_SYS_NICE):
#                           it then preempts at once whatever else runs on CPU $LG_CPUS, so the
#                           gateway's threads placed there ([login] hash_cpus, [server]
#                           background_cpus) cannot delay the measuring client itself. On a
#                           2-CPU machine "the other CPU" is the load tools' CPU; on a real
#                           deployment it is one that serves no requests.
#   OHA=oha                 oha binary (cargo install oha --locked)
#   BENCH_UA=oha-bench/1    User-Agent of the fixed-rate traffic (the session is bound to it)
#   SG_BIN                  sessiongate binary; unset = cargo build --profile $SG_PROFILE
#   SG_PROFILE=dist
#   SUT_CPUS=0 LG_CPUS=1    taskset CPU lists: gateway + upstream, load tools
#   UP_PORT=18280 SG_PORT=18645 SG_ADMIN=127.0.0.1:18992   ports
#   QUIET_PCT=15 QUIET_MAX=30   wait (at most QUIET_MAX s) before each phase until the
#                           machine's busy CPU over 1 s is below QUIET_PCT % of one CPU
#   KEEP_TMP=1              keep the scratch dir (config, logs, oha outputs)
#   STORM_NICE=0            nice value of the login-storm client, which shares CPU $LG_CPUS with oha
#   STORM_SCHED=idle        the login-storm client runs in SCHED_IDLE, so that oha's threads on the
#                           same CPU preempt it at once: its own CPU (Python, the client side of each
#                           TLS handshake) would otherwise delay the measuring client, not the gateway,
#                           by up to a time slice (nice 19 does not prevent that). normal = as other
#                           processes (with STORM_NICE), as before session 12
#   STORM_RESUME=           1 = each login connection resumes an earlier TLS session (an
#                           abbreviated handshake, as a returning browser's) instead of a full one
#   SG_HANDSHAKES           [server] tls_handshakes of the gateway (background or inline; unset: default)
#   STORE=embedded          session store: embedded (redb, durable: an fsync per session write)
#                           or memory (a control: what the storm costs without durable writes)
#   STORM=logins           hashes = a control: no login traffic, only the storm's argon2 work
#                           (LOGIN_RATE verifications per second of the storm user's hash) on
#                           sessiongate's own hashing thread (SCHED_IDLE, memory kept), in a process
#                           of its own on CPU $SUT_CPUS (examples/hash_load.rs, HASH_LOAD_BIN; built
#                           if unset): what the hashes alone cost the other users when they share
#                           the gateway's core
#   HASH_LOAD_CPUS=$SUT_CPUS   where STORM=hashes runs its hashes; $LG_CPUS: what they cost when they
#                           run where hash_cpus = [$LG_CPUS] would put them, beside the load tools
#   STORM_HASH, LOGIN_PASSWORD   the storm user's PHC string and its password (set
#                           both; default: a fresh default-cost hash of a random password).
#                           A control: the same successful logins with a near-free hash
#                           (m=8,t=1 takes microseconds) shows what everything but the hash costs
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)

ROUNDS=${ROUNDS:-3} DURATION=${DURATION:-10} RATE=${RATE:-2000} CONNS=${CONNS:-16}
LOGIN_RATE=${LOGIN_RATE:-20} OHA=${OHA:-oha} UA=${BENCH_UA:-oha-bench/1}
SUT_CPUS=${SUT_CPUS:-0} LG_CPUS=${LG_CPUS:-1}
UP_PORT=${UP_PORT:-18280} SG_PORT=${SG_PORT:-18645} SG_ADMIN=${SG_ADMIN:-127.0.0.1:18992}
QUIET_PCT=${QUIET_PCT:-15} QUIET_MAX=${QUIET_MAX:-30}
UP_BODY='{"ok":true,"from":"bench-upstream","pad":"abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKLMNOPQRST"}'
LOGIN_USER=storm LOGIN_PASSWORD=${LOGIN_PASSWORD:-storm-password-$RANDOM}

[[ ${WIRE:-0} == 1 && -z ${INTERLEAVE:-} ]] && { echo "WIRE=1 needs INTERLEAVE (e.g. INTERLEAVE=2)" >&2; exit 1; }
for tool in nginx "$OHA" python3 curl openssl taskset setsid awk $( [[ ${WIRE:-0} == 1 ]] && echo tcpdump ); do
  command -v "$tool" >/dev/null || { echo "missing tool: $tool (oha: cargo install oha --locked)" >&2; exit 1; }
done
for p in "$UP_PORT" "$SG_PORT" "${SG_ADMIN##*:}"; do
  [[ -z $(ss -Hltn "sport = :$p" 2>/dev/null) ]] || { echo "port $p is in use; set the *_PORT knobs" >&2; exit 1; }
done
if [[ -z ${SG_BIN:-} ]]; then
  SG_PROFILE=${SG_PROFILE:-dist}
  (cd "$ROOT" && cargo build --profile "$SG_PROFILE" --quiet)
  SG_BIN=$ROOT/target/$SG_PROFILE/sessiongate
fi

if [[ ${STORM:-logins} == hashes && -z ${HASH_LOAD_BIN:-} ]]; then
  (cd "$ROOT" && cargo build --example hash_load --quiet)
  HASH_LOAD_BIN=$ROOT/target/debug/examples/hash_load
fi

TMP=$(mktemp -d /tmp/sg-login-burst.XXXXXX)
chmod 755 "$TMP"
source "$ROOT/bench/lib.sh"
bench_work "$TMP"

# sched_snap PID FILE: "tid run_ns wait_ns group" of each of the gateway's threads; group is the
# thread's name without its number (sg-tls-0 -> sg-tls-; tokio's blocking pool, the store's commit thread)
sched_snap() {
  local t a b rest comm
  for t in /proc/"$1"/task/*; do
    comm=$(cat "$t/comm" 2>/dev/null) || continue
    read -r a b rest <"$t/schedstat" 2>/dev/null || continue
    echo "${t##*/} $a $b ${comm//[0-9]/}"
  done >"$2"
}
# sched_delta BEFORE AFTER -> "run_ns wait_ns" summed over the threads in both snapshots that are
# not background (SCHED_IDLE) threads (sg-argon2-* hashing, sg-tls-* handshakes): those wait by
# design, and are not on the proxied requests' path. Blocking-pool threads come and go; one that
# exits would make a sum go backwards.
sched_delta() {
  awk 'NR == FNR { r[$1] = $2; w[$1] = $3; next }
       ($1 in r) && $4 != "sg-argon-" && $4 != "sg-tls-" { dr += $2 - r[$1]; dw += $3 - w[$1] }
       END { printf "%.0f %.0f\n", dr, dw }' "$1" "$2"
}
# sched_groups BEFORE AFTER ROUND MODE REQUESTS -> "round mode group cpu_us wait_us" per proxied
# request for each thread group, background threads included (for the breakdown table)
sched_groups() {
  awk -v r="$3" -v m="$4" -v n="$5" 'NR == FNR { cr[$1] = $2; cw[$1] = $3; next }
       ($1 in cr) { dr[$4] += $2 - cr[$1]; dw[$4] += $3 - cw[$1] }
       END { for (g in dr) printf "%s\t%s\t%s\t%.2f\t%.2f\n", r, m, g, dr[g] / 1000 / n, dw[g] / 1000 / n }' "$1" "$2"
}

# --- certificate, upstream, gateway ----------------------------------------
"$SG_BIN" gen-cert --out-dir "$TMP" --host localhost --host 127.0.0.1 >/dev/null
start_upstream "$SUT_CPUS" "$UP_PORT" "$UP_BODY"

head -c 24 /dev/urandom | base64 | tr -d '/+=' >"$TMP/admin-token"
HASH=${STORM_HASH:-$(printf '%s' "$LOGIN_PASSWORD" | "$SG_BIN" hash-password)}
gateway_head "$SG_PORT" "$SG_ADMIN" "$TMP" >"$TMP/sessiongate.toml"
cat >>"$TMP/sessiongate.toml" <<TOML
[session]
# Every login's form makes an anonymous session, all from one address.
new_per_ip_per_minute = 60000000
[store]
$( if [[ ${STORE:-embedded} == memory ]]; then echo 'kind = "memory"'; else printf 'kind = "embedded"\npath = "%s"\n' "$TMP/sessions.redb"; fi )
$( [[ -n ${MAX_CONCURRENT:-}${HASH_CPUS:-} ]] && echo '[login]'
   [[ -n ${MAX_CONCURRENT:-} ]] && echo "max_concurrent = $MAX_CONCURRENT"
   [[ -n ${HASH_CPUS:-} ]] && echo "hash_cpus = [$HASH_CPUS]" )
[[users]]
name = "$LOGIN_USER"
password_hash = "$HASH"
[[users]]
name = "bench"
password_hash = "$HASH"
[[routes]]
path_prefix = "/"
upstream = "http://127.0.0.1:$UP_PORT"
auth = "required"
TOML
start "$SUT_CPUS" "$TMP/sessiongate.out" "$SG_BIN" --config "$TMP/sessiongate.toml"
SG_SID=$LAST   # setsid, taskset and env exec: this is the gateway's pid
for _ in $(seq 100); do curl -fsS "http://$SG_ADMIN/healthz" >/dev/null 2>&1 && break; sleep 0.1; done
COOKIE=$("$SG_BIN" session mint --admin "http://$SG_ADMIN" --token-file "$TMP/admin-token" \
  --user bench --client-ip 127.0.0.1 --header "User-Agent: $UA")
URL=https://127.0.0.1:$SG_PORT/

# --- checks before measuring -------------------------------------------------
out=$(curl -sk --max-time 3 -o "$TMP/probe.body" -w '%{http_code}' -H "Cookie: $COOKIE" -A "$UA" "$URL" || true)
[[ $out == 200 && $(cat "$TMP/probe.body") == "$UP_BODY" ]] ||
  { echo "FAILED: logged-in request answered $out, not 200 with the upstream body" >&2; tail "$TMP/sessiongate.out" >&2; exit 1; }
storm() {                 # storm RATE DURATION [login-storm.py options] -> STORM line on stdout
  [[ ${STORM:-logins} == hashes ]] && { hash_storm "$@"; return; }
  local -a sched=(nice -n "${STORM_NICE:-0}")
  [[ ${STORM_SCHED:-idle} == idle ]] && sched=(chrt --idle 0)
  "${sched[@]}" taskset -c "$LG_CPUS" python3 "$ROOT/bench/login-storm.py" --url "https://127.0.0.1:$SG_PORT" \
    --user "$LOGIN_USER" --password "$LOGIN_PASSWORD" --rate "$1" --duration "$2" ${STORM_RESUME:+--resume} "${@:3}"
}
hash_storm() {            # hash_storm RATE DURATION [--on-off S]: the hashes alone (STORM=hashes), no login traffic
  chrt --idle 0 taskset -c "${HASH_LOAD_CPUS:-$SUT_CPUS}" "$HASH_LOAD_BIN" "$HASH" "$LOGIN_PASSWORD" "$@"
}
storm 2 1 >"$TMP/storm-check.out" 2>&1 ||
  { echo "FAILED: test logins did not answer 303:" >&2; cat "$TMP/storm-check.out" >&2; tail "$TMP/sessiongate.out" >&2; exit 1; }

echo "# $(date -u +%FT%TZ)  $($OHA --version 2>/dev/null | head -1)  sessiongate: $SG_BIN"
echo "# layout: sessiongate (workers = 1) + nginx upstream on CPU $SUT_CPUS; oha and the login storm on CPU $LG_CPUS"
echo "# load:   oha -q $RATE -c $CONNS -z ${DURATION}s, logged-in session on an auth = required route, user-agent $UA"
[[ ${STORM:-logins} == hashes ]] && echo "# storm:  CONTROL: no logins, only their $LOGIN_RATE hashes/s, on a SCHED_IDLE hashing thread of a process of its own on CPU ${HASH_LOAD_CPUS:-$SUT_CPUS}"
echo "# storm:  $LOGIN_RATE logins/s (GET form + POST, 303), argon2id $(echo "$HASH" | cut -d'$' -f4), [login] max_concurrent = ${MAX_CONCURRENT:-default}, client ${STORM_SCHED:-idle}${STORM_RESUME:+, resumed handshakes}"
echo "# gateway: tls_handshakes = ${SG_HANDSHAKES:-default}, store ${STORE:-embedded}, hash_cpus = [${HASH_CPUS:-}]${SG_SERVER_EXTRA:+, [server] $SG_SERVER_EXTRA}; oha ${OHA_SCHED:-normal}${SPIN:+, spin $SPIN}${NO_HALT:+, no_halt $NO_HALT}"

SPINNERS=()
if [[ ${SPIN:-0} == 1 || ${SPIN:-0} == lg ]]; then
  # SCHED_IDLE orders threads only within one scheduling group, and with autogroups on
  # (kernel.sched_autogroup_enabled) each session (setsid) is a group of its own, weighted as
  # any other: a busy loop there would take half the gateway's CPU. So the loops run in a CPU
  # cgroup marked idle (cpu.idle = 1), which the kernel schedules as SCHED_IDLE as a whole.
  SPIN_CG=""
  for cg in /sys/fs/cgroup/cpu /sys/fs/cgroup; do
    [[ -e $cg/cpu.idle || ( -e $cg/cgroup.controllers && $(cat "$cg/cgroup.subtree_control" 2>/dev/null) == *cpu* ) ]] &&
      { SPIN_CG=$cg/sg-bench-spin; break; }
  done
  [[ -n $SPIN_CG ]] && mkdir -p "$SPIN_CG" && echo 1 >"$SPIN_CG/cpu.idle" ||
    { echo "SPIN=1 needs a CPU cgroup with cpu.idle (cgroup v1 cpu controller or v2 with +cpu), as root" >&2; exit 1; }
  spin_cpus=$SUT_CPUS,$LG_CPUS
  [[ $SPIN == lg ]] && spin_cpus=$LG_CPUS
  for cpu in $(echo "$spin_cpus" | tr ',' ' ' | sort -u); do
    start "$cpu" "$TMP/spin-$cpu.out" sh -c "echo \$\$ >$SPIN_CG/cgroup.procs && exec chrt --idle 0 sh -c 'while :; do :; done'"
    SPINNERS+=("$LAST")
  done
fi
if [[ ${NO_HALT:-0} == 1 ]]; then
  # The request holds while the file is open: a process of its own holds it, so that no child
  # of this script inherits the descriptor and keeps it after the run.
  [[ -w /dev/cpu_dma_latency ]] || { echo "NO_HALT=1 needs a writable /dev/cpu_dma_latency (root)" >&2; exit 1; }
  start "$SUT_CPUS,$LG_CPUS" "$TMP/no-halt.out" python3 -c 'import os, signal
fd = os.open("/dev/cpu_dma_latency", os.O_WRONLY)
os.write(fd, (0).to_bytes(4, "little"))
signal.pause()'
fi
settle() {                # wait_quiet with the busy loops stopped (they would count as load)
  local pid
  for pid in "${SPINNERS[@]}"; do kill -STOP "$pid"; done
  wait_quiet
  for pid in "${SPINNERS[@]}"; do kill -CONT "$pid"; done
}
OHA_PRIO=()
[[ ${OHA_SCHED:-normal} == fifo ]] && OHA_PRIO=(chrt -f 1)
RES=$TMP/results.tsv
: >"$RES"
phase() {                 # phase ROUND quiet|storm -> a row in $RES
  local r=$1 mode=$2 out=$TMP/oha-$1-$2.json spid="" sline="-"
  local -a lc=(); [[ ${LATENCY_CORRECTION:-0} == 1 ]] && lc=(--latency-correction)
  settle
  if [[ $mode == storm ]]; then
    storm "$LOGIN_RATE" $((DURATION + 2)) >"$TMP/storm-$r.out" 2>&1 &
    spid=$!
    sleep 1
  fi
  local run wait
  sched_snap "$SG_SID" "$TMP/sched0"
  "${OHA_PRIO[@]}" taskset -c "$LG_CPUS" "$OHA" --no-tui --output-format json -z "${DURATION}s" -q "$RATE" -c "$CONNS" "${lc[@]}" \
    --insecure -H "Cookie: $COOKIE" -H "User-Agent: $UA" "$URL" >"$out" 2>"$TMP/oha-$r-$mode.err" ||
    { echo "FAILED: oha:" >&2; cat "$TMP/oha-$r-$mode.err" >&2; exit 1; }
  sched_snap "$SG_SID" "$TMP/sched1"
  read -r run wait <<<"$(sched_delta "$TMP/sched0" "$TMP/sched1")"
  if [[ -n $spid ]]; then
    # Logins that fail (503 once a login waited 5 s for a hashing slot) are
    # reported in the table, not fatal: they mean the CPU cannot hash that fast.
    wait "$spid" || echo "warning: not every login succeeded: $(cat "$TMP/storm-$r.out")" >&2
    sline=$(grep '^STORM ' "$TMP/storm-$r.out" || echo -)
  fi
  python3 - "$out" "$r" "$mode" "$sline" "$run" "$wait" >>"$RES" <<'PY'
import json, sys
j = json.load(open(sys.argv[1]))
s = j["summary"]; p = j["latencyPercentiles"]; codes = j.get("statusCodeDistribution", {})
ok = codes.get("200", 0); total = sum(codes.values()); # oha -z cuts the requests in flight at the deadline: not an error of the gateway
errs = sum(v for k, v in j.get("errorDistribution", {}).items() if "deadline" not in k)
storm = dict(kv.split("=", 1) for kv in sys.argv[4].split()[1:4]) if sys.argv[4] != "-" else {}
print("\t".join(map(str, [sys.argv[2], sys.argv[3], round(s["requestsPerSec"], 1), round(p["p50"] * 1000, 3),
      round(p["p99"] * 1000, 3), round(p["p99.9"] * 1000, 3), ok, total - ok + errs,
      storm.get("ok", "-"), storm.get("failed", "-"),
      round(int(sys.argv[5]) / 1000 / max(total, 1), 2), round(int(sys.argv[6]) / 1000 / max(total, 1), 2)])))
PY
  local bad; bad=$(awk -F'\t' -v r="$r" -v m="$mode" '$1 == r && $2 == m { print $8 }' "$RES")
  ((bad == 0)) || { echo "FAILED: $bad non-200 or failed requests in round $r ($mode)" >&2; cat "$out" >&2; exit 1; }
  sched_groups "$TMP/sched0" "$TMP/sched1" "$r" "$mode" \
    "$(awk -F'\t' -v r="$r" -v m="$mode" '$1 == r && $2 == m { print $7 + $8 }' "$RES")" >>"$TMP/groups.tsv"
}

# --- INTERLEAVE=S: storm and quiet slots alternate every S seconds within one oha run ------
# One oha run of DURATION s per round, its per-request log (oha --output-format csv: start
# offset and duration of every request); the storm client starts logins only in odd slots of
# S s (login-storm.py --on-off). Each request is put in the slot it started in, by wall clock
# (the storm client prints its start; this script notes oha's); requests in the first GUARD s
# of a slot are left out (logins of the slot before are still finishing). Host noise that
# lasts longer than a slot then falls on storm and quiet slots alike.
interleaved() {           # interleaved ROUND -> $TMP/il-ROUND.csv, $TMP/il-ROUND.times
  local r=$1 spid t_oha
  settle
  local wpid=""
  if [[ ${WIRE:-0} == 1 ]]; then
    # Data segments only (PSH set), headers only: about 100 bytes per segment.
    taskset -c "$LG_CPUS" tcpdump -i lo -n -s 96 -B 32768 -w "$TMP/wire-$r.pcap" \
      "tcp port $SG_PORT and (tcp[tcpflags] & tcp-push != 0)" 2>"$TMP/wire-$r.err" &
    wpid=$!
    for _ in $(seq 500); do grep -q 'listening on' "$TMP/wire-$r.err" 2>/dev/null && break; sleep 0.01; done
    grep -q 'listening on' "$TMP/wire-$r.err" || { echo "FAILED: tcpdump did not start:" >&2; cat "$TMP/wire-$r.err" >&2; exit 1; }
  fi
  storm "$LOGIN_RATE" "$DURATION" --on-off "$INTERLEAVE" >"$TMP/storm-$r.out" 2>"$TMP/storm-$r.err" &
  spid=$!
  for _ in $(seq 1000); do grep -q '^STORM_START' "$TMP/storm-$r.err" 2>/dev/null && break; sleep 0.01; done
  grep -q '^STORM_START' "$TMP/storm-$r.err" || { echo "FAILED: the storm client did not start:" >&2; cat "$TMP/storm-$r.err" >&2; exit 1; }
  t_oha=$(date +%s.%N)
  "${OHA_PRIO[@]}" taskset -c "$LG_CPUS" "$OHA" --no-tui --output-format csv -z "${DURATION}s" -q "$RATE" -c "$CONNS" \
    --insecure -H "Cookie: $COOKIE" -H "User-Agent: $UA" "$URL" >"$TMP/il-$r.csv" 2>"$TMP/oha-$r.err" ||
    { echo "FAILED: oha:" >&2; cat "$TMP/oha-$r.err" >&2; exit 1; }
  wait "$spid" || echo "warning: not every login succeeded: $(cat "$TMP/storm-$r.out")" >&2
  if [[ -n $wpid ]]; then
    kill -INT "$wpid"; wait "$wpid" || true
    grep -q ' dropped by kernel' "$TMP/wire-$r.err" && ! grep -q '^0 packets dropped by kernel' "$TMP/wire-$r.err" &&
      echo "warning: tcpdump dropped packets in round $r: $(grep dropped "$TMP/wire-$r.err" | tr '\n' ' ')" >&2
  fi
  echo "$(awk '/^STORM_START/ { print $2 }' "$TMP/storm-$r.err") $t_oha $(grep '^STORM ' "$TMP/storm-$r.out" || echo -)" \
    >"$TMP/il-$r.times"
}
interleaved_report() {
  python3 - "$TMP" "$ROUNDS" "$INTERLEAVE" "${GUARD:-0.5}" "$ROOT/bench/wire-latency.py" <<'PY'
import importlib.util, statistics, sys
tmp, rounds, slot, guard = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
# The slot arithmetic is shared with the wire's report (WIRE=1).
spec = importlib.util.spec_from_file_location("wire_latency", sys.argv[5])
wl = importlib.util.module_from_spec(spec)
spec.loader.exec_module(wl)
p = wl.p
pooled = {0: [], 1: []}
pairs = []   # (quiet slot, the storm slot after it): p99 ratio
rows = []
bad = 0
for r in range(1, rounds + 1):
    times = open(f"{tmp}/il-{r}.times").read().split()
    t_storm, t_oha, storm = float(times[0]), float(times[1]), " ".join(times[2:])
    samples = []
    for line in open(f"{tmp}/il-{r}.csv").read().splitlines()[1:]:
        f = line.split(",")
        if f[6] != "200":
            bad += 1
            continue
        samples.append((t_oha + float(f[0]), float(f[4]) * 1000))
    slots = wl.by_slot(samples, t_storm, slot, guard)
    per = {0: [], 1: []}
    for k, lat in slots.items():
        per[k % 2] += lat
        pooled[k % 2] += lat
    pairs += wl.pair_ratios(slots)
    rows.append((r, len(per[0]), len(per[1]), p(per[0], 0.5), p(per[1], 0.5), p(per[0], 0.99), p(per[1], 0.99), storm))
print(f"\n{'round':<5} {'n_quiet':>8} {'n_storm':>8} {'p50_quiet':>10} {'p50_storm':>10} {'p99_quiet':>10} {'p99_storm':>10} {'p99_x':>7}  storm")
for r, nq, ns, a, b, c, d, storm in rows:
    print(f"{r:<5} {nq:>8} {ns:>8} {a:>10.3f} {b:>10.3f} {c:>10.3f} {d:>10.3f} {d / c:>7.3f}  {storm}")
q99, s99 = p(pooled[0], 0.99), p(pooled[1], 0.99)
print(f"\n(latencies in ms; slots of {slot:g} s alternate quiet/storm, the first {guard:g} s of each left out; "
      f"non-200 requests: {bad})")
print(f"p99 storm ÷ quiet, pooled over {rounds} rounds ({len(pooled[0])} / {len(pooled[1])} requests): "
      f"{s99 / q99:.3f} ({q99:.3f} → {s99:.3f} ms)   (target ≤ 1.20: {'met' if s99 / q99 <= 1.2 else 'NOT met'})")
print(f"p50 storm ÷ quiet, pooled: {p(pooled[1], 0.5) / p(pooled[0], 0.5):.3f}")
if pairs:
    qs = statistics.quantiles(pairs, n=4) if len(pairs) > 1 else [pairs[0]] * 3
    print(f"p99 ratio per slot pair (quiet slot, the storm slot after it), median over {len(pairs)} pairs: "
          f"{statistics.median(pairs):.3f} [quartiles {qs[0]:.3f}-{qs[2]:.3f}]")
PY
}

if [[ -n ${INTERLEAVE:-} ]]; then
  for ((r = 1; r <= ROUNDS; r++)); do echo "round $r/$ROUNDS: interleaved" >&2; interleaved "$r"; done
  interleaved_report
  if [[ ${WIRE:-0} == 1 ]]; then
    wire_args=()
    for ((r = 1; r <= ROUNDS; r++)); do wire_args+=("$TMP/il-$r.times" "$TMP/wire-$r.pcap"); done
    echo
    python3 "$ROOT/bench/wire-latency.py" "$SG_PORT" "$INTERLEAVE" "${GUARD:-0.5}" "${wire_args[@]}"
  fi
else
for ((r = 1; r <= ROUNDS; r++)); do
  if ((r % 2)); then order="quiet storm"; else order="storm quiet"; fi
  for m in $order; do echo "round $r/$ROUNDS: $m" >&2; phase "$r" "$m"; done
done

awk -F'\t' -v rounds="$ROUNDS" '
  function med(a, n,   i, j, t) { for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t }
                                  return (n % 2) ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2 }
  { RPS[$1, $2] = $3; P50[$1, $2] = $4; P99[$1, $2] = $5; P999[$1, $2] = $6; N[$1, $2] = $7
    CPU[$1, $2] = $11; WAIT[$1, $2] = $12
    if ($2 == "storm") SOK[$1] = $9 "/" ($9 + $10) }
  END {
    printf "\n%-5s %9s %10s %10s %10s %10s %9s %9s %9s\n", "round", "req/s", "p50_quiet", "p50_storm", "p99_quiet", "p99_storm", "p99_x", "p50_x", "logins"
    for (r = 1; r <= rounds; r++) {
      x[r] = P99[r, "storm"] / P99[r, "quiet"]; y[r] = P50[r, "storm"] / P50[r, "quiet"]
      printf "%-5d %9.0f %10.3f %10.3f %10.3f %10.3f %9.3f %9.3f %9s\n", r, RPS[r, "quiet"], P50[r, "quiet"], P50[r, "storm"],
             P99[r, "quiet"], P99[r, "storm"], x[r], y[r], SOK[r] }
    mx = med(x, rounds); my = med(y, rounds)
    printf "\n%-5s %12s %12s %9s %13s %13s\n", "round", "cpu_us_quiet", "cpu_us_storm", "cpu_x", "wait_us_quiet", "wait_us_storm"
    for (r = 1; r <= rounds; r++) { c[r] = CPU[r, "storm"] / CPU[r, "quiet"]
      printf "%-5d %12.2f %12.2f %9.3f %13.2f %13.2f\n", r, CPU[r, "quiet"], CPU[r, "storm"], c[r], WAIT[r, "quiet"], WAIT[r, "storm"] }
    mc = med(c, rounds)
    printf "\n(latencies in ms; logins = successful (303) / started logins in the storm phase;\n"
    printf " cpu_us / wait_us: per proxied request, the gateway threads other than sg-argon2-* and sg-tls-*: CPU, run-queue wait)\n"
    printf "p99 storm ÷ quiet, median over %d rounds: %.3f [%.3f-%.3f]   (target ≤ 1.20: %s)\n", rounds, mx, x[1], x[rounds], (mx <= 1.2) ? "met" : "NOT met"
    printf "p50 storm ÷ quiet, median: %.3f [%.3f-%.3f]\n", my, y[1], y[rounds]
    printf "gateway CPU per request (non-hashing threads) storm ÷ quiet, median: %.3f [%.3f-%.3f]\n", mc, c[1], c[rounds]
  }' "$RES"
# Per thread group: median over rounds of CPU and run-queue wait per proxied request, quiet and storm.
echo
awk -F'\t' '
  function med(a, n,   i, j, t) { for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t }
                                  return (n % 2) ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2 }
  { G[$3] = 1; k = $3 SUBSEP $2; n[k]++; C[k, n[k]] = $4; W[k, n[k]] = $5 }
  END {
    printf "%-18s %12s %12s %13s %13s   (per proxied request, median over rounds)\n", "threads", "cpu_us_quiet", "cpu_us_storm", "wait_us_quiet", "wait_us_storm"
    for (g in G) { line = sprintf("%-18s", g)
      for (m = 0; m < 2; m++) { mode = m ? "storm" : "quiet"; k = g SUBSEP mode; split("", a); for (i = 1; i <= n[k]; i++) a[i] = C[k, i]; cm[m] = n[k] ? med(a, n[k]) : 0
                                split("", a); for (i = 1; i <= n[k]; i++) a[i] = W[k, i]; wm[m] = n[k] ? med(a, n[k]) : 0 }
      printf "%s %12.2f %12.2f %13.2f %13.2f\n", line, cm[0], cm[1], wm[0], wm[1] }
  }' "$TMP/groups.tsv" | { read -r head; echo "$head"; sort; }
fi
# Where the handshakes ran (sessiongate_tls_handshakes_total; older builds have no such metric).
hs=$(curl -fsS "http://$SG_ADMIN/metrics" 2>/dev/null | awk '/^sessiongate_tls_handshakes_total/ { printf "%s ", $0 }')
[[ -z $hs ]] || echo "handshakes: $hs"
# What [session] max_per_user did to the storm user's sessions (older builds have no such metric).
ul=$(curl -fsS "http://$SG_ADMIN/metrics" 2>/dev/null | awk '/^sessiongate_user_session_limit_total/ { printf "%s ", $0 }')
[[ -z $ul ]] || echo "per-user limit: $ul"
