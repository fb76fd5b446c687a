#!/usr/bin/env bash
# Worker profile, quiet vs storm (both keys): where the worker's extra CPU per login goes.
set -euo pipefail
ROOT=${ROOT:-/work/main}; source $ROOT/bench/lib.sh
SG=${SG:-/tmp/s24/sg-new} OHA=/tmp/oha-build/bin/oha
TMP=$(mktemp -d /tmp/s24-perf.XXXX); bench_work $TMP
$SG gen-cert --out-dir $TMP --host localhost --host 127.0.0.1 >/dev/null
start_upstream 0 18700 "0123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789"
head -c 24 /dev/urandom | base64 | tr -d '/+=' > $TMP/admin-token
H=$(printf '%s' pw-s24 | $SG hash-password)
SG_SERVER_EXTRA='background_cpus = [1]' gateway_head 18646 127.0.0.1:18993 $TMP > $TMP/sg.toml
cat >> $TMP/sg.toml <<TOML
[session]
new_per_ip_per_minute = 60000000
[store]
kind = "embedded"
path = "$TMP/s.redb"
[login]
hash_cpus = [1]
[[users]]
name = "cost"
password_hash = "$H"
[[users]]
name = "bench"
password_hash = "$H"
[[routes]]
path_prefix = "/"
upstream = "http://127.0.0.1:18700"
auth = "required"
TOML
start 0 $TMP/sg.out $SG --config $TMP/sg.toml
PID=$LAST
for _ in $(seq 100); do curl -fsS http://127.0.0.1:18993/healthz >/dev/null 2>&1 && break; sleep 0.1; done
COOKIE=$($SG session mint --admin http://127.0.0.1:18993 --token-file $TMP/admin-token --user bench --client-ip 127.0.0.1 --header "User-Agent: oha-bench/1")
taskset -c 1 python3 $ROOT/bench/login-storm.py --url https://127.0.0.1:18646 --user cost --password pw-s24 --rate 20 --duration 1 >/dev/null
chrt -f 1 taskset -c 1 $OHA --no-tui -q 2000 -c 16 -z 50s --insecure -H "Cookie: $COOKIE" -H "User-Agent: oha-bench/1" https://127.0.0.1:18646/ > $TMP/oha.out 2>&1 &
OP=$!
sleep 3
taskset -c 1 perf record -F 4000 -g -t $PID -o /tmp/s24/perf-quiet.data -- sleep 15 >/dev/null 2>&1
chrt --idle 0 taskset -c 1 python3 $ROOT/bench/login-storm.py --url https://127.0.0.1:18646 --user cost --password pw-s24 --rate 20 --duration 25 > $TMP/storm.out 2>&1 &
SP=$!
sleep 3
taskset -c 1 perf record -F 4000 -g -t $PID -o /tmp/s24/perf-storm.data -- sleep 15 >/dev/null 2>&1
wait $SP || true; cat $TMP/storm.out | tail -1
wait $OP || true; grep -E "Requests/sec|Success rate" $TMP/oha.out
