package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/instancestore/packer-plugin-instancestore/bundle"
)

func init() {
	register(command{
		name:    "unbundle",
		summary: "rebuild the image of a bundle after checking every digest (ec2-unbundle)",
		run:     runUnbundle,
	})
}

// manifestFlags are the options naming a bundle to read (unbundle, verify).
type manifestFlags struct {
	Manifest, Source string
}

func (m *manifestFlags) register(f *flagSet) {
	f.stringVar(&m.Manifest, "m", "manifest", "PATH", "the bundle's manifest (PREFIX.manifest.xml); required")
	f.stringVar(&m.Source, "s", "source", "DIR", "directory holding the parts (default: the manifest's directory)")
}

// load reads and strictly parses the manifest.
func (m *manifestFlags) load(f *flagSet) (*bundle.Manifest, bundle.PartSource, error) {
	if err := f.required(m.Manifest, "m", "manifest", "give the bundle's PREFIX.manifest.xml"); err != nil {
		return nil, nil, err
	}
	man, err := readManifest(m.Manifest)
	if err != nil {
		return nil, nil, err
	}
	src := m.Source
	if src == "" {
		src = filepath.Dir(m.Manifest)
	}
	if st, err := os.Stat(src); err != nil || !st.IsDir() {
		return nil, nil, usagef("-s, --source %s is not a directory", src)
	}
	return man, bundle.DirSource(src), nil
}

// readManifest reads at most a few MiB: a bigger file is no manifest.
func readManifest(path string) (*bundle.Manifest, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("-m, --manifest: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, 8<<20))
	if err != nil {
		return nil, fmt.Errorf("-m, --manifest: reading %s: %w", path, err)
	}
	m, err := bundle.ParseManifest(data)
	if err != nil {
		return nil, fmt.Errorf("-m, --manifest %s: %w", path, err)
	}
	return m, nil
}

func runUnbundle(args []string, stdout, stderr io.Writer) error {
	f := newFlagSet("unbundle", "-m MANIFEST -k USER_KEY [-s SRCDIR] [-d DESTDIR]",
		"Rebuilds the image of a bundle as DESTDIR/NAME (NAME from the manifest). Checks the\n"+
			"manifest's signature against the key, every part's size and SHA-1, the decryption,\n"+
			"the tar stream's SHA-1 and the image size; restores holes. The image appears only\n"+
			"when every check held.")
	var mf manifestFlags
	mf.register(f)
	var keyPath, dest string
	f.stringVar(&keyPath, "k", "privatekey", "PEM", "the private key of the certificate the bundle was made for; required")
	dest = "."
	f.stringVar(&dest, "d", "destination", "DIR", "directory for the rebuilt image (default: current directory)")
	if err := f.parse(args, stderr); err != nil {
		return err
	}
	if err := f.required(keyPath, "k", "privatekey", "unbundling needs the private key of the bundle's user certificate"); err != nil {
		return err
	}
	if st, err := os.Stat(dest); err != nil || !st.IsDir() {
		return usagef("-d, --destination %s is not a directory: create it first", dest)
	}
	m, src, err := mf.load(f)
	if err != nil {
		return err
	}
	priv, err := bundle.LoadPrivateKey(keyPath)
	if err != nil {
		return fmt.Errorf("-k, --privatekey: %w", err)
	}
	// The user's key signed the manifest: a manifest changed since is refused.
	if err := m.VerifySignature(&priv.PublicKey); err != nil {
		return fmt.Errorf("-m, --manifest %s: %w (checked with the public half of -k %s)", mf.Manifest, err, keyPath)
	}
	k, err := bundle.UnwrapKey(priv, m.UserEncryptedKey, m.UserEncryptedIV)
	if err != nil {
		return fmt.Errorf("-k, --privatekey %s: %w", keyPath, err)
	}
	start := time.Now()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	out := filepath.Join(dest, m.Name)
	tmp, err := os.CreateTemp(dest, "."+m.Name+".unbundle*")
	if err != nil {
		return fmt.Errorf("-d, --destination: %w", err)
	}
	defer os.Remove(tmp.Name()) // gone after the rename; removes a failed attempt
	err = bundle.Unbundle(ctx, m, k, src, tmp)
	if err == nil {
		err = tmp.Chmod(0o644) // CreateTemp made it 0600
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), out)
	}
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "image      %s (%s)\n", out, humanBytes(m.Size))
	fmt.Fprintf(stdout, "checked    signature, %d part digests, tar stream SHA-1 %s, size\n", len(m.Parts), m.Digest)
	fmt.Fprintf(stdout, "took       %s\n", time.Since(start).Round(time.Millisecond))
	return nil
}
