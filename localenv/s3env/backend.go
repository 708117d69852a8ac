// Package s3env runs real S3 servers for tests and the local environment: gofakes3
// in-process (fast, checks no signatures) or MinIO as a child process (checks SigV4,
// including presigned URLs), always on 127.0.0.1, behind a Front that records what
// neither server keeps: each object's canned ACL (x-amz-acl), each bucket's region,
// and what was deleted. The Front also answers as EC2's principal (GetAsEC2) and can
// inject faults.
//
//	b, err := s3env.StartGoFakeS3()                 // or s3env.StartMinIO(ctx, dir, creds)
//	f, err := s3env.NewFront(b, s3env.FrontOptions{})
//	client := f.Client("us-east-1")                 // aws-sdk-go-v2, path-style
//	acl, ok := f.ACL("bucket", "key")
package s3env

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3mem"
)

// Credentials are an access key pair for a backend.
type Credentials struct {
	AccessKeyID     string
	SecretAccessKey string
}

// Backend is a running S3 server on 127.0.0.1.
type Backend struct {
	// Kind is "gofakes3" or "minio".
	Kind string
	// URL is the server's endpoint, "http://127.0.0.1:PORT".
	URL string
	// Credentials are the server's root credentials (gofakes3 accepts any).
	Credentials Credentials
	// Region is the region the server itself answers for.
	Region string
	// ChecksSignatures tells whether the server rejects bad or missing SigV4.
	ChecksSignatures bool

	stop func() error
}

// Close stops the server.
func (b *Backend) Close() error {
	if b.stop == nil {
		return nil
	}
	stop := b.stop
	b.stop = nil
	return stop()
}

// Client returns an aws-sdk-go-v2 S3 client for the backend itself (not through a
// Front), signing for region.
func (b *Backend) Client(region string) *s3.Client {
	return NewClient(b.URL, b.Credentials, region)
}

// NewClient returns an aws-sdk-go-v2 S3 client for endpoint: path-style addressing,
// static credentials, no retries (tests see every error), and checksums only where
// S3 requires them.
func NewClient(endpoint string, creds Credentials, region string) *s3.Client {
	return s3.New(s3.Options{
		Region:                     region,
		BaseEndpoint:               aws.String(endpoint),
		UsePathStyle:               true,
		Credentials:                credentials.NewStaticCredentialsProvider(creds.AccessKeyID, creds.SecretAccessKey, ""),
		RetryMaxAttempts:           1,
		RequestChecksumCalculation: aws.RequestChecksumCalculationWhenRequired,
		ResponseChecksumValidation: aws.ResponseChecksumValidationWhenRequired,
	})
}

// StartGoFakeS3 runs gofakes3 (in-memory) in this process on 127.0.0.1:0.
func StartGoFakeS3() (*Backend, error) {
	faker := gofakes3.New(s3mem.New())
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("gofakes3: %w", err)
	}
	srv := &http.Server{Handler: faker.Server(), ReadHeaderTimeout: 30 * time.Second}
	go srv.Serve(ln)
	return &Backend{
		Kind:        "gofakes3",
		URL:         "http://" + ln.Addr().String(),
		Credentials: Credentials{AccessKeyID: "gofakes3", SecretAccessKey: "gofakes3-any-secret"},
		Region:      "us-east-1",
		stop: func() error {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if err := srv.Shutdown(ctx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
				return err
			}
			return srv.Close()
		},
	}, nil
}
