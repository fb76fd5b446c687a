#!/bin/bash
# Rewrites the routes and reloads, once every 0.5 s, 30 times.
route() { printf '\n[[routes]]\npath_prefix = "/"\nupstream = [%s]\nbalance = "round-robin"\n' "$1"; }
lists=('"http://127.0.0.1:18301", "http://127.0.0.1:18302"' '"http://127.0.0.1:18302"' '"http://127.0.0.1:18301"')
for i in $(seq 0 29); do
  { cat head.toml; route "${lists[$((i % 3))]}"; } > gw.toml.new && mv gw.toml.new gw.toml
  curl -s -H "Authorization: Bearer $(cat token)" -X POST http://127.0.0.1:19090/reload | grep -o '"routes_reloaded":[a-z]*' >> reloads.log
  sleep 0.5
done
