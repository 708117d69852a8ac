package ec2sim

import (
	"context"
	"errors"
	"io"

	"github.com/instancestore/packer-plugin-instancestore/localenv/s3env"
)

// FrontReader reads bundles through an s3env.Front as the EC2 principal: objects the
// Front did not record with an EC2-readable ACL (aws-exec-read) answer 403.
type FrontReader struct {
	Front *s3env.Front
}

// GetAsEC2 opens the object as EC2 would.
func (r FrontReader) GetAsEC2(ctx context.Context, bucket, key string) (io.ReadCloser, error) {
	rc, err := r.Front.OpenAsEC2(ctx, bucket, key)
	if err != nil {
		var se *s3env.S3Error
		if errors.As(err, &se) {
			return nil, &S3Error{Status: se.StatusCode, Code: se.Code, Message: se.Message}
		}
		return nil, err
	}
	return rc, nil
}

// BucketRegion is the region recorded for the bucket, or the backend's own region for
// a bucket the Front did not see created.
func (r FrontReader) BucketRegion(ctx context.Context, bucket string) (string, error) {
	if reg, ok := r.Front.BucketRegion(bucket); ok {
		return reg, nil
	}
	return r.Front.Backend().Region, nil
}
