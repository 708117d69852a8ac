package volume

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/instancestore/packer-plugin-instancestore/internal/testroot"
	"golang.org/x/sys/unix"
)

// capNetRaw is a security.capability value (VFS_CAP_REVISION_2, effective) granting
// CAP_NET_RAW, as `setcap cap_net_raw+ep` writes it.
func capNetRaw() []byte {
	b := make([]byte, 20)
	binary.LittleEndian.PutUint32(b[0:], 0x02000001)
	binary.LittleEndian.PutUint32(b[4:], 1<<13)
	return b
}

// populateRoot fills root with every case the copy must keep. It returns the paths
// (image paths) of things that must not be in the image and of directories that must
// be there empty.
func populateRoot(t *testing.T, root string) (skip, emptied []string) {
	rnd := rand.New(rand.NewSource(1))
	big := make([]byte, 3<<20+123)
	rnd.Read(big)
	p := func(s string) string { return filepath.Join(root, s) }
	writeFile(t, p("etc/passwd"), []byte("root:x:0:0:root:/root:/bin/sh\n"), 0o644)
	writeFile(t, p("etc/ssl/private/server.pem"), []byte("not a real key\n"), 0o600) // filter is off by default
	writeFile(t, p("usr/bin/big"), big, 0o755)
	writeFile(t, p("usr/bin/su"), []byte("#!/bin/sh\n"), 0o4755)
	writeFile(t, p("usr/bin/wall"), []byte("#!/bin/sh\n"), 0o2755)
	writeFile(t, p("usr/bin/ping"), []byte("#!/bin/sh\nping\n"), 0o755)
	must(t, unix.Lsetxattr(p("usr/bin/ping"), "security.capability", capNetRaw(), 0))
	writeFile(t, p("empty"), nil, 0o640)
	writeFile(t, p(".dotfile"), []byte("dot-file directly under /\n"), 0o600)
	writeFile(t, p(".hidden/inner"), []byte("x"), 0o644)
	writeFile(t, p("dir with space/file\twith tab"), []byte("odd names"), 0o644)
	// hard links: three names, one in another directory
	writeFile(t, p("usr/lib/hl-a"), []byte("hard linked\n"), 0o644)
	must(t, os.Link(p("usr/lib/hl-a"), p("usr/lib/hl-b")))
	must(t, os.MkdirAll(p("opt"), 0o755))
	must(t, os.Link(p("usr/lib/hl-a"), p("opt/hl-c")))
	// sparse: data, 5 MiB hole, data, trailing hole
	sp, err := os.Create(p("var/lib/sparse.img"))
	if err != nil {
		must(t, os.MkdirAll(p("var/lib"), 0o755))
		sp, err = os.Create(p("var/lib/sparse.img"))
		must(t, err)
	}
	sp.WriteAt(big[:8192], 0)
	sp.WriteAt(big[:4096], 5<<20)
	must(t, sp.Truncate(9<<20))
	sp.Close()
	writeFile(t, p("var/lib/all-hole"), nil, 0o644)
	must(t, os.Truncate(p("var/lib/all-hole"), 1<<20))
	// xattrs and ACLs
	writeFile(t, p("srv/xattr"), []byte("x"), 0o644)
	must(t, unix.Lsetxattr(p("srv/xattr"), "user.note", []byte("hello"), 0))
	must(t, unix.Lsetxattr(p("srv/xattr"), "trusted.overlay.test", []byte{0, 1, 2}, 0))
	must(t, unix.Lsetxattr(p("srv/xattr"), "security.selinux", []byte("system_u:object_r:etc_t:s0\x00"), 0))
	writeFile(t, p("srv/acl/file"), []byte("acl"), 0o640)
	run(t, "setfacl", "-m", "u:1234:rwx,g:55:r", p("srv/acl/file"))
	run(t, "setfacl", "-d", "-m", "g:55:rx", p("srv/acl"))
	// owners, special modes, symlinks
	writeFile(t, p("home/user/notes"), []byte("mine"), 0o600)
	must(t, os.Chown(p("home/user"), 1000, 1000))
	must(t, os.Chown(p("home/user/notes"), 1000, 1001))
	must(t, os.MkdirAll(p("tmp"), 0o755))
	must(t, os.Chmod(p("tmp"), 0o1777|os.ModeSticky))
	must(t, unix.Chmod(p("tmp"), 0o1777))
	must(t, os.MkdirAll(p("srv/shared"), 0o755))
	must(t, unix.Chmod(p("srv/shared"), 0o2775))
	must(t, os.Symlink("../usr/bin/big", p("srv/link")))
	must(t, os.Symlink("/nonexistent/target", p("srv/dangling")))
	must(t, unix.Lchown(p("srv/dangling"), 1000, 1000))
	// device nodes, FIFO, socket (skipped)
	must(t, os.MkdirAll(p("srv/nodes"), 0o755))
	must(t, unix.Mknod(p("srv/nodes/null"), unix.S_IFCHR|0o666, int(unix.Mkdev(1, 3))))
	must(t, unix.Mknod(p("srv/nodes/sda"), unix.S_IFBLK|0o660, int(unix.Mkdev(8, 0))))
	must(t, unix.Chown(p("srv/nodes/sda"), 0, 6))
	must(t, unix.Mkfifo(p("srv/nodes/fifo"), 0o620))
	sock, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM, 0)
	must(t, err)
	must(t, unix.Bind(sock, &unix.SockaddrUnix{Name: p("srv/nodes/sock")}))
	unix.Close(sock)
	// directories whose contents are never copied
	writeFile(t, p("mnt/data/file"), []byte("ephemeral"), 0o644)
	writeFile(t, p("media/cdrom/x"), []byte("x"), 0o644)
	writeFile(t, p("proc/stale"), []byte("x"), 0o644)
	// /dev is not a mount point here: it is copied like any other directory (the
	// standard nodes are on disk, so none is added).
	writeFile(t, p("dev/console-on-disk"), []byte("x"), 0o644)
	for _, n := range standardDevNodes {
		must(t, unix.Mknod(p("dev/"+n.name), unix.S_IFCHR|n.mode, int(unix.Mkdev(n.major, n.minor))))
	}
	// -e and -i
	writeFile(t, p("home/user/.cache/big"), []byte("cache"), 0o644)
	writeFile(t, p("var/log/keep.log"), []byte("keep"), 0o644)
	writeFile(t, p("var/log/drop.log"), []byte("drop"), 0o644)
	writeFile(t, p("mnt/forced/kept"), []byte("forced include"), 0o644)
	// a nested mount: its mount point is created, its contents are not copied
	must(t, os.MkdirAll(p("srv/nested"), 0o750))
	writeFile(t, p("srv/nested/hidden-under-mount"), []byte("x"), 0o644)
	must(t, unix.Mount("tmpfs", p("srv/nested"), "tmpfs", 0, "mode=0711"))
	t.Cleanup(func() { unix.Unmount(p("srv/nested"), unix.MNT_DETACH) })
	writeFile(t, p("srv/nested/on-tmpfs"), []byte("x"), 0o644)

	// chattr flags: an immutable file with a second hard link, an append-only log, a
	// nodump directory (set after the times below, which immutable would forbid).
	writeFile(t, p("var/log/append.log"), []byte("log\n"), 0o644)
	writeFile(t, p("usr/lib/frozen"), []byte("frozen\n"), 0o644)
	must(t, os.Link(p("usr/lib/frozen"), p("usr/lib/frozen-link")))
	must(t, os.MkdirAll(p("var/nodump"), 0o755))
	defer func() {
		run(t, "chattr", "+i", p("usr/lib/frozen"))
		run(t, "chattr", "+a", p("var/log/append.log"))
		run(t, "chattr", "+d", p("var/nodump"))
		t.Cleanup(func() { exec.Command("chattr", "-i", "-a", p("usr/lib/frozen"), p("var/log/append.log")).Run() })
	}()

	// Distinct times with nanoseconds, children before their directories.
	var paths []string
	filepath.Walk(root, func(q string, _ os.FileInfo, err error) error {
		if err == nil && !strings.HasPrefix(q, p("srv/nested")+"/") {
			paths = append(paths, q)
		}
		return nil
	})
	sort.Sort(sort.Reverse(sort.StringSlice(paths)))
	base := time.Date(2021, 3, 4, 5, 6, 7, 0, time.UTC).UnixNano()
	for i, q := range paths {
		at := unix.NsecToTimespec(base + int64(i)*1_000_001_003)
		mt := unix.NsecToTimespec(base - int64(i)*7_000_000_011)
		must(t, unix.UtimesNanoAt(unix.AT_FDCWD, q, []unix.Timespec{at, mt}, unix.AT_SYMLINK_NOFOLLOW))
	}
	skip = []string{"/home/user/.cache", "/var/log/drop.log", "/srv/nodes/sock",
		"/mnt/data", "/media/cdrom", "/proc/stale", "/srv/nested/on-tmpfs"}
	emptied = []string{"/mnt", "/media", "/proc", "/srv/nested"}
	return skip, emptied
}

func buildAndCompare(t *testing.T, mkfs []string, sizeMiB int64) {
	testroot.Require(t)
	file := filepath.Join(t.TempDir(), "source.fs")
	src := newTestFS(t, file, 0, sizeMiB<<20, mkfs...)
	skip, emptied := populateRoot(t, src.Dir)

	var log bytes.Buffer
	var warnings []string
	img, err := Build(context.Background(), Config{
		PlanConfig: PlanConfig{
			Volume:   src.Dir,
			Excludes: []string{src.Dir + "/home/user/.cache", src.Dir + "/var/log/drop.log"},
			Includes: []string{src.Dir + "/mnt/forced"},
			Scratch:  t.TempDir(),
		},
		Log:  &log,
		Warn: func(m string) { warnings = append(warnings, m) },
	})
	t.Logf("build log:\n%s", log.String())
	if err != nil {
		t.Fatalf("Build: %v", err)
	}
	t.Cleanup(func() { img.Remove() })
	if len(warnings) > 0 {
		t.Errorf("unexpected warnings: %q", warnings)
	}
	if img.Size != sizeMiB<<20 {
		t.Errorf("image size %d, want the source's %d", img.Size, sizeMiB<<20)
	}
	// The source is walked after Build: Build flushes it, and before that SEEK_DATA may
	// not see data still in the page cache (block-mapped files on ext2/ext3).
	want := walkTree(t, src.Dir, skip, emptied)
	// A mount point's directory is the volume's own, beneath the mount (0750 and its
	// times, not the tmpfs root's 0711): read it through a bind mount of the volume.
	beneath := t.TempDir()
	must(t, unix.Mount(src.Dir, beneath, "", unix.MS_BIND, ""))
	under := walkTree(t, beneath, nil, nil)["/srv/nested"]
	must(t, unix.Unmount(beneath, 0))
	if under.Mode != 0o750 {
		t.Fatalf("beneath the mount /srv/nested has mode %#o, want the 0750 the test made", under.Mode)
	}
	want["/srv/nested"] = under
	// The forced include under /mnt is expected too.
	for _, p := range []string{"/mnt/forced", "/mnt/forced/kept"} {
		want[p] = walkTree(t, src.Dir, nil, nil)[p]
	}
	srcInfo, err := ReadFSInfo(src.Dev)
	must(t, err)
	imgInfo, err := ReadFSInfo(img.Path)
	must(t, err)
	if imgInfo.Label != srcInfo.Label || imgInfo.UUID != srcInfo.UUID || imgInfo.Type != srcInfo.Type {
		t.Errorf("image fs %s %q %s, source %s %q %s", imgInfo.Type, imgInfo.Label, imgInfo.UUIDString(), srcInfo.Type, srcInfo.Label, srcInfo.UUIDString())
	}
	if strings.Join(imgInfo.ExtFeatures, ",") != strings.Join(srcInfo.ExtFeatures, ",") || imgInfo.XFS != srcInfo.XFS {
		t.Errorf("features differ:\n source %v %+v\n image  %v %+v", srcInfo.ExtFeatures, srcInfo.XFS, imgInfo.ExtFeatures, imgInfo.XFS)
	}
	if srcInfo.Type == "xfs" {
		run(t, "xfs_repair", "-n", "-f", img.Path)
	} else {
		run(t, "e2fsck", "-fn", img.Path)
	}
	// The image file is sparse: far less allocated than its size.
	var st unix.Stat_t
	must(t, unix.Stat(img.Path, &st))
	if st.Blocks*512 > img.Size/2 {
		t.Errorf("image allocates %d of %d bytes: not sparse", st.Blocks*512, img.Size)
	}

	// Compare what comes back out of a bundle: bundle, unbundle, mount read-only.
	unbundled := bundleRoundTrip(t, img)
	got := walkTree(t, mountImageFile(t, unbundled, img), nil, nil)
	// Directories that lost a subdirectory to an exclusion have one link less.
	compareTrees(t, want, got, append(emptied, "/home/user"))
	for _, s := range []string{"created empty: mount point (tmpfs tmpfs), not descended: /srv/nested",
		"/home/user/.cache", "/var/log/drop.log", "socket: /srv/nodes/sock"} {
		if !strings.Contains(log.String(), s) {
			t.Errorf("summary lacks %q", s)
		}
	}
}

func TestBuildExt4(t *testing.T) {
	buildAndCompare(t, []string{"mkfs.ext4", "-q", "-L", "cloudimg-rootfs", "-O", "^metadata_csum_seed"}, 96)
}

func TestBuildExt3(t *testing.T) {
	buildAndCompare(t, []string{"mkfs.ext3", "-q", "-L", "old-root"}, 64)
}

func TestBuildExt2(t *testing.T) {
	buildAndCompare(t, []string{"mkfs.ext2", "-q"}, 64)
}

func TestBuildXFS(t *testing.T) {
	if _, err := exec.LookPath("mkfs.xfs"); err != nil && os.Getenv("INSTANCESTORE_CI") == "" {
		t.Skip("mkfs.xfs not installed (xfsprogs)")
	}
	buildAndCompare(t, []string{"mkfs.xfs", "-q", "-f", "-L", "xfsroot"}, 320)
}

// TestBuildScratchInsideVolume builds the image inside the volume being imaged (the
// default /tmp scratch on a root filesystem): the image must not copy itself.
func TestBuildScratchInsideVolume(t *testing.T) {
	testroot.Require(t)
	src := newTestFS(t, filepath.Join(t.TempDir(), "fs"), 0, 64<<20, "mkfs.ext4", "-q")
	writeFile(t, filepath.Join(src.Dir, "tmp/old-junk"), []byte("x"), 0o644)
	writeFile(t, filepath.Join(src.Dir, "etc/keep"), []byte("x"), 0o644)
	for _, scratch := range []string{src.Dir, filepath.Join(src.Dir, "tmp")} {
		img, err := Build(context.Background(), Config{PlanConfig: PlanConfig{Volume: src.Dir, Scratch: scratch}})
		must(t, err)
		got := walkTree(t, mountImage(t, img), nil, nil)
		img.Remove()
		for p := range got {
			if strings.Contains(p, "instancestore-bundle-") || p == "/tmp/old-junk" && scratch != src.Dir {
				t.Errorf("scratch %s: image holds %s", scratch, p)
			}
		}
		if _, ok := got["/etc/keep"]; !ok {
			t.Errorf("scratch %s: /etc/keep missing", scratch)
		}
		if scratch != src.Dir {
			if _, ok := got["/tmp"]; !ok {
				t.Errorf("the scratch directory itself must stay in the image (empty)")
			}
		}
	}
	if left, _ := filepath.Glob(filepath.Join(src.Dir, "instancestore-bundle-*")); len(left) > 0 {
		t.Errorf("work directories left behind: %v", left)
	}
}

// TestBuildRefusesOverEC2Limit: an image size over 10 GiB is refused; the error says
// why and what to do. (By default a larger volume is imaged at what its files need:
// TestBuildLargeVolumeDefaultsToNeed.)
func TestBuildRefusesOverEC2Limit(t *testing.T) {
	testroot.Require(t)
	src := newTestFS(t, filepath.Join(t.TempDir(), "big.fs"), 0, 10400<<20, "mkfs.ext4", "-q")
	scratch := t.TempDir()
	_, err := Build(context.Background(), Config{PlanConfig: PlanConfig{Volume: src.Dir, Scratch: scratch}, Size: 10300 << 20})
	if err == nil || !strings.Contains(err.Error(), "at most 10240 MiB") || !strings.Contains(err.Error(), "image size") {
		t.Fatalf("error %v, want one about EC2's 10 GiB limit and the image size", err)
	}
	if left, _ := os.ReadDir(scratch); len(left) != 0 {
		t.Errorf("scratch not cleaned after the refusal: %v", left)
	}
	// With --size it works: the filesystem is made smaller than the source's.
	img, err := Build(context.Background(), Config{PlanConfig: PlanConfig{Volume: src.Dir, Scratch: scratch}, Size: 256 << 20})
	must(t, err)
	defer img.Remove()
	info, err := ReadFSInfo(img.Path)
	must(t, err)
	if img.Size != 256<<20 || info.Size != 256<<20 {
		t.Errorf("image %d bytes, filesystem %d, want 256 MiB", img.Size, info.Size)
	}
}

// TestBuildDevBeneathMount: with a tmpfs mounted on /dev (as devtmpfs is), the image's
// /dev holds what the volume itself holds beneath the mount, plus the standard nodes
// it lacks; mount points (/proc here) keep the mode and times of the volume's own
// directory, not of the filesystem mounted on them.
func TestBuildDevBeneathMount(t *testing.T) {
	testroot.Require(t)
	src := newTestFS(t, filepath.Join(t.TempDir(), "fs"), 0, 32<<20, "mkfs.ext4", "-q")
	p := func(s string) string { return filepath.Join(src.Dir, s) }
	must(t, os.Mkdir(p("dev"), 0o755))
	must(t, unix.Mknod(p("dev/console"), unix.S_IFCHR|0o620, int(unix.Mkdev(5, 1))))
	must(t, unix.Chmod(p("dev/console"), 0o620))
	writeFile(t, p("dev/on-disk"), []byte("x"), 0o644)
	must(t, os.Mkdir(p("proc"), 0o751))
	old := unix.NsecToTimespec(time.Date(2020, 1, 2, 3, 4, 5, 6, time.UTC).UnixNano())
	must(t, unix.UtimesNano(p("proc"), []unix.Timespec{old, old}))
	for _, d := range []string{"dev", "proc"} {
		must(t, unix.Mount("tmpfs", p(d), "tmpfs", 0, "mode=0555"))
		dir := p(d)
		t.Cleanup(func() { unix.Unmount(dir, unix.MNT_DETACH) })
	}
	writeFile(t, p("dev/in-devtmpfs"), []byte("x"), 0o644)

	img, err := Build(context.Background(), Config{PlanConfig: PlanConfig{Volume: src.Dir, Scratch: t.TempDir()}})
	must(t, err)
	t.Cleanup(func() { img.Remove() })
	got := walkTree(t, mountImage(t, img), nil, nil)
	if e := got["/dev/console"]; e.Type != unix.S_IFCHR || e.Mode != 0o620 || e.Rdev != unix.Mkdev(5, 1) {
		t.Errorf("/dev/console is not the volume's own node (c 5,1 0620): %v", e)
	}
	if _, ok := got["/dev/on-disk"]; !ok {
		t.Errorf("/dev/on-disk (beneath the mount) is missing")
	}
	if _, ok := got["/dev/in-devtmpfs"]; ok {
		t.Errorf("/dev/in-devtmpfs (on the mounted filesystem) was copied")
	}
	for _, n := range standardDevNodes[:3] {
		e := got["/dev/"+n.name]
		if e.Type != unix.S_IFCHR || e.Mode != n.mode || e.Rdev != unix.Mkdev(n.major, n.minor) || e.Uid != 0 {
			t.Errorf("/dev/%s: %v, want c %d,%d %#o root", n.name, e, n.major, n.minor, n.mode)
		}
	}
	if e := got["/dev"]; e.Mode != 0o755 {
		t.Errorf("/dev has mode %#o, want the volume's 0755", e.Mode)
	}
	if e := got["/proc"]; e.Mode != 0o751 || e.Mtime != old {
		t.Errorf("/proc: mode %#o mtime %v, want the volume's 0751 and %v", e.Mode, e.Mtime, old)
	}
}

// TestBuildScratchFullXFS: an xfs volume imaged through a scratch too small for its
// data fails with ErrImageWrite (xfs reports lost writes through syncfs, or shuts
// down) and leaves no work directory, mount or loop device.
func TestBuildScratchFullXFS(t *testing.T) {
	testroot.Require(t)
	if _, err := exec.LookPath("mkfs.xfs"); err != nil && os.Getenv("INSTANCESTORE_CI") == "" {
		t.Skip("mkfs.xfs not installed (xfsprogs)")
	}
	src := newTestFS(t, filepath.Join(t.TempDir(), "fs"), 0, 320<<20, "mkfs.xfs", "-q", "-f")
	data := make([]byte, 1<<20)
	for i := 0; i < 160; i++ {
		rand.Read(data)
		writeFile(t, filepath.Join(src.Dir, fmt.Sprintf("f%03d", i)), data, 0o644)
	}
	scratch := t.TempDir()
	must(t, unix.Mount("tmpfs", scratch, "tmpfs", 0, "size=100m"))
	t.Cleanup(func() { unix.Unmount(scratch, unix.MNT_DETACH) })
	img, err := Build(context.Background(), Config{PlanConfig: PlanConfig{Volume: src.Dir, Scratch: scratch}, Partition: PartitionNone})
	if err == nil {
		img.Remove()
		t.Fatal("Build succeeded with a full scratch")
	}
	t.Logf("Build: %v", err)
	if !errors.Is(err, ErrImageWrite) {
		t.Errorf("error %v is not ErrImageWrite", err)
	}
	if left, _ := os.ReadDir(scratch); len(left) != 0 {
		t.Errorf("scratch not emptied: %v", left)
	}
	if mi, _ := os.ReadFile("/proc/self/mountinfo"); strings.Contains(string(mi), scratch+"/") {
		t.Errorf("a mount under the scratch survived:\n%s", mi)
	}
}
