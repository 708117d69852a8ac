#!/bin/sh
# Builds the agent binaries the plugin embeds (run by `go generate ./agent/bin` and by
# release builds before compiling the plugin): instancestore-bundler for linux/amd64 and
# linux/386, static, stripped, gzip -9. Work files live in a dot-directory (go:embed
# skips those) and each result is renamed into place, so a build running meanwhile
# embeds either the old binary or the new one, never a partial file.
set -eu
cd "$(dirname "$0")"
mkdir -p dist
work="dist/.work-$$"
mkdir "$work"
trap 'rm -rf "$work"' EXIT
for arch in amd64 386; do
	CGO_ENABLED=0 GOOS=linux GOARCH=$arch go build -trimpath -ldflags='-s -w' \
		-o "$work/instancestore-bundler-linux-$arch" ../../cmd/instancestore-bundler
	gzip -9 -n -c "$work/instancestore-bundler-linux-$arch" >"$work/instancestore-bundler-linux-$arch.gz"
	mv "$work/instancestore-bundler-linux-$arch.gz" "dist/instancestore-bundler-linux-$arch.gz"
	echo "agent/bin/dist/instancestore-bundler-linux-$arch.gz: $(wc -c <"dist/instancestore-bundler-linux-$arch.gz") bytes"
done
