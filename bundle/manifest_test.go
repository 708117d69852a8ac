package bundle

import (
	"bytes"
	"crypto/sha1"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const sampleDir = "testdata/ec2-ami-tools-1.5.3-sample"

func readSampleManifest(t testing.TB) []byte {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(sampleDir, "bundle", "sample.manifest.xml"))
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func TestParseSampleManifest(t *testing.T) {
	data := readSampleManifest(t)
	m, err := ParseManifest(data)
	if err != nil {
		t.Fatalf("ParseManifest: %v", err)
	}
	want := []struct{ what, got, want string }{
		{"version", m.Version, "2007-10-10"},
		{"bundler", m.Bundler.Name + " " + m.Bundler.Version + " " + m.Bundler.Release, "ec2-ami-tools 1.5 3"},
		{"architecture", m.Architecture, "x86_64"},
		{"kernel", m.KernelID, "aki-12345678"},
		{"ramdisk", m.RamdiskID, ""},
		{"name", m.Name, "sample"},
		{"user", m.User, "123456789012"},
		{"type", m.Type, "machine"},
		{"digest", m.Digest, "16f07cd2c7b2067a6ed5fa1f51fb0f2c70249448"},
	}
	for _, w := range want {
		if w.got != w.want {
			t.Errorf("%s = %q, want %q", w.what, w.got, w.want)
		}
	}
	if m.Size != 2097152 || m.BundledSize != 4352 {
		t.Errorf("size %d bundled %d, want 2097152 4352", m.Size, m.BundledSize)
	}
	wantBDM := []BlockDeviceMapping{{"ami", "sda1"}, {"ephemeral0", "sdb"}, {"root", "/dev/sda1"}}
	if len(m.BlockDeviceMappings) != 3 {
		t.Fatalf("mappings %v", m.BlockDeviceMappings)
	}
	for i := range wantBDM {
		if m.BlockDeviceMappings[i] != wantBDM[i] {
			t.Errorf("mapping %d = %v, want %v", i, m.BlockDeviceMappings[i], wantBDM[i])
		}
	}
	if len(m.Parts) != 1 || m.Parts[0] != (ManifestPart{0, "sample.part.0", "5050918fef7063c39bd76a064b5acd28b152786a"}) {
		t.Errorf("parts %v", m.Parts)
	}
	if got := m.Marshal(); !bytes.Equal(got, data) {
		t.Errorf("Marshal does not reproduce the fixture:\n got %s\nwant %s", got, data)
	}
	signed := m.SignedBytes()
	if sum := sha1.Sum(signed); len(signed) != 2462 || hex.EncodeToString(sum[:]) != "738160e3d679fa195322a708de41474b0e7caa68" {
		t.Errorf("signed bytes: %d bytes sha1 %x, want 2462 bytes sha1 738160e3...", len(signed), sum)
	}
	if !bytes.Contains(data, signed) {
		t.Errorf("signed bytes are not a substring of the manifest")
	}
}

func TestSampleSignature(t *testing.T) {
	m, err := ParseManifest(readSampleManifest(t))
	if err != nil {
		t.Fatal(err)
	}
	cert, err := LoadCertificate(filepath.Join(sampleDir, "TEST-ONLY-user-cert.pem"))
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := CertificateKey(cert)
	if err := m.VerifySignature(pub); err != nil {
		t.Fatalf("VerifySignature: %v", err)
	}
	// PKCS#1 v1.5 signatures are deterministic: re-signing the body reproduces them.
	priv, err := LoadPrivateKey(filepath.Join(sampleDir, "TEST-ONLY-user-pk.pem"))
	if err != nil {
		t.Fatal(err)
	}
	orig := m.Signature
	m.Signature = ""
	if err := m.Sign(priv); err != nil {
		t.Fatal(err)
	}
	if m.Signature != orig {
		t.Errorf("re-signed signature differs:\n got %s\nwant %s", m.Signature, orig)
	}
	// A changed field breaks the signature.
	m.Size++
	if err := m.VerifySignature(pub); err == nil || !strings.Contains(err.Error(), "signature does not match") {
		t.Errorf("VerifySignature after changing <size>: %v, want a mismatch", err)
	}
	// Another key does not verify either.
	_, other, err := NewThrowawayUser()
	if err != nil {
		t.Fatal(err)
	}
	m.Size--
	if err := m.VerifySignature(&other.PublicKey); err == nil {
		t.Errorf("signature verified with an unrelated key")
	}
}

func TestSampleUnwrapKey(t *testing.T) {
	m, err := ParseManifest(readSampleManifest(t))
	if err != nil {
		t.Fatal(err)
	}
	priv, err := LoadPrivateKey(filepath.Join(sampleDir, "TEST-ONLY-user-pk.pem"))
	if err != nil {
		t.Fatal(err)
	}
	k, err := UnwrapKey(priv, m.UserEncryptedKey, m.UserEncryptedIV)
	if err != nil {
		t.Fatal(err)
	}
	if k.KeyHex() != "032bb996d86b93be3550765cc0499747" || k.IVHex() != "630a7f9ece8827cd9ddacf57ba8306f2" {
		t.Errorf("unwrapped key %s iv %s, want the README's values", k.KeyHex(), k.IVHex())
	}
	// The EC2 half belongs to AWS: our test key cannot open it.
	if _, err := UnwrapKey(priv, m.EC2EncryptedKey, m.EC2EncryptedIV); err == nil {
		t.Errorf("unwrapped the EC2 key with the user key")
	}
}

// goldenManifest has every optional element and values that need escaping. The
// expected bytes in testdata/golden/full.manifest.xml were written by hand from the
// rules of the format (section 3) and checked element by element.
func goldenManifest() *Manifest {
	return &Manifest{
		Version:      ManifestVersion,
		Bundler:      Bundler{Name: `tom & "jerry's" <bundler>`, Version: "1.0", Release: "a>b"},
		Architecture: "i386",
		// Deliberately unsorted: serialization sorts by virtual name.
		BlockDeviceMappings: []BlockDeviceMapping{{"swap", "sda3"}, {"ami", "sda1"}, {"root", "/dev/sda1"}, {"ephemeral0", "sdb"}},
		KernelID:            "aki-0123abcd",
		RamdiskID:           "ari-89abcdef",
		ProductCodes:        []string{"pc<1>", "pc&2"},
		Name:                "web's&image",
		User:                "210987654321",
		Type:                "machine",
		Ancestors:           []string{"ami-11111111", "ami-22222222"},
		Digest:              "0123456789abcdef0123456789abcdef01234567",
		Size:                10737418240,
		BundledSize:         11534336,
		EC2EncryptedKey:     "aa01",
		UserEncryptedKey:    "bb02",
		EC2EncryptedIV:      "cc03",
		UserEncryptedIV:     "dd04",
		Parts: []ManifestPart{
			{0, "web's&image.part.0", "1111111111111111111111111111111111111111"},
			{1, "web's&image.part.1", "2222222222222222222222222222222222222222"},
		},
		Signature: "ee05",
	}
}

func TestGoldenManifest(t *testing.T) {
	want, err := os.ReadFile("testdata/golden/full.manifest.xml")
	if err != nil {
		t.Fatal(err)
	}
	m := goldenManifest()
	if err := m.Validate(); err != nil {
		t.Fatalf("Validate: %v", err)
	}
	got := m.Marshal()
	if !bytes.Equal(got, want) {
		t.Fatalf("Marshal differs from the golden file:\n got %s\nwant %s", got, want)
	}
	back, err := ParseManifest(want)
	if err != nil {
		t.Fatalf("ParseManifest(golden): %v", err)
	}
	if again := back.Marshal(); !bytes.Equal(again, want) {
		t.Errorf("parse+marshal does not round-trip:\n got %s\nwant %s", again, want)
	}
	if back.Bundler.Name != m.Bundler.Name || back.ProductCodes[0] != "pc<1>" || back.Name != "web's&image" {
		t.Errorf("escaped values not decoded: %+v", back)
	}
	// SignedBytes is the substring from <machine_configuration> through </image>.
	s := string(want)
	i, j := strings.Index(s, "<machine_configuration>"), strings.Index(s, "</image>")+len("</image>")
	if string(m.SignedBytes()) != s[i:j] {
		t.Errorf("SignedBytes is not the machine_configuration..image substring")
	}
	// Unsigned manifests have no <signature> element at all.
	m.Signature = ""
	if bytes.Contains(m.Marshal(), []byte("signature")) {
		t.Errorf("unsigned manifest still has a signature element")
	}
}

func TestMarshalOmitsEmptyOptionals(t *testing.T) {
	m := goldenManifest()
	m.BlockDeviceMappings, m.KernelID, m.RamdiskID, m.ProductCodes, m.Ancestors = nil, "", "", nil, nil
	got := string(m.Marshal())
	for _, e := range []string{"block_device_mapping", "kernel_id", "ramdisk_id", "product_codes", "ancestry"} {
		if strings.Contains(got, e) {
			t.Errorf("empty %s written: %s", e, got)
		}
	}
	if !strings.Contains(got, "<machine_configuration><architecture>i386</architecture></machine_configuration><image><name>") {
		t.Errorf("unexpected machine_configuration: %s", got)
	}
}
