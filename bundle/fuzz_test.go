package bundle

import (
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

	"github.com/klauspost/compress/gzip"
)

// FuzzParseManifest: the parser never panics, and whatever it accepts is valid and
// serializes to bytes it parses back to the same serialization.
// Seeds: testdata/fuzz/FuzzParseManifest plus the fixture and golden manifests.
func FuzzParseManifest(f *testing.F) {
	f.Add(readSampleManifest(f))
	if b, err := os.ReadFile("testdata/golden/full.manifest.xml"); err == nil {
		f.Add(b)
	}
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

// fuzzBundle makes a one-part bundle in memory whose parts and digest match: data is
// the tar stream, or the ciphertext itself when raw is set.
func fuzzBundle(t testing.TB, data []byte, size int64, raw bool) (*Manifest, memSource) {
	ct := data
	if !raw {
		var gz bytes.Buffer
		w, _ := gzip.NewWriterLevel(&gz, gzip.BestSpeed)
		w.Write(data)
		w.Close()
		pad := aes.BlockSize - gz.Len()%aes.BlockSize
		plain := append(gz.Bytes(), bytes.Repeat([]byte{byte(pad)}, pad)...)
		block, _ := aes.NewCipher(fuzzKey.Key[:])
		ct = make([]byte, len(plain))
		cipher.NewCBCEncrypter(block, fuzzKey.IV[:]).CryptBlocks(ct, plain)
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

// FuzzUnbundle: the reader never panics or hangs on any tar stream (or ciphertext),
// and when it succeeds the image has the manifest's size.
// Seeds: testdata/fuzz/FuzzUnbundle plus the fixture's tar stream.
func FuzzUnbundle(f *testing.F) {
	if ts, err := sampleTarStream(); err == nil {
		f.Add(ts, int64(2097152), false)
	}
	out := filepath.Join(f.TempDir(), "out.img")
	f.Fuzz(func(t *testing.T, data []byte, size int64, raw bool) {
		// Bound the work of one input: images up to 16 MiB.
		if size <= 0 || size > 16<<20 || len(data) > 4<<20 {
			return
		}
		m, src := fuzzBundle(t, data, size, raw)
		if m.Validate() != nil {
			return
		}
		dst, err := os.Create(out)
		if err != nil {
			t.Fatal(err)
		}
		defer dst.Close()
		err = Unbundle(context.Background(), m, fuzzKey, src, dst)
		if _, verr := Verify(context.Background(), m, fuzzKey, src); (verr == nil) != (err == nil) {
			t.Fatalf("Unbundle and Verify disagree: %v / %v", err, verr)
		}
		if err != nil {
			return
		}
		st, serr := dst.Stat()
		if serr != nil || st.Size() != size {
			t.Fatalf("image is %d bytes, manifest says %d", st.Size(), size)
		}
	})
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
func readUnbundleSeed(t *testing.T, path string) ([]byte, int64, bool) {
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
