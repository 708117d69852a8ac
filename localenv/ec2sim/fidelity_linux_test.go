package ec2sim

import (
	"context"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	s3types "github.com/aws/aws-sdk-go-v2/service/s3/types"

	"github.com/instancestore/packer-plugin-instancestore/internal/testroot"
	"github.com/instancestore/packer-plugin-instancestore/localenv/s3env"
)

// waitAvailable waits for an AMI with the SDK's own ImageAvailable waiter (which
// retries on pending and fails on failed).
func waitAvailable(t *testing.T, c *ec2.Client, id string) types.Image {
	t.Helper()
	w := ec2.NewImageAvailableWaiter(c, func(o *ec2.ImageAvailableWaiterOptions) { o.MinDelay, o.MaxDelay = 200*time.Millisecond, time.Second })
	out, err := w.WaitForOutput(context.Background(), &ec2.DescribeImagesInput{ImageIds: []string{id}}, time.Minute)
	if err != nil {
		t.Fatalf("waiting for %s to be available: %v", id, err)
	}
	return out.Images[0]
}

// slowReader delays every read of a bundle object, so that a caller can go away
// while RegisterImage reads the bundle.
type slowReader struct {
	FrontReader
	delay time.Duration
}

func (r slowReader) GetAsEC2(ctx context.Context, bucket, key string) (io.ReadCloser, error) {
	time.Sleep(r.delay)
	return r.FrontReader.GetAsEC2(ctx, bucket, key)
}

type fidelityEnv struct {
	*testEnv
	front *s3env.Front
	s3c   *s3.Client
	b     *bundleFixture
}

func startFidelityEnv(t *testing.T, wrap func(FrontReader) ObjectReader) *fidelityEnv {
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
	var rd ObjectReader = FrontReader{Front: front}
	if wrap != nil {
		rd = wrap(FrontReader{Front: front})
	}
	e := startServer(t, Config{S3: rd})
	s3c := front.Client("us-east-1")
	if _, err := s3c.CreateBucket(context.Background(), &s3.CreateBucketInput{Bucket: aws.String("amis")}); err != nil {
		t.Fatal(err)
	}
	return &fidelityEnv{testEnv: e, front: front, s3c: s3c, b: makeBundle(t, e.srv)}
}

func (f *fidelityEnv) upload(t *testing.T, prefix string) string {
	return f.b.upload(t, f.s3c, "amis", prefix, f.b.manifest.Marshal(), s3types.ObjectCannedACLAwsExecRead, nil)
}

// TestRegisterImageKeepsBootAttributes: ImdsSupport, BootMode and UefiData are kept
// and described; TpmSupport is refused for an instance store-backed AMI (NitroTPM
// needs an EBS-backed, UEFI AMI), as are values EC2 does not take.
func TestRegisterImageKeepsBootAttributes(t *testing.T) {
	f := startFidelityEnv(t, nil)
	ctx := ctxT(t)
	loc := f.upload(t, "attrs")
	reg := func(name string, edit func(*ec2.RegisterImageInput)) (*ec2.RegisterImageOutput, error) {
		in := &ec2.RegisterImageInput{Name: aws.String(name), ImageLocation: aws.String(loc), Architecture: types.ArchitectureValuesX8664,
			VirtualizationType: aws.String("hvm"), RootDeviceName: aws.String("/dev/sda1")}
		edit(in)
		return f.ec2.RegisterImage(ctx, in)
	}
	_, err := reg("tpm", func(in *ec2.RegisterImageInput) {
		in.BootMode, in.TpmSupport = types.BootModeValuesUefi, types.TpmSupportValuesV20
	})
	wantCode(t, err, "InvalidParameterCombination")
	_, err = reg("tpm-bios", func(in *ec2.RegisterImageInput) { in.TpmSupport = types.TpmSupportValuesV20 })
	wantCode(t, err, "InvalidParameterCombination")
	_, err = reg("uefidata-bios", func(in *ec2.RegisterImageInput) {
		in.BootMode, in.UefiData = types.BootModeValuesLegacyBios, aws.String("QU1aTlVFRkk=")
	})
	wantCode(t, err, "InvalidParameterCombination")
	_, err = reg("imds-v1", func(in *ec2.RegisterImageInput) { in.ImdsSupport = "v1.0" })
	wantCode(t, err, "InvalidParameterValue")

	out, err := reg("attrs", func(in *ec2.RegisterImageInput) {
		in.BootMode, in.ImdsSupport, in.UefiData = types.BootModeValuesUefiPreferred, types.ImdsSupportValuesV20, aws.String("QU1aTlVFRkk=")
	})
	if err != nil {
		t.Fatal(err)
	}
	im := waitAvailable(t, f.ec2, aws.ToString(out.ImageId))
	if im.BootMode != types.BootModeValuesUefiPreferred || im.ImdsSupport != types.ImdsSupportValuesV20 || im.TpmSupport != "" {
		t.Fatalf("described: boot mode %q imds %q tpm %q", im.BootMode, im.ImdsSupport, im.TpmSupport)
	}
	a, err := f.ec2.DescribeImageAttribute(ctx, &ec2.DescribeImageAttributeInput{ImageId: out.ImageId, Attribute: types.ImageAttributeNameUefiData})
	if err != nil || aws.ToString(a.UefiData.Value) != "QU1aTlVFRkk=" {
		t.Fatalf("uefiData: %v %+v", err, a)
	}
	a, err = f.ec2.DescribeImageAttribute(ctx, &ec2.DescribeImageAttributeInput{ImageId: out.ImageId, Attribute: types.ImageAttributeNameImdsSupport})
	if err != nil || aws.ToString(a.ImdsSupport.Value) != "v2.0" {
		t.Fatalf("imdsSupport: %v %+v", err, a)
	}
}

// TestModifyImageAttributeImdsSupport: ImdsSupport.Value=v2.0 with no Attribute is
// how packer-plugin-amazon sets imds_support, and EC2 takes it.
func TestModifyImageAttributeImdsSupport(t *testing.T) {
	e := startServer(t, Config{})
	ctx := ctxT(t)
	base := seedDirImage(t, e.srv, "base", "hvm")
	cp, err := e.ec2.CopyImage(ctx, &ec2.CopyImageInput{SourceImageId: aws.String(base), SourceRegion: aws.String("us-east-1"), Name: aws.String("mine")})
	if err != nil {
		t.Fatal(err)
	}
	waitAvailable(t, e.ec2, aws.ToString(cp.ImageId))
	if _, err := e.ec2.ModifyImageAttribute(ctx, &ec2.ModifyImageAttributeInput{ImageId: cp.ImageId, ImdsSupport: &types.AttributeValue{Value: aws.String("v2.0")}}); err != nil {
		t.Fatalf("ModifyImageAttribute ImdsSupport.Value=v2.0: %v", err)
	}
	_, err = e.ec2.ModifyImageAttribute(ctx, &ec2.ModifyImageAttributeInput{ImageId: cp.ImageId, ImdsSupport: &types.AttributeValue{Value: aws.String("v1.0")}})
	wantCode(t, err, "InvalidParameterValue")
	out, err := e.ec2.DescribeImages(ctx, &ec2.DescribeImagesInput{ImageIds: []string{aws.ToString(cp.ImageId)}})
	if err != nil || out.Images[0].ImdsSupport != types.ImdsSupportValuesV20 {
		t.Fatalf("after ModifyImageAttribute: %v %+v", err, out)
	}
}

// TestRegisterImagePendingThenAvailable: a registered AMI is pending first (the
// waiter's retry path runs), then available.
func TestRegisterImagePendingThenAvailable(t *testing.T) {
	f := startFidelityEnv(t, nil)
	ctx := ctxT(t)
	out, err := f.ec2.RegisterImage(ctx, &ec2.RegisterImageInput{Name: aws.String("pending"), ImageLocation: aws.String(f.upload(t, "pending")),
		Architecture: types.ArchitectureValuesX8664, VirtualizationType: aws.String("hvm")})
	if err != nil {
		t.Fatal(err)
	}
	d, err := f.ec2.DescribeImages(ctx, &ec2.DescribeImagesInput{ImageIds: []string{aws.ToString(out.ImageId)}})
	if err != nil || d.Images[0].State != types.ImageStatePending {
		t.Fatalf("right after RegisterImage: %v %+v", err, d)
	}
	if im := waitAvailable(t, f.ec2, aws.ToString(out.ImageId)); im.State != types.ImageStateAvailable {
		t.Fatalf("state %s", im.State)
	}
}

// TestRegisterImageCallerGoesAway: a client that gives up while EC2 reads the bundle
// does not undo the registration; the AMI appears all the same.
func TestRegisterImageCallerGoesAway(t *testing.T) {
	f := startFidelityEnv(t, func(r FrontReader) ObjectReader { return slowReader{FrontReader: r, delay: 300 * time.Millisecond} })
	loc := f.upload(t, "gone")
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	_, err := f.ec2.RegisterImage(ctx, &ec2.RegisterImageInput{Name: aws.String("gone-caller"), ImageLocation: aws.String(loc),
		Architecture: types.ArchitectureValuesX8664, VirtualizationType: aws.String("hvm")})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("want the caller's deadline, got %v", err)
	}
	deadline := time.Now().Add(time.Minute)
	for {
		out, err := f.ec2.DescribeImages(ctxT(t), &ec2.DescribeImagesInput{Filters: []types.Filter{{Name: aws.String("name"), Values: []string{"gone-caller"}}}})
		if err != nil {
			t.Fatal(err)
		}
		if len(out.Images) == 1 && out.Images[0].State == types.ImageStateAvailable {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the registration of a caller that went away never completed: %+v", out.Images)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// TestCopyImageCopiesBundle: a copy of an instance store-backed AMI gets its own
// bundle in an amis-for-ACCOUNT-in-REGION-* bucket of the destination region,
// readable by EC2; the source bundle is not the copy's.
func TestCopyImageCopiesBundle(t *testing.T) {
	f := startFidelityEnv(t, nil)
	ctx := ctxT(t)
	loc := f.upload(t, "tocopy")
	out, err := f.ec2.RegisterImage(ctx, &ec2.RegisterImageInput{Name: aws.String("src"), ImageLocation: aws.String(loc),
		Architecture: types.ArchitectureValuesX8664, VirtualizationType: aws.String("hvm")})
	if err != nil {
		t.Fatal(err)
	}
	waitAvailable(t, f.ec2, aws.ToString(out.ImageId))
	west := ec2Client(f.srv, testCreds, "eu-west-1")
	cp, err := west.CopyImage(ctx, &ec2.CopyImageInput{SourceImageId: out.ImageId, SourceRegion: aws.String("us-east-1"), Name: aws.String("copied")})
	if err != nil {
		t.Fatal(err)
	}
	im := waitAvailable(t, west, aws.ToString(cp.ImageId))
	newLoc := aws.ToString(im.ImageLocation)
	bucket, key, _ := strings.Cut(newLoc, "/")
	if !strings.HasPrefix(bucket, "amis-for-"+f.srv.AccountID()+"-in-eu-west-1-") || key != "tocopy/image.manifest.xml" {
		t.Fatalf("the copy's ImageLocation is %q", newLoc)
	}
	if r, ok := f.front.BucketRegion(bucket); !ok || r != "eu-west-1" {
		t.Fatalf("copy bucket %s region %q %v", bucket, r, ok)
	}
	objs, err := f.front.Objects(ctx, bucket, "tocopy/")
	if err != nil || len(objs) != len(f.b.manifest.Parts)+1 {
		t.Fatalf("objects of the copy: %v %v", err, objs)
	}
	for _, o := range objs {
		if acl, _ := f.front.ACL(bucket, o); acl != "aws-exec-read" {
			t.Fatalf("%s/%s has ACL %q", bucket, o, acl)
		}
	}
	if aws.ToString(im.SourceImageId) != aws.ToString(out.ImageId) || im.RootDeviceType != types.DeviceTypeInstanceStore {
		t.Fatalf("copy: %+v", im)
	}
}

// TestKeyPairIdNotFoundCode: EC2 answers InvalidKeyPair.NotFound for an unknown key
// pair id (there is no InvalidKeyPairId.NotFound).
func TestKeyPairIdNotFoundCode(t *testing.T) {
	e := startServer(t, Config{})
	_, err := e.ec2.CreateTags(ctxT(t), &ec2.CreateTagsInput{Resources: []string{"key-0123456789abcdef0"}, Tags: []types.Tag{{Key: aws.String("a"), Value: aws.String("b")}}})
	wantCode(t, err, "InvalidKeyPair.NotFound")
}
