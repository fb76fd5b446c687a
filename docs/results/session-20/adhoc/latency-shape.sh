#!/bin/bash
# ad hoc: latency distribution, nginx proxy vs sessiongate, alternating
cd /tmp/s20/lat
SG=${SG:-/tmp/s20/sg-dbg}
UA="ir-bench/1"
UA=$(grep -o 'UA=[^ ]*' /work/main/bench/ir-per-request.sh | head -1 | cut -d= -f2 | tr -d '"${}' )
setsid taskset -c 0 nginx -c $PWD/upstream.conf -e $PWD/up.err & sleep 0.5
for r in $(seq ${ROUNDS:-5}); do
 for t in nginx floor sg; do
  if [ $t = nginx ]; then setsid taskset -c 0 nginx -c $PWD/proxy.conf -e $PWD/proxy.err & P=$!; sleep 0.5; C=""; elif [ $t = floor ]; then
    TOKIO_WORKER_THREADS=1 setsid taskset -c 0 /tmp/sessiongate-bench/floor-target/release/floor-proxy 127.0.0.1:18645 127.0.0.1:18280 cert.pem key.pem 2>floor.log & P=$!; sleep 0.5; C=""; else
    setsid taskset -c 0 $SG --config sg.toml 2>sg.log & P=$!; for i in $(seq 50); do curl -fs -o /dev/null http://127.0.0.1:18690/healthz && break; sleep 0.1; done
    C=$($SG session mint --admin http://127.0.0.1:18690 --token-file admin-token --user bench --client-ip 127.0.0.1 --header "User-Agent: lat/1"); fi
  H=(-H "User-Agent: lat/1"); [ -n "$C" ] && H+=(-H "Cookie: $C")
  taskset -c 1 wrk -t1 -c64 -d2 "${H[@]}" https://127.0.0.1:18645/ >/dev/null
  cs() { cat /proc/$1/task/*/status 2>/dev/null | awk '/^voluntary_ctxt/{v+=$2} /^nonvoluntary_ctxt/{n+=$2} END{print v, n}'; }
  UPP=$(cat up.pid)
  read v0 n0 < <(cs $P); read uv0 un0 < <(cs $UPP)
  taskset -c 1 wrk -t1 -c64 -d8 --latency "${H[@]}" https://127.0.0.1:18645/ > wrk-$r-$t.txt
  read v1 n1 < <(cs $P); read uv1 un1 < <(cs $UPP)
  CS="sut vol $((v1-v0)) invol $((n1-n0)) up vol $((uv1-uv0)) invol $((un1-un0))"
  echo "$r $t $(awk '/Requests\/sec/{print $2}' wrk-$r-$t.txt) $(awk '/^ +(50|75|90|99)%/{printf "%s ", $2}' wrk-$r-$t.txt) $(cat /proc/loadavg | cut -d' ' -f1) $CS"
  kill $P; wait $P 2>/dev/null; sleep 0.3
 done
done
kill $(cat up.pid 2>/dev/null) 2>/dev/null
