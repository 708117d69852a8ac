#!/usr/bin/env bash
# Makes a small raw Debian-flavoured image for example/import, with no root and no
# network: a root tree (the host's /etc/os-release, a marker file) in ext4, either as
# a partitioned disk (hvm: MBR, one partition at 1 MiB) or a bare filesystem (pv).
# The result is cached: an existing OUT is kept.
#
#   make-image.sh OUT [hvm|pv]
set -euo pipefail
out="${1:?usage: make-image.sh OUT [hvm|pv]}"
kind="${2:-hvm}"
[ -s "$out" ] && exit 0
PATH="$PATH:/usr/sbin:/sbin"
for t in mke2fs sfdisk truncate; do
	command -v "$t" >/dev/null || { echo "make-image.sh: $t is missing (apt-get install e2fsprogs fdisk)" >&2; exit 1; }
done
tree="$(mktemp -d)"
trap 'rm -rf "$tree" "$out.tmp"' EXIT
mkdir -p "$tree"/{etc,root,tmp,var/log}
cp /etc/os-release "$tree/etc/os-release" 2>/dev/null || echo 'ID=debian' >"$tree/etc/os-release"
echo import-example >"$tree/etc/hostname"
echo "imported by instancestore-import" >"$tree/root/marker"
case "$kind" in
pv)
	truncate -s 64M "$out.tmp"
	mke2fs -q -F -t ext4 -L root -d "$tree" "$out.tmp"
	;;
hvm)
	truncate -s 65M "$out.tmp"
	echo 'start=2048, type=83, bootable' | sfdisk -q "$out.tmp"
	mke2fs -q -F -t ext4 -L root -E offset=1048576 -d "$tree" "$out.tmp" 64M
	;;
*)
	echo "make-image.sh: kind must be hvm or pv, not $kind" >&2
	exit 2
	;;
esac
mv "$out.tmp" "$out"
