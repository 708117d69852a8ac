package ebspp

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/hashicorp/packer-plugin-sdk/multistep"
	packersdk "github.com/hashicorp/packer-plugin-sdk/packer"

	"github.com/instancestore/packer-plugin-instancestore/bundle"
	"github.com/instancestore/packer-plugin-instancestore/localenv/ec2sim"
	"github.com/instancestore/packer-plugin-instancestore/localenv/s3env"
	s3bundle "github.com/instancestore/packer-plugin-instancestore/s3"
)

type simEnv struct {
	sim    *ec2sim.Server
	front  *s3env.Front
	client *ec2.Client
	cfg    aws.Config
	creds  ec2sim.Credentials
}

func startSim(t *testing.T) *simEnv {
	t.Helper()
	backend, err := s3env.StartGoFakeS3()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { backend.Close() })
	front, err := s3env.NewFront(backend, s3env.FrontOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { front.Close() })
	creds := ec2sim.Credentials{AccessKeyID: "AKIATESTEBSPPSTEPS00", SecretAccessKey: "c2VjcmV0LWZvci10aGUtZWJzLXBwLXN0ZXBzLXRlc3Q"}
	sim, err := ec2sim.Start(ec2sim.Config{Credentials: creds, DataDir: t.TempDir(), S3: ec2sim.FrontReader{Front: front}, PendingTime: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sim.Close() })
	t.Setenv("AWS_ENDPOINT_URL_EC2", sim.URL())
	t.Setenv("AWS_ENDPOINT_URL_STS", sim.URL())
	t.Setenv("AWS_ENDPOINT_URL_S3", front.URL())
	cfg, err := awsconfig.LoadDefaultConfig(context.Background(), awsconfig.WithRegion("us-east-1"),
		awsconfig.WithCredentialsProvider(credentials.NewStaticCredentialsProvider(creds.AccessKeyID, creds.SecretAccessKey, "")))
	if err != nil {
		t.Fatal(err)
	}
	return &simEnv{sim: sim, front: front, client: ec2.NewFromConfig(cfg), cfg: cfg, creds: creds}
}

// registerBundle bundles a small MBR disk into bucket "conv", registers it as an
// instance store-backed AMI and returns the AMI id and the user's private key file.
func (e *simEnv) registerBundle(t *testing.T) (string, string) {
	t.Helper()
	ctx := context.Background()
	if _, err := e.front.Client("us-east-1").CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String("conv")}); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	disk := filepath.Join(dir, "disk.raw")
	img := make([]byte, 2<<20)
	rand.Read(img[1<<20 : 1<<20+8192])
	copy(img[446+4:], "\x83")
	copy(img[446+8:], "\x00\x08\x00\x00")
	copy(img[446+12:], "\x00\x08\x00\x00")
	copy(img[510:], "\x55\xaa")
	os.WriteFile(disk, img, 0o644)
	bimg, err := bundle.OpenImage(disk)
	if err != nil {
		t.Fatal(err)
	}
	defer bimg.Close()
	k, _ := bundle.NewKey()
	parts := filepath.Join(dir, "parts")
	os.Mkdir(parts, 0o755)
	res, err := bundle.Write(ctx, bimg, bundle.WriterConfig{Name: "conv", Key: k}, bundle.DirSink(parts))
	if err != nil {
		t.Fatal(err)
	}
	b, err := s3bundle.New(e.cfg, "us-east-1", "conv", "img", s3bundle.Options{PathStyle: true})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range res.Parts {
		data, _ := os.ReadFile(filepath.Join(parts, p.Name))
		if err := b.Put(ctx, p.Name, data, "application/octet-stream"); err != nil {
			t.Fatal(err)
		}
	}
	cert, priv, _ := bundle.NewThrowawayUser()
	ec2Cert, err := bundle.LoadCertificate(e.sim.EC2CertPath())
	if err != nil {
		t.Fatal(err)
	}
	m, err := bundle.NewManifest(res, bundle.ManifestConfig{Architecture: "x86_64", User: "123456789012"}, k, ec2Cert, cert)
	if err != nil {
		t.Fatal(err)
	}
	m.Sign(priv)
	loc, err := b.PutManifest(ctx, m)
	if err != nil {
		t.Fatal(err)
	}
	out, err := e.client.RegisterImage(ctx, &ec2.RegisterImageInput{Name: aws.String("conv-src"), ImageLocation: aws.String(loc),
		VirtualizationType: aws.String("hvm"), Architecture: ec2types.ArchitectureValuesX8664, RootDeviceName: aws.String("/dev/xvda"),
		BlockDeviceMappings: []ec2types.BlockDeviceMapping{{DeviceName: aws.String("/dev/sdb"), VirtualName: aws.String("ephemeral0")}}})
	if err != nil {
		t.Fatal(err)
	}
	keyPath := filepath.Join(dir, "pk.pem")
	os.WriteFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(priv)}), 0o600)
	return aws.ToString(out.ImageId), keyPath
}

func (e *simEnv) state(t *testing.T, keyPath string) (*multistep.BasicStateBag, *Config) {
	raw := baseRaw(t)
	raw["access_key"], raw["secret_key"] = e.creds.AccessKeyID, e.creds.SecretAccessKey
	raw["x509_key_path"] = keyPath
	raw["s3_force_path_style"] = true
	raw["tags"] = map[string]string{"Converted": "yes"}
	var c Config
	if err := c.Prepare(raw); err != nil {
		t.Fatal(err)
	}
	st := new(multistep.BasicStateBag)
	st.Put(keyConfig, &c)
	st.Put(keyEC2Full, e.client)
	st.Put(keyUI, &packersdk.MockUi{})
	st.Put(keyRegion, "us-east-1")
	return st, &c
}

// TestInspectSource: the checks made before anything is launched.
func TestInspectSource(t *testing.T) {
	e := startSim(t)
	ami, keyPath := e.registerBundle(t)

	st, _ := e.state(t, keyPath)
	if (&stepInspectSource{AMI: ami}).Run(context.Background(), st) != multistep.ActionContinue {
		t.Fatalf("inspect: %v", st.Get(keyError))
	}
	if src := sourceOf(st); src.Manifest.Name != "conv" || len(src.Manifest.Parts) != 1 {
		t.Errorf("source %+v", src.Manifest)
	}

	// Another user's key.
	_, other, _ := bundle.NewThrowawayUser()
	otherPath := filepath.Join(t.TempDir(), "other.pem")
	os.WriteFile(otherPath, pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(other)}), 0o600)
	st, _ = e.state(t, otherPath)
	if (&stepInspectSource{AMI: ami}).Run(context.Background(), st) != multistep.ActionHalt ||
		!strings.Contains(st.Get(keyError).(error).Error(), "this key does not unwrap the manifest's user key") {
		t.Errorf("wrong key: %v", st.Get(keyError))
	}

	// A manifest that is gone.
	b, _ := s3bundle.New(e.cfg, "us-east-1", "conv", "img", s3bundle.Options{PathStyle: true})
	if err := b.Delete(context.Background(), []string{"conv.manifest.xml"}); err != nil {
		t.Fatal(err)
	}
	st, _ = e.state(t, keyPath)
	if (&stepInspectSource{AMI: ami}).Run(context.Background(), st) != multistep.ActionHalt ||
		!strings.Contains(st.Get(keyError).(error).Error(), "reading the manifest of source AMI "+ami) {
		t.Errorf("missing manifest: %v", st.Get(keyError))
	}
}

// TestVolumeSnapshotRegisterCleanup runs create volume -> snapshot -> register against
// the simulator (no helper: the volume stays empty), checks the AMI, then fails the run
// and checks that the cleanups leave no AMI, snapshot or volume.
func TestVolumeSnapshotRegisterCleanup(t *testing.T) {
	e := startSim(t)
	ami, keyPath := e.registerBundle(t)
	st, c := e.state(t, keyPath)
	ctx := context.Background()
	if (&stepInspectSource{AMI: ami}).Run(ctx, st) != multistep.ActionContinue {
		t.Fatalf("inspect: %v", st.Get(keyError))
	}
	st.Put(keyInstance, ec2types.Instance{InstanceId: aws.String("i-none"), Placement: &ec2types.Placement{AvailabilityZone: aws.String("us-east-1a")}})
	create, snap, reg := newCreateVolume(c, ami), newSnapshot(c, ami), newRegisterAMI()
	for _, s := range []multistep.Step{create, snap, reg} {
		if s.Run(ctx, st) != multistep.ActionContinue {
			t.Fatalf("%T: %v", s, st.Get(keyError))
		}
	}
	out, err := e.client.DescribeImages(ctx, &ec2.DescribeImagesInput{ImageIds: []string{stringOf(st, keyAMI)}})
	if err != nil || len(out.Images) != 1 {
		t.Fatalf("describe: %v", err)
	}
	img := out.Images[0]
	if img.RootDeviceType != ec2types.DeviceTypeEbs || aws.ToString(img.Name) != "conv-src-ebs" || img.BootMode != ec2types.BootModeValuesLegacyBios {
		t.Errorf("AMI %+v", img)
	}
	var rootSnap string
	for _, m := range img.BlockDeviceMappings {
		if aws.ToString(m.DeviceName) == "/dev/xvda" && m.Ebs != nil {
			rootSnap = aws.ToString(m.Ebs.SnapshotId)
		}
	}
	if rootSnap != stringOf(st, keySnapshot) {
		t.Errorf("root snapshot %q, want %q (mappings %+v)", rootSnap, stringOf(st, keySnapshot), img.BlockDeviceMappings)
	}

	// The new AMI is EBS-backed: converting it again is refused before any launch.
	st2, _ := e.state(t, keyPath)
	if (&stepInspectSource{AMI: stringOf(st, keyAMI)}).Run(ctx, st2) != multistep.ActionHalt ||
		!strings.Contains(st2.Get(keyError).(error).Error(), "is ebs-backed, not instance store-backed") {
		t.Errorf("EBS-backed source: %v", st2.Get(keyError))
	}

	st.Put(multistep.StateHalted, true)
	reg.Cleanup(st)
	snap.Cleanup(st)
	create.Cleanup(st)
	if out, _ := e.client.DescribeImages(ctx, &ec2.DescribeImagesInput{Owners: []string{"self"}}); len(out.Images) != 1 {
		t.Errorf("AMIs after cleanup: %d, want only the source", len(out.Images))
	}
	if out, _ := e.client.DescribeSnapshots(ctx, &ec2.DescribeSnapshotsInput{OwnerIds: []string{"self"}}); len(out.Snapshots) != 0 {
		t.Errorf("snapshots left: %+v", out.Snapshots)
	}
	if out, _ := e.client.DescribeVolumes(ctx, &ec2.DescribeVolumesInput{}); len(out.Volumes) != 0 {
		t.Errorf("volumes left: %+v", out.Volumes)
	}
}
