#!/usr/bin/env bash
# The agent's bundle step under TCG per CPU model, without booting a guest: qemu-user
# (Debian package qemu-user, the same TCG and CPU models as qemu-system 7.2) runs a
# static instancestore-bundler bundle-image of an ext4 image of a few host directories.
# Prints wall, user and system time per model and run (alternating); compare the CPU
# times on a shared machine. Asserts nothing.
#
#   bench/tcg-cpu.sh                 # CPUS="qemu64 max" RUNS=2
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
command -v qemu-x86_64 >/dev/null || { echo "tcg-cpu.sh: needs qemu-x86_64 (Debian package qemu-user)" >&2; exit 1; }
mkdir -p bin
CGO_ENABLED=0 go build -o bin/instancestore-bundler-static ./cmd/instancestore-bundler
work="$(mktemp -d /tmp/instancestore-tcgcpu.XXXXXX)"
trap 'rm -rf "$work"' EXIT
mkdir "$work/tree"
for d in /usr/lib/python3.11 /usr/share/perl /usr/share/doc; do
	[ -d "$d" ] && cp -a "$d" "$work/tree/"
done
mke2fs -q -t ext4 -d "$work/tree" "$work/img" 512M
echo "== $(du -sm "$work/tree" | cut -f1) MiB of files in a 512 MiB ext4 image; $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
for i in $(seq "${RUNS:-2}"); do
	for cpu in ${CPUS:-qemu64 max}; do
		rm -rf "$work/out" && mkdir "$work/out"
		/usr/bin/time -f "$cpu: %e s wall, %U s user, %S s sys" qemu-x86_64 -cpu "$cpu" bin/instancestore-bundler-static \
			bundle-image -i "$work/img" -u 123456789012 -d "$work/out" -p b >/dev/null 2>"$work/err" || { cat "$work/err" >&2; exit 1; }
		tail -1 "$work/err"
	done
done
rm -rf "$work/out" && mkdir "$work/out"
/usr/bin/time -f "native: %e s wall, %U s user, %S s sys" bin/instancestore-bundler-static bundle-image -i "$work/img" -u 123456789012 -d "$work/out" -p b 2>&1 >/dev/null | tail -1
echo "== load at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
