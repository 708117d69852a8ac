//go:build !linux

package agent

// markRun: volume runs are Linux-only (see buildVolumeImage), so there is nothing to
// mark or sweep.
func markRun(req *Request, _ func(string, ...any)) (*Request, func(), error) {
	return req, func() {}, nil
}
