package driver

import (
	"fmt"
	"time"

	packersdk "github.com/hashicorp/packer-plugin-sdk/packer"

	"github.com/instancestore/packer-plugin-instancestore/agent"
)

// progressUI turns the agent's progress events into a UI line every interval: bytes
// read of the image, bytes and parts uploaded, upload rate and ETA.
type progressUI struct {
	ui       packersdk.Ui
	interval time.Duration
	last     time.Time
	start    time.Time
	phase    string
}

func newProgressUI(ui packersdk.Ui, interval time.Duration) *progressUI {
	return &progressUI{ui: ui, interval: interval, start: time.Now()}
}

func (p *progressUI) uploaded(*agent.PartEvent) {}

func (p *progressUI) update(e *agent.ProgressEvent) {
	if e == nil {
		return
	}
	now := time.Now()
	if e.Phase != p.phase {
		p.phase = e.Phase
		if e.Phase == "imaging" {
			p.ui.Say("Imaging the volume on the instance...")
		}
		if e.Phase == "bundling" {
			p.ui.Say("Bundling and uploading...")
		}
		if e.Phase == "restoring" {
			p.ui.Say("Downloading the parts and writing the image...")
		}
	}
	if e.Phase == "restoring" && e.BytesTotal > 0 && now.Sub(p.last) >= p.interval {
		p.last = now
		p.ui.Sayf("Downloaded and written %s of %s of parts (%d%%)", humanBytes(e.BytesRead), humanBytes(e.BytesTotal), e.BytesRead*100/e.BytesTotal)
		return
	}
	if now.Sub(p.last) < p.interval || e.Phase != "bundling" || e.BytesTotal == 0 {
		return
	}
	p.last = now
	p.ui.Say(progressLine(e))
}

func progressLine(e *agent.ProgressEvent) string {
	s := fmt.Sprintf("Bundled %s of %s", humanBytes(e.BytesRead), humanBytes(e.BytesTotal))
	if e.BytesTotal > 0 {
		s += fmt.Sprintf(" (%d%%)", e.BytesRead*100/e.BytesTotal)
	}
	s += fmt.Sprintf(", uploaded %s in %d parts at %s/s", humanBytes(e.BytesUploaded), e.PartsUploaded, humanBytes(int64(e.Rate)))
	// The ETA follows the reading side, which the uploads keep pace with (parts in
	// flight are bounded).
	if e.BytesRead > 0 && e.BytesTotal > e.BytesRead && e.Rate > 0 && e.BytesUploaded > 0 {
		ratio := float64(e.BytesUploaded) / float64(e.BytesRead) // compressed bytes per image byte
		left := float64(e.BytesTotal-e.BytesRead) * ratio / e.Rate
		s += fmt.Sprintf(", about %s left", (time.Duration(left) * time.Second).Round(time.Second))
	}
	return s
}

func (p *progressUI) done(r *agent.ResultEvent) {
	if r.Restore != nil {
		return // Restore says what it wrote
	}
	d := time.Since(p.start)
	rate := float64(r.BundledSize) / max(d.Seconds(), 0.001)
	p.ui.Sayf("Bundled %s of image into %d parts (%s) in %s, %s/s", humanBytes(r.Size), len(r.Parts), humanBytes(r.BundledSize), d.Round(time.Second), humanBytes(int64(rate)))
}

func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
