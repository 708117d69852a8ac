package bundle

import (
	"crypto/x509"
	"embed"
	"fmt"
	"strings"
)

// The EC2 certificates of the reference tools (public data). EC2 holds their private
// keys and decrypts the ec2_encrypted_* values of a manifest with them. All are long
// expired: only their public keys are used.
//
//go:embed certs/*.pem
var ec2Certs embed.FS

// EC2CertificateFile returns the embedded certificate file name used for region. The
// key belongs to the AWS partition, not the region: every China region (cn-north-1,
// cn-northwest-1) uses the cn-north-1 certificate, every GovCloud region the gov one,
// and every other region the default certificate.
func EC2CertificateFile(region string) string {
	switch {
	case strings.HasPrefix(region, "cn-"):
		return "cert-ec2-cn-north-1.pem"
	case strings.HasPrefix(region, "us-gov-"):
		return "cert-ec2-gov.pem"
	default:
		return "cert-ec2.pem"
	}
}

// EC2Certificate returns EC2's certificate for region ("" means the default one). For a
// region whose partition has another key, users pass the certificate by file instead
// (LoadCertificate).
func EC2Certificate(region string) (*x509.Certificate, error) {
	name := EC2CertificateFile(region)
	data, err := ec2Certs.ReadFile("certs/" + name)
	if err != nil {
		return nil, fmt.Errorf("embedded EC2 certificate %s: %w", name, err)
	}
	cert, err := ParseCertificatePEM(data)
	if err != nil {
		return nil, fmt.Errorf("embedded EC2 certificate %s: %w", name, err)
	}
	return cert, nil
}
