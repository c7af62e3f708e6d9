#!/usr/bin/env bash
# The whole test suite: what `.ci/run` runs after the lints, and what a
# developer runs before pushing. Extra arguments go to `cargo test`.
#
# As the server, events and daemon land, this script also installs and starts
# the services their integration tests need (PostgreSQL is already running on
# this machine kind; tansu and s3s-fs come from crates.io) and fails loudly if
# one cannot start.
set -euo pipefail
cd "$(dirname "$0")/.."

log=$(mktemp)
trap 'rm -f "$log"' EXIT

cargo test --workspace --locked "$@" 2>&1 | tee "$log"

# One total over every test binary and the doctests, as the last line.
awk '/^test result:/ { p += $4; f += $6; i += $8 }
     END { printf "tests: %d passed, %d failed, %d skipped\n", p, f, i }' "$log"
