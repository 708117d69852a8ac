package volume

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/instancestore/packer-plugin-instancestore/internal/testroot"
)

// TestBuildRefusesFilesOverEC2Limit: without an image size, a volume whose files need
// more than EC2's 10 GiB for an instance store-backed AMI (10.5 GiB allocated on a
// 12 GiB filesystem) is refused before anything is copied, with the exact message
// that says why and what to give; the scratch is left empty.
func TestBuildRefusesFilesOverEC2Limit(t *testing.T) {
	testroot.Require(t)
	src := newTestFS(t, filepath.Join(t.TempDir(), "big.fs"), 0, 12<<30, "mkfs.ext4", "-q")
	f, err := os.Create(filepath.Join(src.Dir, "data"))
	if err != nil {
		t.Fatal(err)
	}
	// Allocated blocks count as used, and take no time to write.
	if err := unix.Fallocate(int(f.Fd()), 0, 0, 10752<<20); err != nil {
		f.Close()
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	scratch := t.TempDir()
	_, err = Build(context.Background(), Config{PlanConfig: PlanConfig{Volume: src.Dir, Scratch: scratch}})
	if err == nil {
		t.Fatal("a volume with 10.5 GiB of files was imaged")
	}
	m := regexp.MustCompile(`^the image would be ([0-9]+) MiB: `).FindStringSubmatch(err.Error())
	if m == nil {
		t.Fatalf("error %q does not give the image size", err)
	}
	size, _ := strconv.Atoi(m[1])
	want := fmt.Sprintf("the image would be %d MiB: EC2 boots instance-store AMIs of at most 10240 MiB (10 GiB); give an image size of at most 10240 MiB with enough room for the %.0f MiB in use",
		size, float64(usedBytes(src.Dir))/(1<<20))
	if err.Error() != want || size <= 10752 {
		t.Fatalf("error\n%v\nwant\n%s\n(an image over the 10752 MiB of files)", err, want)
	}
	if left, _ := os.ReadDir(scratch); len(left) != 0 {
		t.Errorf("scratch not cleaned after the refusal: %v", left)
	}
}
