package s3env

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/instancestore/packer-plugin-instancestore/internal/testroot"
	"github.com/instancestore/packer-plugin-instancestore/localenv/instance"
)

// TestFrontReachableFromInstance: a Front listening on the service address serves the
// instance (whose network namespace has no other way out) and the host with one URL.
func TestFrontReachableFromInstance(t *testing.T) {
	testroot.Require(t)
	ctx := context.Background()
	root := filepath.Join(t.TempDir(), "root")
	if err := instance.BuildLiteRoot(ctx, root); err != nil {
		t.Fatal(err)
	}
	inst, err := instance.Start(ctx, instance.Config{Root: root})
	if err != nil {
		t.Fatal(err)
	}
	defer inst.Stop()
	b, err := StartGoFakeS3()
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	svc, err := instance.ServiceAddr()
	if err != nil {
		t.Fatal(err)
	}
	f, err := NewFront(b, FrontOptions{Listen: svc.String() + ":0"})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	client := f.Client("us-east-1")
	if _, err := client.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String("isim-reach")}); err != nil {
		t.Fatal(err)
	}
	if _, err := client.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String("isim-reach"), Key: aws.String("hello"), Body: strings.NewReader("from the host")}); err != nil {
		t.Fatal(err)
	}
	cmd, err := inst.Command(ctx, "wget", "-q", "-O-", f.URL()+"/isim-reach/hello")
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.CombinedOutput()
	if err != nil || string(out) != "from the host" {
		t.Errorf("GET from inside the instance: %q %v", out, err)
	}
}
