#!/usr/bin/env bash
# The whole test suite: what `.ci/run` runs after the lints, and what a
# developer runs before pushing. Extra arguments go to `cargo test`.
#
# Services, each started or installed here and proven to answer before any
# test runs; one that cannot start fails the run here, loudly (no test is
# skipped for a missing service):
# - PostgreSQL on 127.0.0.1:5432 (started if down; each test makes and drops
#   its own database);
# - the Kafka-protocol broker tansu 0.6.0 (crates.io, installed into
#   ~/.cargo/bin if missing: a build of about 13 minutes once); each test that
#   needs one starts its own on a free port, so it can kill and restart it;
# - the S3 store Garage 2.5.0 (crates.io, installed the same way: about 10
#   minutes once); each test binary shares one node it starts itself, and the
#   tests that kill nodes start their own (DRIFTLESS_TEST_S3=s3s-fs runs the
#   suites on the in-process s3s-fs instead). The embedded mode's tests use
#   the in-process s3s-fs, as the product does;
# - Python's blake3 and zstandard, for the outside client of tests/protocol.
set -euo pipefail
cd "$(dirname "$0")/.."

pg_url="${DRIFTLESS_TEST_PG:-postgres://postgres@127.0.0.1:5432}"
pg_ready() { pg_isready -q -d "$pg_url/postgres" 2>/dev/null; }
if ! pg_ready; then
  echo "PostgreSQL is not answering at $pg_url; starting it" >&2
  if ls /etc/postgresql >/dev/null 2>&1; then
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start || true
  fi
  for _ in $(seq 1 30); do pg_ready && break; sleep 1; done
  pg_ready || { echo "FATAL: PostgreSQL is not available at $pg_url" >&2; exit 1; }
fi

tansu_version=0.6.0
if ! tansu --version 2>/dev/null | grep -q "$tansu_version"; then
  echo "installing the Kafka-protocol broker tansu $tansu_version (cargo install, once)" >&2
  cargo install "tansu@$tansu_version" --locked --features libsql ||
    { echo "FATAL: could not install tansu" >&2; exit 1; }
fi
# Prove it starts and answers before any test relies on it.
probe_dir=$(mktemp -d)
probe_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
(cd "$probe_dir" && exec tansu broker --listener-url "tcp://127.0.0.1:$probe_port" \
  --advertised-listener-url "tcp://127.0.0.1:$probe_port" --storage-engine sqlite://tansu.db \
  >broker.log 2>&1) &
probe_pid=$!
for _ in $(seq 1 100); do (echo >"/dev/tcp/127.0.0.1/$probe_port") 2>/dev/null && break; sleep 0.1; done
if ! (echo >"/dev/tcp/127.0.0.1/$probe_port") 2>/dev/null; then
  cat "$probe_dir/broker.log" >&2
  echo "FATAL: the tansu broker does not start" >&2; exit 1
fi
kill "$probe_pid"; wait "$probe_pid" 2>/dev/null || true; rm -rf "$probe_dir"

garage_version=2.5.0
if ! garage --version 2>/dev/null | grep -q "$garage_version"; then
  echo "installing the S3 store Garage $garage_version (cargo install, once: about 15 minutes)" >&2
  # Only what the tests use: the S3 and admin APIs on SQLite metadata (no LMDB,
  # K2V or Prometheus metrics, which cost build time and nothing here).
  cargo install "garage@$garage_version" --locked --no-default-features --features bundled-libs,sqlite ||
    { echo "FATAL: could not install Garage" >&2; exit 1; }
fi
# Prove a node starts and answers, as the test fixtures start it.
probe_dir=$(mktemp -d)
free() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
cat >"$probe_dir/garage.toml" <<TOML
metadata_dir = "$probe_dir/meta"
data_dir = "$probe_dir/data"
db_engine = "sqlite"
replication_factor = 1
rpc_bind_addr = "127.0.0.1:$(free)"
rpc_secret = "$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')"
[s3_api]
s3_region = "garage"
api_bind_addr = "127.0.0.1:$(free)"
root_domain = ".s3.garage.localhost"
TOML
garage -c "$probe_dir/garage.toml" server >"$probe_dir/garage.log" 2>&1 &
probe_pid=$!
for _ in $(seq 1 100); do garage -c "$probe_dir/garage.toml" node id -q >/dev/null 2>&1 && break; sleep 0.2; done
if ! garage -c "$probe_dir/garage.toml" node id -q >/dev/null 2>&1; then
  cat "$probe_dir/garage.log" >&2
  echo "FATAL: Garage does not start" >&2; exit 1
fi
kill "$probe_pid"; wait "$probe_pid" 2>/dev/null || true; rm -rf "$probe_dir"

# The outside client (tests/outside/client.py, written from PROTOCOL.md)
# needs BLAKE3 and zstd from PyPI.
if ! python3 -c 'import blake3, zstandard' 2>/dev/null; then
  echo "installing blake3 and zstandard for the outside client (pip, once)" >&2
  python3 -m pip install -q "blake3==1.0.11" "zstandard==0.25.0" ||
    { echo "FATAL: could not install the outside client's Python packages" >&2; exit 1; }
fi

echo "services ready after ${SECONDS}s" >&2

log=$(mktemp)
trap 'rm -f "$log"' EXIT

# Every test binary runs even after a failure, so one run shows them all.
cargo test --workspace --locked --no-fail-fast "$@" 2>&1 | tee "$log"

# One total over every test binary and the doctests, as the last line.
awk '/^test result:/ { p += $4; f += $6; i += $8 }
     END { printf "tests: %d passed, %d failed, %d skipped\n", p, f, i }' "$log"
