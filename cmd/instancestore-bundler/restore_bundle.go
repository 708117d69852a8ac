package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/instancestore/packer-plugin-instancestore/agent"
	"github.com/instancestore/packer-plugin-instancestore/bundle"
	s3bundle "github.com/instancestore/packer-plugin-instancestore/s3"
)

func init() {
	register(command{
		name:    "restore-bundle",
		summary: "write a bundle from S3 straight onto a new volume, on an instance (EBS conversion)",
		run:     runRestoreBundle,
	})
}

func runRestoreBundle(args []string, stdout, stderr io.Writer) error {
	f := newFlagSet("restore-bundle", "-b BUCKET[/PREFIX] (-m MANIFEST | -p NAME) -k USER_KEY -d DEVICE [flags]",
		"Run on an EC2 instance with a new, empty EBS volume attached: writes the image of\n"+
			"an instance store-backed AMI's bundle onto the volume, to snapshot and register\n"+
			"as an EBS-backed AMI (the guide's ec2-download-bundle, ec2-unbundle and dd in\n"+
			"one pass, with no copy on local disk). The manifest is read from S3 and its\n"+
			"user key unwrapped with -k; the parts stream from S3 through AES-CBC decryption,\n"+
			"gunzip and tar straight onto DEVICE, each part's SHA-1 and the image's digest\n"+
			"checked (the image is good only when the command succeeds). Only the image's\n"+
			"non-zero blocks are written: DEVICE must read zeros, as a new volume does.\n"+
			"DEVICE is refused when it is not a whole disk, is the root file system's disk,\n"+
			"is mounted or used as swap (it or a partition of it), or is smaller than the\n"+
			"image. The same writer as the Packer plugin's instancestore-ebs post-processor.\n\n"+exitCodes)
	var s3f s3Flags
	var bf bundleFlags
	var keyPath, device string
	s3f.define(f, "where the bundle is")
	bf.define(f, "NAME.manifest.xml", "the manifest's object name")
	f.stringVar(&keyPath, "k", "privatekey", "PEM", "the private key of the certificate the bundle was made for: unwraps the\nbundle key; required")
	f.stringVar(&device, "d", "device", "DEVICE", "the new volume's block device (/dev/xvdf, /dev/nvme1n1); required")
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
	if err := f.required(keyPath, "k", "privatekey", "the private key of the bundle's user certificate unwraps its key"); err != nil {
		return err
	}
	if err := f.required(device, "d", "device", "give the block device of the new volume to write (see lsblk)"); err != nil {
		return err
	}
	if !strings.HasPrefix(device, "/dev/") {
		return usagef("-d, --device %q: want a block device path under /dev/ (/dev/xvdf, /dev/nvme1n1)", device)
	}
	priv, err := bundle.LoadPrivateKey(keyPath)
	if err != nil {
		return fmt.Errorf("-k, --privatekey: %w", err)
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
	k, err := bundle.UnwrapKey(priv, m.UserEncryptedKey, m.UserEncryptedIV)
	if err != nil {
		return fmt.Errorf("-k, --privatekey %s: this key does not unwrap the manifest's user key (%v): give the private key of the X.509 certificate the bundle was made with", keyPath, err)
	}
	start := time.Now()
	logf := func(format string, a ...any) { fmt.Fprintf(stderr, format+"\n", a...) }
	res, err := agent.RestoreDevice(ctx, m, k, ctxParts{ctx, b}, device, logf, nil)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "device     %s (%s, image %s)\n", res.Device, humanBytes(res.DeviceSize), humanBytes(res.ImageSize))
	fmt.Fprintf(stdout, "written    %s of data (zeros skipped)\n", humanBytes(res.Written))
	fmt.Fprintf(stdout, "checked    %d part digests, tar stream SHA-1 %s, size\n", len(m.Parts), m.Digest)
	fmt.Fprintf(stdout, "took       %s\n", time.Since(start).Round(time.Millisecond))
	return nil
}

// ctxParts reads the parts from the bucket under the command's context, so that
// SIGINT stops a download.
type ctxParts struct {
	ctx context.Context
	b   *s3bundle.Bucket
}

func (p ctxParts) OpenPart(name string) (io.ReadCloser, error) { return p.b.Open(p.ctx, name) }
