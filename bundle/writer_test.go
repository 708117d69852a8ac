package bundle

import (
	"context"
	"crypto/sha1"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
)

// writeAndCheck bundles img into a fresh directory, then decrypts the parts
// independently (openssl, gunzip), lists and extracts the tar with GNU tar and checks
// everything against the image file at path and against the Result.
func writeAndCheck(t *testing.T, path string, img *Image, name string) *Result {
	t.Helper()
	needTools(t, "tar")
	k := testKey(t)
	dir := t.TempDir()
	res, err := Write(context.Background(), img, WriterConfig{Name: name, Key: k}, DirSink(dir))
	if err != nil {
		t.Fatal(err)
	}
	checkParts(t, dir, res)

	tarPath := decryptParts(t, dir, res.Parts, k)
	if got := sha1File(t, tarPath); got != res.Digest {
		t.Errorf("SHA-1 of the decrypted tar stream = %s, Result.Digest = %s", got, res.Digest)
	}
	if res.Size != img.Size() || res.Name != name {
		t.Errorf("Result: name %q size %d, want %q %d", res.Name, res.Size, name, img.Size())
	}

	fi, _ := os.Stat(path)
	list := strings.Join(strings.Fields(string(run(t, nil, "tar", "-tvS", "-f", tarPath))), " ")
	want := fmt.Sprintf("%s root/root %d %s %s", fi.Mode().Perm(), img.Size(), img.ModTime().Local().Format("2006-01-02 15:04"), name)
	want = "-" + strings.TrimPrefix(want, "-")
	if list != want {
		t.Errorf("tar -tvS lists %q, want %q", list, want)
	}

	out := t.TempDir()
	run(t, nil, "tar", "-xS", "-f", tarPath, "-C", out)
	if img.Size() > 256<<20 {
		sameSparseFile(t, filepath.Join(out, name), path)
	} else {
		sameFile(t, filepath.Join(out, name), path)
	}
	return res
}

// checkParts checks the part files in dir against the Result: names with the exact
// ec2-ami-tools width, sizes (all PartSize but the last, which is shorter and not
// empty), digests and the bundled size.
func checkParts(t *testing.T, dir string, res *Result) {
	t.Helper()
	width := PartNameWidth(len(res.Parts))
	var total int64
	for i, p := range res.Parts {
		if want := PartName(res.Name, i, width); p.Name != want || p.Index != i {
			t.Errorf("part %d is %q (index %d), want %q", i, p.Name, p.Index, want)
		}
		data, err := os.ReadFile(filepath.Join(dir, p.Name))
		if err != nil {
			t.Fatal(err)
		}
		if int64(len(data)) != p.Size {
			t.Errorf("%s is %d bytes, Result says %d", p.Name, len(data), p.Size)
		}
		last := i == len(res.Parts)-1
		if !last && p.Size != PartSize || last && (p.Size == 0 || p.Size > PartSize) {
			t.Errorf("%s is %d bytes", p.Name, p.Size)
		}
		if sum := sha1.Sum(data); hex.EncodeToString(sum[:]) != p.SHA1 {
			t.Errorf("%s: SHA-1 %x, Result says %s", p.Name, sum, p.SHA1)
		}
		total += p.Size
	}
	if total != res.BundledSize || total%16 != 0 {
		t.Errorf("parts add up to %d bytes, BundledSize %d", total, res.BundledSize)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != len(res.Parts) {
		t.Errorf("%s holds %d files, want the %d parts only", dir, len(entries), len(res.Parts))
	}
}

func openImage(t *testing.T, path string) *Image {
	t.Helper()
	img, err := OpenImage(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { img.Close() })
	return img
}

func TestWriteTinyImage(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tiny.img")
	makeSparse(t, path, 1000, []Extent{{0, 1000}}, false)
	res := writeAndCheck(t, path, openImage(t, path), "tiny")
	if len(res.Parts) != 1 || res.Parts[0].Name != "tiny.part.0" {
		t.Errorf("parts %+v, want tiny.part.0 alone", res.Parts)
	}
}

func TestWriteEmptyAndAllHoleImages(t *testing.T) {
	for _, size := range []int64{0, 3 << 20} {
		path := filepath.Join(t.TempDir(), "blank.img")
		makeSparse(t, path, size, nil, false)
		writeAndCheck(t, path, openImage(t, path), "blank")
	}
}

// TestWriteMultiPart bundles more than 100 MiB of incompressible data: 11 parts
// named .part.00 to .part.10.
func TestWriteMultiPart(t *testing.T) {
	path := filepath.Join(t.TempDir(), "big.img")
	const size = 105 << 20
	makeSparse(t, path, size, []Extent{{0, size}}, true)
	img := openImage(t, path)
	res := writeAndCheck(t, path, img, "big")
	if len(res.Parts) != 11 || res.Parts[0].Name != "big.part.00" || res.Parts[10].Name != "big.part.10" {
		t.Errorf("got %d parts from %s to %s, want big.part.00 to big.part.10", len(res.Parts), res.Parts[0].Name, res.Parts[len(res.Parts)-1].Name)
	}
	arch, _ := newTarArchive("big", img)
	if bound := maxParts(arch.size); bound < len(res.Parts) {
		t.Errorf("maxParts(%d) = %d, below the real %d parts", arch.size, bound, len(res.Parts))
	}
}

// TestWriteSparse bundles a 1 GiB image holding 96 MiB of compressible data in 48
// extents: the holes are never read, GNU tar restores the image, and the streaming
// names (two digits: the bound is 11 parts) are renamed to the real count's one.
func TestWriteSparse(t *testing.T) {
	const M = 1 << 20
	var extents []Extent
	for i := range int64(48) {
		extents = append(extents, Extent{i*20*M + 64<<10, 2 * M})
	}
	path := filepath.Join(t.TempDir(), "sparse.img")
	makeSparse(t, path, 1<<30, extents, false)
	opened := openImage(t, path)
	if fmt.Sprint(opened.Extents()) != fmt.Sprint(extents) {
		t.Fatalf("OpenImage found extents %v, want %v", opened.Extents(), extents)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	counting := &countingReaderAt{r: f}
	img := NewImage(counting, opened.Size(), opened.Extents(), opened.ModTime(), opened.Mode())
	res := writeAndCheck(t, path, img, "sparse")
	counting.checkReadsWithin(t, extents)
	if len(res.Parts) >= 10 || res.Parts[0].Name != "sparse.part.0" {
		t.Errorf("%d parts, first %s: want fewer than 10 parts, named with one digit", len(res.Parts), res.Parts[0].Name)
	}

	// A sink that cannot rename keeps the streaming width.
	sink := &memSink{}
	res2, err := Write(context.Background(), img, WriterConfig{Name: "sparse", Key: testKey(t)}, sink)
	if err != nil {
		t.Fatal(err)
	}
	if res2.Parts[0].Name != "sparse.part.00" || sink.parts[0].Name != "sparse.part.00" || sink.closed != 1 {
		t.Errorf("without renaming: first part %q (sink saw %q, closed %d times), want sparse.part.00 and one Close", res2.Parts[0].Name, sink.parts[0].Name, sink.closed)
	}
	if res2.Digest != res.Digest {
		t.Errorf("same image, different digests: %s, %s", res.Digest, res2.Digest)
	}
}

// TestWriteOver8GiB bundles a 9 GiB sparse image with little data, some of it past
// 8 GiB: the sparse map and real size need GNU base-256 numbers.
func TestWriteOver8GiB(t *testing.T) {
	const M, G = 1 << 20, 1 << 30
	extents := []Extent{{0, M}, {4 * G, 512 << 10}, {8*G + 3*M, 2 * M}, {9*G - 64<<10, 64 << 10}}
	path := filepath.Join(t.TempDir(), "huge.img")
	makeSparse(t, path, 9*G, extents, false)
	img := openImage(t, path)
	if fmt.Sprint(img.Extents()) != fmt.Sprint(extents) {
		t.Fatalf("OpenImage found extents %v, want %v", img.Extents(), extents)
	}
	res := writeAndCheck(t, path, img, "huge")
	if res.Size != 9*G {
		t.Errorf("Result.Size = %d", res.Size)
	}
}

func TestWriteRejects(t *testing.T) {
	small := NewImage(strings.NewReader("x"), 1, nil, time.Now(), 0o644)
	for _, c := range []struct {
		name string
		img  *Image
		cfg  WriterConfig
		want string
	}{
		{"too big", NewImage(nil, MaxImageSize+1, []Extent{}, time.Now(), 0o644), WriterConfig{Name: "x"}, "10240 MiB"},
		{"no name", small, WriterConfig{}, "name is empty"},
		{"slash", small, WriterConfig{Name: "a/b"}, "plain file name"},
		{"long name", small, WriterConfig{Name: strings.Repeat("n", 100)}, "at most 99"},
		{"level", small, WriterConfig{Name: "x", Level: 10}, "gzip level 10"},
		{"zero key", small, WriterConfig{Name: "x"}, "all zeros"},
	} {
		sink := &memSink{}
		_, err := Write(context.Background(), c.img, c.cfg, sink)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: Write = %v, want an error mentioning %q", c.name, err, c.want)
		}
		if sink.closed != 1 || len(sink.parts) != 0 {
			t.Errorf("%s: sink got %d parts and %d Close calls, want 0 and 1", c.name, len(sink.parts), sink.closed)
		}
	}
}

// TestWriteStopsOnErrors: a sink failure and a cancelled context stop the pipeline
// promptly, and no goroutine is left behind.
func TestWriteStopsOnErrors(t *testing.T) {
	path := filepath.Join(t.TempDir(), "img")
	makeSparse(t, path, 64<<20, []Extent{{0, 64 << 20}}, true)
	img := openImage(t, path)
	before := runtime.NumGoroutine()

	sink := &memSink{fail: 2}
	_, err := Write(context.Background(), img, WriterConfig{Name: "img", Key: testKey(t)}, sink)
	if err == nil || !strings.Contains(err.Error(), "img.part.2") || !strings.Contains(err.Error(), "sink refuses part 2") {
		t.Errorf("failing sink: Write = %v, want the sink's error naming the part", err)
	}
	if len(sink.parts) != 2 || sink.closed != 1 {
		t.Errorf("failing sink got %d parts and %d Close calls after failing at part 2", len(sink.parts), sink.closed)
	}

	ctx, cancel := context.WithCancel(context.Background())
	var calls int
	sink = &memSink{}
	_, err = Write(ctx, img, WriterConfig{Name: "img", Key: testKey(t), Progress: func(p Progress) {
		calls++
		if p.Parts == 1 {
			cancel()
		}
	}}, sink)
	if !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled: Write = %v, want context.Canceled", err)
	}
	if len(sink.parts) > 2 || calls > 2 {
		t.Errorf("cancelled after part 1, yet %d parts were stored (%d progress calls)", len(sink.parts), calls)
	}

	deadline := time.Now().Add(10 * time.Second)
	for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > before {
		buf := make([]byte, 1<<16)
		t.Errorf("%d goroutines left behind:\n%s", n-before, buf[:runtime.Stack(buf, true)])
	}
}

func TestWriteProgress(t *testing.T) {
	path := filepath.Join(t.TempDir(), "img")
	makeSparse(t, path, 64<<20, []Extent{{0, 24 << 20}, {32 << 20, 8 << 20}}, true)
	img := openImage(t, path)
	var seen []Progress
	res, err := Write(context.Background(), img, WriterConfig{Name: "img", Key: testKey(t), Concurrency: 1, Level: 1,
		Progress: func(p Progress) { seen = append(seen, p) }}, &memSink{})
	if err != nil {
		t.Fatal(err)
	}
	last := seen[len(seen)-1]
	if last.BytesRead != 32<<20 || last.BytesTotal != 32<<20 || last.BytesWritten != res.BundledSize || last.Parts != len(res.Parts) {
		t.Errorf("final progress %+v, want all 32 MiB read, %d bytes in %d parts", last, res.BundledSize, len(res.Parts))
	}
	for i := 1; i < len(seen); i++ {
		if seen[i].BytesRead < seen[i-1].BytesRead || seen[i].Parts < seen[i-1].Parts || seen[i].BytesWritten < seen[i-1].BytesWritten {
			t.Errorf("progress went backwards: %+v then %+v", seen[i-1], seen[i])
		}
	}
}
