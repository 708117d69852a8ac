package agent

import (
	"context"
	"fmt"

	"github.com/instancestore/packer-plugin-instancestore/bundle"
)

// RestoreDevice is restore mode's writer: it checks device (a whole-disk block
// device that is not mounted, not the root file system's disk, holds no swap and is
// at least the image's size; openTarget), opens it O_EXCL and streams the bundle of
// m from src onto it: decrypt, gunzip, untar, only the image's non-zero blocks
// written (the device must read zeros, a fresh volume), every part's SHA-1 and the
// image digest checked (bundle.WriteImageAt). The image is good only when it returns
// nil; the device is synced before. The agent's restore mode and `instancestore-
// bundler restore-bundle` (on the instance, parts straight from S3) both use it.
// logf, if not nil, is told what is written where; written, if not nil, of every
// write's bytes.
func RestoreDevice(ctx context.Context, m *bundle.Manifest, key bundle.Key, src bundle.PartSource, device string, logf func(string, ...any), written func(int64)) (*RestoreResult, error) {
	if err := m.Validate(); err != nil {
		return nil, err
	}
	dev, devSize, err := openTarget(device, m.Size)
	if err != nil {
		return nil, err
	}
	defer dev.Close()
	if logf != nil {
		logf("writing image %s (%d MiB, %d parts) onto %s (%d MiB)", m.Name, m.Size>>20, len(m.Parts), device, devSize>>20)
	}
	var total int64
	rep, err := bundle.WriteImageAt(ctx, m, key, src, dev, func(n int64) {
		total += n
		if written != nil {
			written(n)
		}
	})
	if err != nil {
		return nil, fmt.Errorf("writing the image onto %s: %w", device, err)
	}
	// Success only once the data is on the device.
	if err := dev.Sync(); err != nil {
		return nil, fmt.Errorf("flushing %s: %w", device, err)
	}
	if err := dev.Close(); err != nil {
		return nil, fmt.Errorf("closing %s: %w", device, err)
	}
	res := &RestoreResult{Device: device, DeviceSize: devSize, ImageSize: m.Size, Written: total, Digest: m.Digest}
	for _, c := range rep.Checks {
		res.Checks = append(res.Checks, c.Name+": "+c.Detail)
	}
	return res, nil
}
