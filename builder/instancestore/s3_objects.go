package instancestore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"path"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	s3types "github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/instancestore/packer-plugin-instancestore/bundle"
)

// The builder's own uses of S3 beyond the upload: finding and deleting a bundle's
// objects when an AMI is deregistered (force_deregister, artifact Destroy) or a build
// fails after the upload.

// newS3Client returns an S3 client for the region; AWS_ENDPOINT_URL_S3 and the shared
// config's endpoint settings apply as for every aws-sdk-go-v2 client.
func newS3Client(cfg *aws.Config, region string) *s3.Client {
	return s3.NewFromConfig(*cfg, func(o *s3.Options) {
		if region != "" {
			o.Region = region
		}
	})
}

// maxManifestSize bounds what is read of an old manifest: real ones are a few KiB.
const maxManifestSize = 4 << 20

// parseImageLocation splits an AMI's ImageLocation ("bucket/key.manifest.xml") into a
// bundle location whose parts are found by reading the manifest.
func parseImageLocation(loc string) (bucket, key string, err error) {
	bucket, key, ok := strings.Cut(loc, "/")
	if !ok || bucket == "" || !strings.HasSuffix(key, ".manifest.xml") {
		return "", "", fmt.Errorf("image location %q is not bucket/key.manifest.xml", loc)
	}
	return bucket, key, nil
}

// locateBundle reads the manifest at bucket/key and lists the bundle's objects: the
// parts sit beside the manifest.
func locateBundle(ctx context.Context, client *s3.Client, bucket, key string) (*bundleLocation, error) {
	out, err := client.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(bucket), Key: aws.String(key)})
	if err != nil {
		return nil, fmt.Errorf("reading manifest s3://%s/%s: %w", bucket, key, err)
	}
	defer out.Body.Close()
	data, err := io.ReadAll(io.LimitReader(out.Body, maxManifestSize))
	if err != nil {
		return nil, fmt.Errorf("reading manifest s3://%s/%s: %w", bucket, key, err)
	}
	m, err := bundle.ParseManifest(data)
	if err != nil {
		return nil, fmt.Errorf("parsing manifest s3://%s/%s: %w", bucket, key, err)
	}
	loc := &bundleLocation{Bucket: bucket, ManifestKey: key}
	dir := path.Dir(key)
	for _, p := range m.Parts {
		if p.Filename == "" || strings.Contains(p.Filename, "/") {
			return nil, fmt.Errorf("manifest s3://%s/%s names part %q, not a plain file name", bucket, key, p.Filename)
		}
		if dir == "." {
			loc.PartKeys = append(loc.PartKeys, p.Filename)
		} else {
			loc.PartKeys = append(loc.PartKeys, dir+"/"+p.Filename)
		}
	}
	return loc, nil
}

// deleteObjects deletes keys from bucket, 1000 per request (S3's limit), and reports
// every key S3 could not delete. Keys that do not exist count as deleted.
func deleteObjects(ctx context.Context, client *s3.Client, bucket string, keys []string) error {
	var errs []error
	for len(keys) > 0 {
		n := min(len(keys), 1000)
		batch := keys[:n]
		keys = keys[n:]
		objs := make([]s3types.ObjectIdentifier, len(batch))
		for i, k := range batch {
			objs[i] = s3types.ObjectIdentifier{Key: aws.String(k)}
		}
		out, err := client.DeleteObjects(ctx, &s3.DeleteObjectsInput{
			Bucket: aws.String(bucket),
			Delete: &s3types.Delete{Objects: objs, Quiet: aws.Bool(true)},
		})
		if err != nil {
			errs = append(errs, fmt.Errorf("deleting %d objects from s3://%s: %w", len(batch), bucket, err))
			continue
		}
		for _, e := range out.Errors {
			errs = append(errs, fmt.Errorf("deleting s3://%s/%s: %s %s", bucket, aws.ToString(e.Key), aws.ToString(e.Code), aws.ToString(e.Message)))
		}
	}
	return errors.Join(errs...)
}
