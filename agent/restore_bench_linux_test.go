package agent

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/instancestore/packer-plugin-instancestore/internal/testroot"
)

// BenchmarkRestoreVsGuide writes the same bundle onto a loop device two ways and
// prints wall time and peak scratch of each:
//   - stream: the agent's restore mode (GET -> check -> decrypt -> gunzip -> untar ->
//     data blocks onto the device), no scratch;
//   - guide: the EC2 guide's method: download every part to a directory, unbundle to
//     an image file with openssl, gunzip and tar, then dd the file onto the device.
//
// The image is 40 MiB with 25 MiB of random data (newRestoreFixture); run with
// -benchtime=1x.
func BenchmarkRestoreVsGuide(b *testing.B) {
	testroot.Require(b)
	for _, tool := range []string{"openssl", "gunzip", "tar", "dd"} {
		if _, err := exec.LookPath(tool); err != nil {
			b.Fatalf("%s is needed: %v", tool, err)
		}
	}
	f := newRestoreFixture(b)
	dev, _ := loopDevice(b, restoreImageSize)
	var stream, guide time.Duration
	var guideScratch int64
	for i := 0; i < b.N; i++ {
		start := time.Now()
		if _, msg, err := f.run(b, dev); err != nil {
			b.Fatalf("restore: %v (%s)", err, msg)
		}
		stream += time.Since(start)

		start = time.Now()
		scratch := b.TempDir()
		var partBytes int64
		var names []string
		for _, p := range f.manifest.Parts {
			req, _ := http.NewRequest(http.MethodGet, f.srv.URL+"/"+p.Filename, nil)
			req.Header.Set("X-Test-Signed", "yes")
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				b.Fatal(err)
			}
			out, _ := os.Create(filepath.Join(scratch, p.Filename))
			n, err := io.Copy(out, resp.Body)
			resp.Body.Close()
			if err != nil || out.Close() != nil {
				b.Fatal(err)
			}
			partBytes += n
			names = append(names, filepath.Join(scratch, p.Filename))
		}
		img := filepath.Join(scratch, "img")
		os.Mkdir(img, 0o755)
		sh := fmt.Sprintf("cat %s | openssl enc -d -aes-128-cbc -K %s -iv %s | gunzip | tar -x -C %s",
			strings.Join(names, " "), f.key.KeyHex(), f.key.IVHex(), img)
		if out, err := exec.Command("sh", "-c", sh).CombinedOutput(); err != nil {
			b.Fatalf("unbundle: %v: %s", err, out)
		}
		file := filepath.Join(img, f.manifest.Name)
		var st syscall.Stat_t
		if err := syscall.Stat(file, &st); err != nil {
			b.Fatal(err)
		}
		guideScratch = partBytes + st.Blocks*512
		if out, err := exec.Command("dd", "if="+file, "of="+dev, "bs=1M", "conv=fsync", "status=none").CombinedOutput(); err != nil {
			b.Fatalf("dd: %v: %s", err, out)
		}
		guide += time.Since(start)
	}
	n := time.Duration(b.N)
	b.ReportMetric(float64((stream / n).Milliseconds()), "stream-ms")
	b.ReportMetric(float64((guide / n).Milliseconds()), "guide-ms")
	b.ReportMetric(float64(guideScratch>>20), "guide-scratch-MiB")
	b.ReportMetric(0, "stream-scratch-MiB")
	fmt.Printf("restore of a %d MiB image (%d parts, %d MiB bundled): stream %s, no scratch; guide (download, openssl|gunzip|tar, dd) %s, peak scratch %d MiB\n",
		f.manifest.Size>>20, len(f.manifest.Parts), f.manifest.BundledSize>>20, (stream / n).Round(time.Millisecond), (guide / n).Round(time.Millisecond), guideScratch>>20)
}
