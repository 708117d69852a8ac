package bundle

import (
	"fmt"
	"testing"
	"time"

	"github.com/instancestore/packer-plugin-instancestore/internal/fuzzcheck"
)

func TestNormalizeExtents(t *testing.T) {
	for _, c := range []struct {
		name string
		in   []Extent
		size int64
		want []Extent
	}{
		{"none", nil, 4096, []Extent{}},
		{"empty ones dropped", []Extent{{0, 0}, {512, 0}}, 4096, []Extent{}},
		{"sorted", []Extent{{2048, 512}, {0, 512}}, 4096, []Extent{{0, 512}, {2048, 512}}},
		{"widened to 512", []Extent{{100, 10}, {1500, 600}}, 4096, []Extent{{0, 512}, {1024, 1536}}},
		{"end clamped to the size", []Extent{{1000, 30}}, 1030, []Extent{{512, 518}}},
		{"overlapping merged", []Extent{{0, 1024}, {512, 1024}}, 4096, []Extent{{0, 1536}}},
		{"touching merged", []Extent{{0, 512}, {512, 512}}, 4096, []Extent{{0, 1024}}},
		{"touching after widening", []Extent{{0, 100}, {600, 100}}, 4096, []Extent{{0, 1024}}},
		{"contained", []Extent{{0, 4096}, {1024, 512}}, 4096, []Extent{{0, 4096}}},
	} {
		got, err := normalizeExtents(c.in, c.size)
		if err != nil {
			t.Errorf("%s: %v", c.name, err)
			continue
		}
		if fmt.Sprint(got) != fmt.Sprint(c.want) {
			t.Errorf("%s: normalizeExtents(%v, %d) = %v, want %v", c.name, c.in, c.size, got, c.want)
		}
	}
	for _, bad := range [][]Extent{{{-1, 10}}, {{0, -1}}, {{4000, 100}}, {{5000, 0}}} {
		if _, err := normalizeExtents(bad, 4096); err == nil {
			t.Errorf("normalizeExtents(%v, 4096) accepted an extent outside the image", bad)
		}
	}
}

// FuzzNormalizeExtents checks the invariants of the sparse map on arbitrary extents:
// sorted, disjoint and not touching, 512-aligned but for an end at the image size,
// inside the image, and covering every input byte.
func FuzzNormalizeExtents(f *testing.F) {
	f.Add(int64(4096), []byte{0, 1, 2, 3, 200, 100})
	f.Add(int64(1030), []byte{250, 30})
	f.Add(int64(0), []byte{})
	fuzzcheck.CapMinimize(time.Second)
	f.Fuzz(func(t *testing.T, size int64, spec []byte) {
		// The coverage check below is quadratic in the extents: 2,048 of them keep an
		// input under a few milliseconds.
		if size < 0 || size > 1<<20 || len(spec) > 4<<10 {
			return
		}
		var in []Extent
		for i := 0; i+1 < len(spec); i += 2 {
			off := int64(spec[i]) * size / 256
			in = append(in, Extent{off, min(int64(spec[i+1])*37, size-off)})
		}
		out, err := normalizeExtents(in, size)
		if err != nil {
			t.Fatal(err)
		}
		for i, e := range out {
			if e.Length <= 0 || e.Offset < 0 || e.End() > size || e.Offset%512 != 0 || (e.End()%512 != 0 && e.End() != size) {
				t.Fatalf("extent %v of %v is not aligned or not inside %d bytes", e, out, size)
			}
			if i > 0 && out[i-1].End() >= e.Offset {
				t.Fatalf("extents %v and %v overlap or touch", out[i-1], e)
			}
		}
		for _, e := range in {
			for _, b := range []int64{e.Offset, e.End() - 1} {
				if e.Length == 0 {
					continue
				}
				covered := false
				for _, o := range out {
					covered = covered || (b >= o.Offset && b < o.End())
				}
				if !covered {
					t.Fatalf("byte %d of input extent %v is not covered by %v", b, e, out)
				}
			}
		}
	})
}
