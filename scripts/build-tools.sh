#!/usr/bin/env bash
# Builds the pinned tools into bin/:
#   packer v1.11.2 and packer-sdc v0.6.4   (tools/packer)     always
#   goreleaser v2.15.1                      (tools/goreleaser) with the argument goreleaser
# A tool set is skipped when bin/ already holds binaries made from the same go.mod/go.sum
# with the same Go toolchain (recorded in bin/.<set>-stamp), so tests and `make demo`
# can call this every time. Packer takes a few minutes to build the first time.
#
#   scripts/build-tools.sh [--force] [goreleaser]
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
bin="${BIN:-$root/bin}"
mkdir -p "$bin"
force=""
sets=(packer)
for a in "$@"; do
	case "$a" in
	--force) force=1 ;;
	goreleaser) sets+=(goreleaser) ;;
	*) echo "build-tools: unknown argument $a" >&2; exit 2 ;;
	esac
done

# binaries SET: what a set builds, as "name=package" words.
binaries() {
	case "$1" in
	packer) echo "packer=github.com/hashicorp/packer packer-sdc=github.com/hashicorp/packer-plugin-sdk/cmd/packer-sdc" ;;
	goreleaser) echo "goreleaser=github.com/goreleaser/goreleaser/v2" ;;
	esac
}

fresh() { # fresh SET WANT: are the set's binaries there and built from WANT?
	local b
	[ -z "$force" ] && [ -f "$bin/.$1-stamp" ] && [ "$(cat "$bin/.$1-stamp")" = "$2" ] || return 1
	for b in $(binaries "$1"); do
		[ -x "$bin/${b%%=*}" ] || return 1
	done
}

for set in "${sets[@]}"; do
	mod="$root/tools/$set"
	want="$(cat "$mod/go.mod" "$mod/go.sum" | sha256sum | cut -d' ' -f1) $(go env GOVERSION)"
	fresh "$set" "$want" && continue
	# A lock so that parallel test packages (and a demo) never build into bin/ at once.
	exec 9>"$bin/.$set-lock"
	flock 9
	if ! fresh "$set" "$want"; then
		for b in $(binaries "$set"); do
			echo "build-tools: building ${b%%=*} (${b#*=}, pinned in tools/$set/go.mod)" >&2
			(cd "$mod" && CGO_ENABLED=0 go build -trimpath -o "$bin/${b%%=*}.tmp" "${b#*=}")
			mv "$bin/${b%%=*}.tmp" "$bin/${b%%=*}"
		done
		echo "$want" >"$bin/.$set-stamp"
	fi
	exec 9>&-
done
