#!/usr/bin/env bash
# Run every fuzz target for a bounded time (default 30 s each); fail on any crash.
# The seed is fixed (FUZZ_SEED to change it) so that CI explores the same inputs run to run.
# cargo-fuzz needs nightly features; RUSTC_BOOTSTRAP lets the stable toolchain provide them.
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-30}"
command -v cargo-fuzz >/dev/null || cargo install --locked cargo-fuzz
export RUSTC_BOOTSTRAP=1
tdir="${FUZZ_TARGET_DIR:-$HOME/.cache/orbit-fuzz-target}"
cargo fuzz build -s none --target-dir "$tdir"
for t in parse_message edge_request sdp dialog_info; do
  corpus="fuzz/corpus/$t"
  mkdir -p "$corpus"
  # Seed with the RFC 4475 torture messages.
  cp -n crates/sip/tests/torture/*.sip crates/sip/tests/fuzz-regressions/* "$corpus"/ 2>/dev/null || true
  log=$(mktemp)
  if cargo fuzz run -s none --target-dir "$tdir" "$t" -- -seed="${FUZZ_SEED:-1}" -max_total_time="$secs" -rss_limit_mb=2048 -print_final_stats=1 >"$log" 2>&1; then
    echo "fuzz $t: ok, $(grep -Eo 'stat::number_of_executed_units: [0-9]+' "$log" | grep -Eo '[0-9]+' || echo '?') runs in ${secs}s"
  else
    tail -40 "$log" >&2
    echo "fuzz $t: FAILED (artifact in fuzz/artifacts/$t)" >&2
    exit 1
  fi
done
