#!/usr/bin/env bash
# Soak: one `sfu` under back-to-back loadtest waves with churn for DURATION, then checks that it
# leaked nothing. Each wave runs a 1v1 audio run and a group video run at once, every caller
# toggling mute and hold, reconnecting (socket dropped, new login, new media leg), re-offering,
# and a share of calls losing a member that is killed mid-call; each wave must verify (everyone
# hears exactly whom they should).
#   ./scripts/soak.sh DURATION        e.g. 60s, 30m, 2h
# Passes when, after the last wave: RSS is within 10 % of its value after warm-up (the first
# quarter of the run, at least two waves: the allocator's arenas fill in the first waves),
# sessions, calls and peers are back to 0, the log has no panic, the server is healthy.
# SOAK_PROFILE=debug uses debug binaries (the suite's 60-s run, tests/soak.rs); the default is
# release. SOAK_CALLS sets the 1v1 calls per wave (default 6; plus 2 groups of 4);
# SOAK_SFU_ARGS adds server flags (e.g. `--call-records 10`).
set -euo pipefail
cd "$(dirname "$0")/.."

duration="${1:?usage: scripts/soak.sh DURATION (e.g. 60s, 30m)}"
case "$duration" in
  *h) secs=$(( ${duration%h} * 3600 )) ;;
  *m) secs=$(( ${duration%m} * 60 )) ;;
  *s) secs=${duration%s} ;;
  *) secs=$duration ;;
esac
[[ "$secs" =~ ^[0-9]+$ ]] && [ "$secs" -gt 0 ] || { echo "soak: bad DURATION $duration" >&2; exit 2; }
profile="${SOAK_PROFILE:-release}"
calls="${SOAK_CALLS:-6}"
grace=3

if [ "$profile" = release ]; then
  cargo build --quiet --locked --release -p sfu -p loadtest
  bin=target/release
else
  cargo build --quiet --locked -p sfu -p loadtest
  bin=target/debug
fi

work=$(mktemp -d)
sfu_pid=
cleanup() {
  [ -n "$sfu_pid" ] && kill "$sfu_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

# shellcheck disable=SC2086
"$bin/sfu" serve --dev --http 127.0.0.1:0 --metrics 127.0.0.1:0 --udp-port 0 --workers 2 \
  --log-format json --reconnect-grace "${grace}s" --quality-interval 2s ${SOAK_SFU_ARGS:-} \
  2>"$work/sfu.log" &
sfu_pid=$!
for _ in $(seq 100); do
  grep -q '"sfu listening"' "$work/sfu.log" 2>/dev/null && break
  kill -0 "$sfu_pid" 2>/dev/null || { cat "$work/sfu.log" >&2; echo "soak: sfu exited" >&2; exit 1; }
  sleep 0.1
done
line=$(grep '"sfu listening"' "$work/sfu.log" | head -1)
http=$(sed -E 's/.*"http":"([^"]+)".*/\1/' <<<"$line")
metrics=$(sed -E 's/.*"metrics":"([^"]+)".*/\1/' <<<"$line")
[ -n "$http" ] && [ -n "$metrics" ] || { echo "soak: sfu did not start" >&2; exit 1; }

# One metric family's value (no labels), from the sfu's /metrics.
metric() {
  exec 3<>"/dev/tcp/${metrics%:*}/${metrics##*:}"
  printf 'GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n' >&3
  awk -v m="$1" '$1 == m { print $2 }' <&3
  exec 3<&-
}
gauges() { echo "$(metric sfu_sessions_active) $(metric sfu_calls_active) $(metric sfu_peers_active)"; }
rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$sfu_pid/status"; }
# Waits (up to 30 s) for every gauge to come back to 0 after a wave.
settle() {
  for _ in $(seq 300); do
    [ "$(gauges)" = "0 0 0" ] && return 0
    sleep 0.1
  done
  return 1
}

churn=(--mute-every 5s --hold-every 7s --reconnect-every 6s --reoffer-every 5s --kill 0.25)
wave() {
  local i=$1 a b
  "$bin/loadtest" --url "ws://$http/ws" --quiet --prefix "w$i" --calls "$calls" --duration 15s \
    --reject 0.1 "${churn[@]}" --report "$work/w$i-1v1.json" >"$work/w$i-1v1.txt" 2>&1 & a=$!
  "$bin/loadtest" --url "ws://$http/ws" --quiet --prefix "g$i" --scenario group --group-size 4 \
    --calls 2 --media video --duration 15s "${churn[@]}" --report "$work/w$i-group.json" \
    >"$work/w$i-group.txt" 2>&1 & b=$!
  local ok=0
  wait "$a" || ok=1
  wait "$b" || ok=1
  return $ok
}
sum() { cat "$work"/w*.json | awk -v k="\"$1\":" '$1 == k { gsub(",", "", $2); s += $2 } END { print s + 0 }'; }

start=$SECONDS
warm=$((secs / 4))
waves=0
failed=0
base=
peak=0
while :; do
  waves=$((waves + 1))
  if ! wave "$waves"; then
    failed=$((failed + 1))
    echo "soak: wave $waves failed:" >&2
    cat "$work/w$waves-1v1.txt" "$work/w$waves-group.txt" >&2
  fi
  settle || echo "soak: gauges not back to 0 after wave $waves: $(gauges)" >&2
  rss=$(rss_kib)
  if [ -z "$base" ] && [ "$waves" -ge 2 ] && [ $((SECONDS - start)) -ge "$warm" ]; then
    base=$rss
  fi
  [ -n "$base" ] && [ "$rss" -gt "$peak" ] && peak=$rss
  echo "soak: wave $waves done at $((SECONDS - start)) s, rss ${rss} KiB, gauges $(gauges)" >&2
  [ $((SECONDS - start)) -lt "$secs" ] || [ -z "$base" ] || break
done

end=$(rss_kib)
left=$(gauges)
panics=$(grep -c 'panicked' "$work/sfu.log" || true)
healthy=$(metric sfu_healthy)
growth=$(awk -v b="$base" -v e="$end" 'BEGIN { printf "%+.1f", (e - b) * 100 / b }')
killed=$(cat "$work"/w*.json | grep -o '"killed": [0-9]*' | awk '{ s += $2 } END { print s + 0 }')
echo "soak: ${waves} waves in $((SECONDS - start)) s, $(sum callers) callers, $(sum toggles) mute/hold toggles, $(sum reconnects) reconnects, $(sum reoffers) re-offers, ${killed} killed, failed waves ${failed}"
echo "soak: rss after warm-up ${base} KiB, peak after it ${peak} KiB, at the end ${end} KiB (${growth} %); gauges sessions/calls/peers ${left}; panics ${panics}; healthy ${healthy}"
verdict=PASS
[ "$failed" -eq 0 ] || verdict=FAIL
[ "$left" = "0 0 0" ] || verdict=FAIL
[ "$panics" -eq 0 ] || verdict=FAIL
[ "$healthy" = 1 ] || verdict=FAIL
awk -v b="$base" -v e="$end" 'BEGIN { exit !(e <= b * 1.10) }' || verdict=FAIL
echo "soak: $verdict"
[ "$verdict" = PASS ]
