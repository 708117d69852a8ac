package instancestore

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/hashicorp/packer-plugin-sdk/multistep"
	packersdk "github.com/hashicorp/packer-plugin-sdk/packer"
	"github.com/hashicorp/packer-plugin-sdk/packerbuilderdata"

	"github.com/instancestore/packer-plugin-instancestore/agent/driver"
	s3bundle "github.com/instancestore/packer-plugin-instancestore/s3"
)

// TestStepBundleRetryIsClean: -on-error=ask and "retry" run the step's Run again.
// The first attempt uploads four parts and fails with its own cleanup failing too (the
// parts stay); the retry deletes them before it bundles, so the bucket ends with the
// new bundle's parts and manifest only, and a manifest that lists exactly those. The
// parts another bundle (another name) has in the bucket are untouched, and a first
// attempt deletes nothing.
func TestStepBundleRetryIsClean(t *testing.T) {
	s := startSim(t)
	c := testConfig(t)
	const bucket = "retry-bucket"
	other := s.uploadBundle(t, bucket, c.S3Prefix, "other-bundle")
	b, err := s3bundle.New(s.cfg, s.region, bucket, c.S3Prefix, s3bundle.Options{PathStyle: true})
	if err != nil {
		t.Fatal(err)
	}
	st, _ := s.state(c)
	st.Put(keyBucket, b)
	st.Put(keyCommunicator, packersdk.Communicator(new(packersdk.MockCommunicator)))
	st.Put(keyAccountID, s.ec2sim.AccountID())
	st.Put(keySourceImage, &ec2types.Image{RootDeviceName: aws.String("/dev/sda1")})

	ctx := context.Background()
	attempt := 0
	step := &stepBundle{GeneratedData: &packerbuilderdata.GeneratedData{State: st}}
	step.bundle = func(ctx context.Context, dc driver.Config) (*driver.Result, error) {
		attempt++
		if attempt == 1 {
			for i := 0; i < 4; i++ {
				if err := dc.Bucket.Put(ctx, c.BundlePrefix+".part."+string(rune('0'+i)), []byte("stale part"), "application/octet-stream"); err != nil {
					t.Fatal(err)
				}
			}
			return nil, errors.New("the agent on the instance failed: injected; cleaning up also failed: injected")
		}
		loc := s.uploadBundle(t, bucket, c.S3Prefix, c.BundlePrefix) // 1 part + manifest
		return &driver.Result{ManifestLocation: loc.ManifestLocation, Objects: loc.Objects}, nil
	}

	if got := step.Run(ctx, st); got != multistep.ActionHalt {
		t.Fatalf("first attempt: %v, want halt", got)
	}
	if n := countParts(s.objects(t, bucket), c.BundlePrefix); n != 4 {
		t.Fatalf("the injected failure left %d parts, want 4", n)
	}
	// Packer's ask step re-runs Run with the first attempt's error still in the state.
	if got := step.Run(ctx, st); got != multistep.ActionContinue {
		t.Fatalf("retry: %v (%v)", got, st.Get("error"))
	}
	if err, ok := st.GetOk("error"); ok {
		t.Fatalf("the retry passed but the failed attempt's error is still in the state (the build would fail, its cleanups act as after an error): %v", err)
	}
	m, err := b.GetManifest(ctx, c.BundlePrefix)
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	for _, p := range m.Parts {
		want = append(want, c.S3Prefix+"/"+p.Filename)
	}
	want = append(want, c.S3Prefix+"/"+s3bundle.ManifestName(c.BundlePrefix))
	for _, o := range other.Objects {
		want = append(want, c.S3Prefix+"/"+o)
	}
	got := s.objects(t, bucket)
	slices.Sort(want)
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Fatalf("after the retry the bucket holds\n%v\nwant the new bundle and the other one only:\n%v", got, want)
	}
	if loc := st.Get(keyBundle).(*bundleLocation); loc.ManifestLocation != bucket+"/"+c.S3Prefix+"/"+s3bundle.ManifestName(c.BundlePrefix) {
		t.Fatalf("state holds bundle %+v", loc)
	}

	// A first attempt leaves parts it did not make alone.
	if err := b.Put(ctx, "third.part.0", []byte("x"), "application/octet-stream"); err != nil {
		t.Fatal(err)
	}
	fresh := &stepBundle{GeneratedData: &packerbuilderdata.GeneratedData{State: st}, bundle: func(context.Context, driver.Config) (*driver.Result, error) {
		return nil, errors.New("injected")
	}}
	c.BundlePrefix = "third"
	fresh.Run(ctx, st)
	if !slices.Contains(s.objects(t, bucket), c.S3Prefix+"/third.part.0") {
		t.Fatal("a first attempt deleted a part it did not upload")
	}
}

func countParts(keys []string, name string) int {
	n := 0
	for _, k := range keys {
		if strings.Contains(k, name+".part.") {
			n++
		}
	}
	return n
}
