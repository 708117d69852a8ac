package agent

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/instancestore/packer-plugin-instancestore/bundle/volume"
)

// nvmeInstanceStoreModel is the model string of an NVMe instance store disk on the
// Nitro types with local storage (m5d, c5d, r5d, i3, ...).
const nvmeInstanceStoreModel = "Amazon EC2 NVMe Instance Storage"

// nvmeInstanceStoreSerial is the serial number of an NVMe instance store disk: "AWS"
// and 17 hex digits (an EBS volume's is its id, vol...). It tells the disk apart where
// the model cannot: the local EC2's qemu NVMe controllers all say "QEMU NVMe Ctrl".
var nvmeInstanceStoreSerial = regexp.MustCompile(`^AWS[0-9A-F]{17}$`)

// scratchLabel is the label of the filesystem the agent makes on a scratch disk; the
// sweep wipes a disk a dead run left only when it carries it.
const scratchLabel = "is-scratch"

// scratchDisk is an unused NVMe instance store disk the agent formats and mounts as
// scratch, then unmounts.
type scratchDisk struct {
	Dev  string // /dev/nvme1n1
	Size int64
	Dir  string // where it is mounted
}

// findScratchDisk finds, under sysfs (/sys), the largest NVMe instance store disk (by
// its model, or its serial) that is not in use: not mounted, no partitions, no holders
// (LVM, RAID, dm), and not the disk of any mount.
func findScratchDisk(sysfs string, mounts []volume.Mount) (*scratchDisk, error) {
	ents, err := os.ReadDir(filepath.Join(sysfs, "block"))
	if err != nil {
		return nil, err
	}
	mounted := map[string]bool{}
	for _, m := range mounts {
		mounted[fmt.Sprintf("%d:%d", m.Major, m.Minor)] = true
	}
	var best *scratchDisk
	for _, e := range ents {
		name := e.Name()
		if !strings.HasPrefix(name, "nvme") {
			continue
		}
		dir := filepath.Join(sysfs, "block", name)
		model, _ := os.ReadFile(filepath.Join(dir, "device", "model"))
		serial, _ := os.ReadFile(filepath.Join(dir, "device", "serial"))
		if strings.TrimSpace(string(model)) != nvmeInstanceStoreModel && !nvmeInstanceStoreSerial.MatchString(strings.TrimSpace(string(serial))) {
			continue
		}
		if dev, err := os.ReadFile(filepath.Join(dir, "dev")); err != nil || mounted[strings.TrimSpace(string(dev))] {
			continue
		}
		subs, _ := os.ReadDir(dir)
		inUse := false
		for _, s := range subs {
			if strings.HasPrefix(s.Name(), name+"p") {
				inUse = true // partitioned: someone's
			}
		}
		if holders, _ := os.ReadDir(filepath.Join(dir, "holders")); len(holders) > 0 {
			inUse = true
		}
		if inUse {
			continue
		}
		raw, err := os.ReadFile(filepath.Join(dir, "size"))
		if err != nil {
			continue
		}
		sectors, err := strconv.ParseInt(strings.TrimSpace(string(raw)), 10, 64)
		if err != nil {
			continue
		}
		if best == nil || sectors*512 > best.Size {
			best = &scratchDisk{Dev: "/dev/" + name, Size: sectors * 512}
		}
	}
	return best, nil
}

// blank tells whether the device's first MiB is all zeros: an instance store disk as
// EC2 hands it over. One with anything on it (a filesystem, LVM, RAID) is left alone.
func blank(dev string) (bool, error) {
	f, err := os.Open(dev)
	if err != nil {
		return false, err
	}
	defer f.Close()
	buf := make([]byte, 1<<20)
	n, err := f.ReadAt(buf, 0)
	if err != nil && n == 0 {
		return false, err
	}
	return bytes.Count(buf[:n], []byte{0}) == n, nil
}

// mount formats the disk (ext4, no discard: instance store disks come trimmed) and
// mounts it on dir, a new directory.
func (d *scratchDisk) mount(ctx context.Context, dir string) error {
	ok, err := blank(d.Dev)
	if err != nil {
		return fmt.Errorf("reading the instance store disk %s: %w", d.Dev, err)
	}
	if !ok && !hasScratchLabel(d.Dev) { // the agent's own scratch filesystem is reused
		return fmt.Errorf("the instance store disk %s is not blank (it holds data): it is not formatted as scratch", d.Dev)
	}
	if out, err := exec.CommandContext(ctx, "mkfs.ext4", "-q", "-F", "-E", "nodiscard,lazy_itable_init=1", "-L", scratchLabel, d.Dev).CombinedOutput(); err != nil {
		return fmt.Errorf("formatting the instance store disk %s as scratch: %v: %s", d.Dev, err, strings.TrimSpace(string(out)))
	}
	if err := os.Mkdir(dir, 0o700); err != nil {
		return fmt.Errorf("the scratch disk's mount point: %w", err)
	}
	if err := unix.Mount(d.Dev, dir, "ext4", unix.MS_NOATIME, ""); err != nil {
		os.Remove(dir)
		return fmt.Errorf("mounting the instance store disk %s on %s: %w", d.Dev, dir, err)
	}
	d.Dir = dir
	return nil
}

// unmount unmounts the disk, removes the mount point and wipes the filesystem's
// signature, so that the disk is left as blank as it was found.
func (d *scratchDisk) unmount() error {
	if d.Dir == "" {
		return nil
	}
	if err := unix.Unmount(d.Dir, 0); err != nil {
		return fmt.Errorf("unmounting the scratch disk %s from %s: %w", d.Dev, d.Dir, err)
	}
	err := os.Remove(d.Dir)
	d.Dir = ""
	return errors.Join(err, wipe(d.Dev))
}

// wipe zeroes the first MiB of dev (the filesystem's signature) and syncs it.
func wipe(dev string) error {
	f, err := os.OpenFile(dev, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	_, werr := f.WriteAt(make([]byte, 1<<20), 0)
	return errors.Join(werr, f.Sync(), f.Close())
}

// hasScratchLabel tells whether dev holds an ext4 filesystem labelled scratchLabel
// (the superblock at 1024: magic 0xEF53 at 0x38, the volume name at 0x78).
func hasScratchLabel(dev string) bool {
	f, err := os.Open(dev)
	if err != nil {
		return false
	}
	defer f.Close()
	sb := make([]byte, 1024)
	if _, err := f.ReadAt(sb, 1024); err != nil {
		return false
	}
	if sb[0x38] != 0x53 || sb[0x39] != 0xEF {
		return false
	}
	name := sb[0x78 : 0x78+16]
	if i := bytes.IndexByte(name, 0); i >= 0 {
		name = name[:i]
	}
	return string(name) == scratchLabel
}

// pickScratch picks the scratch of an imaging run without bundle_destination: a
// mounted instance store volume with room for sizeMB (volume.DefaultScratch), with no
// disk; else an unused NVMe instance store disk with room for need bytes, to be
// formatted and mounted for the run (dir is /tmp then, the fallback if that fails);
// else /tmp, with no disk.
func pickScratch(sizeMB, need int64, logf func(string, ...any)) (dir string, disk *scratchDisk) {
	dir = volume.DefaultScratch(sizeMB << 20)
	if dir != os.TempDir() {
		return dir, nil
	}
	mounts, err := volume.ReadMounts()
	if err != nil {
		return dir, nil
	}
	d, err := findScratchDisk("/sys", mounts)
	if err != nil || d == nil {
		return dir, nil
	}
	if d.Size < need {
		logf("the NVMe instance store disk %s (%d MiB) is too small for the image's %d MiB: not used", d.Dev, d.Size>>20, need>>20)
		return dir, nil
	}
	return dir, d
}
