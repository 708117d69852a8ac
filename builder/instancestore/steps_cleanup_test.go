package instancestore

import (
	"context"
	"errors"
	"fmt"
	"github.com/instancestore/packer-plugin-instancestore/builder/instancestore/steps"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	awscommon "github.com/hashicorp/packer-plugin-amazon/common"
	"github.com/hashicorp/packer-plugin-amazon/common/clients"
	"github.com/hashicorp/packer-plugin-sdk/multistep"
	"github.com/hashicorp/packer-plugin-sdk/packerbuilderdata"

	s3bundle "github.com/instancestore/packer-plugin-instancestore/s3"
)

// flakyEC2 is the simulator's client with injected failures.
type flakyEC2 struct {
	clients.Ec2Client
	describeFailures int  // the first n DescribeImages fail
	lostRegister     bool // RegisterImage succeeds, the answer is lost
	failDeregister   bool
	describes        int
}

var errTransient = errors.New("RequestLimitExceeded: injected")

func (f *flakyEC2) DescribeImages(ctx context.Context, in *ec2.DescribeImagesInput, o ...func(*ec2.Options)) (*ec2.DescribeImagesOutput, error) {
	f.describes++
	if f.describes <= f.describeFailures {
		return nil, errTransient
	}
	return f.Ec2Client.DescribeImages(ctx, in, o...)
}

func (f *flakyEC2) RegisterImage(ctx context.Context, in *ec2.RegisterImageInput, o ...func(*ec2.Options)) (*ec2.RegisterImageOutput, error) {
	out, err := f.Ec2Client.RegisterImage(ctx, in, o...)
	if err == nil && f.lostRegister {
		return nil, context.Canceled
	}
	return out, err
}

func (f *flakyEC2) DeregisterImage(ctx context.Context, in *ec2.DeregisterImageInput, o ...func(*ec2.Options)) (*ec2.DeregisterImageOutput, error) {
	if f.failDeregister {
		return nil, errTransient
	}
	return f.Ec2Client.DeregisterImage(ctx, in, o...)
}

func TestStepOrderAndIMDSOnce(t *testing.T) {
	startSim(t)
	t.Setenv("AWS_ACCESS_KEY_ID", "AKIATESTBUILDERSTEPS")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "c2VjcmV0LWZvci10aGUtYnVpbGRlci1zdGVwcy10ZXN0")
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
	b := &Builder{}
	if _, _, err := b.Prepare(with("imds_support", "v2.0", "deregistration_protection", map[string]interface{}{"enabled": true})); err != nil {
		t.Fatal(err)
	}
	awsCfg, err := b.config.Config(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, s := range b.steps(context.Background(), nil, awsCfg, &packerbuilderdata.GeneratedData{}) {
		names = append(names, strings.TrimPrefix(strings.TrimPrefix(typeName(s), "*common."), "*instancestore."))
		if m, ok := s.(*awscommon.StepModifyAMIAttributes); ok && m.IMDSSupport != "" {
			t.Errorf("imds_support is sent again in ModifyImageAttribute (RegisterImage has it)")
		}
	}
	index := func(n string) int {
		for i, x := range names {
			if x == n {
				return i
			}
		}
		t.Fatalf("no step %s in %v", n, names)
		return -1
	}
	// force_deregister must free the bundle's location before the bundle step.
	if index("stepDeregisterAMI") > index("stepBundle") {
		t.Errorf("stepDeregisterAMI runs after stepBundle: %v", names)
	}
	// Protection last: any failure before it can still deregister the AMI.
	for _, n := range []string{"StepAMIRegionCopy", "StepEnableDeprecation", "StepModifyAMIAttributes", "StepCreateTags"} {
		if index(n) > index("StepEnableDeregistrationProtection") {
			t.Errorf("%s runs after deregistration protection: %v", n, names)
		}
	}
	c := testConfig(t, "imds_support", "v2.0")
	st := new(multistep.BasicStateBag)
	st.Put(keyConfig, c)
	st.Put(keyBundle, &bundleLocation{ManifestLocation: "b/k.manifest.xml"})
	st.Put(keySourceImage, &ec2types.Image{})
	if in, _ := (&steps.StepRegisterAMI{Input: registerInput, IMDSSupport: c.AMIIMDSSupport}).RegisterInput(st); in == nil || in.ImdsSupport != ec2types.ImdsSupportValuesV20 {
		t.Errorf("RegisterImage ImdsSupport %q, want v2.0", in.ImdsSupport)
	}
}

func typeName(v any) string { return fmt.Sprintf("%T", v) }

func TestStepManifestLocationsRetriesAndNeverFails(t *testing.T) {
	s := startSim(t)
	c := testConfig(t, "ami_virtualization_type", "paravirtual", "instance_type", "m1.small", "ami_name", "locations-ami")
	st, reg, loc := s.registered(t, c, "loc-bucket")
	flaky := &flakyEC2{Ec2Client: s.ec2, describeFailures: 2}
	st.Put(keyEC2, clients.Ec2Client(flaky))
	step := &steps.StepManifestLocations{Tries: 3, Delay: time.Millisecond}
	if step.Run(context.Background(), st) != multistep.ActionContinue {
		t.Fatalf("two transient DescribeImages errors failed the build: %v", st.Get(keyError))
	}
	if got := manifestLocations(st)[s.region]; got != loc.ManifestLocation {
		t.Errorf("manifest location %q, want %q", got, loc.ManifestLocation)
	}

	// EC2 never answers: the build still succeeds with the known location, and
	// nothing is rolled back.
	flaky.describes, flaky.describeFailures = 0, 100
	st.Remove(keyManifests)
	if step.Run(context.Background(), st) != multistep.ActionContinue {
		t.Fatalf("a failing DescribeImages failed the build: %v", st.Get(keyError))
	}
	if _, halted := st.GetOk(keyError); halted {
		t.Errorf("error recorded: %v", st.Get(keyError))
	}
	if got := manifestLocations(st)[s.region]; got != loc.ManifestLocation {
		t.Errorf("fallback manifest location %q, want %q", got, loc.ManifestLocation)
	}
	reg.Cleanup(st)
	if len(s.images(t, c.AMIName)) != 1 {
		t.Errorf("the AMI was deregistered")
	}
}

func TestStepRegisterAMICleanupFindsUnansweredRegistration(t *testing.T) {
	s := startSim(t)
	c := testConfig(t, "ami_virtualization_type", "paravirtual", "instance_type", "m1.small", "ami_name", "orphan-ami")
	c.AMIArchitecture = "x86_64"
	loc := s.uploadBundle(t, "orphan-bucket", c.S3Prefix, c.BundlePrefix)
	st, _ := s.state(c)
	st.Put(keySourceImage, &ec2types.Image{RootDeviceName: aws.String("/dev/sda1")})
	st.Put(keyBundle, loc)
	st.Put(keyEC2, clients.Ec2Client(&flakyEC2{Ec2Client: s.ec2, lostRegister: true}))
	step := &steps.StepRegisterAMI{Input: registerInput, PollingConfig: new(awscommon.AWSPollingConfig)}
	if step.Run(context.Background(), st) != multistep.ActionHalt {
		t.Fatal("a RegisterImage without answer did not halt")
	}
	if len(s.images(t, c.AMIName)) != 1 {
		t.Fatal("the simulator did not register the AMI")
	}
	st.Put(multistep.StateHalted, true) // as the runner does after a halt
	step.Cleanup(st)
	if imgs := s.images(t, c.AMIName); len(imgs) != 0 {
		t.Errorf("Cleanup left the AMI whose RegisterImage answer was lost: %s", aws.ToString(imgs[0].ImageId))
	}
	if bundleInUse(st) != "" {
		t.Errorf("bundle marked in use: %s", bundleInUse(st))
	}
}

func TestStepRegisterAMICleanupProtectedAndKeepsBundle(t *testing.T) {
	s := startSim(t)
	c := testConfig(t, "ami_virtualization_type", "paravirtual", "instance_type", "m1.small", "ami_name", "protected-ami")
	st, step, loc := s.registered(t, c, "protected-bucket")
	id := amis(st)[s.region]
	if _, err := s.ec2.EnableImageDeregistrationProtection(context.Background(), &ec2.EnableImageDeregistrationProtectionInput{ImageId: aws.String(id)}); err != nil {
		t.Fatal(err)
	}
	b, err := s3bundle.New(s.cfg, s.region, loc.Bucket, loc.Prefix, s3bundle.Options{PathStyle: true})
	if err != nil {
		t.Fatal(err)
	}
	st.Put(keyBucket, b)
	bundleStep := &stepBundle{GeneratedData: &packerbuilderdata.GeneratedData{State: st}, uploaded: loc}
	st.Put(multistep.StateHalted, true)

	// Deregistering fails for good: the AMI stays, and so does its bundle.
	st.Put(keyEC2, clients.Ec2Client(&flakyEC2{Ec2Client: s.ec2, failDeregister: true}))
	step.Cleanup(st)
	bundleStep.Cleanup(st)
	if len(s.images(t, c.AMIName)) != 1 {
		t.Fatal("the AMI went although DeregisterImage failed")
	}
	if n := len(s.objects(t, loc.Bucket)); n != len(loc.Objects) {
		t.Errorf("the bundle of an AMI still registered was deleted: %d of %d objects left", n, len(loc.Objects))
	}

	// Protected AMI of a failed build: protection is disabled, the AMI deregistered,
	// the bundle deleted.
	st.Remove(steps.KeyBundleInUse)
	st.Put(keyEC2, clients.Ec2Client(s.ec2))
	step.Cleanup(st)
	bundleStep.Cleanup(st)
	if imgs := s.images(t, c.AMIName); len(imgs) != 0 {
		t.Errorf("the protected AMI of a failed build is still registered")
	}
	if objs := s.objects(t, loc.Bucket); len(objs) != 0 {
		t.Errorf("objects left: %v", objs)
	}
}

func TestForceDeregisterFreesTheBundleName(t *testing.T) {
	s := startSim(t)
	c := testConfig(t, "ami_virtualization_type", "paravirtual", "instance_type", "m1.small", "ami_name", "rebuilt-ami",
		"s3_prefix", "fixed", "bundle_prefix", "fixed-name", "force_deregister", true)
	st, _, loc := s.registered(t, c, "rebuild-bucket")
	b, err := s3bundle.New(s.cfg, s.region, loc.Bucket, loc.Prefix, s3bundle.Options{PathStyle: true})
	if err != nil {
		t.Fatal(err)
	}
	step := &stepDeregisterAMI{ForceDeregister: true, AMIName: c.AMIName, PathStyle: true}
	if step.Run(context.Background(), st) != multistep.ActionContinue {
		t.Fatalf("deregister: %v", st.Get(keyError))
	}
	// What the bundle step checks before it bundles (agent/driver refuses an
	// existing manifest).
	if exists, err := b.Exists(context.Background(), s3bundle.ManifestName(c.BundlePrefix)); err != nil || exists {
		t.Fatalf("the old manifest is still there (%v): the rebuild would be refused", err)
	}
	// The second build registers under the same name and location.
	s.registered(t, c, "rebuild-bucket")
	if imgs := s.images(t, c.AMIName); len(imgs) != 1 {
		t.Errorf("%d AMIs named %s after the rebuild", len(imgs), c.AMIName)
	}
}
