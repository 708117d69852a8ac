package instancestore

import (
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/instancestore/packer-plugin-instancestore/internal/packertest"
	"github.com/instancestore/packer-plugin-instancestore/internal/testroot"
)

// TestGeneratedFilesUpToDate regenerates the HCL2 specs and docs partials of every
// component with packer-sdc and fails when the checked-in files differ, so the docs and
// the HCL2 schema never drift from the Go config structs.
func TestGeneratedFilesUpToDate(t *testing.T) {
	testroot.Short(t, "builds packer-sdc")
	root := packertest.RepoRoot(t)
	cmd := exec.Command(filepath.Join(root, "scripts/check-generated.sh"))
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("scripts/check-generated.sh: %v\n%s", err, out)
	}
}
