#!/bin/sh
# Builds the agent binaries the plugin embeds (run by `go generate ./agent/bin` and by
# release builds before compiling the plugin): instancestore-bundler for linux/amd64 and
# linux/386, static, stripped, gzip -9.
set -eu
cd "$(dirname "$0")"
mkdir -p dist
for arch in amd64 386; do
	out="dist/instancestore-bundler-linux-$arch.gz"
	tmp="$out.tmp.$$"
	CGO_ENABLED=0 GOOS=linux GOARCH=$arch go build -trimpath -ldflags='-s -w' \
		-o "dist/instancestore-bundler-linux-$arch" ../../cmd/instancestore-bundler
	gzip -9 -n -c "dist/instancestore-bundler-linux-$arch" >"$tmp"
	rm -f "dist/instancestore-bundler-linux-$arch"
	mv "$tmp" "$out"
	echo "agent/bin/$out: $(wc -c <"$out") bytes"
done
