package importpp

import (
	"context"
	"fmt"

	"github.com/hashicorp/packer-plugin-sdk/multistep"

	s3bundle "github.com/instancestore/packer-plugin-instancestore/s3"
)

// stepPreflightBucket checks, before the image is read, that the bundle can be stored
// where EC2 reads it: bucket in the build region (or created), ACLs enabled, an
// aws-exec-read upload accepted.
type stepPreflightBucket struct {
	Bucket, Prefix    string
	PathStyle, Create bool
}

func (s *stepPreflightBucket) Run(ctx context.Context, state multistep.StateBag) multistep.StepAction {
	r := region(state)
	b, err := s3bundle.New(*awsConfig(state), r, s.Bucket, s.Prefix, s3bundle.Options{PathStyle: s.PathStyle})
	if err != nil {
		return halt(state, err)
	}
	ui(state).Say(fmt.Sprintf("Checking bundle location %s (region %s, ACLs, upload with aws-exec-read)...", b, r))
	created, err := b.Preflight(ctx, s3bundle.PreflightOptions{Create: s.Create})
	if err != nil {
		return halt(state, err)
	}
	if created {
		ui(state).Say(fmt.Sprintf("Created bucket %s in %s (it is kept afterwards)", s.Bucket, r))
	}
	state.Put(keyBucket, b)
	return multistep.ActionContinue
}

func (s *stepPreflightBucket) Cleanup(multistep.StateBag) {}
