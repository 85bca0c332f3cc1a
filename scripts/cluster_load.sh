#!/usr/bin/env bash
# The same loadtest against one standalone node and against a cluster of three nodes on one
# Redis (each call's caller and callee on different nodes), one after the other on this
# machine: what the cluster costs callers (setup time, loss, MOS) and the servers (CPU).
#   ./scripts/cluster_load.sh [CALLS] [DURATION_S]      (default 100 calls = 200 callers, 20 s)
# Prints one Markdown row per setup; figures go to docs/perf.md.
set -euo pipefail
cd "$(dirname "$0")/.."
{ command -v jq && command -v redis-server; } >/dev/null 2>&1 || ./scripts/setup.sh
calls="${1:-100}"
dur="${2:-20}"
cargo build --quiet --locked --release -p sfu -p loadtest
bin=target/release
tck=$(getconf CLK_TCK)
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

cpu_s() { awk -v t="$tck" '{ printf "%.3f", ($14 + $15) / t }' "/proc/$1/stat"; }
add() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", a + b }'; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# start_node NAME ARGS... -> sets $url, appends the pid to pids
start_node() {
  local name=$1
  shift
  "$bin/sfu" serve --dev --http 127.0.0.1:0 --metrics 127.0.0.1:0 --udp-port 0 \
    --max-sockets-per-ip 5000 --log-format json "$@" 2>"$work/$name.log" &
  pids+=($!)
  for _ in $(seq 100); do grep -q '"sfu listening"' "$work/$name.log" && break; sleep 0.1; done
  local line
  line=$(grep '"sfu listening"' "$work/$name.log" | head -1)
  url="ws://$(sed -E 's/.*"http":"([^"]+)".*/\1/' <<<"$line")/ws"
  metrics="$(sed -E 's/.*"metrics":"([^"]+)".*/\1/' <<<"$line")"
}

run() {
  local label=$1 urls=$2
  shift 2
  local servers=("$@")
  local before=0 after=0
  for p in "${servers[@]}"; do before=$(add "$before" "$(cpu_s "$p")"); done
  "$bin/loadtest" --url "$urls" --quiet --prefix "c$RANDOM" --ramp 50 --calls "$calls" \
    --duration "${dur}s" --report "$work/r.json" >"$work/lt.txt" 2>&1 || true
  for p in "${servers[@]}"; do after=$(add "$after" "$(cpu_s "$p")"); done
  jq -r --arg l "$label" --arg cpu "$(add "$after" "-$before")" \
    '"| \($l) | \(.callers) | \(.setup_accept_ms.p50) / \(.setup_accept_ms.p95) | \(.setup_media_ms.p50) / \(.setup_media_ms.p95) | \(.loss) | \(.mos_up.p50) / \(.mos_down.p50) | \($cpu) | \(if .passed then "yes" else "NO" end) |"' \
    "$work/r.json"
}

echo "| setup | callers | setup (accept) ms p50 / p95 | setup (media) ms p50 / p95 | loss | MOS p50 up / down | server CPU s (all nodes) | verified |"
echo "| --- | --- | --- | --- | --- | --- | --- | --- |"

start_node single
single=${pids[-1]}
run "one node" "$url" "$single"
kill "$single"

port=$(free_port)
redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no >/dev/null &
pids+=($!)
redis_pid=${pids[-1]}
sleep 0.5
urls=()
nodes=()
scrapes=()
for n in a b c; do
  start_node "$n" --redis "redis://127.0.0.1:$port/" --node-id "$n"
  urls+=("$url")
  nodes+=("${pids[-1]}")
  scrapes+=("$metrics")
done
r0=$(cpu_s "$redis_pid")
run "3 nodes + Redis, members on different nodes" "$(IFS=,; echo "${urls[*]}")" "${nodes[@]}"
echo
echo "Redis CPU during the cluster run: $(add "$(cpu_s "$redis_pid")" "-$r0") s"
sent=0
for m in "${scrapes[@]}"; do
  n=$(curl -s "http://$m/metrics" | awk '/^sfu_cluster_envelopes_total\{direction="sent"\}/ { print $2 }')
  sent=$(add "$sent" "${n:-0}")
done
echo "Cross-node messages sent: $sent"
