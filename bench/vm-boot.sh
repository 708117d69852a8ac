#!/usr/bin/env bash
# The local environment's VM figures (as root), one VM at a time:
#
#   sudo bench/vm-boot.sh              # warm up (cached root tarball and seed images)
#                                        and boot to SSH of every base AMI
#   sudo COLD=1 bench/vm-boot.sh       # also a cold up first, in a fresh cache directory
#                                        (debootstrap, apt, the seed images: long)
#   sudo DEMO=1 bench/vm-boot.sh       # also `make demo`'s wall time, split into up,
#                                        launch, provision, bundle, register, cleanup
#                                        and relaunch (scripts/demo-build.sh)
#   AMIS="pv hvm-gpt" ...              # only these base AMIs (default: pv hvm-mbr
#                                        hvm-gpt ebs)
#
# Each base AMI is launched once (m3.medium; the EBS-backed one on m5.large, a Nitro
# type, as it boots from NVMe), with a new key pair. For each it prints the
# simulator's pending -> running time (RunInstances until sshd's banner, from the
# environment's log), the wall time until the first SSH command ran as admin
# (cloud-init has installed the key pair's key by then), and the guest's own uptime
# at that moment (kernel start to SSH). The accelerator the launcher chose (and why)
# is printed from the log. It prints figures and the load (uptime) and asserts
# nothing.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
if [ "$(id -u)" -ne 0 ]; then
	echo "vm-boot.sh: needs root (network namespaces, qemu): run it with sudo" >&2
	exit 1
fi
go build -o bin/instancestore-localenv ./cmd/instancestore-localenv
go build -o bin/instancestore-launch ./example/local/launch

work="$(mktemp -d /tmp/instancestore-vmboot.XXXXXX)"
envdir="$work/env"
cleanup() {
	bin/instancestore-localenv down --dir "$envdir" >/dev/null 2>&1 || true
	rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

ms() { date +%s%3N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", (b - a) / 1000 }'; }

load() { echo "load $(cut -d' ' -f1-3 /proc/loadavg)"; }
up() { # up LABEL: brings the environment up in $envdir, prints the time
	local t0 t1
	t0=$(ms)
	if ! bin/instancestore-localenv up --dir "$envdir" --machines vm >"$work/vars" 2>"$work/up.err"; then
		cat "$work/up.err" >&2
		exit 1
	fi
	t1=$(ms)
	printf '%-28s %7ss   (%s)\n' "up ($1)" "$(secs "$t0" "$t1")" "$(load)"
}

echo "== instancestore-localenv up --machines vm ($(nproc) cores, $(load))"
uptime
if [ "${COLD:-}" = 1 ]; then
	cache="$work/cache"
	mkdir -p "$cache"
	INSTANCESTORE_TEST_CACHE="$cache" up "cold: empty cache"
	bin/instancestore-localenv down --dir "$envdir" >/dev/null
	INSTANCESTORE_TEST_CACHE="$cache" up "warm"
else
	up "warm"
fi
eval "$(cat "$work/vars")"

echo "== boot to SSH per base AMI, one VM at a time"
printf '%-46s %10s %10s %10s\n' "base AMI" "running" "first SSH" "guest up"
for kind in ${AMIS:-pv hvm-mbr hvm-gpt ebs}; do
	itype=m3.medium
	case "$kind" in
	pv) ami="$INSTANCESTORE_SOURCE_AMI" ;;
	hvm-mbr) ami="$INSTANCESTORE_SOURCE_AMI_HVM" ;;
	hvm-gpt) ami="$INSTANCESTORE_SOURCE_AMI_HVM_GPT" ;;
	ebs) ami="$INSTANCESTORE_SOURCE_AMI_EBS" itype=m5.large ;;
	*)
		echo "vm-boot.sh: unknown base AMI kind $kind in AMIS (want pv hvm-mbr hvm-gpt ebs)" >&2
		exit 2
		;;
	esac
	name="instancestore-debian-12-$kind ($itype)"
	t0=$(ms)
	# The command's output comes once SSH works; the launch tool terminates the
	# instance after it, so the first SSH time is taken when the output arrives.
	if ! out="$(bin/instancestore-launch -ami "$ami" -instance-type "$itype" -timeout 15m -- 'cut -d" " -f1 /proc/uptime' 2>"$work/launch.err" |
		while read -r line; do echo "$line $(ms)"; done)" || [ -z "$out" ]; then
		echo "$name: launch failed:" >&2
		cat "$work/launch.err" >&2
		continue
	fi
	read -r uptime t1 <<<"$out"
	id="$(sed -n 's/^launch: instance \(i-[0-9a-f]*\) .*/\1/p' "$work/launch.err")"
	running="$(grep -o "ec2sim: $id running at [^ ]* (ssh up after [^)]*)" "$envdir/localenv.log" | sed 's/.*ssh up after \(.*\))/\1/' || true)"
	printf '%-46s %10s %9ss %9ss   (%s)\n' "$name" "${running:-?}" "$(secs "$t0" "$t1")" "$uptime" "$(load)"
done
grep -m1 -o 'localenv: [^ ]*.*using \(TCG\|KVM\).*' "$envdir/localenv.log" || true
bin/instancestore-localenv down --dir "$envdir" >/dev/null

if [ "${DEMO:-}" = 1 ]; then
	scripts/build-tools.sh >/dev/null # "tools cached": the demo's own call is then a check
	echo "== make demo (scripts/demo-build.sh), $(load)"
	t0=$(ms)
	if ! scripts/demo-build.sh >"$work/demo.out" 2>&1; then
		tail -40 "$work/demo.out" >&2
		echo "vm-boot.sh: the demo failed" >&2
		exit 1
	fi
	t1=$(ms)
	sed -n '/==> Wall time/,/^  total /p' "$work/demo.out" | sed 's/\x1b\[[0-9;]*m//g'
	printf '  %-10s %6ss wall of scripts/demo-build.sh (tools cached), %s\n' "make demo" "$(secs "$t0" "$t1")" "$(load)"
fi
uptime
