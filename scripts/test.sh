#!/usr/bin/env bash
# The go test run of `make test`, in two go test processes side by side:
#
#   1. go test ./... without the builder's VM acceptance tests, streamed as it runs;
#   2. those VM tests alone (each in its own local environment, in parallel with
#      each other), their output kept in bin/test-vm.log and printed when they end.
#
# One go test ./... runs a package's tests one after the other, and the builder's
# package is the longest by far: its VM builds (TCG guests) would start only after
# its other acceptance tests. This machine kind has 2 cores and one go test ./... at
# -p 2 keeps about one of them busy, so the VM builds go beside it. Any failure of
# either fails the script; both always run to the end.
#
# Extra arguments go to both go test commands (e.g. -v).
set -uo pipefail
cd "$(dirname "$0")/.."
GO="${GO:-go}"
mkdir -p bin
vmtests='^(TestAcceptanceVMBuilds|TestAcceptanceVMBuildEBSSource)$'
export INSTANCESTORE_CI=1 PACKER_ACC=1
log=bin/test-vm.log
start=$(date +%s)
"$GO" test -count=1 -timeout 80m -run "$vmtests" "$@" ./builder/instancestore/ >"$log" 2>&1 &
vm=$!
# A Ctrl-C or a kill of make stops the VM tests too (their cleanup removes their
# environments).
trap 'kill -INT $vm 2>/dev/null; wait $vm; exit 130' INT TERM
"$GO" test -count=1 -timeout 80m -skip "$vmtests" "$@" ./...
rc=$?
echo "test: go test ./... (without the builder's VM tests) ended after $(( $(date +%s) - start )) s, status $rc"
wait $vm
vmrc=$?
echo "test: the builder's VM acceptance tests ($vmtests) ended after $(( $(date +%s) - start )) s in all, status $vmrc:"
cat "$log"
[ $rc = 0 ] && [ $vmrc = 0 ]
