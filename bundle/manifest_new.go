package bundle

import (
	"crypto/x509"
	"fmt"
)

// ManifestConfig is what a manifest says besides the bundle itself.
type ManifestConfig struct {
	Architecture        string // i386 or x86_64
	BlockDeviceMappings []BlockDeviceMapping
	KernelID, RamdiskID string
	ProductCodes        []string
	User                string // 12-digit AWS account id, hyphens allowed
	Ancestors           []string
	// Bundler names the tool in <bundler>; empty means DefaultBundler.
	Bundler Bundler
}

// NewManifest builds the manifest of a written bundle: it wraps the key and IV for EC2
// and for the user and fills everything but the signature (call Sign next).
func NewManifest(res *Result, cfg ManifestConfig, key Key, ec2Cert, userCert *x509.Certificate) (*Manifest, error) {
	if res == nil || ec2Cert == nil || userCert == nil {
		return nil, fmt.Errorf("NewManifest: result, EC2 certificate and user certificate are required")
	}
	ec2Pub, err := CertificateKey(ec2Cert)
	if err != nil {
		return nil, fmt.Errorf("EC2 certificate: %w", err)
	}
	userPub, err := CertificateKey(userCert)
	if err != nil {
		return nil, fmt.Errorf("user certificate: %w", err)
	}
	b := cfg.Bundler
	if b == (Bundler{}) {
		b = DefaultBundler
	}
	m := &Manifest{
		Version:             ManifestVersion,
		Bundler:             b,
		Architecture:        cfg.Architecture,
		BlockDeviceMappings: sortedMappings(cfg.BlockDeviceMappings),
		KernelID:            cfg.KernelID,
		RamdiskID:           cfg.RamdiskID,
		ProductCodes:        append([]string(nil), cfg.ProductCodes...),
		Name:                res.Name,
		User:                NormalizeAccountID(cfg.User),
		Type:                "machine",
		Ancestors:           append([]string(nil), cfg.Ancestors...),
		Digest:              res.Digest,
		Size:                res.Size,
		BundledSize:         res.BundledSize,
	}
	if m.EC2EncryptedKey, m.EC2EncryptedIV, err = WrapKey(ec2Pub, key); err != nil {
		return nil, fmt.Errorf("EC2 certificate: %w", err)
	}
	if m.UserEncryptedKey, m.UserEncryptedIV, err = WrapKey(userPub, key); err != nil {
		return nil, fmt.Errorf("user certificate: %w", err)
	}
	for _, p := range res.Parts {
		m.Parts = append(m.Parts, ManifestPart{Index: p.Index, Filename: p.Name, Digest: p.SHA1})
	}
	if err := m.Validate(); err != nil {
		return nil, err
	}
	return m, nil
}

// NormalizeAccountID removes the hyphens users write in account ids (1234-5678-9012).
func NormalizeAccountID(s string) string {
	out := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		if s[i] != '-' {
			out = append(out, s[i])
		}
	}
	return string(out)
}
