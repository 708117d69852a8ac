package bundle

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/sha1"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/klauspost/compress/gzip"

	"github.com/instancestore/packer-plugin-instancestore/internal/fuzzcheck"
)

// FuzzParseManifest: the parser never panics, and whatever it accepts is valid and
// serializes to bytes it parses back to the same serialization.
// Seeds: testdata/fuzz/FuzzParseManifest plus the fixture and golden manifests.
func FuzzParseManifest(f *testing.F) {
	f.Add(readSampleManifest(f))
	if b, err := os.ReadFile("testdata/golden/full.manifest.xml"); err == nil {
		f.Add(b)
	}
	fuzzcheck.CapMinimize(time.Second)
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := ParseManifest(data)
		if err != nil {
			return
		}
		if err := m.Validate(); err != nil {
			t.Fatalf("accepted a manifest that does not validate: %v", err)
		}
		out := m.Marshal()
		m2, err := ParseManifest(out)
		if err != nil {
			t.Fatalf("cannot parse our own serialization: %v\n%s", err, out)
		}
		if again := m2.Marshal(); !bytes.Equal(again, out) {
			t.Fatalf("serialization does not round-trip:\n%s\n%s", out, again)
		}
	})
}

// memSource serves parts from memory.
type memSource map[string][]byte

func (s memSource) OpenPart(name string) (io.ReadCloser, error) {
	b, ok := s[name]
	if !ok {
		return nil, fmt.Errorf("no part %q", name)
	}
	return io.NopCloser(bytes.NewReader(b)), nil
}

var fuzzKey = Key{Key: [16]byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16}, IV: [16]byte{16, 15, 14}}

// fuzzKit is what every FuzzUnbundle input reuses: the AES block and a gzip writer,
// so that one input costs a gzip of its few KiB and one read of a small bundle, with
// no key setup (and no RSA: the manifest's wrapped keys are not part of the reader).
type fuzzKit struct {
	block cipher.Block
	gz    *gzip.Writer
	buf   bytes.Buffer
	img   []byte // the rebuilt image
}

func newFuzzKit() *fuzzKit {
	block, err := aes.NewCipher(fuzzKey.Key[:])
	if err != nil {
		panic(err)
	}
	gz, _ := gzip.NewWriterLevel(io.Discard, gzip.BestSpeed)
	return &fuzzKit{block: block, gz: gz}
}

// bundle makes a one-part bundle in memory whose parts and digest match: data is the
// tar stream, or the ciphertext itself when raw is set.
func (k *fuzzKit) bundle(data []byte, size int64, raw bool) (*Manifest, memSource) {
	ct := data
	if !raw {
		k.buf.Reset()
		k.gz.Reset(&k.buf)
		k.gz.Write(data)
		k.gz.Close()
		pad := aes.BlockSize - k.buf.Len()%aes.BlockSize
		k.buf.Write(bytes.Repeat([]byte{byte(pad)}, pad))
		ct = make([]byte, k.buf.Len())
		cipher.NewCBCEncrypter(k.block, fuzzKey.IV[:]).CryptBlocks(ct, k.buf.Bytes())
	}
	digest, partSum := sha1.Sum(data), sha1.Sum(ct)
	m := &Manifest{
		Version: ManifestVersion, Bundler: Bundler{"fuzz", "1", "0"}, Architecture: "x86_64",
		Name: "fuzz", User: "123456789012", Type: "machine", Digest: hex.EncodeToString(digest[:]),
		Size: size, BundledSize: int64(len(ct)),
		EC2EncryptedKey: "00", UserEncryptedKey: "00", EC2EncryptedIV: "00", UserEncryptedIV: "00",
		Parts: []ManifestPart{{0, "fuzz.part.0", hex.EncodeToString(partSum[:])}},
	}
	return m, memSource{"fuzz.part.0": ct}
}

// fuzzBundle is bundle with a kit of its own (the seed tests).
func fuzzBundle(t testing.TB, data []byte, size int64, raw bool) (*Manifest, memSource) {
	return newFuzzKit().bundle(data, size, raw)
}

// Bounds of one FuzzUnbundle input: a small image keeps an input well under a
// millisecond, and every path of the reader (sparse maps, holes, padding, trailers)
// shows at that size already.
// The engine also re-runs each new input thousands of times to minimize it, with
// fuzzing paused: an input must stay cheap for minimization to end quickly.
const (
	fuzzMaxImage = 64 << 10
	fuzzMaxData  = 16 << 10
)

// writerSeeds are tar streams of the bundle writer itself, small enough for the
// bounds: a regular member, sparse maps that fit the header, and one that needs
// extension blocks (more than 4 entries), each ending in a hole or in data.
func writerSeeds(t testing.TB) [][]byte {
	var out [][]byte
	for _, c := range []struct {
		size    int64
		extents []Extent
	}{
		{4096, []Extent{{0, 4096}}},
		{16384, []Extent{{4096, 4096}}},
		{32768, []Extent{{0, 512}, {8192, 1024}, {28672, 4096}}},
		{61440, []Extent{{0, 1024}, {4096, 512}, {8192, 4096}, {16384, 512}, {24576, 1024}, {32768, 512}, {40960, 4096}, {57344, 1024}, {60416, 512}}},
	} {
		data := make([]byte, c.size)
		for _, e := range c.extents {
			for i := e.Offset; i < e.End(); i++ {
				data[i] = byte(i*7 + 1)
			}
		}
		img := NewImage(bytes.NewReader(data), c.size, c.extents, time.Unix(1700000000, 0), 0o600)
		a, err := newTarArchive("fuzz.img", img)
		if err != nil {
			t.Fatal(err)
		}
		var buf bytes.Buffer
		if err := a.writeTo(context.Background(), &buf, make([]byte, 64<<10), nil); err != nil {
			t.Fatal(err)
		}
		out = append(out, trimTar(buf.Bytes()))
	}
	return out
}

// FuzzUnbundle: the reader never panics or hangs on any tar stream (or ciphertext);
// what one input allocates is bounded; Verify and Unbundle agree; and when they
// succeed, the image they rebuild is exactly the tar member as archive/tar reads it,
// with only non-zero blocks written, in order, inside the manifest's size.
// Seeds: testdata/fuzz/FuzzUnbundle (the larger ones are checked by
// TestFuzzSeedsMeaningful) plus small tar streams of the writer.
func FuzzUnbundle(f *testing.F) {
	sizes := []int64{4096, 16384, 32768, 61440}
	for i, ts := range writerSeeds(f) {
		f.Add(ts, sizes[i], false)
	}
	fuzzcheck.CapMinimize(time.Second)
	kit := newFuzzKit()
	f.Fuzz(func(t *testing.T, data []byte, size int64, raw bool) { kit.check(t, data, size, raw) })
}

// check is one FuzzUnbundle input.
func (k *fuzzKit) check(t testing.TB, data []byte, size int64, raw bool) {
	if size <= 0 || size > fuzzMaxImage || len(data) > fuzzMaxData {
		return
	}
	m, src := k.bundle(data, size, raw)
	if m.Validate() != nil {
		return
	}
	if k.img == nil {
		k.img = make([]byte, fuzzMaxImage)
	}
	img := k.img[:size]
	clear(img)
	var end int64
	write := func(off int64, p []byte) error {
		if off < end || off+int64(len(p)) > size {
			t.Fatalf("write of %d bytes at %d: out of order or past the %d-byte image (last write ended at %d)", len(p), off, size, end)
		}
		for i := 0; i < len(p); i += holeBlock {
			if (off+int64(i))%holeBlock == 0 && isZero(p[i:min(i+holeBlock, len(p))]) {
				t.Fatalf("a block of zeros at %d was written, not left as a hole", off+int64(i))
			}
		}
		copy(img[off:], p)
		end = off + int64(len(p))
		return nil
	}
	var err error
	// The reader's buffers are sized by the bundle, which is bounded here; nothing
	// may grow with what the input claims (sparse maps, sizes).
	fuzzcheck.Allocs(t, 4<<20+4*uint64(len(data)), func() {
		err = readBundle(context.Background(), m, fuzzKey, src, write, &VerifyReport{})
	})
	_, verr := Verify(context.Background(), m, fuzzKey, src)
	if (verr == nil) != (err == nil) {
		t.Fatalf("Unbundle and Verify disagree: %v / %v", err, verr)
	}
	if err != nil || raw {
		return
	}
	if want := tarMember(t, data, size); !bytes.Equal(img, want) {
		t.Fatalf("the rebuilt image differs from the tar member")
	}
}

// trimTar drops a tar stream's record padding but keeps its end marker: the same
// archive in fewer bytes, so that the fuzzer mutates (and minimizes) less.
func trimTar(ts []byte) []byte {
	n := len(bytes.TrimRight(ts, "\x00"))
	n = (n + 511) / 512 * 512
	return append(ts[:n:n], make([]byte, 1024)...)
}

func isZero(p []byte) bool {
	for _, b := range p {
		if b != 0 {
			return false
		}
	}
	return true
}

// tarMember reads the one member of a tar stream the reader accepted, independently
// of the reader's hole handling.
func tarMember(t testing.TB, data []byte, size int64) []byte {
	tr := tar.NewReader(bytes.NewReader(data))
	if _, err := tr.Next(); err != nil {
		t.Fatalf("the reader accepted a tar stream archive/tar cannot open: %v", err)
	}
	b := make([]byte, size)
	if _, err := io.ReadFull(tr, b); err != nil {
		t.Fatalf("the reader accepted a tar member archive/tar cannot read: %v", err)
	}
	return b
}

// sampleTarStream decrypts and gunzips the fixture's part with the README's key.
func sampleTarStream() ([]byte, error) {
	ct, err := os.ReadFile(filepath.Join(sampleDir, "bundle", "sample.part.0"))
	if err != nil {
		return nil, err
	}
	k, err := ParseKey("032bb996d86b93be3550765cc0499747", "630a7f9ece8827cd9ddacf57ba8306f2")
	if err != nil {
		return nil, err
	}
	dec, err := newDecryptReader(bytes.NewReader(ct), k)
	if err != nil {
		return nil, err
	}
	gz, err := gzip.NewReader(dec)
	if err != nil {
		return nil, err
	}
	return io.ReadAll(gz)
}

// TestFuzzSeedsMeaningful keeps the seed corpus honest: the fixture seed must unbundle,
// so the fuzzer starts from inputs that reach the end of the pipeline.
func TestFuzzSeedsMeaningful(t *testing.T) {
	ts, err := sampleTarStream()
	must(t, err)
	if len(ts) != 10240 {
		t.Fatalf("fixture tar stream is %d bytes, want 10240", len(ts))
	}
	m, src := fuzzBundle(t, ts, 2097152, false)
	if m.Digest != "16f07cd2c7b2067a6ed5fa1f51fb0f2c70249448" {
		t.Fatalf("fixture tar stream digest %s", m.Digest)
	}
	if _, err := Verify(context.Background(), m, fuzzKey, src); err != nil {
		t.Fatalf("fixture seed does not verify: %v", err)
	}
	for i, ts := range writerSeeds(t) {
		m, src := fuzzBundle(t, ts, []int64{4096, 16384, 32768, 61440}[i], false)
		if _, err := Verify(context.Background(), m, fuzzKey, src); err != nil {
			t.Errorf("writer seed %d does not verify: %v", i, err)
		}
	}
	// The corpus files: good inputs reach the end, bad ones are refused.
	for name, wantOK := range map[string]bool{
		"regular": true, "writer-sparse-9-extents": true,
		"two-members": false, "size-mismatch": false, "truncated": false, "empty-tar": false,
		"raw-short": false, "raw-partial-block": false,
	} {
		data, size, raw := readUnbundleSeed(t, filepath.Join("testdata/fuzz/FuzzUnbundle", name))
		m, src := fuzzBundle(t, data, size, raw)
		_, err := Verify(context.Background(), m, fuzzKey, src)
		if (err == nil) != wantOK {
			t.Errorf("seed %s: Verify error %v, want ok=%v", name, err, wantOK)
		}
	}
}

// readUnbundleSeed reads a corpus file of FuzzUnbundle ([]byte, int64, bool).
func readUnbundleSeed(t testing.TB, path string) ([]byte, int64, bool) {
	t.Helper()
	b, err := os.ReadFile(path)
	must(t, err)
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) != 4 || lines[0] != "go test fuzz v1" {
		t.Fatalf("%s: not a 3-value corpus file", path)
	}
	data, err := strconv.Unquote(strings.TrimSuffix(strings.TrimPrefix(lines[1], "[]byte("), ")"))
	must(t, err)
	size, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimPrefix(lines[2], "int64("), ")"), 10, 64)
	must(t, err)
	return []byte(data), size, lines[3] == "bool(true)"
}
