package volume

import (
	"context"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
)

// MkfsCommand returns the mkfs command line that makes, on dev, a filesystem of
// size bytes with the type, label, UUID and features of src. The instance's own mkfs
// is used: it is the one whose defaults and feature set its kernel mounts.
func MkfsCommand(ctx context.Context, src *FSInfo, dev string, size int64) (*exec.Cmd, error) {
	switch src.Type {
	case "ext2", "ext3", "ext4":
		return exec.CommandContext(ctx, "mke2fs", mke2fsArgs(src, dev, size)...), nil
	case "xfs":
		args, err := mkfsXFSArgs(ctx, src, dev)
		if err != nil {
			return nil, err
		}
		return exec.CommandContext(ctx, "mkfs.xfs", args...), nil
	}
	return nil, fmt.Errorf("filesystem type %q: %w: only ext2/3/4 and xfs can be imaged", src.Type, ErrUnknownFS)
}

func mke2fsArgs(src *FSInfo, dev string, size int64) []string {
	args := []string{"-F", "-q", "-t", src.Type,
		"-b", strconv.Itoa(src.BlockSize),
		"-U", src.UUIDString(),
		"-L", src.Label,
		// "none" first: the features are exactly the source's, not mke2fs.conf's.
		"-O", strings.Join(append([]string{"none"}, src.ExtFeatures...), ","),
		"-E", "nodiscard,lazy_itable_init=1,lazy_journal_init=1",
	}
	if src.InodeSize > 128 || src.Type != "ext2" {
		args = append(args, "-I", strconv.Itoa(src.InodeSize))
	}
	if src.Inodes > 0 && src.Blocks > 0 {
		// Same bytes-per-inode as the source, so the image has room for as many files
		// per gigabyte (clamped to what mke2fs accepts).
		bpi := int64(src.Blocks) * int64(src.BlockSize) / int64(src.Inodes)
		bpi = max(1024, min(bpi, 1<<26))
		if bpi < int64(src.InodeSize) {
			bpi = int64(src.InodeSize)
		}
		args = append(args, "-i", strconv.FormatInt(bpi, 10))
	}
	if src.Blocks > 0 {
		pct := float64(src.ReservedBlocks) * 100 / float64(src.Blocks)
		args = append(args, "-m", strconv.FormatFloat(pct, 'f', 2, 64))
	}
	args = append(args, dev, strconv.FormatInt(size/int64(src.BlockSize), 10))
	return args
}

func b01(b bool) string {
	if b {
		return "1"
	}
	return "0"
}

func mkfsXFSArgs(ctx context.Context, src *FSInfo, dev string) ([]string, error) {
	// Ask the installed mkfs.xfs which switches it knows: older ones lack bigtime,
	// inobtcount and nrext64, and passing an unknown one is an error.
	usage, _ := exec.CommandContext(ctx, "mkfs.xfs").CombinedOutput()
	if len(usage) == 0 {
		return nil, fmt.Errorf("mkfs.xfs not found: install xfsprogs to image an xfs volume")
	}
	knows := func(opt string) bool { return strings.Contains(string(usage), opt+"=") }
	x := src.XFS
	m := []string{"uuid=" + src.UUIDString(), "crc=" + b01(x.CRC)}
	i := []string{"size=" + strconv.Itoa(src.InodeSize)}
	if x.CRC {
		m = append(m, "finobt="+b01(x.FInobt), "rmapbt="+b01(x.RmapBT), "reflink="+b01(x.Reflink))
		i = append(i, "sparse="+b01(x.Sparse))
		for _, o := range []struct {
			name string
			on   bool
			list *[]string
		}{{"bigtime", x.BigTime, &m}, {"inobtcount", x.InobtCount, &m}, {"nrext64", x.NRExt64, &i}} {
			if knows(o.name) {
				*o.list = append(*o.list, o.name+"="+b01(o.on))
			} else if o.on {
				return nil, fmt.Errorf("the source xfs uses %s, which this mkfs.xfs does not know: update xfsprogs", o.name)
			}
		}
	}
	args := []string{"-f", "-q", "-K",
		"-b", "size=" + strconv.Itoa(src.BlockSize),
		"-m", strings.Join(m, ","),
		"-i", strings.Join(i, ","),
		"-n", "size=" + strconv.Itoa(x.DirBlockSize) + ",ftype=" + b01(x.FType),
	}
	if src.Label != "" {
		args = append(args, "-L", src.Label)
	}
	return append(args, dev), nil
}

// runMkfs runs cmd and returns its output in the error when it fails.
func runMkfs(cmd *exec.Cmd) error {
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s: %w: %s", strings.Join(cmd.Args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}
