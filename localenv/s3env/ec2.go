package s3env

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"

	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/smithy-go"
)

// ec2Readable are the canned ACLs that grant READ to EC2's principal: aws-exec-read
// names it; the public and authenticated grants include it.
var ec2Readable = map[string]bool{
	"aws-exec-read":      true,
	"public-read":        true,
	"public-read-write":  true,
	"authenticated-read": true,
}

// GetAsEC2 reads an object the way EC2 does when it registers an instance
// store-backed AMI: only objects whose recorded ACL grants EC2 read access are
// readable. Others, unknown objects included (EC2 cannot list the bucket), give an
// *S3Error 403 AccessDenied.
func (f *Front) GetAsEC2(bucket, key string) ([]byte, error) {
	return f.GetAsEC2Context(context.Background(), bucket, key)
}

// GetAsEC2Context is GetAsEC2 with a context.
func (f *Front) GetAsEC2Context(ctx context.Context, bucket, key string) ([]byte, error) {
	rc, err := f.OpenAsEC2(ctx, bucket, key)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		return nil, fmt.Errorf("reading s3://%s/%s: %w", bucket, key, err)
	}
	return b, nil
}

// OpenAsEC2 is GetAsEC2 as a stream, for large objects.
func (f *Front) OpenAsEC2(ctx context.Context, bucket, key string) (io.ReadCloser, error) {
	if acl, _ := f.ACL(bucket, key); !ec2Readable[acl] {
		return nil, &S3Error{StatusCode: http.StatusForbidden, Code: "AccessDenied", Message: "Access Denied"}
	}
	out, err := f.backend.Client(f.regionOf(bucket)).GetObject(ctx, &s3.GetObjectInput{Bucket: &bucket, Key: &key})
	if err != nil {
		return nil, asS3Error(err)
	}
	return out.Body, nil
}

// asS3Error turns an aws-sdk-go-v2 error into an *S3Error when it carries an S3 answer.
func asS3Error(err error) error {
	var apiErr smithy.APIError
	var respErr *awshttp.ResponseError
	if errors.As(err, &apiErr) && errors.As(err, &respErr) {
		return &S3Error{StatusCode: respErr.HTTPStatusCode(), Code: apiErr.ErrorCode(), Message: apiErr.ErrorMessage()}
	}
	return err
}
