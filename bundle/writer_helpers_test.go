package bundle

import (
	"bytes"
	"crypto/sha1"
	"encoding/hex"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// Helpers of the writer tests: sparse files, and the independent decryption of a
// bundle with the openssl, gunzip and GNU tar command-line tools.

// needTools fails (never skips) when a command the tests check against is missing:
// they are in .ci/apt-packages.
func needTools(t testing.TB, names ...string) {
	t.Helper()
	for _, n := range names {
		if _, err := exec.LookPath(n); err != nil {
			t.Fatalf("%s not found: install it (it is listed in .ci/apt-packages; `make deps`)", n)
		}
	}
}

// run runs a command and returns its stdout, failing the test with stderr.
func run(t testing.TB, stdin io.Reader, name string, args ...string) []byte {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Stdin = stdin
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, errb.String())
	}
	return out.Bytes()
}

// fillData writes deterministic data at each extent of f: random bytes when
// incompressible, text-like bytes otherwise. Every 512-byte block gets a non-zero
// byte so that no data block reads as a hole.
func fillData(t testing.TB, f *os.File, extents []Extent, seed uint64, incompressible bool) {
	t.Helper()
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	buf := make([]byte, 1<<20)
	for _, e := range extents {
		for off := e.Offset; off < e.End(); {
			n := min(int64(len(buf)), e.End()-off)
			b := buf[:n]
			if incompressible {
				for i := 0; i+8 <= len(b); i += 8 {
					v := rng.Uint64()
					for j := range 8 {
						b[i+j] = byte(v >> (8 * j))
					}
				}
				for i := len(b) &^ 7; i < len(b); i++ {
					b[i] = byte(rng.Uint32())
				}
			} else {
				words := []string{"bundle ", "image ", "part ", "manifest ", "sparse ", "\n", "ec2 ", "tar "}
				for i := 0; i < len(b); {
					i += copy(b[i:], words[rng.IntN(len(words))])
				}
			}
			for i := 0; i < len(b); i += 512 {
				b[i] |= 1
			}
			if _, err := f.WriteAt(b, off); err != nil {
				t.Fatal(err)
			}
			off += n
		}
	}
}

// makeSparse creates a file of size bytes at path with data only at extents.
func makeSparse(t testing.TB, path string, size int64, extents []Extent, incompressible bool) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	fillData(t, f, extents, uint64(size)+uint64(len(extents)), incompressible)
}

// sparseCopy copies src to dst leaving every all-zero 4 KiB block a hole, as a
// sparse-aware copy (cp --sparse=always) does.
func sparseCopy(t testing.TB, src, dst string) {
	t.Helper()
	data, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Create(dst)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(int64(len(data))); err != nil {
		t.Fatal(err)
	}
	zero := make([]byte, 4096)
	for off := 0; off < len(data); off += 4096 {
		b := data[off:min(off+4096, len(data))]
		if !bytes.Equal(b, zero[:len(b)]) {
			if _, err := f.WriteAt(b, int64(off)); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// decryptParts concatenates the parts in dir and runs them through
// `openssl enc -d -aes-128-cbc` and `gunzip`, returning the tar stream's path. Each
// tool runs on files of its own so that each exit status counts.
func decryptParts(t testing.TB, dir string, parts []PartInfo, k Key) string {
	t.Helper()
	needTools(t, "openssl", "gunzip", "sh")
	out := filepath.Join(t.TempDir(), "bundle.tar")
	script := `set -e; d=$1; k=$2; iv=$3; out=$4; shift 4; cd "$d"
cat -- "$@" > "$out.enc"
openssl enc -d -aes-128-cbc -K "$k" -iv "$iv" -in "$out.enc" -out "$out.gz"
rm "$out.enc"
gunzip -c "$out.gz" > "$out"
rm "$out.gz"`
	args := []string{"-c", script, "sh", dir, k.KeyHex(), k.IVHex(), out}
	for _, p := range parts {
		args = append(args, p.Name)
	}
	run(t, nil, "sh", args...)
	return out
}

func sha1File(t testing.TB, path string) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha1.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// sameFile compares two files with cmp.
func sameFile(t testing.TB, a, b string) {
	t.Helper()
	needTools(t, "cmp")
	run(t, nil, "cmp", a, b)
}

func testKey(t testing.TB) Key {
	t.Helper()
	k, err := NewKey()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// memSink keeps the parts in memory; fail, if set, makes PutPart fail at that index.
type memSink struct {
	parts  []*Part
	fail   int
	closed int
}

func (s *memSink) PutPart(p *Part) error {
	if s.fail > 0 && p.Index == s.fail {
		return fmt.Errorf("sink refuses part %d", p.Index)
	}
	s.parts = append(s.parts, p)
	return nil
}

func (s *memSink) Close() error { s.closed++; return nil }

// countingReaderAt records every read, to check that holes are never read.
type countingReaderAt struct {
	r     io.ReaderAt
	mu    sync.Mutex
	reads []Extent
}

func (c *countingReaderAt) ReadAt(p []byte, off int64) (int, error) {
	c.mu.Lock()
	c.reads = append(c.reads, Extent{off, int64(len(p))})
	c.mu.Unlock()
	return c.r.ReadAt(p, off)
}

// checkReadsWithin fails unless every read lies inside one of the extents and the
// reads add up to exactly the extents' data.
func (c *countingReaderAt) checkReadsWithin(t testing.TB, extents []Extent) {
	t.Helper()
	var total int64
	for _, r := range c.reads {
		inside := false
		for _, e := range extents {
			if r.Offset >= e.Offset && r.End() <= e.End() {
				inside = true
			}
		}
		if !inside {
			t.Errorf("read [%d, %d) is not inside a data extent", r.Offset, r.End())
		}
		total += r.Length
	}
	if total != dataSize(extents) {
		t.Errorf("read %d bytes, the data extents hold %d", total, dataSize(extents))
	}
}

// sameSparseFile compares two possibly huge sparse files without reading their holes:
// same size, same data extents, same bytes in them.
func sameSparseFile(t testing.TB, a, b string) {
	t.Helper()
	ia, err := OpenImage(a)
	if err != nil {
		t.Fatal(err)
	}
	defer ia.Close()
	ib, err := OpenImage(b)
	if err != nil {
		t.Fatal(err)
	}
	defer ib.Close()
	if ia.Size() != ib.Size() {
		t.Fatalf("%s is %d bytes, %s is %d", a, ia.Size(), b, ib.Size())
	}
	if fmt.Sprint(ia.Extents()) != fmt.Sprint(ib.Extents()) {
		t.Fatalf("data extents differ:\n%s: %v\n%s: %v", a, ia.Extents(), b, ib.Extents())
	}
	x, y := make([]byte, 1<<20), make([]byte, 1<<20)
	for _, e := range ia.Extents() {
		for off := e.Offset; off < e.End(); {
			n := min(int64(len(x)), e.End()-off)
			if _, err := ia.r.ReadAt(x[:n], off); err != nil {
				t.Fatal(err)
			}
			if _, err := ib.r.ReadAt(y[:n], off); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(x[:n], y[:n]) {
				t.Fatalf("%s and %s differ in [%d, %d)", a, b, off, off+n)
			}
			off += n
		}
	}
}
