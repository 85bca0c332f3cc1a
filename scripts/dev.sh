#!/usr/bin/env bash
# Runs the server in dev mode: loopback only, JWT secret "devsecret".
# Extra arguments go to `sfu serve`, e.g. ./scripts/dev.sh --invite-timeout 10s
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh build
exec cargo run --release --locked -p sfu -- serve --dev "$@"
