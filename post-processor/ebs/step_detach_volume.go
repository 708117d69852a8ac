package ebspp

import (
	"context"

	"github.com/hashicorp/packer-plugin-sdk/multistep"
)

// stepDetachVolume detaches the written volume, so that its snapshot is of a volume
// nobody writes to.
type stepDetachVolume struct{}

func (s *stepDetachVolume) Run(ctx context.Context, state multistep.StateBag) multistep.StepAction {
	vol := stringOf(state, keyVolume)
	if err := detach(ctx, state, vol); err != nil {
		return halt(state, err)
	}
	state.Put(keyDetached, true)
	ui(state).Sayf("Detached %s", vol)
	return multistep.ActionContinue
}

func (s *stepDetachVolume) Cleanup(multistep.StateBag) {}
