#!/usr/bin/env bash
# count upstream connections the gateway opened during a keep-alive wrk run
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../../.." && pwd)
source $ROOT/bench/lib.sh
W=$(mktemp -d /tmp/s13-churn.XXXX); bench_work $W
SG_BIN=${SG_BIN:?set SG_BIN to a sessiongate binary}
UP=19181; GW=19443; ADM=127.0.0.1:19990
start_upstream 0 $UP "$(head -c ${BODY:-256} /dev/zero | tr '\0' x)"
"$SG_BIN" gen-cert --out-dir $W --host 127.0.0.1 >/dev/null
head -c 24 /dev/urandom | base64 | tr -d '/+=' > $W/admin-token
{ gateway_head $GW $ADM $W; printf '[store]\nkind="embedded"\npath="%s"\n[[routes]]\npath_prefix="/"\nupstream="http://127.0.0.1:%s"\nauth="required"\n' $W/s.redb $UP; } > $W/g.toml
start 0 $W/g.log "$SG_BIN" --config $W/g.toml
for _ in $(seq 100); do curl -fsS http://$ADM/healthz >/dev/null 2>&1 && break; sleep 0.1; done
C=$("$SG_BIN" session mint --admin http://$ADM --token-file $W/admin-token --user bench --client-ip 127.0.0.1 --header "User-Agent: peers-bench/1")
taskset -c 1 wrk -t1 -c64 -d${DUR:-8}s --latency -H "Cookie: $C" -H "User-Agent: peers-bench/1" https://127.0.0.1:$GW/ | grep -E "Latency|50%|90%|99%|Requests/sec|requests in"
echo "upstream conns established: $(ss -Htn state established "( dport = :$UP )" | wc -l)"
echo "time-wait to upstream: $(ss -Htn state time-wait "( dport = :$UP )" | wc -l)"
