#!/usr/bin/env bash
# Installs what the project needs beyond the Rust toolchain, only when missing.
# Debian packages go through apt-get (root, or sudo when available).
#   ./scripts/setup.sh         everything the test suite needs
#   ./scripts/setup.sh build   only what building and running the server needs
set -euo pipefail
mode="${1:-all}"

need_apt=()
# C toolchain for crates with C parts (aws-lc-sys builds with cc).
command -v cc >/dev/null 2>&1 || need_apt+=(build-essential)
# cmake builds the bundled libopus (opus crate: Opus decoding for volume without the
# audio-level extension, and the loadtest's encoder).
command -v cmake >/dev/null 2>&1 || need_apt+=(cmake)
if [ "$mode" != build ]; then
  # Prometheus evaluates every Grafana panel's query against a live sfu in tests/grafana.rs.
  command -v prometheus >/dev/null 2>&1 || need_apt+=(prometheus)
  # The browser demo test: Debian's Chromium, and Node.js for playwright-core.
  command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
  command -v node >/dev/null 2>&1 || need_apt+=(nodejs npm)
  # tests/browser_network.rs: Chromium with UDP to the server dropped (nftables) connects
  # over ICE-TCP, and relay-only through a real coturn.
  command -v nft >/dev/null 2>&1 || need_apt+=(nftables)
  command -v turnserver >/dev/null 2>&1 || need_apt+=(coturn)
  # tests/cluster_store.rs: each test starts its own redis-server on an ephemeral port.
  command -v redis-server >/dev/null 2>&1 || need_apt+=(redis-server)
  # scripts/bench.sh reads /metrics and the loadtest's JSON report.
  command -v curl >/dev/null 2>&1 || need_apt+=(curl)
  command -v jq >/dev/null 2>&1 || need_apt+=(jq)
fi
# System CA certificates for HTTPS push webhooks.
[ -e /etc/ssl/certs/ca-certificates.crt ] || need_apt+=(ca-certificates)

if [ ${#need_apt[@]} -gt 0 ]; then
  echo "setup: installing ${need_apt[*]}" >&2
  SUDO=""
  if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}"
fi

for tool in cargo rustc; do
  command -v "$tool" >/dev/null 2>&1 || { echo "setup: $tool not found: install the Rust toolchain (rustup)" >&2; exit 1; }
done
for comp in rustfmt clippy; do
  if ! cargo "${comp/rustfmt/fmt}" --version >/dev/null 2>&1; then
    rustup component add "$comp"
  fi
done

# playwright-core for tests/browser (from the npm registry; no browser download).
here="$(cd "$(dirname "$0")/.." && pwd)"
if [ "$mode" != build ] && [ ! -d "$here/tests/browser/node_modules/playwright-core" ]; then
  echo "setup: installing playwright-core for the browser tests" >&2
  (cd "$here/tests/browser" && npm ci --no-audit --no-fund --ignore-scripts)
fi
