#!/usr/bin/env bash
# Event-stream figures (api/benches/events.rs), each next to a baseline
# measured in the same run: commit -> long-poll wake latency through Kafka
# vs polling the journal every second; idle long-polls held by one server
# process vs its idle memory; a reconnect storm vs one device alone.
# Needs PostgreSQL and tansu (scripts/test.sh provides both). Figures go in
# BENCHMARKS.md.
#   scripts/bench-events.sh
#   DRIFTLESS_BENCH_COMMITS=300 DRIFTLESS_BENCH_POLLS=2000 DRIFTLESS_BENCH_DEVICES=200 scripts/bench-events.sh
set -euo pipefail
cd "$(dirname "$0")/.."
pg_isready -q -h 127.0.0.1 -p 5432 || {
  echo "PostgreSQL is not running on 127.0.0.1:5432 (scripts/test.sh starts it)" >&2
  exit 1
}
command -v tansu >/dev/null || {
  echo "tansu is not installed (scripts/test.sh installs it)" >&2
  exit 1
}
# 10,000 held long-polls need 10,000 sockets in this process and the server's.
ulimit -n 32768 2>/dev/null || ulimit -n "$(ulimit -Hn)"
cargo bench -q -p driftless-api --bench events
