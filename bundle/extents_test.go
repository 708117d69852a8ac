package bundle

import (
	"fmt"
	"testing"
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
