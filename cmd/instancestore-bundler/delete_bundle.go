package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	s3bundle "github.com/instancestore/packer-plugin-instancestore/s3"
)

func init() {
	register(command{
		name:    "delete-bundle",
		summary: "delete a bundle from S3 (ec2-delete-bundle)",
		run:     runDeleteBundle,
	})
}

func runDeleteBundle(args []string, stdout, stderr io.Writer) error {
	f := newFlagSet("delete-bundle", "-b BUCKET[/PREFIX] (-m MANIFEST | -p NAME) [flags]",
		"Deletes a bundle: the parts its manifest lists, then the manifest. With -p and\n"+
			"no manifest in S3, the objects NAME.part.* are deleted. --clear also deletes\n"+
			"the bucket when it is empty afterwards. --dry-run lists what would go.\n\n"+exitCodes)
	var s3f s3Flags
	var bf bundleFlags
	var clear, dryRun bool
	s3f.define(f, "where the bundle is")
	bf.define(f, "MANIFEST", "the manifest: a local file or its object name")
	f.boolVar(&clear, "", "clear", "delete the bucket too when it is empty afterwards")
	f.boolVar(&dryRun, "", "dry-run", "print what would be deleted, delete nothing")
	if err := f.parse(args, stderr); err != nil {
		return err
	}
	if err := s3f.check(f, "give the bucket (and prefix) of the bundle"); err != nil {
		return err
	}
	name, err := bf.name()
	manifest := bf.manifest
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	b, err := s3f.open(ctx)
	if err != nil {
		return err
	}
	// The parts: from the manifest (a local file wins, else the one in S3), else by
	// name.
	var names []string
	var merr error
	if manifest != "" {
		if _, err := os.Stat(manifest); err == nil {
			lm, err := readManifestFile(manifest)
			if err != nil {
				return err
			}
			for _, p := range lm.Parts {
				names = append(names, p.Filename)
			}
		}
	}
	if names == nil {
		if sm, err := b.GetManifest(ctx, name); err == nil {
			for _, p := range sm.Parts {
				names = append(names, p.Filename)
			}
		} else if bf.prefix == "" {
			return err
		} else {
			merr = err
			listed, err := b.List(ctx, name+".part.")
			if err != nil {
				return err
			}
			names = listed
		}
	}
	for _, n := range names {
		if filepath.Base(n) != n {
			return fmt.Errorf("the manifest names part %q, not a plain file name", n)
		}
	}
	names = append(names, s3bundle.ManifestName(name))
	if merr != nil && len(names) == 1 {
		return fmt.Errorf("no bundle %s in %s: %w", name, b, merr)
	}
	for _, n := range names {
		if dryRun {
			fmt.Fprintf(stdout, "would delete s3://%s\n", b.Location(n))
		} else {
			fmt.Fprintf(stdout, "deleting   s3://%s\n", b.Location(n))
		}
	}
	if dryRun {
		return nil
	}
	if err := b.Delete(ctx, names); err != nil {
		return err
	}
	if clear {
		whole := *b
		whole.Prefix = ""
		rest, err := whole.List(ctx, "")
		if err != nil {
			return err
		}
		if len(rest) > 0 {
			fmt.Fprintf(stdout, "bucket     %s kept: it is not empty\n", b.Name)
			return nil
		}
		if err := s3bundle.DeleteBucket(ctx, b); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "bucket     %s deleted\n", b.Name)
	}
	return nil
}
