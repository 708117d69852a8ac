package instancestore

import (
	"context"

	"github.com/hashicorp/packer-plugin-sdk/multistep"

	"github.com/instancestore/packer-plugin-instancestore/agent/driver"
)

// stepPreflightBucket checks, before anything is launched, that the bundle can be
// stored where EC2 will read it: the bucket exists in the build region (or is created
// when s3_create_bucket is set), has ACLs enabled, has no default encryption EC2 cannot
// read, and takes an object with the aws-exec-read ACL.
type stepPreflightBucket struct {
	Options *driver.Options
}

func (s *stepPreflightBucket) Run(ctx context.Context, state multistep.StateBag) multistep.StepAction {
	b, err := s.Options.PreflightBucket(ctx, *awsConfig(state), region(state), ui(state).Say)
	if err != nil {
		return halt(state, err)
	}
	state.Put(keyBucket, b)
	return multistep.ActionContinue
}

func (s *stepPreflightBucket) Cleanup(multistep.StateBag) {}
