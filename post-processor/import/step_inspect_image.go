package importpp

import (
	"context"
	"fmt"

	"github.com/hashicorp/packer-plugin-sdk/multistep"
)

// stepInspectImage picks the image (image_path or the input artifact's first raw
// image) and settles the virtualization type from what the image is.
type stepInspectImage struct {
	ImagePath      string
	Files          []string
	Virtualization string
	KernelID       string
}

func (s *stepInspectImage) Run(_ context.Context, state multistep.StateBag) multistep.StepAction {
	path, err := chooseImage(s.ImagePath, s.Files)
	if err != nil {
		return halt(state, err)
	}
	info, err := inspectImage(path, s.Virtualization, s.KernelID)
	if err != nil {
		return halt(state, err)
	}
	ui(state).Say(fmt.Sprintf("Importing %s: a %s (%s), registered as %s", info.Path, info.Kind, info.Format, info.Virtualization))
	state.Put(keyImage, info)
	return multistep.ActionContinue
}

func (s *stepInspectImage) Cleanup(multistep.StateBag) {}
