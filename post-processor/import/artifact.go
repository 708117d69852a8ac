package importpp

import (
	"context"
	"errors"
	"fmt"

	"github.com/instancestore/packer-plugin-instancestore/builder/instancestore"
	s3bundle "github.com/instancestore/packer-plugin-instancestore/s3"
)

// Artifact is the imported image: the builder's artifact (AMI ids per region,
// manifest locations, HCP Packer metadata, "atlas.artifact.metadata"), with this
// post-processor's id, and a Destroy that also deletes the bundle it uploaded.
type Artifact struct {
	*instancestore.Artifact
	bucket  *s3bundle.Bucket
	objects []string
}

// BuilderId identifies the post-processor's artifacts.
func (a *Artifact) BuilderId() string { return BuilderId }

// Destroy deregisters the AMIs in every region and deletes the bundle's objects.
func (a *Artifact) Destroy() error {
	err := a.Artifact.Destroy()
	if a.bucket != nil && len(a.objects) > 0 {
		if derr := a.bucket.Delete(context.Background(), a.objects); derr != nil {
			err = errors.Join(err, fmt.Errorf("deleting the bundle under %s: %w", a.bucket, derr))
		}
	}
	return err
}
