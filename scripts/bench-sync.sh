#!/usr/bin/env bash
# Sync figures (tests/benches/sync.rs): initial sync of 10,000 small files
# plus 3 x 64 MiB, and the re-sync after editing 1% of them, through the
# daemon's sync pass vs `rclone copy` (Debian's rclone, installed here if
# missing) of the same tree to the same loopback S3 server.
# Needs PostgreSQL (scripts/test.sh starts it). Figures go in BENCHMARKS.md.
#   scripts/bench-sync.sh
#   DRIFTLESS_BENCH_FILES=2000 DRIFTLESS_BENCH_LARGE_MIB=16 scripts/bench-sync.sh
set -euo pipefail
cd "$(dirname "$0")/.."
pg_isready -q -h 127.0.0.1 -p 5432 || {
  echo "PostgreSQL is not running on 127.0.0.1:5432 (scripts/test.sh starts it)" >&2
  exit 1
}
if ! command -v rclone >/dev/null; then
  echo "installing rclone (Debian package)" >&2
  apt-get install -y rclone >/dev/null || { echo "FATAL: could not install rclone" >&2; exit 1; }
fi
cargo bench -q -p driftless-tests --bench sync
