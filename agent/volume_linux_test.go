package agent

import (
	"context"
	"crypto/rand"
	"fmt"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/instancestore/packer-plugin-instancestore/bundle"
	"github.com/instancestore/packer-plugin-instancestore/internal/testroot"
)

// TestAgentBundlesVolume images a mounted ext4 filesystem in volume mode and checks
// that the bundle unbundles to a filesystem holding its files, and that the scratch
// directory is left empty.
func TestAgentBundlesVolume(t *testing.T) {
	testroot.Require(t)
	for _, tool := range []string{"mkfs.ext4", "debugfs", "mount"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is needed (e2fsprogs, mount): %v", tool, err)
		}
	}
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	os.MkdirAll(filepath.Join(src, "etc"), 0o755)
	os.WriteFile(filepath.Join(src, "etc", "hello.txt"), []byte("hello from the volume\n"), 0o644)
	os.WriteFile(filepath.Join(src, "secret.pem"), []byte("filtered\n"), 0o600)
	fsImg := filepath.Join(dir, "fs.img")
	if out, err := exec.Command("mkfs.ext4", "-q", "-d", src, "-L", "agentvol", fsImg, "32M").CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4: %v: %s", err, out)
	}
	mnt := filepath.Join(dir, "mnt")
	os.Mkdir(mnt, 0o755)
	if out, err := exec.Command("mount", "-o", "loop,ro", fsImg, mnt).CombinedOutput(); err != nil {
		t.Fatalf("mount: %v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", "-d", mnt).Run() })

	st := &objectStore{objs: map[string][]byte{}}
	srv := httptest.NewServer(st)
	defer srv.Close()
	scratch := filepath.Join(dir, "scratch")
	os.Mkdir(scratch, 0o700)
	req, k := newRequest(t, "")
	req.Mode, req.Image = ModeVolume, ""
	req.Volume = &VolumeRequest{Volume: mnt, Scratch: scratch, Partition: "none", Filter: true}
	h, err, _ := runHost(t, req, srv.URL, 0)
	if err != nil {
		t.Fatalf("agent: %v (%s)", err, h.errMsg)
	}
	var sawImaging bool
	for _, e := range h.events {
		if e.Type == EventProgress && e.Progress.Phase == "imaging" || e.Type == EventLog && strings.Contains(e.Message, "imaged") {
			sawImaging = true
		}
	}
	if !sawImaging {
		t.Error("no imaging progress or log event")
	}
	if left, _ := os.ReadDir(scratch); len(left) != 0 {
		t.Fatalf("scratch not cleaned: %v", left)
	}

	// Unbundle with the reader of the bundle package.
	partsDir := filepath.Join(dir, "parts")
	os.Mkdir(partsDir, 0o755)
	for name, b := range st.objs {
		os.WriteFile(filepath.Join(partsDir, name), b, 0o644)
	}
	res, err := h.result.BundleResult()
	if err != nil {
		t.Fatal(err)
	}
	cert, _, _ := bundle.NewThrowawayUser()
	m, err := bundle.NewManifest(res, bundle.ManifestConfig{Architecture: "x86_64", User: "123456789012"}, k, cert, cert)
	if err != nil {
		t.Fatal(err)
	}
	out, _ := os.Create(filepath.Join(dir, "restored.img"))
	defer out.Close()
	if err := bundle.Unbundle(context.Background(), m, k, bundle.DirSource(partsDir), out); err != nil {
		t.Fatal(err)
	}
	got, err := exec.Command("debugfs", "-R", "cat /etc/hello.txt", out.Name()).Output()
	if err != nil || string(got) != "hello from the volume\n" {
		t.Fatalf("restored image: /etc/hello.txt = %q (%v)", got, err)
	}
	if got, _ := exec.Command("debugfs", "-R", "stat /secret.pem", out.Name()).CombinedOutput(); !strings.Contains(string(got), "not found") {
		t.Errorf("the filter left secret.pem in the image: %s", got)
	}
}

// TestAgentVolumeScratchFull: with a scratch filesystem too small for the image, the
// agent refuses before imaging (its room check; writes lost on a scratch that fills
// up later are bundle/volume's and the CLI's disk-fault tests), reports it as its
// error event (so the builder and provisioner fail and register nothing), uploads no
// part, and leaves the scratch empty.
func TestAgentVolumeScratchFull(t *testing.T) {
	testroot.Require(t)
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	os.MkdirAll(src, 0o755)
	data := make([]byte, 1<<20)
	for i := 0; i < 40; i++ {
		rand.Read(data)
		os.WriteFile(filepath.Join(src, fmt.Sprintf("f%02d", i)), data, 0o644)
	}
	fsImg := filepath.Join(dir, "fs.img")
	if out, err := exec.Command("mkfs.ext4", "-q", "-d", src, fsImg, "96M").CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4: %v: %s", err, out)
	}
	mnt := filepath.Join(dir, "mnt")
	os.Mkdir(mnt, 0o755)
	if out, err := exec.Command("mount", "-o", "loop,ro", fsImg, mnt).CombinedOutput(); err != nil {
		t.Fatalf("mount: %v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", "-d", mnt).Run() })
	scratch := filepath.Join(dir, "scratch")
	os.Mkdir(scratch, 0o700)
	if err := unix.Mount("tmpfs", scratch, "tmpfs", 0, "size=24m"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Unmount(scratch, unix.MNT_DETACH) })

	st := &objectStore{objs: map[string][]byte{}}
	srv := httptest.NewServer(st)
	defer srv.Close()
	req, _ := newRequest(t, "")
	req.Mode, req.Image = ModeVolume, ""
	req.Volume = &VolumeRequest{Volume: mnt, Scratch: scratch, Partition: "none"}
	h, err, _ := runHost(t, req, srv.URL, 0)
	if err == nil {
		t.Fatal("the agent succeeded with a full scratch filesystem")
	}
	if !strings.Contains(h.errMsg, ScratchFullText) || !strings.Contains(h.errMsg, "scratch directory") {
		t.Errorf("error event %q does not say the scratch has no room for the image", h.errMsg)
	}
	if h.result != nil {
		t.Errorf("a result was reported: %+v", h.result)
	}
	if len(st.objs) != 0 {
		t.Errorf("objects uploaded: %d", len(st.objs))
	}
	if left, _ := os.ReadDir(scratch); len(left) != 0 {
		t.Errorf("scratch not cleaned: %v", left)
	}
}
