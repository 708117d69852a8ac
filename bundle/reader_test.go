package bundle

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha1"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// toolBundle bundles image the way ec2-ami-tools does, with the real tools: GNU tar -S
// (old-GNU sparse member called name), gzip, openssl enc -aes-128-cbc, cut into
// PartSize parts. It returns a signed manifest whose user key is userKeyPath's.
func toolBundle(t testing.TB, image, name, outDir string, k Key, userCert, userKey string) *Manifest {
	t.Helper()
	requireTool(t, "tar")
	requireTool(t, "gzip")
	requireTool(t, "openssl")
	work := t.TempDir()
	must(t, os.Symlink(image, filepath.Join(work, name)))
	tarPath, encPath := filepath.Join(work, "image.tar"), filepath.Join(work, "image.enc")
	runTool(t, "tar", "-c", "-S", "-h", "--owner=0", "--group=0", "-f", tarPath, "-C", work, name)
	sh := fmt.Sprintf("gzip -1 -c %s | openssl enc -e -aes-128-cbc -K %s -iv %s -out %s", tarPath, k.KeyHex(), k.IVHex(), encPath)
	if out, err := exec.Command("sh", "-c", sh).CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", sh, err, out)
	}
	tarData, err := os.ReadFile(tarPath)
	must(t, err)
	enc, err := os.ReadFile(encPath)
	must(t, err)
	st, err := os.Stat(image)
	must(t, err)
	digest := sha1.Sum(tarData)

	cert, err := LoadCertificate(userCert)
	must(t, err)
	pub, _ := CertificateKey(cert)
	priv, err := LoadPrivateKey(userKey)
	must(t, err)
	ec2, err := EC2Certificate("")
	must(t, err)
	ec2Pub, _ := CertificateKey(ec2)
	m := &Manifest{
		Version: ManifestVersion, Bundler: Bundler{"test", "1", "0"}, Architecture: "x86_64",
		Name: name, User: "123456789012", Type: "machine", Digest: hex.EncodeToString(digest[:]),
		Size: st.Size(), BundledSize: int64(len(enc)),
	}
	m.EC2EncryptedKey, m.EC2EncryptedIV, err = WrapKey(ec2Pub, k)
	must(t, err)
	m.UserEncryptedKey, m.UserEncryptedIV, err = WrapKey(pub, k)
	must(t, err)
	count := (len(enc) + PartSize - 1) / PartSize
	for i := 0; i < count; i++ {
		chunk := enc[i*PartSize : min((i+1)*PartSize, len(enc))]
		pn := fmt.Sprintf("%s.part.%0*d", name, len(fmt.Sprint(count)), i)
		must(t, os.WriteFile(filepath.Join(outDir, pn), chunk, 0o644))
		sum := sha1.Sum(chunk)
		m.Parts = append(m.Parts, ManifestPart{i, pn, hex.EncodeToString(sum[:])})
	}
	must(t, m.Sign(priv))
	must(t, os.WriteFile(filepath.Join(outDir, name+".manifest.xml"), m.Marshal(), 0o644))
	return m
}

func sampleKey(t testing.TB) Key {
	t.Helper()
	k, err := ParseKey("032bb996d86b93be3550765cc0499747", "630a7f9ece8827cd9ddacf57ba8306f2")
	must(t, err)
	return k
}

func fileSHA1(t testing.TB, path string) string {
	t.Helper()
	f, err := os.Open(path)
	must(t, err)
	defer f.Close()
	h := sha1.New()
	_, err = io.Copy(h, f)
	must(t, err)
	return hex.EncodeToString(h.Sum(nil))
}

func unbundleTo(t testing.TB, m *Manifest, k Key, srcDir string) (string, error) {
	t.Helper()
	out := filepath.Join(t.TempDir(), "out.img")
	f, err := os.Create(out)
	must(t, err)
	defer f.Close()
	return out, Unbundle(context.Background(), m, k, DirSource(srcDir), f)
}

func TestUnbundleSample(t *testing.T) {
	m, err := ParseManifest(readSampleManifest(t))
	must(t, err)
	priv, err := LoadPrivateKey(filepath.Join(sampleDir, "TEST-ONLY-user-pk.pem"))
	must(t, err)
	k, err := UnwrapKey(priv, m.UserEncryptedKey, m.UserEncryptedIV)
	must(t, err)
	out, err := unbundleTo(t, m, k, filepath.Join(sampleDir, "bundle"))
	if err != nil {
		t.Fatalf("Unbundle: %v", err)
	}
	if got := fileSHA1(t, out); got != "19151deb8f828ebcfa1c8d1cbd846936900e5894" {
		t.Errorf("restored image sha1 %s, want disk.img's", got)
	}
	checkSparse(t, out, filepath.Join(sampleDir, "disk.img"))

	rep, err := Verify(context.Background(), m, k, DirSource(filepath.Join(sampleDir, "bundle")))
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	var names []string
	for _, c := range rep.Checks {
		names = append(names, c.Name)
	}
	if got := strings.Join(names, ","); got != "manifest,part names,parts,decryption,tar,digest" {
		t.Errorf("checks %s", got)
	}
	if last := rep.Checks[len(rep.Checks)-1].Detail; !strings.Contains(last, "10240-byte tar stream") || !strings.Contains(last, m.Digest) {
		t.Errorf("digest check detail %q", last)
	}
	if d := rep.Checks[4].Detail; !strings.Contains(d, `"sample" (GNU sparse file) of 2097152 bytes`) {
		t.Errorf("tar check detail %q", d)
	}
}

// makeImage writes an image of size bytes with data (random, so incompressible) at
// the given offsets and holes elsewhere, plus a zero block inside the data.
func makeImage(t testing.TB, path string, size int64, data map[int64]int) {
	t.Helper()
	f, err := os.Create(path)
	must(t, err)
	defer f.Close()
	must(t, f.Truncate(size))
	for off, n := range data {
		b := make([]byte, n)
		_, _ = rand.Read(b)
		if n > 3*holeBlock {
			clear(b[holeBlock : 2*holeBlock])
		}
		_, err := f.WriteAt(b, off)
		must(t, err)
	}
}

type toolFixture struct {
	dir, image, cert, key string
	k                     Key
	m                     *Manifest
}

// newToolFixture makes a 3-part bundle with the reference tools.
func newToolFixture(t *testing.T) *toolFixture {
	t.Helper()
	fx := &toolFixture{dir: t.TempDir()}
	fx.cert, fx.key = writeKeyPair(t, t.TempDir())
	fx.image = filepath.Join(t.TempDir(), "disk.img")
	// 25 MiB of random data in a 64 MiB image: 3 parts.
	makeImage(t, fx.image, 64<<20, map[int64]int{0: 1 << 20, 8 << 20: 24 << 20, 64<<20 - 5000: 5000})
	var err error
	fx.k, err = NewKey()
	must(t, err)
	fx.m = toolBundle(t, fx.image, "multi", fx.dir, fx.k, fx.cert, fx.key)
	if len(fx.m.Parts) != 3 {
		t.Fatalf("want 3 parts, got %d", len(fx.m.Parts))
	}
	return fx
}

// TestUnbundleSparseToolBundle: a sparse image whose tar member GNU tar writes with a
// sparse map, unbundled with the key unwrapped from the parsed manifest.
func TestUnbundleSparseToolBundle(t *testing.T) {
	cert, key := writeKeyPair(t, t.TempDir())
	k, err := NewKey()
	must(t, err)
	dir := t.TempDir()
	img := filepath.Join(t.TempDir(), "sparse.img")
	makeImage(t, img, 256<<20, map[int64]int{4096: 100, 100 << 20: 1 << 20, 256<<20 - 4096: 4096})
	m := toolBundle(t, img, "sparse", dir, k, cert, key)
	priv, err := LoadPrivateKey(key)
	must(t, err)
	k, err = UnwrapKey(priv, m.UserEncryptedKey, m.UserEncryptedIV)
	must(t, err)
	parsed, err := ParseManifest(mustRead(t, filepath.Join(dir, "sparse.manifest.xml")))
	must(t, err)
	out, err := unbundleTo(t, parsed, k, dir)
	if err != nil {
		t.Fatalf("Unbundle sparse: %v", err)
	}
	if fileSHA1(t, out) != fileSHA1(t, img) {
		t.Fatalf("restored sparse image differs")
	}
	checkSparse(t, out, img)
}

func mustRead(t testing.TB, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	must(t, err)
	return b
}

// TestMultiPartToolBundle reads a 3-part bundle made by the reference tools, then
// tampers with it in every way a verifier must catch.
func TestMultiPartToolBundle(t *testing.T) {
	fx := newToolFixture(t)
	out, err := unbundleTo(t, fx.m, fx.k, fx.dir)
	if err != nil {
		t.Fatalf("Unbundle: %v", err)
	}
	if fileSHA1(t, out) != fileSHA1(t, fx.image) {
		t.Fatalf("restored image differs from the original")
	}
	checkSparse(t, out, fx.image)
	rep, err := VerifyParts(context.Background(), fx.m, DirSource(fx.dir))
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Checks) != 3 || !strings.Contains(rep.Checks[2].Detail, fmt.Sprintf("3 parts, %d bytes", fx.m.BundledSize)) {
		t.Errorf("VerifyParts report %+v", rep.Checks)
	}

	part := func(i int) string { return filepath.Join(fx.dir, fx.m.Parts[i].Filename) }
	// Each case works on a copy of the parts and of the manifest.
	copyParts := func(t *testing.T) string {
		dir := t.TempDir()
		for i := range fx.m.Parts {
			must(t, os.WriteFile(filepath.Join(dir, fx.m.Parts[i].Filename), mustRead(t, part(i)), 0o644))
		}
		return dir
	}
	clone := func() *Manifest {
		m, err := ParseManifest(fx.m.Marshal())
		must(t, err)
		return m
	}
	other, err := NewKey()
	must(t, err)
	verifyParts := func(dir string, m *Manifest, k Key) error {
		_, err := VerifyParts(context.Background(), m, DirSource(dir))
		return err
	}

	cases := []struct {
		name    string
		prepare func(t *testing.T, dir string, m *Manifest) Key
		wantErr string
	}{
		{"flipped bit", func(t *testing.T, dir string, m *Manifest) Key {
			p := filepath.Join(dir, m.Parts[1].Filename)
			b := mustRead(t, p)
			b[12345] ^= 0x10
			must(t, os.WriteFile(p, b, 0o644))
			return fx.k
		}, "part multi.part.1 (index 1): SHA-1"},
		{"swapped parts", func(t *testing.T, dir string, m *Manifest) Key {
			a, b := filepath.Join(dir, m.Parts[0].Filename), filepath.Join(dir, m.Parts[1].Filename)
			must(t, os.Rename(a, a+".tmp"))
			must(t, os.Rename(b, a))
			must(t, os.Rename(a+".tmp", b))
			return fx.k
		}, "part multi.part.0 (index 0): SHA-1"},
		{"truncated last part", func(t *testing.T, dir string, m *Manifest) Key {
			must(t, os.Truncate(filepath.Join(dir, m.Parts[2].Filename), 100))
			return fx.k
		}, "part multi.part.2 (index 2): 100 bytes"},
		{"missing part", func(t *testing.T, dir string, m *Manifest) Key {
			must(t, os.Remove(filepath.Join(dir, m.Parts[2].Filename)))
			return fx.k
		}, "part multi.part.2: opening part"},
		{"part name with path", func(t *testing.T, dir string, m *Manifest) Key {
			m.Parts[1].Filename = "../x"
			return fx.k
		}, `"../x" is not a plain file name`},
		{"changed size", func(t *testing.T, dir string, m *Manifest) Key {
			m.Size -= 512
			return fx.k
		}, "but the manifest's <size> is"},
		{"changed digest", func(t *testing.T, dir string, m *Manifest) Key {
			m.Digest = strings.Repeat("0", 40)
			return fx.k
		}, "does not match the manifest's <digest>"},
		{"wrong key", func(t *testing.T, dir string, m *Manifest) Key {
			return other
		}, "wrong key"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir, m := copyParts(t), clone()
			k := c.prepare(t, dir, m)
			_, err := unbundleTo(t, m, k, dir)
			if err == nil {
				t.Fatalf("Unbundle accepted the tampered bundle")
			}
			if !strings.Contains(err.Error(), c.wantErr) {
				t.Fatalf("Unbundle: %v\nwant an error mentioning %q", err, c.wantErr)
			}
			_, err = Verify(context.Background(), m, k, DirSource(dir))
			if err == nil || !strings.Contains(err.Error(), c.wantErr) {
				t.Fatalf("Verify: %v\nwant an error mentioning %q", err, c.wantErr)
			}
			// Damage to the parts is found without the key too.
			if strings.HasPrefix(c.wantErr, "part ") || strings.Contains(c.wantErr, "plain file name") {
				if err := verifyParts(dir, m, k); err == nil || !strings.Contains(err.Error(), c.wantErr) {
					t.Fatalf("VerifyParts: %v\nwant an error mentioning %q", err, c.wantErr)
				}
			}
		})
	}

	// A changed manifest field breaks the signature.
	cert, err := LoadCertificate(fx.cert)
	must(t, err)
	pub, _ := CertificateKey(cert)
	m := clone()
	must(t, m.VerifySignature(pub))
	m.Architecture = "i386"
	if err := m.VerifySignature(pub); !errors.Is(err, ErrSignature) {
		t.Errorf("VerifySignature after changing <architecture>: %v", err)
	}
	// DirSource itself refuses paths, whatever the manifest says.
	for _, name := range []string{"../x", "/etc/passwd", "a/b", "..", ""} {
		if _, err := DirSource(fx.dir).OpenPart(name); err == nil {
			t.Errorf("DirSource opened %q", name)
		}
	}
}

func TestUnbundleCanceled(t *testing.T) {
	m, err := ParseManifest(readSampleManifest(t))
	must(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err = Verify(ctx, m, sampleKey(t), DirSource(filepath.Join(sampleDir, "bundle")))
	if !errors.Is(err, context.Canceled) {
		t.Errorf("Verify with a canceled context: %v", err)
	}
}

func TestDecryptReaderPadding(t *testing.T) {
	k := sampleKey(t)
	// Good: openssl-compatible ciphertext round trip through every chunking.
	plain := bytes.Repeat([]byte("0123456789abcdef!"), 40000)
	ct := encryptForTest(t, k, plain)
	for _, step := range []int{1, 15, 16, 17, 4096, len(ct)} {
		r, err := newDecryptReader(&chunkReader{ct, step}, k)
		must(t, err)
		got, err := io.ReadAll(r)
		if err != nil || !bytes.Equal(got, plain) {
			t.Fatalf("step %d: %v (got %d bytes)", step, err, len(got))
		}
	}
	for name, c := range map[string][]byte{
		"partial block": ct[:len(ct)-1],
		"empty":         nil,
	} {
		r, _ := newDecryptReader(bytes.NewReader(c), k)
		if _, err := io.ReadAll(r); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

// chunkReader returns at most step bytes per Read.
type chunkReader struct {
	b    []byte
	step int
}

func (c *chunkReader) Read(p []byte) (int, error) {
	if len(c.b) == 0 {
		return 0, io.EOF
	}
	n := copy(p[:min(len(p), c.step)], c.b)
	c.b = c.b[n:]
	return n, nil
}

// encryptForTest encrypts with openssl enc, the reference.
func encryptForTest(t testing.TB, k Key, plain []byte) []byte {
	t.Helper()
	requireTool(t, "openssl")
	cmd := exec.Command("openssl", "enc", "-e", "-aes-128-cbc", "-K", k.KeyHex(), "-iv", k.IVHex())
	cmd.Stdin = bytes.NewReader(plain)
	out, err := cmd.Output()
	must(t, err)
	return out
}
