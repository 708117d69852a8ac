package ec2sim

import (
	"context"
	"net/url"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
)

func TestDeprecationProtectionAndNoEBS(t *testing.T) {
	e := startServer(t, Config{})
	ctx := ctxT(t)
	base := seedDirImage(t, e.srv, "base", "paravirtual")
	cp, err := e.ec2.CopyImage(ctx, &ec2.CopyImageInput{SourceImageId: aws.String(base), SourceRegion: aws.String("us-east-1"), Name: aws.String("mine")})
	if err != nil {
		t.Fatal(err)
	}
	at := time.Now().Add(48 * time.Hour).UTC().Truncate(time.Second)
	if _, err := e.ec2.EnableImageDeprecation(ctx, &ec2.EnableImageDeprecationInput{ImageId: cp.ImageId, DeprecateAt: aws.Time(at)}); err != nil {
		t.Fatal(err)
	}
	_, err = e.ec2.EnableImageDeprecation(ctx, &ec2.EnableImageDeprecationInput{ImageId: cp.ImageId, DeprecateAt: aws.Time(time.Now().Add(-time.Hour))})
	wantCode(t, err, "InvalidParameterValue")
	if _, err := e.ec2.EnableImageDeregistrationProtection(ctx, &ec2.EnableImageDeregistrationProtectionInput{ImageId: cp.ImageId}); err != nil {
		t.Fatal(err)
	}
	out, err := e.ec2.DescribeImages(ctx, &ec2.DescribeImagesInput{ImageIds: []string{*cp.ImageId}})
	if err != nil {
		t.Fatal(err)
	}
	if got := aws.ToString(out.Images[0].DeprecationTime); got != at.Format("2006-01-02T15:04:05.000Z") || aws.ToString(out.Images[0].DeregistrationProtection) != "enabled" {
		t.Fatalf("deprecation %q protection %q", got, aws.ToString(out.Images[0].DeregistrationProtection))
	}
	_, err = e.ec2.DeregisterImage(ctx, &ec2.DeregisterImageInput{ImageId: cp.ImageId})
	wantCode(t, err, "InvalidParameterValue")
	if _, err := e.ec2.DisableImageDeregistrationProtection(ctx, &ec2.DisableImageDeregistrationProtectionInput{ImageId: cp.ImageId}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.ec2.DeregisterImage(ctx, &ec2.DeregisterImageInput{ImageId: cp.ImageId}); err != nil {
		t.Fatal(err)
	}
	vols, err := e.ec2.DescribeVolumes(ctx, &ec2.DescribeVolumesInput{Filters: []types.Filter{{Name: aws.String("attachment.instance-id"), Values: []string{"i-0123456789abcdef0"}}}})
	if err != nil || len(vols.Volumes) != 0 {
		t.Fatalf("DescribeVolumes: %v %+v", err, vols)
	}
	_, err = e.ec2.DescribeVolumes(ctx, &ec2.DescribeVolumesInput{VolumeIds: []string{"vol-0123456789abcdef0"}})
	wantCode(t, err, "InvalidVolume.NotFound")
	_, err = e.ec2.DescribeSnapshots(ctx, &ec2.DescribeSnapshotsInput{SnapshotIds: []string{"snap-0123456789abcdef0"}})
	wantCode(t, err, "InvalidSnapshot.NotFound")
	types, err := e.ec2.DescribeInstanceTypeOfferings(ctx, &ec2.DescribeInstanceTypeOfferingsInput{LocationType: "availability-zone",
		Filters: []types.Filter{{Name: aws.String("instance-type"), Values: []string{"m3.medium"}}}})
	if err != nil || len(types.InstanceTypeOfferings) != 3 {
		t.Fatalf("DescribeInstanceTypeOfferings: %v %+v", err, types)
	}
}

// TestGoneCallerCommitsNothing: a CreateKeyPair whose caller went away (cancelled
// context) before the key was made leaves no key pair.
func TestGoneCallerCommitsNothing(t *testing.T) {
	e := startServer(t, Config{})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	c := &call{s: e.srv, p: newParams(url.Values{"KeyName": {"gone"}}), region: "us-east-1", action: "CreateKeyPair", reqID: "test", ctx: ctx}
	if _, err := createKeyPair(c); err == nil {
		t.Fatal("CreateKeyPair of a gone caller succeeded")
	}
	out, err := e.ec2.DescribeKeyPairs(ctxT(t), &ec2.DescribeKeyPairsInput{})
	if err != nil || len(out.KeyPairs) != 0 {
		t.Fatalf("key pairs after a gone caller: %v %+v", err, out)
	}
}
