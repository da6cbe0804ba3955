#!/usr/bin/env bash
# The long chaos profile: chaos-tests/run.sh [--seconds 1800] [--seed N] [--park-secs 5]
#   [--skew-secs K] (site C's wall clocks K s ahead, by libfaketime from Debian's faketime)
# Builds orbitd and orbit-chaos, then one run on hosts of their own (network namespaces:
# needs root, iproute2, nftables and SIPp). Prints the seed first and one line of figures last.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/orbit-target/$(pwd -P | sha256sum | cut -c1-12)}"
command -v sipp >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq sip-tester >/dev/null; }
command -v nft >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nftables >/dev/null; }
command -v faketime >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq faketime >/dev/null; }
cargo build --release -q -p orbitd -p orbit-chaos
exec "$CARGO_TARGET_DIR/release/orbit-chaos" --orbitd "$CARGO_TARGET_DIR/release/orbitd" "$@"
