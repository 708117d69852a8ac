package ec2sim

import (
	"context"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
)

// fileLauncher is the Launcher of the EBS API tests: it runs no machine, but holds
// the simulator to the LaunchSpec contract (every Volume's file exists, has the
// volume's size and is not shared with another live instance) and records what it is
// asked, hot-plugs included. The namespace launcher boots for real in
// ebs_linux_test.go.
type fileLauncher struct {
	mu       sync.Mutex
	specs    []LaunchSpec
	live     map[string]bool // instance id -> running
	attached []Volume
	detached []Volume
	hold     chan struct{} // when set, Launch waits for it to close (to catch pending)
	holdStop chan struct{} // when set, Terminate waits for it to close (to catch stopping)
}

type fileInstance struct {
	l    *fileLauncher
	spec LaunchSpec
}

func (l *fileLauncher) Launch(ctx context.Context, spec LaunchSpec) (Instance, error) {
	l.mu.Lock()
	hold := l.hold
	l.mu.Unlock()
	if hold != nil {
		select {
		case <-hold:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	for _, v := range spec.Volumes {
		fi, err := os.Stat(v.Path)
		if err != nil {
			return nil, fmt.Errorf("volume %s: %w", v.DeviceName, err)
		}
		if fi.Size() != int64(v.SizeGiB)<<30 {
			return nil, fmt.Errorf("volume %s: file of %d bytes for %d GiB", v.DeviceName, fi.Size(), v.SizeGiB)
		}
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.live == nil {
		l.live = map[string]bool{}
	}
	if l.live[spec.InstanceID] {
		return nil, fmt.Errorf("%s launched twice", spec.InstanceID)
	}
	l.live[spec.InstanceID] = true
	l.specs = append(l.specs, spec)
	return &fileInstance{l, spec}, nil
}

func (f *fileInstance) PrivateIP() string {
	if f.spec.PrivateIP != "" {
		return f.spec.PrivateIP
	}
	return "127.0.0.1"
}

func (f *fileInstance) Terminate(ctx context.Context) error {
	f.l.mu.Lock()
	hold := f.l.holdStop
	f.l.mu.Unlock()
	if hold != nil {
		select {
		case <-hold:
		case <-ctx.Done():
		}
	}
	f.l.mu.Lock()
	defer f.l.mu.Unlock()
	delete(f.l.live, f.spec.InstanceID)
	return nil
}

func (f *fileInstance) AttachVolume(_ context.Context, v Volume) error {
	f.l.mu.Lock()
	defer f.l.mu.Unlock()
	f.l.attached = append(f.l.attached, v)
	return nil
}

func (f *fileInstance) DetachVolume(_ context.Context, v Volume) error {
	f.l.mu.Lock()
	defer f.l.mu.Unlock()
	f.l.detached = append(f.l.detached, v)
	return nil
}

// lastSpec is the latest launch of id.
func (l *fileLauncher) lastSpec(t *testing.T, id string) LaunchSpec {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	for i := len(l.specs) - 1; i >= 0; i-- {
		if l.specs[i].InstanceID == id {
			return l.specs[i]
		}
	}
	t.Fatalf("%s was never launched", id)
	return LaunchSpec{}
}

func (l *fileLauncher) running(id string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.live[id]
}

func waitVolume(t *testing.T, e *testEnv, id string, inUse bool) {
	t.Helper()
	ctx := ctxT(t)
	in := &ec2.DescribeVolumesInput{VolumeIds: []string{id}}
	var err error
	if inUse {
		err = ec2.NewVolumeInUseWaiter(e.ec2, func(o *ec2.VolumeInUseWaiterOptions) { o.MinDelay, o.MaxDelay = fastWait, fastWait }).Wait(ctx, in, time.Minute)
	} else {
		err = ec2.NewVolumeAvailableWaiter(e.ec2, func(o *ec2.VolumeAvailableWaiterOptions) { o.MinDelay, o.MaxDelay = fastWait, fastWait }).Wait(ctx, in, time.Minute)
	}
	if err != nil {
		t.Fatal(err)
	}
}

// snapshotOf makes a completed snapshot of a new volume of gib GiB holding data at
// offset 1 MiB.
func snapshotOf(t *testing.T, e *testEnv, gib int32, data string) string {
	t.Helper()
	ctx := ctxT(t)
	cv, err := e.ec2.CreateVolume(ctx, &ec2.CreateVolumeInput{AvailabilityZone: aws.String(e.srv.Region() + "a"), Size: aws.Int32(gib)})
	if err != nil {
		t.Fatal(err)
	}
	vol := aws.ToString(cv.VolumeId)
	waitVolume(t, e, vol, false)
	e.srv.st.mu.Lock()
	path := e.srv.ebs().volumes[vol].path
	e.srv.st.mu.Unlock()
	writeAt(t, path, data, 1<<20)
	cs, err := e.ec2.CreateSnapshot(ctx, &ec2.CreateSnapshotInput{VolumeId: aws.String(vol)})
	if err != nil {
		t.Fatal(err)
	}
	snap := aws.ToString(cs.SnapshotId)
	if err := ec2.NewSnapshotCompletedWaiter(e.ec2, func(o *ec2.SnapshotCompletedWaiterOptions) { o.MinDelay, o.MaxDelay = fastWait, fastWait }).
		Wait(ctx, &ec2.DescribeSnapshotsInput{SnapshotIds: []string{snap}}, time.Minute); err != nil {
		t.Fatal(err)
	}
	if _, err := e.ec2.DeleteVolume(ctx, &ec2.DeleteVolumeInput{VolumeId: aws.String(vol)}); err != nil {
		t.Fatal(err)
	}
	return snap
}

func writeAt(t *testing.T, path, data string, off int64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte(data), off); err != nil {
		f.Close()
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

func readAt(t *testing.T, path string, n int, off int64) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, n)
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func waitInstance(t *testing.T, e *testEnv, id string, want types.InstanceStateName) types.Instance {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		out, err := e.ec2.DescribeInstances(context.Background(), &ec2.DescribeInstancesInput{InstanceIds: []string{id}})
		if err != nil {
			t.Fatal(err)
		}
		in := out.Reservations[0].Instances[0]
		if in.State.Name == want {
			return in
		}
		if time.Now().After(deadline) {
			t.Fatalf("instance %s is %s, want %s", id, in.State.Name, want)
		}
		time.Sleep(fastWait)
	}
}

func ebsMapping(dev, snap string, size int32, dot *bool) types.BlockDeviceMapping {
	m := types.BlockDeviceMapping{DeviceName: aws.String(dev), Ebs: &types.EbsBlockDevice{DeleteOnTermination: dot}}
	if snap != "" {
		m.Ebs.SnapshotId = aws.String(snap)
	}
	if size != 0 {
		m.Ebs.VolumeSize = aws.Int32(size)
	}
	return m
}
