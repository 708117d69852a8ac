package agent

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"

	"golang.org/x/sys/unix"
)

// openTarget checks that dev is a block device a restore may overwrite and opens it
// for writing. It refuses, each with its own message:
//   - anything but a whole-disk block device (a partition, a file);
//   - the disk of the root file system;
//   - a disk with a mounted file system, or swap, on it or on any of its partitions,
//     or one held by device-mapper or md;
//   - a disk smaller than the image.
//
// The device is opened O_EXCL, so the kernel refuses it too if anything claimed it
// after these checks.
func openTarget(dev string, imageSize int64) (*os.File, int64, error) {
	var st unix.Stat_t
	if err := unix.Stat(dev, &st); err != nil {
		return nil, 0, fmt.Errorf("restore target %s: %w", dev, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFBLK {
		return nil, 0, fmt.Errorf("restore target %s is not a block device: give the device of the attached volume (/dev/xvdf, /dev/nvme1n1)", dev)
	}
	devno := devNumber(uint64(st.Rdev))
	sys := "/sys/dev/block/" + devno
	if _, err := os.Stat(filepath.Join(sys, "partition")); err == nil {
		return nil, 0, fmt.Errorf("restore target %s is a partition: give the whole disk; the image has its own partition table", dev)
	}
	// The disk and its partitions.
	ours := map[string]string{devno: dev}
	if entries, err := os.ReadDir(sys + "/"); err == nil {
		for _, e := range entries {
			d := filepath.Join(sys, e.Name())
			if _, err := os.Stat(filepath.Join(d, "partition")); err != nil {
				continue
			}
			if b, err := os.ReadFile(filepath.Join(d, "dev")); err == nil {
				ours[strings.TrimSpace(string(b))] = "/dev/" + e.Name()
			}
		}
	}
	mounts, err := readMounts()
	if err != nil {
		return nil, 0, err
	}
	for _, m := range mounts {
		if m.point == "/" && ours[diskOf(m.devno)] != "" {
			return nil, 0, fmt.Errorf("restore target %s is the disk of the root file system: attach a new volume and give its device", dev)
		}
	}
	var busy []string
	for _, m := range mounts {
		if name := ours[m.devno]; name != "" {
			busy = append(busy, fmt.Sprintf("%s mounted on %s", name, m.point))
		}
	}
	for _, s := range readSwaps() {
		var sst unix.Stat_t
		if unix.Stat(s, &sst) == nil && sst.Mode&unix.S_IFMT == unix.S_IFBLK {
			if name := ours[devNumber(uint64(sst.Rdev))]; name != "" {
				busy = append(busy, name+" in use as swap")
			}
		}
	}
	for no := range ours {
		if holders, _ := os.ReadDir("/sys/dev/block/" + no + "/holders"); len(holders) > 0 {
			var hs []string
			for _, h := range holders {
				hs = append(hs, h.Name())
			}
			busy = append(busy, fmt.Sprintf("%s held by %s", ours[no], strings.Join(hs, ", ")))
		}
	}
	if len(busy) > 0 {
		sort.Strings(busy)
		return nil, 0, fmt.Errorf("restore target %s is in use (%s): refusing to overwrite it; unmount it or attach a new volume", dev, strings.Join(busy, "; "))
	}
	f, err := os.OpenFile(dev, os.O_WRONLY|os.O_EXCL, 0)
	if err != nil {
		return nil, 0, fmt.Errorf("opening restore target %s: %w", dev, err)
	}
	size, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		f.Close()
		return nil, 0, fmt.Errorf("restore target %s: reading its size: %w", dev, err)
	}
	if size < imageSize {
		f.Close()
		return nil, 0, fmt.Errorf("restore target %s is %d bytes, smaller than the %d-byte image: the volume must be at least %d GiB", dev, size, imageSize, (imageSize+(1<<30)-1)>>30)
	}
	return f, size, nil
}

func devNumber(rdev uint64) string {
	return fmt.Sprintf("%d:%d", unix.Major(rdev), unix.Minor(rdev))
}

// diskOf returns the device number of the disk a partition devno is on (devno itself
// for a disk).
func diskOf(devno string) string {
	sys := "/sys/dev/block/" + devno
	if _, err := os.Stat(filepath.Join(sys, "partition")); err != nil {
		return devno
	}
	b, err := os.ReadFile(filepath.Join(sys, "..", "dev"))
	if err != nil {
		return devno
	}
	return strings.TrimSpace(string(b))
}

type mountEntry struct{ devno, point string }

// readMounts lists this mount namespace's mounts (major:minor and mount point) from
// /proc/self/mountinfo.
func readMounts() ([]mountEntry, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, fmt.Errorf("checking the restore target: %w", err)
	}
	defer f.Close()
	var out []mountEntry
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 {
			continue
		}
		out = append(out, mountEntry{devno: fields[2], point: unescapeMount(fields[4])})
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("checking the restore target: reading /proc/self/mountinfo: %w", err)
	}
	return out, nil
}

// unescapeMount undoes mountinfo's octal escapes (\040 for a space).
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			var v int
			if _, err := fmt.Sscanf(s[i+1:i+4], "%03o", &v); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func readSwaps() []string {
	b, err := os.ReadFile("/proc/swaps")
	if err != nil {
		return nil
	}
	var out []string
	for i, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); i > 0 && len(f) > 0 {
			out = append(out, unescapeMount(f[0]))
		}
	}
	return out
}

// reNVMeDisk matches an NVMe namespace's whole-disk name (nvme1n1, not nvme1n1p1).
var reNVMeDisk = regexp.MustCompile(`^nvme[0-9]+n[0-9]+$`)

// findVolume returns the device of the attached EBS volume volumeID: the NVMe disk
// whose serial is the volume id without its dash (Nitro), else the attach name as the
// kernel shows it (/dev/sdf, or /dev/xvdf in a Xen guest), else the only NVMe disk
// that is not in use and has the image's size or more, when there is exactly one.
func findVolume(volumeID, attachName string, imageSize int64) (string, error) {
	serial := strings.ReplaceAll(volumeID, "-", "")
	disks, _ := os.ReadDir("/sys/block")
	for _, d := range disks {
		b, err := os.ReadFile(filepath.Join("/sys/block", d.Name(), "device", "serial"))
		if err == nil && strings.TrimSpace(string(b)) == serial {
			return "/dev/" + d.Name(), nil
		}
	}
	if attachName != "" {
		cands := []string{attachName}
		if strings.HasPrefix(attachName, "/dev/sd") {
			cands = append(cands, "/dev/xvd"+strings.TrimPrefix(attachName, "/dev/sd"))
		}
		for _, c := range cands {
			var st unix.Stat_t
			if unix.Stat(c, &st) == nil && st.Mode&unix.S_IFMT == unix.S_IFBLK {
				return c, nil
			}
		}
	}
	// The NVMe disks the kernel lists, and those in /dev: in a container (the local
	// environment's namespace instances) /sys is the host's and a volume is a node in
	// /dev only.
	names := map[string]bool{}
	for _, d := range disks {
		names[d.Name()] = true
	}
	if devs, err := os.ReadDir("/dev"); err == nil {
		for _, d := range devs {
			names[d.Name()] = true
		}
	}
	sorted := make([]string, 0, len(names))
	for n := range names {
		if reNVMeDisk.MatchString(n) {
			sorted = append(sorted, n)
		}
	}
	sort.Strings(sorted)
	var free []string
	for _, name := range sorted {
		dev := "/dev/" + name
		f, _, err := openTarget(dev, imageSize)
		if err == nil {
			f.Close()
			free = append(free, dev)
		}
	}
	if len(free) == 1 {
		return free[0], nil
	}
	return "", fmt.Errorf("cannot find the device of volume %s (attached as %s): no NVMe disk with serial %s, no %s, and %d unused NVMe disks of the image's size", volumeID, attachName, serial, attachName, len(free))
}
