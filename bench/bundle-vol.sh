#!/usr/bin/env bash
# bench/bundle-vol.sh: bundle-vol of a debootstrap minbase root against the
# ec2-bundle-vol method (rsync into a loop-mounted image, then the reference
# tar | gzip -9 | openssl pipeline and split into 10 MiB parts). One run of each;
# prints wall time and peak scratch bytes (allocated bytes in the scratch and output
# directories, sampled every 0.2 s; both include the finished parts, which the Packer
# plugin streams to S3 instead of writing). Run as root from the repository root.
#
#   bench/bundle-vol.sh            # caches the minbase tarball in $CACHE
#   CACHE=/var/cache/instancestore-test MIRROR=http://deb.debian.org/debian bench/bundle-vol.sh
set -euo pipefail
[ "$(id -u)" -eq 0 ] || { echo "bundle-vol.sh: run as root (loop devices, mounts)" >&2; exit 1; }
cd "$(dirname "$0")/.."
CACHE=${CACHE:-/var/cache/instancestore-test}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
SUITE=${SUITE:-bookworm}
SIZE_MIB=${SIZE_MIB:-2048}
mkdir -p "$CACHE"
TARBALL=$CACHE/debootstrap-$SUITE-minbase.tar
W=$(mktemp -d /var/tmp/bench-bundle-vol.XXXXXX)
SRC=$W/src MNT=$W/mnt
cleanup() {
	set +e
	[ -n "${SAMPLER:-}" ] && kill "$SAMPLER" 2>/dev/null
	mountpoint -q "$MNT" && umount "$MNT"
	mountpoint -q "$SRC" && umount "$SRC"
	[ -n "${SRCLOOP:-}" ] && losetup -d "$SRCLOOP" 2>/dev/null
	rm -rf "$W"
}
trap cleanup EXIT

if [ ! -s "$TARBALL" ]; then
	echo "debootstrap --variant=minbase $SUITE (cached as $TARBALL)" >&2
	debootstrap --variant=minbase "$SUITE" "$W/root" "$MIRROR" >"$W/debootstrap.log" 2>&1 ||
		{ tail -20 "$W/debootstrap.log" >&2; exit 1; }
	tar --xattrs --acls -C "$W/root" -cf "$TARBALL.tmp" . && mv "$TARBALL.tmp" "$TARBALL"
	rm -rf "$W/root"
fi

# The source volume: a loop-mounted ext4 holding the minbase root.
truncate -s ${SIZE_MIB}M "$W/src.fs"
mkfs.ext4 -q -L bench-root "$W/src.fs"
mkdir -p "$SRC" "$MNT"
SRCLOOP=$(losetup -f --show "$W/src.fs")
mount "$SRCLOOP" "$SRC"
tar --xattrs --acls -C "$SRC" -xpf "$TARBALL"
USED=$(df -B1 --output=used "$SRC" | tail -1)
FILES=$(find "$SRC" -xdev | wc -l)

go build -o "$W/instancestore-bundler" ./cmd/instancestore-bundler

# peak DIR... : samples allocated bytes under the directories until killed.
sample() {
	local out=$1; shift; local peak=0 cur
	while true; do
		cur=$(du -s -B1 "$@" 2>/dev/null | awk '{s+=$1} END {print s+0}')
		[ "$cur" -gt "$peak" ] && peak=$cur && echo "$peak" >"$out"
		sleep 0.2
	done
}
now() { date +%s.%N; }
mib() { awk -v b="$1" 'BEGIN {printf "%.1f MiB", b/1048576}'; }

# A: instancestore-bundler bundle-vol
mkdir -p "$W/a-scratch" "$W/a-out"; echo 0 >"$W/a-peak"
sample "$W/a-peak" "$W/a-scratch" "$W/a-out" & SAMPLER=$!
t0=$(now)
"$W/instancestore-bundler" bundle-vol -u 111122223333 --volume "$SRC" --scratch "$W/a-scratch" \
	-d "$W/a-out" -p bench >"$W/a.log" 2>&1 || { cat "$W/a.log" >&2; exit 1; }
t1=$(now); sleep 0.3; kill $SAMPLER; SAMPLER=
A_TIME=$(awk -v a="$t0" -v b="$t1" 'BEGIN {print b-a}'); A_PEAK=$(cat "$W/a-peak"); A_OUT=$(du -s -B1 "$W/a-out" | cut -f1)
ls "$W"/a-out/bench.part.* "$W"/a-out/bench.manifest.xml >/dev/null || { echo "bundle-vol.sh: bundle-vol made no bundle" >&2; exit 1; }

# B: the ec2-bundle-vol method
mkdir -p "$W/b-scratch"; echo 0 >"$W/b-peak"
sample "$W/b-peak" "$W/b-scratch" & SAMPLER=$!
KEY=$(openssl rand -hex 16) IV=$(openssl rand -hex 16)
UUID=$(blkid -s UUID -o value "$SRCLOOP" 2>/dev/null || tune2fs -l "$SRCLOOP" | awk '/UUID/ {print $3}')
t0=$(now)
IMG=$W/b-scratch/image
truncate -s $(blockdev --getsize64 "$SRCLOOP") "$IMG"
mkfs.ext4 -q -F -L bench-root -U "$UUID" "$IMG"
mount -o loop "$IMG" "$MNT"
rsync -rlpgoD -t -S -X --exclude=/proc/* --exclude=/sys/* --exclude=/dev/* "$SRC"/ "$MNT"/
umount "$MNT"
cd "$W/b-scratch"
tar -c -S --format=gnu -f - image | tee >(openssl sha1 >digest) | gzip -9 |
	openssl enc -e -aes-128-cbc -K "$KEY" -iv "$IV" >image.tar.gz.enc
split -b 10485760 -a 2 -d image.tar.gz.enc image.part.
cd - >/dev/null
ls "$W"/b-scratch/image.part.* >/dev/null || { echo "bundle-vol.sh: the ec2-bundle-vol pipeline made no parts" >&2; exit 1; }
t1=$(now); sleep 0.3; kill $SAMPLER; SAMPLER=
B_TIME=$(awk -v a="$t0" -v b="$t1" 'BEGIN {print b-a}'); B_PEAK=$(cat "$W/b-peak")
B_OUT=$(du -s -B1 -c "$W"/b-scratch/image.part.* | tail -1 | cut -f1)

echo "source: debootstrap --variant=minbase $SUITE, $FILES entries, $(mib "$USED") used, ${SIZE_MIB} MiB ext4"
printf "%-34s %10s %16s %14s\n" method "wall (s)" "peak scratch" "bundle size"
printf "%-34s %10.1f %16s %14s\n" "instancestore-bundler bundle-vol" "$A_TIME" "$(mib "$A_PEAK")" "$(mib "$A_OUT")"
printf "%-34s %10.1f %16s %14s\n" "ec2-bundle-vol method (rsync+gzip -9)" "$B_TIME" "$(mib "$B_PEAK")" "$(mib "$B_OUT")"
