package volume

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/instancestore/packer-plugin-instancestore/bundle"
)

func run(t testing.TB, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// testFS is a loop-mounted filesystem made for a test.
type testFS struct {
	Dir, Dev, File string
	loop           *Loop
}

// newTestFS makes a filesystem of the given type in a file (at offset, for a partition
// of a disk image) and mounts it with noatime, so that walking it for comparison
// changes nothing.
func newTestFS(t testing.TB, file string, offset, size int64, mkfs ...string) *testFS {
	t.Helper()
	if _, err := os.Stat(file); errors.Is(err, os.ErrNotExist) {
		f, err := os.Create(file)
		if err != nil {
			t.Fatal(err)
		}
		if err := f.Truncate(offset + size); err != nil {
			t.Fatal(err)
		}
		f.Close()
	}
	l, err := AttachLoop(file, offset, size)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Detach() })
	run(t, mkfs[0], append(mkfs[1:], l.Path)...)
	dir := t.TempDir()
	fstype := "ext4"
	if strings.Contains(mkfs[0], "xfs") {
		fstype = "xfs"
	}
	if err := unix.Mount(l.Path, dir, fstype, unix.MS_NOATIME, ""); err != nil {
		t.Fatalf("mounting %s: %v", l.Path, err)
	}
	t.Cleanup(func() { unmount(dir) })
	return &testFS{Dir: dir, Dev: l.Path, File: file, loop: l}
}

// mountImage mounts the filesystem inside an image read-only and returns its dir.
func mountImage(t testing.TB, img *Image) string {
	return mountImageFile(t, img.Path, img)
}

// mountImageFile mounts a file laid out like img (e.g. img unbundled) read-only.
func mountImageFile(t testing.TB, path string, img *Image) string {
	t.Helper()
	l, err := AttachLoop(path, img.FSOffset, img.Size-img.FSOffset-overheadOf(img))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Detach() })
	dir := t.TempDir()
	if err := mountFS(l.Path, dir, img.FS.Type, true); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unmount(dir) })
	return dir
}

func overheadOf(img *Image) int64 {
	if img.Layout == nil {
		return 0
	}
	return img.Layout.Overhead()
}

// bundleRoundTrip bundles img with the bundle Writer (the bundle-vol data path), then
// unbundles it into a new file, checking every digest, and returns that file.
func bundleRoundTrip(t testing.TB, img *Image) string {
	t.Helper()
	ctx := context.Background()
	bi, err := bundle.OpenImage(img.Path)
	must(t, err)
	defer bi.Close()
	key, err := bundle.NewKey()
	must(t, err)
	parts := t.TempDir()
	res, err := bundle.Write(ctx, bi, bundle.WriterConfig{Name: "vol", Key: key}, bundle.DirSink(parts))
	must(t, err)
	cert, _, err := bundle.NewThrowawayUser()
	must(t, err)
	m, err := bundle.NewManifest(res, bundle.ManifestConfig{Architecture: "x86_64", User: "123456789012"}, key, cert, cert)
	must(t, err)
	out := filepath.Join(t.TempDir(), "unbundled.img")
	f, err := os.Create(out)
	must(t, err)
	defer f.Close()
	must(t, bundle.Unbundle(ctx, m, key, bundle.DirSource(parts), f))
	return out
}

// entry is everything the comparison walker checks about one path.
type entry struct {
	Type         uint32
	Mode         uint32
	Uid, Gid     uint32
	Size         int64
	Rdev         uint64
	Nlink        uint64
	Atime, Mtime unix.Timespec
	Xattrs       map[string]string
	Content      string // sha256 of regular files, target of symlinks
	DataExtents  string // where a regular file has data (sparseness)
	Flags        uint32 // chattr flags
	inode        uint64
}

func (e entry) String() string {
	return fmt.Sprintf("type=%#o mode=%#o owner=%d:%d size=%d rdev=%d nlink=%d atime=%d.%09d mtime=%d.%09d xattrs=%v content=%s extents=%s flags=%#x",
		e.Type, e.Mode, e.Uid, e.Gid, e.Size, e.Rdev, e.Nlink, e.Atime.Sec, e.Atime.Nsec, e.Mtime.Sec, e.Mtime.Nsec, e.Xattrs, e.Content, e.DataExtents, e.Flags)
}

// walkTree lists root's tree, not crossing into other filesystems (their mount points
// are listed without contents) and leaving out the given paths' contents or entries.
func walkTree(t testing.TB, root string, skip, emptied []string) map[string]entry {
	t.Helper()
	var rootSt unix.Stat_t
	if err := unix.Lstat(root, &rootSt); err != nil {
		t.Fatal(err)
	}
	out := map[string]entry{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel := "/" + strings.TrimPrefix(strings.TrimPrefix(p, root), "/")
		if slices.Contains(skip, rel) {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return err
		}
		e := entry{Type: st.Mode & unix.S_IFMT, Mode: st.Mode & 0o7777, Uid: st.Uid, Gid: st.Gid,
			Size: st.Size, Rdev: st.Rdev, Nlink: uint64(st.Nlink), Atime: st.Atim, Mtime: st.Mtim, inode: st.Ino}
		if e.Type == unix.S_IFDIR {
			e.Size = 0
			e.Flags = inodeFlags(p)
		}
		names, _ := listXattrs(p)
		e.Xattrs = map[string]string{}
		for _, n := range names {
			v, err := getXattr(p, n)
			if err != nil {
				return err
			}
			e.Xattrs[n] = hex.EncodeToString(v)
		}
		switch e.Type {
		case unix.S_IFREG:
			e.Flags = inodeFlags(p)
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			sum := sha256.Sum256(b)
			e.Content = hex.EncodeToString(sum[:])
			e.DataExtents = dataExtents(t, p, st.Size)
		case unix.S_IFLNK:
			e.Content, _ = os.Readlink(p)
		}
		out[rel] = e
		if e.Type == unix.S_IFDIR && rel != "/" && (st.Dev != rootSt.Dev || slices.Contains(emptied, rel)) {
			return filepath.SkipDir
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func dataExtents(t testing.TB, p string, size int64) string {
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var b strings.Builder
	for off := int64(0); off < size; {
		d, err := unix.Seek(int(f.Fd()), off, unix.SEEK_DATA)
		if err != nil {
			break
		}
		h, _ := unix.Seek(int(f.Fd()), d, unix.SEEK_HOLE)
		fmt.Fprintf(&b, "[%d,%d)", d, h)
		off = h
	}
	return b.String()
}

// compareTrees reports every difference between want and got; ignore lists metadata
// fields not to compare for some paths (e.g. "nlink" of emptied mount points).
func compareTrees(t testing.TB, want, got map[string]entry, ignoreNlink []string) {
	t.Helper()
	var keys []string
	for k := range want {
		keys = append(keys, k)
	}
	for k := range got {
		if _, ok := want[k]; !ok {
			t.Errorf("image has %s, the source (after exclusions) does not", k)
		}
	}
	sort.Strings(keys)
	for _, k := range keys {
		w := want[k]
		g, ok := got[k]
		if !ok {
			t.Errorf("image lacks %s", k)
			continue
		}
		w.inode, g.inode = 0, 0
		if slices.Contains(ignoreNlink, k) {
			w.Nlink, g.Nlink = 0, 0
		}
		if w.String() != g.String() {
			t.Errorf("%s differs:\n source %s\n image  %s", k, w, g)
		}
	}
}

func writeFile(t testing.TB, p string, data []byte, mode os.FileMode) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, data, mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, mode); err != nil {
		t.Fatal(err)
	}
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

var _ = bytes.Equal

func runStdin(stdin *strings.Reader, name string, args ...string) ([]byte, error) {
	cmd := exec.Command(name, args...)
	cmd.Stdin = stdin
	return cmd.CombinedOutput()
}
