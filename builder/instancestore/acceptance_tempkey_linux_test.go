package instancestore

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
)

// TestAcceptanceTemporaryKeyLeftOut: the key pair Packer makes for the build is in
// ~/.ssh/authorized_keys of the source instance (as cloud-init puts it there on EC2),
// and the new AMI holds it nowhere, while a key of the user's own in the same files is
// kept. The new AMI's instance takes its own key pair's key.
func TestAcceptanceTemporaryKeyLeftOut(t *testing.T) {
	a := startLocal(t)
	ctx := context.Background()
	bucket := "acc-tempkey"
	dir := filepath.Join(a.Root, "builder", "instancestore", "testdata", "tempkey")
	if out, err := a.run(t, dir, a.envList(), "init", "."); err != nil {
		t.Fatalf("packer init: %v\n%s", err, out)
	}
	const ownKey = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFw0wnKeyOfTheUsersOwnThatTheImageKeeps0000000 own@example"
	outDir := t.TempDir()
	bctx, cancel := context.WithTimeout(ctx, 20*time.Minute)
	defer cancel()
	r := a.Build(bctx, t, dir, a.envList("PACKER_LOG=1", "PACKER_LOG_PATH="+filepath.Join(outDir, "packer.log")), "",
		"-var", "s3_bucket="+bucket, "-var", "output_dir="+outDir, "-var", "own_key="+ownKey, ".")
	out := r.Output
	if r.Err != nil {
		a.failWithLog(t, outDir, out, r.Err)
	}
	m := regexp.MustCompile(`temporary key: (AAAA[A-Za-z0-9+/=]+)`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("the provisioner printed no temporary key:\n%s", out)
	}
	tempKey := m[1]

	data, err := os.ReadFile(filepath.Join(outDir, "packer-manifest.json"))
	if err != nil {
		t.Fatal(err)
	}
	var pm struct {
		Builds []struct {
			ArtifactID string `json:"artifact_id"`
		} `json:"builds"`
	}
	if err := json.Unmarshal(data, &pm); err != nil || len(pm.Builds) != 1 {
		t.Fatalf("packer-manifest.json: %v\n%s", err, data)
	}
	_, ami, _ := strings.Cut(pm.Builds[0].ArtifactID, ":")

	// The launch helper logs in with the new instance's own key pair: that it gets in at
	// all is the accepted key.
	got := a.sshNewInstance(t, ami, "cat ~/.ssh/authorized_keys; echo --; sudo cat /root/.ssh/authorized_keys; echo --; sudo grep -rl -F '"+tempKey+"' /root /home /etc 2>/dev/null; true")
	parts := strings.Split(got, "--\n")
	if len(parts) != 3 {
		t.Fatalf("unexpected output from the new instance: %q", got)
	}
	for i, who := range []string{"admin", "root"} {
		if strings.Contains(parts[i], tempKey) {
			t.Errorf("the build's temporary key is in %s's authorized_keys of the new AMI:\n%s", who, parts[i])
		}
		if !strings.Contains(parts[i], ownKey) {
			t.Errorf("the user's own key was dropped from %s's authorized_keys:\n%s", who, parts[i])
		}
	}
	if strings.TrimSpace(parts[2]) != "" {
		t.Errorf("the temporary key is still in the image: %s", parts[2])
	}
	if _, err := a.ec2.DeregisterImage(ctx, &ec2.DeregisterImageInput{ImageId: aws.String(ami)}); err != nil {
		t.Fatal(err)
	}
	a.emptyBucket(t, bucket)
}
