package bundle

import (
	"fmt"
	"io"
	"os"
	"slices"
	"time"
)

// Image is the disk image a bundle is made of: its bytes, apparent size, data extents,
// and the mode and modification time the tar member carries.
type Image struct {
	r       io.ReaderAt
	closer  io.Closer
	name    string // for error messages
	size    int64
	extents []Extent
	err     error // invalid extents given to NewImage, reported by Write
	modTime time.Time
	mode    os.FileMode
}

// OpenImage opens the image file at path and finds its data extents without reading
// them (SEEK_DATA/SEEK_HOLE on Linux; elsewhere the whole file counts as data).
func OpenImage(path string) (*Image, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("opening image: %w", err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("opening image: %w", err)
	}
	if !fi.Mode().IsRegular() {
		f.Close()
		return nil, fmt.Errorf("image %s is not a regular file (%s): give the path of an image file", path, fi.Mode().Type())
	}
	extents, err := findExtents(f, fi.Size())
	if err != nil {
		f.Close()
		return nil, err
	}
	extents, err = normalizeExtents(extents, fi.Size())
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("image %s: %w", path, err)
	}
	return &Image{
		r: f, closer: f, name: path,
		size: fi.Size(), extents: extents,
		modTime: fi.ModTime(), mode: fi.Mode(),
	}, nil
}

// NewImage describes an image held by r. extents lists where the data is; nil means
// the whole image is data, an empty non-nil slice means it is all hole. Extents are
// widened to 512-byte boundaries and merged; an extent outside [0, size) makes Write
// fail.
func NewImage(r io.ReaderAt, size int64, extents []Extent, modTime time.Time, mode os.FileMode) *Image {
	img := &Image{r: r, name: "image", size: size, modTime: modTime, mode: mode}
	if extents == nil {
		extents = []Extent{{0, size}}
	}
	img.extents, img.err = normalizeExtents(extents, size)
	return img
}

// Size is the apparent size of the image in bytes.
func (img *Image) Size() int64 { return img.size }

// Extents are the data extents of the image, sorted, 512-byte aligned (but the end
// of the last one may be the end of the image) and disjoint.
func (img *Image) Extents() []Extent { return slices.Clone(img.extents) }

// ModTime is the modification time the tar member carries.
func (img *Image) ModTime() time.Time { return img.modTime }

// Mode is the file mode the tar member carries (permission bits only are stored).
func (img *Image) Mode() os.FileMode { return img.mode }

// Close closes the image file opened by OpenImage; for NewImage it does nothing.
func (img *Image) Close() error {
	if img.closer == nil {
		return nil
	}
	return img.closer.Close()
}
