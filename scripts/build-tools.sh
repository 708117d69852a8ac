#!/usr/bin/env bash
# Builds the pinned tools into bin/:
#   packer v1.11.2                          (tools/packer)     always
#   packer-sdc at go.mod's SDK version      (tools/packer-sdc) always
#   goreleaser v2.15.1                      (tools/goreleaser) with the argument goreleaser
#   packer-plugin-amazon v1.8.2             (tools/amazon)     with the argument amazon
#     (HashiCorp's amazon-ebs builder; the provisioner's amazon-ebs acceptance test)
# A tool set is skipped when bin/ already holds binaries made from the same go.mod/go.sum
# with the same Go toolchain (recorded in bin/.<set>-stamp), so tests and `make demo`
# can call this every time. Packer takes a few minutes to build the first time.
#
#   scripts/build-tools.sh [--force] [goreleaser] [amazon]
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
bin="${BIN:-$root/bin}"
mkdir -p "$bin"
force=""
sets=(packer sdc)
for a in "$@"; do
	case "$a" in
	--force) force=1 ;;
	goreleaser) sets+=(goreleaser) ;;
	amazon) sets+=(amazon) ;;
	*) echo "build-tools: unknown argument $a" >&2; exit 2 ;;
	esac
done

# binaries SET: what a set builds, as "name=package" words.
binaries() {
	case "$1" in
	packer) echo "packer=github.com/hashicorp/packer" ;;
	sdc) echo "packer-sdc=github.com/hashicorp/packer-plugin-sdk/cmd/packer-sdc" ;;
	goreleaser) echo "goreleaser=github.com/goreleaser/goreleaser/v2" ;;
	amazon) echo "packer-plugin-amazon=github.com/hashicorp/packer-plugin-amazon" ;;
	esac
}

fresh() { # fresh SET WANT: are the set's binaries there and built from WANT?
	local b
	[ -z "$force" ] && [ -f "$bin/.$1-stamp" ] && [ "$(cat "$bin/.$1-stamp")" = "$2" ] || return 1
	for b in $(binaries "$1"); do
		[ -x "$bin/${b%%=*}" ] || return 1
	done
}

# packer-sdc generates code for the SDK the plugin runs with: the two versions must agree.
sdk="$(cd "$root" && go list -m -f '{{.Version}}' github.com/hashicorp/packer-plugin-sdk)"
sdc="$(cd "$root/tools/packer-sdc" && go list -m -f '{{.Version}}' github.com/hashicorp/packer-plugin-sdk)"
if [ "$sdk" != "$sdc" ]; then
	echo "build-tools: go.mod requires packer-plugin-sdk $sdk but tools/packer-sdc/go.mod pins packer-sdc $sdc; set the same version in both (cd tools/packer-sdc && go get github.com/hashicorp/packer-plugin-sdk@$sdk && go mod tidy)" >&2
	exit 1
fi

for set in "${sets[@]}"; do
	mod="$root/tools/$set"
	[ "$set" = sdc ] && mod="$root/tools/packer-sdc"
	want="$(cat "$mod/go.mod" "$mod/go.sum" | sha256sum | cut -d' ' -f1) $(go env GOVERSION)"
	fresh "$set" "$want" && continue
	# A lock so that parallel test packages (and a demo) never build into bin/ at once.
	exec 9>"$bin/.$set-lock"
	flock 9
	if ! fresh "$set" "$want"; then
		for b in $(binaries "$set"); do
			echo "build-tools: building ${b%%=*} (${b#*=}, pinned in ${mod#$root/}/go.mod)" >&2
			(cd "$mod" && CGO_ENABLED=0 go build -trimpath -o "$bin/${b%%=*}.tmp" "${b#*=}")
			mv "$bin/${b%%=*}.tmp" "$bin/${b%%=*}"
		done
		echo "$want" >"$bin/.$set-stamp"
	fi
	exec 9>&-
done
