#!/usr/bin/env bash
# Starts a driftless server with the embedded defaults (SQLite metadata, an
# in-process S3 endpoint and event bus, all under ./driftless-data) and keeps
# DIR in sync with it. The first run creates USER (default alice) with a
# random password kept in driftless-data/USER.password (mode 0600), which a
# second device uses to sign in. Ctrl-C stops the daemon and the server.
#   scripts/start.sh ~/Driftless
set -euo pipefail
dir=${1:?usage: scripts/start.sh DIR [USER]}
user=${2:-alice}
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
cd "$(dirname "$0")/.."
cargo build --release -q -p driftless-api -p driftless-daemon --bins
bin=target/release
mkdir -p driftless-data
pwfile=driftless-data/$user.password
if [ ! -s "$pwfile" ]; then
  (umask 077; head -c 18 /dev/urandom | base64 >"$pwfile")
  "$bin/driftless-server" create-user "$user" --password-stdin <"$pwfile" >/dev/null
  echo "created user $user (password in $pwfile)" >&2
fi
"$bin/driftless-server" &
server=$!
trap 'kill "$server" 2>/dev/null; wait "$server" 2>/dev/null' EXIT
for _ in $(seq 1 100); do
  curl -fsS http://127.0.0.1:8440/healthz >/dev/null 2>&1 && break
  kill -0 "$server" 2>/dev/null || { echo "FATAL: the server did not start" >&2; exit 1; }
  sleep 0.1
done
"$bin/driftless" login --server http://127.0.0.1:8440 --user "$user" --password-stdin \
  --device "$(hostname)" <"$pwfile"
"$bin/driftless" sync "$dir"
