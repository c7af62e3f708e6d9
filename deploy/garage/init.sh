#!/bin/sh
# Prepares a one-node Garage for driftless through Garage's admin API (v2),
# as docker-compose.yml's `garage-init` runs it (and tests/deploy checks it
# against a real Garage node): the node's role in the layout, the S3 key,
# the bucket under a global name (Garage applies a bucket's CORS rule to
# browser preflights only for a global name; driftless-server sets the rule
# itself at start from DRIFTLESS_CORS_ORIGINS), and the key's rights on it.
# Safe to run again: what exists is left as it is.
#
# Reads GARAGE_ADMIN (e.g. http://garage:3903), GARAGE_ADMIN_TOKEN,
# S3_ACCESS_KEY (GK and 24 hex digits), S3_SECRET_KEY (64 hex digits),
# S3_BUCKET, and GARAGE_CAPACITY_BYTES (default 100 GB).
# Needs only sh, curl, tr and sed.
set -eu
: "${GARAGE_ADMIN:?}" "${GARAGE_ADMIN_TOKEN:?}" "${S3_ACCESS_KEY:?}" "${S3_SECRET_KEY:?}" "${S3_BUCKET:?}"
capacity=${GARAGE_CAPACITY_BYTES:-100000000000}

# One admin call; prints the answer on one line. A refusal fails the script
# (curl -f) unless the caller tests for it.
# (curl's own status decides, so no pipe: sh has no pipefail.)
api() {
  if [ $# -ge 3 ]; then
    answer=$(curl -fsS --max-time 30 -X "$1" -H "Authorization: Bearer $GARAGE_ADMIN_TOKEN" \
      -H 'Content-Type: application/json' -d "$3" "$GARAGE_ADMIN/v2/$2") || return 1
  else
    answer=$(curl -fsS --max-time 30 -X "$1" -H "Authorization: Bearer $GARAGE_ADMIN_TOKEN" \
      "$GARAGE_ADMIN/v2/$2") || return 1
  fi
  printf '%s' "$answer" | tr -d ' \n\t'
}

# The node answers its admin API.
tries=0
until status=$(api GET GetClusterStatus 2>/dev/null); do
  tries=$((tries + 1))
  [ "$tries" -lt 60 ] || { echo "garage-init: no answer from $GARAGE_ADMIN" >&2; exit 1; }
  sleep 1
done

# A layout with this node in it.
layout=$(api GET GetClusterLayout)
version=$(printf '%s' "$layout" | sed -n 's/^{"version":\([0-9]*\).*/\1/p')
if [ "${version:-0}" = 0 ]; then
  node=$(printf '%s' "$status" | sed -n 's/.*"nodes":\[{"id":"\([0-9a-f]*\)".*/\1/p')
  [ -n "$node" ] || { echo "garage-init: no node id in $status" >&2; exit 1; }
  api POST UpdateClusterLayout \
    "{\"roles\":[{\"id\":\"$node\",\"zone\":\"dc1\",\"capacity\":$capacity,\"tags\":[]}]}" >/dev/null
  api POST ApplyClusterLayout '{"version":1}' >/dev/null
  echo "garage-init: node $node is in layout version 1"
fi

# The key driftless signs with.
if ! api GET "GetKeyInfo?id=$S3_ACCESS_KEY" >/dev/null 2>&1; then
  api POST ImportKey \
    "{\"accessKeyId\":\"$S3_ACCESS_KEY\",\"secretAccessKey\":\"$S3_SECRET_KEY\",\"name\":\"driftless\"}" >/dev/null
  echo "garage-init: key $S3_ACCESS_KEY imported"
fi

# The bucket, under its global name, and the key's rights on it.
if ! bucket=$(api GET "GetBucketInfo?globalAlias=$S3_BUCKET" 2>/dev/null); then
  bucket=$(api POST CreateBucket "{\"globalAlias\":\"$S3_BUCKET\"}")
  echo "garage-init: bucket $S3_BUCKET created"
fi
id=$(printf '%s' "$bucket" | sed -n 's/^{"id":"\([0-9a-f]*\)".*/\1/p')
[ -n "$id" ] || { echo "garage-init: no bucket id in $bucket" >&2; exit 1; }
api POST AllowBucketKey \
  "{\"bucketId\":\"$id\",\"accessKeyId\":\"$S3_ACCESS_KEY\",\"permissions\":{\"read\":true,\"write\":true,\"owner\":true}}" >/dev/null
echo "garage-init: $S3_ACCESS_KEY may read, write and own $S3_BUCKET"
