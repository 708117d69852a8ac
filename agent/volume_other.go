//go:build !linux

package agent

import (
	"context"
	"errors"
)

// volumeImage stands for the Linux imaging result where there is none.
type volumeImage struct{ Path string }

func (*volumeImage) Remove() error { return nil }

// buildVolumeImage: imaging a live volume is Linux-only (the agent runs on Linux
// instances); the package builds elsewhere because the host-side driver uses its
// protocol types.
func buildVolumeImage(context.Context, *Request, func(string, ...any)) (*volumeImage, error) {
	return nil, errors.New("imaging a volume needs Linux: the agent runs on the instance")
}
