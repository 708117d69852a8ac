package localenv

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	s3types "github.com/aws/aws-sdk-go-v2/service/s3/types"

	"github.com/instancestore/packer-plugin-instancestore/bundle"
	"github.com/instancestore/packer-plugin-instancestore/internal/testroot"
	"github.com/instancestore/packer-plugin-instancestore/localenv/s3env"
)

// TestMinIORegisterAndRun uses only what the environment hands out (its variables):
// a bundle of the base AMI's root image goes to MinIO through the front with the
// aws-exec-read ACL, RegisterImage reads it back as EC2, and the new AMI runs.
func TestMinIORegisterAndRun(t *testing.T) {
	testroot.Require(t)
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	e, err := Start(ctx, Options{Dir: dir, S3: "minio", Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	if !e.S3Backend.ChecksSignatures {
		t.Fatal("MinIO should check signatures")
	}
	v := varMap(e.Vars())

	// The bundle: the base root image plus a marker, written with the EC2 cert the
	// environment names.
	tree := filepath.Join(dir, "roots", "lite")
	if err := os.WriteFile(filepath.Join(tree, "etc", "minio-marker"), []byte("via-minio\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	img := filepath.Join(t.TempDir(), "root.img")
	if err := MakeRootImage(ctx, tree, img, 256<<20); err != nil {
		t.Fatal(err)
	}
	im, err := bundle.OpenImage(img)
	if err != nil {
		t.Fatal(err)
	}
	defer im.Close()
	key, _ := bundle.NewKey()
	parts := t.TempDir()
	res, err := bundle.Write(ctx, im, bundle.WriterConfig{Name: "lite", Key: key}, bundle.DirSink(parts))
	if err != nil {
		t.Fatal(err)
	}
	ec2Cert, err := bundle.LoadCertificate(v["INSTANCESTORE_EC2_CERT"])
	if err != nil {
		t.Fatal(err)
	}
	userCert, userKey, _ := bundle.NewThrowawayUser()
	m, err := bundle.NewManifest(res, bundle.ManifestConfig{Architecture: "x86_64", User: v["INSTANCESTORE_ACCOUNT_ID"]}, key, ec2Cert, userCert)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Sign(userKey); err != nil {
		t.Fatal(err)
	}

	s3c := s3env.NewClient(v["AWS_ENDPOINT_URL_S3"], s3env.Credentials{AccessKeyID: v["AWS_ACCESS_KEY_ID"], SecretAccessKey: v["AWS_SECRET_ACCESS_KEY"]}, v["AWS_REGION"])
	if _, err := s3c.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String("local-amis")}); err != nil {
		t.Fatal(err)
	}
	put := func(name string, data []byte) {
		if _, err := s3c.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String("local-amis"), Key: aws.String("b1/" + name),
			Body: bytes.NewReader(data), ACL: s3types.ObjectCannedACLAwsExecRead}); err != nil {
			t.Fatalf("uploading %s: %v", name, err)
		}
	}
	for _, p := range m.Parts {
		data, err := os.ReadFile(filepath.Join(parts, p.Filename))
		if err != nil {
			t.Fatal(err)
		}
		put(p.Filename, data)
	}
	put("lite.manifest.xml", m.Marshal())
	c, _ := clients(v)
	reg, err := c.RegisterImage(ctx, &ec2.RegisterImageInput{Name: aws.String("from-minio"), ImageLocation: aws.String("local-amis/b1/lite.manifest.xml"), VirtualizationType: aws.String("hvm")})
	if err != nil {
		t.Fatal(err)
	}
	// A new AMI is pending for a moment, as on EC2.
	w := ec2.NewImageAvailableWaiter(c, func(o *ec2.ImageAvailableWaiterOptions) { o.MinDelay, o.MaxDelay = 200*time.Millisecond, time.Second })
	if err := w.Wait(ctx, &ec2.DescribeImagesInput{ImageIds: []string{aws.ToString(reg.ImageId)}}, time.Minute); err != nil {
		t.Fatal(err)
	}
	_, out := launchAMIAndSSH(t, v, aws.ToString(reg.ImageId), "r3.large", "cat /etc/minio-marker")
	if strings.TrimSpace(out) != "via-minio" {
		t.Fatalf("the registered AMI's instance sees %q", out)
	}
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	if l := Leftovers(dir); len(l) > 0 {
		t.Fatalf("left behind: %v", l)
	}
}
