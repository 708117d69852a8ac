package agent

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/instancestore/packer-plugin-instancestore/bundle/volume"
	"github.com/instancestore/packer-plugin-instancestore/internal/testroot"
)

// The driver recognises a full scratch by its text (it builds where volume does not).
func TestScratchFullText(t *testing.T) {
	if volume.ErrScratchFull.Error() != ScratchFullText {
		t.Fatalf("agent.ScratchFullText %q differs from volume.ErrScratchFull %q", ScratchFullText, volume.ErrScratchFull)
	}
}

// fakeBlock adds a block device to a sysfs tree as the kernel shows an NVMe disk.
func fakeBlock(t *testing.T, sysfs, name, model, dev string, sectors string, parts ...string) {
	t.Helper()
	dir := filepath.Join(sysfs, "block", name)
	for _, p := range append(parts, "device", "holders") {
		if err := os.MkdirAll(filepath.Join(dir, p), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for f, v := range map[string]string{"device/model": model + "                \n", "dev": dev + "\n", "size": sectors + "\n"} {
		if err := os.WriteFile(filepath.Join(dir, f), []byte(v), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// TestFindScratchDisk: of the NVMe disks a Nitro d type shows, only an unused instance
// store disk is picked (the largest): not the EBS root, not a mounted or partitioned or
// held one.
func TestFindScratchDisk(t *testing.T) {
	sysfs := t.TempDir()
	fakeBlock(t, sysfs, "nvme0n1", "Amazon Elastic Block Store", "259:0", "16777216", "nvme0n1p1")
	fakeBlock(t, sysfs, "nvme1n1", nvmeInstanceStoreModel, "259:1", "146484375")
	fakeBlock(t, sysfs, "nvme2n1", nvmeInstanceStoreModel, "259:2", "292968750") // mounted
	fakeBlock(t, sysfs, "nvme3n1", nvmeInstanceStoreModel, "259:3", "292968750", "nvme3n1p1")
	fakeBlock(t, sysfs, "nvme4n1", nvmeInstanceStoreModel, "259:4", "292968750", "holders/dm-0")
	mounts := []volume.Mount{{Major: 259, Minor: 2, Point: "/data"}}
	d, err := findScratchDisk(sysfs, mounts)
	if err != nil {
		t.Fatal(err)
	}
	if d == nil || d.Dev != "/dev/nvme1n1" || d.Size != 146484375*512 {
		t.Fatalf("found %+v, want /dev/nvme1n1 of %d bytes", d, int64(146484375*512))
	}
	// Where the model does not say it (qemu's NVMe controllers are all "QEMU NVMe
	// Ctrl"), the serial does: AWS and 17 hex digits, an EBS volume's is vol...
	qemu := t.TempDir()
	fakeBlock(t, qemu, "nvme0n1", "QEMU NVMe Ctrl", "259:0", "16777216")
	fakeBlock(t, qemu, "nvme1n1", "QEMU NVMe Ctrl", "259:1", "146484375")
	fakeBlock(t, qemu, "nvme2n1", "QEMU NVMe Ctrl", "259:2", "292968750")
	for name, serial := range map[string]string{"nvme0n1": "vol0123456789abcdef0", "nvme1n1": "AWS1C4BD4B0C7C20A9A6", "nvme2n1": "deadbeef"} {
		if err := os.WriteFile(filepath.Join(qemu, "block", name, "device", "serial"), []byte(serial+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if d, err := findScratchDisk(qemu, nil); err != nil || d == nil || d.Dev != "/dev/nvme1n1" {
		t.Fatalf("by serial: found %+v, %v; want /dev/nvme1n1 (serial AWS...)", d, err)
	}
	mounts = append(mounts, volume.Mount{Major: 259, Minor: 1, Point: "/mnt"})
	if d, err := findScratchDisk(sysfs, mounts); err != nil || d != nil {
		t.Fatalf("with every instance store disk in use: %+v, %v", d, err)
	}
}

// TestScratchDiskMount formats, mounts and releases a blank disk (a loop device stands
// for the NVMe instance store disk), and refuses one that holds data.
func TestScratchDiskMount(t *testing.T) {
	testroot.Require(t)
	file := filepath.Join(t.TempDir(), "nvme.img")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(file, 64<<20); err != nil {
		t.Fatal(err)
	}
	l, err := volume.AttachLoop(file, 0, 64<<20)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Detach()
	d := &scratchDisk{Dev: l.Path, Size: 64 << 20}
	parent := t.TempDir()
	if err := d.mount(context.Background(), filepath.Join(parent, "scratch")); err != nil {
		t.Fatal(err)
	}
	dir := d.Dir
	var s unix.Statfs_t
	if err := unix.Statfs(dir, &s); err != nil || int64(s.Bavail)*int64(s.Bsize) < 40<<20 {
		t.Fatalf("scratch %s: %v, %d bytes free", dir, err, int64(s.Bavail)*int64(s.Bsize))
	}
	if err := os.WriteFile(filepath.Join(dir, "x"), []byte("image"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := d.unmount(); err != nil {
		t.Fatal(err)
	}
	if mi, _ := os.ReadFile("/proc/self/mountinfo"); strings.Contains(string(mi), dir) {
		t.Errorf("%s still mounted", dir)
	}
	if left, _ := os.ReadDir(parent); len(left) != 0 {
		t.Errorf("mount point left: %v", left)
	}
	if ok, err := blank(l.Path); err != nil || !ok {
		t.Errorf("the disk is not blank again after release: %v %v", ok, err)
	}
	// A disk with data on it (an LVM label here) is never formatted.
	f, err := os.OpenFile(l.Path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte("LVM2 001"), 512+24); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if err := d.mount(context.Background(), filepath.Join(parent, "scratch")); err == nil || !strings.Contains(err.Error(), "is not blank (it holds data): it is not formatted as scratch") {
		d.unmount()
		t.Fatalf("mounting a disk with data: %v", err)
	}
}
