package steps

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/hashicorp/packer-plugin-sdk/multistep"
	packersdk "github.com/hashicorp/packer-plugin-sdk/packer"

	"github.com/instancestore/packer-plugin-instancestore/localenv/ec2sim"
)

// The EBS steps against the EC2 simulator: no instance is launched (attaching and
// writing are covered by the builder's ebs_copy acceptance test), so the volume stays
// empty.

func startEBSSim(t *testing.T) (*ec2.Client, multistep.StateBag) {
	t.Helper()
	creds := ec2sim.Credentials{AccessKeyID: "AKIATESTEBSSTEPS0000", SecretAccessKey: "c2VjcmV0LWZvci10aGUtZWJzLXN0ZXBzLXRlc3Q"}
	sim, err := ec2sim.Start(ec2sim.Config{Credentials: creds, DataDir: t.TempDir(), PendingTime: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sim.Close() })
	t.Setenv("AWS_ENDPOINT_URL_EC2", sim.URL())
	cfg, err := awsconfig.LoadDefaultConfig(context.Background(), awsconfig.WithRegion("us-east-1"),
		awsconfig.WithCredentialsProvider(credentials.NewStaticCredentialsProvider(creds.AccessKeyID, creds.SecretAccessKey, "")))
	if err != nil {
		t.Fatal(err)
	}
	client := ec2.NewFromConfig(cfg)
	st := new(multistep.BasicStateBag)
	st.Put(KeyEBSClient, client)
	st.Put(KeyUI, &packersdk.MockUi{})
	st.Put(KeyRegion, "us-east-1")
	// As StepRunSourceInstance stores it: a value.
	st.Put(KeyInstance, ec2types.Instance{InstanceId: aws.String("i-none"), Placement: &ec2types.Placement{AvailabilityZone: aws.String("us-east-1a")}})
	return client, st
}

func left(t *testing.T, client *ec2.Client) (images, snapshots, volumes int) {
	t.Helper()
	ctx := context.Background()
	imgs, err := client.DescribeImages(ctx, &ec2.DescribeImagesInput{Owners: []string{"self"}})
	if err != nil {
		t.Fatal(err)
	}
	snaps, err := client.DescribeSnapshots(ctx, &ec2.DescribeSnapshotsInput{OwnerIds: []string{"self"}})
	if err != nil {
		t.Fatal(err)
	}
	vols, err := client.DescribeVolumes(ctx, &ec2.DescribeVolumesInput{})
	if err != nil {
		t.Fatal(err)
	}
	return len(imgs.Images), len(snaps.Snapshots), len(vols.Volumes)
}

func testImage() *EBSImage {
	return &EBSImage{
		Name: "copy", Description: "the EBS copy", Architecture: ec2types.ArchitectureValuesX8664,
		Virtualization: ec2types.VirtualizationTypeHvm, RootDevice: "/dev/xvda", VolumeSize: 1, VolumeType: "gp3",
		InstanceStore: []ec2types.BlockDeviceMapping{
			{DeviceName: aws.String("/dev/sdb"), VirtualName: aws.String("ephemeral0")},
			{DeviceName: aws.String("/dev/xvda"), VirtualName: aws.String("ephemeral1")}, // on the root: dropped
		},
		EnaSupport: aws.Bool(true),
		Tags:       []ec2types.Tag{{Key: aws.String("Kind"), Value: aws.String("ebs")}},
	}
}

// TestEBSStepsRegisterAndCleanup: volume -> snapshot -> register, the AMI as EC2
// reports it, then a failed run's cleanups leave no AMI, snapshot or volume.
func TestEBSStepsRegisterAndCleanup(t *testing.T) {
	client, st := startEBSSim(t)
	ctx := context.Background()
	create := &StepCreateVolume{Options: &EBSVolumeOptions{VolumeType: "gp3"}, ImageSize: func(multistep.StateBag) (int64, error) { return 3<<20 + 1, nil },
		Tags: map[string]string{"Name": "t"}}
	snap := &StepSnapshot{Description: "root", Tags: func(multistep.StateBag) ([]ec2types.Tag, error) {
		return []ec2types.Tag{{Key: aws.String("Kind"), Value: aws.String("ebs")}}, nil
	}}
	reg := &StepRegisterEBSAMI{Image: func(multistep.StateBag) (*EBSImage, error) { return testImage(), nil }}
	for _, s := range []multistep.Step{create, snap, reg} {
		if s.Run(ctx, st) != multistep.ActionContinue {
			t.Fatalf("%T: %v", s, st.Get(KeyError))
		}
	}
	vol, err := client.DescribeVolumes(ctx, &ec2.DescribeVolumesInput{VolumeIds: []string{StateString(st, KeyEBSVolume)}})
	if err != nil || len(vol.Volumes) != 1 || aws.ToInt32(vol.Volumes[0].Size) != 1 || vol.Volumes[0].VolumeType != "gp3" ||
		aws.ToString(vol.Volumes[0].AvailabilityZone) != "us-east-1a" {
		t.Fatalf("volume: %v %+v", err, vol)
	}
	out, err := client.DescribeImages(ctx, &ec2.DescribeImagesInput{ImageIds: []string{StateString(st, KeyEBSAMI)}})
	if err != nil || len(out.Images) != 1 {
		t.Fatalf("describe: %v", err)
	}
	img := out.Images[0]
	if img.RootDeviceType != ec2types.DeviceTypeEbs || aws.ToString(img.RootDeviceName) != "/dev/xvda" || img.BootMode != ec2types.BootModeValuesLegacyBios ||
		!aws.ToBool(img.EnaSupport) || img.VirtualizationType != ec2types.VirtualizationTypeHvm || img.State != ec2types.ImageStateAvailable {
		t.Errorf("AMI %+v", img)
	}
	var root, eph []string
	for _, m := range img.BlockDeviceMappings {
		if m.Ebs != nil {
			root = append(root, aws.ToString(m.DeviceName)+"="+aws.ToString(m.Ebs.SnapshotId))
		} else {
			eph = append(eph, aws.ToString(m.DeviceName)+"="+aws.ToString(m.VirtualName))
		}
	}
	if strings.Join(root, ",") != "/dev/xvda="+StateString(st, KeyEBSSnapshot) || strings.Join(eph, ",") != "/dev/sdb=ephemeral0" {
		t.Errorf("mappings: root %v, instance store %v", root, eph)
	}

	// A run that succeeded keeps the AMI and snapshot; the volume always goes.
	create.Cleanup(st)
	if i, s, v := left(t, client); i != 1 || s != 1 || v != 0 {
		t.Errorf("after a finished run: %d AMIs, %d snapshots, %d volumes; want 1, 1, 0", i, s, v)
	}
	st.Put(multistep.StateHalted, true)
	reg.Cleanup(st)
	snap.Cleanup(st)
	if i, s, v := left(t, client); i != 0 || s != 0 || v != 0 {
		t.Errorf("after a failed run: %d AMIs, %d snapshots, %d volumes left", i, s, v)
	}
}

// TestEBSStepsLostAnswers: a CreateVolume or RegisterImage whose answer never came
// (a cancel) made its resource all the same; the cleanups find and remove it.
func TestEBSStepsLostAnswers(t *testing.T) {
	client, st := startEBSSim(t)
	ctx := context.Background()
	tags := map[string]string{"build": "b-1"}
	if _, err := client.CreateVolume(ctx, &ec2.CreateVolumeInput{AvailabilityZone: aws.String("us-east-1a"), Size: aws.Int32(1),
		TagSpecifications: []ec2types.TagSpecification{{ResourceType: ec2types.ResourceTypeVolume, Tags: EC2Tags(tags)}}}); err != nil {
		t.Fatal(err)
	}
	other, err := client.CreateVolume(ctx, &ec2.CreateVolumeInput{AvailabilityZone: aws.String("us-east-1a"), Size: aws.Int32(1),
		TagSpecifications: []ec2types.TagSpecification{{ResourceType: ec2types.ResourceTypeVolume, Tags: EC2Tags(map[string]string{"build": "b-2"})}}})
	if err != nil {
		t.Fatal(err)
	}
	create := &StepCreateVolume{Tags: tags, UniqueTag: "build", attempted: true}
	create.Cleanup(st)
	vols, err := client.DescribeVolumes(ctx, &ec2.DescribeVolumesInput{})
	if err != nil || len(vols.Volumes) != 1 || aws.ToString(vols.Volumes[0].VolumeId) != aws.ToString(other.VolumeId) {
		t.Fatalf("volumes after the cleanup: %v %+v; want only another build's %s", err, vols, aws.ToString(other.VolumeId))
	}

	s, err := client.CreateSnapshot(ctx, &ec2.CreateSnapshotInput{VolumeId: other.VolumeId})
	if err != nil {
		t.Fatal(err)
	}
	if err := ec2.NewSnapshotCompletedWaiter(client).Wait(ctx, &ec2.DescribeSnapshotsInput{SnapshotIds: []string{aws.ToString(s.SnapshotId)}}, time.Minute); err != nil {
		t.Fatal(err)
	}
	in := testImage().RegisterInput(aws.ToString(s.SnapshotId))
	if _, err := client.RegisterImage(ctx, in); err != nil {
		t.Fatal(err)
	}
	reg := &StepRegisterEBSAMI{attempted: in}
	reg.Cleanup(st) // the run did not fail: nothing to undo
	if i, _, _ := left(t, client); i != 1 {
		t.Fatalf("%d AMIs after a finished run's cleanup", i)
	}
	st.Put(multistep.StateCancelled, true)
	reg.Cleanup(st)
	if i, _, _ := left(t, client); i != 0 {
		t.Errorf("the AMI of a RegisterImage without answer is left")
	}
}

func TestEBSVolumeOptions(t *testing.T) {
	o := EBSVolumeOptions{VolumeType: "fast", VolumeSize: -1}
	errs := o.Prepare("ebs_copy.")
	if len(errs) != 2 || errs[0].Error() != `ebs_copy.volume_type "fast": want gp2, gp3, io1, io2, st1, sc1 or standard` ||
		errs[1].Error() != "ebs_copy.volume_size -1: give a size in GiB, or leave it unset for the image size" {
		t.Errorf("errors %v", errs)
	}
	o = EBSVolumeOptions{}
	if errs := o.Prepare(""); len(errs) != 0 || o.VolumeType != "gp3" {
		t.Errorf("defaults: %v %+v", errs, o)
	}
	for _, c := range []struct {
		size int32
		img  int64
		want int32
		err  string
	}{
		{0, 1, 1, ""}, {0, 1 << 30, 1, ""}, {0, 1<<30 + 1, 2, ""}, {8, 3 << 30, 8, ""},
		{2, 3<<30 + 5, 0, "ebs_copy.volume_size 2 GiB is smaller than the 3221225477-byte image: use at least 4, or leave it unset"},
	} {
		o := EBSVolumeOptions{VolumeSize: c.size}
		got, err := o.SizeGiB("ebs_copy.", c.img)
		if got != c.want || (err == nil) != (c.err == "") || (err != nil && err.Error() != c.err) {
			t.Errorf("SizeGiB(%d, %d) = %d, %v; want %d, %q", c.size, c.img, got, err, c.want, c.err)
		}
	}
}
