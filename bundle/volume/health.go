package volume

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// ErrImageWrite is returned when writes to the image were lost: the image's loop
// device or the scratch filesystem under it reported an error, or the image
// filesystem recorded one. The copy's own writes can all succeed while this happens,
// because the page cache writes the image back later: a full or failing scratch shows
// only in syncfs, fsync of the image file and the filesystem's error state.
var ErrImageWrite = errors.New("writes to the image were lost")

// ErrScratchFull is returned, with Config.RequireScratchRoom, before anything is
// imaged when the scratch directory has less room than the image's data.
var ErrScratchFull = errors.New("not enough room for the image")

// imageGuard checks, after the copy, that every write reached the image file.
type imageGuard struct {
	file    *os.File // the image file, opened before the loop device: its fsync reports every writeback error since
	loop    string   // /dev/loopN
	dev     *os.File // the loop device, open since before mkfs: its fsync reports the block device's lost writes
	mnt     string   // where the image filesystem is mounted
	fsType  string
	fsOff   int64  // byte offset of the filesystem in the image
	scratch string // for the message
}

// scratchErr wraps what went wrong into an error that says where to look.
func (g *imageGuard) scratchErr(what string, err error) error {
	free := ""
	var s unix.Statfs_t
	if unix.Statfs(g.scratch, &s) == nil {
		free = fmt.Sprintf(", %d MiB free now", int64(s.Bavail)*int64(s.Bsize)>>20)
	}
	msg := fmt.Sprintf("%s: %v", what, err)
	if err == nil {
		msg = what
	}
	return fmt.Errorf("%w: %s; the scratch filesystem under the image (scratch directory %s%s) is full or failing (see dmesg): use a scratch directory with room for the whole image, such as an instance-store volume",
		ErrImageWrite, msg, g.scratch, free)
}

// checkMounted runs while the image is mounted: it flushes the image filesystem and
// reads its error state.
func (g *imageGuard) checkMounted() error {
	fd, err := unix.Open(g.mnt, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return g.scratchErr("opening the image mount", err)
	}
	defer unix.Close(fd)
	// syncfs reports writeback errors of the filesystem since it was mounted
	// (Linux 5.8+), and an xfs that shut down answers EIO.
	if err := unix.Syncfs(fd); err != nil {
		return g.scratchErr("flushing the image filesystem", err)
	}
	if g.dev != nil {
		if err := g.dev.Sync(); err != nil {
			return g.scratchErr("flushing the image's loop device "+g.loop, err)
		}
	}
	var st unix.Statfs_t
	if err := unix.Fstatfs(fd, &st); err != nil {
		return g.scratchErr("reading the image filesystem's state", err)
	}
	if st.Flags&unix.ST_RDONLY != 0 {
		return g.scratchErr("the image filesystem turned read-only (its journal was aborted after write errors)", nil)
	}
	if isExtType(g.fsType) {
		if n := ext4ErrorsCount(g.loop); n > 0 {
			return g.scratchErr(fmt.Sprintf("the image filesystem recorded %d errors", n), nil)
		}
	}
	return nil
}

// checkDetached runs after unmount and detach: the image file's own writeback, then
// the error state the filesystem wrote into its superblock.
func (g *imageGuard) checkDetached() error {
	if err := g.file.Sync(); err != nil {
		return g.scratchErr("flushing the image file", err)
	}
	if isExtType(g.fsType) {
		sb := make([]byte, 1024)
		if _, err := g.file.ReadAt(sb, g.fsOff+1024); err != nil {
			return g.scratchErr("reading back the image superblock", err)
		}
		state := binary.LittleEndian.Uint16(sb[0x3a:])
		errs := binary.LittleEndian.Uint32(sb[0x194:])
		if state&2 != 0 || errs > 0 { // EXT2_ERROR_FS, s_error_count
			return g.scratchErr(fmt.Sprintf("the image filesystem is marked with errors (state %#x, %d errors)", state, errs), nil)
		}
	}
	return nil
}

func isExtType(t string) bool { return t == "ext2" || t == "ext3" || t == "ext4" }

// ext4ErrorsCount reads /sys/fs/ext4/<loopN>/errors_count (0 when absent).
func ext4ErrorsCount(loop string) int {
	b, err := os.ReadFile(filepath.Join("/sys/fs/ext4", filepath.Base(loop), "errors_count"))
	if err != nil {
		return 0
	}
	n, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	return n
}
