package ec2sim

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	s3types "github.com/aws/aws-sdk-go-v2/service/s3/types"
	"golang.org/x/crypto/ssh"

	"github.com/instancestore/packer-plugin-instancestore/bundle"
	"github.com/instancestore/packer-plugin-instancestore/internal/testroot"
	nsinstance "github.com/instancestore/packer-plugin-instancestore/localenv/instance"
	"github.com/instancestore/packer-plugin-instancestore/localenv/s3env"
)

var (
	liteOnce sync.Once
	liteDir  string
	liteErr  error
	tmpBase  string
)

func TestMain(m *testing.M) {
	code := m.Run()
	if tmpBase != "" {
		os.RemoveAll(tmpBase)
	}
	os.Exit(code)
}

// liteRoot builds the lite instance root once per test binary.
func liteRoot(t *testing.T) string {
	t.Helper()
	liteOnce.Do(func() {
		tmpBase, liteErr = os.MkdirTemp("", "ec2sim-test-")
		if liteErr != nil {
			return
		}
		liteDir = filepath.Join(tmpBase, "lite")
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		liteErr = nsinstance.BuildLiteRoot(ctx, liteDir)
	})
	if liteErr != nil {
		t.Fatalf("building the lite root: %v", liteErr)
	}
	return liteDir
}

// leftovers lists what the server's instances can leave behind: their network
// namespaces, mounts and loop devices backed by files under the data dir.
func leftovers(t *testing.T, srv *Server) []string {
	t.Helper()
	dataDir := srv.cfg.DataDir
	var out []string
	mi, _ := os.ReadFile("/proc/self/mountinfo")
	for _, li := range srv.cfg.Launcher.(*NamespaceLauncher).Launched() {
		if _, err := os.Stat(filepath.Join("/run/netns", li.NetNS)); err == nil {
			out = append(out, "netns "+li.NetNS)
		}
		if _, err := os.Stat(li.Root); err == nil {
			out = append(out, "root "+li.Root)
		}
		for _, l := range strings.Split(string(mi), "\n") {
			if f := strings.Fields(l); len(f) > 4 && (f[4] == li.Root || strings.HasPrefix(f[4], dataDir+"/")) {
				out = append(out, "mount "+f[4])
			}
		}
	}
	lo, _ := exec.Command("losetup", "-l", "-n", "-O", "NAME,BACK-FILE").CombinedOutput()
	for _, l := range strings.Split(string(lo), "\n") {
		if strings.Contains(l, dataDir) {
			out = append(out, "loop "+l)
		}
	}
	return out
}

func waitState(t *testing.T, c *ec2.Client, id string, want types.InstanceStateName) types.Instance {
	t.Helper()
	deadline := time.Now().Add(3 * time.Minute)
	for {
		out, err := c.DescribeInstances(context.Background(), &ec2.DescribeInstancesInput{InstanceIds: []string{id}})
		if err != nil {
			t.Fatal(err)
		}
		in := out.Reservations[0].Instances[0]
		if in.State.Name == want {
			return in
		}
		if in.State.Name == types.InstanceStateNameTerminated {
			t.Fatalf("instance %s terminated while waiting for %s: %s", id, want, aws.ToString(in.StateReason.Message))
		}
		if time.Now().After(deadline) {
			t.Fatalf("instance %s still %s, want %s", id, in.State.Name, want)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func sshRun(t *testing.T, addr, user, keyPEM, cmd string) string {
	t.Helper()
	signer, err := ssh.ParsePrivateKey([]byte(keyPEM))
	if err != nil {
		t.Fatal(err)
	}
	cl, err := ssh.Dial("tcp", addr+":22", &ssh.ClientConfig{User: user, Auth: []ssh.AuthMethod{ssh.PublicKeys(signer)},
		HostKeyCallback: ssh.InsecureIgnoreHostKey(), Timeout: 20 * time.Second})
	if err != nil {
		t.Fatalf("ssh %s@%s: %v", user, addr, err)
	}
	defer cl.Close()
	s, err := cl.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	out, err := s.CombinedOutput(cmd)
	if err != nil {
		t.Fatalf("ssh %s@%s %q: %v: %s", user, addr, cmd, err, out)
	}
	return string(out)
}

func startRunningServer(t *testing.T, cfg Config, forward ...string) *testEnv {
	t.Helper()
	if cfg.DataDir == "" {
		cfg.DataDir = t.TempDir()
	}
	cfg.Launcher = &NamespaceLauncher{WorkDir: filepath.Join(cfg.DataDir, "instances"), Forward: forward}
	e := startServer(t, cfg)
	t.Cleanup(func() {
		e.srv.Close() // idempotent enough: terminate everything before checking
		if l := leftovers(t, e.srv); len(l) > 0 {
			t.Errorf("left behind after Close:\n%s", strings.Join(l, "\n"))
		}
	})
	return e
}

func TestRunSeededInstance(t *testing.T) {
	testroot.Require(t)
	root := liteRoot(t)
	e := startRunningServer(t, Config{})
	ctx := ctxT(t)
	lite, err := e.srv.Seed(SeedImage{Name: "instancestore-lite-x86_64", Root: RootSource{Dir: root}})
	if err != nil {
		t.Fatal(err)
	}
	hvm, err := e.srv.Seed(SeedImage{Name: "instancestore-lite-hvm-x86_64", VirtualizationType: "hvm", Root: RootSource{Dir: root}})
	if err != nil {
		t.Fatal(err)
	}
	kp, err := e.ec2.CreateKeyPair(ctx, &ec2.CreateKeyPairInput{KeyName: aws.String("k")})
	if err != nil {
		t.Fatal(err)
	}
	run := func(img, itype string) (*ec2.RunInstancesOutput, error) {
		return e.ec2.RunInstances(ctx, &ec2.RunInstancesInput{ImageId: aws.String(img), InstanceType: types.InstanceType(itype),
			MinCount: aws.Int32(1), MaxCount: aws.Int32(1), KeyName: aws.String("k")})
	}
	_, err = run(lite, "t3.micro")
	wantCode(t, err, "Unsupported")
	_, err = run(hvm, "m1.small")
	wantCode(t, err, "InvalidParameterCombination")
	_, err = run(lite, "r3.large")
	wantCode(t, err, "InvalidParameterCombination")
	_, err = run(lite, "m9.huge")
	wantCode(t, err, "InvalidParameterValue")
	_, err = e.ec2.RunInstances(ctx, &ec2.RunInstancesInput{ImageId: aws.String(lite), InstanceType: "m3.medium", MinCount: aws.Int32(1), MaxCount: aws.Int32(1), KeyName: aws.String("nope")})
	wantCode(t, err, "InvalidKeyPair.NotFound")
	_, err = run("ami-0123456789abcdef0", "m3.medium")
	wantCode(t, err, "InvalidAMIID.NotFound")

	out, err := e.ec2.RunInstances(ctx, &ec2.RunInstancesInput{ImageId: aws.String(lite), InstanceType: "m3.medium", MinCount: aws.Int32(1), MaxCount: aws.Int32(1),
		KeyName: aws.String("k"), TagSpecifications: []types.TagSpecification{{ResourceType: types.ResourceTypeInstance, Tags: []types.Tag{{Key: aws.String("Name"), Value: aws.String("t")}}}}})
	if err != nil {
		t.Fatal(err)
	}
	id := aws.ToString(out.Instances[0].InstanceId)
	if out.Instances[0].State.Name != types.InstanceStateNamePending || len(out.Instances[0].Tags) != 1 {
		t.Fatalf("RunInstances answered %+v", out.Instances[0])
	}
	in := waitState(t, e.ec2, id, types.InstanceStateNameRunning)
	ip := aws.ToString(in.PrivateIpAddress)
	if !strings.HasPrefix(ip, "169.254.") {
		t.Fatalf("private IP %q is not a namespace address", ip)
	}
	// What the SDK read back of the instance, field by field.
	if aws.ToString(in.ImageId) != lite || in.InstanceType != types.InstanceTypeM3Medium || aws.ToString(in.KeyName) != "k" ||
		aws.ToString(in.Placement.AvailabilityZone) != "us-east-1a" || !strings.HasPrefix(aws.ToString(in.SubnetId), "subnet-") ||
		!strings.HasPrefix(aws.ToString(in.VpcId), "vpc-") || len(in.SecurityGroups) != 1 || aws.ToString(in.SecurityGroups[0].GroupName) != "default" ||
		in.LaunchTime == nil || time.Since(*in.LaunchTime) > time.Minute || in.Architecture != types.ArchitectureValuesX8664 ||
		in.RootDeviceType != types.DeviceTypeInstanceStore || in.VirtualizationType != types.VirtualizationTypeParavirtual ||
		aws.ToString(in.PublicIpAddress) != ip || len(in.Tags) != 1 || in.State.Code == nil || *in.State.Code != 16 {
		t.Fatalf("DescribeInstances: %+v", in)
	}
	byFilter, err := e.ec2.DescribeInstances(ctx, &ec2.DescribeInstancesInput{Filters: []types.Filter{
		{Name: aws.String("instance-state-name"), Values: []string{"running"}}, {Name: aws.String("tag:Name"), Values: []string{"t"}}}})
	if err != nil || len(byFilter.Reservations) != 1 || aws.ToString(byFilter.Reservations[0].Instances[0].InstanceId) != id {
		t.Fatalf("DescribeInstances by filter: %v %+v", err, byFilter)
	}
	st, err := e.ec2.DescribeInstanceStatus(ctx, &ec2.DescribeInstanceStatusInput{InstanceIds: []string{id}})
	if err != nil || len(st.InstanceStatuses) != 1 || st.InstanceStatuses[0].InstanceStatus.Status != types.SummaryStatusOk {
		t.Fatalf("DescribeInstanceStatus: %v %+v", err, st)
	}
	// Loop devices, as bundle-vol on an EC2 instance uses them.
	if got := sshRun(t, ip, "root", aws.ToString(kp.KeyMaterial), "ls -l /dev/loop-control /dev/loop7 /dev/loop255"); !strings.Contains(got, "loop-control") || !strings.Contains(got, " 7, 255 ") {
		t.Fatalf("loop devices in the instance: %q", got)
	}
	if got := sshRun(t, ip, "root", aws.ToString(kp.KeyMaterial), "dd if=/dev/zero of=/tmp/lo.img bs=1024 count=1024 2>/dev/null && d=$(losetup -f) && losetup $d /tmp/lo.img && echo attached $d && losetup -d $d"); !strings.Contains(got, "attached /dev/loop") {
		t.Fatalf("attaching a loop device in the instance: %q", got)
	}
	for _, user := range []string{"root", "admin"} {
		if got := sshRun(t, ip, user, aws.ToString(kp.KeyMaterial), "id -un"); strings.TrimSpace(got) != user {
			t.Fatalf("ssh as %s: id -un says %q", user, got)
		}
	}
	// The instance runs on its own copy: a file it writes does not reach the AMI.
	sshRun(t, ip, "root", aws.ToString(kp.KeyMaterial), "echo x > /instance-only")
	if _, err := os.Stat(filepath.Join(root, "instance-only")); err == nil {
		t.Fatal("the instance wrote into its AMI's root")
	}
	_, err = e.ec2.TerminateInstances(ctx, &ec2.TerminateInstancesInput{InstanceIds: []string{"i-0123456789abcdef0"}})
	wantCode(t, err, "InvalidInstanceID.NotFound")
	if _, err := e.ec2.ModifyInstanceAttribute(ctx, &ec2.ModifyInstanceAttributeInput{InstanceId: aws.String(id), DisableApiTermination: &types.AttributeBooleanValue{Value: aws.Bool(true)}}); err != nil {
		t.Fatal(err)
	}
	_, err = e.ec2.TerminateInstances(ctx, &ec2.TerminateInstancesInput{InstanceIds: []string{id}})
	wantCode(t, err, "OperationNotPermitted")
	_, err = e.ec2.ModifyInstanceAttribute(ctx, &ec2.ModifyInstanceAttributeInput{InstanceId: aws.String(id), InstanceType: &types.AttributeValue{Value: aws.String("m3.large")}})
	wantCode(t, err, "IncorrectInstanceState")
	if _, err := e.ec2.ModifyInstanceAttribute(ctx, &ec2.ModifyInstanceAttributeInput{InstanceId: aws.String(id), DisableApiTermination: &types.AttributeBooleanValue{Value: aws.Bool(false)}}); err != nil {
		t.Fatal(err)
	}
	term, err := e.ec2.TerminateInstances(ctx, &ec2.TerminateInstancesInput{InstanceIds: []string{id}})
	if err != nil {
		t.Fatal(err)
	}
	if term.TerminatingInstances[0].PreviousState.Name != types.InstanceStateNameRunning || term.TerminatingInstances[0].CurrentState.Name != types.InstanceStateNameShuttingDown {
		t.Fatalf("TerminateInstances: %+v", term.TerminatingInstances[0])
	}
	waitState(t, e.ec2, id, types.InstanceStateNameTerminated)
	if l := leftovers(t, e.srv); len(l) > 0 {
		t.Fatalf("left behind after terminate:\n%s", strings.Join(l, "\n"))
	}
	_, err = e.ec2.StopInstances(ctx, &ec2.StopInstancesInput{InstanceIds: []string{id}})
	wantCode(t, err, "UnsupportedOperation")

	// Two at once, terminated while still pending: both end terminated, nothing left.
	two, err := e.ec2.RunInstances(ctx, &ec2.RunInstancesInput{ImageId: aws.String(hvm), InstanceType: "c3.large", MinCount: aws.Int32(2), MaxCount: aws.Int32(2)})
	if err != nil {
		t.Fatal(err)
	}
	if len(two.Instances) != 2 || aws.ToString(two.ReservationId) == "" {
		t.Fatalf("RunInstances of 2: %+v", two)
	}
	ids := []string{aws.ToString(two.Instances[0].InstanceId), aws.ToString(two.Instances[1].InstanceId)}
	if _, err := e.ec2.TerminateInstances(ctx, &ec2.TerminateInstancesInput{InstanceIds: ids}); err != nil {
		t.Fatal(err)
	}
	for _, id := range ids {
		waitState(t, e.ec2, id, types.InstanceStateNameTerminated)
	}
	if l := leftovers(t, e.srv); len(l) > 0 {
		t.Fatalf("left behind after terminating pending instances:\n%s", strings.Join(l, "\n"))
	}
	if ents, _ := os.ReadDir(filepath.Join(e.srv.cfg.DataDir, "instances")); len(ents) > 0 {
		t.Fatalf("instance copies left: %v", ents)
	}
}

// bundleFixture is a bundle of a bootable lite root image with a marker file, in a
// local directory, made with the simulator's EC2 certificate.
type bundleFixture struct {
	dir      string
	manifest *bundle.Manifest
	marker   string
}

// makeRootImage makes an ext4 image of the lite root with a marker file in /etc.
func makeRootImage(t *testing.T) (img, marker string) {
	t.Helper()
	work := t.TempDir()
	tree := filepath.Join(work, "tree")
	if out, err := exec.Command("cp", "-a", liteRoot(t), tree).CombinedOutput(); err != nil {
		t.Fatalf("cp: %v %s", err, out)
	}
	marker = fmt.Sprintf("bundled-%d", time.Now().UnixNano())
	if err := os.WriteFile(filepath.Join(tree, "etc/instancestore-marker"), []byte(marker+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	img = filepath.Join(work, "root.img")
	if out, err := exec.Command("mke2fs", "-q", "-F", "-t", "ext4", "-L", "cloudimg-rootfs", "-d", tree, img, "96M").CombinedOutput(); err != nil {
		t.Fatalf("mke2fs: %v %s", err, out)
	}
	return img, marker
}

func makeBundle(t *testing.T, srv *Server) *bundleFixture {
	t.Helper()
	work := t.TempDir()
	img, marker := makeRootImage(t)
	im, err := bundle.OpenImage(img)
	if err != nil {
		t.Fatal(err)
	}
	defer im.Close()
	key, err := bundle.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	parts := filepath.Join(work, "parts")
	os.MkdirAll(parts, 0o755)
	res, err := bundle.Write(context.Background(), im, bundle.WriterConfig{Name: "image", Key: key}, bundle.DirSink(parts))
	if err != nil {
		t.Fatal(err)
	}
	ec2Cert, err := bundle.LoadCertificate(srv.EC2CertPath())
	if err != nil {
		t.Fatal(err)
	}
	userCert, userKey, err := bundle.NewThrowawayUser()
	if err != nil {
		t.Fatal(err)
	}
	m, err := bundle.NewManifest(res, bundle.ManifestConfig{Architecture: "x86_64", User: srv.AccountID(),
		BlockDeviceMappings: []bundle.BlockDeviceMapping{{Virtual: "ami", Device: "sda1"}, {Virtual: "root", Device: "/dev/sda1"}, {Virtual: "ephemeral0", Device: "sdb"}}},
		key, ec2Cert, userCert)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Sign(userKey); err != nil {
		t.Fatal(err)
	}
	return &bundleFixture{dir: parts, manifest: m, marker: marker}
}

// upload puts the parts and the manifest bytes under bucket/prefix through the front,
// with acl (none when empty), and returns the ImageLocation.
func (b *bundleFixture) upload(t *testing.T, c *s3.Client, bucket, prefix string, manifest []byte, acl s3types.ObjectCannedACL, edit func(name string, data []byte) []byte) string {
	t.Helper()
	ctx := context.Background()
	put := func(name string, data []byte) {
		in := &s3.PutObjectInput{Bucket: aws.String(bucket), Key: aws.String(prefix + "/" + name), Body: bytes.NewReader(data), ACL: acl}
		if _, err := c.PutObject(ctx, in); err != nil {
			t.Fatalf("uploading %s: %v", name, err)
		}
	}
	for _, p := range b.manifest.Parts {
		data, err := os.ReadFile(filepath.Join(b.dir, p.Filename))
		if err != nil {
			t.Fatal(err)
		}
		if edit != nil {
			data = edit(p.Filename, data)
		}
		put(p.Filename, data)
	}
	put("image.manifest.xml", manifest)
	return bucket + "/" + prefix + "/image.manifest.xml"
}

func TestRegisterBundleAndRun(t *testing.T) {
	testroot.Require(t)
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
	e := startRunningServer(t, Config{S3: FrontReader{Front: front}}, strings.TrimPrefix(front.URL(), "http://"))
	ctx := ctxT(t)
	s3c := front.Client("us-east-1")
	if _, err := s3c.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String("amis")}); err != nil {
		t.Fatal(err)
	}
	if _, err := front.Client("eu-west-1").CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String("amis-eu"),
		CreateBucketConfiguration: &s3types.CreateBucketConfiguration{LocationConstraint: s3types.BucketLocationConstraintEuWest1}}); err != nil {
		t.Fatal(err)
	}
	b := makeBundle(t, e.srv)
	good := b.manifest.Marshal()
	register := func(loc, name string) (*ec2.RegisterImageOutput, error) {
		return e.ec2.RegisterImage(ctx, &ec2.RegisterImageInput{Name: aws.String(name), ImageLocation: aws.String(loc),
			Architecture: types.ArchitectureValuesX8664, VirtualizationType: aws.String("hvm"), RootDeviceName: aws.String("/dev/sda1")})
	}

	// Failures first, each as EC2 words it.
	t.Run("no ACL", func(t *testing.T) {
		loc := b.upload(t, s3c, "amis", "noacl", good, "", nil)
		_, err := register(loc, "noacl")
		wantCode(t, err, "InvalidManifest")
		if !strings.Contains(err.Error(), "403") {
			t.Fatalf("want S3's 403 in the message: %v", err)
		}
	})
	t.Run("flipped part bit", func(t *testing.T) {
		loc := b.upload(t, s3c, "amis", "flipped", good, s3types.ObjectCannedACLAwsExecRead, func(name string, data []byte) []byte {
			if strings.HasSuffix(name, ".part.0") || strings.HasSuffix(name, ".part.00") {
				data = bytes.Clone(data)
				data[len(data)/2] ^= 0x10
			}
			return data
		})
		_, err := register(loc, "flipped")
		wantCode(t, err, "InvalidManifest")
		if !strings.Contains(err.Error(), "digest") && !strings.Contains(err.Error(), "SHA-1") {
			t.Fatalf("want a digest failure: %v", err)
		}
	})
	t.Run("reordered manifest", func(t *testing.T) {
		s := string(good)
		i, j := strings.Index(s, "<size>"), strings.Index(s, "<bundled_size>")
		k := strings.Index(s, "</bundled_size>") + len("</bundled_size>")
		reordered := s[:i] + s[j:k] + s[i:j] + s[k:]
		if reordered == s {
			t.Fatal("reordering changed nothing")
		}
		loc := b.upload(t, s3c, "amis", "reordered", []byte(reordered), s3types.ObjectCannedACLAwsExecRead, nil)
		_, err := register(loc, "reordered")
		wantCode(t, err, "InvalidManifest")
	})
	t.Run("wrong user", func(t *testing.T) {
		m := *b.manifest
		m.User = "999999999999"
		loc := b.upload(t, s3c, "amis", "otheruser", m.Marshal(), s3types.ObjectCannedACLAwsExecRead, nil)
		_, err := register(loc, "otheruser")
		wantCode(t, err, "InvalidManifest")
	})
	t.Run("bucket in another region", func(t *testing.T) {
		loc := b.upload(t, front.Client("eu-west-1"), "amis-eu", "eu", good, s3types.ObjectCannedACLAwsExecRead, nil)
		_, err := register(loc, "eu-bucket")
		wantCode(t, err, "InvalidManifest")
	})
	t.Run("made for another EC2 certificate", func(t *testing.T) {
		m := *b.manifest
		realEC2, err := bundle.EC2Certificate("us-east-1")
		if err != nil {
			t.Fatal(err)
		}
		pub, _ := bundle.CertificateKey(realEC2)
		var k bundle.Key // any key: EC2's real private key is what would be needed
		m.EC2EncryptedKey, m.EC2EncryptedIV, _ = bundle.WrapKey(pub, k)
		loc := b.upload(t, s3c, "amis", "realcert", m.Marshal(), s3types.ObjectCannedACLAwsExecRead, nil)
		_, err = register(loc, "realcert")
		wantCode(t, err, "InvalidManifest")
	})

	loc := b.upload(t, s3c, "amis", "good", good, s3types.ObjectCannedACLAwsExecRead, nil)
	reg, err := register(loc, "my-bundled-ami")
	if err != nil {
		t.Fatal(err)
	}
	_, err = register(loc, "my-bundled-ami")
	wantCode(t, err, "InvalidAMIName.Duplicate")
	waitAvailable(t, e.ec2, aws.ToString(reg.ImageId))
	imgs, err := e.ec2.DescribeImages(ctx, &ec2.DescribeImagesInput{Owners: []string{"self"}})
	if err != nil || len(imgs.Images) != 1 {
		t.Fatalf("own images: %v %+v", err, imgs)
	}
	im := imgs.Images[0]
	if aws.ToString(im.ImageId) != aws.ToString(reg.ImageId) || im.State != types.ImageStateAvailable || im.RootDeviceType != types.DeviceTypeInstanceStore ||
		aws.ToString(im.ImageLocation) != loc || im.VirtualizationType != types.VirtualizationTypeHvm || len(im.BlockDeviceMappings) != 1 {
		t.Fatalf("registered image: %+v", im)
	}
	kp, err := e.ec2.CreateKeyPair(ctx, &ec2.CreateKeyPairInput{KeyName: aws.String("k")})
	if err != nil {
		t.Fatal(err)
	}
	out, err := e.ec2.RunInstances(ctx, &ec2.RunInstancesInput{ImageId: reg.ImageId, InstanceType: "m3.medium", MinCount: aws.Int32(1), MaxCount: aws.Int32(1), KeyName: aws.String("k")})
	if err != nil {
		t.Fatal(err)
	}
	id := aws.ToString(out.Instances[0].InstanceId)
	in := waitState(t, e.ec2, id, types.InstanceStateNameRunning)
	got := sshRun(t, aws.ToString(in.PrivateIpAddress), "admin", aws.ToString(kp.KeyMaterial), "cat /etc/instancestore-marker; grep ' / ' /proc/mounts | head -1")
	if !strings.Contains(got, b.marker) {
		t.Fatalf("the instance does not see the image's files: %q", got)
	}
	// The S3 endpoint is forwarded into the instance at the host's own address.
	fetched := sshRun(t, aws.ToString(in.PrivateIpAddress), "admin", aws.ToString(kp.KeyMaterial), "wget -q -O - "+front.URL()+"/"+loc)
	if fetched != string(good) {
		t.Fatalf("the instance fetched %q from %s, want the manifest", fetched, front.URL()+"/"+loc)
	}
	if _, err := e.ec2.TerminateInstances(ctx, &ec2.TerminateInstancesInput{InstanceIds: []string{id}}); err != nil {
		t.Fatal(err)
	}
	waitState(t, e.ec2, id, types.InstanceStateNameTerminated)
	if l := leftovers(t, e.srv); len(l) > 0 {
		t.Fatalf("left behind after terminate:\n%s", strings.Join(l, "\n"))
	}
	// Deregistering frees the unbundled image, but only once no copy uses it.
	imgFile := filepath.Join(e.srv.cfg.DataDir, "images", aws.ToString(reg.ImageId)+".img")
	cp, err := e.ec2.CopyImage(ctx, &ec2.CopyImageInput{SourceImageId: reg.ImageId, SourceRegion: aws.String("us-east-1"), Name: aws.String("copy-of-bundled")})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.ec2.DeregisterImage(ctx, &ec2.DeregisterImageInput{ImageId: reg.ImageId}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(imgFile); err != nil {
		t.Fatalf("the image of %s went while its copy %s uses it: %v", aws.ToString(reg.ImageId), aws.ToString(cp.ImageId), err)
	}
	if _, err := e.ec2.DeregisterImage(ctx, &ec2.DeregisterImageInput{ImageId: cp.ImageId}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(imgFile); err == nil {
		t.Fatalf("%s is still there after both AMIs were deregistered", imgFile)
	}
}

// TestRegisterBundlerCLIOutput registers what `instancestore-bundler bundle-image`
// writes (parts and manifest files), uploaded with aws-exec-read, and runs it.
func TestRegisterBundlerCLIOutput(t *testing.T) {
	testroot.Require(t)
	bin := filepath.Join(t.TempDir(), "instancestore-bundler")
	if out, err := exec.Command("go", "build", "-o", bin, "../../cmd/instancestore-bundler").CombinedOutput(); err != nil {
		t.Fatalf("building the bundler: %v\n%s", err, out)
	}
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
	e := startRunningServer(t, Config{S3: FrontReader{Front: front}})
	ctx := ctxT(t)
	img, marker := makeRootImage(t)
	dest := t.TempDir()
	out, err := exec.Command(bin, "bundle-image", "-i", img, "-u", e.srv.AccountID(), "--ec2cert", e.srv.EC2CertPath(),
		"-p", "cli", "-d", dest, "-r", "x86_64", "-B", "ami=sda1,root=/dev/sda1").CombinedOutput()
	if err != nil {
		t.Fatalf("bundle-image: %v\n%s", err, out)
	}
	s3c := front.Client("us-east-1")
	if _, err := s3c.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String("cli-amis")}); err != nil {
		t.Fatal(err)
	}
	files, _ := os.ReadDir(dest)
	if len(files) < 2 {
		t.Fatalf("bundle-image wrote %v", files)
	}
	for _, f := range files {
		data, err := os.ReadFile(filepath.Join(dest, f.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s3c.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String("cli-amis"), Key: aws.String("x/" + f.Name()),
			Body: bytes.NewReader(data), ACL: s3types.ObjectCannedACLAwsExecRead}); err != nil {
			t.Fatal(err)
		}
	}
	reg, err := e.ec2.RegisterImage(ctx, &ec2.RegisterImageInput{Name: aws.String("from-cli"), ImageLocation: aws.String("cli-amis/x/cli.manifest.xml")})
	if err != nil {
		t.Fatal(err)
	}
	waitAvailable(t, e.ec2, aws.ToString(reg.ImageId))
	kp, err := e.ec2.CreateKeyPair(ctx, &ec2.CreateKeyPairInput{KeyName: aws.String("k")})
	if err != nil {
		t.Fatal(err)
	}
	run, err := e.ec2.RunInstances(ctx, &ec2.RunInstancesInput{ImageId: reg.ImageId, InstanceType: "m1.small", MinCount: aws.Int32(1), MaxCount: aws.Int32(1), KeyName: aws.String("k")})
	if err != nil {
		t.Fatal(err)
	}
	in := waitState(t, e.ec2, aws.ToString(run.Instances[0].InstanceId), types.InstanceStateNameRunning)
	if got := sshRun(t, aws.ToString(in.PrivateIpAddress), "root", aws.ToString(kp.KeyMaterial), "cat /etc/instancestore-marker"); strings.TrimSpace(got) != marker {
		t.Fatalf("instance of the CLI's bundle sees %q, want %q", got, marker)
	}
}
