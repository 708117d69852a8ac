package driver

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

	"github.com/instancestore/packer-plugin-instancestore/agent"
	"github.com/instancestore/packer-plugin-instancestore/bundle"
	"github.com/instancestore/packer-plugin-instancestore/internal/testroot"
)

// TestLocalRestore bundles an image to S3 with Run, then writes it back onto a loop
// device with Restore through the local communicator: the device holds the image,
// the bundle is still complete in S3, the key was on no command line, and a wrong
// private key is refused with the message users see.
func TestLocalRestore(t *testing.T) {
	testroot.Require(t)
	agentBin := buildLocalAgent(t)
	front, bk := gofakes3Bucket(t)
	dir := t.TempDir()
	img := filepath.Join(dir, "disk.img")
	data := make([]byte, 24<<20)
	rand.Read(data[2<<20 : 14<<20])
	copy(data[20<<20:], bytes.Repeat([]byte("instancestore "), 1000))
	if err := os.WriteFile(img, data, 0o644); err != nil {
		t.Fatal(err)
	}
	remote := filepath.Join(dir, "remote")
	os.Mkdir(remote, 0o755)
	comm := &localComm{}
	ui := newRecordingUi()
	cert, priv, _ := bundle.NewThrowawayUser()
	res, err := Run(context.Background(), Config{
		Comm: comm, Ui: ui, Bucket: bk, AgentBinary: agentBin, RemoteFolder: remote,
		Job:      agent.Request{Mode: agent.ModeImage, Name: "disk", Image: img},
		Manifest: bundle.ManifestConfig{User: "123456789012"}, UserCert: cert, UserKey: priv,
	})
	if err != nil {
		t.Fatalf("Run: %v\n%s", err, ui)
	}
	rc, err := bk.Open(context.Background(), "disk.manifest.xml")
	if err != nil {
		t.Fatal(err)
	}
	xml, _ := io.ReadAll(rc)
	rc.Close()
	m, err := bundle.ParseManifest(xml)
	if err != nil {
		t.Fatal(err)
	}
	_, other, _ := bundle.NewThrowawayUser()
	if _, err := UnwrapManifestKey(m, other); err == nil || !strings.Contains(err.Error(), "this key does not unwrap the manifest's user key") {
		t.Fatalf("wrong key: %v", err)
	}
	key, err := UnwrapManifestKey(m, priv)
	if err != nil {
		t.Fatal(err)
	}

	vol := filepath.Join(dir, "volume")
	os.WriteFile(vol, nil, 0o600)
	os.Truncate(vol, 32<<20)
	out, err := exec.Command("losetup", "--find", "--show", vol).CombinedOutput()
	if err != nil {
		t.Fatalf("losetup: %v: %s", err, out)
	}
	dev := strings.TrimSpace(string(out))
	defer exec.Command("losetup", "-d", dev).Run()

	comm.commands = nil
	rres, err := Restore(context.Background(), RestoreConfig{Comm: comm, Ui: ui, Bucket: bk, ManifestXML: xml, Key: key,
		Device: dev, AgentBinary: agentBin, RemoteFolder: remote})
	if err != nil {
		t.Fatalf("Restore: %v\n%s", err, ui)
	}
	if rres.Written == 0 || rres.ImageSize != int64(len(data)) {
		t.Errorf("result %+v", rres)
	}
	got, _ := os.ReadFile(vol)
	if !bytes.Equal(got[:len(data)], data) {
		t.Fatal("the loop device does not hold the image")
	}
	for _, c := range comm.commands {
		if strings.Contains(c, key.KeyHex()) || strings.Contains(c, key.IVHex()) || strings.Contains(c, "X-Amz") {
			t.Errorf("command line with a secret: %q", c)
		}
	}
	if strings.Contains(ui.String(), key.KeyHex()) {
		t.Error("the key is in the UI")
	}
	if left, _ := os.ReadDir(remote); len(left) != 0 {
		t.Errorf("left in remote_folder: %v", left)
	}
	objs, _ := front.Objects(context.Background(), "local-bundles", "")
	if len(objs) != len(res.Objects) {
		t.Errorf("S3 holds %v after the restore, want the bundle's %v", objs, res.Objects)
	}

	// Not a block device: the agent's refusal comes back, and the bundle
	// stays.
	_, err = Restore(context.Background(), RestoreConfig{Comm: comm, Ui: ui, Bucket: bk, ManifestXML: xml, Key: key,
		Device: "/dev/null", AgentBinary: agentBin, RemoteFolder: remote})
	if err == nil || !strings.Contains(err.Error(), "not a block device") {
		t.Fatalf("restore onto /dev/null: %v", err)
	}
	if objs, _ := front.Objects(context.Background(), "local-bundles", ""); len(objs) != len(res.Objects) {
		t.Errorf("a failed restore changed S3: %v", objs)
	}
	if left, _ := os.ReadDir(remote); len(left) != 0 {
		t.Errorf("left in remote_folder: %v", left)
	}
}
