//go:build !linux

package agent

import "context"

// markRun: volume runs are Linux-only (see buildVolumeImage), so there is nothing to
// mark or sweep.
func markRun(_ context.Context, req *Request, _ func(string, ...any)) (*Request, func(), error) {
	return req, func() {}, nil
}

// Sweep has nothing to do where volume runs do not exist.
func Sweep(string) []string { return nil }

// StateDir is where Linux runs leave their markers.
const StateDir = "/run/instancestore-bundler"
