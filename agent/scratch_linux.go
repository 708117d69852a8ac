package agent

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/instancestore/packer-plugin-instancestore/bundle/volume"
)

// nvmeInstanceStoreModel is the model string of an NVMe instance store disk on the
// Nitro types with local storage (m5d, c5d, r5d, i3, ...).
const nvmeInstanceStoreModel = "Amazon EC2 NVMe Instance Storage"

// scratchDisk is an unused NVMe instance store disk the agent formats and mounts as
// scratch, then unmounts.
type scratchDisk struct {
	Dev  string // /dev/nvme1n1
	Size int64
	Dir  string // where it is mounted
}

// findScratchDisk finds, under sysfs (/sys), the largest NVMe instance store disk that
// is not in use: not mounted, no partitions, no holders (LVM, RAID, dm), and not the
// disk of any mount.
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
		model, err := os.ReadFile(filepath.Join(dir, "device", "model"))
		if err != nil || strings.TrimSpace(string(model)) != nvmeInstanceStoreModel {
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
// mounts it on a new directory under parent.
func (d *scratchDisk) mount(ctx context.Context, parent string) error {
	ok, err := blank(d.Dev)
	if err != nil {
		return fmt.Errorf("reading the instance store disk %s: %w", d.Dev, err)
	}
	if !ok {
		return fmt.Errorf("the instance store disk %s is not blank (it holds data): it is not formatted as scratch", d.Dev)
	}
	if out, err := exec.CommandContext(ctx, "mkfs.ext4", "-q", "-F", "-E", "nodiscard,lazy_itable_init=1", "-L", "is-scratch", d.Dev).CombinedOutput(); err != nil {
		return fmt.Errorf("formatting the instance store disk %s as scratch: %v: %s", d.Dev, err, strings.TrimSpace(string(out)))
	}
	dir, err := os.MkdirTemp(parent, "instancestore-scratch-")
	if err != nil {
		return err
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
	f, ferr := os.OpenFile(d.Dev, os.O_WRONLY, 0)
	if ferr != nil {
		return errors.Join(err, ferr)
	}
	_, werr := f.WriteAt(make([]byte, 1<<20), 0)
	return errors.Join(err, werr, f.Sync(), f.Close())
}

// instanceStoreScratch picks the scratch of an imaging run without bundle_destination:
// a mounted instance store volume with room (volume.DefaultScratch); else an unused
// blank NVMe instance store disk, formatted and mounted for the run (release unmounts
// it); else /tmp.
func instanceStoreScratch(ctx context.Context, need int64, logf func(string, ...any)) (dir string, release func() error, err error) {
	none := func() error { return nil }
	dir = volume.DefaultScratch(need)
	if dir != os.TempDir() {
		return dir, none, nil
	}
	mounts, err := volume.ReadMounts()
	if err != nil {
		return dir, none, nil
	}
	d, err := findScratchDisk("/sys", mounts)
	if err != nil || d == nil {
		return dir, none, nil
	}
	if d.Size < need {
		logf("the NVMe instance store disk %s (%d MiB) is too small for the image's %d MiB: not used", d.Dev, d.Size>>20, need>>20)
		return dir, none, nil
	}
	if err := d.mount(ctx, "/run"); err != nil {
		logf("warning: %v", err)
		return dir, none, nil
	}
	logf("scratch: the NVMe instance store disk %s (%d MiB), formatted and mounted on %s for this run", d.Dev, d.Size>>20, d.Dir)
	return d.Dir, d.unmount, nil
}
