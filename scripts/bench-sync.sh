#!/usr/bin/env bash
# Sync figures, every one next to its peers in the same run:
# - tests/benches/sync.rs: initial sync of 10,000 small files plus
#   3 x 64 MiB, and the re-sync after editing 1% of them, through the
#   daemon's sync pass vs `rclone copy` to the same S3 server;
# - tests/benches/small.rs: many small files (20,000 of 1-4 KiB, and a
#   4,500-file source-like tree) up and down, server on SQLite and on
#   PostgreSQL, vs `rclone copy` up and down and `restic backup`, all on
#   one Garage node.
# Installs Debian's rclone and restic if missing; needs PostgreSQL and
# Garage (scripts/test.sh starts and installs them). Figures go in
# BENCHMARKS.md.
#   scripts/bench-sync.sh                # both
#   scripts/bench-sync.sh small          # one of them
#   DRIFTLESS_BENCH_TINY=2000 DRIFTLESS_BENCH_TREE=1000 scripts/bench-sync.sh small
set -euo pipefail
cd "$(dirname "$0")/.."
pg_isready -q -h 127.0.0.1 -p 5432 || {
  echo "PostgreSQL is not running on 127.0.0.1:5432 (scripts/test.sh starts it)" >&2
  exit 1
}
for tool in rclone restic; do
  if ! command -v "$tool" >/dev/null; then
    echo "installing $tool (Debian package)" >&2
    apt-get install -y "$tool" >/dev/null || { echo "FATAL: could not install $tool" >&2; exit 1; }
  fi
done
command -v garage >/dev/null || {
  echo "FATAL: garage is not installed (scripts/test.sh installs it)" >&2
  exit 1
}
benches=("$@")
[ ${#benches[@]} -eq 0 ] && benches=(sync small)
for b in "${benches[@]}"; do
  cargo bench -q -p driftless-tests --bench "$b"
done
