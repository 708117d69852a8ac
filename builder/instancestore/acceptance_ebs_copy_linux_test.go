//go:build linux

package instancestore

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/instancestore/packer-plugin-instancestore/bundle"
	"github.com/instancestore/packer-plugin-instancestore/internal/launch"
	s3bundle "github.com/instancestore/packer-plugin-instancestore/s3"
)

// The ebs_copy acceptance tests run `packer build` of testdata/ebs-copy (an hvm
// instance store-backed AMI with an ebs_copy block, no X.509 material) against the
// local environment's namespace machines: the build must yield both AMIs, the EBS one
// registered from a snapshot whose bytes are the bundle's image; a SIGINT while the
// agent writes the volume must leave nothing behind.

// buildEBSCopy runs packer build of testdata/ebs-copy; SIGINT goes to packer as soon
// as a line of its output contains cancelAt (when not empty).
func (a *accEnv) buildEBSCopy(t *testing.T, outDir, bucket, cancelAt string) (string, error, bool) {
	t.Helper()
	dir, err := filepath.Abs("testdata/ebs-copy")
	if err != nil {
		t.Fatal(err)
	}
	return a.buildTemplate(t, dir, outDir, bucket, cancelAt)
}

// ebsLeftovers lists the volumes and snapshots in the simulator, and the AMIs, but
// those in keep. The root volumes of instances being terminated go with them: they
// are waited for.
func (a *accEnv) ebsLeftovers(t *testing.T, keep ...string) []string {
	t.Helper()
	ctx := context.Background()
	kept := map[string]bool{}
	for _, k := range keep {
		kept[k] = true
	}
	var left []string
	for deadline := time.Now().Add(2 * time.Minute); ; time.Sleep(time.Second) {
		vols, err := a.ec2.DescribeVolumes(ctx, &ec2.DescribeVolumesInput{})
		if err != nil {
			t.Fatal(err)
		}
		left = nil
		for _, v := range vols.Volumes {
			left = append(left, fmt.Sprintf("volume %s (%s, %d attachments)", aws.ToString(v.VolumeId), v.State, len(v.Attachments)))
		}
		if len(left) == 0 || time.Now().After(deadline) {
			break
		}
	}
	snaps, err := a.ec2.DescribeSnapshots(ctx, &ec2.DescribeSnapshotsInput{OwnerIds: []string{"self"}})
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range snaps.Snapshots {
		if !kept[aws.ToString(s.SnapshotId)] {
			left = append(left, "snapshot "+aws.ToString(s.SnapshotId))
		}
	}
	imgs, err := a.ec2.DescribeImages(ctx, &ec2.DescribeImagesInput{Owners: []string{"self"}})
	if err != nil {
		t.Fatal(err)
	}
	for _, img := range imgs.Images {
		if !kept[aws.ToString(img.ImageId)] {
			left = append(left, fmt.Sprintf("AMI %s (%s)", aws.ToString(img.ImageId), aws.ToString(img.Name)))
		}
	}
	return left
}

// sshNewInstanceOfType launches ami as typ, runs cmd over SSH as admin and
// terminates the instance.
func (a *accEnv) sshNewInstanceOfType(t *testing.T, ami, typ, cmd string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	out, err := launch.Run(ctx, a.ec2, ami, typ, "admin", cmd, t.Logf)
	if err != nil {
		t.Fatalf("on a %s instance of AMI %s: %v: %s", typ, ami, err, out)
	}
	return out
}

func TestAcceptanceEBSCopy(t *testing.T) {
	a := startLocal(t)
	ctx := context.Background()
	outDir := t.TempDir()
	bucket := "acc-ebs-copy"
	start := time.Now()
	out, err, _ := a.buildEBSCopy(t, outDir, bucket, "")
	if err != nil {
		a.failWithLog(t, outDir, out, err)
	}
	t.Logf("packer build with ebs_copy took %s", time.Since(start).Round(time.Second))

	data, err := os.ReadFile(filepath.Join(outDir, "packer-manifest.json"))
	if err != nil {
		t.Fatal(err)
	}
	var manifest struct {
		Builds []struct {
			ArtifactID string            `json:"artifact_id"`
			CustomData map[string]string `json:"custom_data"`
		} `json:"builds"`
	}
	if err := json.Unmarshal(data, &manifest); err != nil || len(manifest.Builds) != 1 {
		t.Fatalf("packer-manifest.json: %v\n%s", err, data)
	}
	b := manifest.Builds[0]
	// Two AMIs in the build region: the instance store-backed one first.
	region := a.vars["AWS_REGION"]
	ids := strings.Split(b.ArtifactID, ",")
	if len(ids) != 2 || !strings.HasPrefix(ids[0], region+":ami-") || !strings.HasPrefix(ids[1], region+":ami-") {
		t.Fatalf("artifact id %q, want %s:ami-IS,%s:ami-EBS", b.ArtifactID, region, region)
	}
	isAMI, ebsAMI := strings.TrimPrefix(ids[0], region+":"), strings.TrimPrefix(ids[1], region+":")
	if b.CustomData["ebs_copy_ami"] != ebsAMI {
		t.Errorf("build.EBSCopyAMI = %q, want %s", b.CustomData["ebs_copy_ami"], ebsAMI)
	}
	if !strings.Contains(out, "EBS-backed AMI (ebs_copy):") || !strings.Contains(out, "every part and the image digest checked") {
		t.Errorf("the build's output does not show the EBS copy")
	}

	imgs, err := a.ec2.DescribeImages(ctx, &ec2.DescribeImagesInput{ImageIds: []string{isAMI, ebsAMI}})
	if err != nil || len(imgs.Images) != 2 {
		t.Fatalf("DescribeImages: %v", err)
	}
	byID := map[string]ec2types.Image{}
	for _, img := range imgs.Images {
		byID[aws.ToString(img.ImageId)] = img
	}
	is, ebs := byID[isAMI], byID[ebsAMI]
	if is.RootDeviceType != ec2types.DeviceTypeInstanceStore || aws.ToString(is.ImageLocation) != strings.TrimPrefix(b.CustomData["bundle_manifest"], "s3://") {
		t.Errorf("instance store-backed AMI: %s from %s", is.RootDeviceType, aws.ToString(is.ImageLocation))
	}
	if ebs.RootDeviceType != ec2types.DeviceTypeEbs || aws.ToString(ebs.RootDeviceName) != "/dev/xvda" || ebs.BootMode != ec2types.BootModeValuesLegacyBios ||
		!aws.ToBool(ebs.EnaSupport) || ebs.VirtualizationType != ec2types.VirtualizationTypeHvm || ebs.State != ec2types.ImageStateAvailable ||
		ebs.Architecture != is.Architecture || aws.ToString(ebs.Name) != aws.ToString(is.Name)+"-ebs" ||
		aws.ToString(ebs.Description) != "EBS-backed copy, from "+a.vars["INSTANCESTORE_SOURCE_AMI_HVM"] {
		t.Errorf("EBS-backed AMI %s: root %s %s, boot %s, ena %v, %s, %s, name %q, description %q", ebsAMI, ebs.RootDeviceType, aws.ToString(ebs.RootDeviceName),
			ebs.BootMode, aws.ToBool(ebs.EnaSupport), ebs.VirtualizationType, ebs.State, aws.ToString(ebs.Name), aws.ToString(ebs.Description))
	}
	tags := map[string]string{}
	for _, tg := range ebs.Tags {
		tags[aws.ToString(tg.Key)] = aws.ToString(tg.Value)
	}
	if tags["Name"] != "ebs-copy-acc-ebs" || tags["Kind"] != "ebs" {
		t.Errorf("EBS-backed AMI tags %v", tags)
	}
	var snapshot string
	isStore := map[string]string{}
	for _, m := range is.BlockDeviceMappings {
		if v := aws.ToString(m.VirtualName); strings.HasPrefix(v, "ephemeral") {
			isStore[aws.ToString(m.DeviceName)] = v
		}
	}
	ebsStore := map[string]string{}
	for _, m := range ebs.BlockDeviceMappings {
		switch {
		case m.Ebs != nil && aws.ToString(m.DeviceName) == "/dev/xvda":
			snapshot = aws.ToString(m.Ebs.SnapshotId)
			if m.Ebs.VolumeType != ec2types.VolumeTypeGp3 || !aws.ToBool(m.Ebs.DeleteOnTermination) {
				t.Errorf("root mapping %+v", m.Ebs)
			}
		case strings.HasPrefix(aws.ToString(m.VirtualName), "ephemeral"):
			ebsStore[aws.ToString(m.DeviceName)] = aws.ToString(m.VirtualName)
		}
	}
	if fmt.Sprint(isStore) != fmt.Sprint(ebsStore) {
		t.Errorf("instance store mappings: EBS copy %v, instance store-backed AMI %v", ebsStore, isStore)
	}
	if snapshot == "" {
		t.Fatalf("the EBS-backed AMI has no root snapshot: %+v", ebs.BlockDeviceMappings)
	}

	// The snapshot's bytes are the image: unbundle the instance store-backed AMI's
	// bundle with the simulator's EC2 key (as EC2 would) and compare.
	imagePath := a.unbundle(t, b.CustomData["bundle_manifest"])
	snapPath := a.snapshotFile(t, snapshot)
	same, detail := sameImage(t, imagePath, snapPath)
	if !same {
		t.Errorf("snapshot %s is not the image: %s", snapshot, detail)
	}

	// The EBS copy runs on a Nitro type (NVMe root) and has the provisioned file.
	got := a.sshNewInstanceOfType(t, ebsAMI, "t3.micro", "cat /etc/instancestore/demo.txt")
	if !strings.Contains(got, "provisioned by packer from "+a.vars["INSTANCESTORE_SOURCE_AMI_HVM"]) {
		t.Errorf("the provisioned file is not on the EBS copy: %q", got)
	}

	// Nothing else is left: no volume; only the two AMIs and the snapshot.
	if l := a.ebsLeftovers(t, isAMI, ebsAMI, snapshot); len(l) > 0 {
		t.Errorf("left behind: %v", l)
	}
	for _, id := range []string{isAMI, ebsAMI} {
		if _, err := a.ec2.DeregisterImage(ctx, &ec2.DeregisterImageInput{ImageId: aws.String(id)}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := a.ec2.DeleteSnapshot(ctx, &ec2.DeleteSnapshotInput{SnapshotId: aws.String(snapshot)}); err != nil {
		t.Fatal(err)
	}
	a.emptyBucket(t, bucket)
	a.checkLeftovers(t, bucket, "") // instances, key pairs, security groups
}

// TestAcceptanceEBSCopyCancel interrupts the build while the agent writes the EBS
// copy's volume, and after the snapshot: nothing may be left (no volume, snapshot,
// AMI, instance, key pair, security group or object).
func TestAcceptanceEBSCopyCancel(t *testing.T) {
	a := startLocal(t)
	for i, at := range []string{"Writing the image onto volume", "Registered EBS-backed AMI"} {
		t.Run(at, func(t *testing.T) {
			outDir := t.TempDir()
			bucket := fmt.Sprintf("acc-ebs-cancel-%d", i)
			out, err, interrupted := a.buildEBSCopy(t, outDir, bucket, at)
			if !interrupted {
				a.failWithLog(t, outDir, out, fmt.Errorf("the build never printed %q (exit: %v)", at, err))
			}
			if err == nil {
				t.Errorf("packer build succeeded although it was interrupted at %q", at)
			}
			a.checkLeftovers(t, bucket, "")
			if l := a.ebsLeftovers(t); len(l) > 0 {
				t.Errorf("left behind: %v", l)
			}
			if t.Failed() {
				t.Logf("packer output:\n%s", out)
			}
		})
	}
}

// unbundle writes the image of the bundle at manifest (s3://bucket/key) to a file,
// with the key unwrapped by the simulator's EC2 key, and returns its path.
func (a *accEnv) unbundle(t *testing.T, manifest string) string {
	t.Helper()
	ctx := context.Background()
	bkt, prefix, name, err := parseImageLocation(strings.TrimPrefix(manifest, "s3://"))
	if err != nil {
		t.Fatal(err)
	}
	cfg := aws.Config{Region: a.vars["AWS_REGION"], Credentials: credentials.NewStaticCredentialsProvider(a.vars["AWS_ACCESS_KEY_ID"], a.vars["AWS_SECRET_ACCESS_KEY"], "")}
	cfg.BaseEndpoint = aws.String(a.vars["AWS_ENDPOINT_URL_S3"])
	b, err := s3bundle.New(cfg, cfg.Region, bkt, prefix, s3bundle.Options{PathStyle: true})
	if err != nil {
		t.Fatal(err)
	}
	m, err := b.GetManifest(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	priv, err := bundle.LoadPrivateKey(filepath.Join(filepath.Dir(a.local.EC2.EC2CertPath()), "ec2-key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	key, err := bundle.UnwrapKey(priv, m.EC2EncryptedKey, m.EC2EncryptedIV)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Create(filepath.Join(t.TempDir(), "image.raw"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := bundle.Unbundle(ctx, m, key, b, f); err != nil {
		t.Fatal(err)
	}
	return f.Name()
}

// snapshotFile is the simulator's file of snapshot id.
func (a *accEnv) snapshotFile(t *testing.T, id string) string {
	t.Helper()
	var found string
	filepath.WalkDir(a.local.Dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() && d.Name() == id+".img" {
			found = p
		}
		return nil
	})
	if found == "" {
		t.Fatalf("no file of snapshot %s under %s", id, a.local.Dir)
	}
	return found
}

// sameImage reports whether snapshot starts with image's bytes and reads zeros after.
func sameImage(t *testing.T, image, snapshot string) (bool, string) {
	t.Helper()
	fi, err := os.Open(image)
	if err != nil {
		t.Fatal(err)
	}
	defer fi.Close()
	fs, err := os.Open(snapshot)
	if err != nil {
		t.Fatal(err)
	}
	defer fs.Close()
	bi, bs := make([]byte, 1<<20), make([]byte, 1<<20)
	var off int64
	for {
		n, err := io.ReadFull(fi, bi)
		if n > 0 {
			if _, err := io.ReadFull(fs, bs[:n]); err != nil {
				return false, fmt.Sprintf("the snapshot ends at %d: %v", off, err)
			}
			if !bytes.Equal(bi[:n], bs[:n]) {
				return false, fmt.Sprintf("the MiB at %d differs", off)
			}
			off += int64(n)
		}
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	zero := make([]byte, len(bs))
	for {
		n, err := fs.Read(bs)
		if !bytes.Equal(bs[:n], zero[:n]) {
			return false, fmt.Sprintf("the snapshot is not zero after the image (at %d)", off)
		}
		off += int64(n)
		if err == io.EOF {
			return true, ""
		}
		if err != nil {
			t.Fatal(err)
		}
	}
}
