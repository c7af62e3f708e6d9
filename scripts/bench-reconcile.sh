#!/usr/bin/env bash
# Reconcile pass figures (tests/benches/reconcile.rs): one pass over
# generated metadata of 100,000 / 300,000 / 1,000,000 chunks (10 per file,
# 1,000 per pack, 100,000 per folder) on PostgreSQL with the pack objects in
# a SigV4 S3 server, against a plain read of the same metadata in the same
# run. Needs PostgreSQL (scripts/test.sh starts it). Figures go in
# BENCHMARKS.md.
#   scripts/bench-reconcile.sh
#   DRIFTLESS_BENCH_CHUNKS=1000000 scripts/bench-reconcile.sh
set -euo pipefail
cd "$(dirname "$0")/.."
pg_isready -q -h 127.0.0.1 -p 5432 || {
  echo "PostgreSQL is not running on 127.0.0.1:5432 (scripts/test.sh starts it)" >&2
  exit 1
}
cargo bench -q -p driftless-tests --bench reconcile
