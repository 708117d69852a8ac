package main

import (
	"context"
	"crypto/md5"
	"crypto/sha1"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"

	"github.com/instancestore/packer-plugin-instancestore/bundle"
	s3bundle "github.com/instancestore/packer-plugin-instancestore/s3"
	"github.com/instancestore/packer-plugin-instancestore/s3/presigned"
)

func init() {
	register(command{
		name:    "upload-bundle",
		summary: "upload a bundle's parts and manifest to S3 (ec2-upload-bundle)",
		run:     runUploadBundle,
	})
}

func runUploadBundle(args []string, stdout, stderr io.Writer) error {
	f := newFlagSet("upload-bundle", "-b BUCKET[/PREFIX] -m MANIFEST [flags]",
		"Uploads the parts a manifest lists, then the manifest, the way ec2-upload-bundle\n"+
			"does: every object with the aws-exec-read ACL (so EC2 can read it) and its\n"+
			"Content-MD5 signed in. Parts go through presigned PUTs with retries.\n\n"+exitCodes)
	var s3f s3Flags
	var manifest, dir, acl, part string
	var retry bool
	acl = string(s3bundle.ACL)
	s3f.define(f, "where the bundle goes")
	f.stringVar(&manifest, "m", "manifest", "MANIFEST", "the bundle's manifest file; required")
	f.stringVar(&dir, "d", "directory", "DIR", "directory holding the parts (default: the manifest's)")
	f.stringVar(&acl, "", "acl", "ACL", "canned ACL of the objects: aws-exec-read (the only one EC2 can register from)")
	f.boolVar(&retry, "", "retry", "retry failed part uploads (up to 10 attempts with backoff; default 1 attempt)")
	f.stringVar(&part, "", "part", "N", "resume: start with part N (0-based), skipping the parts before it")
	if err := f.parse(args, stderr); err != nil {
		return err
	}
	if err := s3f.check(f, "give the bucket (and prefix) to upload to"); err != nil {
		return err
	}
	if err := f.required(manifest, "m", "manifest", "give the bundle's manifest file"); err != nil {
		return err
	}
	if acl != string(s3bundle.ACL) {
		return usagef("--acl %q: only aws-exec-read lets EC2 read the bundle and keeps it private", acl)
	}
	first := 0
	if part != "" {
		n, err := strconv.Atoi(part)
		if err != nil || n < 0 {
			return usagef("--part %q: want a part index, 0 or more", part)
		}
		first = n
	}
	m, err := readManifestFile(manifest)
	if err != nil {
		return err
	}
	if first >= len(m.Parts) {
		return usagef("--part %d: the bundle has parts 0 to %d", first, len(m.Parts)-1)
	}
	if dir == "" {
		dir = filepath.Dir(manifest)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	b, err := s3f.open(ctx)
	if err != nil {
		return err
	}
	rp := presigned.Retry{Attempts: 1}
	if retry {
		rp = presigned.DefaultRetry
	}
	var mu sync.Mutex
	uploaded := map[int]bool{}
	// resumeAt is the first part not stored: where --part picks up.
	resumeAt := func() int {
		mu.Lock()
		defer mu.Unlock()
		i := first
		for uploaded[i] {
			i++
		}
		return i
	}
	sink := presigned.NewSink(ctx, presigned.Config{
		Presign: func(ctx context.Context, p *bundle.Part, _ bool) (*presigned.Request, error) {
			return b.PresignPart(ctx, p.Name, p.MD5)
		},
		Retry: rp,
		Uploaded: func(p *bundle.Part) {
			mu.Lock()
			uploaded[p.Index] = true
			mu.Unlock()
			fmt.Fprintf(stdout, "uploaded   %s (%s)\n", p.Name, humanBytes(int64(len(p.Data))))
		},
		Retrying: func(p *bundle.Part, attempt int, err error) {
			fmt.Fprintf(stderr, "retrying   %s (attempt %d): %s\n", p.Name, attempt+1, err)
		},
	})
	for i := first; i < len(m.Parts); i++ {
		mp := m.Parts[i]
		if filepath.Base(mp.Filename) != mp.Filename {
			sink.Abort()
			return fmt.Errorf("-m, --manifest names part %q, not a plain file name", mp.Filename)
		}
		data, err := os.ReadFile(filepath.Join(dir, mp.Filename))
		if err != nil {
			sink.Abort()
			return fmt.Errorf("-d, --directory: part %d: %w", i, err)
		}
		sum := sha1.Sum(data)
		if hex.EncodeToString(sum[:]) != mp.Digest {
			sink.Abort()
			return fmt.Errorf("part %s does not match its digest in the manifest: the bundle is damaged", mp.Filename)
		}
		if err := sink.PutPart(&bundle.Part{Index: i, Name: mp.Filename, Data: data, SHA1: sum, MD5: md5.Sum(data)}); err != nil {
			sink.Abort()
			sink.Close()
			return fmt.Errorf("uploading part %d failed (resume with --part %d): %w", i, resumeAt(), err)
		}
	}
	if err := sink.Close(); err != nil {
		return fmt.Errorf("uploading the parts failed (resume with --part %d): %w", resumeAt(), err)
	}
	loc, err := b.PutManifest(ctx, m)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "manifest   s3://%s\n", loc)
	return nil
}
