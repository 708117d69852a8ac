#!/usr/bin/env bash
# TCG CPU models compared on the hvm-gpt seed (bench/vmcpu; as root): boot to sshd's
# banner and to the first SSH login, and in the guest mke2fs -d of /usr/share and
# instancestore-bundler bundle-image of that image (the agent's gzip, AES, SHA-1, MD5):
#
#   sudo bench/vm-cpu.sh                 # CPUS="qemu64 max"
#
# One VM at a time. Prints figures, asserts nothing; note the load it prints.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
if [ "$(id -u)" -ne 0 ]; then
	echo "vm-cpu.sh: needs root (network namespaces, qemu): run it with sudo" >&2
	exit 1
fi
mkdir -p bin
CGO_ENABLED=0 go build -o bin/instancestore-bundler-static ./cmd/instancestore-bundler
go build -o bin/vmcpu ./bench/vmcpu
echo "== TCG CPU models ($(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg))"
bin/vmcpu -diag -cpus "${CPUS:-qemu64 max}" -bundler bin/instancestore-bundler-static
echo "== load at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
