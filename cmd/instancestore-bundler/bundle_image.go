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
		name:    "bundle-image",
		summary: "bundle a raw disk image into parts and a signed manifest (ec2-bundle-image)",
		run:     runBundleImage,
	})
}

func runBundleImage(args []string, stdout, stderr io.Writer) error {
	f := newFlagSet("bundle-image", "-i IMAGE -u ACCOUNT_ID [flags]",
		"Bundles a raw disk image the way ec2-bundle-image does: PREFIX.part.N files and\n"+
			"PREFIX.manifest.xml in the destination directory, ready to upload to S3 and\n"+
			"register as an instance store-backed AMI.")
	var image string
	f.stringVar(&image, "i", "image", "IMAGE", "the raw disk image to bundle (at most 10 GiB); required")
	var bf BundleFlags
	bf.Register(f)
	if err := f.parse(args, stderr); err != nil {
		return err
	}
	if err := f.required(image, "i", "image", "give the raw disk image to bundle"); err != nil {
		return err
	}
	if bf.Prefix == "" {
		bf.Prefix = filepath.Base(image)
	}
	if err := bundle.CheckBaseName("-p, --prefix", bf.Prefix); err != nil {
		return usagef("%v", err)
	}
	img, err := bundle.OpenImage(image)
	if err != nil {
		return fmt.Errorf("-i, --image: %w", err)
	}
	defer img.Close()
	if img.Size() == 0 {
		return fmt.Errorf("-i, --image %s is empty: give a disk image with a file system", image)
	}
	if img.Size() > bundle.MaxImageSize {
		return fmt.Errorf("-i, --image %s is %s: EC2 accepts instance store-backed images of at most 10 GiB (10240 MiB)"+
			" and refuses to register bigger bundles; shrink the file system and the image, or use an EBS-backed AMI",
			image, humanBytes(img.Size()))
	}
	setup, err := bf.Resolve(stderr)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	_, err = writeBundle(ctx, img, setup, stdout)
	return err
}

// trackingSink remembers which part files it stored, so a failed bundle can be
// removed instead of leaving half a set of parts behind.
type trackingSink struct {
	bundle.Sink
	names map[string]bool
}

func (s *trackingSink) PutPart(p *bundle.Part) error {
	s.names[p.Name] = true
	return s.Sink.PutPart(p)
}

func (s *trackingSink) RenamePart(from, to string) error {
	r, ok := s.Sink.(bundle.PartRenamer)
	if !ok {
		return fmt.Errorf("sink cannot rename parts")
	}
	if err := r.RenamePart(from, to); err != nil {
		return err
	}
	delete(s.names, from)
	s.names[to] = true
	return nil
}

// writeBundle bundles img into setup.Destination: parts, then the signed manifest
// (written last, atomically). It prints a summary on stdout and returns the manifest.
// bundle-vol calls it too once its image is built.
func writeBundle(ctx context.Context, img *bundle.Image, setup *BundleSetup, stdout io.Writer) (*bundle.Manifest, error) {
	start := time.Now()
	key, err := bundle.NewKey()
	if err != nil {
		return nil, err
	}
	sink := &trackingSink{Sink: bundle.DirSink(setup.Destination), names: map[string]bool{}}
	cleanup := func() {
		for n := range sink.names {
			os.Remove(filepath.Join(setup.Destination, n))
		}
	}
	res, err := bundle.Write(ctx, img, bundle.WriterConfig{Name: setup.Prefix, Key: key, Level: setup.Level}, sink)
	if err != nil {
		cleanup()
		return nil, err
	}
	m, err := bundle.NewManifest(res, setup.Manifest, key, setup.EC2Cert, setup.UserCert)
	if err == nil {
		err = m.Sign(setup.UserKey)
	}
	manifestPath := filepath.Join(setup.Destination, setup.Prefix+".manifest.xml")
	if err == nil {
		err = writeFileAtomic(manifestPath, m.Marshal())
	}
	if err != nil {
		cleanup()
		return nil, err
	}
	var data int64
	for _, e := range img.Extents() {
		data += e.Length
	}
	fmt.Fprintf(stdout, "bundle     %s\n", res.Name)
	fmt.Fprintf(stdout, "image      %s apparent, %s of data read\n", humanBytes(res.Size), humanBytes(data))
	fmt.Fprintf(stdout, "parts      %d in %s, %s in all\n", len(res.Parts), setup.Destination, humanBytes(res.BundledSize))
	fmt.Fprintf(stdout, "digest     %s (SHA-1 of the tar stream)\n", res.Digest)
	fmt.Fprintf(stdout, "manifest   %s\n", manifestPath)
	fmt.Fprintf(stdout, "account    %s, %s, EC2 certificate: %s\n", m.User, m.Architecture, setup.EC2CertName)
	if setup.Throwaway {
		fmt.Fprintf(stdout, "user key   throw-away (the bundle cannot be unbundled later)\n")
	}
	fmt.Fprintf(stdout, "took       %s\n", time.Since(start).Round(time.Millisecond))
	return m, nil
}

// writeFileAtomic writes data to path through a temporary file in the same
// directory, so path is either the old file or the complete new one.
func writeFileAtomic(path string, data []byte) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Chmod(0o644)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), path)
	}
	if err != nil {
		os.Remove(f.Name())
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return nil
}

// humanBytes prints a size in binary units.
func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
