//go:build linux

package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/instancestore/packer-plugin-instancestore/bundle"
)

func TestMigrateManifest(t *testing.T) {
	dir := t.TempDir()
	certPath, keyPath := volUser(t, dir)
	// Two "EC2" certificates: the region the bundle was made for and the new one.
	ec2A, ec2B := t.TempDir(), t.TempDir()
	aCert, _ := volUser(t, ec2A)
	bCert, bKey := volUser(t, ec2B)

	img := filepath.Join(dir, "disk.img")
	data := make([]byte, 3<<20)
	rand.Read(data)
	volMust(t, os.WriteFile(img, data, 0o644))
	bdir := filepath.Join(dir, "bundle")
	volMust(t, os.Mkdir(bdir, 0o755))
	if code, _, e := runCLI("bundle-image", "-i", img, "-u", "123456789012", "-c", certPath, "-k", keyPath, "--ec2cert", aCert, "-d", bdir, "-p", "disk"); code != 0 {
		t.Fatalf("bundle-image: %d %s", code, e)
	}
	manifest := filepath.Join(bdir, "disk.manifest.xml")
	orig, _ := os.ReadFile(manifest)

	// A tampered manifest is refused and left as it is.
	tampered := filepath.Join(dir, "tampered.manifest.xml")
	volMust(t, os.WriteFile(tampered, bytes.Replace(orig, []byte("123456789012"), []byte("210987654321"), 1), 0o644))
	if code, _, e := runCLI("migrate-manifest", "-m", tampered, "-c", certPath, "-k", keyPath, "--ec2cert", bCert); code != 1 || !strings.Contains(e, "does not authenticate") {
		t.Errorf("tampered manifest: exit %d, %s", code, e)
	}
	if code, _, e := runCLI("migrate-manifest", "-m", manifest, "-c", certPath, "-k", keyPath); code != 2 || !strings.Contains(e, "--region and --ec2cert") {
		t.Errorf("no certificate: exit %d, %s", code, e)
	}

	if code, _, e := runCLI("migrate-manifest", "-m", manifest, "-c", certPath, "-k", keyPath, "--ec2cert", bCert, "--kernel", "aki-12345678"); code != 0 {
		t.Fatalf("migrate-manifest: %d %s", code, e)
	}
	raw, _ := os.ReadFile(manifest)
	m, err := bundle.ParseManifest(raw)
	volMust(t, err)
	user, _ := bundle.LoadCertificate(certPath)
	upub, _ := bundle.CertificateKey(user)
	if err := m.VerifySignature(upub); err != nil {
		t.Fatalf("the migrated manifest does not verify: %v", err)
	}
	if m.KernelID != "aki-12345678" {
		t.Errorf("kernel %q, want aki-12345678", m.KernelID)
	}
	priv, _ := bundle.LoadPrivateKey(bKey)
	k, err := bundle.UnwrapKey(priv, m.EC2EncryptedKey, m.EC2EncryptedIV)
	if err != nil {
		t.Fatalf("the new EC2 certificate's key does not unwrap the bundle key: %v", err)
	}
	out, err := os.Create(filepath.Join(dir, "unbundled"))
	volMust(t, err)
	defer out.Close()
	if err := bundle.Unbundle(context.Background(), m, k, bundle.DirSource(bdir), out); err != nil {
		t.Fatalf("unbundling with the new EC2 key: %v", err)
	}
	got, _ := os.ReadFile(out.Name())
	if !bytes.Equal(got, data) {
		t.Errorf("the image unbundled with the new EC2 key differs")
	}
}
