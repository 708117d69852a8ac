//go:build linux

package bundle

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// findExtents lists the data extents of the first size bytes of f with
// SEEK_DATA/SEEK_HOLE, without reading anything. A file system that does not support
// them gets one extent covering the whole file.
func findExtents(f *os.File, size int64) ([]Extent, error) {
	rc, err := f.SyscallConn()
	if err != nil {
		return nil, fmt.Errorf("finding data extents of image %s: %w", f.Name(), err)
	}
	var extents []Extent
	var seekErr error
	err = rc.Control(func(fd uintptr) {
		extents, seekErr = seekExtents(int(fd), size)
	})
	if err == nil {
		err = seekErr
	}
	if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.EOPNOTSUPP) {
		return []Extent{{0, size}}, nil // no hole support here: everything is data
	}
	if err != nil {
		return nil, fmt.Errorf("finding data extents of image %s (SEEK_DATA/SEEK_HOLE): %w", f.Name(), err)
	}
	return extents, nil
}

func seekExtents(fd int, size int64) ([]Extent, error) {
	var extents []Extent
	for off := int64(0); off < size; {
		data, err := unix.Seek(fd, off, unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) {
			break // only a hole from off to the end
		}
		if err != nil {
			return nil, err
		}
		if data >= size {
			break
		}
		hole, err := unix.Seek(fd, data, unix.SEEK_HOLE)
		if err != nil {
			return nil, err
		}
		hole = min(hole, size)
		extents = append(extents, Extent{data, hole - data})
		off = hole
	}
	return extents, nil
}
