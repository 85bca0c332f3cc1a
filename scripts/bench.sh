#!/usr/bin/env bash
# End-to-end benchmark: a release `sfu` and `loadtest` on this machine at fixed loads, with the
# server's CPU per forwarded packet read from /proc over a steady window.
#   ./scripts/bench.sh [LOAD...]     loads: 1v1-200 1v1-1000 group8-av (default: all three),
#                                    and over ICE-TCP: 1v1-200-tcp group8-av-tcp
# Per load it prints one Markdown row: server CPU µs per forwarded packet, context switches
# per second, RSS per Peer, loadtest CPU per caller, loss, latency p50/p95/p99, MOS p50, and
# the verification result. Figures go to docs/perf.md; compare runs made one after the other.
# BENCH_WINDOW (seconds, default 10) is the steady window; BENCH_SFU_ARGS adds server flags;
# BENCH_SFU_BIN runs another sfu binary (a before/after pair of builds in one session).
set -euo pipefail
cd "$(dirname "$0")/.."
{ command -v jq && command -v curl; } >/dev/null 2>&1 || ./scripts/setup.sh
loads=("$@")
[ ${#loads[@]} -gt 0 ] || loads=(1v1-200 1v1-1000 group8-av)
window="${BENCH_WINDOW:-10}"
cargo build --quiet --locked --release -p sfu -p loadtest
bin=target/release
sfu_bin="${BENCH_SFU_BIN:-$bin/sfu}"
tck=$(getconf CLK_TCK)
work=$(mktemp -d)
sfu_pid=
lt_pid=
cleanup() {
  for p in $lt_pid $sfu_pid; do kill "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

# CPU seconds (user + system) of a process, all threads.
cpu_s() { awk -v t="$tck" '{ printf "%.3f", ($14 + $15) / t }' "/proc/$1/stat"; }
ctx() { cat /proc/"$1"/task/*/status 2>/dev/null | awk '/ctxt_switches/ { s += $2 } END { print s + 0 }'; }
rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }
scrape() { curl -s "http://$metrics/metrics"; }
sum_metric() { scrape | awk -v m="$1" 'index($1, m) == 1 { s += $2 } END { printf "%.0f", s }'; }

echo "| load | callers | server CPU µs / forwarded packet | forwarded packets/s | server ctx switches/s | server RSS KiB / Peer | loadtest CPU ms/s per caller | loss | latency ms p50 / p95 / p99 | MOS p50 up / down | verified |"
echo "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
for load in "${loads[@]}"; do
  case "$load" in
    1v1-200) lt=(--calls 100 --media audio); callers=200 ;;
    1v1-1000) lt=(--calls 500 --media audio); callers=1000 ;;
    group8-av) lt=(--scenario group --group-size 8 --calls 4 --media video); callers=32 ;;
    1v1-200-tcp) lt=(--calls 100 --media audio --transport tcp); callers=200 ;;
    group8-av-tcp) lt=(--scenario group --group-size 8 --calls 4 --media video --transport tcp); callers=32 ;;
    *) echo "bench: unknown load $load" >&2; exit 2 ;;
  esac
  # shellcheck disable=SC2086
  # Every caller comes from 127.0.0.1: lift the per-IP socket cap (500 by default).
  "$sfu_bin" serve --dev --http 127.0.0.1:0 --metrics 127.0.0.1:0 --udp-port 0 \
    --max-sockets-per-ip 5000 --log-format json ${BENCH_SFU_ARGS:-} 2>"$work/sfu.log" &
  sfu_pid=$!
  for _ in $(seq 100); do grep -q '"sfu listening"' "$work/sfu.log" && break; sleep 0.1; done
  line=$(grep '"sfu listening"' "$work/sfu.log" | head -1)
  http=$(sed -E 's/.*"http":"([^"]+)".*/\1/' <<<"$line")
  metrics=$(sed -E 's/.*"metrics":"([^"]+)".*/\1/' <<<"$line")
  rss_idle=$(rss_kib "$sfu_pid")
  "$bin/loadtest" --url "ws://$http/ws" --quiet --prefix b --ramp 50 \
    --duration "$((window + 25))s" --report "$work/report.json" "${lt[@]}" >"$work/lt.txt" 2>&1 &
  lt_pid=$!
  # Steady: every caller's media session is up.
  for _ in $(seq 600); do
    [ "$(sum_metric sfu_peers_active)" -ge "$callers" ] && break
    sleep 0.1
  done
  sleep 3
  c0=$(cpu_s "$sfu_pid"); x0=$(ctx "$sfu_pid"); l0=$(cpu_s "$lt_pid")
  o0=$(sum_metric 'sfu_rtp_packets_total{direction="out"')
  t0=$(date +%s.%N)
  sleep "$window"
  c1=$(cpu_s "$sfu_pid"); x1=$(ctx "$sfu_pid"); l1=$(cpu_s "$lt_pid")
  o1=$(sum_metric 'sfu_rtp_packets_total{direction="out"')
  t1=$(date +%s.%N)
  peers=$(sum_metric sfu_peers_active)
  rss=$(rss_kib "$sfu_pid")
  if wait "$lt_pid"; then verified=yes; else verified=NO; tail -20 "$work/lt.txt" >&2; fi
  lt_pid=
  kill "$sfu_pid"; wait "$sfu_pid" 2>/dev/null || true
  sfu_pid=
  r="$work/report.json"
  awk -v c0="$c0" -v c1="$c1" -v o0="$o0" -v o1="$o1" -v t0="$t0" -v t1="$t1" -v x0="$x0" \
      -v x1="$x1" -v l0="$l0" -v l1="$l1" -v ri="$rss_idle" -v rs="$rss" -v p="$peers" \
      -v n="$callers" -v load="$load" -v v="$verified" \
      -v loss="$(jq -r '.loss * 100' "$r")" \
      -v lat="$(jq -r '[.latency_ms.p50, .latency_ms.p95, .latency_ms.p99] | map(. // 0 | . * 10 | round / 10) | join(" / ")' "$r")" \
      -v mos="$(jq -r '[.mos_up.p50, .mos_down.p50] | map(. // "-") | join(" / ")' "$r")" \
      'BEGIN {
        dt = t1 - t0; fwd = o1 - o0
        printf "| %s | %d | %.2f | %.0f | %.0f | %.0f | %.2f | %.2f %% | %s | %s | %s |\n",
          load, n, (fwd > 0 ? (c1 - c0) * 1e6 / fwd : 0), fwd / dt, (x1 - x0) / dt,
          (p > 0 ? (rs - ri) / p : 0), (l1 - l0) * 1000 / dt / n, loss, lat, mos, v
      }'
done
