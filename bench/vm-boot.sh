#!/usr/bin/env bash
# Boot-to-SSH time of each base AMI of the VM machines, and `instancestore-localenv up
# --machines vm` time (as root):
#
#   sudo bench/vm-boot.sh              # warm up (cached root tarball and seed images)
#   sudo COLD=1 bench/vm-boot.sh       # also a cold up, in a fresh cache directory
#                                        (debootstrap, apt, three seed images: long)
#
# Each base AMI is launched once (m3.medium, a new key pair), one VM at a time. For
# each it prints the simulator's pending -> running time (RunInstances until sshd's
# banner, from the environment's log), the wall time until the first SSH command ran
# as admin (cloud-init has installed the key pair's key by then), and the guest's own
# uptime at that moment (kernel start to SSH). It prints figures and asserts nothing.
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

up() { # up LABEL: brings the environment up in $envdir, prints the time
	local t0 t1
	t0=$(ms)
	bin/instancestore-localenv up --dir "$envdir" --machines vm >"$work/vars"
	t1=$(ms)
	printf '%-28s %7ss\n' "up ($1)" "$(secs "$t0" "$t1")"
}

echo "== instancestore-localenv up --machines vm ($(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg))"
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

echo "== boot to SSH per base AMI (m3.medium, TCG unless /dev/kvm is usable)"
printf '%-34s %10s %10s %10s\n' "base AMI" "running" "first SSH" "guest up"
for spec in "instancestore-debian-12-pv:$INSTANCESTORE_SOURCE_AMI" \
	"instancestore-debian-12-hvm-mbr:$INSTANCESTORE_SOURCE_AMI_HVM" \
	"instancestore-debian-12-hvm-gpt:$INSTANCESTORE_SOURCE_AMI_HVM_GPT"; do
	name="${spec%%:*}" ami="${spec#*:}"
	t0=$(ms)
	# The command's output comes once SSH works; the launch tool terminates the
	# instance after it, so the first SSH time is taken when the output arrives.
	out="$(bin/instancestore-launch -ami "$ami" -timeout 15m -- 'cut -d" " -f1 /proc/uptime' 2>"$work/launch.err" |
		while read -r line; do echo "$line $(ms)"; done)" || {
		echo "$name: launch failed:" >&2
		cat "$work/launch.err" >&2
		continue
	}
	read -r uptime t1 <<<"$out"
	id="$(sed -n 's/^launch: instance \(i-[0-9a-f]*\) .*/\1/p' "$work/launch.err")"
	running="$(grep -o "ec2sim: $id running at [^ ]* (ssh up after [^)]*)" "$envdir/localenv.log" | sed 's/.*ssh up after \(.*\))/\1/' || true)"
	printf '%-34s %10s %9ss %9ss\n' "$name" "${running:-?}" "$(secs "$t0" "$t1")" "$uptime"
done
