package importpp

import (
	"context"
	"fmt"

	"github.com/hashicorp/packer-plugin-sdk/multistep"
)

// stepAccountID settles the account that owns the bundle: the credentials' account
// (STS), which must match account_id when that is set.
type stepAccountID struct{}

func (s *stepAccountID) Run(ctx context.Context, state multistep.StateBag) multistep.StepAction {
	id, err := configOf(state).Options.Account(ctx, *awsConfig(state))
	if err != nil {
		return halt(state, err)
	}
	ui(state).Say(fmt.Sprintf("Bundling for account %s", id))
	state.Put(keyAccountID, id)
	return multistep.ActionContinue
}

func (s *stepAccountID) Cleanup(multistep.StateBag) {}
