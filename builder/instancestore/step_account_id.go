package instancestore

import (
	"context"
	"fmt"

	"github.com/hashicorp/packer-plugin-sdk/multistep"

	"github.com/instancestore/packer-plugin-instancestore/agent/driver"
)

// stepAccountID settles the account that owns the bundle: the account of the
// credentials in use (STS GetCallerIdentity), checked against account_id when that is
// set, so that templates need not repeat what the credentials already say and a wrong
// account_id fails before anything is launched.
type stepAccountID struct {
	Options *driver.Options
}

func (s *stepAccountID) Run(ctx context.Context, state multistep.StateBag) multistep.StepAction {
	id, err := s.Options.Account(ctx, *awsConfig(state))
	if err != nil {
		return halt(state, err)
	}
	ui(state).Say(fmt.Sprintf("Bundling for account %s", id))
	state.Put(keyAccountID, id)
	return multistep.ActionContinue
}

func (s *stepAccountID) Cleanup(multistep.StateBag) {}
