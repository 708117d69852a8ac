package s3env

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/smithy-go"
)

// TestFaultAccessDenied: the AccessDenied kind answers 403 AccessDenied, as a denying
// bucket policy does, to the requests Match selects only; the SDK's retryer does not
// retry it (one request, one fault), and the object is not written.
func TestFaultAccessDenied(t *testing.T) {
	b, err := StartGoFakeS3()
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	f, err := NewFront(b, FrontOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	ctx := context.Background()
	c := f.Client("us-east-1")
	if _, err := c.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String("denied")}); err != nil {
		t.Fatal(err)
	}
	f.SetFaults(Faults{Rate: 1, Kinds: []FaultKind{FaultAccessDenied}, Match: func(r *http.Request) bool {
		return r.Method == http.MethodPut && strings.Contains(r.URL.Path, ".part.")
	}})
	_, err = c.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String("denied"), Key: aws.String("x.part.0"), Body: strings.NewReader("data")})
	var ae smithy.APIError
	if !errors.As(err, &ae) || ae.ErrorCode() != "AccessDenied" {
		t.Fatalf("PUT of a part: %v, want AccessDenied", err)
	}
	if n := f.FaultCounts()[FaultAccessDenied]; n != 1 {
		t.Errorf("%d AccessDenied faults for one PUT: the client retried a fault that is not transient", n)
	}
	if _, err := c.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String("denied"), Key: aws.String("x.manifest.xml"), Body: strings.NewReader("m")}); err != nil {
		t.Errorf("a PUT Match does not select failed: %v", err)
	}
	objs, err := f.Objects(ctx, "denied", "")
	if err != nil || len(objs) != 1 || objs[0] != "x.manifest.xml" {
		t.Errorf("bucket holds %v (%v), want only x.manifest.xml", objs, err)
	}
	for _, k := range AllFaults {
		if k == FaultAccessDenied {
			t.Error("AccessDenied is in AllFaults: random faults would fail builds for good")
		}
	}
}
