package ec2sim

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"time"
)

// ec2Identity is the simulator's own "EC2" certificate and private key: bundles whose
// ec2_encrypted_key was wrapped with this certificate are the ones it can register.
type ec2Identity struct {
	certPath string
	cert     *x509.Certificate
	key      *rsa.PrivateKey
}

// loadOrCreateEC2Identity loads the given pair, or the one in dataDir, or generates a
// fresh self-signed one there (RSA 2048, like cn-north-1's).
func loadOrCreateEC2Identity(dataDir, certPath, keyPath string) (*ec2Identity, error) {
	if (certPath == "") != (keyPath == "") {
		return nil, errors.New("ec2sim: EC2CertPath and EC2KeyPath go together: give both or neither")
	}
	if certPath == "" {
		certPath = filepath.Join(dataDir, "ec2-cert.pem")
		keyPath = filepath.Join(dataDir, "ec2-key.pem")
		if _, err := os.Stat(certPath); errors.Is(err, os.ErrNotExist) {
			if err := generateEC2Identity(certPath, keyPath); err != nil {
				return nil, err
			}
		}
	}
	certPEM, err := os.ReadFile(certPath)
	if err != nil {
		return nil, fmt.Errorf("ec2sim: reading EC2 certificate: %w", err)
	}
	b, _ := pem.Decode(certPEM)
	if b == nil || b.Type != "CERTIFICATE" {
		return nil, fmt.Errorf("ec2sim: %s holds no PEM CERTIFICATE block", certPath)
	}
	cert, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		return nil, fmt.Errorf("ec2sim: parsing EC2 certificate %s: %w", certPath, err)
	}
	keyPEM, err := os.ReadFile(keyPath)
	if err != nil {
		return nil, fmt.Errorf("ec2sim: reading EC2 private key: %w", err)
	}
	kb, _ := pem.Decode(keyPEM)
	if kb == nil {
		return nil, fmt.Errorf("ec2sim: %s holds no PEM block", keyPath)
	}
	var key *rsa.PrivateKey
	if k, err := x509.ParsePKCS1PrivateKey(kb.Bytes); err == nil {
		key = k
	} else if k8, err := x509.ParsePKCS8PrivateKey(kb.Bytes); err == nil {
		rk, ok := k8.(*rsa.PrivateKey)
		if !ok {
			return nil, fmt.Errorf("ec2sim: %s is not an RSA key", keyPath)
		}
		key = rk
	} else {
		return nil, fmt.Errorf("ec2sim: parsing EC2 private key %s: %w", keyPath, err)
	}
	pub, ok := cert.PublicKey.(*rsa.PublicKey)
	if !ok || pub.N.Cmp(key.N) != 0 {
		return nil, fmt.Errorf("ec2sim: the key %s does not belong to the certificate %s", keyPath, certPath)
	}
	return &ec2Identity{certPath: certPath, cert: cert, key: key}, nil
}

func generateEC2Identity(certPath, keyPath string) error {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return fmt.Errorf("ec2sim: generating EC2 key: %w", err)
	}
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: "ec2sim", Organization: []string{"instancestore local EC2 simulator"}},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().AddDate(10, 0, 0),
		KeyUsage:     x509.KeyUsageKeyEncipherment | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return fmt.Errorf("ec2sim: creating EC2 certificate: %w", err)
	}
	if err := os.WriteFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)}), 0o600); err != nil {
		return fmt.Errorf("ec2sim: writing EC2 key: %w", err)
	}
	if err := os.WriteFile(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		return fmt.Errorf("ec2sim: writing EC2 certificate: %w", err)
	}
	return nil
}
