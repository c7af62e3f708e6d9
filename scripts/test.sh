#!/usr/bin/env bash
# The whole test suite: what `.ci/run` runs after the lints, and what a
# developer runs before pushing. Extra arguments go to `cargo test`.
#
# Services: PostgreSQL on 127.0.0.1:5432 (started here if it is down; each test
# makes and drops its own database). The S3 server with SigV4 is s3s-fs, which
# the tests start in process on a free port (or set DRIFTLESS_TEST_S3_ENDPOINT,
# _ACCESS_KEY and _SECRET_KEY to use another). A service that cannot start
# fails the run here, loudly; no test is skipped for a missing service.
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

log=$(mktemp)
trap 'rm -f "$log"' EXIT

cargo test --workspace --locked "$@" 2>&1 | tee "$log"

# One total over every test binary and the doctests, as the last line.
awk '/^test result:/ { p += $4; f += $6; i += $8 }
     END { printf "tests: %d passed, %d failed, %d skipped\n", p, f, i }' "$log"
