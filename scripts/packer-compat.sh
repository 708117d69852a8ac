#!/usr/bin/env bash
# Checks the plugin with the newest Packer the Go module proxy serves here
# (tools/packer-next/go.mod): builds that Packer into bin/packer-next (once), installs
# the plugin with `packer plugins install --path` into a private plugin folder, and
# runs `packer validate` on every example template, then (as root) the local acceptance
# build with that Packer. Not part of CI (`make packer-compat`).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
bin="$root/bin"
mod="$root/tools/packer-next"
want="$(cat "$mod/go.mod" "$mod/go.sum" | sha256sum | cut -d' ' -f1) $(go env GOVERSION)"
if [ ! -x "$bin/packer-next" ] || [ "$(cat "$bin/.packer-next-stamp" 2>/dev/null)" != "$want" ]; then
	echo "packer-compat: building Packer from tools/packer-next (several minutes the first time)" >&2
	(cd "$mod" && CGO_ENABLED=0 go build -trimpath -o "$bin/packer-next" github.com/hashicorp/packer)
	echo "$want" >"$bin/.packer-next-stamp"
fi
"$bin/packer-next" version
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
export PACKER_PLUGIN_PATH="$tmp/plugins" PACKER_CONFIG_DIR="$tmp/config" AWS_REGION=us-east-1
# Dev builds report a prerelease version that required_plugins constraints refuse
# offline: install as a plain 0.1.0, as the tests do.
(cd "$root" && go build -ldflags "-X github.com/instancestore/packer-plugin-instancestore/version.VersionPrerelease=" -o "$tmp/packer-plugin-instancestore" .)
"$bin/packer-next" plugins install --path "$tmp/packer-plugin-instancestore" github.com/instancestore/instancestore
for d in "$root"/example/*/; do
	# The variables builder/instancestore/packer_test.go (exampleVars) passes.
	case "$(basename "$d")" in
	local) args=(-var region=us-east-1 -var source_ami=ami-12345678 -var s3_bucket=demo-bundles) ;;
	*) args=(-var s3_bucket=my-bundles) ;;
	esac
	(cd "$d" && "$bin/packer-next" validate "${args[@]}" .)
	echo "packer-compat: $(basename "$d") valid with $("$bin/packer-next" version | head -1)"
done

# A real build with it: the local acceptance build (packer build of a template against
# the local EC2 + S3, then a launch of the new AMI), driven by this Packer.
if [ "$(id -u)" = 0 ]; then
	(cd "$root" && INSTANCESTORE_TEST_PACKER="$bin/packer-next" PACKER_ACC=1 \
		go test -count=1 -run '^TestAcceptanceLocalBuild$' -v ./builder/instancestore | grep -E '^(=== RUN|--- |ok|FAIL|PASS)|packer-next|Packer v')
	echo "packer-compat: local packer build passed with $("$bin/packer-next" version | head -1)"
else
	echo "packer-compat: skipping the local packer build: it needs root (loop devices, network namespaces)"
fi
