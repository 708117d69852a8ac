package main

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/instancestore/packer-plugin-instancestore/bundle"
	"github.com/instancestore/packer-plugin-instancestore/bundle/volume"
	"github.com/instancestore/packer-plugin-instancestore/internal/testroot"
)

// volSource makes a loop-mounted ext4 filesystem of sizeMiB to bundle.
func volSource(t *testing.T, sizeMiB int64) (dir, dev string) {
	t.Helper()
	file := filepath.Join(t.TempDir(), "source.fs")
	volMust(t, os.WriteFile(file, nil, 0o600))
	volMust(t, os.Truncate(file, sizeMiB<<20))
	l, err := volume.AttachLoop(file, 0, 0)
	volMust(t, err)
	t.Cleanup(func() { l.Detach() })
	if out, err := exec.Command("mkfs.ext4", "-q", "-L", "clivol", l.Path).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4: %v %s", err, out)
	}
	dir = t.TempDir()
	volMust(t, unix.Mount(l.Path, dir, "ext4", 0, ""))
	t.Cleanup(func() { unix.Unmount(dir, unix.MNT_DETACH) })
	return dir, l.Path
}

func volMust(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func volUser(t *testing.T, dir string) (certPath, keyPath string) {
	cert, priv, err := bundle.NewThrowawayUser()
	volMust(t, err)
	certPath, keyPath = filepath.Join(dir, "vol-cert.pem"), filepath.Join(dir, "vol-pk.pem")
	volMust(t, os.WriteFile(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw}), 0o600))
	volMust(t, os.WriteFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(priv)}), 0o600))
	return certPath, keyPath
}

func runCLI(args ...string) (code int, stdout, stderr string) {
	var o, e bytes.Buffer
	code = run(args, &o, &e)
	return code, o.String(), e.String()
}

// TestBundleVolRoundTrip runs bundle-vol on a mounted filesystem, unbundles the result
// with the CLI and checks the image: same label and UUID, the files, a hard link, an
// xattr; and that nothing is left in the scratch directory.
func TestBundleVolRoundTrip(t *testing.T) {
	testroot.Require(t)
	src, srcDev := volSource(t, 64)
	volMust(t, os.MkdirAll(filepath.Join(src, "etc"), 0o755))
	volMust(t, os.WriteFile(filepath.Join(src, "etc/motd"), []byte("bundled by bundle-vol\n"), 0o644))
	volMust(t, os.Link(filepath.Join(src, "etc/motd"), filepath.Join(src, "motd-link")))
	volMust(t, os.WriteFile(filepath.Join(src, ".dot"), []byte("dot"), 0o600))
	volMust(t, unix.Setxattr(filepath.Join(src, ".dot"), "user.k", []byte("v"), 0))
	volMust(t, os.WriteFile(filepath.Join(src, "skipme"), []byte("x"), 0o600))

	keys, scratch, dest, out := t.TempDir(), t.TempDir(), t.TempDir(), t.TempDir()
	cert, key := volUser(t, keys)
	code, stdout, stderr := runCLI("bundle-vol", "-u", "1111-2222-3333", "-c", cert, "-k", key,
		"--volume", src, "--scratch", scratch, "-d", dest, "-p", "vol", "-e", src+"/skipme", "-B", "ami=sda1,root=/dev/sda1")
	if code != 0 {
		t.Fatalf("bundle-vol exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	for _, want := range []string{"imaging " + src, "excluded (-e): /skipme", "copy: "} {
		if !strings.Contains(stderr, want) {
			t.Errorf("stderr lacks %q:\n%s", want, stderr)
		}
	}
	if left, _ := os.ReadDir(scratch); len(left) != 0 {
		t.Errorf("scratch directory not emptied: %v", left)
	}
	code, stdout, stderr = runCLI("unbundle", "-m", filepath.Join(dest, "vol.manifest.xml"), "-k", key, "-d", out)
	if code != 0 {
		t.Fatalf("unbundle exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	img := filepath.Join(out, "vol")
	got, err := volume.ReadFSInfo(img)
	volMust(t, err)
	want, err := volume.ReadFSInfo(srcDev)
	volMust(t, err)
	if got.UUID != want.UUID || got.Label != "clivol" || got.Size != 64<<20 {
		t.Errorf("image filesystem %q %s %d bytes, want %q %s %d", got.Label, got.UUIDString(), got.Size, want.Label, want.UUIDString(), want.Size)
	}
	if out, err := exec.Command("e2fsck", "-fn", img).CombinedOutput(); err != nil {
		t.Errorf("e2fsck -fn: %v\n%s", err, out)
	}
	l, err := volume.AttachLoop(img, 0, 0)
	volMust(t, err)
	defer l.Detach()
	mnt := t.TempDir()
	volMust(t, unix.Mount(l.Path, mnt, "ext4", unix.MS_RDONLY, ""))
	defer unix.Unmount(mnt, 0)
	if b, _ := os.ReadFile(filepath.Join(mnt, "motd-link")); string(b) != "bundled by bundle-vol\n" {
		t.Errorf("motd-link: %q", b)
	}
	var a, b unix.Stat_t
	volMust(t, unix.Stat(filepath.Join(mnt, "etc/motd"), &a))
	volMust(t, unix.Stat(filepath.Join(mnt, "motd-link"), &b))
	if a.Ino != b.Ino || a.Nlink != 2 {
		t.Errorf("hard link lost: inodes %d %d, nlink %d", a.Ino, b.Ino, a.Nlink)
	}
	buf := make([]byte, 8)
	if n, err := unix.Getxattr(filepath.Join(mnt, ".dot"), "user.k", buf); err != nil || string(buf[:n]) != "v" {
		t.Errorf("xattr of /.dot: %q %v", buf[:n], err)
	}
	if _, err := os.Stat(filepath.Join(mnt, "skipme")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("-e path is in the image: %v", err)
	}
	man, err := os.ReadFile(filepath.Join(dest, "vol.manifest.xml"))
	volMust(t, err)
	if !strings.Contains(string(man), "<user>111122223333</user>") || !strings.Contains(string(man), "<virtual>root</virtual><device>/dev/sda1</device>") {
		t.Errorf("manifest lacks the user or the mappings:\n%s", man)
	}
}

func TestBundleVolUsage(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--size", "20000"}, "at most 10240"},
		{[]string{"--size", "lots"}, "in MiB"},
		{[]string{"--partition", "hybrid"}, "auto, none, mbr or gpt"},
		{[]string{"--filter", "--no-filter"}, "both given"},
		{[]string{"extra"}, "unexpected argument"},
	} {
		code, _, stderr := runCLI(append([]string{"bundle-vol", "-u", "111122223333"}, c.args...)...)
		if code != 2 || !strings.Contains(stderr, c.want) {
			t.Errorf("bundle-vol %v: exit %d, stderr %q; want 2 and %q", c.args, code, stderr, c.want)
		}
	}
}

// TestBundleVolSIGTERM stops bundle-vol with SIGTERM while it works and checks that
// it removed its scratch image and left no mount or loop device behind.
func TestBundleVolSIGTERM(t *testing.T) {
	testroot.Require(t)
	src, _ := volSource(t, 400)
	// Enough data that the copy or the bundling is still running when the signal comes.
	data := make([]byte, 1<<20)
	for i := 0; i < 300; i++ {
		rand.Read(data)
		volMust(t, os.WriteFile(filepath.Join(src, "f"+time.Duration(i).String()), data, 0o644))
	}
	bin := filepath.Join(t.TempDir(), "instancestore-bundler")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	scratch, dest := t.TempDir(), t.TempDir()
	cmd := exec.Command(bin, "bundle-vol", "-u", "111122223333", "--volume", src, "--scratch", scratch, "-d", dest)
	stderr, err := cmd.StderrPipe()
	volMust(t, err)
	volMust(t, cmd.Start())
	sc := bufio.NewScanner(stderr)
	var log strings.Builder
	signalled := false
	for sc.Scan() {
		log.WriteString(sc.Text() + "\n")
		if !signalled && strings.HasPrefix(sc.Text(), "imaging ") {
			// mkfs, mount and the copy of 300 MiB follow: the signal lands inside them.
			time.Sleep(300 * time.Millisecond)
			volMust(t, cmd.Process.Signal(syscall.SIGTERM))
			signalled = true
		}
	}
	err = cmd.Wait()
	if !signalled {
		t.Fatalf("bundle-vol never started imaging:\n%s", log.String())
	}
	if err == nil {
		t.Logf("bundle-vol finished before the signal took effect:\n%s", log.String())
	} else if !strings.Contains(log.String(), "interrupted") {
		t.Errorf("exit %v without saying it was interrupted:\n%s", err, log.String())
	}
	if left, _ := os.ReadDir(scratch); len(left) != 0 {
		t.Errorf("scratch directory not emptied after SIGTERM: %v", left)
	}
	mi, _ := os.ReadFile("/proc/self/mountinfo")
	if strings.Contains(string(mi), scratch) {
		t.Errorf("a mount under the scratch directory survived:\n%s", mi)
	}
	files, _ := filepath.Glob("/sys/block/loop*/loop/backing_file")
	for _, f := range files {
		if b, _ := os.ReadFile(f); strings.HasPrefix(string(b), scratch) {
			t.Errorf("loop device %s still backed by %s", f, b)
		}
	}
}

// checkNothingLeft fails t when bundle-vol left parts, a manifest, a file in the
// scratch directory, a mount or a loop device behind.
func checkNothingLeft(t *testing.T, scratch, dest string, ok ...string) {
	t.Helper()
	left, _ := os.ReadDir(scratch)
	for _, e := range left {
		if !slices.Contains(ok, e.Name()) {
			t.Errorf("scratch directory not emptied: %s", e.Name())
		}
	}
	if left, _ := os.ReadDir(dest); len(left) != 0 {
		t.Errorf("destination holds a partial bundle: %v", left)
	}
	mi, _ := os.ReadFile("/proc/self/mountinfo")
	if strings.Contains(string(mi), scratch+"/") {
		t.Errorf("a mount under the scratch directory survived:\n%s", mi)
	}
	files, _ := filepath.Glob("/sys/block/loop*/loop/backing_file")
	for _, f := range files {
		if b, _ := os.ReadFile(f); strings.HasPrefix(string(b), scratch) {
			t.Errorf("loop device %s still backed by %s", f, b)
		}
	}
}

// TestBundleVolScratchFull images 40 MiB of files through a 24 MiB scratch
// filesystem: the image's loop device gets write errors (ENOSPC on the scratch), so
// bundle-vol must fail, say why, and leave no bundle, mount or loop device behind.
func TestBundleVolScratchFull(t *testing.T) {
	testroot.Require(t)
	src, _ := volSource(t, 96)
	data := make([]byte, 1<<20)
	for i := 0; i < 40; i++ {
		rand.Read(data)
		volMust(t, os.WriteFile(filepath.Join(src, fmt.Sprintf("f%02d", i)), data, 0o644))
	}
	scratch, dest := t.TempDir(), t.TempDir()
	volMust(t, unix.Mount("tmpfs", scratch, "tmpfs", 0, "size=24m"))
	t.Cleanup(func() { unix.Unmount(scratch, unix.MNT_DETACH) })
	code, stdout, stderr := runCLI("bundle-vol", "-u", "111122223333", "--volume", src, "--scratch", scratch, "-d", dest)
	if code == 0 {
		t.Fatalf("bundle-vol exit 0 with a full scratch filesystem\nstdout:\n%s\nstderr:\n%s", stdout, stderr)
	}
	if !strings.Contains(stderr, "--scratch") {
		t.Errorf("the error does not name --scratch:\n%s", stderr)
	}
	t.Logf("stderr:\n%s", stderr)
	checkNothingLeft(t, scratch, dest)
}

// TestBundleVolScratchExcluded: the same 40 MiB volume and 24 MiB scratch, but the
// big files are excluded with -e: the size check counts the exclusion, warns
// nothing, and the bundle is made.
func TestBundleVolScratchExcluded(t *testing.T) {
	testroot.Require(t)
	src, _ := volSource(t, 96)
	volMust(t, os.Mkdir(filepath.Join(src, "big"), 0o755))
	data := make([]byte, 1<<20)
	for i := 0; i < 40; i++ {
		rand.Read(data)
		volMust(t, os.WriteFile(filepath.Join(src, "big", fmt.Sprintf("f%02d", i)), data, 0o644))
	}
	scratch, dest := t.TempDir(), t.TempDir()
	volMust(t, unix.Mount("tmpfs", scratch, "tmpfs", 0, "size=24m"))
	t.Cleanup(func() { unix.Unmount(scratch, unix.MNT_DETACH) })
	code, stdout, stderr := runCLI("bundle-vol", "-u", "111122223333", "--volume", src, "--scratch", scratch, "-d", dest, "-e", src+"/big")
	if code != 0 {
		t.Fatalf("bundle-vol exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	if strings.Contains(stderr, "warning:") {
		t.Errorf("a size warning although -e leaves the 40 MiB out:\n%s", stderr)
	}
}

// TestBundleVolScratchCreated: a missing --scratch is created, with its missing
// parents, and removed again at the end; the help says so.
func TestBundleVolScratchCreated(t *testing.T) {
	testroot.Require(t)
	src, _ := volSource(t, 32)
	volMust(t, os.WriteFile(filepath.Join(src, "hello"), []byte("hi\n"), 0o644))
	base, dest := t.TempDir(), t.TempDir()
	scratch := filepath.Join(base, "a", "b")
	code, stdout, stderr := runCLI("bundle-vol", "-u", "111122223333", "--volume", src, "--scratch", scratch, "-d", dest)
	if code != 0 {
		t.Fatalf("bundle-vol exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	if !strings.Contains(stderr, "created scratch directory "+scratch) {
		t.Errorf("stderr does not say the scratch was created:\n%s", stderr)
	}
	if _, err := os.Stat(filepath.Join(base, "a")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the created scratch %s/a was not removed: %v", base, err)
	}
	// The failure path removes it too (the volume is refused after the scratch exists).
	code, _, stderr = runCLI("bundle-vol", "-u", "111122223333", "--volume", src, "--scratch", scratch, "-d", dest, "--size", "8")
	if code == 0 {
		t.Fatalf("--size 8 accepted:\n%s", stderr)
	}
	if _, err := os.Stat(filepath.Join(base, "a")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("after a failure, the created scratch %s/a was not removed: %v", base, err)
	}
	_, _, help := runCLI("bundle-vol", "-h")
	if !strings.Contains(help, "Created if missing; what was created is removed again") {
		t.Errorf("help does not say what happens to --scratch:\n%s", help)
	}
}

// TestBundleVolScratchDiskFault injects I/O errors under the scratch: the scratch is
// an ext4 of 256 MiB on a loop device whose backing file lives on a 40 MiB tmpfs, so
// every write to the scratch's disk past 40 MiB fails with EIO, as a failing disk
// does (this kernel has no device-mapper, so no dm-error or dm-flakey target). The
// scratch filesystem believes it has room; the image's loop device gets the errors
// from it. bundle-vol must fail, say so, and leave no bundle, mount or loop device.
func TestBundleVolScratchDiskFault(t *testing.T) {
	testroot.Require(t)
	src, _ := volSource(t, 128)
	data := make([]byte, 1<<20)
	for i := 0; i < 80; i++ {
		rand.Read(data)
		volMust(t, os.WriteFile(filepath.Join(src, fmt.Sprintf("f%02d", i)), data, 0o644))
	}
	disk := t.TempDir()
	volMust(t, unix.Mount("tmpfs", disk, "tmpfs", 0, "size=40m"))
	t.Cleanup(func() { unix.Unmount(disk, unix.MNT_DETACH) })
	scratch, dest := t.TempDir(), t.TempDir()
	// Detach and unmount run in reverse order of registration: unmount first.
	file := filepath.Join(disk, "scratch.disk")
	volMust(t, os.WriteFile(file, nil, 0o600))
	volMust(t, os.Truncate(file, 256<<20))
	l, err := volume.AttachLoop(file, 0, 0)
	volMust(t, err)
	t.Cleanup(func() { l.Detach() })
	if out, err := exec.Command("mkfs.ext4", "-q", "-E", "nodiscard,lazy_itable_init=1,lazy_journal_init=1", l.Path).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4: %v %s", err, out)
	}
	volMust(t, unix.Mount(l.Path, scratch, "ext4", 0, "errors=continue"))
	t.Cleanup(func() { unix.Unmount(scratch, unix.MNT_DETACH) })

	code, stdout, stderr := runCLI("bundle-vol", "-u", "111122223333", "--volume", src, "--scratch", scratch, "-d", dest)
	if code == 0 {
		t.Fatalf("bundle-vol exit 0 with a failing scratch disk\nstdout:\n%s\nstderr:\n%s", stdout, stderr)
	}
	if !strings.Contains(stderr, "writes to the image were lost") || !strings.Contains(stderr, "--scratch") {
		t.Errorf("the error does not say the image writes were lost on the scratch:\n%s", stderr)
	}
	t.Logf("stderr:\n%s", stderr)
	if strings.Contains(stderr, "warning: --scratch") {
		t.Errorf("the scratch has room: no size warning expected:\n%s", stderr)
	}
	// When the failing disk turned the scratch filesystem read-only, the work
	// directory cannot go: then the error must name it.
	ok := []string{"lost+found"}
	if left, _ := filepath.Glob(filepath.Join(scratch, "instancestore-bundle-*")); len(left) == 1 {
		if !strings.Contains(stderr, "the work directory "+left[0]+" could not be removed") {
			t.Errorf("%s is left and the error does not say so:\n%s", left[0], stderr)
		}
		ok = append(ok, filepath.Base(left[0]))
	}
	checkNothingLeft(t, scratch, dest, ok...)
}
