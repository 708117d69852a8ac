package bundle

import (
	"bytes"
	"context"
	"crypto/rand"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// patternImage is an in-memory image: data in its extents, zeros elsewhere.
type patternImage struct {
	size    int64
	extents []Extent
	data    map[int64][]byte // extent offset -> content
}

func (p *patternImage) ReadAt(b []byte, off int64) (int, error) {
	clear(b)
	for _, e := range p.extents {
		d := p.data[e.Offset]
		lo, hi := max(off, e.Offset), min(off+int64(len(b)), e.Offset+e.Length)
		if lo < hi {
			copy(b[lo-off:hi-off], d[lo-e.Offset:hi-e.Offset])
		}
	}
	if off+int64(len(b)) > p.size {
		return int(max(p.size-off, 0)), io.EOF
	}
	return len(b), nil
}

func newPatternImage(size int64, extents []Extent, random bool) *patternImage {
	p := &patternImage{size: size, extents: extents, data: map[int64][]byte{}}
	for _, e := range extents {
		d := make([]byte, e.Length)
		if random {
			rand.Read(d)
		} else {
			for i := range d {
				d[i] = byte((e.Offset + int64(i)) * 7 >> 5)
			}
		}
		p.data[e.Offset] = d
	}
	return p
}

// TestWriteThenUnbundle: bundles made by our Writer come back exactly through our
// reader, with the manifest built by NewManifest, signed, serialized and parsed again.
func TestWriteThenUnbundle(t *testing.T) {
	const M, G = 1 << 20, 1 << 30
	for _, c := range []struct {
		name    string
		size    int64
		extents []Extent
		random  bool
		parts   int
	}{
		{"tiny", 4096, []Extent{{0, 4096}}, false, 1},
		// Incompressible: three parts.
		{"multi-part", 64 * M, []Extent{{M, 22 * M}, {40 * M, 512 << 10}}, true, 3},
		// Sizes and offsets past 8 GiB need GNU base-256 numbers in the tar headers.
		{"sparse over 8 GiB", 9 * G, []Extent{{0, M}, {8*G + 3*M, 2 * M}, {9*G - 64<<10, 64 << 10}}, false, 1},
	} {
		t.Run(c.name, func(t *testing.T) {
			src := newPatternImage(c.size, c.extents, c.random)
			img := NewImage(src, c.size, c.extents, time.Unix(1577836800, 0), 0o644)
			k, err := NewKey()
			must(t, err)
			dir := t.TempDir()
			res, err := Write(context.Background(), img, WriterConfig{Name: "rt", Key: k}, DirSink(dir))
			must(t, err)
			if len(res.Parts) != c.parts {
				t.Errorf("%d parts, want %d", len(res.Parts), c.parts)
			}
			userCert, userKey, err := NewThrowawayUser()
			must(t, err)
			ec2, err := EC2Certificate("")
			must(t, err)
			m, err := NewManifest(res, ManifestConfig{Architecture: "x86_64", User: "1234-5678-9012"}, k, ec2, userCert)
			must(t, err)
			must(t, m.Sign(userKey))
			parsed, err := ParseManifest(m.Marshal())
			must(t, err)
			must(t, parsed.VerifySignature(&userKey.PublicKey))
			k2, err := UnwrapKey(userKey, parsed.UserEncryptedKey, parsed.UserEncryptedIV)
			must(t, err)

			out := filepath.Join(t.TempDir(), "out.img")
			f, err := os.Create(out)
			must(t, err)
			defer f.Close()
			if err := Unbundle(context.Background(), parsed, k2, DirSource(dir), f); err != nil {
				t.Fatalf("Unbundle: %v", err)
			}
			st, err := f.Stat()
			must(t, err)
			if st.Size() != c.size {
				t.Fatalf("restored size %d, want %d", st.Size(), c.size)
			}
			// Compare the data extents and a sample of the holes, and check that the
			// holes take no space.
			var dataBytes int64
			for _, e := range c.extents {
				got := make([]byte, e.Length)
				_, err := f.ReadAt(got, e.Offset)
				must(t, err)
				if !bytes.Equal(got, src.data[e.Offset]) {
					t.Fatalf("extent at %d differs", e.Offset)
				}
				dataBytes += e.Length
			}
			for _, off := range []int64{c.size / 3, c.size / 2, c.size - 1} {
				want := make([]byte, 1)
				src.ReadAt(want, off)
				got := make([]byte, 1)
				_, err := f.ReadAt(got, off)
				must(t, err)
				if got[0] != want[0] {
					t.Fatalf("byte at %d: %d, want %d", off, got[0], want[0])
				}
			}
			if a := allocatedBytes(t, out); a > dataBytes+1*M {
				t.Errorf("restored image allocates %d bytes for %d bytes of data", a, dataBytes)
			}
		})
	}
}

// BenchmarkUnbundle measures the reader (figures, not assertions): MB/s of image
// restored, for data and for a mostly-hole image. Run with
// go test ./bundle -run '^$' -bench Unbundle -benchmem.
func BenchmarkUnbundle(b *testing.B) {
	const M, G = 1 << 20, 1 << 30
	for _, c := range []struct {
		name    string
		size    int64
		extents []Extent
		random  bool
	}{
		{"data-64MiB", 64 * M, []Extent{{0, 64 * M}}, false},
		{"sparse-8GiB", 8 * G, []Extent{{0, 4 * M}, {4 * G, 4 * M}}, false},
	} {
		b.Run(c.name, func(b *testing.B) {
			src := newPatternImage(c.size, c.extents, c.random)
			img := NewImage(src, c.size, c.extents, time.Unix(0, 0), 0o644)
			k, err := NewKey()
			must(b, err)
			dir := b.TempDir()
			res, err := Write(context.Background(), img, WriterConfig{Name: "bench", Key: k}, DirSink(dir))
			must(b, err)
			m := &Manifest{Version: ManifestVersion, Bundler: DefaultBundler, Architecture: "x86_64",
				Name: "bench", User: "123456789012", Type: "machine", Digest: res.Digest, Size: res.Size,
				BundledSize: res.BundledSize, EC2EncryptedKey: "00", UserEncryptedKey: "00", EC2EncryptedIV: "00", UserEncryptedIV: "00"}
			for _, p := range res.Parts {
				m.Parts = append(m.Parts, ManifestPart{p.Index, p.Name, p.SHA1})
			}
			out, err := os.Create(filepath.Join(b.TempDir(), "out.img"))
			must(b, err)
			defer out.Close()
			b.SetBytes(c.size)
			b.ResetTimer()
			for range b.N {
				if err := Unbundle(context.Background(), m, k, DirSource(dir), out); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
