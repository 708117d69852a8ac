package importpp

import (
	"context"
	"fmt"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sts"
	"github.com/hashicorp/packer-plugin-sdk/multistep"

	"github.com/instancestore/packer-plugin-instancestore/internal/bundleconfig"
)

// stepAccountID settles the account that owns the bundle: account_id, else the
// account of the credentials (STS GetCallerIdentity).
type stepAccountID struct{ AccountID string }

func (s *stepAccountID) Run(ctx context.Context, state multistep.StateBag) multistep.StepAction {
	if s.AccountID != "" {
		state.Put(keyAccountID, s.AccountID)
		return multistep.ActionContinue
	}
	out, err := sts.NewFromConfig(*awsConfig(state)).GetCallerIdentity(ctx, &sts.GetCallerIdentityInput{})
	if err != nil {
		return haltf(state, "finding the AWS account for the bundle manifest with STS GetCallerIdentity: %w; set account_id to your 12-digit account ID", err)
	}
	id := aws.ToString(out.Account)
	if !bundleconfig.ReAccountID.MatchString(id) {
		return haltf(state, "STS GetCallerIdentity returned account %q, not a 12-digit account ID; set account_id", id)
	}
	ui(state).Say(fmt.Sprintf("Bundling for account %s", id))
	state.Put(keyAccountID, id)
	return multistep.ActionContinue
}

func (s *stepAccountID) Cleanup(multistep.StateBag) {}
