package ebspp

import (
	"context"
	"fmt"

	"github.com/hashicorp/packer-plugin-sdk/multistep"
	packersdk "github.com/hashicorp/packer-plugin-sdk/packer"

	"github.com/instancestore/packer-plugin-instancestore/agent/driver"
)

// stepWriteVolume runs the agent on the helper: it streams the bundle's parts from S3
// (presigned GETs), checks and decrypts them and writes the image onto the volume.
// Nothing to undo: the volume goes in stepCreateVolume's Cleanup.
type stepWriteVolume struct{}

func (s *stepWriteVolume) Run(ctx context.Context, state multistep.StateBag) multistep.StepAction {
	c := configOf(state)
	src := sourceOf(state)
	comm, ok := state.Get("communicator").(packersdk.Communicator)
	if !ok {
		return halt(state, fmt.Errorf("no communicator to the helper instance"))
	}
	arch := "x86_64"
	if src.Image.Architecture == "i386" {
		arch = "i386"
	}
	_, err := driver.Restore(ctx, driver.RestoreConfig{
		Comm: comm, Ui: ui(state), Bucket: src.Bucket,
		ManifestXML: src.ManifestXML, Key: src.Key,
		VolumeID: stringOf(state, keyVolume), AttachName: stringOf(state, keyDevice),
		Architecture: arch, AgentBinary: c.AgentBinary, ExecuteCommand: c.ExecuteCommand, RemoteFolder: c.RemoteFolder,
	})
	if err != nil {
		return halt(state, fmt.Errorf("writing the image onto the volume: %w", err))
	}
	return multistep.ActionContinue
}

func (s *stepWriteVolume) Cleanup(multistep.StateBag) {}
