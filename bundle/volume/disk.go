package volume

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

const sectorSize = 512

// SourceDisk is the partitioned disk that holds the volume, when it is a partition.
type SourceDisk struct {
	Path       string // block device (or, in tests, an image file) of the whole disk
	PartNumber int    // 1-based partition number of the volume
	Start      int64  // first sector of the volume's partition
}

// devNode returns a path to the block device major:minor: the /dev node the kernel
// named (sysfs uevent DEVNAME) if it is the right device, else a node made in tmpDir
// (containers and minimal systems often lack /dev/root-style names).
func devNode(sysfs string, major, minor uint32, tmpDir string) (string, error) {
	sys := filepath.Join(sysfs, "dev/block", fmt.Sprintf("%d:%d", major, minor))
	if ue, err := os.ReadFile(filepath.Join(sys, "uevent")); err == nil {
		for _, l := range strings.Split(string(ue), "\n") {
			if name, ok := strings.CutPrefix(l, "DEVNAME="); ok {
				p := "/dev/" + name
				var st unix.Stat_t
				if unix.Stat(p, &st) == nil && st.Mode&unix.S_IFMT == unix.S_IFBLK &&
					unix.Major(st.Rdev) == major && unix.Minor(st.Rdev) == minor {
					return p, nil
				}
			}
		}
	}
	p := filepath.Join(tmpDir, fmt.Sprintf("blockdev-%d-%d", major, minor))
	if err := unix.Mknod(p, unix.S_IFBLK|0o600, int(unix.Mkdev(major, minor))); err != nil && !errors.Is(err, os.ErrExist) {
		return "", fmt.Errorf("making a device node for block device %d:%d: %w", major, minor, err)
	}
	return p, nil
}

// findSourceDisk reports, from sysfs, whether block device major:minor is a partition
// and of which disk. It returns nil when the device is a whole disk (or not in sysfs).
func findSourceDisk(sysfs string, major, minor uint32, tmpDir string) (*SourceDisk, error) {
	link := filepath.Join(sysfs, "dev/block", fmt.Sprintf("%d:%d", major, minor))
	real, err := filepath.EvalSymlinks(link)
	if err != nil {
		return nil, nil
	}
	num, err := readSysInt(filepath.Join(real, "partition"))
	if err != nil {
		return nil, nil // not a partition
	}
	start, err := readSysInt(filepath.Join(real, "start"))
	if err != nil {
		return nil, fmt.Errorf("reading partition start of %s: %w", real, err)
	}
	disk := filepath.Dir(real)
	devStr, err := os.ReadFile(filepath.Join(disk, "dev"))
	if err != nil {
		return nil, fmt.Errorf("finding the disk of partition %s: %w", real, err)
	}
	ma, mi, _ := strings.Cut(strings.TrimSpace(string(devStr)), ":")
	dmaj, err1 := strconv.ParseUint(ma, 10, 32)
	dmin, err2 := strconv.ParseUint(mi, 10, 32)
	if err1 != nil || err2 != nil {
		return nil, fmt.Errorf("reading %s/dev: unexpected %q", disk, devStr)
	}
	node, err := devNode(sysfs, uint32(dmaj), uint32(dmin), tmpDir)
	if err != nil {
		return nil, err
	}
	return &SourceDisk{Path: node, PartNumber: int(num), Start: start}, nil
}

func readSysInt(p string) (int64, error) {
	b, err := os.ReadFile(p)
	if err != nil {
		return 0, err
	}
	return strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
}
