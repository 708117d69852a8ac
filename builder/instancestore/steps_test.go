package instancestore

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"github.com/instancestore/packer-plugin-instancestore/builder/instancestore/steps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	awscommon "github.com/hashicorp/packer-plugin-amazon/common"
	"github.com/hashicorp/packer-plugin-sdk/multistep"
	packersdk "github.com/hashicorp/packer-plugin-sdk/packer"
	"github.com/hashicorp/packer-plugin-sdk/packerbuilderdata"

	"github.com/instancestore/packer-plugin-instancestore/agent/driver"
	"github.com/instancestore/packer-plugin-instancestore/bundle"
	"github.com/instancestore/packer-plugin-instancestore/localenv/ec2sim"
	"github.com/instancestore/packer-plugin-instancestore/localenv/s3env"
	s3bundle "github.com/instancestore/packer-plugin-instancestore/s3"
)

// The steps that talk to EC2 and S3 run here against the EC2 simulator (SigV4-checked
// Query protocol, instance-store RegisterImage reading the bundle from S3 as EC2 does)
// and an in-process S3 behind the ACL-recording front. No instance is launched, so no
// root is needed.

type simEnv struct {
	ec2sim *ec2sim.Server
	front  *s3env.Front
	cfg    aws.Config
	ec2    *ec2.Client
	region string
	// source is the source AMI whose mappings uploadBundle's manifest inherits.
	source *ec2types.Image
	// bundleConfig, when set, is the configuration uploadBundle's manifest follows.
	bundleConfig *Config
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
	creds := ec2sim.Credentials{AccessKeyID: "AKIATESTBUILDERSTEPS", SecretAccessKey: "c2VjcmV0LWZvci10aGUtYnVpbGRlci1zdGVwcy10ZXN0"}
	srv, err := ec2sim.Start(ec2sim.Config{Credentials: creds, DataDir: t.TempDir(), S3: ec2sim.FrontReader{Front: front}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	// The clients find the endpoints the way users' do: AWS_ENDPOINT_URL_*.
	t.Setenv("AWS_ENDPOINT_URL_EC2", srv.URL())
	t.Setenv("AWS_ENDPOINT_URL_STS", srv.URL())
	t.Setenv("AWS_ENDPOINT_URL_S3", front.URL())
	cfg, err := awsconfig.LoadDefaultConfig(context.Background(), awsconfig.WithRegion("us-east-1"),
		awsconfig.WithCredentialsProvider(credentials.NewStaticCredentialsProvider(creds.AccessKeyID, creds.SecretAccessKey, "")))
	if err != nil {
		t.Fatal(err)
	}
	return &simEnv{ec2sim: srv, front: front, cfg: cfg, ec2: ec2.NewFromConfig(cfg), region: "us-east-1"}
}

// state is a state bag as Builder.Run fills it, for config c.
func (s *simEnv) state(c *Config) (multistep.StateBag, *packersdk.MockUi) {
	st := new(multistep.BasicStateBag)
	mock := &packersdk.MockUi{}
	st.Put(keyConfig, c)
	st.Put(keyAccessConfig, &c.AccessConfig)
	st.Put(keyEC2, s.ec2)
	cfg := s.cfg
	st.Put(keyAWSConfig, &cfg)
	st.Put(keyUI, mock)
	st.Put(keyRegion, s.region)
	return st, mock
}

func testConfig(t *testing.T, kv ...interface{}) *Config {
	t.Helper()
	c, _, errs := prepare(t, with(kv...))
	if errs != nil {
		t.Fatal(errs)
	}
	return c
}

// uploadBundle bundles a small random image for the simulator's EC2 key and uploads it
// to bucket/prefix with the aws-exec-read ACL, as the agent and driver do.
func (s *simEnv) uploadBundle(t *testing.T, bucket, prefix, name string) *bundleLocation {
	t.Helper()
	ctx := context.Background()
	b, err := s3bundle.New(s.cfg, s.region, bucket, prefix, s3bundle.Options{PathStyle: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.Preflight(ctx, s3bundle.PreflightOptions{Create: true}); err != nil {
		t.Fatal(err)
	}
	data := make([]byte, 3<<20)
	rand.Read(data[:1<<20])
	img := bundle.NewImage(bytes.NewReader(data), int64(len(data)), []bundle.Extent{{Offset: 0, Length: int64(len(data))}}, time.Now(), 0o644)
	key, err := bundle.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	res, err := bundle.Write(ctx, img, bundle.WriterConfig{Name: name, Key: key}, bundle.DirSink(dir))
	if err != nil {
		t.Fatal(err)
	}
	ec2Cert, err := bundle.LoadCertificate(s.ec2sim.EC2CertPath())
	if err != nil {
		t.Fatal(err)
	}
	userCert, userKey, err := bundle.NewThrowawayUser()
	if err != nil {
		t.Fatal(err)
	}
	c := &Config{}
	if s.bundleConfig != nil {
		c = s.bundleConfig
	}
	c.AMIVirtType = "paravirtual"
	mc := manifestConfig(c, s.ec2sim.AccountID(), "/dev/sda1", s.source)
	mc.Architecture = "x86_64" // the driver sets it from ami_architecture
	m, err := bundle.NewManifest(res, mc, key, ec2Cert, userCert)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Sign(userKey); err != nil {
		t.Fatal(err)
	}
	loc := &bundleLocation{Bucket: bucket, Prefix: prefix, Region: s.region, PathStyle: true}
	for _, p := range res.Parts {
		part, err := os.ReadFile(filepath.Join(dir, p.Name))
		if err != nil {
			t.Fatal(err)
		}
		if err := b.Put(ctx, p.Name, part, "application/octet-stream"); err != nil {
			t.Fatal(err)
		}
		loc.Objects = append(loc.Objects, p.Name)
	}
	if loc.ManifestLocation, err = b.PutManifest(ctx, m); err != nil {
		t.Fatal(err)
	}
	loc.Objects = append(loc.Objects, s3bundle.ManifestName(name))
	return loc
}

func (s *simEnv) objects(t *testing.T, bucket string) []string {
	t.Helper()
	keys, err := s.front.Objects(context.Background(), bucket, "")
	if err != nil {
		t.Fatal(err)
	}
	return keys
}

func (s *simEnv) images(t *testing.T, name string) []ec2types.Image {
	t.Helper()
	out, err := s.ec2.DescribeImages(context.Background(), &ec2.DescribeImagesInput{Owners: []string{"self"},
		Filters: []ec2types.Filter{{Name: aws.String("name"), Values: []string{name}}}})
	if err != nil {
		t.Fatal(err)
	}
	return out.Images
}

func seededImage(t *testing.T, s *simEnv) *ec2types.Image {
	t.Helper()
	dir := t.TempDir()
	root := filepath.Join(dir, "root.img")
	if err := os.WriteFile(root, []byte("not booted here"), 0o644); err != nil {
		t.Fatal(err)
	}
	id, err := s.ec2sim.Seed(ec2sim.SeedImage{Name: fmt.Sprintf("base-%d", time.Now().UnixNano()), Root: ec2sim.RootSource{Image: root}})
	if err != nil {
		t.Fatal(err)
	}
	out, err := s.ec2.DescribeImages(context.Background(), &ec2.DescribeImagesInput{ImageIds: []string{id}})
	if err != nil || len(out.Images) != 1 {
		t.Fatalf("DescribeImages %s: %v", id, err)
	}
	return &out.Images[0]
}

func TestStepAccountIDFromSTS(t *testing.T) {
	s := startSim(t)
	st, _ := s.state(testConfig(t))
	if action := (&steps.StepAccountID{Options: &driver.Options{}}).Run(context.Background(), st); action != multistep.ActionContinue {
		t.Fatalf("halted: %v", st.Get(keyError))
	}
	if got := accountID(st); got != s.ec2sim.AccountID() {
		t.Errorf("account %q, want the caller's %q", got, s.ec2sim.AccountID())
	}
	// account_id must be the credentials' account: EC2 refuses the manifest otherwise.
	st2, _ := s.state(testConfig(t))
	if (&steps.StepAccountID{Options: &driver.Options{AccountId: s.ec2sim.AccountID()}}).Run(context.Background(), st2) != multistep.ActionContinue {
		t.Fatalf("the caller's own account_id halted: %v", st2.Get(keyError))
	}
	st3, _ := s.state(testConfig(t))
	if (&steps.StepAccountID{Options: &driver.Options{AccountId: "111122223333"}}).Run(context.Background(), st3) != multistep.ActionHalt {
		t.Fatal("an account_id that is not the caller's passed")
	}
	want := "account_id 111122223333 is not the account of the credentials in use (STS says " + s.ec2sim.AccountID() + ")"
	if err := st3.Get(keyError).(error); !strings.Contains(err.Error(), want) {
		t.Errorf("error %q, want %q", err, want)
	}
}

func TestStepPreflightBucket(t *testing.T) {
	s := startSim(t)
	c := testConfig(t, "s3_bucket", "preflight-bucket")
	st, _ := s.state(c)
	step := &steps.StepPreflightBucket{Options: &driver.Options{S3Bucket: "preflight-bucket", S3Prefix: "p", S3ForcePathStyle: true}}
	if step.Run(context.Background(), st) != multistep.ActionHalt {
		t.Fatal("a missing bucket passed the preflight")
	}
	if err := st.Get(keyError).(error); !strings.Contains(err.Error(), `s3_bucket: bucket "preflight-bucket" does not exist`) || !strings.Contains(err.Error(), "s3_create_bucket = true") {
		t.Errorf("error %q", err)
	}
	st, mock := s.state(c)
	step.Options.S3CreateBucket = true
	if step.Run(context.Background(), st) != multistep.ActionContinue {
		t.Fatalf("preflight with create: %v", st.Get(keyError))
	}
	if !strings.Contains(mock.SayMessages[len(mock.SayMessages)-1].Message, "Created bucket preflight-bucket") {
		t.Errorf("messages %v", mock.SayMessages)
	}
	if b := bucketOf(st); b.Name != "preflight-bucket" || b.Prefix != "p" {
		t.Errorf("bucket in state: %+v", b)
	}
	if objs := s.objects(t, "preflight-bucket"); len(objs) != 0 {
		t.Errorf("the preflight left its probe: %v", objs)
	}
}

func TestStepCheckSourceAMI(t *testing.T) {
	s := startSim(t)
	img := seededImage(t, s) // paravirtual, instance-store, x86_64
	run := func(c *Config, types []string, virt string, img *ec2types.Image) (multistep.StepAction, multistep.StateBag) {
		st, _ := s.state(c)
		st.Put(keySourceImage, img)
		return (&stepCheckSourceAMI{InstanceTypes: types, Virtualization: virt}).Run(context.Background(), st), st
	}
	c := testConfig(t, "ami_virtualization_type", "paravirtual", "instance_type", "m1.small")
	if a, st := run(c, []string{"m1.small"}, "paravirtual", img); a != multistep.ActionContinue {
		t.Fatalf("halted: %v", st.Get(keyError))
	}
	if c.AMIArchitecture != "x86_64" {
		t.Errorf("ami_architecture defaulted to %q", c.AMIArchitecture)
	}
	// An EBS-backed hvm source builds on any type (here a Nitro type with NVMe).
	ebs := *img
	ebs.RootDeviceType, ebs.VirtualizationType, ebs.BootMode = ec2types.DeviceTypeEbs, ec2types.VirtualizationTypeHvm, ec2types.BootModeValuesUefiPreferred
	if a, st := run(testConfig(t, "instance_type", "m5d.large"), []string{"m5d.large"}, "hvm", &ebs); a != multistep.ActionContinue {
		t.Fatalf("EBS-backed source halted: %v", st.Get(keyError))
	}
	for _, tc := range []struct {
		types []string
		virt  string
		img   func(ec2types.Image) ec2types.Image
		want  string
	}{
		{[]string{"r3.large"}, "paravirtual", nil, `instance_type "r3.large" cannot run the paravirtual source AMI: the r3 family runs hvm AMIs only`},
		{[]string{"m3.medium"}, "hvm", nil, "is paravirtual but ami_virtualization_type is hvm"},
		{[]string{"m5d.large"}, "paravirtual", nil, `instance_type "m5d.large" cannot run an instance store-backed source AMI: only the previous-generation families c1 c3 d2 i2 m1 m2 m3 r3 x1 can (for example m3.medium or c3.large); use one of them, or an EBS-backed source AMI, which any type runs`},
		{[]string{"m3.medium"}, "paravirtual", func(i ec2types.Image) ec2types.Image {
			i.RootDeviceType = ec2types.DeviceTypeEbs
			return i
		}, `source AMI ` + aws.ToString(img.ImageId) + ` is EBS-backed and paravirtual, with ami_virtualization_type paravirtual: from an EBS-backed source this builder makes hvm AMIs only; use an hvm source AMI and set ami_virtualization_type = "hvm"`},
		{[]string{"m5d.large"}, "hvm", func(i ec2types.Image) ec2types.Image {
			i.RootDeviceType = ec2types.DeviceTypeEbs
			i.VirtualizationType = ec2types.VirtualizationTypeHvm
			i.BootMode = ec2types.BootModeValuesUefi
			return i
		}, `boots with UEFI only (boot mode uefi): the instance store families (c3, d2, i2, m3, r3, x1) boot legacy BIOS only; use a source AMI whose boot mode is legacy-bios, uefi-preferred or unset`},
		{[]string{"m5d.large"}, "hvm", func(i ec2types.Image) ec2types.Image {
			i.RootDeviceType = "nfs"
			i.VirtualizationType = ec2types.VirtualizationTypeHvm
			return i
		}, `has root device type "nfs": use an EBS-backed or instance store-backed source AMI`},
		{[]string{"m1.small"}, "paravirtual", func(i ec2types.Image) ec2types.Image {
			i.Platform = ec2types.PlatformValuesWindows
			return i
		}, `is a Windows AMI: the bundling agent runs on Linux only`},
	} {
		im := *img
		if tc.img != nil {
			im = tc.img(im)
		}
		a, st := run(testConfig(t, "ami_virtualization_type", tc.virt), tc.types, tc.virt, &im)
		if a != multistep.ActionHalt {
			t.Errorf("%v %s: not halted", tc.types, tc.virt)
			continue
		}
		if err := st.Get(keyError).(error); !strings.Contains(err.Error(), tc.want) {
			t.Errorf("error %q, want %q", err, tc.want)
		}
	}
}

// registered runs stepRegisterAMI for a fresh bundle and returns the state.
func (s *simEnv) registered(t *testing.T, c *Config, bucket string) (multistep.StateBag, *steps.StepRegisterAMI, *bundleLocation) {
	t.Helper()
	loc := s.uploadBundle(t, bucket, c.S3Prefix, c.BundlePrefix)
	st, _ := s.state(c)
	st.Put(keySourceImage, &ec2types.Image{RootDeviceName: aws.String("/dev/sda1")})
	st.Put(keyBundle, loc)
	c.AMIArchitecture = "x86_64"
	step := &steps.StepRegisterAMI{Input: registerInput, PollingConfig: new(awscommon.AWSPollingConfig)}
	if step.Run(context.Background(), st) != multistep.ActionContinue {
		t.Fatalf("register: %v", st.Get(keyError))
	}
	return st, step, loc
}

func TestStepRegisterAMI(t *testing.T) {
	s := startSim(t)
	c := testConfig(t, "ami_virtualization_type", "paravirtual", "instance_type", "m1.small", "ami_name", "registered-ami")
	st, step, loc := s.registered(t, c, "reg-bucket")
	id := amis(st)[s.region]
	imgs := s.images(t, "registered-ami")
	if len(imgs) != 1 || aws.ToString(imgs[0].ImageId) != id {
		t.Fatalf("images named registered-ami: %+v, want %s", imgs, id)
	}
	img := imgs[0]
	if aws.ToString(img.ImageLocation) != loc.ManifestLocation || img.RootDeviceType != ec2types.DeviceTypeInstanceStore ||
		img.VirtualizationType != ec2types.VirtualizationTypeParavirtual || img.Architecture != ec2types.ArchitectureValuesX8664 ||
		aws.ToString(img.RootDeviceName) != "/dev/sda1" || img.State != ec2types.ImageStateAvailable {
		t.Errorf("registered image %+v", img)
	}

	// A successful build keeps the AMI ...
	step.Cleanup(st)
	if len(s.images(t, "registered-ami")) != 1 {
		t.Fatal("Cleanup of a successful build deregistered the AMI")
	}
	// ... a failed one does not.
	st.Put(multistep.StateHalted, true)
	step.Cleanup(st)
	if imgs := s.images(t, "registered-ami"); len(imgs) != 0 {
		t.Errorf("Cleanup after a failure left the AMI: %+v", imgs)
	}
}

func TestStepBundleCleanupDeletesObjects(t *testing.T) {
	s := startSim(t)
	c := testConfig(t)
	loc := s.uploadBundle(t, "cleanup-bucket", c.S3Prefix, c.BundlePrefix)
	st, _ := s.state(c)
	b, err := s3bundle.New(s.cfg, s.region, loc.Bucket, loc.Prefix, s3bundle.Options{PathStyle: true})
	if err != nil {
		t.Fatal(err)
	}
	st.Put(keyBucket, b)
	step := &stepBundle{GeneratedData: &packerbuilderdata.GeneratedData{State: st}, uploaded: loc}
	step.Cleanup(st)
	if n := len(s.objects(t, "cleanup-bucket")); n != len(loc.Objects) {
		t.Fatalf("Cleanup of a successful build deleted objects: %d left of %d", n, len(loc.Objects))
	}
	st.Put(multistep.StateCancelled, true)
	step.Cleanup(st)
	if objs := s.objects(t, "cleanup-bucket"); len(objs) != 0 {
		t.Errorf("Cleanup after a cancel left %v", objs)
	}
}

func TestStepDeregisterAMIDeletesOldBundle(t *testing.T) {
	s := startSim(t)
	for _, keep := range []bool{false, true} {
		t.Run(fmt.Sprintf("keep=%v", keep), func(t *testing.T) {
			bucket := fmt.Sprintf("dereg-%v", keep)
			c := testConfig(t, "ami_virtualization_type", "paravirtual", "instance_type", "m1.small", "ami_name", "dereg-"+fmt.Sprint(keep))
			st, _, loc := s.registered(t, c, bucket)
			// An unrelated object under the same prefix must survive.
			b, _ := s3bundle.New(s.cfg, s.region, bucket, c.S3Prefix, s3bundle.Options{PathStyle: true})
			if err := b.Put(context.Background(), "other.txt", []byte("x"), "text/plain"); err != nil {
				t.Fatal(err)
			}
			step := &stepDeregisterAMI{ForceDeregister: true, KeepBundle: keep, AMIName: c.AMIName, PathStyle: true}
			if step.Run(context.Background(), st) != multistep.ActionContinue {
				t.Fatalf("deregister: %v", st.Get(keyError))
			}
			if imgs := s.images(t, c.AMIName); len(imgs) != 0 {
				t.Errorf("AMI still registered: %+v", imgs)
			}
			objs := s.objects(t, bucket)
			want := []string{c.S3Prefix + "/other.txt"}
			if keep {
				for _, o := range loc.Objects {
					want = append(want, c.S3Prefix+"/"+o)
				}
			}
			slices.Sort(objs)
			slices.Sort(want)
			if !slices.Equal(objs, want) {
				t.Errorf("objects after force_deregister: %v, want %v", objs, want)
			}
		})
	}
}

func TestStepManifestLocationsAndArtifactDestroy(t *testing.T) {
	s := startSim(t)
	c := testConfig(t, "ami_virtualization_type", "paravirtual", "instance_type", "m1.small", "ami_name", "artifact-ami")
	st, _, loc := s.registered(t, c, "artifact-bucket")
	if (&steps.StepManifestLocations{}).Run(context.Background(), st) != multistep.ActionContinue {
		t.Fatalf("manifest locations: %v", st.Get(keyError))
	}
	locs := manifestLocations(st)
	if locs[s.region] != loc.ManifestLocation {
		t.Errorf("manifest locations %v, want %s", locs, loc.ManifestLocation)
	}
	cfg := s.cfg
	a := &Artifact{Amis: amis(st), Manifests: locs, Bundle: loc, Config: &cfg, Access: &c.AccessConfig}
	if a.Id() != s.region+":"+amis(st)[s.region] {
		t.Errorf("Id %q", a.Id())
	}
	if err := a.Destroy(); err != nil {
		t.Fatal(err)
	}
	if imgs := s.images(t, "artifact-ami"); len(imgs) != 0 {
		t.Errorf("Destroy left the AMI: %+v", imgs)
	}
	if objs := s.objects(t, "artifact-bucket"); len(objs) != 0 {
		t.Errorf("Destroy left objects: %v", objs)
	}
}

func TestStepSweepRemovesTaggedLeftovers(t *testing.T) {
	s := startSim(t)
	ctx := context.Background()
	c := testConfig(t)
	tag := func(rt ec2types.ResourceType, id string) []ec2types.TagSpecification {
		return []ec2types.TagSpecification{{ResourceType: rt, Tags: []ec2types.Tag{{Key: aws.String(BuildTagKey), Value: aws.String(id)}}}}
	}
	// What an interrupted CreateKeyPair / CreateSecurityGroup leaves: this build's and
	// another build's.
	for _, id := range []string{c.buildID, "other-build"} {
		if _, err := s.ec2.CreateKeyPair(ctx, &ec2.CreateKeyPairInput{KeyName: aws.String("kp-" + id), TagSpecifications: tag(ec2types.ResourceTypeKeyPair, id)}); err != nil {
			t.Fatal(err)
		}
		if _, err := s.ec2.CreateSecurityGroup(ctx, &ec2.CreateSecurityGroupInput{GroupName: aws.String("grp-" + id), Description: aws.String("t"),
			TagSpecifications: tag(ec2types.ResourceTypeSecurityGroup, id)}); err != nil {
			t.Fatal(err)
		}
	}
	if c.RunTags[BuildTagKey] != c.buildID || c.buildID == "" {
		t.Fatalf("run_tags %v lack the build tag", c.RunTags)
	}
	st, _ := s.state(c)
	step := &stepSweep{BuildID: c.buildID, PollingConfig: new(awscommon.AWSPollingConfig)}
	names := func() (kps, sgs []string) {
		k, err := s.ec2.DescribeKeyPairs(ctx, &ec2.DescribeKeyPairsInput{})
		if err != nil {
			t.Fatal(err)
		}
		for _, kp := range k.KeyPairs {
			kps = append(kps, aws.ToString(kp.KeyName))
		}
		g, err := s.ec2.DescribeSecurityGroups(ctx, &ec2.DescribeSecurityGroupsInput{})
		if err != nil {
			t.Fatal(err)
		}
		for _, sg := range g.SecurityGroups {
			if aws.ToString(sg.GroupName) != "default" {
				sgs = append(sgs, aws.ToString(sg.GroupName))
			}
		}
		return kps, sgs
	}
	step.Cleanup(st) // a successful build: nothing removed
	if kps, sgs := names(); len(kps) != 2 || len(sgs) != 2 {
		t.Fatalf("Cleanup of a successful build removed something: %v %v", kps, sgs)
	}
	st.Put(multistep.StateCancelled, true)
	step.Cleanup(st)
	kps, sgs := names()
	if !slices.Equal(kps, []string{"kp-other-build"}) || !slices.Equal(sgs, []string{"grp-other-build"}) {
		t.Errorf("after the sweep: key pairs %v, security groups %v; want only the other build's", kps, sgs)
	}
}

// TestRegionCopyAndFailedBuildCleanup copies the AMI to a second region with the
// shared StepAMIRegionCopy, records both manifest locations, then checks that the
// register step's Cleanup after a failure deregisters the AMIs in both regions.
func TestRegionCopyAndFailedBuildCleanup(t *testing.T) {
	s := startSim(t)
	// The access config resolves credentials as users' do: here from the environment.
	creds, err := s.cfg.Credentials.Retrieve(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("AWS_ACCESS_KEY_ID", creds.AccessKeyID)
	t.Setenv("AWS_SECRET_ACCESS_KEY", creds.SecretAccessKey)
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
	c := testConfig(t, "ami_virtualization_type", "paravirtual", "instance_type", "m1.small", "ami_name", "copied-ami",
		"ami_regions", []string{"eu-west-1"})
	st, reg, _ := s.registered(t, c, "copy-bucket")
	copyStep := &awscommon.StepAMIRegionCopy{AccessConfig: &c.AccessConfig, Regions: c.AMIRegions, Name: c.AMIName, OriginalRegion: s.region}
	if copyStep.Run(context.Background(), st) != multistep.ActionContinue {
		t.Fatalf("region copy: %v", st.Get(keyError))
	}
	images := amis(st)
	if len(images) != 2 || images["eu-west-1"] == "" {
		t.Fatalf("amis after the copy: %v", images)
	}
	if (&steps.StepManifestLocations{}).Run(context.Background(), st) != multistep.ActionContinue {
		t.Fatalf("manifest locations: %v", st.Get(keyError))
	}
	if locs := manifestLocations(st); locs["eu-west-1"] == "" || locs[s.region] == "" {
		t.Errorf("manifest locations %v", locs)
	}
	st.Put(multistep.StateHalted, true)
	reg.Cleanup(st)
	for r, id := range images {
		cl := ec2.NewFromConfig(s.cfg, func(o *ec2.Options) { o.Region = r })
		out, err := cl.DescribeImages(context.Background(), &ec2.DescribeImagesInput{Owners: []string{"self"}})
		if err != nil {
			t.Fatal(err)
		}
		for _, img := range out.Images {
			if aws.ToString(img.ImageId) == id {
				t.Errorf("AMI %s in %s survived the failed build's cleanup", id, r)
			}
		}
	}
}
