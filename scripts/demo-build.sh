#!/usr/bin/env bash
# The end-to-end demo (`make demo`, as root): builds the pinned Packer and the plugin,
# brings up the local EC2 + S3 environment, runs `packer build` of example/local,
# launches the new AMI in the simulator and shows the file the template's provisioner
# wrote, prints the artifact id, and takes the environment down again, also when
# something fails.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
if [ "$(id -u)" -ne 0 ]; then
	echo "demo: needs root (the local environment's instances are network namespaces with sshd): run sudo make demo" >&2
	exit 1
fi

step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }

step "Building packer v1.11.2 and packer-sdc (cached in bin/)"
scripts/build-tools.sh
step "Building the plugin and the local environment"
# A release version (no -dev), so that `packer init` accepts the installed plugin for
# `version = ">= 0.1.0"`.
go build -ldflags "-X github.com/instancestore/packer-plugin-instancestore/version.VersionPrerelease=" \
	-o bin/packer-plugin-instancestore .
go build -o bin/instancestore-localenv ./cmd/instancestore-localenv
go build -o bin/instancestore-launch ./example/local/launch

work="$(mktemp -d /tmp/instancestore-demo.XXXXXX)"
envdir="$work/env"
cleanup() {
	status=$?
	step "Taking the local environment down"
	bin/instancestore-localenv down --dir "$envdir" || status=1
	rm -rf "$work"
	exit $status
}
trap cleanup EXIT
trap 'exit 130' INT TERM

export PACKER_PLUGIN_PATH="$work/plugins" PACKER_CONFIG_DIR="$work/packer-config" CHECKPOINT_DISABLE=1
bin/packer plugins install --path bin/packer-plugin-instancestore github.com/instancestore/instancestore

step "Bringing up the local EC2 + S3 environment"
eval "$(bin/instancestore-localenv up --dir "$envdir")"
echo "EC2 endpoint $AWS_ENDPOINT_URL_EC2, S3 endpoint $AWS_ENDPOINT_URL_S3, source AMI $INSTANCESTORE_SOURCE_AMI"

step "packer build example/local"
(cd example/local && "$root/bin/packer" init . && "$root/bin/packer" build -color=false -var "output_dir=$work" .)

artifact="$(sed -n 's/.*"artifact_id": *"\([^"]*\)".*/\1/p' "$work/packer-manifest.json" | tail -1)"
ami="${artifact#*:}"
if [ -z "$ami" ]; then
	echo "demo: no artifact id in $work/packer-manifest.json" >&2
	exit 1
fi

step "Launching the new AMI $ami and reading the provisioned file"
bin/instancestore-launch -ami "$ami" -- cat /etc/instancestore/demo.txt

step "Artifact"
echo "artifact id: $artifact"
