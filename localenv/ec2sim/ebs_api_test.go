package ec2sim

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
)

func TestEBSRegisterImage(t *testing.T) {
	e := startServer(t, Config{PendingTime: 50 * time.Millisecond})
	ctx := ctxT(t)
	snap := snapshotOf(t, e, 2, "root data")
	reg := func(name, root string, m ...types.BlockDeviceMapping) (*ec2.RegisterImageOutput, error) {
		return e.ec2.RegisterImage(ctx, &ec2.RegisterImageInput{Name: aws.String(name), RootDeviceName: aws.String(root),
			Architecture: types.ArchitectureValuesX8664, VirtualizationType: aws.String("hvm"), BlockDeviceMappings: m})
	}
	f := aws.Bool(false)
	t.Run("errors", func(t *testing.T) {
		_, err := reg("not-in-map", "/dev/xvda", ebsMapping("/dev/sdb", snap, 0, nil))
		wantCode(t, err, "InvalidBlockDeviceMapping")
		_, err = reg("no-snapshot", "/dev/xvda", ebsMapping("/dev/xvda", "", 8, nil))
		wantCode(t, err, "InvalidBlockDeviceMapping")
		_, err = reg("missing", "/dev/xvda", ebsMapping("/dev/xvda", "snap-0123456789abcdef0", 0, nil))
		wantCode(t, err, "InvalidSnapshot.NotFound")
		_, err = reg("malformed", "/dev/xvda", ebsMapping("/dev/xvda", "snap-zz", 0, nil))
		wantCode(t, err, "InvalidSnapshotID.Malformed")
		_, err = reg("too-small", "/dev/xvda", ebsMapping("/dev/xvda", snap, 1, nil))
		wantCode(t, err, "InvalidBlockDeviceMapping")
		if !strings.Contains(err.Error(), "expect size >= 2GB") {
			t.Fatalf("size message: %v", err)
		}
		m := ebsMapping("/dev/xvda", snap, 0, nil)
		m.Ebs.VolumeType = "gp9"
		_, err = reg("bad-type", "/dev/xvda", m)
		wantCode(t, err, "InvalidParameterValue")
		_, err = reg("extra-no-size", "/dev/xvda", ebsMapping("/dev/xvda", snap, 0, nil), ebsMapping("/dev/sdf", "", 0, f))
		wantCode(t, err, "InvalidBlockDeviceMapping")
		_, err = e.ec2.RegisterImage(ctx, &ec2.RegisterImageInput{Name: aws.String("nothing")})
		wantCode(t, err, "MissingParameter")
		_, err = e.ec2.RegisterImage(ctx, &ec2.RegisterImageInput{Name: aws.String("bad-boot"), RootDeviceName: aws.String("/dev/xvda"),
			VirtualizationType: aws.String("hvm"), BootMode: "bios", BlockDeviceMappings: []types.BlockDeviceMapping{ebsMapping("/dev/xvda", snap, 0, nil)}})
		wantCode(t, err, "InvalidParameterValue")
		_, err = e.ec2.RegisterImage(ctx, &ec2.RegisterImageInput{Name: aws.String("tpm-bios"), RootDeviceName: aws.String("/dev/xvda"),
			VirtualizationType: aws.String("hvm"), TpmSupport: types.TpmSupportValuesV20, BootMode: types.BootModeValuesLegacyBios,
			BlockDeviceMappings: []types.BlockDeviceMapping{ebsMapping("/dev/xvda", snap, 0, nil)}})
		wantCode(t, err, "InvalidParameterCombination")
		// A snapshot still pending cannot be an AMI's.
		cv, err := e.ec2.CreateVolume(ctx, &ec2.CreateVolumeInput{AvailabilityZone: aws.String(e.srv.Region() + "a"), Size: aws.Int32(1)})
		if err != nil {
			t.Fatal(err)
		}
		waitVolume(t, e, aws.ToString(cv.VolumeId), false)
		cs, err := e.ec2.CreateSnapshot(ctx, &ec2.CreateSnapshotInput{VolumeId: cv.VolumeId})
		if err != nil {
			t.Fatal(err)
		}
		_, err = reg("pending-snap", "/dev/xvda", ebsMapping("/dev/xvda", aws.ToString(cs.SnapshotId), 0, nil))
		wantCode(t, err, "IncorrectState")
	})

	out, err := e.ec2.RegisterImage(ctx, &ec2.RegisterImageInput{Name: aws.String("debian-ebs"), RootDeviceName: aws.String("/dev/xvda"),
		Architecture: types.ArchitectureValuesX8664, VirtualizationType: aws.String("hvm"), EnaSupport: aws.Bool(true),
		SriovNetSupport: aws.String("simple"), BootMode: types.BootModeValuesUefiPreferred,
		BlockDeviceMappings: []types.BlockDeviceMapping{ebsMapping("/dev/xvda", snap, 4, f),
			{DeviceName: aws.String("/dev/sdb"), VirtualName: aws.String("ephemeral0")}, ebsMapping("/dev/sdf", "", 3, nil)}})
	if err != nil {
		t.Fatal(err)
	}
	ami := aws.ToString(out.ImageId)
	if err := ec2.NewImageAvailableWaiter(e.ec2, func(o *ec2.ImageAvailableWaiterOptions) { o.MinDelay, o.MaxDelay = fastWait, fastWait }).
		Wait(ctx, &ec2.DescribeImagesInput{ImageIds: []string{ami}}, time.Minute); err != nil {
		t.Fatal(err)
	}
	di, err := e.ec2.DescribeImages(ctx, &ec2.DescribeImagesInput{Owners: []string{"self"}, Filters: []types.Filter{{Name: aws.String("root-device-type"), Values: []string{"ebs"}}}})
	if err != nil || len(di.Images) != 1 {
		t.Fatalf("describe: %v %v", di, err)
	}
	im := di.Images[0]
	if im.RootDeviceType != types.DeviceTypeEbs || aws.ToString(im.RootDeviceName) != "/dev/xvda" || im.BootMode != types.BootModeValuesUefiPreferred ||
		!aws.ToBool(im.EnaSupport) || aws.ToString(im.SriovNetSupport) != "simple" || aws.ToString(im.ImageLocation) != e.srv.AccountID()+"/debian-ebs" || len(im.BlockDeviceMappings) != 3 {
		t.Fatalf("image: %+v", im)
	}
	root := im.BlockDeviceMappings[0]
	if aws.ToString(root.Ebs.SnapshotId) != snap || aws.ToInt32(root.Ebs.VolumeSize) != 4 || aws.ToBool(root.Ebs.DeleteOnTermination) || root.Ebs.VolumeType != types.VolumeTypeGp2 {
		t.Fatalf("root mapping: %+v", root.Ebs)
	}
	if aws.ToString(im.BlockDeviceMappings[1].VirtualName) != "ephemeral0" || !aws.ToBool(im.BlockDeviceMappings[2].Ebs.DeleteOnTermination) {
		t.Fatalf("other mappings: %+v", im.BlockDeviceMappings)
	}
	_, err = reg("debian-ebs", "/dev/xvda", ebsMapping("/dev/xvda", snap, 0, nil))
	wantCode(t, err, "InvalidAMIName.Duplicate")
	// Without Architecture, an EBS-backed registration is i386 (the API's default).
	o2, err := e.ec2.RegisterImage(ctx, &ec2.RegisterImageInput{Name: aws.String("default-arch"), RootDeviceName: aws.String("/dev/sda1"),
		BlockDeviceMappings: []types.BlockDeviceMapping{ebsMapping("/dev/sda1", snap, 0, nil)}})
	if err != nil {
		t.Fatal(err)
	}
	di, err = e.ec2.DescribeImages(ctx, &ec2.DescribeImagesInput{ImageIds: []string{aws.ToString(o2.ImageId)}})
	if err != nil || di.Images[0].Architecture != types.ArchitectureValuesI386 || di.Images[0].VirtualizationType != types.VirtualizationTypeParavirtual {
		t.Fatalf("defaults: %+v %v", di, err)
	}

	// The snapshot is the AMIs' until they are deregistered, which leaves it.
	_, err = e.ec2.DeleteSnapshot(ctx, &ec2.DeleteSnapshotInput{SnapshotId: aws.String(snap)})
	wantCode(t, err, "InvalidSnapshot.InUse")
	for _, id := range []string{ami, aws.ToString(o2.ImageId)} {
		if _, err := e.ec2.DeregisterImage(ctx, &ec2.DeregisterImageInput{ImageId: aws.String(id)}); err != nil {
			t.Fatal(err)
		}
	}
	ds, err := e.ec2.DescribeSnapshots(ctx, &ec2.DescribeSnapshotsInput{SnapshotIds: []string{snap}})
	if err != nil || len(ds.Snapshots) != 1 {
		t.Fatalf("snapshot after deregister: %v %v", ds, err)
	}
	if _, err := e.ec2.DeleteSnapshot(ctx, &ec2.DeleteSnapshotInput{SnapshotId: aws.String(snap)}); err != nil {
		t.Fatal(err)
	}
}

// seedEBSImage seeds an EBS-backed AMI from a 1.5 GiB sparse disk image with a marker.
func seedEBSImage(t *testing.T, e *testEnv, name string) (ami, img string) {
	t.Helper()
	img = filepath.Join(t.TempDir(), "disk.raw")
	if err := os.WriteFile(img, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, 3<<29); err != nil {
		t.Fatal(err)
	}
	writeAt(t, img, "seeded root", 1<<20)
	ami, err := e.srv.Seed(SeedImage{Name: name, EBS: true, Root: RootSource{Image: img}})
	if err != nil {
		t.Fatal(err)
	}
	return ami, img
}

func TestEBSSeedImage(t *testing.T) {
	e := startServer(t, Config{})
	ctx := ctxT(t)
	ami, img := seedEBSImage(t, e, "debian-12-amd64-ebs")
	if err := os.Remove(img); err != nil { // the snapshot is a copy
		t.Fatal(err)
	}
	di, err := e.ec2.DescribeImages(ctx, &ec2.DescribeImagesInput{Owners: []string{"amazon"}, Filters: []types.Filter{{Name: aws.String("name"), Values: []string{"debian-12-*"}}}})
	if err != nil || len(di.Images) != 1 {
		t.Fatalf("describe: %v %v", di, err)
	}
	im := di.Images[0]
	if aws.ToString(im.ImageId) != ami || im.RootDeviceType != types.DeviceTypeEbs || aws.ToString(im.RootDeviceName) != "/dev/xvda" ||
		im.VirtualizationType != types.VirtualizationTypeHvm || !aws.ToBool(im.EnaSupport) || im.BootMode != types.BootModeValuesUefiPreferred ||
		!aws.ToBool(im.Public) || aws.ToString(im.OwnerId) != amazonOwnerID {
		t.Fatalf("seeded image: %+v", im)
	}
	b := im.BlockDeviceMappings[0]
	snap := aws.ToString(b.Ebs.SnapshotId)
	if aws.ToInt32(b.Ebs.VolumeSize) != 8 || b.Ebs.VolumeType != types.VolumeTypeGp3 || !aws.ToBool(b.Ebs.DeleteOnTermination) || snap == "" {
		t.Fatalf("root mapping: %+v", b.Ebs)
	}
	// amazon's snapshot is public: not among the caller's, shown by id or owner, and
	// neither the caller's to delete nor to tag.
	ds, err := e.ec2.DescribeSnapshots(ctx, &ec2.DescribeSnapshotsInput{})
	if err != nil || len(ds.Snapshots) != 0 {
		t.Fatalf("own snapshots: %v %v", ds, err)
	}
	ds, err = e.ec2.DescribeSnapshots(ctx, &ec2.DescribeSnapshotsInput{OwnerIds: []string{"amazon"}})
	if err != nil || len(ds.Snapshots) != 1 || aws.ToString(ds.Snapshots[0].SnapshotId) != snap || aws.ToInt32(ds.Snapshots[0].VolumeSize) != 2 ||
		ds.Snapshots[0].State != types.SnapshotStateCompleted {
		t.Fatalf("amazon's snapshots: %+v %v", ds, err)
	}
	if ds, err = e.ec2.DescribeSnapshots(ctx, &ec2.DescribeSnapshotsInput{SnapshotIds: []string{snap}}); err != nil || len(ds.Snapshots) != 1 {
		t.Fatalf("by id: %v %v", ds, err)
	}
	_, err = e.ec2.DeleteSnapshot(ctx, &ec2.DeleteSnapshotInput{SnapshotId: aws.String(snap)})
	wantCode(t, err, "UnauthorizedOperation")
	_, err = e.ec2.CreateTags(ctx, &ec2.CreateTagsInput{Resources: []string{snap}, Tags: []types.Tag{{Key: aws.String("k"), Value: aws.String("v")}}})
	wantCode(t, err, "InvalidSnapshot.NotFound")
	// A volume may be made of it (it is public), with the image's data.
	cv, err := e.ec2.CreateVolume(ctx, &ec2.CreateVolumeInput{AvailabilityZone: aws.String(e.srv.Region() + "b"), SnapshotId: aws.String(snap)})
	if err != nil {
		t.Fatal(err)
	}
	e.srv.st.mu.Lock()
	path := e.srv.ebs().volumes[aws.ToString(cv.VolumeId)].path
	e.srv.st.mu.Unlock()
	if got := readAt(t, path, 11, 1<<20); got != "seeded root" {
		t.Fatalf("volume of the seeded snapshot reads %q", got)
	}
	if _, err := e.srv.Seed(SeedImage{Name: "dir-ebs", EBS: true, Root: RootSource{Dir: t.TempDir()}}); err == nil {
		t.Fatal("an EBS seed from a directory was accepted")
	}
}

func TestEBSRunStopStart(t *testing.T) {
	l := &fileLauncher{}
	e := startServer(t, Config{Launcher: l, PendingTime: -1})
	ctx := ctxT(t)
	ami, _ := seedEBSImage(t, e, "cloud-ebs")
	userSnap := snapshotOf(t, e, 1, "user data")
	run := func(in ec2.RunInstancesInput) (*ec2.RunInstancesOutput, error) {
		in.ImageId, in.MinCount, in.MaxCount = aws.String(ami), aws.Int32(1), aws.Int32(1)
		if in.InstanceType == "" {
			in.InstanceType = types.InstanceTypeM5dLarge
		}
		return e.ec2.RunInstances(ctx, &in)
	}
	f := aws.Bool(false)

	t.Run("errors", func(t *testing.T) {
		_, err := run(ec2.RunInstancesInput{BlockDeviceMappings: []types.BlockDeviceMapping{ebsMapping("/dev/xvda", "", 1, nil)}})
		wantCode(t, err, "InvalidBlockDeviceMapping") // smaller than the 2 GiB snapshot
		_, err = run(ec2.RunInstancesInput{BlockDeviceMappings: []types.BlockDeviceMapping{{DeviceName: aws.String("/dev/xvda"), NoDevice: aws.String("")}}})
		wantCode(t, err, "InvalidBlockDeviceMapping")
		_, err = run(ec2.RunInstancesInput{BlockDeviceMappings: []types.BlockDeviceMapping{ebsMapping("/dev/sdf", "snap-0123456789abcdef0", 0, nil)}})
		wantCode(t, err, "InvalidSnapshot.NotFound")
		_, err = run(ec2.RunInstancesInput{BlockDeviceMappings: []types.BlockDeviceMapping{ebsMapping("/dev/sdf", "", 0, f)}})
		wantCode(t, err, "InvalidBlockDeviceMapping")                                   // neither size nor snapshot
		m3, err := run(ec2.RunInstancesInput{InstanceType: types.InstanceTypeM3Medium}) // hvm on m3 is fine; paravirtual is not
		if err != nil {
			t.Fatalf("EBS-backed hvm AMI on m3.medium: %v", err)
		}
		m3id := aws.ToString(m3.Instances[0].InstanceId)
		waitInstance(t, e, m3id, types.InstanceStateNameRunning)
		if s := l.lastSpec(t, m3id); len(s.Volumes) != 1 || s.Volumes[0].NVMe {
			t.Fatalf("m3.medium (Xen) volumes: %+v", s.Volumes)
		}
		if _, err := e.ec2.TerminateInstances(ctx, &ec2.TerminateInstancesInput{InstanceIds: []string{m3id}}); err != nil {
			t.Fatal(err)
		}
		waitInstance(t, e, m3id, types.InstanceStateNameTerminated)
		// An AMI without ENA does not run on ENA-only (Nitro) types; one with the uefi
		// boot mode needs a Nitro type.
		o, err := e.ec2.RegisterImage(ctx, &ec2.RegisterImageInput{Name: aws.String("no-ena"), RootDeviceName: aws.String("/dev/xvda"),
			Architecture: types.ArchitectureValuesX8664, VirtualizationType: aws.String("hvm"), BootMode: types.BootModeValuesUefi,
			BlockDeviceMappings: []types.BlockDeviceMapping{ebsMapping("/dev/xvda", userSnap, 0, nil)}})
		if err != nil {
			t.Fatal(err)
		}
		_, err = e.ec2.RunInstances(ctx, &ec2.RunInstancesInput{ImageId: o.ImageId, InstanceType: types.InstanceTypeT3Micro, MinCount: aws.Int32(1), MaxCount: aws.Int32(1)})
		wantCode(t, err, "InvalidParameterCombination")
		_, err = e.ec2.RunInstances(ctx, &ec2.RunInstancesInput{ImageId: o.ImageId, InstanceType: types.InstanceTypeT2Micro, MinCount: aws.Int32(1), MaxCount: aws.Int32(1)})
		wantCode(t, err, "Unsupported")
	})

	out, err := run(ec2.RunInstancesInput{
		BlockDeviceMappings: []types.BlockDeviceMapping{ebsMapping("/dev/xvda", "", 10, nil), ebsMapping("/dev/sdf", "", 2, f), ebsMapping("/dev/sdg", userSnap, 0, nil)},
		TagSpecifications: []types.TagSpecification{{ResourceType: types.ResourceTypeVolume, Tags: []types.Tag{{Key: aws.String("Name"), Value: aws.String("build")}}},
			{ResourceType: types.ResourceTypeInstance, Tags: []types.Tag{{Key: aws.String("Name"), Value: aws.String("builder")}}}}})
	if err != nil {
		t.Fatal(err)
	}
	id := aws.ToString(out.Instances[0].InstanceId)
	in := waitInstance(t, e, id, types.InstanceStateNameRunning)
	if in.RootDeviceType != types.DeviceTypeEbs || aws.ToString(in.RootDeviceName) != "/dev/xvda" || len(in.BlockDeviceMappings) != 3 || !aws.ToBool(in.EnaSupport) {
		t.Fatalf("instance: %+v", in)
	}
	bdm := map[string]types.EbsInstanceBlockDevice{}
	for _, b := range in.BlockDeviceMappings {
		bdm[aws.ToString(b.DeviceName)] = *b.Ebs
		if b.Ebs.Status != types.AttachmentStatusAttached || b.Ebs.AttachTime == nil {
			t.Fatalf("mapping %s: %+v", aws.ToString(b.DeviceName), b.Ebs)
		}
	}
	if aws.ToString(in.BlockDeviceMappings[0].DeviceName) != "/dev/xvda" || !aws.ToBool(bdm["/dev/xvda"].DeleteOnTermination) ||
		aws.ToBool(bdm["/dev/sdf"].DeleteOnTermination) || !aws.ToBool(bdm["/dev/sdg"].DeleteOnTermination) {
		t.Fatalf("block device mapping: %+v", bdm)
	}
	rootVol := aws.ToString(bdm["/dev/xvda"].VolumeId)

	// What the launcher got: the root from the snapshot grown to 10 GiB, the two
	// other volumes, and m5d's 75 GiB NVMe instance store, all NVMe.
	spec := l.lastSpec(t, id)
	if spec.Root != (RootSource{}) || len(spec.Volumes) != 4 {
		t.Fatalf("spec: root %+v volumes %+v", spec.Root, spec.Volumes)
	}
	v0 := spec.Volumes[0]
	if !v0.Root || v0.VolumeID != rootVol || v0.SizeGiB != 10 || !v0.NVMe || v0.DeviceName != "/dev/xvda" {
		t.Fatalf("root volume: %+v", v0)
	}
	if got := readAt(t, v0.Path, 11, 1<<20); got != "seeded root" {
		t.Fatalf("root volume reads %q, not the seeded image", got)
	}
	if v := spec.Volumes[2]; v.DeviceName != "/dev/sdg" || readAt(t, v.Path, 9, 1<<20) != "user data" {
		t.Fatalf("sdg: %+v", v)
	}
	store := spec.Volumes[3]
	if !store.InstanceStore || !store.NVMe || store.SizeGiB != 75 || store.VolumeID != "" {
		t.Fatalf("instance store: %+v", store)
	}
	dv, err := e.ec2.DescribeVolumes(ctx, &ec2.DescribeVolumesInput{Filters: []types.Filter{
		{Name: aws.String("attachment.instance-id"), Values: []string{id}}, {Name: aws.String("tag:Name"), Values: []string{"build"}},
		{Name: aws.String("status"), Values: []string{"in-use"}}}})
	if err != nil || len(dv.Volumes) != 3 {
		t.Fatalf("volumes of the instance: %+v %v", dv, err)
	}
	dv, err = e.ec2.DescribeVolumes(ctx, &ec2.DescribeVolumesInput{Filters: []types.Filter{{Name: aws.String("snapshot-id"), Values: []string{userSnap}}}})
	if err != nil || len(dv.Volumes) != 1 || aws.ToString(dv.Volumes[0].Attachments[0].Device) != "/dev/sdg" {
		t.Fatalf("by snapshot: %+v %v", dv, err)
	}
	dt, err := e.ec2.DescribeTags(ctx, &ec2.DescribeTagsInput{Filters: []types.Filter{{Name: aws.String("resource-type"), Values: []string{"volume"}}}})
	if err != nil || len(dt.Tags) != 3 {
		t.Fatalf("volume tags: %+v %v", dt, err)
	}
	if _, err := e.ec2.CreateTags(ctx, &ec2.CreateTagsInput{Resources: []string{rootVol, userSnap}, Tags: []types.Tag{{Key: aws.String("role"), Value: aws.String("root")}}}); err != nil {
		t.Fatal(err)
	}
	dv, err = e.ec2.DescribeVolumes(ctx, &ec2.DescribeVolumesInput{Filters: []types.Filter{{Name: aws.String("tag:role"), Values: []string{"root"}}}})
	if err != nil || len(dv.Volumes) != 1 || aws.ToString(dv.Volumes[0].VolumeId) != rootVol {
		t.Fatalf("by tag: %+v %v", dv, err)
	}
	ds, err := e.ec2.DescribeSnapshots(ctx, &ec2.DescribeSnapshotsInput{Filters: []types.Filter{{Name: aws.String("tag:role"), Values: []string{"root"}},
		{Name: aws.String("owner-id"), Values: []string{e.srv.AccountID()}}}})
	if err != nil || len(ds.Snapshots) != 1 {
		t.Fatalf("snapshot by tag: %+v %v", ds, err)
	}
	_, err = e.ec2.CreateTags(ctx, &ec2.CreateTagsInput{Resources: []string{"vol-0123456789abcdef0"}, Tags: []types.Tag{{Key: aws.String("k"), Value: aws.String("v")}}})
	wantCode(t, err, "InvalidVolume.NotFound")
	di, err := e.ec2.DescribeInstances(ctx, &ec2.DescribeInstancesInput{Filters: []types.Filter{{Name: aws.String("block-device-mapping.volume-id"), Values: []string{rootVol}}}})
	if err != nil || len(di.Reservations) != 1 {
		t.Fatalf("instance by volume: %+v %v", di, err)
	}

	// Hot-plug: the running instance's machine gets the volume; the root stays.
	cv, err := e.ec2.CreateVolume(ctx, &ec2.CreateVolumeInput{AvailabilityZone: in.Placement.AvailabilityZone, Size: aws.Int32(1)})
	if err != nil {
		t.Fatal(err)
	}
	hot := aws.ToString(cv.VolumeId)
	waitVolume(t, e, hot, false)
	if _, err := e.ec2.AttachVolume(ctx, &ec2.AttachVolumeInput{VolumeId: aws.String(hot), InstanceId: aws.String(id), Device: aws.String("/dev/sdh")}); err != nil {
		t.Fatal(err)
	}
	waitVolume(t, e, hot, true)
	l.mu.Lock()
	if len(l.attached) != 1 || l.attached[0].VolumeID != hot || !l.attached[0].NVMe || l.attached[0].DeviceName != "/dev/sdh" {
		t.Fatalf("hot-plugged: %+v", l.attached)
	}
	l.mu.Unlock()
	_, err = e.ec2.DetachVolume(ctx, &ec2.DetachVolumeInput{VolumeId: aws.String(rootVol)})
	wantCode(t, err, "OperationNotPermitted")
	_, err = e.ec2.DetachVolume(ctx, &ec2.DetachVolumeInput{VolumeId: aws.String(hot), InstanceId: aws.String("i-0123456789abcdef0")})
	wantCode(t, err, "InvalidAttachment.NotFound")
	if _, err := e.ec2.DetachVolume(ctx, &ec2.DetachVolumeInput{VolumeId: aws.String(hot)}); err != nil {
		t.Fatal(err)
	}
	waitVolume(t, e, hot, false)
	l.mu.Lock()
	if len(l.detached) != 1 || l.detached[0].VolumeID != hot {
		t.Fatalf("hot-unplugged: %+v", l.detached)
	}
	l.mu.Unlock()

	// Stop: the machine goes, the volumes stay in use, the instance store goes.
	_, err = e.ec2.StartInstances(ctx, &ec2.StartInstancesInput{InstanceIds: []string{"i-0123456789abcdef0"}})
	wantCode(t, err, "InvalidInstanceID.NotFound")
	so, err := e.ec2.StopInstances(ctx, &ec2.StopInstancesInput{InstanceIds: []string{id}})
	if err != nil {
		t.Fatal(err)
	}
	if c := so.StoppingInstances[0]; c.PreviousState.Name != types.InstanceStateNameRunning || c.CurrentState.Name != types.InstanceStateNameStopping {
		t.Fatalf("stop change: %+v", c)
	}
	if err := ec2.NewInstanceStoppedWaiter(e.ec2, func(o *ec2.InstanceStoppedWaiterOptions) { o.MinDelay, o.MaxDelay = fastWait, fastWait }).
		Wait(ctx, &ec2.DescribeInstancesInput{InstanceIds: []string{id}}, time.Minute); err != nil {
		t.Fatal(err)
	}
	if st := waitInstance(t, e, id, types.InstanceStateNameStopped); len(st.BlockDeviceMappings) != 3 || st.StateReason == nil {
		t.Fatalf("stopped: %+v", st)
	}
	if l.running(id) {
		t.Fatal("the machine still runs after the stop")
	}
	if _, err := os.Stat(store.Path); !os.IsNotExist(err) {
		t.Fatalf("instance store file after stop: %v", err)
	}
	writeAt(t, v0.Path, "written before stop", 2<<20)
	if _, err := e.ec2.StopInstances(ctx, &ec2.StopInstancesInput{InstanceIds: []string{id}}); err != nil {
		t.Fatalf("stopping a stopped instance: %v", err)
	}
	// A volume attached while stopped is part of the next start (no hot-plug).
	if _, err := e.ec2.AttachVolume(ctx, &ec2.AttachVolumeInput{VolumeId: aws.String(hot), InstanceId: aws.String(id), Device: aws.String("/dev/sdh")}); err != nil {
		t.Fatal(err)
	}
	waitVolume(t, e, hot, true)

	sa, err := e.ec2.StartInstances(ctx, &ec2.StartInstancesInput{InstanceIds: []string{id}})
	if err != nil {
		t.Fatal(err)
	}
	if c := sa.StartingInstances[0]; c.PreviousState.Name != types.InstanceStateNameStopped || c.CurrentState.Name != types.InstanceStateNamePending {
		t.Fatalf("start change: %+v", c)
	}
	if err := ec2.NewInstanceRunningWaiter(e.ec2, func(o *ec2.InstanceRunningWaiterOptions) { o.MinDelay, o.MaxDelay = fastWait, fastWait }).
		Wait(ctx, &ec2.DescribeInstancesInput{InstanceIds: []string{id}}, time.Minute); err != nil {
		t.Fatal(err)
	}
	spec2 := l.lastSpec(t, id)
	if len(spec2.Volumes) != 5 || spec2.Volumes[0].Path != v0.Path || spec2.Volumes[3].VolumeID != hot || !spec2.Volumes[4].InstanceStore ||
		spec2.PrivateIP != "127.0.0.1" || spec2.AuthorizedKey != spec.AuthorizedKey || spec2.ImageID != ami {
		t.Fatalf("restart spec: %+v", spec2)
	}
	if got := readAt(t, spec2.Volumes[0].Path, 19, 2<<20); got != "written before stop" {
		t.Fatalf("root after start reads %q", got)
	}
	l.mu.Lock()
	if len(l.attached) != 1 {
		t.Fatalf("attach while stopped was hot-plugged: %+v", l.attached)
	}
	l.mu.Unlock()
	if _, err := e.ec2.StartInstances(ctx, &ec2.StartInstancesInput{InstanceIds: []string{id}}); err != nil {
		t.Fatalf("starting a running instance: %v", err)
	}

	// Terminate: DeleteOnTermination volumes go, the others become available.
	if _, err := e.ec2.TerminateInstances(ctx, &ec2.TerminateInstancesInput{InstanceIds: []string{id}}); err != nil {
		t.Fatal(err)
	}
	if err := ec2.NewInstanceTerminatedWaiter(e.ec2, func(o *ec2.InstanceTerminatedWaiterOptions) { o.MinDelay, o.MaxDelay = fastWait, fastWait }).
		Wait(ctx, &ec2.DescribeInstancesInput{InstanceIds: []string{id}}, time.Minute); err != nil {
		t.Fatal(err)
	}
	dv, err = e.ec2.DescribeVolumes(ctx, &ec2.DescribeVolumesInput{})
	if err != nil {
		t.Fatal(err)
	}
	var left []string
	for _, v := range dv.Volumes {
		if v.State != types.VolumeStateAvailable {
			t.Fatalf("volume %s is %s after termination", aws.ToString(v.VolumeId), v.State)
		}
		left = append(left, aws.ToString(v.VolumeId))
	}
	if len(left) != 2 || !contains(left, hot) || !contains(left, aws.ToString(bdm["/dev/sdf"].VolumeId)) || contains(left, rootVol) {
		t.Fatalf("volumes after termination: %v (root %s)", left, rootVol)
	}
	for _, p := range []string{v0.Path, spec2.Volumes[4].Path} {
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			t.Fatalf("%s left after termination: %v", p, err)
		}
	}
	_, err = e.ec2.StartInstances(ctx, &ec2.StartInstancesInput{InstanceIds: []string{id}})
	wantCode(t, err, "IncorrectInstanceState")
	_, err = e.ec2.StopInstances(ctx, &ec2.StopInstancesInput{InstanceIds: []string{id}})
	wantCode(t, err, "IncorrectInstanceState")
}

func TestEBSStopStates(t *testing.T) {
	l := &fileLauncher{}
	e := startServer(t, Config{Launcher: l, PendingTime: -1})
	ctx := ctxT(t)
	ami, _ := seedEBSImage(t, e, "cloud-ebs")
	isAMI, err := e.srv.Seed(SeedImage{Name: "lite-is", Root: RootSource{Dir: t.TempDir()}})
	if err != nil {
		t.Fatal(err)
	}
	r, err := e.ec2.RunInstances(ctx, &ec2.RunInstancesInput{ImageId: aws.String(isAMI), InstanceType: types.InstanceTypeM3Medium, MinCount: aws.Int32(1), MaxCount: aws.Int32(1)})
	if err != nil {
		t.Fatal(err)
	}
	isID := aws.ToString(r.Instances[0].InstanceId)
	waitInstance(t, e, isID, types.InstanceStateNameRunning)
	_, err = e.ec2.StopInstances(ctx, &ec2.StopInstancesInput{InstanceIds: []string{isID}})
	wantCode(t, err, "UnsupportedOperation")
	_, err = e.ec2.ModifyInstanceAttribute(ctx, &ec2.ModifyInstanceAttributeInput{InstanceId: aws.String(isID), EnaSupport: &types.AttributeBooleanValue{Value: aws.Bool(true)}})
	wantCode(t, err, "IncorrectInstanceState")
	if in := waitInstance(t, e, isID, types.InstanceStateNameRunning); len(in.BlockDeviceMappings) != 0 || in.RootDeviceType != types.DeviceTypeInstanceStore {
		t.Fatalf("instance store-backed instance: %+v", in)
	}

	// Pending: not stoppable yet.
	hold := make(chan struct{})
	l.mu.Lock()
	l.hold = hold
	l.mu.Unlock()
	r, err = e.ec2.RunInstances(ctx, &ec2.RunInstancesInput{ImageId: aws.String(ami), InstanceType: types.InstanceTypeT3Micro, MinCount: aws.Int32(1), MaxCount: aws.Int32(1),
		BlockDeviceMappings: []types.BlockDeviceMapping{ebsMapping("/dev/xvda", "", 0, aws.Bool(false))}})
	if err != nil {
		t.Fatal(err)
	}
	id := aws.ToString(r.Instances[0].InstanceId)
	_, err = e.ec2.StopInstances(ctx, &ec2.StopInstancesInput{InstanceIds: []string{id}})
	wantCode(t, err, "IncorrectInstanceState")
	if !strings.Contains(err.Error(), "never reached the 'running' state") {
		t.Fatalf("stopping a pending instance: %v", err)
	}
	l.mu.Lock()
	l.hold = nil
	l.mu.Unlock()
	close(hold)
	waitInstance(t, e, id, types.InstanceStateNameRunning)
	// Stopping: not startable until stopped.
	holdStop := make(chan struct{})
	l.mu.Lock()
	l.holdStop = holdStop
	l.mu.Unlock()
	if _, err := e.ec2.StopInstances(ctx, &ec2.StopInstancesInput{InstanceIds: []string{id}}); err != nil {
		t.Fatal(err)
	}
	_, err = e.ec2.StartInstances(ctx, &ec2.StartInstancesInput{InstanceIds: []string{id}})
	wantCode(t, err, "IncorrectInstanceState")
	if _, err := e.ec2.StopInstances(ctx, &ec2.StopInstancesInput{InstanceIds: []string{id}}); err != nil {
		t.Fatalf("stopping a stopping instance: %v", err)
	}
	close(holdStop)
	in := waitInstance(t, e, id, types.InstanceStateNameStopped)
	root := aws.ToString(in.BlockDeviceMappings[0].Ebs.VolumeId)
	// Stopped, it takes what amazon-ebs sets before CreateImage, and a new type.
	for _, m := range []ec2.ModifyInstanceAttributeInput{
		{InstanceId: aws.String(id), EnaSupport: &types.AttributeBooleanValue{Value: aws.Bool(true)}},
		{InstanceId: aws.String(id), SriovNetSupport: &types.AttributeValue{Value: aws.String("simple")}},
		{InstanceId: aws.String(id), InstanceType: &types.AttributeValue{Value: aws.String("m5.large")}},
	} {
		if _, err := e.ec2.ModifyInstanceAttribute(ctx, &m); err != nil {
			t.Fatal(err)
		}
	}
	_, err = e.ec2.ModifyInstanceAttribute(ctx, &ec2.ModifyInstanceAttributeInput{InstanceId: aws.String(id), InstanceType: &types.AttributeValue{Value: aws.String("m1.small")}})
	wantCode(t, err, "InvalidInstanceAttributeValue") // paravirtual only
	if a, err := e.ec2.DescribeInstanceAttribute(ctx, &ec2.DescribeInstanceAttributeInput{InstanceId: aws.String(id), Attribute: types.InstanceAttributeNameSriovNetSupport}); err != nil ||
		aws.ToString(a.SriovNetSupport.Value) != "simple" {
		t.Fatalf("sriovNetSupport: %+v %v", a, err)
	}
	if in := waitInstance(t, e, id, types.InstanceStateNameStopped); in.InstanceType != types.InstanceTypeM5Large {
		t.Fatalf("instance type after modify: %s", in.InstanceType)
	}
	// A stopped instance terminates at once; its root (DeleteOnTermination false) stays.
	if _, err := e.ec2.TerminateInstances(ctx, &ec2.TerminateInstancesInput{InstanceIds: []string{id}}); err != nil {
		t.Fatal(err)
	}
	waitInstance(t, e, id, types.InstanceStateNameTerminated)
	dv, err := e.ec2.DescribeVolumes(ctx, &ec2.DescribeVolumesInput{VolumeIds: []string{root}})
	if err != nil || dv.Volumes[0].State != types.VolumeStateAvailable || len(dv.Volumes[0].Attachments) != 0 {
		t.Fatalf("root after termination: %+v %v", dv, err)
	}
	// A volume made from the kept root reads the seeded image: the root was a copy of it.
	if _, err := e.ec2.DeleteVolume(ctx, &ec2.DeleteVolumeInput{VolumeId: aws.String(root)}); err != nil {
		t.Fatal(err)
	}

	// Terminated while stopping: the stop finishes as a termination.
	r, err = e.ec2.RunInstances(ctx, &ec2.RunInstancesInput{ImageId: aws.String(ami), InstanceType: types.InstanceTypeC5dLarge, MinCount: aws.Int32(1), MaxCount: aws.Int32(1)})
	if err != nil {
		t.Fatal(err)
	}
	id = aws.ToString(r.Instances[0].InstanceId)
	waitInstance(t, e, id, types.InstanceStateNameRunning)
	if s := l.lastSpec(t, id); len(s.Volumes) != 2 || s.Volumes[1].SizeGiB != 50 {
		t.Fatalf("c5d volumes: %+v", s.Volumes)
	}
	holdStop = make(chan struct{})
	l.mu.Lock()
	l.holdStop = holdStop
	l.mu.Unlock()
	if _, err := e.ec2.StopInstances(ctx, &ec2.StopInstancesInput{InstanceIds: []string{id}}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.ec2.TerminateInstances(ctx, &ec2.TerminateInstancesInput{InstanceIds: []string{id}}); err != nil {
		t.Fatal(err)
	}
	if in := waitInstance(t, e, id, types.InstanceStateNameShuttingDown); len(in.BlockDeviceMappings) != 1 {
		t.Fatalf("shutting down: %+v", in)
	}
	close(holdStop)
	waitInstance(t, e, id, types.InstanceStateNameTerminated)
	if f := ebsFiles(t, e); len(f) != 1 { // the seeded snapshot
		t.Fatalf("EBS files left: %v", f)
	}
}

func TestEBSCreateAndCopyImage(t *testing.T) {
	l := &fileLauncher{}
	e := startServer(t, Config{Launcher: l, PendingTime: 50 * time.Millisecond})
	ctx := ctxT(t)
	ami, _ := seedEBSImage(t, e, "cloud-ebs")
	out, err := e.ec2.RunInstances(ctx, &ec2.RunInstancesInput{ImageId: aws.String(ami), InstanceType: types.InstanceTypeM5dLarge, MinCount: aws.Int32(1), MaxCount: aws.Int32(1),
		BlockDeviceMappings: []types.BlockDeviceMapping{ebsMapping("/dev/sdf", "", 1, aws.Bool(false))}})
	if err != nil {
		t.Fatal(err)
	}
	id := aws.ToString(out.Instances[0].InstanceId)
	waitInstance(t, e, id, types.InstanceStateNameRunning)
	rootPath := l.lastSpec(t, id).Volumes[0].Path
	writeAt(t, rootPath, "provisioned", 3<<20)

	_, err = e.ec2.CreateImage(ctx, &ec2.CreateImageInput{InstanceId: aws.String("i-0123456789abcdef0"), Name: aws.String("x-built")})
	wantCode(t, err, "InvalidInstanceID.NotFound")
	_, err = e.ec2.CreateImage(ctx, &ec2.CreateImageInput{InstanceId: aws.String(id), Name: aws.String("too-small"),
		BlockDeviceMappings: []types.BlockDeviceMapping{ebsMapping("/dev/xvda", "", 4, nil)}})
	wantCode(t, err, "InvalidBlockDeviceMapping")
	ci, err := e.ec2.CreateImage(ctx, &ec2.CreateImageInput{InstanceId: aws.String(id), Name: aws.String("built"), NoReboot: aws.Bool(true),
		BlockDeviceMappings: []types.BlockDeviceMapping{ebsMapping("/dev/xvda", "", 12, aws.Bool(true)), ebsMapping("/dev/sdk", "", 5, nil)},
		TagSpecifications:   []types.TagSpecification{{ResourceType: types.ResourceTypeSnapshot, Tags: []types.Tag{{Key: aws.String("of"), Value: aws.String("built")}}}}})
	if err != nil {
		t.Fatal(err)
	}
	built := aws.ToString(ci.ImageId)
	_, err = e.ec2.CreateImage(ctx, &ec2.CreateImageInput{InstanceId: aws.String(id), Name: aws.String("built")})
	wantCode(t, err, "InvalidAMIName.Duplicate")
	if err := ec2.NewImageAvailableWaiter(e.ec2, func(o *ec2.ImageAvailableWaiterOptions) { o.MinDelay, o.MaxDelay = fastWait, fastWait }).
		Wait(ctx, &ec2.DescribeImagesInput{ImageIds: []string{built}}, time.Minute); err != nil {
		t.Fatal(err)
	}
	di, err := e.ec2.DescribeImages(ctx, &ec2.DescribeImagesInput{ImageIds: []string{built}})
	if err != nil {
		t.Fatal(err)
	}
	im := di.Images[0]
	if im.RootDeviceType != types.DeviceTypeEbs || !aws.ToBool(im.EnaSupport) || im.BootMode != types.BootModeValuesUefiPreferred || len(im.BlockDeviceMappings) != 3 ||
		aws.ToInt32(im.BlockDeviceMappings[0].Ebs.VolumeSize) != 12 || aws.ToBool(im.BlockDeviceMappings[1].Ebs.DeleteOnTermination) ||
		aws.ToString(im.BlockDeviceMappings[2].DeviceName) != "/dev/sdk" || aws.ToInt32(im.BlockDeviceMappings[2].Ebs.VolumeSize) != 5 {
		t.Fatalf("created image: %+v", im)
	}
	ds, err := e.ec2.DescribeSnapshots(ctx, &ec2.DescribeSnapshotsInput{OwnerIds: []string{"self"}, Filters: []types.Filter{{Name: aws.String("tag:of"), Values: []string{"built"}}}})
	if err != nil || len(ds.Snapshots) != 2 {
		t.Fatalf("CreateImage's snapshots: %+v %v", ds, err)
	}
	// An instance of the new AMI has what was written to the instance's root.
	o2, err := e.ec2.RunInstances(ctx, &ec2.RunInstancesInput{ImageId: aws.String(built), InstanceType: types.InstanceTypeT3Micro, MinCount: aws.Int32(1), MaxCount: aws.Int32(1)})
	if err != nil {
		t.Fatal(err)
	}
	id2 := aws.ToString(o2.Instances[0].InstanceId)
	waitInstance(t, e, id2, types.InstanceStateNameRunning)
	if got := readAt(t, l.lastSpec(t, id2).Volumes[0].Path, 11, 3<<20); got != "provisioned" {
		t.Fatalf("root of the created AMI's instance reads %q", got)
	}

	// CopyImage to another region copies the snapshots there.
	eu := ec2Client(e.srv, testCreds, "eu-west-1")
	cp, err := eu.CopyImage(ctx, &ec2.CopyImageInput{SourceImageId: aws.String(built), SourceRegion: aws.String(e.srv.Region()), Name: aws.String("built-eu")})
	if err != nil {
		t.Fatal(err)
	}
	if err := ec2.NewImageAvailableWaiter(eu, func(o *ec2.ImageAvailableWaiterOptions) { o.MinDelay, o.MaxDelay = fastWait, fastWait }).
		Wait(ctx, &ec2.DescribeImagesInput{ImageIds: []string{aws.ToString(cp.ImageId)}}, time.Minute); err != nil {
		t.Fatal(err)
	}
	di, err = eu.DescribeImages(ctx, &ec2.DescribeImagesInput{ImageIds: []string{aws.ToString(cp.ImageId)}})
	if err != nil {
		t.Fatal(err)
	}
	euSnap := aws.ToString(di.Images[0].BlockDeviceMappings[0].Ebs.SnapshotId)
	if ds, err := eu.DescribeSnapshots(ctx, &ec2.DescribeSnapshotsInput{SnapshotIds: []string{euSnap}}); err != nil || ds.Snapshots[0].State != types.SnapshotStateCompleted {
		t.Fatalf("copied snapshot %s: %+v %v", euSnap, ds, err)
	}
	if _, err := e.ec2.DescribeSnapshots(ctx, &ec2.DescribeSnapshotsInput{SnapshotIds: []string{euSnap}}); err == nil {
		t.Fatalf("eu-west-1's snapshot %s is visible in %s", euSnap, e.srv.Region())
	}

	// Deregistering leaves the snapshots, which may then be deleted.
	if _, err := e.ec2.DeregisterImage(ctx, &ec2.DeregisterImageInput{ImageId: aws.String(built)}); err != nil {
		t.Fatal(err)
	}
	for _, sn := range ds.Snapshots {
		if _, err := e.ec2.DeleteSnapshot(ctx, &ec2.DeleteSnapshotInput{SnapshotId: sn.SnapshotId}); err != nil {
			t.Fatal(err)
		}
	}
	_, err = e.ec2.DeleteSnapshot(ctx, &ec2.DeleteSnapshotInput{SnapshotId: aws.String(euSnap)})
	wantCode(t, err, "InvalidSnapshot.NotFound") // another region's
	if _, err := eu.DeleteSnapshot(ctx, &ec2.DeleteSnapshotInput{SnapshotId: aws.String(euSnap)}); err == nil {
		t.Fatal("deleted a snapshot its AMI still uses")
	} else {
		wantCode(t, err, "InvalidSnapshot.InUse")
	}

	isAMI, err := e.srv.Seed(SeedImage{Name: "lite-is", Root: RootSource{Dir: t.TempDir()}})
	if err != nil {
		t.Fatal(err)
	}
	r, err := e.ec2.RunInstances(ctx, &ec2.RunInstancesInput{ImageId: aws.String(isAMI), InstanceType: types.InstanceTypeM3Medium, MinCount: aws.Int32(1), MaxCount: aws.Int32(1)})
	if err != nil {
		t.Fatal(err)
	}
	_, err = e.ec2.CreateImage(ctx, &ec2.CreateImageInput{InstanceId: r.Instances[0].InstanceId, Name: aws.String("from-instance-store")})
	wantCode(t, err, "InvalidParameterValue")
}

func TestEBSInstanceTypes(t *testing.T) {
	e := startServer(t, Config{})
	out, err := e.ec2.DescribeInstanceTypes(ctxT(t), &ec2.DescribeInstanceTypesInput{InstanceTypes: []types.InstanceType{
		types.InstanceTypeM5dLarge, types.InstanceTypeT3Micro, types.InstanceTypeT2Micro, types.InstanceTypeM3Medium}})
	if err != nil {
		t.Fatal(err)
	}
	got := map[types.InstanceType]types.InstanceTypeInfo{}
	for _, it := range out.InstanceTypes {
		got[it.InstanceType] = it
	}
	m5d, t3, t2 := got[types.InstanceTypeM5dLarge], got[types.InstanceTypeT3Micro], got[types.InstanceTypeT2Micro]
	if m5d.EbsInfo.NvmeSupport != types.EbsNvmeSupportRequired || m5d.NetworkInfo.EnaSupport != types.EnaSupportRequired ||
		m5d.InstanceStorageInfo == nil || aws.ToInt64(m5d.InstanceStorageInfo.TotalSizeInGB) != 75 || !aws.ToBool(m5d.InstanceStorageSupported) {
		t.Fatalf("m5d.large: %+v", m5d)
	}
	if t3.InstanceStorageInfo != nil || t3.EbsInfo.NvmeSupport != types.EbsNvmeSupportRequired || t3.Hypervisor != types.InstanceTypeHypervisorNitro {
		t.Fatalf("t3.micro: %+v", t3)
	}
	if t2.EbsInfo.NvmeSupport != types.EbsNvmeSupportUnsupported || t2.Hypervisor != types.InstanceTypeHypervisorXen || t2.NetworkInfo.EnaSupport != types.EnaSupportUnsupported {
		t.Fatalf("t2.micro: %+v", t2)
	}
}
