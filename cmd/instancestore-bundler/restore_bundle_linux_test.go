//go:build linux

package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"golang.org/x/sys/unix"

	"github.com/instancestore/packer-plugin-instancestore/bundle/volume"
	"github.com/instancestore/packer-plugin-instancestore/internal/testroot"
)

// loopDisk is a loop device on a new sparse file of sizeMiB: a fresh volume.
func loopDisk(t *testing.T, sizeMiB int64) string {
	t.Helper()
	file := filepath.Join(t.TempDir(), "volume.raw")
	volMust(t, os.WriteFile(file, nil, 0o600))
	volMust(t, os.Truncate(file, sizeMiB<<20))
	l, err := volume.AttachLoop(file, 0, 0)
	volMust(t, err)
	t.Cleanup(func() { l.Detach() })
	return l.Path
}

// TestRestoreBundle bundles and uploads an image with holes to MinIO with the CLI,
// then restore-bundle writes it onto a loop device (a fresh volume) straight from S3:
// the device holds the image. Then the refusals, each before anything is written
// where it matters: another user's key, a device smaller than the image, a mounted
// one, something that is not a block device, a part damaged in S3.
func TestRestoreBundle(t *testing.T) {
	testroot.Require(t)
	f := startMinIO(t)
	dir := t.TempDir()
	certPath, keyPath := volUser(t, dir)

	// 20 MiB: random data at the start and at 12 MiB, zeros between (skipped).
	data := make([]byte, 20<<20)
	rand.Read(data[:3<<20])
	rand.Read(data[12<<20 : 13<<20])
	copy(data[19<<20:], "the end of the image")
	img := filepath.Join(dir, "disk.img")
	volMust(t, os.WriteFile(img, data, 0o644))
	bdir := filepath.Join(dir, "bundle")
	volMust(t, os.Mkdir(bdir, 0o755))
	if code, _, e := runCLI("bundle-image", "-i", img, "-u", "123456789012", "-c", certPath, "-k", keyPath, "-d", bdir, "-p", "disk"); code != 0 {
		t.Fatalf("bundle-image: %d %s", code, e)
	}
	if code, _, e := runCLI("upload-bundle", "-b", "cli-bundles/images", "-m", filepath.Join(bdir, "disk.manifest.xml")); code != 0 {
		t.Fatalf("upload-bundle: %d %s", code, e)
	}

	dev := loopDisk(t, 24)
	code, out, e := runCLI("restore-bundle", "-b", "cli-bundles/images", "-m", "disk.manifest.xml", "-k", keyPath, "-d", dev)
	if code != 0 {
		t.Fatalf("restore-bundle: exit %d\n%s%s", code, out, e)
	}
	t.Logf("restore-bundle:\n%s%s", out, e)
	for _, want := range []string{"device     " + dev, "checked    ", "part digests"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	got := make([]byte, 24<<20)
	d, err := os.Open(dev)
	volMust(t, err)
	_, err = io.ReadFull(d, got)
	d.Close()
	volMust(t, err)
	if !bytes.Equal(got[:len(data)], data) {
		t.Fatal("the device does not hold the image")
	}
	if !bytes.Equal(got[len(data):], make([]byte, len(got)-len(data))) {
		t.Error("restore-bundle wrote past the image's end")
	}

	refuse := func(name, want string, args ...string) {
		t.Helper()
		code, out, e := runCLI(append([]string{"restore-bundle", "-b", "cli-bundles/images", "-p", "disk"}, args...)...)
		if code != 1 || !strings.Contains(e, want) {
			t.Errorf("%s: exit %d, want 1 and %q in:\n%s%s", name, code, want, out, e)
		}
	}
	_, otherKey := volUser(t, t.TempDir())
	refuse("another user's key", "this key does not unwrap the manifest's user key", "-k", otherKey, "-d", loopDisk(t, 24))
	refuse("a small device", "smaller than the 20971520-byte image", "-k", keyPath, "-d", loopDisk(t, 8))
	mounted := loopDisk(t, 24)
	if out, err := exec.Command("mkfs.ext4", "-q", mounted).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4: %v %s", err, out)
	}
	mnt := t.TempDir()
	volMust(t, unix.Mount(mounted, mnt, "ext4", 0, ""))
	defer unix.Unmount(mnt, unix.MNT_DETACH)
	refuse("a mounted device", "is in use ("+mounted+" mounted on "+mnt+")", "-k", keyPath, "-d", mounted)
	refuse("a character device", "is not a block device", "-k", keyPath, "-d", "/dev/null")

	// One flipped bit in part 0 in S3: the SHA-1 check fails the command.
	cl := f.Client(os.Getenv("AWS_REGION"))
	obj, err := cl.GetObject(context.Background(), &s3.GetObjectInput{Bucket: aws.String("cli-bundles"), Key: aws.String("images/disk.part.0")})
	volMust(t, err)
	part, err := io.ReadAll(obj.Body)
	obj.Body.Close()
	volMust(t, err)
	part[len(part)/2] ^= 1
	_, err = cl.PutObject(context.Background(), &s3.PutObjectInput{Bucket: aws.String("cli-bundles"), Key: aws.String("images/disk.part.0"), Body: bytes.NewReader(part)})
	volMust(t, err)
	refuse("a flipped bit", "disk.part.0", "-k", keyPath, "-d", loopDisk(t, 24))
}

func TestRestoreBundleUsage(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"-p", "disk", "-k", "pk.pem", "-d", "/dev/xvdf"}, "-b, --bucket is required"},
		{[]string{"-b", "b-ok", "-k", "pk.pem", "-d", "/dev/xvdf"}, "-m, --manifest or -p, --prefix is required"},
		{[]string{"-b", "b-ok", "-p", "disk", "-d", "/dev/xvdf"}, "-k, --privatekey is required"},
		{[]string{"-b", "b-ok", "-p", "disk", "-k", "pk.pem"}, "-d, --device is required"},
		{[]string{"-b", "b-ok", "-p", "disk", "-k", "pk.pem", "-d", "xvdf"}, "want a block device path under /dev/"},
		{[]string{"-b", "Bad_Bucket", "-p", "disk", "-k", "pk.pem", "-d", "/dev/xvdf"}, "-b, --bucket \"Bad_Bucket\""},
	} {
		code, _, e := runCLI(append([]string{"restore-bundle"}, c.args...)...)
		if code != 2 || !strings.Contains(e, c.want) {
			t.Errorf("%v: exit %d, want 2 and %q in %s", c.args, code, c.want, e)
		}
	}
	code, _, e := runCLI("restore-bundle", "-h")
	if code != 0 || !strings.Contains(e, "usage: instancestore-bundler restore-bundle") || !strings.Contains(e, "DEVICE must read zeros") {
		t.Errorf("-h: exit %d\n%s", code, e)
	}
	code, _, e = runCLI("help")
	if code != 0 || !strings.Contains(e, "restore-bundle") {
		t.Errorf("the command list lacks restore-bundle:\n%s", e)
	}
}
