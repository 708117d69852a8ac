package steps

import (
	"context"
	"fmt"

	"github.com/hashicorp/packer-plugin-sdk/multistep"

	"github.com/instancestore/packer-plugin-instancestore/agent/driver"
)

// StepAccountID settles the account that owns the bundle: the account of the
// credentials in use (STS GetCallerIdentity), checked against account_id when that is
// set, so that templates need not repeat what the credentials already say and a wrong
// account_id fails before anything is launched or read.
type StepAccountID struct {
	Options *driver.Options
}

func (s *StepAccountID) Run(ctx context.Context, state multistep.StateBag) multistep.StepAction {
	id, err := s.Options.Account(ctx, *AWSConfig(state))
	if err != nil {
		return Halt(state, err)
	}
	UI(state).Say(fmt.Sprintf("Bundling for account %s", id))
	state.Put(KeyAccountID, id)
	return multistep.ActionContinue
}

func (s *StepAccountID) Cleanup(multistep.StateBag) {}
