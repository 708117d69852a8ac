package importpp

import (
	"context"

	"github.com/hashicorp/packer-plugin-sdk/multistep"
)

// stepPreflightBucket checks, before the image is read, that the bundle can be stored
// where EC2 reads it: bucket in the build region (or created), ACLs enabled, an
// aws-exec-read upload accepted.
type stepPreflightBucket struct{}

func (s *stepPreflightBucket) Run(ctx context.Context, state multistep.StateBag) multistep.StepAction {
	b, err := configOf(state).Options.PreflightBucket(ctx, *awsConfig(state), region(state), ui(state).Say)
	if err != nil {
		return halt(state, err)
	}
	state.Put(keyBucket, b)
	return multistep.ActionContinue
}

func (s *stepPreflightBucket) Cleanup(multistep.StateBag) {}
