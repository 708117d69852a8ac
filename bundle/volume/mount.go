package volume

import (
	"errors"
	"fmt"
	"time"

	"golang.org/x/sys/unix"
)

// mountFS mounts dev on dir. xfs refuses a second filesystem with the UUID of a
// mounted one, and the image deliberately has the source's UUID: hence nouuid.
func mountFS(dev, dir, fstype string, readOnly bool) error {
	var flags uintptr
	if readOnly {
		flags |= unix.MS_RDONLY
	}
	data := ""
	switch fstype {
	case "xfs":
		data = "nouuid"
	case "ext4":
		// No lazy inode-table zeroing thread writing into the image while we copy.
		data = "noinit_itable"
	}
	if err := unix.Mount(dev, dir, fstype, flags, data); err != nil {
		return fmt.Errorf("mounting %s (%s) on %s: %w", dev, fstype, dir, err)
	}
	return nil
}

// unmount unmounts dir, retrying briefly while something still holds it busy.
func unmount(dir string) error {
	var err error
	for i := 0; i < 50; i++ {
		err = unix.Unmount(dir, 0)
		if err == nil || errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOENT) {
			return nil
		}
		if !errors.Is(err, unix.EBUSY) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("unmounting %s: %w", dir, err)
}
