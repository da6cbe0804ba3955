#!/usr/bin/env bash
# The benchmark command (not a test): builds release binaries, installs SIPp and Kamailio when
# missing, then runs
#   calls  the call-rate search: SIPp direct, Kamailio, orbit edge (trusted), orbit edge (digest)
#   relay  RTP relay packets/s and added latency vs a plain UDP forwarding loop
#   music  CPU of music on hold for 1000 parked calls (one player thread, encoded once)
#   park   park + retrieve cycles/s and retrieve latency, against plain calls on the same edge
#   registry  registry commit latency against the disk's fsync, commits/s with many in flight,
#          failover time, recall lateness across a leader stop
#   sites  park + retrieve across sites (three orbitd run processes), against the same cycle
#          on one site and plain calls, in the same run
#   pickup call pickup cycles/s and pickup latency at the same site and across sites, and the
#          plain call rate with and without pickup groups, in the same run
#   admin  the plain call rate with and without an operator reading the admin API (a watch held
#          open, two orbitctl reads a second), in the same run
#   observe  the plain call rate with and without metrics scraped every second and traces at
#          1% sent to an OTLP receiver, in the same run
# Usage: bench/run.sh [calls|relay|music|park|registry|sites|pickup|admin|observe|all] [options for the .py scripts]
set -euo pipefail
cd "$(dirname "$0")/.."
# One per checkout path: cargo keys build freshness on paths relative to the workspace, so two
# clones sharing a target directory can run each other's test binaries, with the other clone's
# CARGO_MANIFEST_DIR compiled in.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/orbit-target/$(pwd -P | sha256sum | cut -c1-12)}"
what="${1:-all}"; shift || true
sudo_() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
missing=()
command -v sipp >/dev/null || missing+=(sip-tester)
command -v kamailio >/dev/null || missing+=(kamailio)
# observe samples the processes with perf (software clock; no hardware counters needed).
command -v perf >/dev/null || missing+=(linux-perf)
if [ ${#missing[@]} -gt 0 ]; then
  sudo_ apt-get update -qq
  DEBIAN_FRONTEND=noninteractive sudo_ apt-get install -y -qq "${missing[@]}" >/dev/null
fi
cargo build --release -q -p orbitd -p orbit-bench
echo "machine: $(nproc) cores, $(uname -r), $(date -u +%F)"
if [ "$what" = relay ] || [ "$what" = all ]; then
  "$CARGO_TARGET_DIR/release/orbit-bench" relay --seconds 10
fi
if [ "$what" = registry ] || [ "$what" = all ]; then
  "$CARGO_TARGET_DIR/release/orbit-bench" registry --commits 2000 --failovers 5
fi
if [ "$what" = music ] || [ "$what" = all ]; then
  "$CARGO_TARGET_DIR/release/orbit-bench" music --calls 1000 --seconds 10
fi
if [ "$what" = calls ] || [ "$what" = all ]; then
  python3 bench/calls.py --orbitd "$CARGO_TARGET_DIR/release/orbitd" "$@"
fi
if [ "$what" = park ] || [ "$what" = all ]; then
  python3 bench/park.py --orbitd "$CARGO_TARGET_DIR/release/orbitd" "$@"
fi
if [ "$what" = sites ] || [ "$what" = all ]; then
  python3 bench/sites.py --orbitd "$CARGO_TARGET_DIR/release/orbitd" "$@"
fi
if [ "$what" = pickup ] || [ "$what" = all ]; then
  python3 bench/pickup.py --orbitd "$CARGO_TARGET_DIR/release/orbitd" "$@"
fi
if [ "$what" = admin ] || [ "$what" = all ]; then
  python3 bench/admin.py --orbitd "$CARGO_TARGET_DIR/release/orbitd" \
    --orbitctl "$CARGO_TARGET_DIR/release/orbitctl" "$@"
fi
if [ "$what" = observe ] || [ "$what" = all ]; then
  python3 bench/observe.py --orbitd "$CARGO_TARGET_DIR/release/orbitd" \
    --bench "$CARGO_TARGET_DIR/release/orbit-bench" "$@"
fi
