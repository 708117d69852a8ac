package driver

import (
	"context"
	"crypto/rand"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/instancestore/packer-plugin-instancestore/agent"
	"github.com/instancestore/packer-plugin-instancestore/bundle"
	"github.com/instancestore/packer-plugin-instancestore/internal/testroot"
)

// TestLocalVolumeScratchFull: the agent images a volume (40 MiB of files) through a
// scratch directory with 24 MiB of room: the run fails before imaging, and the
// driver's error is the agent's room check with what to set, exactly; nothing is
// uploaded or left in the scratch.
func TestLocalVolumeScratchFull(t *testing.T) {
	testroot.Require(t)
	agentBin := buildLocalAgent(t)
	front, bk := gofakes3Bucket(t)
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	if err := os.Mkdir(src, 0o755); err != nil {
		t.Fatal(err)
	}
	data := make([]byte, 1<<20)
	for i := 0; i < 40; i++ {
		rand.Read(data)
		if err := os.WriteFile(filepath.Join(src, fmt.Sprintf("f%02d", i)), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	fsImg := filepath.Join(dir, "fs.img")
	if out, err := exec.Command("mkfs.ext4", "-q", "-d", src, fsImg, "96M").CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4: %v: %s", err, out)
	}
	mnt := filepath.Join(dir, "mnt")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mount", "-o", "loop,ro", fsImg, mnt).CombinedOutput(); err != nil {
		t.Fatalf("mount: %v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", "-d", mnt).Run() })
	scratch := filepath.Join(dir, "scratch")
	if err := os.Mkdir(scratch, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("tmpfs", scratch, "tmpfs", 0, "size=24m"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Unmount(scratch, unix.MNT_DETACH) })
	remote := filepath.Join(dir, "remote")
	if err := os.Mkdir(remote, 0o755); err != nil {
		t.Fatal(err)
	}

	_, err := Run(context.Background(), Config{
		Comm: &localComm{}, Ui: newRecordingUi(), Bucket: bk, AgentBinary: agentBin, RemoteFolder: remote,
		Job:      agent.Request{Mode: agent.ModeVolume, Name: "vol", Volume: &agent.VolumeRequest{Volume: mnt, Scratch: scratch, Partition: "none"}},
		Manifest: bundle.ManifestConfig{User: "123456789012"},
	})
	want := regexp.MustCompile(`^the agent on the instance failed: imaging volume ` + regexp.QuoteMeta(mnt) + `: not enough room for the image: ` +
		`scratch directory ` + regexp.QuoteMeta(scratch) + `/instancestore-run-[0-9]+ has 2[0-4] MiB free but the image will hold 4[0-9] MiB \(4[0-9] MiB used on the volume, 0 MiB excluded\): ` +
		`use a scratch directory with more room \(an instance-store volume, or an EBS volume mounted there\); ` +
		`set bundle_destination to a directory with room \(an instance store volume, or an EBS volume added with launch_block_device_mappings and mounted there by a provisioner\)$`)
	if err == nil || !want.MatchString(err.Error()) {
		t.Fatalf("error\n%v\nwant one matching\n%s", err, want)
	}
	if objs, _ := front.Objects(context.Background(), "local-bundles", ""); len(objs) != 0 {
		t.Errorf("left in S3: %v", objs)
	}
	if left, _ := os.ReadDir(scratch); len(left) != 0 {
		t.Errorf("left in the scratch: %v", left)
	}
}
