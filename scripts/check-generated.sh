#!/usr/bin/env bash
# Regenerates what packer-sdc makes from the Go sources (HCL2 specs *.hcl2spec.go with
# mapstructure-to-hcl2, docs partials under docs-partials/ with struct-markdown), the
# integration docs in .web-docs/ (docs/ rendered by packer-sdc renderdocs with our
# partials, the amazon plugin's and the SDK's, then laid out for the integrations
# portal by tools/webdocs), checks every link of .web-docs/, and fails when the
# checked-in files differ or a link is broken.
#
#   scripts/check-generated.sh          check (CI)
#   scripts/check-generated.sh --write [PATH...]
#                                       regenerate in place (only outputs under the
#                                       given paths, when some are given)
#
# struct-markdown only works inside a directory named packer-plugin-*, and this
# checkout may be called anything, so generation runs in a copy under such a name.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
"$root/scripts/build-tools.sh"
export PATH="$root/bin:$PATH"

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
work="$tmp/packer-plugin-instancestore"
mkdir -p "$work"
# Tracked and new (not ignored) files as they are in the work tree: what a commit would
# hold (tracked files deleted from the work tree stay out).
(cd "$root" && git ls-files -co --exclude-standard -z |
	while IFS= read -r -d '' f; do [ -e "$f" ] && printf '%s\0' "$f"; done |
	xargs -0 cp --parents -t "$work" 2>/dev/null) || {
	echo "check-generated: copying the tree failed" >&2
	exit 1
}

mapfile -t pkgs < <(cd "$work" && grep -rl --include='*.go' '^//go:generate packer-sdc' . | xargs -n1 dirname | sed 's|^\./||' | sort -u)
rm -rf "$work/docs-partials"
for p in "${pkgs[@]}"; do
	(cd "$work/$p" && go generate -run 'packer-sdc' .) || {
		echo "check-generated: go generate failed in $p" >&2
		exit 1
	}
done

# Integration docs. renderdocs takes one partials folder: ours, with the amazon
# plugin's (the version in go.mod) under packer-plugin-amazon/; the SDK's partials
# (packer-plugin-sdk/...) are built into packer-sdc.
partials="$tmp/partials"
mkdir -p "$partials/packer-plugin-amazon"
cp -r --no-preserve=mode "$work/docs-partials/." "$partials/"
amazon="$(cd "$root" && go list -m -f '{{.Dir}}' github.com/hashicorp/packer-plugin-amazon)"
if [ -z "$amazon" ] || [ ! -d "$amazon/docs-partials" ]; then
	echo "check-generated: the amazon plugin's module (docs-partials) is not in the module cache; run go mod download" >&2
	exit 1
fi
cp -r --no-preserve=mode "$amazon/docs-partials/." "$partials/packer-plugin-amazon/"
(cd "$work" && packer-sdc renderdocs -src docs -partials "$partials" -dst "$tmp/rendered") >"$tmp/renderdocs.log" 2>&1 || {
	cat "$tmp/renderdocs.log" >&2
	echo "check-generated: packer-sdc renderdocs failed (a missing @include partial?)" >&2
	exit 1
}
(cd "$work" && go run ./tools/webdocs compile -src "$tmp/rendered" -dst "$work/.web-docs" -org instancestore) || {
	echo "check-generated: laying out .web-docs failed" >&2
	exit 1
}

status=0
(cd "$work" && go run ./tools/webdocs check -repo "$work" "$work/.web-docs") || status=1
# wanted PATH: is PATH under one of the paths given to --write (all when none)?
wanted() {
	[ ${#only[@]} -eq 0 ] && return 0
	local o
	for o in "${only[@]}"; do
		case "$1/" in "${o%/}"/*) return 0 ;; esac
	done
	return 1
}
compare() { # compare PATH-IN-TREE
	if ! diff -ru "$root/$1" "$work/$1" >"$tmp/diff" 2>&1; then
		if [ "${WRITE:-}" = 1 ]; then
			wanted "$1" || return 0
			rm -rf "${root:?}/$1"
			mkdir -p "$(dirname "$root/$1")"
			cp -r "$work/$1" "$root/$1"
			echo "check-generated: updated $1"
		else
			cat "$tmp/diff"
			status=1
		fi
	fi
}
only=()
if [ "${1:-}" = "--write" ]; then
	WRITE=1
	only=("${@:2}")
fi
for p in "${pkgs[@]}"; do
	for f in "$work/$p"/*.hcl2spec.go; do
		[ -e "$f" ] && compare "${f#"$work"/}"
	done
done
# Docs partials, one directory per package, at any depth.
mkdir -p "$work/docs-partials"
while IFS= read -r d; do
	compare "${d#"$work"/}"
done < <(find "$work/docs-partials" "$root/docs-partials" -type f -name '*.mdx' -printf '%h\n' 2>/dev/null |
	sed -e "s|^$work/||" -e "s|^$root/||" | sort -u | sed "s|^|$work/|")
compare .web-docs
if [ $status -ne 0 ]; then
	echo "check-generated: generated files are out of date; run scripts/check-generated.sh --write and commit" >&2
fi
exit $status
