#!/usr/bin/env bash
# Checks a goreleaser build in dist/ (`make release-snapshot`, or the release workflow
# after `goreleaser release`) against what `packer init` / `packer plugins install`
# and HashiCorp's plugin release conventions expect, and proves that Packer installs
# the binary built for this machine:
#
#   - one zip per platform, named packer-plugin-instancestore_v{version}_{api}_{os}_{arch}.zip
#     (api: the plugin protocol version `describe` prints, e.g. x5.0), holding exactly
#     one file: the binary of the same name (.exe on Windows), executable;
#   - every platform of .goreleaser.yml's matrix present, and no other zip;
#   - packer-plugin-instancestore_v{version}_SHA256SUMS listing exactly those zips, with
#     the right digests (Packer downloads it first and refuses a zip it does not list);
#     with CHECK_SIGNATURE=1 (the release workflow), its detached signature
#     ..._SHA256SUMS.sig verified by gpg;
#   - this machine's binary: `describe` reports the version and API version its name
#     carries (Packer refuses a plugin whose name and describe output differ), and
#     `packer plugins install --path` (bin/packer, or $PACKER) installs it into a
#     temporary plugin folder, under that same name, with `packer plugins installed`
#     listing it.
#
#   scripts/check-release.sh [DIST]      (DIST defaults to dist/)
#
# PLATFORMS (space-separated os_arch) overrides the expected matrix, for example for a
# `goreleaser build --single-target` run.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
dist="${1:-$root/dist}"
project=packer-plugin-instancestore
fqn=github.com/instancestore/instancestore
# The builds matrix of .goreleaser.yml: goos x goarch minus its ignore list.
PLATFORMS="${PLATFORMS:-darwin_amd64 darwin_arm64 freebsd_386 freebsd_amd64 freebsd_arm64 linux_386 linux_amd64 linux_arm64 windows_386 windows_amd64}"
PACKER="${PACKER:-$root/bin/packer}"

fail=0
bad() { echo "check-release: FAIL: $*" >&2; fail=1; }
die() { echo "check-release: $*" >&2; exit 1; }
for t in jq unzip zipinfo sha256sum; do
	command -v "$t" >/dev/null || die "needs $t (make deps installs it: Debian packages jq, unzip)"
done
[ -f "$dist/metadata.json" ] || die "$dist/metadata.json missing: run \`make release-snapshot\` (or goreleaser release) first"

version="$(jq -r .version "$dist/metadata.json")"
name="$(jq -r .project_name "$dist/metadata.json")"
[ "$name" = "$project" ] || bad "project_name is '$name', want $project (Packer derives the plugin name from it)"
# Packer splits the file name at '_' into version, API version, os and arch, and
# prefixes the version with v itself.
case "$version" in
'' | v* | *_*) die "version '$version' from metadata.json: want a semantic version without a leading v and without '_'" ;;
esac

# The API version: every zip must carry the same one, and the host binary reports it.
shopt -s nullglob
zips=("$dist"/*.zip)
[ ${#zips[@]} -gt 0 ] || die "no zip in $dist"
api=""
for z in "${zips[@]}"; do
	b="$(basename "$z" .zip)"
	if [[ ! "$b" =~ ^${project}_v([^_]+)_(x[0-9]+\.[0-9]+)_([a-z0-9]+)_([a-z0-9]+)$ ]]; then
		bad "$(basename "$z"): not ${project}_v{version}_x{api}_{os}_{arch}.zip"
		continue
	fi
	[ "${BASH_REMATCH[1]}" = "$version" ] || bad "$(basename "$z"): version ${BASH_REMATCH[1]}, the build's is $version"
	if [ -z "$api" ]; then
		api="${BASH_REMATCH[2]}"
	elif [ "${BASH_REMATCH[2]}" != "$api" ]; then
		bad "$(basename "$z"): API version ${BASH_REMATCH[2]}, other zips have $api"
	fi
done
[ -n "$api" ] || die "no zip has a plugin release name"
if [ -n "${API_VERSION:-}" ] && [ "$API_VERSION" != "$api" ]; then
	bad "the zips carry API version $api, API_VERSION is $API_VERSION"
fi

# Each platform: the zip and its one binary.
declare -A want=()
for p in $PLATFORMS; do
	want["${project}_v${version}_${api}_${p}.zip"]=1
	zip="$dist/${project}_v${version}_${api}_${p}.zip"
	if [ ! -f "$zip" ]; then
		bad "missing $(basename "$zip")"
		continue
	fi
	bin="$(basename "$zip" .zip)"
	[ "${p%%_*}" = windows ] && bin="$bin.exe"
	entries="$(zipinfo -1 "$zip")" || { bad "$(basename "$zip"): not a readable zip"; continue; }
	if [ "$entries" != "$bin" ]; then
		bad "$(basename "$zip") holds [$(echo $entries)], want exactly $bin"
		continue
	fi
	if [ "${p%%_*}" != windows ]; then
		mode="$(zipinfo -l "$zip" "$bin" | awk -v f="$bin" '$NF == f { print $1 }')"
		[[ "$mode" == -rwx* ]] || bad "$(basename "$zip"): $bin has mode '$mode', want it executable"
	fi
done
for z in "${zips[@]}"; do
	[ -n "${want[$(basename "$z")]:-}" ] || bad "unexpected $(basename "$z") (not in PLATFORMS: add it there and to .goreleaser.yml, or drop it)"
done

# SHA256SUMS: exactly the zips, digests right.
sums="$dist/${project}_v${version}_SHA256SUMS"
if [ ! -f "$sums" ]; then
	bad "missing $(basename "$sums") (checksum.name_template in .goreleaser.yml)"
else
	listed="$(awk '{ print $2 }' "$sums" | sed 's/^\*//' | sort)"
	zipnames="$(for z in "${zips[@]}"; do basename "$z"; done | sort)"
	[ "$listed" = "$zipnames" ] || bad "$(basename "$sums") lists [$(echo $listed)], dist/ has the zips [$(echo $zipnames)]"
	(cd "$dist" && sha256sum --quiet --strict -c "$(basename "$sums")") >&2 || bad "$(basename "$sums"): digests do not match"
	if [ "${CHECK_SIGNATURE:-}" = 1 ]; then
		if [ ! -f "$sums.sig" ]; then
			bad "missing $(basename "$sums").sig (signs: in .goreleaser.yml)"
		else
			gpg --batch --verify "$sums.sig" "$sums" 2>&1 | sed 's/^/check-release: gpg: /' >&2 ||
				bad "$(basename "$sums").sig does not verify"
		fi
	fi
fi

# This machine's binary: describe, then packer plugins install --path.
host="$(go env GOOS)_$(go env GOARCH)"
hostzip="$dist/${project}_v${version}_${api}_${host}.zip"
if [ "$fail" = 0 ] && [ -f "$hostzip" ]; then
	tmp="$(mktemp -d)"
	trap 'rm -rf "$tmp"' EXIT
	unzip -q "$hostzip" -d "$tmp/bin"
	bin="$tmp/bin/$(basename "$hostzip" .zip)"
	d="$("$bin" describe)" || die "$(basename "$bin") describe failed"
	[ "$(jq -r .version <<<"$d")" = "$version" ] || bad "describe reports version $(jq -r .version <<<"$d"), the name says $version"
	[ "$(jq -r .api_version <<<"$d")" = "$api" ] || bad "describe reports API version $(jq -r .api_version <<<"$d"), the name says $api"
	if [ ! -x "$PACKER" ]; then
		bad "no packer at $PACKER to prove the install (scripts/build-tools.sh builds bin/packer, or set PACKER)"
	elif [ "$fail" = 0 ]; then
		export PACKER_PLUGIN_PATH="$tmp/plugins" PACKER_CONFIG_DIR="$tmp/config" CHECKPOINT_DISABLE=1
		"$PACKER" plugins install --path "$bin" "$fqn" >"$tmp/install.log" 2>&1 ||
			{ cat "$tmp/install.log" >&2; bad "packer plugins install --path $(basename "$bin") $fqn failed"; }
		installed="$PACKER_PLUGIN_PATH/$fqn/$(basename "$bin")"
		[ -x "$installed" ] && [ -f "${installed}_SHA256SUM" ] ||
			bad "packer did not install $fqn/$(basename "$bin") (and its _SHA256SUM) into the plugin folder: $(find "$tmp/plugins" -type f 2>/dev/null | tr '\n' ' ')"
		list="$("$PACKER" plugins installed 2>&1)" || true
		[[ "$list" == *"$installed"* ]] || bad "packer plugins installed does not list it: $list"
		[ "$fail" = 0 ] && echo "check-release: $("$PACKER" version | head -1) installs $(basename "$bin") ($(jq -c '{version, api_version}' <<<"$d"))"
	fi
elif [ ! -f "$hostzip" ]; then
	echo "check-release: no $host zip in $dist: the describe and install checks need one" >&2
	fail=1
fi

[ "$fail" = 0 ] || exit 1
echo "check-release: $dist: ${#zips[@]} zips for v$version $api, each with its one binary; $(basename "$sums") matches them"
