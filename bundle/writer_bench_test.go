package bundle

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
)

// BenchmarkWrite bundles a 256 MiB sparse image holding 64 MiB of text-like data in
// 16 extents, at several gzip levels, into memory. It reports the image data rate
// (MB/s) and the bundled size over the data size. bench/bundle-image.sh compares the
// whole command with the reference pipeline on a real file system image.
func BenchmarkWrite(b *testing.B) {
	const M = 1 << 20
	var extents []Extent
	for i := range int64(16) {
		extents = append(extents, Extent{i * 16 * M, 4 * M})
	}
	path := filepath.Join(b.TempDir(), "bench.img")
	makeSparse(b, path, 256*M, extents, false)
	img, err := OpenImage(path)
	if err != nil {
		b.Fatal(err)
	}
	defer img.Close()
	key, _ := NewKey()
	for _, level := range []int{1, 4, 5, DefaultLevel, 9} {
		b.Run(fmt.Sprintf("level%d", level), func(b *testing.B) {
			b.SetBytes(dataSize(img.Extents()))
			var bundled int64
			for b.Loop() {
				res, err := Write(context.Background(), img, WriterConfig{Name: "bench", Key: key, Level: level}, discardSink{})
				if err != nil {
					b.Fatal(err)
				}
				bundled = res.BundledSize
			}
			b.ReportMetric(float64(bundled)/float64(dataSize(img.Extents())), "bundled/data")
		})
	}
}

type discardSink struct{}

func (discardSink) PutPart(*Part) error { return nil }
func (discardSink) Close() error        { return nil }
