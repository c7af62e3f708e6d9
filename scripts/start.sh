#!/usr/bin/env bash
# Starts a driftless server with the embedded defaults (SQLite metadata, an
# in-process S3 endpoint and event bus, all under ./driftless-data) and keeps
# DIR in sync with it. The first run creates USER (default alice) with a
# random password kept in driftless-data/USER.password (mode 0600), which a
# second device uses to sign in. Ctrl-C stops the daemon and the server.
#   scripts/start.sh ~/Driftless
#
# The server's addresses and data folder follow its own settings
# (DRIFTLESS_LISTEN, DRIFTLESS_EMBEDDED_S3_LISTEN, DRIFTLESS_DATA_DIR), the
# device's config folder DRIFTLESS_CONFIG_DIR. DRIFTLESS_BIN_DIR names a
# folder of already built binaries (the tests use it) instead of building.
#
# The device signs in only to the server this script started: the addresses
# must be free before it starts, and it must say it is up (its own log line,
# from its own process) before anything talks to it. Another program on the
# port is an error, never a server to sign in to.
set -euo pipefail
dir=${1:?usage: scripts/start.sh DIR [USER]}
user=${2:-alice}
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
cd "$(dirname "$0")/.."

listen=${DRIFTLESS_LISTEN:-127.0.0.1:8440}
s3_listen=${DRIFTLESS_EMBEDDED_S3_LISTEN:-127.0.0.1:8441}
data=${DRIFTLESS_DATA_DIR:-$PWD/driftless-data}
mkdir -p "$data"
data=$(cd "$data" && pwd)
export DRIFTLESS_LISTEN=$listen DRIFTLESS_EMBEDDED_S3_LISTEN=$s3_listen DRIFTLESS_DATA_DIR=$data

if [ -n "${DRIFTLESS_BIN_DIR:-}" ]; then
  bin=$DRIFTLESS_BIN_DIR
else
  if [ ! -x target/release/driftless-server ] || [ ! -x target/release/driftless ]; then
    echo "building driftless (release). The first build compiles about 450 crates:" \
      "roughly 30 minutes on 2 cores, a few on 8; later runs take seconds." >&2
  fi
  # Not quiet: cargo shows each crate and a progress bar while it builds.
  cargo build --release -p driftless-api -p driftless-daemon --bins
  bin=target/release
fi

# Nothing may answer on our addresses yet: whatever does is not our server.
answers() { (exec 3<>"/dev/tcp/${1%:*}/${1##*:}") 2>/dev/null; }
busy=("$listen")
[ -z "${DRIFTLESS_S3_ENDPOINT:-}" ] && busy+=("$s3_listen")
for addr in "${busy[@]}"; do
  if answers "$addr"; then
    echo "FATAL: $addr is already in use by another program (another driftless-server?)." >&2
    echo "Stop it, or choose other addresses with DRIFTLESS_LISTEN and DRIFTLESS_EMBEDDED_S3_LISTEN." >&2
    exit 1
  fi
done

pwfile=$data/$user.password
if [ ! -s "$pwfile" ]; then
  (umask 077; head -c 18 /dev/urandom | base64 >"$pwfile")
  "$bin/driftless-server" create-user "$user" --password-stdin <"$pwfile" >/dev/null
  echo "created user $user (password in $pwfile)" >&2
fi

log=$data/server.log
[ -f "$log" ] && mv -f "$log" "$log.1"
# The readiness line below is logged at info by the server itself.
RUST_LOG=${RUST_LOG:-info} "$bin/driftless-server" >"$log" 2>&1 &
server=$!
trap 'kill "$server" 2>/dev/null; wait "$server" 2>/dev/null' EXIT
echo "server starting (log: $log)" >&2
up=
for _ in $(seq 1 600); do
  if ! kill -0 "$server" 2>/dev/null; then
    tail -n 20 "$log" >&2
    echo "FATAL: the server did not start (log: $log)" >&2
    exit 1
  fi
  if grep -q "driftless server up" "$log"; then up=1; break; fi
  sleep 0.1
done
if [ -z "$up" ]; then
  tail -n 20 "$log" >&2
  echo "FATAL: the server did not say it is up within 60 s (log: $log; RUST_LOG=$RUST_LOG must include info)" >&2
  exit 1
fi
host=${listen%:*}
case "$host" in 0.0.0.0 | "[::]") host=127.0.0.1 ;; esac
url="http://$host:${listen##*:}"
curl -fsS --max-time 5 "$url/healthz" >/dev/null ||
  { echo "FATAL: the server logged it is up but $url/healthz does not answer" >&2; exit 1; }
kill -0 "$server" 2>/dev/null ||
  { echo "FATAL: the server stopped right after starting (log: $log)" >&2; exit 1; }
echo "server up at $url" >&2

"$bin/driftless" login --server "$url" --user "$user" --password-stdin \
  --device "$(hostname)" <"$pwfile"
"$bin/driftless" sync "$dir"
