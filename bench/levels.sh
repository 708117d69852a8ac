#!/usr/bin/env bash
# The gzip level table of bench/README.md: bundled size and time of our pipeline at
# each level against the ec2-ami-tools reference (tar -S | gzip -9 | openssl | split)
# on two kinds of image: the benchmark image of bundle-image.sh (/usr/share + the Go
# tree) and an ext4 of the Go source tree alone (GOROOT/src), which compresses less
# well at low levels. Prints figures, asserts nothing.
#
#   sudo bench/levels.sh         LEVELS="4 5 6 7" picks levels; BENCH_DIR as bundle-image.sh
#
# One reference run per image (gzip -9 is the slow part); ours once per level.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
work=${BENCH_DIR:-/var/tmp/instancestore-bench}
levels=${LEVELS:-"4 5 6 7 9"}
mkdir -p "$work/bin"
(cd "$repo" && go build -o "$work/bin/bundlewrite" ./bench/bundlewrite)

mkimage() { # NAME SIZE SRC...: ext4 image of the given trees, made once
	local img=$work/$1 size=$2 stage=$work/stage
	shift 2
	[[ -s $img ]] && return
	rm -rf "$stage" && mkdir -p "$stage"
	for s in "$@"; do
		mkdir -p "$stage/$(dirname "${s#/}")"
		cp -al "$s" "$stage/${s#/}" 2>/dev/null || cp -a "$s" "$stage/${s#/}"
	done
	truncate -s "$size" "$img.tmp"
	mkfs.ext4 -q -F -d "$stage" "$img.tmp"
	mv "$img.tmp" "$img"
	rm -rf "$stage"
}
goroot=$(go env GOROOT)
mkimage bench.img 4G /usr/share "$goroot"
mkimage gosrc.img 1G "$goroot/src"

timed() { # sets WALL CPU (s) of CMD...
	local log=$work/time.log
	/usr/bin/time -v -o "$log" "$@" >/dev/null
	WALL=$(awk -F': ' '/Elapsed \(wall clock\)/ {n=split($2,a,":"); s=0; for(i=1;i<=n;i++) s=s*60+a[i]; print s}' "$log")
	CPU=$(awk -F': ' '/User time/ {u=$2} /System time/ {s=$2} END {print u+s}' "$log")
}
bytes() { find "$1" -type f -name '*.part.*' -printf '%s\n' | awk '{s+=$1} END {print s+0}'; }

echo "== gzip levels ($(nproc) cores, load average at start: $(cut -d' ' -f1-3 /proc/loadavg))"
for name in bench.img gosrc.img; do
	img=$work/$name
	tar -c -S -f - -C "$work" "$name" | cat >/dev/null # warm the page cache
	out=$work/ref && rm -rf "$out" && mkdir -p "$out"
	export img out
	timed bash -c 'set -o pipefail; tar -c -S -f - -C "$(dirname "$img")" "$(basename "$img")" | gzip -9 |
		openssl enc -e -aes-128-cbc -K "$(openssl rand -hex 16)" -iv "$(openssl rand -hex 16)" |
		split -b 10485760 -d -a 2 - "$out/ref.part."'
	ref=$(bytes "$out") refwall=$WALL refcpu=$CPU
	printf '\n%s: %d MiB of data; reference %d bytes, %.1f s wall, %.1f s cpu\n' "$name" $(($(du -B1 "$img" | cut -f1) >> 20)) "$ref" "$WALL" "$CPU"
	printf '| level | bundled bytes | vs gzip -9 | wall s | cpu s | speed vs reference (wall) |\n| ---: | ---: | ---: | ---: | ---: | ---: |\n'
	for l in $levels; do
		rm -rf "$out" && mkdir -p "$out"
		timed "$work/bin/bundlewrite" -level "$l" -p ours -i "$img" -d "$out"
		s=$(bytes "$out")
		awk -v l="$l" -v s="$s" -v r="$ref" -v w="$WALL" -v c="$CPU" -v rw="$refwall" \
			'BEGIN {printf "| %d | %\047d | %.3f | %.2f | %.2f | %.1fx |\n", l, s, s/r, w, c, rw/w}'
	done
	rm -rf "$out"
done
echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"
