#!/usr/bin/env bash
# Upload figures (tests/benches/upload.rs): a 2 GiB file through the whole
# path vs a raw aws-sdk-s3 multipart upload to the same loopback S3 server,
# the re-upload of the same file, and a 1 MiB insert into a 1 GiB file.
# Needs PostgreSQL (scripts/test.sh starts it). Figures go in BENCHMARKS.md.
#   scripts/bench-upload.sh
#   DRIFTLESS_BENCH_UPLOAD_MIB=512 DRIFTLESS_BENCH_ROUNDS=2 scripts/bench-upload.sh
set -euo pipefail
cd "$(dirname "$0")/.."
pg_isready -q -h 127.0.0.1 -p 5432 || {
  echo "PostgreSQL is not running on 127.0.0.1:5432 (scripts/test.sh starts it)" >&2
  exit 1
}
cargo bench -q -p driftless-tests --bench upload
