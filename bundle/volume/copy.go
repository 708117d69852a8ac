package volume

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// CopyStats counts what a copy did.
type CopyStats struct {
	Files, Dirs, Symlinks, Devices, FIFOs, HardLinks int64
	Sockets                                          int64 // skipped: a socket is only meaningful to a running process
	Bytes                                            int64 // file data read and written (holes excluded)
	Warnings                                         int64
}

// Copier copies the paths a Plan selects from the live volume into Dst (the mounted
// image), keeping everything the kernel stores about a file that a copy can set: type,
// content with its holes, hard links, owner, mode bits, atime and mtime, and all
// extended attributes (which include POSIX ACLs and file capabilities). Directories
// get their times after their contents are written.
type Copier struct {
	Plan *Plan
	Dst  string
	// Warn receives problems that do not stop the copy (files that vanished or changed
	// while being copied, attributes the image cannot hold). nil: discarded.
	Warn func(msg string)
	// Progress, when set, gets a line every ProgressInterval (default 2 s) and at the end.
	Progress         io.Writer
	ProgressInterval time.Duration
	// Under, when set, is where the volume's own filesystem is visible with nothing
	// mounted on it (a bind mount of the volume): mount-point directories take their
	// metadata from there, and /dev's contents are read from there.
	Under string

	stats      CopyStats
	rootDev    uint64
	underRoots []string // image paths read from Under
	links      map[inodeKey]string
	buf        []byte
	flags      []pendingFlags
}

// pendingFlags are inode flags (chattr) set after the whole copy: an immutable file
// could not get its times, an immutable directory its entries, nor an immutable file
// its other hard links.
type pendingFlags struct {
	path  string
	flags uint32
}

// copiedFlags are the inode flags that describe how a file is to be treated (as
// opposed to how it is stored): sync, immutable, append-only, nodump, noatime,
// dirsync, topdir.
const copiedFlags = 0x8 | 0x10 | 0x20 | 0x40 | 0x80 | 0x10000 | 0x20000

type inodeKey struct {
	dev, ino uint64
}

// ErrImageFull is returned when the image runs out of space or inodes.
var ErrImageFull = errors.New("the image filesystem is full")

// Stats returns the counters (safe to call while Run is going).
func (c *Copier) Stats() CopyStats {
	return CopyStats{
		Files: atomic.LoadInt64(&c.stats.Files), Dirs: atomic.LoadInt64(&c.stats.Dirs),
		Symlinks: atomic.LoadInt64(&c.stats.Symlinks), Devices: atomic.LoadInt64(&c.stats.Devices),
		FIFOs: atomic.LoadInt64(&c.stats.FIFOs), HardLinks: atomic.LoadInt64(&c.stats.HardLinks),
		Sockets: atomic.LoadInt64(&c.stats.Sockets), Bytes: atomic.LoadInt64(&c.stats.Bytes),
		Warnings: atomic.LoadInt64(&c.stats.Warnings),
	}
}

func (c *Copier) warn(format string, args ...any) {
	atomic.AddInt64(&c.stats.Warnings, 1)
	if c.Warn != nil {
		c.Warn(fmt.Sprintf(format, args...))
	}
}

// Run copies the whole volume.
func (c *Copier) Run(ctx context.Context) error {
	c.links = map[inodeKey]string{}
	c.buf = make([]byte, 1<<20)
	stop := c.startProgress()
	defer stop()
	var st unix.Stat_t
	if err := unix.Lstat(c.Plan.SystemPath("/"), &st); err != nil {
		return fmt.Errorf("reading volume %s: %w", c.Plan.Volume, err)
	}
	c.rootDev = st.Dev
	// Write back dirty data first: SEEK_DATA does not see delayed allocations in
	// block-mapped (ext2/ext3-style) files, and would make their fresh data holes.
	c.syncFS(c.Plan.SystemPath("/"))
	for _, inc := range c.Plan.include {
		c.syncFS(c.Plan.SystemPath(inc))
	}
	if err := c.copyDir(ctx, "/", &st, Decision{Action: Copy}); err != nil {
		return err
	}
	if err := c.devNodes(); err != nil {
		return err
	}
	return c.applyFlags()
}

// src is where the copy reads the image path ip: the live system, or Under for what
// lies beneath a mount.
func (c *Copier) src(ip string) string {
	for _, r := range c.underRoots {
		if within(ip, r) {
			return c.Under + ip
		}
	}
	return c.Plan.SystemPath(ip)
}

// beneathMount handles an entry of the volume that another filesystem is mounted
// on (its live st is on another device): the image gets the volume's own entry
// beneath the mount, and for /dev also what the volume holds there (device nodes a
// kernel needs before devtmpfs is mounted).
func (c *Copier) beneathMount(ip string, st *unix.Stat_t, d Decision) (*unix.Stat_t, Decision) {
	if c.Under == "" || st.Dev == c.rootDev || d.Action != EmptyDir && ip != "/dev" {
		return st, d // on the volume, or an included (-i) mount whose contents are wanted
	}
	var under unix.Stat_t
	if err := unix.Lstat(c.Under+ip, &under); err != nil {
		return st, d // a mount under another mount: nothing of the volume beneath it
	}
	c.underRoots = append(c.underRoots, ip)
	if ip == "/dev" && under.Mode&unix.S_IFMT == unix.S_IFDIR {
		d = Decision{Copy, ""}
	}
	return &under, d
}

// standardDevNodes are the nodes ec2-bundle-vol creates in /dev: a kernel booting
// without an initramfs opens /dev/console before anything mounts devtmpfs.
var standardDevNodes = []struct {
	name         string
	major, minor uint32
	mode         uint32
}{
	{"null", 1, 3, 0o666}, {"zero", 1, 5, 0o666}, {"tty", 5, 0, 0o666}, {"console", 5, 1, 0o600},
}

// devNodes creates, in the image's /dev (when the volume has one), each standard
// node the volume itself did not hold.
func (c *Copier) devNodes() error {
	if c.Plan.Decide("/dev").Action == Skip {
		return nil
	}
	var st unix.Stat_t
	if unix.Lstat(c.Dst+"/dev", &st) != nil || st.Mode&unix.S_IFMT != unix.S_IFDIR {
		return nil
	}
	for _, n := range standardDevNodes {
		p := c.Dst + "/dev/" + n.name
		if unix.Lstat(p, &st) == nil {
			continue
		}
		if err := unix.Mknod(p, unix.S_IFCHR|n.mode, int(unix.Mkdev(n.major, n.minor))); err != nil {
			return dstErr("creating node", "/dev/"+n.name, err)
		}
		if err := unix.Chmod(p, n.mode); err != nil { // mknod applies the umask
			return dstErr("setting mode of", "/dev/"+n.name, err)
		}
		atomic.AddInt64(&c.stats.Devices, 1)
	}
	return nil
}

// syncFS flushes the filesystem holding p (syncfs(2)).
func (c *Copier) syncFS(p string) {
	fd, err := unix.Open(p, unix.O_RDONLY|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
	if err != nil {
		return // a missing include is reported when it is copied
	}
	defer unix.Close(fd)
	if err := unix.Syncfs(fd); err != nil {
		c.warn("flushing the filesystem of %s: %v", p, err)
	}
}

// inodeFlags reads the chattr flags of a regular file or directory (0 when the
// filesystem has none).
func inodeFlags(p string) uint32 {
	fd, err := openNoAtime(p, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK)
	if err != nil {
		return 0
	}
	defer unix.Close(fd)
	v, err := unix.IoctlGetUint32(fd, unix.FS_IOC_GETFLAGS)
	if err != nil {
		return 0
	}
	return v & copiedFlags
}

func (c *Copier) applyFlags() error {
	for i := len(c.flags) - 1; i >= 0; i-- {
		pf := c.flags[i]
		fd, err := unix.Open(pf.path, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
		if err != nil {
			return dstErr("opening", pf.path, err)
		}
		cur, err := unix.IoctlGetUint32(fd, unix.FS_IOC_GETFLAGS)
		if err == nil {
			err = unix.IoctlSetPointerInt(fd, unix.FS_IOC_SETFLAGS, int(cur&^copiedFlags|pf.flags))
		}
		unix.Close(fd)
		if err != nil {
			c.warn("the image cannot hold the inode flags %#x of %s: %v", pf.flags, pf.path, err)
		}
	}
	return nil
}

func (c *Copier) startProgress() func() {
	if c.Progress == nil {
		return func() {}
	}
	every := c.ProgressInterval
	if every <= 0 {
		every = 2 * time.Second
	}
	start := time.Now()
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	line := func() {
		s := c.Stats()
		secs := time.Since(start).Seconds()
		fmt.Fprintf(c.Progress, "copy: %d files, %d dirs, %.1f MiB, %.1f MiB/s, %d warnings\n",
			s.Files+s.Symlinks+s.Devices+s.FIFOs+s.HardLinks, s.Dirs, float64(s.Bytes)/(1<<20),
			float64(s.Bytes)/(1<<20)/max(secs, 0.001), s.Warnings)
	}
	go func() {
		defer wg.Done()
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-done:
				line()
				return
			case <-t.C:
				line()
			}
		}
	}()
	return func() { close(done); wg.Wait() }
}

// dstErr turns a write failure on the image into an error the user can act on.
func dstErr(op, p string, err error) error {
	if errors.Is(err, unix.ENOSPC) || errors.Is(err, unix.EDQUOT) {
		return fmt.Errorf("%s %s: %w (%v): give a larger image size", op, p, ErrImageFull, err)
	}
	return fmt.Errorf("%s %s in the image: %w", op, p, err)
}

func isVanished(err error) bool {
	return errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENOTDIR)
}

// copyDir creates the directory ip, copies what the plan selects inside it, then sets
// its metadata (last, so that creating entries does not change its times).
func (c *Copier) copyDir(ctx context.Context, ip string, st *unix.Stat_t, d Decision) error {
	dst := c.Dst + ip
	if ip != "/" {
		if err := unix.Mkdir(dst, 0o700); err != nil && !errors.Is(err, unix.EEXIST) {
			return dstErr("creating directory", ip, err)
		}
	}
	atomic.AddInt64(&c.stats.Dirs, 1)
	if d.Action == Copy || d.Action == Partial {
		if err := c.copyChildren(ctx, ip, d.Action == Partial); err != nil {
			return err
		}
	}
	return c.setMeta(ip, st, false)
}

func (c *Copier) copyChildren(ctx context.Context, ip string, partial bool) error {
	src := c.src(ip)
	fd, err := openNoAtime(src, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW)
	if err != nil {
		if isVanished(err) {
			c.warn("directory %s vanished during the copy", src)
			return nil
		}
		c.warn("cannot read directory %s: %v", src, err)
		return nil
	}
	dir := os.NewFile(uintptr(fd), src)
	entries, err := dir.ReadDir(-1)
	dir.Close()
	if err != nil {
		c.warn("reading directory %s: %v", src, err)
	}
	for _, e := range entries {
		if err := ctx.Err(); err != nil {
			return err
		}
		child := path.Join(ip, e.Name())
		if partial && !c.Plan.IncludeRelated(child) {
			continue
		}
		d := c.Plan.Decide(child)
		if d.Action == Skip {
			c.Plan.Note(child, d)
			continue
		}
		if err := c.copyEntry(ctx, child, d); err != nil {
			return err
		}
	}
	return nil
}

func (c *Copier) copyEntry(ctx context.Context, ip string, d Decision) error {
	src := c.src(ip)
	var lst unix.Stat_t
	if err := unix.Lstat(src, &lst); err != nil {
		if isVanished(err) {
			c.warn("%s vanished during the copy", src)
		} else {
			c.warn("cannot stat %s: %v", src, err)
		}
		return nil
	}
	st, d := c.beneathMount(ip, &lst, d)
	src = c.src(ip)
	dst := c.Dst + ip
	mode := st.Mode & unix.S_IFMT
	if mode == unix.S_IFDIR {
		if d.Action == EmptyDir {
			c.Plan.Note(ip, d)
		}
		return c.copyDir(ctx, ip, st, d)
	}
	if mode == unix.S_IFSOCK {
		atomic.AddInt64(&c.stats.Sockets, 1)
		c.Plan.Note(ip, Decision{Skip, "socket"})
		return nil
	}
	if st.Nlink > 1 {
		key := inodeKey{st.Dev, st.Ino}
		if first, ok := c.links[key]; ok {
			if err := unix.Link(first, dst); err != nil {
				return dstErr("hard-linking", ip, err)
			}
			atomic.AddInt64(&c.stats.HardLinks, 1)
			return nil
		}
		defer func() {
			if _, err := os.Lstat(dst); err == nil {
				c.links[key] = dst
			}
		}()
	}
	switch mode {
	case unix.S_IFREG:
		ok, err := c.copyFile(ip, src, dst, st)
		if err != nil || !ok {
			return err
		}
		atomic.AddInt64(&c.stats.Files, 1)
	case unix.S_IFLNK:
		target, err := os.Readlink(src)
		if err != nil {
			c.warn("cannot read symlink %s: %v", src, err)
			return nil
		}
		if err := unix.Symlink(target, dst); err != nil {
			return dstErr("creating symlink", ip, err)
		}
		atomic.AddInt64(&c.stats.Symlinks, 1)
		return c.setMeta(ip, st, true)
	case unix.S_IFCHR, unix.S_IFBLK, unix.S_IFIFO:
		if err := unix.Mknod(dst, st.Mode, int(st.Rdev)); err != nil {
			return dstErr("creating node", ip, err)
		}
		if mode == unix.S_IFIFO {
			atomic.AddInt64(&c.stats.FIFOs, 1)
		} else {
			atomic.AddInt64(&c.stats.Devices, 1)
		}
	default:
		c.warn("%s has unknown file type %#o: skipped", src, mode)
		return nil
	}
	return c.setMeta(ip, st, false)
}

// openNoAtime opens without touching the source's atime (O_NOATIME), falling back to
// a plain open where the kernel refuses it (files of other users without CAP_FOWNER).
func openNoAtime(p string, flags int) (int, error) {
	fd, err := unix.Open(p, flags|unix.O_NOATIME|unix.O_CLOEXEC, 0)
	if errors.Is(err, unix.EPERM) {
		fd, err = unix.Open(p, flags|unix.O_CLOEXEC, 0)
	}
	return fd, err
}

// copyFile copies a regular file's data, data extent by data extent so that holes stay
// holes. It reports false when the source vanished (warned, not an error).
func (c *Copier) copyFile(ip, src, dst string, st *unix.Stat_t) (bool, error) {
	sfd, err := openNoAtime(src, unix.O_RDONLY|unix.O_NOFOLLOW)
	if err != nil {
		if isVanished(err) {
			c.warn("%s vanished during the copy", src)
		} else {
			c.warn("cannot read %s: %v", src, err)
		}
		return false, nil
	}
	sf := os.NewFile(uintptr(sfd), src)
	defer sf.Close()
	df, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return false, dstErr("creating", ip, err)
	}
	n, short, err := copyExtents(df, sf, st.Size, c.buf)
	atomic.AddInt64(&c.stats.Bytes, n)
	if err != nil {
		df.Close()
		if errors.Is(err, errRead) {
			c.warn("reading %s: %v", src, err)
			return true, nil
		}
		return false, dstErr("writing", ip, err)
	}
	if err := df.Close(); err != nil {
		return false, dstErr("writing", ip, err)
	}
	var now unix.Stat_t
	if short || unix.Fstat(sfd, &now) == nil && (now.Size != st.Size || now.Mtim != st.Mtim) {
		c.warn("%s changed while it was copied: the image has a mix of old and new content", src)
	}
	return true, nil
}

var errRead = errors.New("source read error")

// copyExtents copies [0,size) of src to dst keeping holes: SEEK_DATA/SEEK_HOLE find
// the data, the rest is left unwritten and the length set with ftruncate. short says
// the file ended before size (it shrank while copied).
func copyExtents(dst, src *os.File, size int64, buf []byte) (n int64, short bool, err error) {
	sfd := int(src.Fd())
	for off := int64(0); off < size; {
		data, err := unix.Seek(sfd, off, unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) {
			break // only a hole remains
		}
		hole := size
		if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.EOPNOTSUPP) {
			data = off // no SEEK_DATA support: all data
		} else if err != nil {
			return n, false, fmt.Errorf("%w: %v", errRead, err)
		} else if h, err := unix.Seek(sfd, data, unix.SEEK_HOLE); err == nil {
			hole = min(h, size)
		}
		for pos := data; pos < hole; {
			want := min(int64(len(buf)), hole-pos)
			r, err := src.ReadAt(buf[:want], pos)
			if r > 0 {
				if _, werr := dst.WriteAt(buf[:r], pos); werr != nil {
					return n, false, werr
				}
				n += int64(r)
				pos += int64(r)
			}
			if err == io.EOF {
				short = true
				hole = pos
				size = pos
				break
			}
			if err != nil {
				return n, false, fmt.Errorf("%w: %v", errRead, err)
			}
		}
		off = hole
	}
	if err := dst.Truncate(size); err != nil {
		return n, short, err
	}
	return n, short, nil
}

// setMeta gives the image's copy of ip the owner, mode, xattrs and times of st. The
// order matters: chown clears setuid/setgid and file capabilities, so it comes first;
// times come last.
func (c *Copier) setMeta(ip string, st *unix.Stat_t, symlink bool) error {
	dst := c.Dst + ip
	src := c.src(ip)
	if err := unix.Lchown(dst, int(st.Uid), int(st.Gid)); err != nil {
		return dstErr("setting owner of", ip, err)
	}
	if !symlink {
		if err := unix.Chmod(dst, st.Mode&0o7777); err != nil {
			return dstErr("setting mode of", ip, err)
		}
	}
	c.copyXattrs(src, dst)
	if t := st.Mode & unix.S_IFMT; t == unix.S_IFREG || t == unix.S_IFDIR {
		if fl := inodeFlags(src); fl != 0 {
			c.flags = append(c.flags, pendingFlags{dst, fl})
		}
	}
	ts := []unix.Timespec{st.Atim, st.Mtim}
	if err := unix.UtimesNanoAt(unix.AT_FDCWD, dst, ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return dstErr("setting times of", ip, err)
	}
	return nil
}

// copyXattrs copies every extended attribute: security.* (SELinux labels, file
// capabilities), trusted.*, user.*, and system.posix_acl_access/default, whose raw
// values are the ACLs.
func (c *Copier) copyXattrs(src, dst string) {
	names, err := listXattrs(src)
	if err != nil {
		if !errors.Is(err, unix.ENOTSUP) && !isVanished(err) {
			c.warn("listing extended attributes of %s: %v", src, err)
		}
		return
	}
	for _, name := range names {
		val, err := getXattr(src, name)
		if err != nil {
			if !errors.Is(err, unix.ENODATA) && !isVanished(err) {
				c.warn("reading attribute %s of %s: %v", name, src, err)
			}
			continue
		}
		if err := unix.Lsetxattr(dst, name, val, 0); err != nil {
			c.warn("the image cannot hold attribute %s of %s: %v", name, src, err)
		}
	}
}

func listXattrs(p string) ([]string, error) {
	size := 1024
	for {
		buf := make([]byte, size)
		n, err := unix.Llistxattr(p, buf)
		if errors.Is(err, unix.ERANGE) {
			if size, err = unix.Llistxattr(p, nil); err != nil {
				return nil, err
			}
			continue
		}
		if err != nil {
			return nil, err
		}
		var names []string
		start := 0
		for i := 0; i < n; i++ {
			if buf[i] == 0 {
				if i > start {
					names = append(names, string(buf[start:i]))
				}
				start = i + 1
			}
		}
		return names, nil
	}
}

func getXattr(p, name string) ([]byte, error) {
	size := 256
	for {
		buf := make([]byte, size)
		n, err := unix.Lgetxattr(p, name, buf)
		if errors.Is(err, unix.ERANGE) {
			if size, err = unix.Lgetxattr(p, name, nil); err != nil {
				return nil, err
			}
			continue
		}
		if err != nil {
			return nil, err
		}
		return buf[:n], nil
	}
}
