// Package testroot is the one place where tests that need root (loop devices, mounts,
// network namespaces, chroot) decide whether they can run.
package testroot

import (
	"os"
	"testing"
)

// Require skips t with one clear message when the test process is not root. Under CI
// (INSTANCESTORE_CI=1, set by `make test`) a missing root is a failure, never a skip.
func Require(t testing.TB) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if os.Getenv("INSTANCESTORE_CI") != "" {
		t.Fatalf("this test needs root and INSTANCESTORE_CI is set: run `make test` as root")
	}
	t.Skip("skipped: needs root (loop devices, mounts or network namespaces); run `sudo make test` to include it")
}

// Short skips t under `go test -short`, with the reason given. CI never runs -short.
func Short(t testing.TB, why string) {
	t.Helper()
	if testing.Short() {
		if os.Getenv("INSTANCESTORE_CI") != "" {
			t.Fatalf("-short is not allowed under INSTANCESTORE_CI")
		}
		t.Skip("skipped in -short mode: " + why)
	}
}

// Acceptance gates Packer acceptance tests (real `packer build` runs) on PACKER_ACC=1,
// as Packer plugins do. `make test` sets it; under INSTANCESTORE_CI a missing
// PACKER_ACC is a failure, never a skip.
func Acceptance(t testing.TB) {
	t.Helper()
	if os.Getenv("PACKER_ACC") != "" {
		return
	}
	if os.Getenv("INSTANCESTORE_CI") != "" {
		t.Fatalf("acceptance test: INSTANCESTORE_CI is set but PACKER_ACC is not: run `make test`")
	}
	t.Skip("skipped: acceptance test (real packer build); set PACKER_ACC=1 to run it, or run `sudo make test`")
}
