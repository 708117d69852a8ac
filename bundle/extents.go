package bundle

import (
	"fmt"
	"slices"
)

// Extent is a range of an image that holds data. Everything outside the extents of an
// image is a hole: it reads as zeros and is neither read nor compressed.
type Extent struct {
	Offset, Length int64
}

// End is the offset just past the extent.
func (e Extent) End() int64 { return e.Offset + e.Length }

// tarBlock is the tar block size. Extents are widened to it so that every extent but
// the last covers whole blocks: GNU tar pads each sparse region to a block of its own,
// other readers (Go's archive/tar) read the regions back to back, and both agree only
// when the regions are block multiples.
const tarBlock = 512

// normalizeExtents sorts extents, widens them to 512-byte boundaries (clamped to size),
// merges those that overlap or touch, and drops empty ones. The result is what the
// sparse map of the tar member lists.
func normalizeExtents(in []Extent, size int64) ([]Extent, error) {
	out := make([]Extent, 0, len(in))
	for _, e := range in {
		if e.Offset < 0 || e.Length < 0 || e.Offset > size || e.Length > size-e.Offset {
			return nil, fmt.Errorf("image extent [%d, +%d) lies outside the image of %d bytes", e.Offset, e.Length, size)
		}
		if e.Length == 0 {
			continue
		}
		start := e.Offset &^ (tarBlock - 1)
		end := min((e.End()+tarBlock-1)&^(tarBlock-1), size)
		out = append(out, Extent{start, end - start})
	}
	slices.SortFunc(out, func(a, b Extent) int {
		switch {
		case a.Offset < b.Offset:
			return -1
		case a.Offset > b.Offset:
			return 1
		}
		return 0
	})
	merged := out[:0]
	for _, e := range out {
		if n := len(merged); n > 0 && e.Offset <= merged[n-1].End() {
			last := &merged[n-1]
			last.Length = max(last.End(), e.End()) - last.Offset
			continue
		}
		merged = append(merged, e)
	}
	return merged, nil
}

// dataSize is the number of bytes the extents cover.
func dataSize(extents []Extent) int64 {
	var n int64
	for _, e := range extents {
		n += e.Length
	}
	return n
}
