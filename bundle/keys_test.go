package bundle

import (
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func requireTool(t testing.TB, name string) {
	t.Helper()
	if _, err := exec.LookPath(name); err != nil {
		if os.Getenv("INSTANCESTORE_CI") != "" {
			t.Fatalf("%s is required (listed in .ci/apt-packages): %v", name, err)
		}
		t.Skipf("%s not installed", name)
	}
}

func runTool(t testing.TB, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// writeKeyPair stores a throw-away user as cert.pem, key.pem (PKCS#1) and pub.pem.
func writeKeyPair(t testing.TB, dir string) (certPath, keyPath string) {
	t.Helper()
	cert, priv, err := NewThrowawayUser()
	if err != nil {
		t.Fatal(err)
	}
	certPath, keyPath = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	must(t, os.WriteFile(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw}), 0o644))
	must(t, os.WriteFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(priv)}), 0o600))
	return certPath, keyPath
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// TestWrapKeyOpenSSL: openssl recovers the hex key and IV from our wrapping.
func TestWrapKeyOpenSSL(t *testing.T) {
	requireTool(t, "openssl")
	dir := t.TempDir()
	certPath, keyPath := writeKeyPair(t, dir)
	cert, err := LoadCertificate(certPath)
	must(t, err)
	pub, _ := CertificateKey(cert)
	k, err := NewKey()
	must(t, err)
	encKey, encIV, err := WrapKey(pub, k)
	must(t, err)
	if strings.ToLower(encKey) != encKey || len(encKey) != 512 {
		t.Errorf("wrapped key is not 256 bytes of lowercase hex: %s", encKey)
	}
	for _, c := range []struct{ enc, want string }{{encKey, k.KeyHex()}, {encIV, k.IVHex()}} {
		ct, _ := hex.DecodeString(c.enc)
		in := filepath.Join(dir, "ct.bin")
		must(t, os.WriteFile(in, ct, 0o600))
		got := runTool(t, "openssl", "pkeyutl", "-decrypt", "-inkey", keyPath, "-pkeyopt", "rsa_padding_mode:pkcs1", "-in", in)
		if got != c.want {
			t.Errorf("openssl decrypted %q, want %q", got, c.want)
		}
	}
	// And our UnwrapKey reads what openssl wraps.
	plain := filepath.Join(dir, "plain")
	must(t, os.WriteFile(plain, []byte(k.KeyHex()), 0o600))
	ctKey := runTool(t, "openssl", "pkeyutl", "-encrypt", "-certin", "-inkey", certPath, "-pkeyopt", "rsa_padding_mode:pkcs1", "-in", plain)
	must(t, os.WriteFile(plain, []byte(k.IVHex()), 0o600))
	ctIV := runTool(t, "openssl", "pkeyutl", "-encrypt", "-certin", "-inkey", certPath, "-pkeyopt", "rsa_padding_mode:pkcs1", "-in", plain)
	priv, err := LoadPrivateKey(keyPath)
	must(t, err)
	got, err := UnwrapKey(priv, hex.EncodeToString([]byte(ctKey)), hex.EncodeToString([]byte(ctIV)))
	must(t, err)
	if got != k {
		t.Errorf("UnwrapKey of openssl's wrapping = %s/%s, want %s/%s", got.KeyHex(), got.IVHex(), k.KeyHex(), k.IVHex())
	}
}

// TestSignOpenSSL: openssl dgst -sha1 -verify accepts our signature over SignedBytes.
func TestSignOpenSSL(t *testing.T) {
	requireTool(t, "openssl")
	dir := t.TempDir()
	certPath, keyPath := writeKeyPair(t, dir)
	priv, err := LoadPrivateKey(keyPath)
	must(t, err)
	m := goldenManifest()
	must(t, m.Sign(priv))
	sig, _ := hex.DecodeString(m.Signature)
	// Cut the signed bytes out of the serialized manifest the way the spec says.
	s := string(m.Marshal())
	signed := s[strings.Index(s, "<machine_configuration>") : strings.Index(s, "</image>")+len("</image>")]
	for name, data := range map[string][]byte{"sig.bin": sig, "signed.bin": []byte(signed)} {
		must(t, os.WriteFile(filepath.Join(dir, name), data, 0o600))
	}
	pubPath := filepath.Join(dir, "pub.pem")
	runTool(t, "openssl", "x509", "-in", certPath, "-pubkey", "-noout", "-out", pubPath)
	out := runTool(t, "openssl", "dgst", "-sha1", "-verify", pubPath, "-signature", filepath.Join(dir, "sig.bin"), filepath.Join(dir, "signed.bin"))
	if !strings.Contains(out, "Verified OK") {
		t.Errorf("openssl: %s", out)
	}
	cert, err := LoadCertificate(certPath)
	must(t, err)
	pub, _ := CertificateKey(cert)
	must(t, m.VerifySignature(pub))
	must(t, MatchKey(cert, priv))
}

func TestLoadKeysAndCerts(t *testing.T) {
	requireTool(t, "openssl")
	dir := t.TempDir()
	certPath, keyPath := writeKeyPair(t, dir)
	pkcs8 := filepath.Join(dir, "key8.pem")
	runTool(t, "openssl", "pkcs8", "-topk8", "-nocrypt", "-in", keyPath, "-out", pkcs8)
	if b, _ := os.ReadFile(pkcs8); !strings.Contains(string(b), "BEGIN PRIVATE KEY") {
		t.Fatalf("openssl did not write PKCS#8: %s", b)
	}
	k1, err := LoadPrivateKey(keyPath)
	must(t, err)
	k8, err := LoadPrivateKey(pkcs8)
	must(t, err)
	if !k1.Equal(k8) {
		t.Errorf("PKCS#1 and PKCS#8 forms differ")
	}
	ecKey := filepath.Join(dir, "ec.pem")
	runTool(t, "openssl", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", ecKey)
	encKey := filepath.Join(dir, "enc.pem")
	runTool(t, "openssl", "pkcs8", "-topk8", "-in", keyPath, "-out", encKey, "-passout", "pass:secret")
	garbage := filepath.Join(dir, "garbage.pem")
	must(t, os.WriteFile(garbage, []byte("hello"), 0o600))

	for _, c := range []struct {
		path, want string
		load       func(string) error
	}{
		{filepath.Join(dir, "missing.pem"), "missing.pem", func(p string) error { _, err := LoadPrivateKey(p); return err }},
		{ecKey, "want RSA", func(p string) error { _, err := LoadPrivateKey(p); return err }},
		{encKey, "passphrase-protected", func(p string) error { _, err := LoadPrivateKey(p); return err }},
		{garbage, "garbage.pem: no PEM private key", func(p string) error { _, err := LoadPrivateKey(p); return err }},
		{keyPath, "key.pem: no PEM CERTIFICATE", func(p string) error { _, err := LoadCertificate(p); return err }},
		{filepath.Join(dir, "nocert.pem"), "nocert.pem", func(p string) error { _, err := LoadCertificate(p); return err }},
	} {
		err := c.load(c.path)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("loading %s: %v, want an error mentioning %q", filepath.Base(c.path), err, c.want)
		}
	}
	cert, err := LoadCertificate(certPath)
	must(t, err)
	_, other, err := NewThrowawayUser()
	must(t, err)
	if err := MatchKey(cert, other); err == nil {
		t.Errorf("MatchKey accepted a foreign key")
	}
}

func TestEC2Certificate(t *testing.T) {
	for _, c := range []struct {
		region, file, cn string
		bits             int
	}{
		{"", "cert-ec2.pem", "AES Test", 1024},
		{"us-east-1", "cert-ec2.pem", "AES Test", 1024},
		{"eu-central-2", "cert-ec2.pem", "AES Test", 1024},
		{"us-gov-west-1", "cert-ec2-gov.pem", "EC2 AMI Authority", 1024},
		{"us-gov-east-1", "cert-ec2-gov.pem", "EC2 AMI Authority", 1024},
		{"cn-north-1", "cert-ec2-cn-north-1.pem", "AMI Manifests", 2048},
		{"cn-northwest-1", "cert-ec2-cn-north-1.pem", "AMI Manifests", 2048},
	} {
		if f := EC2CertificateFile(c.region); f != c.file {
			t.Errorf("region %q: file %s, want %s", c.region, f, c.file)
		}
		cert, err := EC2Certificate(c.region)
		if err != nil {
			t.Fatalf("region %q: %v", c.region, err)
		}
		pub, err := CertificateKey(cert)
		must(t, err)
		if cert.Subject.CommonName != c.cn || pub.N.BitLen() != c.bits {
			t.Errorf("region %q: CN %q %d bits, want %q %d", c.region, cert.Subject.CommonName, pub.N.BitLen(), c.cn, c.bits)
		}
		// Expired certificates still wrap keys.
		if _, _, err := WrapKey(pub, Key{}); err != nil {
			t.Errorf("region %q: WrapKey: %v", c.region, err)
		}
	}
}
