#!/usr/bin/env bash
# Benchmark: our bundler against the pipeline ec2-ami-tools runs, on the same image in
# one run, and our peak RSS on a 1 GiB and a 10 GiB sparse image.
#
#   bench/bundle-image.sh            (as root: nothing is mounted, but it writes images
#                                     of 4 + 1 + 10 GiB apparent size, ~3.5 GiB on disk)
#
# Environment: BENCH_DIR (default /var/tmp/instancestore-bench) keeps the images
# between runs; BENCH_SKIP_RSS=1 skips the 1 GiB / 10 GiB runs; LEVEL passes a gzip
# level to ours (default: bundle.DefaultLevel). BENCH_RT=1 runs both pipelines under
# `chrt --rr 1` so that other load on a shared machine does not skew the comparison
# (nice does not help across sessions when the kernel groups tasks by session; the
# kernel's RT throttling still leaves others 5% of each core).
#
# The image is a 4 GiB sparse ext4 file system made with `mkfs.ext4 -d` from a copy of
# /usr/share and the Go tree (~1 GiB of ordinary files). Figures are printed, never
# asserted: targets are >= 12x faster than the reference, bundled size <= 1.05x the
# reference's, peak RSS <= 256 MiB and no larger for 10 GiB than for 1 GiB.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
work=${BENCH_DIR:-/var/tmp/instancestore-bench}
mkdir -p "$work"
for tool in tar gzip openssl split mkfs.ext4 /usr/bin/time go; do
	command -v "$tool" >/dev/null || { echo "bench: $tool not found (apt-get install tar gzip openssl coreutils e2fsprogs time)" >&2; exit 1; }
done

# --- the bundler under test: the CLI's bundle-image when it exists, else bench/bundlewrite
bin=$work/bin
mkdir -p "$bin"
ours=("$bin/bundlewrite" -p bench ${LEVEL:+-level "$LEVEL"}) # + -i IMAGE -d OUTDIR
ours_name="bench/bundlewrite (bundle.Write + DirSink, no manifest)"
if (cd "$repo" && go build -o "$bin/instancestore-bundler" ./cmd/instancestore-bundler 2>/dev/null) &&
	"$bin/instancestore-bundler" bundle-image -h >/dev/null 2>&1; then # unknown commands exit 2
	ours=("$bin/instancestore-bundler" bundle-image -p bench -u 123456789012 -r x86_64 ${LEVEL:+--level "$LEVEL"})
	ours_name="instancestore-bundler bundle-image"
else
	(cd "$repo" && go build -o "$bin/bundlewrite" ./bench/bundlewrite)
fi

# --- the image: 4 GiB sparse ext4 with ~1 GiB of files
img=$work/bench.img
if [[ ! -s $img ]]; then
	echo "bench: making $img (mkfs.ext4 -d; takes a few minutes)" >&2
	stage=$work/stage
	rm -rf "$stage" && mkdir -p "$stage/usr" "$stage/go"
	goroot=$(go env GOROOT)
	# Hard links when possible: the copy costs no space or time.
	cp -al /usr/share "$stage/usr/share" 2>/dev/null || cp -a /usr/share "$stage/usr/share"
	cp -al "$goroot/." "$stage/go/" 2>/dev/null || cp -a "$goroot/." "$stage/go/"
	truncate -s 4G "$img.tmp"
	mkfs.ext4 -q -F -L benchroot -d "$stage" "$img.tmp"
	mv "$img.tmp" "$img"
	rm -rf "$stage"
fi

# timed LABEL CMD...: runs CMD under /usr/bin/time -v, sets WALL (s), RSS (KiB), CPU (s)
timed() {
	local label=$1 log=$work/time-$1.log
	shift
	${BENCH_RT:+chrt --rr 1} /usr/bin/time -v -o "$log" "$@" >"$work/out-$label.log"
	WALL=$(awk -F': ' '/Elapsed \(wall clock\)/ {n=split($2,a,":"); s=0; for(i=1;i<=n;i++) s=s*60+a[i]; print s}' "$log")
	RSS=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$log")
	CPU=$(awk -F': ' '/User time/ {u=$2} /System time/ {s=$2} END {print u+s}' "$log")
	echo "bench: $label: ${WALL}s wall, ${CPU}s cpu, peak RSS $((RSS / 1024)) MiB" >&2
}
bytes() { find "$1" -type f -name 'bench.part.*' -printf '%s\n' | awk '{s+=$1} END {print s+0}'; }

# Both runs start from a warm page cache (the image's data read once, holes skipped).
tar -c -S -f - "$img" 2>/dev/null | cat >/dev/null

# --- reference: what ec2-ami-tools runs (GNU tar -S, gzip -9, openssl, split). The
# key is a throw-away one for this benchmark only.
key=$(openssl rand -hex 16)
iv=$(openssl rand -hex 16)
ref_out=$work/ref && rm -rf "$ref_out" && mkdir -p "$ref_out"
export img ref_out key iv
timed reference bash -c 'set -o pipefail; cd "$(dirname "$img")" &&
	tar -c -S -f - "$(basename "$img")" | tee >(openssl sha1 >"$ref_out/digest") |
	gzip -9 | openssl enc -e -aes-128-cbc -K "$key" -iv "$iv" |
	split -b 10485760 -d -a 2 - "$ref_out/bench.part."'
ref_wall=$WALL ref_rss=$RSS ref_cpu=$CPU ref_size=$(bytes "$ref_out")

ours_out=$work/ours && rm -rf "$ours_out" && mkdir -p "$ours_out"
timed ours "${ours[@]}" -i "$img" -d "$ours_out"
our_wall=$WALL our_rss=$RSS our_cpu=$CPU our_size=$(bytes "$ours_out")

data=$(du -B1 "$img" | cut -f1)
cat <<EOF

== bundle-image benchmark ($(nproc) cores, load average at end: $(cut -d' ' -f1-3 /proc/loadavg)${BENCH_RT:+, both under chrt --rr 1})
image:      $img: $(($(stat -c %s "$img") >> 20)) MiB apparent, $((data >> 20)) MiB of data (ext4 of /usr/share + Go tree)
ours:       $ours_name
                 wall s    cpu s   bundled bytes   peak RSS MiB
reference   $(printf '%9.2f %8.2f %15d %14d' "$ref_wall" "$ref_cpu" "$ref_size" $((ref_rss / 1024)))
ours        $(printf '%9.2f %8.2f %15d %14d' "$our_wall" "$our_cpu" "$our_size" $((our_rss / 1024)))
speed-up:   $(awk -v a="$ref_wall" -v b="$our_wall" 'BEGIN {printf "%.1fx wall (target >= 12x on an idle machine)", a/b}')
cpu ratio:  $(awk -v a="$ref_cpu" -v b="$our_cpu" 'BEGIN {printf "%.1fx less CPU time (the reference is bound by one gzip -9 process,", a/b}')
            ours by compression on all cores: on a busy machine compare the CPU times)
size ratio: $(awk -v a="$our_size" -v b="$ref_size" 'BEGIN {printf "%.3f (target <= 1.05)", a/b}')
EOF
rm -rf "$ref_out" "$ours_out"

# --- peak RSS against image size: 1 GiB and 10 GiB sparse images cut from bench.img
if [[ -z ${BENCH_SKIP_RSS:-} ]]; then
	small=$work/rss-1g.img big=$work/rss-10g.img
	if [[ ! -s $small ]]; then
		truncate -s 1G "$small.tmp"
		dd if="$img" of="$small.tmp" bs=1M count=1024 conv=sparse,notrunc status=none
		mv "$small.tmp" "$small"
	fi
	if [[ ! -s $big ]]; then
		truncate -s 10G "$big.tmp"
		dd if="$img" of="$big.tmp" bs=1M conv=sparse,notrunc status=none
		dd if="$img" of="$big.tmp" bs=1M seek=$((5 * 1024)) conv=sparse,notrunc status=none
		mv "$big.tmp" "$big"
	fi
	for f in "$small" "$big"; do
		out=$work/rss-out && rm -rf "$out" && mkdir -p "$out"
		tar -c -S -f - "$f" 2>/dev/null | cat >/dev/null # warm the page cache
		timed "ours-$(basename "$f" .img)" "${ours[@]}" -i "$f" -d "$out"
		printf 'peak RSS:   %-45s %4d MiB (%d MiB of data, %.2fs wall)\n' \
			"$(basename "$f"): $(($(stat -c %s "$f") >> 30)) GiB apparent" $((RSS / 1024)) $(($(du -B1 "$f" | cut -f1) >> 20)) "$WALL"
		rm -rf "$out"
	done
	echo "            (target: <= 256 MiB, and no larger for 10 GiB than for 1 GiB)"
fi
