package s3bundle

import (
	"context"
	"fmt"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
)

// DeleteBucket deletes b's bucket, which must be empty (delete-bundle --clear).
func DeleteBucket(ctx context.Context, b *Bucket) error {
	if _, err := b.Client.DeleteBucket(ctx, &s3.DeleteBucketInput{Bucket: aws.String(b.Name)}); err != nil {
		return fmt.Errorf("deleting bucket %s: %w", b.Name, explain(err))
	}
	return nil
}
