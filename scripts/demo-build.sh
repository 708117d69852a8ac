#!/usr/bin/env bash
# The end-to-end demo (`make demo`, as root): builds the pinned Packer and the plugin,
# brings up the local EC2 + S3 environment with VM machines (every instance is a qemu
# guest that boots its AMI as EC2 does; the base AMI is a Debian 12 image with
# cloud-init), runs `packer build` of example/local (the source VM boots, is
# provisioned and bundled live), boots the new AMI in a VM and shows its kernel, its
# root device and the file the template's provisioner wrote, prints the artifact id and
# the wall time of each phase, and takes the environment down again, also when
# something fails. INSTANCESTORE_DEMO_MACHINES=namespace runs it on the fast namespace
# instances instead (nothing boots there).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
if [ "$(id -u)" -ne 0 ]; then
	echo "demo: needs root (the local environment's instances are qemu VMs in network namespaces): run sudo make demo" >&2
	exit 1
fi

step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }
machines="${INSTANCESTORE_DEMO_MACHINES:-vm}"
now() { date +%s; }

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

step "Bringing up the local EC2 + S3 environment ($machines machines)"
t_up=$(now)
eval "$(bin/instancestore-localenv up --dir "$envdir" --machines "$machines")"
t_up_done=$(now)
echo "EC2 endpoint $AWS_ENDPOINT_URL_EC2, S3 endpoint $AWS_ENDPOINT_URL_S3, source AMI $INSTANCESTORE_SOURCE_AMI"

step "packer build example/local"
(cd example/local && "$root/bin/packer" init . >/dev/null)
t_build=$(now)
# -timestamp-ui stamps every line: the phases below are read from them.
# tee ignores Ctrl-C, so packer's cleanup messages after one still show.
(cd example/local && "$root/bin/packer" build -color=false -timestamp-ui -var "output_dir=$work" .) |
	(trap '' INT && exec tee "$work/build.out")
t_build_done=$(now)

artifact="$(sed -n 's/.*"artifact_id": *"\([^"]*\)".*/\1/p' "$work/packer-manifest.json" | tail -1)"
ami="${artifact#*:}"
if [ -z "$ami" ]; then
	echo "demo: no artifact id in $work/packer-manifest.json" >&2
	exit 1
fi

step "Booting the new AMI $ami and looking inside"
t_relaunch=$(now)
bin/instancestore-launch -ami "$ami" -timeout 15m -- \
	'echo "uname -r:   $(uname -r)"; echo "findmnt /:  $(findmnt -n -o SOURCE,FSTYPE,OPTIONS /)"; echo "demo.txt:   $(cat /etc/instancestore/demo.txt)"'
t_relaunch_done=$(now)

step "Artifact"
echo "artifact id: $artifact"

# at MARKER: the epoch second of the first line of packer's output containing MARKER
# (empty when there is none).
at() {
	local ts
	ts="$(grep -m1 -F -- "$1" "$work/build.out" | sed -n 's/^\([0-9]\{4\}-[0-9T:+-]*Z\{0,1\}\): .*/\1/p')"
	[ -n "$ts" ] && date -d "$ts" +%s
}
span() { # span NAME FROM TO
	if [ -n "$2" ] && [ -n "$3" ]; then printf '  %-10s %4ss\n' "$1" "$(($3 - $2))"; else printf '  %-10s    ?\n' "$1"; fi
}
t_launch=$(at "Launching a source AWS instance" || true)
t_prov=$(at "Provisioning with shell script" || true)
t_bundle=$(at "Bundling the root volume as" || true)
t_register=$(at "Registering AMI" || true)
t_terminate=$(at "Terminating the source AWS instance" || true)
step "Wall time ($machines machines, $(nproc) cores)"
span up "$t_up" "$t_up_done"
span launch "$t_launch" "$t_prov"
span provision "$t_prov" "$t_bundle"
span bundle "$t_bundle" "$t_register"
span register "$t_register" "$t_terminate"
span cleanup "$t_terminate" "$t_build_done"
span relaunch "$t_relaunch" "$t_relaunch_done"
printf '  %-10s %4ss (packer build %ss)\n' total "$((t_relaunch_done - t_up))" "$((t_build_done - t_build))"
