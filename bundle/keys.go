package bundle

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"os"
	"time"
)

// WrapKey encrypts the bundle key and IV for the holder of pub, as the manifest's
// *_encrypted_key and *_encrypted_iv: RSAES-PKCS1-v1_5 of the ASCII bytes of the
// 32-character hex strings, written as lowercase hex.
func WrapKey(pub *rsa.PublicKey, k Key) (encKey, encIV string, err error) {
	ek, err := rsa.EncryptPKCS1v15(rand.Reader, pub, []byte(k.KeyHex()))
	if err != nil {
		return "", "", fmt.Errorf("wrapping bundle key: %w", err)
	}
	ei, err := rsa.EncryptPKCS1v15(rand.Reader, pub, []byte(k.IVHex()))
	if err != nil {
		return "", "", fmt.Errorf("wrapping bundle IV: %w", err)
	}
	return hex.EncodeToString(ek), hex.EncodeToString(ei), nil
}

// ErrWrongKey is returned (wrapped) by UnwrapKey when priv cannot decrypt the values:
// the bundle was made for another certificate.
var ErrWrongKey = errors.New("the private key does not decrypt the bundle key")

// UnwrapKey recovers the bundle key and IV from their wrapped hex forms.
func UnwrapKey(priv *rsa.PrivateKey, encKey, encIV string) (Key, error) {
	var plain [2]string
	for i, f := range []struct{ what, v string }{{"key", encKey}, {"IV", encIV}} {
		ct, err := hex.DecodeString(f.v)
		if err != nil {
			return Key{}, fmt.Errorf("wrapped bundle %s is not hex: %w", f.what, err)
		}
		pt, err := rsa.DecryptPKCS1v15(nil, priv, ct)
		if err != nil {
			return Key{}, fmt.Errorf("unwrapping bundle %s: %w (the bundle was made for another certificate)", f.what, ErrWrongKey)
		}
		plain[i] = string(pt)
	}
	k, err := ParseKey(plain[0], plain[1])
	if err != nil {
		return Key{}, fmt.Errorf("unwrapped bundle key: %w", err)
	}
	return k, nil
}

// ParseCertificatePEM reads the first CERTIFICATE block of a PEM file; its public key
// must be RSA (the manifest's key wrapping and signature are RSA only).
func ParseCertificatePEM(data []byte) (*x509.Certificate, error) {
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			return nil, errors.New("no PEM CERTIFICATE block found")
		}
		if b.Type != "CERTIFICATE" {
			continue
		}
		cert, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, fmt.Errorf("parsing certificate: %w", err)
		}
		if _, ok := cert.PublicKey.(*rsa.PublicKey); !ok {
			return nil, fmt.Errorf("certificate key is %T, want RSA", cert.PublicKey)
		}
		return cert, nil
	}
}

// CertificateKey returns the RSA public key of a certificate made by
// ParseCertificatePEM or NewThrowawayUser.
func CertificateKey(cert *x509.Certificate) (*rsa.PublicKey, error) {
	pub, ok := cert.PublicKey.(*rsa.PublicKey)
	if !ok {
		return nil, fmt.Errorf("certificate %q has a %T key, want RSA", cert.Subject.CommonName, cert.PublicKey)
	}
	return pub, nil
}

// LoadCertificate reads an X.509 certificate (PEM) from path. Expiry is not checked:
// only the public key is used, and EC2's own certificates are long expired.
func LoadCertificate(path string) (*x509.Certificate, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading certificate: %w", err)
	}
	cert, err := ParseCertificatePEM(data)
	if err != nil {
		return nil, fmt.Errorf("certificate %s: %w", path, err)
	}
	return cert, nil
}

// ParsePrivateKeyPEM reads an RSA private key in PKCS#1 ("RSA PRIVATE KEY") or PKCS#8
// ("PRIVATE KEY") PEM form.
func ParsePrivateKeyPEM(data []byte) (*rsa.PrivateKey, error) {
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			return nil, errors.New("no PEM private key block found (want RSA PRIVATE KEY or PRIVATE KEY)")
		}
		switch b.Type {
		case "RSA PRIVATE KEY":
			if _, encrypted := b.Headers["DEK-Info"]; encrypted {
				return nil, errors.New("the private key is passphrase-protected: decrypt it first (openssl rsa -in KEY -out PLAIN)")
			}
			k, err := x509.ParsePKCS1PrivateKey(b.Bytes)
			if err != nil {
				return nil, fmt.Errorf("parsing PKCS#1 private key: %w", err)
			}
			return k, nil
		case "PRIVATE KEY":
			k, err := x509.ParsePKCS8PrivateKey(b.Bytes)
			if err != nil {
				return nil, fmt.Errorf("parsing PKCS#8 private key: %w", err)
			}
			rk, ok := k.(*rsa.PrivateKey)
			if !ok {
				return nil, fmt.Errorf("private key is %T, want RSA", k)
			}
			return rk, nil
		case "ENCRYPTED PRIVATE KEY":
			return nil, errors.New("the private key is passphrase-protected: decrypt it first (openssl pkey -in KEY -out PLAIN)")
		}
	}
}

// LoadPrivateKey reads an RSA private key (PKCS#1 or PKCS#8 PEM) from path.
func LoadPrivateKey(path string) (*rsa.PrivateKey, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading private key: %w", err)
	}
	k, err := ParsePrivateKeyPEM(data)
	if err != nil {
		return nil, fmt.Errorf("private key %s: %w", path, err)
	}
	return k, nil
}

// MatchKey checks that priv is the private key of cert.
func MatchKey(cert *x509.Certificate, priv *rsa.PrivateKey) error {
	pub, err := CertificateKey(cert)
	if err != nil {
		return err
	}
	if !pub.Equal(&priv.PublicKey) {
		return errors.New("the private key does not belong to the certificate")
	}
	return nil
}

// NewThrowawayUser makes a fresh self-signed user certificate and its 2048-bit key, for
// bundles made without the user's X.509 material. Once the key is dropped nobody but
// EC2 can decrypt the bundle.
func NewThrowawayUser() (*x509.Certificate, *rsa.PrivateKey, error) {
	priv, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, nil, fmt.Errorf("generating throw-away user key: %w", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		return nil, nil, fmt.Errorf("generating certificate serial: %w", err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: "instancestore-bundler throw-away user"},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &priv.PublicKey, priv)
	if err != nil {
		return nil, nil, fmt.Errorf("making throw-away user certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, fmt.Errorf("reading throw-away user certificate: %w", err)
	}
	return cert, priv, nil
}
