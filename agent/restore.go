package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"time"

	"github.com/instancestore/packer-plugin-instancestore/bundle"
	"github.com/instancestore/packer-plugin-instancestore/s3/presigned"
)

// RestoreRequest is what ModeRestore needs: the bundle's manifest and the block
// device to write its image onto. The parts are fetched with presigned GETs the
// agent asks the host for, one EventPart per part (Size and SHA1 from the manifest),
// just before it reads the part, so no URL expires while earlier parts stream.
type RestoreRequest struct {
	// Manifest is the bundle's manifest XML, as stored in S3.
	Manifest string `json:"manifest"`
	// Device is the target: a whole disk (/dev/xvdf, /dev/nvme1n1) that is not
	// mounted, not the root file system's disk and at least the image's size. It must
	// read zeros (a fresh EBS volume): blocks of zeros in the image are not written.
	Device string `json:"device,omitempty"`
	// VolumeID and AttachName, when Device is empty, find the device of an attached
	// EBS volume (findVolume): by its NVMe serial on Nitro, else by the attach name
	// as the kernel shows it (/dev/sdf is /dev/xvdf in a Xen guest).
	VolumeID   string `json:"volume_id,omitempty"`
	AttachName string `json:"attach_name,omitempty"`
	// Attempts is how often a part's GET is tried (default 5).
	Attempts int `json:"attempts,omitempty"`
}

// RestoreResult is what a restore wrote.
type RestoreResult struct {
	Device     string   `json:"device"`
	DeviceSize int64    `json:"device_size"`
	ImageSize  int64    `json:"image_size"`
	Written    int64    `json:"written"` // bytes of data written (zeros are skipped)
	Digest     string   `json:"digest"`  // the manifest's, checked
	Checks     []string `json:"checks"`  // what was verified, in order
}

func (r *RestoreRequest) check() error {
	if r == nil {
		return errors.New("mode restore needs the restore options")
	}
	if r.Device == "" && r.VolumeID == "" {
		return errors.New("restore: give the target device or the volume id")
	}
	if r.Device != "" && (!strings.HasPrefix(r.Device, "/dev/") || filepath.Clean(r.Device) != r.Device) {
		return fmt.Errorf("restore target %q: want a block device path under /dev/", r.Device)
	}
	if _, err := bundle.ParseManifest([]byte(r.Manifest)); err != nil {
		return fmt.Errorf("restore: the manifest: %w", err)
	}
	return nil
}

// restore writes the bundle of req onto req.Restore.Device. The target is checked
// (RestoreDevice, openTarget) before the first part is fetched.
func (a *agent) restore(ctx context.Context, req *Request) (*RestoreResult, error) {
	rr := req.Restore
	key, _ := req.BundleKey()
	m, err := bundle.ParseManifest([]byte(rr.Manifest))
	if err != nil {
		return nil, err
	}
	if err := m.Validate(); err != nil {
		return nil, err
	}
	if rr.Device == "" {
		if rr.Device, err = findVolume(rr.VolumeID, rr.AttachName, m.Size); err != nil {
			return nil, err
		}
		a.log("volume %s is %s", rr.VolumeID, rr.Device)
	}

	interval := time.Duration(req.ProgressMillis) * time.Millisecond
	if interval <= 0 {
		interval = time.Second
	}
	a.phase.Store("restoring")
	a.total.Store(m.BundledSize)
	stopProgress := a.reportProgress(interval)
	defer stopProgress()

	attempts := rr.Attempts
	if attempts <= 0 {
		attempts = 5
	}
	src := &getSource{ctx: ctx, a: a, m: m, client: presigned.NewClient(60 * time.Second), attempts: attempts}
	res, err := RestoreDevice(ctx, m, key, src, rr.Device, a.log, nil)
	if err != nil {
		return nil, err
	}
	a.log("wrote %d MiB of data onto %s; every part's SHA-1 and the image digest match the manifest", res.Written>>20, rr.Device)
	return res, nil
}

// getSource is the bundle.PartSource of a restore: each part is fetched with a GET
// the host presigned. A GET that fails (before or during the body) is tried again,
// resuming with a Range request where it stopped.
type getSource struct {
	ctx      context.Context
	a        *agent
	m        *bundle.Manifest
	client   *http.Client
	attempts int
}

func (s *getSource) OpenPart(name string) (io.ReadCloser, error) {
	idx := -1
	for i, p := range s.m.Parts {
		if p.Filename == name {
			idx = i
		}
	}
	if idx < 0 {
		return nil, fmt.Errorf("part %s is not in the manifest", name)
	}
	return &resumingBody{s: s, idx: idx, name: name}, nil
}

type resumingBody struct {
	s     *getSource
	idx   int
	name  string
	off   int64
	body  io.ReadCloser
	tries int
}

func (b *resumingBody) open() error {
	var last error
	for b.tries < b.s.attempts {
		if b.tries > 0 {
			select {
			case <-time.After(time.Duration(b.tries) * time.Second):
			case <-b.s.ctx.Done():
				return b.s.ctx.Err()
			}
		}
		b.tries++
		req, err := b.s.a.presignGet(b.s.ctx, b.idx, b.s.m.Parts[b.idx])
		if err != nil {
			return fmt.Errorf("getting the download URL of %s: %w", b.name, err)
		}
		hreq, err := http.NewRequestWithContext(b.s.ctx, http.MethodGet, req.URL, nil)
		if err != nil {
			return fmt.Errorf("download URL of %s: %v", b.name, errors.Unwrap(err))
		}
		for k, v := range req.Header {
			hreq.Header[k] = v
		}
		want := http.StatusOK
		if b.off > 0 {
			hreq.Header.Set("Range", fmt.Sprintf("bytes=%d-", b.off))
			want = http.StatusPartialContent
		}
		resp, err := b.s.client.Do(hreq)
		if err != nil {
			if b.s.ctx.Err() != nil {
				return b.s.ctx.Err()
			}
			last = fmt.Errorf("network: %v", errors.Unwrap(err)) // the URL stays out of messages
			b.s.a.log("downloading %s (attempt %d): %v", b.name, b.tries, last)
			continue
		}
		if resp.StatusCode != want {
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
			resp.Body.Close()
			last = fmt.Errorf("S3 answered %s: %s", resp.Status, strings.TrimSpace(string(body)))
			if resp.StatusCode == http.StatusForbidden || resp.StatusCode == http.StatusNotFound {
				return fmt.Errorf("downloading %s: %w", b.name, last)
			}
			b.s.a.log("downloading %s (attempt %d): %v", b.name, b.tries, last)
			continue
		}
		b.body = resp.Body
		return nil
	}
	return fmt.Errorf("downloading %s: %d attempts failed, the last: %w", b.name, b.s.attempts, last)
}

func (b *resumingBody) Read(p []byte) (int, error) {
	for {
		if b.body == nil {
			if err := b.open(); err != nil {
				return 0, err
			}
		}
		n, err := b.body.Read(p)
		b.off += int64(n)
		b.s.a.read.Add(int64(n))
		if err == nil || err == io.EOF || n > 0 {
			if err != nil && err != io.EOF {
				b.body.Close()
				b.body = nil
				err = nil
			}
			return n, err
		}
		if b.s.ctx.Err() != nil {
			return 0, b.s.ctx.Err()
		}
		b.s.a.log("downloading %s: broke off after %d bytes (%v), resuming", b.name, b.off, err)
		b.body.Close()
		b.body = nil
	}
}

func (b *resumingBody) Close() error {
	if b.body != nil {
		return b.body.Close()
	}
	return nil
}

// presignGet asks the host for a GET of part i and waits for the reply.
func (a *agent) presignGet(ctx context.Context, i int, p bundle.ManifestPart) (*presigned.Request, error) {
	ch := make(chan Reply, 1)
	a.wmu.Lock()
	a.waiting[p.Filename] = ch
	a.wmu.Unlock()
	a.send(Event{Type: EventPart, Part: &PartEvent{Index: i, Name: p.Filename, SHA1: p.Digest}})
	select {
	case r := <-ch:
		if r.Error != "" {
			return nil, errors.New(r.Error)
		}
		if r.Request == nil {
			return nil, errors.New("the host sent no URL")
		}
		return r.Request, nil
	case <-ctx.Done():
		a.wmu.Lock()
		delete(a.waiting, p.Filename)
		a.wmu.Unlock()
		return nil, ctx.Err()
	}
}
