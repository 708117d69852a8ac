package main

import (
	"context"
	"crypto/rsa"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/instancestore/packer-plugin-instancestore/bundle"
)

func init() {
	register(command{
		name:    "verify",
		summary: "check a bundle without writing the image; prints every check",
		run:     runVerify,
	})
}

func runVerify(args []string, stdout, stderr io.Writer) error {
	f := newFlagSet("verify", "-m MANIFEST [-s SRCDIR] [-c USER_CERT] [-k USER_KEY]",
		"Checks a bundle and prints each check: the manifest (strictly parsed), the signature\n"+
			"(with -c, or with the public half of -k), the part names, sizes and SHA-1s, and with\n"+
			"-k the decryption, the single tar member, the image size and the tar stream's SHA-1.\n"+
			"Exits 0 only if every check held.")
	var mf manifestFlags
	mf.register(f)
	var certPath, keyPath string
	f.stringVar(&certPath, "c", "cert", "PEM", "the user certificate: checks the manifest's signature")
	f.stringVar(&keyPath, "k", "privatekey", "PEM", "the user's private key: decrypts the bundle to check its content")
	if err := f.parse(args, stderr); err != nil {
		return err
	}
	ok := func(name, detail string) { fmt.Fprintf(stdout, "ok    %-11s %s\n", name, detail) }
	skip := func(name, detail string) { fmt.Fprintf(stdout, "skip  %-11s %s\n", name, detail) }
	fail := func(name string, err error) error {
		fmt.Fprintf(stdout, "FAIL  %-11s %v\n", name, err)
		return fmt.Errorf("bundle %s does not verify: %w", mf.Manifest, err)
	}
	if err := f.required(mf.Manifest, "m", "manifest", "give the bundle's PREFIX.manifest.xml"); err != nil {
		return err
	}
	// Load the key material first: a wrong path is a usage problem, not a bad bundle.
	var (
		cert *x509.Certificate
		priv *rsa.PrivateKey
		err  error
	)
	if certPath != "" {
		if cert, err = bundle.LoadCertificate(certPath); err != nil {
			return fmt.Errorf("-c, --cert: %w", err)
		}
	}
	if keyPath != "" {
		if priv, err = bundle.LoadPrivateKey(keyPath); err != nil {
			return fmt.Errorf("-k, --privatekey: %w", err)
		}
	}
	m, src, err := mf.load(f)
	if err != nil {
		if errors.Is(err, errUsage) {
			return err
		}
		return fail("manifest", err)
	}

	var sigErr error
	switch {
	case cert != nil:
		pub, err := bundle.CertificateKey(cert)
		if err == nil {
			err = m.VerifySignature(pub)
		}
		if err != nil {
			sigErr = err
			fmt.Fprintf(stdout, "FAIL  %-11s %v (certificate %s)\n", "signature", err, certPath)
		} else {
			ok("signature", fmt.Sprintf("RSA-SHA1 over machine_configuration and image matches certificate %s (CN=%s)", certPath, cert.Subject.CommonName))
		}
	case priv != nil:
		if err := m.VerifySignature(&priv.PublicKey); err != nil {
			sigErr = err
			fmt.Fprintf(stdout, "FAIL  %-11s %v (public half of %s)\n", "signature", err, keyPath)
		} else {
			ok("signature", "RSA-SHA1 over machine_configuration and image matches the public half of "+keyPath)
		}
	default:
		skip("signature", "give -c USER_CERT or -k USER_KEY to check it")
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var rep *bundle.VerifyReport
	if priv != nil {
		k, err := bundle.UnwrapKey(priv, m.UserEncryptedKey, m.UserEncryptedIV)
		if err != nil {
			return fail("user key", fmt.Errorf("-k %s: %w", keyPath, err))
		}
		ok("user key", "unwraps the AES-128 key and IV from user_encrypted_key/iv")
		rep, err = bundle.Verify(ctx, m, k, src)
		printReport(stdout, rep)
		if err != nil {
			return fail("bundle", err)
		}
	} else {
		rep, err = bundle.VerifyParts(ctx, m, src)
		printReport(stdout, rep)
		if err != nil {
			return fail("parts", err)
		}
		skip("content", "give -k USER_KEY to check decryption, the tar member, the image size and the digest")
	}
	if sigErr != nil {
		return fmt.Errorf("bundle %s does not verify: %w", mf.Manifest, sigErr)
	}
	fmt.Fprintf(stdout, "bundle %s: every check held\n", m.Name)
	return nil
}

func printReport(w io.Writer, rep *bundle.VerifyReport) {
	if rep == nil {
		return
	}
	for _, c := range rep.Checks {
		fmt.Fprintf(w, "ok    %-11s %s\n", c.Name, c.Detail)
	}
}
