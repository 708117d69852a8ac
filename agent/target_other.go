//go:build !linux

package agent

import (
	"errors"
	"os"
)

func openTarget(dev string, imageSize int64) (*os.File, int64, error) {
	return nil, 0, errors.New("writing a bundle onto a volume needs Linux")
}

func findVolume(volumeID, attachName string, imageSize int64) (string, error) {
	return "", errors.New("writing a bundle onto a volume needs Linux")
}
