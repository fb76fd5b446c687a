#!/usr/bin/env bash
# Peak and settled RSS of a gateway whose embedded store holds 1,000,000
# sessions (kept by `ROUNDS=0 KEEP_TMP=1 bench/scale.sh`), around one
# GET /sessions without ?user=. Usage: list-mem.sh BIN DIR [QUERY]
BIN=$1 DIR=$2 QUERY=${3:-}
cd "$DIR"
setsid "$BIN" --config gateway.toml > /tmp/s27/list-gw.log 2>&1 &
sleep 3
P=$(pgrep -f "$BIN --config gateway.toml")
echo "binary $BIN, query '$QUERY'"
echo "after start: $(grep -E 'VmRSS' /proc/$P/status | tr -s ' \t' ' ')"
T=$(cat admin-token)
/usr/bin/time -f "GET /sessions$QUERY: %e s" curl -s -o /tmp/s27/list-answer.json -w "status %{http_code}, %{size_download} bytes\n" -H "Authorization: Bearer $T" "http://127.0.0.1:18991/sessions$QUERY"
head -c 120 /tmp/s27/list-answer.json; echo
echo "after: $(grep -E 'VmHWM|VmRSS' /proc/$P/status | tr -s ' \t' ' ' | tr '\n' ' ')"
kill $P
