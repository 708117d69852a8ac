package bundle

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// bundleForTest bundles the image file at path into dir/parts with our Writer and
// returns its (parsed) manifest and key.
func bundleForTest(t *testing.T, path, dir string) (*Manifest, Key, string) {
	t.Helper()
	img, err := OpenImage(path)
	must(t, err)
	defer img.Close()
	k, err := NewKey()
	must(t, err)
	parts := filepath.Join(dir, "parts")
	must(t, os.Mkdir(parts, 0o755))
	res, err := Write(context.Background(), img, WriterConfig{Name: "wia", Key: k}, DirSink(parts))
	must(t, err)
	userCert, _, err := NewThrowawayUser()
	must(t, err)
	ec2, err := EC2Certificate("")
	must(t, err)
	m, err := NewManifest(res, ManifestConfig{Architecture: "x86_64", User: "1234-5678-9012"}, k, ec2, userCert)
	must(t, err)
	return m, k, parts
}

// recordingWriterAt is a zeroed buffer that records the writes it gets.
type recordingWriterAt struct {
	buf    []byte
	writes int
}

func (w *recordingWriterAt) WriteAt(p []byte, off int64) (int, error) {
	w.writes++
	return copy(w.buf[off:], p), nil
}

func TestWriteImageAtSkipsZerosAndChecksDigest(t *testing.T) {
	dir := t.TempDir()
	img := make([]byte, 3<<20)
	copy(img[8192:], bytes.Repeat([]byte("data"), 1024))
	copy(img[2<<20:], bytes.Repeat([]byte("more"), 2048))
	path := filepath.Join(dir, "disk.img")
	if err := os.WriteFile(path, img, 0o644); err != nil {
		t.Fatal(err)
	}
	m, key, parts := bundleForTest(t, path, dir)
	dst := &recordingWriterAt{buf: make([]byte, len(img))}
	var n int64
	rep, err := WriteImageAt(context.Background(), m, key, DirSource(parts), dst, func(k int64) { n += k })
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(dst.buf, img) {
		t.Fatal("written image differs from the original")
	}
	if n != 4096+8192 {
		t.Errorf("wrote %d bytes, want only the 12288 bytes of data", n)
	}
	if len(rep.Checks) == 0 || rep.Checks[len(rep.Checks)-1].Name != "digest" {
		t.Errorf("report does not end with the digest check: %+v", rep.Checks)
	}

	// A manifest whose digest is not the stream's: written, but not reported good.
	bad := *m
	bad.Digest = strings.Repeat("0", 40)
	dst = &recordingWriterAt{buf: make([]byte, len(img))}
	if _, err := WriteImageAt(context.Background(), &bad, key, DirSource(parts), dst, nil); err == nil || !strings.Contains(err.Error(), "<digest>") {
		t.Fatalf("wrong digest: got %v", err)
	}
}
