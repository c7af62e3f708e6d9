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

cargo test --workspace --locked "$@"
