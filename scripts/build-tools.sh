#!/usr/bin/env bash
# Builds the pinned Packer (v1.11.2) and packer-sdc (v0.6.4) from tools/packer into bin/.
# A build is skipped when bin/ already holds binaries made from the same tools/packer
# go.mod/go.sum with the same Go toolchain (recorded in bin/.tools-stamp), so tests and
# `make demo` can call this every time. Packer takes a few minutes to build the first time.
#
#   scripts/build-tools.sh            build what is missing or stale
#   scripts/build-tools.sh --force    rebuild both
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
bin="${BIN:-$root/bin}"
mkdir -p "$bin"

stamp="$bin/.tools-stamp"
want="$(cat "$root/tools/packer/go.mod" "$root/tools/packer/go.sum" | sha256sum | cut -d' ' -f1) $(go env GOVERSION)"

if [ "${1:-}" != "--force" ] && [ -x "$bin/packer" ] && [ -x "$bin/packer-sdc" ] &&
	[ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
	exit 0
fi

# A lock so that parallel test packages (and a demo) never build into bin/ at once.
exec 9>"$bin/.tools-lock"
flock 9
if [ "${1:-}" != "--force" ] && [ -x "$bin/packer" ] && [ -x "$bin/packer-sdc" ] &&
	[ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
	exit 0
fi

cd "$root/tools/packer"
export CGO_ENABLED=0
echo "build-tools: building packer v1.11.2 (takes a few minutes the first time)" >&2
go build -trimpath -o "$bin/packer.tmp" github.com/hashicorp/packer
echo "build-tools: building packer-sdc v0.6.4" >&2
go build -trimpath -o "$bin/packer-sdc.tmp" github.com/hashicorp/packer-plugin-sdk/cmd/packer-sdc
mv "$bin/packer.tmp" "$bin/packer"
mv "$bin/packer-sdc.tmp" "$bin/packer-sdc"
echo "$want" >"$stamp"
