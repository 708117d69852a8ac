package main

import (
	"crypto/x509"
	"fmt"
	"io"
	"path/filepath"

	"github.com/instancestore/packer-plugin-instancestore/bundle"
)

func init() {
	register(command{
		name:    "migrate-manifest",
		summary: "re-wrap a manifest for another region's EC2 certificate, change kernel/ramdisk, re-sign (ec2-migrate-manifest)",
		run:     runMigrateManifest,
	})
}

func runMigrateManifest(args []string, stdout, stderr io.Writer) error {
	f := newFlagSet("migrate-manifest", "-m MANIFEST -c CERT -k KEY (--region REGION | --ec2cert PEM) [flags]",
		"Rewrites a manifest for another region or partition: the bundle key is\n"+
			"unwrapped with your key (-k) and wrapped again for the EC2 certificate of\n"+
			"--region (or --ec2cert); --kernel and --ramdisk replace the manifest's; the\n"+
			"result is signed again with -k. A manifest whose signature does not verify\n"+
			"with -c is refused. The parts are unchanged: copy them with the manifest.\n\n"+
			"exit status: 0 done; 1 failed (signature, key, files); 2 bad flags.")
	var manifest, cert, key, ec2cert, region, kernel, ramdisk, dest string
	f.stringVar(&manifest, "m", "manifest", "MANIFEST", "the manifest to migrate; required")
	f.stringVar(&cert, "c", "cert", "PEM", "your certificate, the one the bundle was made with; required")
	f.stringVar(&key, "k", "privatekey", "PEM", "its private key: unwraps the bundle key and signs; required")
	f.stringVar(&ec2cert, "", "ec2cert", "PEM", "the new EC2 certificate (instead of --region)")
	f.stringVar(&region, "", "region", "REGION", "the destination region: its embedded EC2 certificate")
	f.stringVar(&kernel, "", "kernel", "AKI", "the new kernel id (aki-...)")
	f.stringVar(&ramdisk, "", "ramdisk", "ARI", "the new ramdisk id (ari-...)")
	f.stringVar(&dest, "d", "destination", "DIR", "write the migrated manifest here (default: replace it in place)")
	if err := f.parse(args, stderr); err != nil {
		return err
	}
	for _, r := range []struct{ v, s, l, what string }{
		{manifest, "m", "manifest", "give the manifest to migrate"},
		{cert, "c", "cert", "give the certificate the bundle was made with"},
		{key, "k", "privatekey", "give the private key of -c"},
	} {
		if err := f.required(r.v, r.s, r.l, r.what); err != nil {
			return err
		}
	}
	if (ec2cert == "") == (region == "") {
		return usagef("give exactly one of --region and --ec2cert: the EC2 certificate to wrap the key for")
	}
	if region != "" && !reRegion.MatchString(region) {
		return usagef("--region %q is not an AWS region name like us-west-2", region)
	}
	m, err := readManifestFile(manifest)
	if err != nil {
		return err
	}
	userCert, err := bundle.LoadCertificate(cert)
	if err != nil {
		return fmt.Errorf("-c, --cert: %w", err)
	}
	priv, err := bundle.LoadPrivateKey(key)
	if err != nil {
		return fmt.Errorf("-k, --privatekey: %w", err)
	}
	if err := bundle.MatchKey(userCert, priv); err != nil {
		return fmt.Errorf("-k, --privatekey %s: %w %s", key, err, cert)
	}
	pub, err := bundle.CertificateKey(userCert)
	if err != nil {
		return fmt.Errorf("-c, --cert: %w", err)
	}
	if err := m.VerifySignature(pub); err != nil {
		return fmt.Errorf("-m, --manifest %s does not authenticate with -c, --cert %s (refusing to re-sign it): %w", manifest, cert, err)
	}
	k, err := bundle.UnwrapKey(priv, m.UserEncryptedKey, m.UserEncryptedIV)
	if err != nil {
		return fmt.Errorf("-k, --privatekey: %w", err)
	}
	ec2 := ec2cert
	ec2Cert, err := loadEC2Cert(ec2, region)
	if err != nil {
		return err
	}
	ec2Pub, err := bundle.CertificateKey(ec2Cert)
	if err != nil {
		return fmt.Errorf("EC2 certificate: %w", err)
	}
	if m.EC2EncryptedKey, m.EC2EncryptedIV, err = bundle.WrapKey(ec2Pub, k); err != nil {
		return err
	}
	if kernel != "" {
		m.KernelID = kernel
	}
	if ramdisk != "" {
		m.RamdiskID = ramdisk
	}
	if err := checkManifestConfig(bundle.ManifestConfig{Architecture: m.Architecture, BlockDeviceMappings: m.BlockDeviceMappings, KernelID: m.KernelID, RamdiskID: m.RamdiskID, ProductCodes: m.ProductCodes, User: m.User}); err != nil {
		return err
	}
	if err := m.Sign(priv); err != nil {
		return fmt.Errorf("signing the migrated manifest: %w", err)
	}
	out := manifest
	if dest != "" {
		out = filepath.Join(dest, filepath.Base(manifest))
	}
	if err := writeFileAtomic(out, m.Marshal()); err != nil {
		return fmt.Errorf("-d, --destination: %w", err)
	}
	fmt.Fprintf(stdout, "manifest   %s migrated (EC2 certificate: %s)\n", out, ec2CertName(ec2, region))
	return nil
}

func loadEC2Cert(path, region string) (c *x509.Certificate, err error) {
	if path != "" {
		if c, err = bundle.LoadCertificate(path); err != nil {
			return nil, fmt.Errorf("--ec2cert: %w", err)
		}
		return c, nil
	}
	if c, err = bundle.EC2Certificate(region); err != nil {
		return nil, fmt.Errorf("--region: %w", err)
	}
	return c, nil
}

func ec2CertName(path, region string) string {
	if path != "" {
		return path
	}
	return "embedded " + bundle.EC2CertificateFile(region)
}
