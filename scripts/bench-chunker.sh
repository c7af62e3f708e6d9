#!/usr/bin/env bash
# Prints the chunker's throughput figures, each with its baseline measured in
# the same run (see chunker/benches/throughput.rs). Figures go in BENCHMARKS.md.
#   scripts/bench-chunker.sh              # 1 GiB inputs, best of 5 interleaved passes
#   DRIFTLESS_BENCH_MIB=256 scripts/bench-chunker.sh   # quicker
# Add --criterion to also run the criterion benches (64 MiB, regression tracking).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo bench -q -p driftless-chunker --bench throughput
cargo bench -q -p driftless-chunker --bench resync
if [[ "${1:-}" == "--criterion" ]]; then
  cargo bench -q -p driftless-chunker --bench chunker
fi
