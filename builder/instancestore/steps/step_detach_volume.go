package steps

import (
	"context"

	"github.com/hashicorp/packer-plugin-sdk/multistep"
)

// StepDetachVolume detaches the written volume, so that its snapshot is of a volume
// nobody writes to (the agent flushed it before it reported success).
type StepDetachVolume struct{}

func (s *StepDetachVolume) Run(ctx context.Context, state multistep.StateBag) multistep.StepAction {
	vol := StateString(state, KeyEBSVolume)
	if err := Detach(ctx, state, vol); err != nil {
		return Halt(state, err)
	}
	state.Put(KeyEBSDetached, true)
	UI(state).Sayf("Detached %s", vol)
	return multistep.ActionContinue
}

func (s *StepDetachVolume) Cleanup(multistep.StateBag) {}
