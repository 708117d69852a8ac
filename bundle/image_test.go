package bundle

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestOpenImageFindsDataExtents(t *testing.T) {
	const M = 1 << 20
	dir := t.TempDir()
	for _, c := range []struct {
		name    string
		size    int64
		extents []Extent
	}{
		{"sparse", 16 * M, []Extent{{0, 64 << 10}, {M, 4 * M}, {10 * M, 8 << 10}}},
		{"ends with data", 8 * M, []Extent{{4 * M, 4 * M}}},
		{"all hole", 8 * M, nil},
		{"no holes", 3*M + 5, []Extent{{0, 3*M + 5}}},
		{"empty", 0, nil},
	} {
		path := filepath.Join(dir, c.name)
		makeSparse(t, path, c.size, c.extents, false)
		mtime := time.Date(2021, 3, 4, 5, 6, 7, 0, time.UTC)
		os.Chtimes(path, mtime, mtime)
		os.Chmod(path, 0o600)
		img, err := OpenImage(path)
		if err != nil {
			t.Fatal(err)
		}
		want := c.extents
		if want == nil {
			want = []Extent{}
		}
		if fmt.Sprint(img.Extents()) != fmt.Sprint(want) {
			t.Errorf("%s: extents %v, want %v", c.name, img.Extents(), want)
		}
		if img.Size() != c.size || !img.ModTime().Equal(mtime) || img.Mode().Perm() != 0o600 {
			t.Errorf("%s: size %d mtime %v mode %v", c.name, img.Size(), img.ModTime(), img.Mode())
		}
		if err := img.Close(); err != nil {
			t.Error(err)
		}
	}
}

func TestOpenImageErrors(t *testing.T) {
	if _, err := OpenImage(t.TempDir()); err == nil {
		t.Error("OpenImage accepted a directory")
	}
	if _, err := OpenImage(filepath.Join(t.TempDir(), "missing")); err == nil {
		t.Error("OpenImage accepted a missing file")
	}
}

func TestNewImage(t *testing.T) {
	img := NewImage(nil, 4096, nil, time.Unix(0, 0), 0o644)
	if fmt.Sprint(img.Extents()) != "[{0 4096}]" {
		t.Errorf("nil extents: %v, want the whole image", img.Extents())
	}
	img = NewImage(nil, 4096, []Extent{}, time.Unix(0, 0), 0o644)
	if len(img.Extents()) != 0 {
		t.Errorf("empty extents: %v, want none", img.Extents())
	}
	img = NewImage(nil, 4096, []Extent{{4000, 1000}}, time.Unix(0, 0), 0o644)
	if _, err := Write(t.Context(), img, WriterConfig{Name: "x", Key: testKey(t)}, &memSink{}); err == nil {
		t.Error("Write accepted an image with an extent past its end")
	}
	if err := img.Close(); err != nil {
		t.Error(err)
	}
}
