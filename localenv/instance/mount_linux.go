package instance

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"
)

// loFlagsAutoclear detaches a loop device when its last user (here: the mount) goes.
const loFlagsAutoclear = 4

// MountImage loop-mounts a raw disk image read-write under StateDir/mnt and returns the
// mount point. The image is either a whole filesystem (ext2/3/4, XFS or Btrfs) or a
// partitioned disk (MBR or GPT), of which the first partition that holds one of those
// filesystems is mounted. unmount undoes everything (the loop device detaches itself)
// and is safe to call twice.
func MountImage(path string) (dir string, unmount func() error, err error) {
	f, err := os.Open(path)
	if err != nil {
		return "", nil, fmt.Errorf("mounting image: %w", err)
	}
	offset, size, fstype, err := findFilesystem(f)
	f.Close()
	if err != nil {
		return "", nil, fmt.Errorf("mounting image %s: %w", path, err)
	}
	return MountImageAt(path, offset, size, fstype)
}

// MountImageAt loop-mounts the filesystem of type fstype found at offset in the image
// file (size 0 means up to the end of the file).
func MountImageAt(path string, offset, size int64, fstype string) (dir string, unmount func() error, err error) {
	if os.Geteuid() != 0 {
		return "", nil, errors.New("mounting an image needs root (loop devices)")
	}
	name, err := newName()
	if err != nil {
		return "", nil, err
	}
	dir = filepath.Join(StateDir, "mnt", name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", nil, fmt.Errorf("creating mount point: %w", err)
	}
	img, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		os.Remove(dir)
		return "", nil, fmt.Errorf("mounting image: %w", err)
	}
	defer img.Close()
	loop, err := attachLoop(img, offset, size)
	if err != nil {
		os.Remove(dir)
		return "", nil, fmt.Errorf("mounting image %s: %w", path, err)
	}
	// The mount keeps the loop device busy; closing our descriptor afterwards lets
	// autoclear detach it at unmount (or now, if the mount fails).
	defer loop.Close()
	if err := unix.Mount(loop.Name(), dir, fstype, 0, ""); err != nil {
		os.Remove(dir)
		return "", nil, fmt.Errorf("mounting image %s (%s at offset %d) on %s: %w", path, fstype, offset, dir, err)
	}
	done := false
	unmount = func() error {
		if done {
			return nil
		}
		var err error
		for range 100 {
			if err = unix.Unmount(dir, 0); !errors.Is(err, unix.EBUSY) {
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
		if err != nil && !errors.Is(err, unix.EINVAL) {
			return fmt.Errorf("unmounting %s: %w (stop the instances using it first)", dir, err)
		}
		done = true
		return os.Remove(dir)
	}
	return dir, unmount, nil
}

// attachLoop binds a free loop device to img[offset:offset+size].
func attachLoop(img *os.File, offset, size int64) (*os.File, error) {
	ctl, err := os.OpenFile("/dev/loop-control", os.O_RDWR, 0)
	if err != nil {
		return nil, fmt.Errorf("opening /dev/loop-control: %w", err)
	}
	defer ctl.Close()
	var lastErr error
	for range 20 {
		n, err := unix.IoctlRetInt(int(ctl.Fd()), unix.LOOP_CTL_GET_FREE)
		if err != nil {
			return nil, fmt.Errorf("finding a free loop device: %w", err)
		}
		dev := fmt.Sprintf("/dev/loop%d", n)
		if _, err := os.Stat(dev); errors.Is(err, os.ErrNotExist) {
			// No udev in some containers: make the node ourselves.
			if err := unix.Mknod(dev, unix.S_IFBLK|0o660, int(unix.Mkdev(7, uint32(n)))); err != nil && !errors.Is(err, unix.EEXIST) {
				return nil, fmt.Errorf("creating %s: %w", dev, err)
			}
		}
		loop, err := os.OpenFile(dev, os.O_RDWR, 0)
		if err != nil {
			return nil, fmt.Errorf("opening %s: %w", dev, err)
		}
		cfg := unix.LoopConfig{Fd: uint32(img.Fd())}
		cfg.Info.Offset = uint64(offset)
		cfg.Info.Sizelimit = uint64(size)
		cfg.Info.Flags = loFlagsAutoclear
		copy(cfg.Info.File_name[:len(cfg.Info.File_name)-1], img.Name())
		err = unix.IoctlLoopConfigure(int(loop.Fd()), &cfg)
		if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOTTY) {
			// Kernels before 5.8: the two-step way.
			if err = unix.IoctlSetInt(int(loop.Fd()), unix.LOOP_SET_FD, int(img.Fd())); err == nil {
				if err = unix.IoctlLoopSetStatus64(int(loop.Fd()), &cfg.Info); err != nil {
					unix.IoctlSetInt(int(loop.Fd()), unix.LOOP_CLR_FD, 0)
				}
			}
		}
		if err == nil {
			return loop, nil
		}
		loop.Close()
		lastErr = err
		if !errors.Is(err, unix.EBUSY) {
			break
		}
		// Another process took the device between GET_FREE and CONFIGURE.
	}
	return nil, fmt.Errorf("attaching a loop device: %w", lastErr)
}

// findFilesystem locates the filesystem in a raw image: the whole file, or the first
// MBR or GPT partition that holds one.
func findFilesystem(r io.ReaderAt) (offset, size int64, fstype string, err error) {
	if t := probeFS(r, 0); t != "" {
		return 0, 0, t, nil
	}
	mbr := make([]byte, 512)
	if _, err := r.ReadAt(mbr, 0); err != nil {
		return 0, 0, "", fmt.Errorf("reading partition table: %w", err)
	}
	if mbr[510] != 0x55 || mbr[511] != 0xaa {
		return 0, 0, "", errors.New("no ext4, XFS or Btrfs filesystem and no partition table found")
	}
	type part struct{ start, size int64 }
	var parts []part
	if mbr[446+4] == 0xee { // protective MBR: GPT
		hdr := make([]byte, 92)
		if _, err := r.ReadAt(hdr, 512); err != nil || !bytes.Equal(hdr[:8], []byte("EFI PART")) {
			return 0, 0, "", errors.New("protective MBR without a GPT header")
		}
		entLBA := int64(binary.LittleEndian.Uint64(hdr[72:]))
		count := int(binary.LittleEndian.Uint32(hdr[80:]))
		esize := int(binary.LittleEndian.Uint32(hdr[84:]))
		if esize < 128 || count > 1024 {
			return 0, 0, "", errors.New("implausible GPT header")
		}
		ents := make([]byte, count*esize)
		if _, err := r.ReadAt(ents, entLBA*512); err != nil {
			return 0, 0, "", fmt.Errorf("reading GPT entries: %w", err)
		}
		for i := range count {
			e := ents[i*esize:]
			first := int64(binary.LittleEndian.Uint64(e[32:]))
			last := int64(binary.LittleEndian.Uint64(e[40:]))
			if first != 0 && last >= first {
				parts = append(parts, part{first * 512, (last - first + 1) * 512})
			}
		}
	} else {
		for i := range 4 {
			e := mbr[446+16*i:]
			start := int64(binary.LittleEndian.Uint32(e[8:]))
			n := int64(binary.LittleEndian.Uint32(e[12:]))
			if e[4] != 0 && n > 0 {
				parts = append(parts, part{start * 512, n * 512})
			}
		}
	}
	for _, p := range parts {
		if t := probeFS(r, p.start); t != "" {
			return p.start, p.size, t, nil
		}
	}
	return 0, 0, "", fmt.Errorf("none of the %d partitions holds an ext4, XFS or Btrfs filesystem", len(parts))
}

// probeFS names the filesystem whose superblock starts at off, or returns "".
func probeFS(r io.ReaderAt, off int64) string {
	b := make([]byte, 0x10048)
	n, _ := r.ReadAt(b, off)
	b = b[:n]
	switch {
	case len(b) >= 1082 && b[1080] == 0x53 && b[1081] == 0xef:
		return "ext4" // the ext4 driver mounts ext2 and ext3 too
	case len(b) >= 4 && string(b[:4]) == "XFSB":
		return "xfs"
	case len(b) >= 0x10048 && string(b[0x10040:0x10048]) == "_BHRfS_M":
		return "btrfs"
	}
	return ""
}
