package volume

import (
	"errors"
	"fmt"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// Loop is an attached loop device. It is set up with LO_FLAGS_AUTOCLEAR, so the
// kernel detaches it when the last user goes away even if this process dies; Detach
// does it at once.
type Loop struct {
	Path string
	f    *os.File
}

// AttachLoop attaches a loop device to the byte range [offset, offset+size) of the
// file at path (size 0: to the end of the file), with syscalls only so that the
// util-linux version on the instance does not matter.
func AttachLoop(path string, offset, size int64) (*Loop, error) {
	backing, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return nil, fmt.Errorf("attaching loop device: %w", err)
	}
	defer backing.Close()
	ctl, err := os.OpenFile("/dev/loop-control", os.O_RDWR, 0)
	if err != nil {
		return nil, fmt.Errorf("attaching loop device: %w (is the loop module loaded?)", err)
	}
	defer ctl.Close()
	// Another process may grab the free device between GET_FREE and configure: retry.
	for attempt := 0; attempt < 20; attempt++ {
		n, err := unix.IoctlRetInt(int(ctl.Fd()), unix.LOOP_CTL_GET_FREE)
		if err != nil {
			return nil, fmt.Errorf("finding a free loop device: %w", err)
		}
		dev := fmt.Sprintf("/dev/loop%d", n)
		f, err := openLoopNode(dev, n)
		if err != nil {
			return nil, err
		}
		err = configureLoop(f, backing, offset, size)
		if errors.Is(err, unix.EBUSY) {
			f.Close()
			time.Sleep(10 * time.Millisecond)
			continue
		}
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("setting up %s on %s: %w", dev, path, err)
		}
		return &Loop{Path: dev, f: f}, nil
	}
	return nil, fmt.Errorf("setting up a loop device on %s: every free device was taken by someone else", path)
}

// openLoopNode opens /dev/loopN, creating the node when no udev made it.
func openLoopNode(dev string, n int) (*os.File, error) {
	f, err := os.OpenFile(dev, os.O_RDWR, 0)
	if errors.Is(err, os.ErrNotExist) {
		if err := unix.Mknod(dev, unix.S_IFBLK|0o660, int(unix.Mkdev(7, uint32(n)))); err != nil && !errors.Is(err, os.ErrExist) {
			return nil, fmt.Errorf("creating %s: %w", dev, err)
		}
		f, err = os.OpenFile(dev, os.O_RDWR, 0)
	}
	if err != nil {
		return nil, fmt.Errorf("opening %s: %w", dev, err)
	}
	return f, nil
}

func configureLoop(dev, backing *os.File, offset, size int64) error {
	info := unix.LoopInfo64{
		Offset:    uint64(offset),
		Sizelimit: uint64(size),
		Flags:     unix.LO_FLAGS_AUTOCLEAR,
	}
	copy(info.File_name[:], backing.Name())
	cfg := unix.LoopConfig{Fd: uint32(backing.Fd()), Info: info}
	err := unix.IoctlLoopConfigure(int(dev.Fd()), &cfg)
	if err == nil || !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOTTY) {
		return err
	}
	// Kernels before 5.8 have no LOOP_CONFIGURE.
	if err := unix.IoctlSetInt(int(dev.Fd()), unix.LOOP_SET_FD, int(backing.Fd())); err != nil {
		return err
	}
	if err := unix.IoctlLoopSetStatus64(int(dev.Fd()), &info); err != nil {
		unix.IoctlSetInt(int(dev.Fd()), unix.LOOP_CLR_FD, 0)
		return err
	}
	return nil
}

// Detach releases the loop device. With autoclear, LOOP_CLR_FD while the device is
// still mounted only marks it for release; closing our descriptor is what lets go.
func (l *Loop) Detach() error {
	if l == nil || l.f == nil {
		return nil
	}
	err := unix.IoctlSetInt(int(l.f.Fd()), unix.LOOP_CLR_FD, 0)
	if errors.Is(err, unix.ENXIO) { // already detached
		err = nil
	}
	cerr := l.f.Close()
	l.f = nil
	if err != nil {
		return fmt.Errorf("detaching %s: %w", l.Path, err)
	}
	if cerr != nil {
		return fmt.Errorf("detaching %s: %w", l.Path, cerr)
	}
	return nil
}
