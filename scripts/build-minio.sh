#!/usr/bin/env bash
# Builds the pinned MinIO server (tools/minio) that the S3 tests run against, into the
# test cache ($INSTANCESTORE_TEST_CACHE, default /var/cache/instancestore-test), and
# prints its path. A build is skipped when the binary was made from the same
# tools/minio go.mod/go.sum with the same Go toolchain, so tests can call this every
# time. The first build takes about 4 minutes.
#
#   scripts/build-minio.sh            build if missing or stale, print the path
#   scripts/build-minio.sh --force    rebuild
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cache="${INSTANCESTORE_TEST_CACHE:-/var/cache/instancestore-test}"
out="$cache/minio"
stamp="$cache/minio.stamp"
mkdir -p "$cache"
want="$(cat "$root/tools/minio/go.mod" "$root/tools/minio/go.sum" | sha256sum | cut -d' ' -f1) $(go env GOVERSION)"

fresh() { [ -x "$out" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; }
if [ "${1:-}" != "--force" ] && fresh; then
	echo "$out"
	exit 0
fi
# Parallel test packages (and `make deps`) may ask at once: one builds, the others wait.
exec 9>"$cache/minio.lock"
flock 9
if [ "${1:-}" != "--force" ] && fresh; then
	echo "$out"
	exit 0
fi
echo "build-minio: building MinIO into $out (about 4 minutes the first time)" >&2
cd "$root/tools/minio"
CGO_ENABLED=0 go build -trimpath -o "$out.tmp" github.com/minio/minio
mv "$out.tmp" "$out"
echo "$want" >"$stamp"
echo "$out"
