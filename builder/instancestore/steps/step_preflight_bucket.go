package steps

import (
	"context"

	"github.com/hashicorp/packer-plugin-sdk/multistep"

	"github.com/instancestore/packer-plugin-instancestore/agent/driver"
)

// StepPreflightBucket checks, before anything is launched or read, that the bundle can
// be stored where EC2 will read it: the bucket exists in the build region (or is
// created when s3_create_bucket is set), has ACLs enabled, has no default encryption
// EC2 cannot read, and takes an object with the aws-exec-read ACL.
type StepPreflightBucket struct {
	Options *driver.Options
}

func (s *StepPreflightBucket) Run(ctx context.Context, state multistep.StateBag) multistep.StepAction {
	b, err := s.Options.PreflightBucket(ctx, *AWSConfig(state), Region(state), UI(state).Say)
	if err != nil {
		return Halt(state, err)
	}
	state.Put(KeyBucket, b)
	return multistep.ActionContinue
}

func (s *StepPreflightBucket) Cleanup(multistep.StateBag) {}
