//go:build linux

package ebspp

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/binary"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/google/uuid"

	"github.com/instancestore/packer-plugin-instancestore/bundle"
	"github.com/instancestore/packer-plugin-instancestore/internal/clouddisk"
	"github.com/instancestore/packer-plugin-instancestore/internal/launch"
	"github.com/instancestore/packer-plugin-instancestore/internal/packertest"
	"github.com/instancestore/packer-plugin-instancestore/internal/testroot"
	"github.com/instancestore/packer-plugin-instancestore/localenv"
	"github.com/instancestore/packer-plugin-instancestore/localenv/ec2sim"
	s3bundle "github.com/instancestore/packer-plugin-instancestore/s3"
)

// The acceptance tests run the real `packer build` of testdata/convert (the null
// builder and the instancestore-ebs post-processor) against the local EC2 + S3
// (localenv with MinIO, in this test process). The source is an instance
// store-backed AMI the test bundles on the host from a disk image, with an X.509
// pair of its own, uploads to MinIO and registers; the helper is an EBS-backed AMI.
// On namespace machines (TestAcceptanceConvert) the helper is sshd in a network
// namespace whose volumes are loop devices; on VM machines (TestAcceptanceConvertVM)
// every instance is a qemu guest that boots its AMI.

func TestMain(m *testing.M) {
	code := m.Run()
	packertest.Cleanup()
	os.Exit(code)
}

// convEnv is one local environment with Packer, the user's X.509 pair and the
// helper AMI.
type convEnv struct {
	p       *packertest.Packer
	le      *localenv.Env
	env     []string // the environment's variables, for packer
	ec2     *ec2.Client
	cfg     aws.Config
	keyPath string // the user's private key (x509_key_path)
	cert    *x509.Certificate
	helper  string // the EBS-backed helper AMI
	tplDir  string
}

func startConv(t *testing.T, machines string) *convEnv {
	t.Helper()
	testroot.Acceptance(t)
	testroot.Require(t)
	p := packertest.Setup(t)
	dir := t.TempDir()
	start := time.Now()
	le, err := localenv.Start(context.Background(), localenv.Options{Dir: filepath.Join(dir, "localenv"), S3: "minio", Machines: machines,
		Logf: func(format string, args ...any) {
			if strings.HasPrefix(format, "localenv:") {
				t.Logf(format, args...)
			}
		}})
	if err != nil {
		t.Fatalf("starting the local environment (%s machines): %v", machines, err)
	}
	t.Cleanup(func() {
		if err := le.Close(); err != nil {
			t.Errorf("closing the local environment: %v", err)
		}
	})
	t.Logf("local environment (%s machines) up in %s", machines, time.Since(start).Round(time.Second))
	e := &convEnv{p: p, le: le}
	vars := map[string]string{}
	for _, v := range le.Vars() {
		vars[v.Name] = v.Value
		e.env = append(e.env, v.Name+"="+v.Value)
	}
	e.cfg = aws.Config{Region: le.Region, Credentials: credentials.NewStaticCredentialsProvider(le.Credentials.AccessKeyID, le.Credentials.SecretAccessKey, "")}
	e.ec2 = ec2.NewFromConfig(e.cfg, func(o *ec2.Options) { o.BaseEndpoint = aws.String(vars["AWS_ENDPOINT_URL_EC2"]) })
	e.cfg.BaseEndpoint = aws.String(vars["AWS_ENDPOINT_URL_S3"]) // the bucket client's

	cert, priv, err := bundle.NewThrowawayUser()
	if err != nil {
		t.Fatal(err)
	}
	e.cert = cert
	e.keyPath = filepath.Join(dir, "pk.pem")
	if err := os.WriteFile(e.keyPath, pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(priv)}), 0o600); err != nil {
		t.Fatal(err)
	}
	if machines == "vm" {
		e.helper = vars["INSTANCESTORE_SOURCE_AMI_EBS"]
		if e.helper == "" {
			t.Fatal("the VM environment sets no INSTANCESTORE_SOURCE_AMI_EBS")
		}
	} else {
		// The helper: an EBS-backed AMI of a cloud-image-shaped disk of the lite root.
		img := filepath.Join(dir, "helper.raw")
		if err := clouddisk.Make(context.Background(), filepath.Join(le.Dir, "roots", "lite"), img, 1<<30); err != nil {
			t.Fatal(err)
		}
		e.helper, err = le.EC2.Seed(ec2sim.SeedImage{Name: "debian-12-amd64-helper", Description: "lite root on a cloud-image GPT disk (EBS, hvm, ENA)",
			EBS: true, Root: ec2sim.RootSource{Image: img}})
		if err != nil {
			t.Fatal(err)
		}
		os.Remove(img) // the snapshot is a copy
	}
	e.tplDir, err = filepath.Abs(filepath.Join("testdata", "convert"))
	if err != nil {
		t.Fatal(err)
	}
	if out, err := p.Run(context.Background(), e.tplDir, e.env, "init", "."); err != nil {
		t.Fatalf("packer init: %v\n%s", err, out)
	}
	return e
}

// source is a bundled, registered instance store-backed AMI.
type source struct {
	ami    string
	bucket *s3bundle.Bucket
	m      *bundle.Manifest
}

// seedSource bundles the disk image img (the bundle package, as bundle-image does),
// uploads it to bucket/prefix in MinIO with the bundle ACL and registers it as an
// instance store-backed hvm AMI with ENA, ephemeral0 mapped.
func (e *convEnv) seedSource(t *testing.T, img, bucketName, name string) *source {
	t.Helper()
	ctx := context.Background()
	start := time.Now()
	cl := s3.NewFromConfig(e.cfg, func(o *s3.Options) { o.UsePathStyle = true })
	if _, err := cl.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String(bucketName)}); err != nil {
		t.Fatal(err)
	}
	b, err := s3bundle.New(e.cfg, e.le.Region, bucketName, "bundles", s3bundle.Options{PathStyle: true})
	if err != nil {
		t.Fatal(err)
	}
	bimg, err := bundle.OpenImage(img)
	if err != nil {
		t.Fatal(err)
	}
	defer bimg.Close()
	k, err := bundle.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	parts := t.TempDir()
	res, err := bundle.Write(ctx, bimg, bundle.WriterConfig{Name: name, Key: k}, bundle.DirSink(parts))
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range res.Parts {
		data, err := os.ReadFile(filepath.Join(parts, p.Name))
		if err != nil {
			t.Fatal(err)
		}
		if err := b.Put(ctx, p.Name, data, "application/octet-stream"); err != nil {
			t.Fatal(err)
		}
		os.Remove(filepath.Join(parts, p.Name))
	}
	ec2Cert, err := bundle.LoadCertificate(e.le.EC2.EC2CertPath())
	if err != nil {
		t.Fatal(err)
	}
	m, err := bundle.NewManifest(res, bundle.ManifestConfig{Architecture: "x86_64", User: e.le.EC2.AccountID()}, k, ec2Cert, e.cert)
	if err != nil {
		t.Fatal(err)
	}
	priv, err := bundle.LoadPrivateKey(e.keyPath)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Sign(priv); err != nil {
		t.Fatal(err)
	}
	loc, err := b.PutManifest(ctx, m)
	if err != nil {
		t.Fatal(err)
	}
	out, err := e.ec2.RegisterImage(ctx, &ec2.RegisterImageInput{Name: aws.String(name), ImageLocation: aws.String(loc),
		VirtualizationType: aws.String("hvm"), Architecture: ec2types.ArchitectureValuesX8664, RootDeviceName: aws.String("/dev/xvda"),
		EnaSupport:          aws.Bool(true),
		BlockDeviceMappings: []ec2types.BlockDeviceMapping{{DeviceName: aws.String("/dev/sdb"), VirtualName: aws.String("ephemeral0")}}})
	if err != nil {
		t.Fatal(err)
	}
	ami := aws.ToString(out.ImageId)
	t.Logf("instance store-backed source %s: %d parts (%d MiB) of a %d MiB image, bundled, uploaded and registered in %s",
		ami, len(m.Parts), m.BundledSize>>20, m.Size>>20, time.Since(start).Round(time.Second))
	return &source{ami: ami, bucket: b, m: m}
}

// convert runs `packer build` of testdata/convert; SIGINT at cancelAt when not empty.
func (e *convEnv) convert(t *testing.T, ctx context.Context, src, amiName, itype, cancelAt string) (packertest.BuildResult, string) {
	t.Helper()
	outDir := t.TempDir()
	log := filepath.Join(outDir, "packer.log")
	res := e.p.Build(ctx, t, e.tplDir, append(e.env, "PACKER_LOG=1", "PACKER_LOG_PATH="+log), cancelAt,
		"-var", "source_ami="+src, "-var", "helper_ami="+e.helper, "-var", "x509_key_path="+e.keyPath,
		"-var", "ami_name="+amiName, "-var", "output_dir="+outDir, "-var", "instance_type="+itype, ".")
	if res.Err != nil && cancelAt == "" {
		t.Logf("packer.log (end):\n%s", packertest.Tail(readString(log), 20000))
	}
	return res, outDir
}

func readString(path string) string {
	b, _ := os.ReadFile(path)
	return string(b)
}

// converted reads the new AMI's id from packer-manifest.json and checks it in EC2.
func (e *convEnv) converted(t *testing.T, outDir, src, name string) (ec2types.Image, string) {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(outDir, "packer-manifest.json"))
	if err != nil {
		t.Fatal(err)
	}
	var manifest struct {
		Builds []struct {
			ArtifactID  string `json:"artifact_id"`
			BuilderType string `json:"builder_type"`
		} `json:"builds"`
	}
	if err := json.Unmarshal(data, &manifest); err != nil || len(manifest.Builds) != 1 {
		t.Fatalf("packer-manifest.json: %v\n%s", err, data)
	}
	region, ami, _ := strings.Cut(manifest.Builds[0].ArtifactID, ":")
	if region != e.le.Region || !strings.HasPrefix(ami, "ami-") {
		t.Fatalf("artifact id %q, want %s:ami-...", manifest.Builds[0].ArtifactID, e.le.Region)
	}
	d, err := e.ec2.DescribeImages(context.Background(), &ec2.DescribeImagesInput{ImageIds: []string{ami}})
	if err != nil || len(d.Images) != 1 {
		t.Fatalf("DescribeImages %s: %v", ami, err)
	}
	img := d.Images[0]
	if img.RootDeviceType != ec2types.DeviceTypeEbs || aws.ToString(img.Name) != name || img.State != ec2types.ImageStateAvailable ||
		!aws.ToBool(img.EnaSupport) || img.BootMode != ec2types.BootModeValuesLegacyBios || aws.ToString(img.Description) != "converted from "+src {
		t.Errorf("AMI %s: root %s, name %q, state %s, ENA %v, boot mode %s, description %q", ami, img.RootDeviceType, aws.ToString(img.Name),
			img.State, aws.ToBool(img.EnaSupport), img.BootMode, aws.ToString(img.Description))
	}
	var snap string
	for _, m := range img.BlockDeviceMappings {
		if aws.ToString(m.DeviceName) == aws.ToString(img.RootDeviceName) && m.Ebs != nil {
			snap = aws.ToString(m.Ebs.SnapshotId)
		}
	}
	if snap == "" {
		t.Fatalf("AMI %s has no EBS root mapping: %+v", ami, img.BlockDeviceMappings)
	}
	tagged := false
	for _, tg := range img.Tags {
		tagged = tagged || aws.ToString(tg.Key) == "Converted" && aws.ToString(tg.Value) == "yes"
	}
	if !tagged {
		t.Errorf("AMI %s lacks the template's tag Converted=yes: %+v", ami, img.Tags)
	}
	return img, snap
}

// baseline is the account's AMIs and snapshots now: what a later build may leave.
func (e *convEnv) baseline(t *testing.T) packertest.Keep {
	t.Helper()
	keep := packertest.Keep{AMIs: map[string]bool{}, Snapshots: map[string]bool{}}
	ctx := context.Background()
	di, err := e.ec2.DescribeImages(ctx, &ec2.DescribeImagesInput{Owners: []string{"self"}})
	if err != nil {
		t.Fatal(err)
	}
	for _, im := range di.Images {
		keep.AMIs[aws.ToString(im.ImageId)] = true
	}
	ds, err := e.ec2.DescribeSnapshots(ctx, &ec2.DescribeSnapshotsInput{OwnerIds: []string{"self"}})
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range ds.Snapshots {
		keep.Snapshots[aws.ToString(s.SnapshotId)] = true
	}
	return keep
}

func (e *convEnv) checkLeftovers(t *testing.T, keep packertest.Keep) {
	t.Helper()
	left, err := packertest.LeftInEC2(context.Background(), e.ec2, keep)
	if err != nil {
		t.Fatal(err)
	}
	if len(left) > 0 {
		t.Errorf("left behind:\n  %s", strings.Join(left, "\n  "))
	}
}

// deregister removes a converted AMI and its snapshot.
func (e *convEnv) deregister(t *testing.T, ami, snap string) {
	t.Helper()
	ctx := context.Background()
	if _, err := e.ec2.DeregisterImage(ctx, &ec2.DeregisterImageInput{ImageId: aws.String(ami)}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.ec2.DeleteSnapshot(ctx, &ec2.DeleteSnapshotInput{SnapshotId: aws.String(snap)}); err != nil {
		t.Fatal(err)
	}
}

// TestAcceptanceConvert, on namespace machines: the conversion of a bundled
// cloud-image-shaped disk whose root holds a marker file; the new AMI launches on
// t3.micro (its root the snapshot, on NVMe) and has the file; nothing else is left.
// Then the same conversion with one bit of one part flipped in S3 fails in the
// agent's digest check, before any snapshot, leaving nothing; and SIGINT at each step
// of the post-processor leaves no helper, volume, snapshot, AMI, key pair or
// security group.
func TestAcceptanceConvert(t *testing.T) {
	e := startConv(t, "")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Minute)
	defer cancel()

	// The source disk: the lite root with a marker, on a GPT cloud-image disk.
	dir := t.TempDir()
	tree := filepath.Join(dir, "root")
	if out, err := exec.Command("cp", "-a", filepath.Join(e.le.Dir, "roots", "lite"), tree).CombinedOutput(); err != nil {
		t.Fatalf("copying the lite root: %v: %s", err, out)
	}
	marker := "converted by instancestore-ebs " + uuid.NewString()
	if err := os.MkdirAll(filepath.Join(tree, "etc", "instancestore"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(tree, "etc", "instancestore", "converted.txt"), []byte(marker+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	img := filepath.Join(dir, "source.raw")
	if err := clouddisk.Make(ctx, tree, img, 1<<30); err != nil {
		t.Fatal(err)
	}
	os.RemoveAll(tree)
	src := e.seedSource(t, img, "convert-src", "lite-instance-store")
	os.Remove(img)
	keep := e.baseline(t)

	t.Run("convert", func(t *testing.T) {
		start := time.Now()
		res, outDir := e.convert(t, ctx, src.ami, "lite-ebs", "t3.micro", "")
		if res.Err != nil {
			t.Fatalf("packer build: %v\n%s", res.Err, res.Output)
		}
		t.Logf("packer build took %s:\n%s", time.Since(start).Round(100*time.Millisecond), res.Output)
		img, snap := e.converted(t, outDir, src.ami, "lite-ebs")
		ami := aws.ToString(img.ImageId)
		for _, want := range []string{"Converting " + src.ami, "every part and the image digest checked", "Registered EBS-backed AMI " + ami} {
			if !strings.Contains(res.Output, want) {
				t.Errorf("packer's output lacks %q", want)
			}
		}
		got, err := launch.Run(ctx, e.ec2, ami, "t3.micro", "admin", "cat /etc/instancestore/converted.txt", t.Logf)
		if err != nil {
			t.Fatalf("on an instance of the converted AMI %s: %v: %s", ami, err, got)
		}
		if strings.TrimSpace(got) != marker {
			t.Errorf("the converted AMI's /etc/instancestore/converted.txt reads %q, want %q", got, marker)
		}
		k := packertest.Keep{AMIs: map[string]bool{ami: true}, Snapshots: map[string]bool{snap: true}}
		for id := range keep.AMIs {
			k.AMIs[id] = true
		}
		for id := range keep.Snapshots {
			k.Snapshots[id] = true
		}
		e.checkLeftovers(t, k)
		e.deregister(t, ami, snap)
	})

	t.Run("flipped-bit", func(t *testing.T) {
		// One bit of the middle part, rewritten in place with the bundle ACL.
		p := src.m.Parts[len(src.m.Parts)/2]
		orig := readObject(t, src.bucket, p.Filename)
		bad := bytes.Clone(orig)
		bad[len(bad)/2] ^= 0x10
		if err := src.bucket.Put(ctx, p.Filename, bad, "application/octet-stream"); err != nil {
			t.Fatal(err)
		}
		defer func() {
			if err := src.bucket.Put(context.Background(), p.Filename, orig, "application/octet-stream"); err != nil {
				t.Fatalf("restoring part %s: %v", p.Filename, err)
			}
		}()
		res, _ := e.convert(t, ctx, src.ami, "lite-ebs-flipped", "t3.micro", "")
		if res.Err == nil {
			t.Fatalf("packer build succeeded with a flipped bit in %s:\n%s", p.Filename, res.Output)
		}
		if !strings.Contains(res.Output, p.Filename) || !strings.Contains(strings.ToLower(res.Output), "sha-1") && !strings.Contains(strings.ToLower(res.Output), "digest") {
			t.Errorf("the failure does not name the part %s and its digest:\n%s", p.Filename, res.Output)
		}
		for _, never := range []string{"Waiting for snapshot", "Registered "} {
			if strings.Contains(res.Output, never) {
				t.Errorf("the conversion went on to %q after the bad part:\n%s", never, res.Output)
			}
		}
		e.checkLeftovers(t, keep)
		t.Logf("failed as it should:\n%s", res.Output)
	})

	// Lines packer prints as a step starts (or, for launch, right after the helper's
	// RunInstances); SIGINT goes out when one appears.
	steps := []struct{ name, marker string }{
		{"helper-launched", "Waiting for instance"},
		{"volume-created", "Creating volume"},
		{"attached", "Attached vol-"},
		{"writing", "agent: writing image"},
		{"snapshotting", "Waiting for snapshot"},
		{"registering", "waiting for it to become available"},
	}
	for _, st := range steps {
		t.Run("cancel-"+st.name, func(t *testing.T) {
			res, outDir := e.convert(t, ctx, src.ami, "lite-ebs-cancel-"+st.name, "t3.micro", st.marker)
			if !res.Interrupted {
				t.Fatalf("the conversion never printed %q (exit: %v):\n%s", st.marker, res.Err, res.Output)
			}
			if res.Err == nil {
				t.Errorf("packer build succeeded although interrupted at %q:\n%s", res.InterruptedAt, res.Output)
			}
			if _, err := os.Stat(filepath.Join(outDir, "packer-manifest.json")); err == nil {
				t.Errorf("the manifest post-processor ran after the interrupt")
			}
			e.checkLeftovers(t, keep)
			if t.Failed() {
				t.Logf("packer output:\n%s", res.Output)
			}
		})
	}
}

func readObject(t *testing.T, b *s3bundle.Bucket, name string) []byte {
	t.Helper()
	rc, err := b.Open(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	data, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// TestAcceptanceConvertVM, on VM machines: the hvm-gpt seed image (Debian 12, GRUB 2
// in a BIOS boot partition) bundled and registered instance store-backed is
// converted on a helper VM of the EBS-backed seed (t3.micro, Nitro: the new volume is
// an NVMe disk); the EBS-backed result boots in a VM on t3.micro from its snapshot
// and answers SSH with the seed's root file system (its UUID), not the helper's.
func TestAcceptanceConvertVM(t *testing.T) {
	e := startConv(t, "vm")
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Minute)
	defer cancel()
	seed, err := localenv.SeedImage(ctx, localenv.SeedHVMGPT, t.Logf)
	if err != nil {
		t.Fatal(err)
	}
	rootUUID, err := rootFSUUID(seed)
	if err != nil {
		t.Fatal(err)
	}
	src := e.seedSource(t, seed, "convert-vm-src", "debian-12-hvm-gpt-instance-store")
	keep := e.baseline(t)

	start := time.Now()
	res, outDir := e.convert(t, ctx, src.ami, "debian-12-hvm-gpt-ebs", "t3.micro", "")
	if res.Err != nil {
		t.Fatalf("packer build: %v\n%s", res.Err, res.Output)
	}
	t.Logf("packer build took %s:\n%s", time.Since(start).Round(time.Second), res.Output)
	img, snap := e.converted(t, outDir, src.ami, "debian-12-hvm-gpt-ebs")
	ami := aws.ToString(img.ImageId)

	lctx, lcancel := context.WithTimeout(ctx, 20*time.Minute)
	defer lcancel()
	lstart := time.Now()
	got, err := launch.Run(lctx, e.ec2, ami, "t3.micro", "admin",
		`echo "root: $(findmnt -n -o SOURCE,UUID /)"; echo "cmdline: $(cat /proc/cmdline)"; echo "kernel: $(uname -r)"`, t.Logf)
	if err != nil {
		t.Fatalf("on an instance of the converted AMI %s: %v: %s", ami, err, got)
	}
	t.Logf("the converted AMI's instance answered over SSH after %s:\n%s", time.Since(lstart).Round(time.Second), got)
	if !strings.Contains(got, "root: /dev/nvme0n1p1 "+rootUUID) {
		t.Errorf("the converted AMI's root is not the hvm-gpt seed's file system (UUID %s) on the NVMe root /dev/nvme0n1p1: %q", rootUUID, got)
	}
	k := packertest.Keep{AMIs: map[string]bool{ami: true}, Snapshots: map[string]bool{snap: true}}
	for id := range keep.AMIs {
		k.AMIs[id] = true
	}
	for id := range keep.Snapshots {
		k.Snapshots[id] = true
	}
	e.checkLeftovers(t, k)
}

// rootFSUUID reads the UUID of the ext4 file system in partition 1 of a GPT disk
// image: the partition's first LBA from the GPT entries at LBA 2, then the
// superblock's s_uuid (1024 bytes into the file system, at offset 0x68).
func rootFSUUID(disk string) (string, error) {
	f, err := os.Open(disk)
	if err != nil {
		return "", err
	}
	defer f.Close()
	hdr := make([]byte, 512)
	if _, err := f.ReadAt(hdr, 512); err != nil {
		return "", err
	}
	if string(hdr[:8]) != "EFI PART" {
		return "", fmt.Errorf("%s has no GPT header", disk)
	}
	entries := int64(binary.LittleEndian.Uint64(hdr[72:]))
	ent := make([]byte, 128)
	if _, err := f.ReadAt(ent, entries*512); err != nil {
		return "", err
	}
	first := int64(binary.LittleEndian.Uint64(ent[32:]))
	sb := make([]byte, 1024)
	if _, err := f.ReadAt(sb, first*512+1024); err != nil {
		return "", err
	}
	if binary.LittleEndian.Uint16(sb[0x38:]) != 0xef53 {
		return "", fmt.Errorf("%s: partition 1 (LBA %d) is not ext2/3/4", disk, first)
	}
	u, err := uuid.FromBytes(sb[0x68:0x78])
	if err != nil {
		return "", err
	}
	return u.String(), nil
}
