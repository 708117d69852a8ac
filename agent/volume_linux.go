package agent

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/instancestore/packer-plugin-instancestore/bundle/volume"
)

// volumeImage is the imaging result the agent bundles and removes.
type volumeImage = volume.Image

// buildVolumeImage images the volume of req into its scratch directory and returns
// the image path. The agent's own files (binary and work directory) are left out.
//
// The scratch directory is the run's (markRun picked it, and mounted the NVMe
// instance store disk for it when that is the scratch; the run's release unmounts it).
func buildVolumeImage(ctx context.Context, req *Request, logf func(string, ...any)) (*volumeImage, error) {
	v := req.Volume
	scratch := v.Scratch
	if scratch == "" {
		return nil, errors.New("imaging a volume needs a scratch directory (markRun gives each run one)")
	}
	own := []string{}
	if req.WorkDir != "" {
		own = append(own, req.WorkDir)
	}
	if exe, err := os.Executable(); err == nil {
		own = append(own, exe)
	}
	lines := &logWriter{logf: logf}
	img, err := volume.Build(ctx, volume.Config{
		PlanConfig: volume.PlanConfig{
			Volume:   v.Volume,
			Excludes: v.Excludes,
			Includes: v.Includes,
			Filter:   v.Filter,
			Own:      own,
			Scratch:  scratch,
		},
		Size:      v.SizeMB << 20,
		Partition: v.Partition,
		ImageName: req.Name + ".img",
		// Every type that runs an instance store-backed AMI is Xen HVM or PV.
		XenBoot: true,
		// Fail before imaging, not half-way.
		RequireScratchRoom: true,
		Log:                lines,
		Warn:               func(m string) { logf("warning: %s", m) },
		AfterCopy: func(root string) error {
			if len(v.RemoveAuthorizedKeys) == 0 {
				return nil
			}
			return removeAuthorizedKeys(root, v.RemoveAuthorizedKeys, logf)
		},
	})
	lines.flush()
	if err != nil {
		return nil, fmt.Errorf("imaging volume %s: %w", orRoot(v.Volume), err)
	}
	logf("imaged %s: %d MiB image, %d MiB of file data", orRoot(v.Volume), img.Size>>20, img.Stats.Bytes>>20)
	return img, nil
}

// scratchNeed is the room the image's data needs in scratch: the volume's used space.
func scratchNeed(v *VolumeRequest) int64 {
	var s unix.Statfs_t
	if unix.Statfs(orRoot(v.Volume), &s) != nil {
		return v.SizeMB << 20
	}
	return int64(s.Blocks-s.Bfree) * int64(s.Bsize)
}

func orRoot(s string) string {
	if s == "" {
		return "/"
	}
	return s
}

// logWriter turns the imaging log (text written to an io.Writer, where a line may
// take several writes) into one log event per line.
type logWriter struct {
	logf func(string, ...any)
	mu   sync.Mutex
	part []byte // the start of a line not ended yet
}

func (l *logWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.part = append(l.part, p...)
	for {
		i := bytes.IndexByte(l.part, '\n')
		if i < 0 {
			break
		}
		if i > 0 {
			l.logf("%s", l.part[:i])
		}
		l.part = l.part[i+1:]
	}
	return len(p), nil
}

// flush logs a last line that has no newline.
func (l *logWriter) flush() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.part) > 0 {
		l.logf("%s", l.part)
		l.part = nil
	}
}
