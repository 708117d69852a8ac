package main

import (
	"context"
	"crypto/sha1"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/instancestore/packer-plugin-instancestore/bundle"
	s3bundle "github.com/instancestore/packer-plugin-instancestore/s3"
)

func init() {
	register(command{
		name:    "download-bundle",
		summary: "download a bundle from S3, checking every digest (ec2-download-bundle)",
		run:     runDownloadBundle,
	})
}

// bundleNameFlag settles the bundle's name from -m (a manifest name, with or
// without .manifest.xml) or -p (the bundle prefix).
func bundleNameFlag(manifest, prefix string) (string, error) {
	switch {
	case manifest != "" && prefix != "":
		return "", usagef("-m, --manifest and -p, --prefix both given: use one")
	case manifest != "":
		return strings.TrimSuffix(filepath.Base(manifest), ".manifest.xml"), nil
	case prefix != "":
		return prefix, nil
	}
	return "", usagef("-m, --manifest or -p, --prefix is required: name the bundle")
}

func runDownloadBundle(args []string, stdout, stderr io.Writer) error {
	f := newFlagSet("download-bundle", "-b BUCKET[/PREFIX] (-m MANIFEST | -p NAME) [-d DIR] [flags]",
		"Downloads a bundle's manifest and parts into DIR. The manifest is parsed first;\n"+
			"each part's SHA-1 is checked against it as it arrives, and a part that does\n"+
			"not match is removed and fails the command.\n\n"+exitCodes)
	var s3f s3Flags
	var bf bundleFlags
	dir := "."
	s3f.define(f, "where the bundle is")
	bf.define(f, "NAME.manifest.xml", "the manifest's object name")
	f.stringVar(&dir, "d", "directory", "DIR", "where to write the files (default: current directory)")
	if err := f.parse(args, stderr); err != nil {
		return err
	}
	if err := s3f.check(f, "give the bucket (and prefix) of the bundle"); err != nil {
		return err
	}
	name, err := bf.name()
	if err != nil {
		return err
	}
	if st, err := os.Stat(dir); err != nil || !st.IsDir() {
		return usagef("-d, --directory %s is not a directory: create it first", dir)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	b, err := s3f.open(ctx)
	if err != nil {
		return err
	}
	m, err := b.GetManifest(ctx, name)
	if err != nil {
		return err
	}
	for _, p := range m.Parts {
		if err := downloadPart(ctx, b, p, dir); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "part       %s ok\n", p.Filename)
	}
	mpath := filepath.Join(dir, s3bundle.ManifestName(name))
	if err := writeFileAtomic(mpath, m.Marshal()); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "manifest   %s (%d parts checked)\n", mpath, len(m.Parts))
	return nil
}

// downloadPart streams one part to DIR through SHA-1 and removes it when its digest
// is not the manifest's.
func downloadPart(ctx context.Context, b *s3bundle.Bucket, p bundle.ManifestPart, dir string) error {
	if filepath.Base(p.Filename) != p.Filename {
		return fmt.Errorf("the manifest names part %q, not a plain file name", p.Filename)
	}
	rc, err := b.Open(ctx, p.Filename)
	if err != nil {
		return err
	}
	defer rc.Close()
	path := filepath.Join(dir, p.Filename)
	out, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("-d, --directory: %w", err)
	}
	h := sha1.New()
	_, err = io.Copy(io.MultiWriter(out, h), rc)
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err == nil && hex.EncodeToString(h.Sum(nil)) != p.Digest {
		err = fmt.Errorf("part %s does not match its digest in the manifest (got %x, want %s)", p.Filename, h.Sum(nil), p.Digest)
	}
	if err != nil {
		os.Remove(path)
		return fmt.Errorf("downloading %s: %w", p.Filename, err)
	}
	return nil
}
