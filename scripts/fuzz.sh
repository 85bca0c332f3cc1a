#!/usr/bin/env bash
# Coverage-guided fuzzing of the server's untrusted inputs with cargo-fuzz (libFuzzer, ASan).
#   ./scripts/fuzz.sh [RUNS] [TARGET...]     default: 10000000 runs of frame, sdp, datagram
# Targets (bodies in src/fuzz_harness.rs, a short run of each is in tests/fuzz_smoke.rs):
#   frame     a WebSocket text frame: JSON-RPC parsing, params, the call model
#   sdp       an SDP as a member's offer and answer to a media core with a call up
#   datagram  a UDP datagram from a connected member (after ICE/DTLS) and from a stranger
# Needs the nightly toolchain (rustup toolchain install nightly) and installs cargo-fuzz.
# Findings go to sfu/fuzz/artifacts/<target>/; figures of a run belong in docs/security.md.
set -euo pipefail
cd "$(dirname "$0")/../sfu/fuzz"
runs="${1:-10000000}"
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(frame sdp datagram)
command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked
for t in "${targets[@]}"; do
  echo "fuzz: $t, $runs runs" >&2
  cargo +nightly fuzz run "$t" --fuzz-dir . -O -- -runs="$runs" -print_final_stats=1 2>&1 \
    | grep -E '^(#[0-9]+.*DONE|stat::|==[0-9]+==|SUMMARY|.*panicked)' || true
  if [ -n "$(ls -A "artifacts/$t" 2>/dev/null)" ]; then
    echo "fuzz: $t found crashes in sfu/fuzz/artifacts/$t" >&2
    exit 1
  fi
done
