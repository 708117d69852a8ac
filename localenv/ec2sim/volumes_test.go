package ec2sim

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
)

// addInstance puts an instance straight into the state (the EBS actions only read its
// region, zone, state and root device), so these tests need no launcher.
func addInstance(t *testing.T, e *testEnv, zone string, state int) string {
	t.Helper()
	st := e.srv.st
	st.mu.Lock()
	defer st.mu.Unlock()
	in := &instance{id: newID("i"), region: e.srv.Region(), zone: zone, state: state, rootDeviceName: "/dev/sda1", seq: st.next(), done: make(chan struct{})}
	close(in.done) // no launch in flight: Close's teardown has nothing to wait for
	st.instances[in.id] = in
	return in.id
}

func ebsFiles(t *testing.T, e *testEnv) []string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(e.srv.cfg.DataDir, "ebs", "*"))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

const fastWait = 20 * time.Millisecond

func TestEBSVolumeLifecycle(t *testing.T) {
	e := startServer(t, Config{})
	ctx := ctxT(t)
	zone := e.srv.Region() + "a"
	cv, err := e.ec2.CreateVolume(ctx, &ec2.CreateVolumeInput{AvailabilityZone: aws.String(zone), Size: aws.Int32(2), VolumeType: types.VolumeTypeGp3,
		TagSpecifications: []types.TagSpecification{{ResourceType: types.ResourceTypeVolume, Tags: []types.Tag{{Key: aws.String("Name"), Value: aws.String("scratch")}}}}})
	if err != nil {
		t.Fatal(err)
	}
	vol := aws.ToString(cv.VolumeId)
	if cv.State != types.VolumeStateCreating || aws.ToInt32(cv.Iops) != 3000 || aws.ToInt32(cv.Throughput) != 125 {
		t.Fatalf("new volume: state %s iops %d throughput %d", cv.State, aws.ToInt32(cv.Iops), aws.ToInt32(cv.Throughput))
	}
	// The backing file is sparse: 2 GiB long, (almost) nothing allocated.
	fi, err := os.Stat(filepath.Join(e.srv.cfg.DataDir, "ebs", vol+".img"))
	if err != nil || fi.Size() != 2<<30 {
		t.Fatalf("backing file: %v %v", fi, err)
	}
	if err := ec2.NewVolumeAvailableWaiter(e.ec2, func(o *ec2.VolumeAvailableWaiterOptions) { o.MinDelay, o.MaxDelay = fastWait, fastWait }).
		Wait(ctx, &ec2.DescribeVolumesInput{VolumeIds: []string{vol}}, time.Minute); err != nil {
		t.Fatal(err)
	}

	inst := addInstance(t, e, zone, stateRunning)
	other := addInstance(t, e, e.srv.Region()+"b", stateRunning)
	pending := addInstance(t, e, zone, statePending)
	_, err = e.ec2.AttachVolume(ctx, &ec2.AttachVolumeInput{VolumeId: aws.String(vol), InstanceId: aws.String(inst), Device: aws.String("/dev/bogus")})
	wantCode(t, err, "InvalidParameterValue")
	_, err = e.ec2.AttachVolume(ctx, &ec2.AttachVolumeInput{VolumeId: aws.String(vol), InstanceId: aws.String(inst), Device: aws.String("/dev/sda1")})
	wantCode(t, err, "InvalidParameterValue")
	_, err = e.ec2.AttachVolume(ctx, &ec2.AttachVolumeInput{VolumeId: aws.String(vol), InstanceId: aws.String(other), Device: aws.String("/dev/sdf")})
	wantCode(t, err, "InvalidVolume.ZoneMismatch")
	_, err = e.ec2.AttachVolume(ctx, &ec2.AttachVolumeInput{VolumeId: aws.String(vol), InstanceId: aws.String(pending), Device: aws.String("/dev/sdf")})
	wantCode(t, err, "IncorrectState")
	_, err = e.ec2.AttachVolume(ctx, &ec2.AttachVolumeInput{VolumeId: aws.String(vol), InstanceId: aws.String("i-0123456789abcdef0"), Device: aws.String("/dev/sdf")})
	wantCode(t, err, "InvalidInstanceID.NotFound")
	_, err = e.ec2.DetachVolume(ctx, &ec2.DetachVolumeInput{VolumeId: aws.String(vol)})
	wantCode(t, err, "IncorrectState")

	at, err := e.ec2.AttachVolume(ctx, &ec2.AttachVolumeInput{VolumeId: aws.String(vol), InstanceId: aws.String(inst), Device: aws.String("/dev/sdf")})
	if err != nil {
		t.Fatal(err)
	}
	if at.State != types.VolumeAttachmentStateAttaching {
		t.Fatalf("attach state %s", at.State)
	}
	_, err = e.ec2.AttachVolume(ctx, &ec2.AttachVolumeInput{VolumeId: aws.String(vol), InstanceId: aws.String(inst), Device: aws.String("/dev/sdg")})
	wantCode(t, err, "VolumeInUse")
	_, err = e.ec2.DeleteVolume(ctx, &ec2.DeleteVolumeInput{VolumeId: aws.String(vol)})
	wantCode(t, err, "VolumeInUse")
	// A second volume may not take the same device.
	cv2, err := e.ec2.CreateVolume(ctx, &ec2.CreateVolumeInput{AvailabilityZone: aws.String(zone), Size: aws.Int32(1)})
	if err != nil {
		t.Fatal(err)
	}
	vol2 := aws.ToString(cv2.VolumeId)
	_, err = e.ec2.AttachVolume(ctx, &ec2.AttachVolumeInput{VolumeId: aws.String(vol2), InstanceId: aws.String(inst), Device: aws.String("/dev/sdg")})
	wantCode(t, err, "IncorrectState") // still creating
	if err := ec2.NewVolumeAvailableWaiter(e.ec2, func(o *ec2.VolumeAvailableWaiterOptions) { o.MinDelay, o.MaxDelay = fastWait, fastWait }).
		Wait(ctx, &ec2.DescribeVolumesInput{VolumeIds: []string{vol2}}, time.Minute); err != nil {
		t.Fatal(err)
	}
	_, err = e.ec2.AttachVolume(ctx, &ec2.AttachVolumeInput{VolumeId: aws.String(vol2), InstanceId: aws.String(inst), Device: aws.String("/dev/sdf")})
	wantCode(t, err, "InvalidParameterValue")

	if err := ec2.NewVolumeInUseWaiter(e.ec2, func(o *ec2.VolumeInUseWaiterOptions) { o.MinDelay, o.MaxDelay = fastWait, fastWait }).
		Wait(ctx, &ec2.DescribeVolumesInput{VolumeIds: []string{vol}}, time.Minute); err != nil {
		t.Fatal(err)
	}
	dv, err := e.ec2.DescribeVolumes(ctx, &ec2.DescribeVolumesInput{Filters: []types.Filter{
		{Name: aws.String("attachment.instance-id"), Values: []string{inst}}, {Name: aws.String("tag:Name"), Values: []string{"scr*"}}}})
	if err != nil {
		t.Fatal(err)
	}
	if len(dv.Volumes) != 1 || aws.ToString(dv.Volumes[0].VolumeId) != vol || dv.Volumes[0].Attachments[0].State != types.VolumeAttachmentStateAttached ||
		aws.ToString(dv.Volumes[0].Attachments[0].Device) != "/dev/sdf" {
		t.Fatalf("filtered volumes: %+v", dv.Volumes)
	}

	if _, err := e.ec2.DetachVolume(ctx, &ec2.DetachVolumeInput{VolumeId: aws.String(vol)}); err != nil {
		t.Fatal(err)
	}
	if err := ec2.NewVolumeAvailableWaiter(e.ec2, func(o *ec2.VolumeAvailableWaiterOptions) { o.MinDelay, o.MaxDelay = fastWait, fastWait }).
		Wait(ctx, &ec2.DescribeVolumesInput{VolumeIds: []string{vol}}, time.Minute); err != nil {
		t.Fatal(err)
	}
	// Force detaches at once.
	if _, err := e.ec2.AttachVolume(ctx, &ec2.AttachVolumeInput{VolumeId: aws.String(vol2), InstanceId: aws.String(inst), Device: aws.String("/dev/sdh")}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.ec2.DetachVolume(ctx, &ec2.DetachVolumeInput{VolumeId: aws.String(vol2), Force: aws.Bool(true)}); err != nil {
		t.Fatal(err)
	}
	dv, err = e.ec2.DescribeVolumes(ctx, &ec2.DescribeVolumesInput{Filters: []types.Filter{{Name: aws.String("status"), Values: []string{"available"}}}, MaxResults: aws.Int32(5)})
	if err != nil || len(dv.Volumes) != 2 {
		t.Fatalf("available volumes after detach: %v %v", dv, err)
	}
	// Paging: one per page.
	var seen []string
	pg := ec2.NewDescribeVolumesPaginator(e.ec2, &ec2.DescribeVolumesInput{MaxResults: aws.Int32(1)})
	for pg.HasMorePages() {
		out, err := pg.NextPage(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, v := range out.Volumes {
			seen = append(seen, aws.ToString(v.VolumeId))
		}
	}
	if len(seen) != 2 || seen[0] != vol || seen[1] != vol2 {
		t.Fatalf("paged volumes %v", seen)
	}

	for _, v := range []string{vol, vol2} {
		if _, err := e.ec2.DeleteVolume(ctx, &ec2.DeleteVolumeInput{VolumeId: aws.String(v)}); err != nil {
			t.Fatal(err)
		}
	}
	_, err = e.ec2.DescribeVolumes(ctx, &ec2.DescribeVolumesInput{VolumeIds: []string{vol}})
	wantCode(t, err, "InvalidVolume.NotFound")
	if f := ebsFiles(t, e); len(f) != 0 {
		t.Fatalf("files left after delete: %v", f)
	}
}

func TestEBSVolumeErrors(t *testing.T) {
	e := startServer(t, Config{})
	ctx := ctxT(t)
	zone := e.srv.Region() + "a"
	cases := []struct {
		name string
		in   ec2.CreateVolumeInput
		code string
	}{
		{"bad zone", ec2.CreateVolumeInput{AvailabilityZone: aws.String("mars-1a"), Size: aws.Int32(1)}, "InvalidZone.NotFound"},
		{"no size", ec2.CreateVolumeInput{AvailabilityZone: aws.String(zone)}, "MissingParameter"},
		{"bad type", ec2.CreateVolumeInput{AvailabilityZone: aws.String(zone), Size: aws.Int32(1), VolumeType: "gp9"}, "InvalidParameterValue"},
		{"gp2 too big", ec2.CreateVolumeInput{AvailabilityZone: aws.String(zone), Size: aws.Int32(16385)}, "InvalidParameterValue"},
		{"st1 too small", ec2.CreateVolumeInput{AvailabilityZone: aws.String(zone), Size: aws.Int32(100), VolumeType: types.VolumeTypeSt1}, "InvalidParameterValue"},
		{"io1 without iops", ec2.CreateVolumeInput{AvailabilityZone: aws.String(zone), Size: aws.Int32(10), VolumeType: types.VolumeTypeIo1}, "MissingParameter"},
		{"io1 ratio", ec2.CreateVolumeInput{AvailabilityZone: aws.String(zone), Size: aws.Int32(10), VolumeType: types.VolumeTypeIo1, Iops: aws.Int32(1000)}, "InvalidParameterValue"},
		{"gp3 iops", ec2.CreateVolumeInput{AvailabilityZone: aws.String(zone), Size: aws.Int32(100), VolumeType: types.VolumeTypeGp3, Iops: aws.Int32(20000)}, "InvalidParameterValue"},
		{"gp2 throughput", ec2.CreateVolumeInput{AvailabilityZone: aws.String(zone), Size: aws.Int32(10), Throughput: aws.Int32(200)}, "InvalidParameterCombination"},
		{"missing snapshot", ec2.CreateVolumeInput{AvailabilityZone: aws.String(zone), SnapshotId: aws.String("snap-0123456789abcdef0")}, "InvalidSnapshot.NotFound"},
		{"malformed snapshot", ec2.CreateVolumeInput{AvailabilityZone: aws.String(zone), SnapshotId: aws.String("snap-xyz")}, "InvalidSnapshotID.Malformed"},
	}
	for _, tc := range cases {
		_, err := e.ec2.CreateVolume(ctx, &tc.in)
		t.Run(tc.name, func(t *testing.T) { wantCode(t, err, tc.code) })
	}
	if _, err := e.ec2.CreateVolume(ctx, &ec2.CreateVolumeInput{AvailabilityZone: aws.String(zone), Size: aws.Int32(10), VolumeType: types.VolumeTypeIo2, Iops: aws.Int32(5000)}); err != nil {
		t.Fatalf("valid io2: %v", err)
	}
	_, err := e.ec2.DescribeVolumes(ctx, &ec2.DescribeVolumesInput{VolumeIds: []string{"vol-0123456789abcdef0"}})
	wantCode(t, err, "InvalidVolume.NotFound")
	_, err = e.ec2.DescribeVolumes(ctx, &ec2.DescribeVolumesInput{VolumeIds: []string{"vol-nope"}})
	wantCode(t, err, "InvalidVolumeID.Malformed")
	_, err = e.ec2.DeleteVolume(ctx, &ec2.DeleteVolumeInput{VolumeId: aws.String("vol-0123456789abcdef0")})
	wantCode(t, err, "InvalidVolume.NotFound")
	_, err = e.ec2.DescribeVolumes(ctx, &ec2.DescribeVolumesInput{Filters: []types.Filter{{Name: aws.String("colour"), Values: []string{"x"}}}})
	wantCode(t, err, "InvalidParameterValue")
	_, err = e.ec2.CreateVolume(ctx, &ec2.CreateVolumeInput{AvailabilityZone: aws.String(zone), Size: aws.Int32(1), DryRun: aws.Bool(true)})
	wantCode(t, err, "DryRunOperation")
}

func TestEBSSnapshots(t *testing.T) {
	e := startServer(t, Config{})
	ctx := ctxT(t)
	zone := e.srv.Region() + "a"
	cv, err := e.ec2.CreateVolume(ctx, &ec2.CreateVolumeInput{AvailabilityZone: aws.String(zone), Size: aws.Int32(1)})
	if err != nil {
		t.Fatal(err)
	}
	vol := aws.ToString(cv.VolumeId)
	_, err = e.ec2.CreateSnapshot(ctx, &ec2.CreateSnapshotInput{VolumeId: aws.String(vol)})
	wantCode(t, err, "IncorrectState") // still creating
	if err := ec2.NewVolumeAvailableWaiter(e.ec2, func(o *ec2.VolumeAvailableWaiterOptions) { o.MinDelay, o.MaxDelay = fastWait, fastWait }).
		Wait(ctx, &ec2.DescribeVolumesInput{VolumeIds: []string{vol}}, time.Minute); err != nil {
		t.Fatal(err)
	}
	// Data written to the volume is in the snapshot and in a volume made from it.
	volFile := filepath.Join(e.srv.cfg.DataDir, "ebs", vol+".img")
	f, err := os.OpenFile(volFile, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte("hello ebs"), 512<<20); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	cs, err := e.ec2.CreateSnapshot(ctx, &ec2.CreateSnapshotInput{VolumeId: aws.String(vol), Description: aws.String("root"),
		TagSpecifications: []types.TagSpecification{{ResourceType: types.ResourceTypeSnapshot, Tags: []types.Tag{{Key: aws.String("k"), Value: aws.String("v")}}}}})
	if err != nil {
		t.Fatal(err)
	}
	snap := aws.ToString(cs.SnapshotId)
	if cs.State != types.SnapshotStatePending || aws.ToInt32(cs.VolumeSize) != 1 {
		t.Fatalf("new snapshot: %+v", cs)
	}
	_, err = e.ec2.CreateVolume(ctx, &ec2.CreateVolumeInput{AvailabilityZone: aws.String(zone), SnapshotId: aws.String(snap)})
	wantCode(t, err, "IncorrectState") // still pending
	if err := ec2.NewSnapshotCompletedWaiter(e.ec2, func(o *ec2.SnapshotCompletedWaiterOptions) { o.MinDelay, o.MaxDelay = fastWait, fastWait }).
		Wait(ctx, &ec2.DescribeSnapshotsInput{SnapshotIds: []string{snap}}, time.Minute); err != nil {
		t.Fatal(err)
	}
	ds, err := e.ec2.DescribeSnapshots(ctx, &ec2.DescribeSnapshotsInput{OwnerIds: []string{"self"}, Filters: []types.Filter{
		{Name: aws.String("volume-id"), Values: []string{vol}}, {Name: aws.String("tag:k"), Values: []string{"v"}}}})
	if err != nil {
		t.Fatal(err)
	}
	if len(ds.Snapshots) != 1 || aws.ToString(ds.Snapshots[0].Progress) != "100%" || aws.ToString(ds.Snapshots[0].OwnerId) != e.srv.AccountID() {
		t.Fatalf("snapshots: %+v", ds.Snapshots)
	}
	ds, err = e.ec2.DescribeSnapshots(ctx, &ec2.DescribeSnapshotsInput{OwnerIds: []string{"amazon"}})
	if err != nil || len(ds.Snapshots) != 0 {
		t.Fatalf("amazon's snapshots: %v %v", ds, err)
	}
	_, err = e.ec2.CreateVolume(ctx, &ec2.CreateVolumeInput{AvailabilityZone: aws.String(zone), SnapshotId: aws.String(snap), Size: aws.Int32(0)})
	if err != nil {
		t.Fatal(err)
	}
	big, err := e.ec2.CreateVolume(ctx, &ec2.CreateVolumeInput{AvailabilityZone: aws.String(zone), SnapshotId: aws.String(snap), Size: aws.Int32(3)})
	if err != nil {
		t.Fatal(err)
	}
	bf, err := os.Open(filepath.Join(e.srv.cfg.DataDir, "ebs", aws.ToString(big.VolumeId)+".img"))
	if err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 9)
	_, err = bf.ReadAt(b, 512<<20)
	fi, serr := bf.Stat()
	bf.Close()
	if err != nil || serr != nil || fi.Size() != 3<<30 || string(b) != "hello ebs" {
		t.Fatalf("volume from snapshot: %v %v size %d, data %q", err, serr, fi.Size(), b)
	}

	_, err = e.ec2.DescribeSnapshots(ctx, &ec2.DescribeSnapshotsInput{SnapshotIds: []string{"snap-0123456789abcdef0"}})
	wantCode(t, err, "InvalidSnapshot.NotFound")
	_, err = e.ec2.DescribeSnapshots(ctx, &ec2.DescribeSnapshotsInput{SnapshotIds: []string{"snap-bad"}})
	wantCode(t, err, "InvalidSnapshotID.Malformed")
	_, err = e.ec2.CreateSnapshot(ctx, &ec2.CreateSnapshotInput{VolumeId: aws.String("vol-0123456789abcdef0")})
	wantCode(t, err, "InvalidVolume.NotFound")
	_, err = e.ec2.DeleteSnapshot(ctx, &ec2.DeleteSnapshotInput{SnapshotId: aws.String("snap-0123456789abcdef0")})
	wantCode(t, err, "InvalidSnapshot.NotFound")
	if _, err := e.ec2.DeleteSnapshot(ctx, &ec2.DeleteSnapshotInput{SnapshotId: aws.String(snap)}); err != nil {
		t.Fatal(err)
	}
	_, err = e.ec2.DescribeSnapshots(ctx, &ec2.DescribeSnapshotsInput{SnapshotIds: []string{snap}})
	wantCode(t, err, "InvalidSnapshot.NotFound")
	if f := ebsFiles(t, e); len(f) != 3 {
		t.Fatalf("want the 3 volume files only, have %v", f)
	}
	// Close frees the volumes' files too.
	if err := e.srv.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(e.srv.cfg.DataDir, "ebs")); !os.IsNotExist(err) {
		t.Fatalf("EBS data left after Close: %v", err)
	}
}
