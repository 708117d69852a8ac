#!/usr/bin/env bash
# The README's main job. Until the builder lands, this runs the bundler end to end on a
# small ext4 image: bundle-image -> verify -> unbundle -> compare.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-$PWD/bin}
work=$(mktemp -d /tmp/instancestore-demo.XXXXXX)
trap 'rm -rf "$work"' EXIT

echo "==> making a 64 MiB sparse ext4 image with a few files"
mkdir -p "$work/tree/etc" "$work/out" "$work/restored"
echo "built by instancestore-bundler demo on $(date -u +%FT%TZ)" > "$work/tree/etc/motd"
cp -r "$PWD/bundle" "$work/tree/src"
truncate -s 64M "$work/disk.img"
mke2fs -q -t ext4 -L demo-root -d "$work/tree" "$work/disk.img"

echo "==> bundle-image (throw-away user key: the bundle can be verified but not unbundled)"
openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=demo \
	-keyout "$work/pk.pem" -out "$work/cert.pem" 2>/dev/null
"$BIN/instancestore-bundler" bundle-image -i "$work/disk.img" -u 1234-5678-9012 -p demo \
	-d "$work/out" -c "$work/cert.pem" -k "$work/pk.pem" -r x86_64
ls -l "$work/out"

echo "==> verify"
"$BIN/instancestore-bundler" verify -m "$work/out/demo.manifest.xml" -c "$work/cert.pem" -k "$work/pk.pem"

echo "==> unbundle and compare"
"$BIN/instancestore-bundler" unbundle -m "$work/out/demo.manifest.xml" -k "$work/pk.pem" -d "$work/restored"
cmp "$work/disk.img" "$work/restored/demo" && echo "restored image is byte-identical"
