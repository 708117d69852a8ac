// Command bundlewrite bundles an image with bundle.Write into a directory, with a
// throw-away key. It is the benchmark's stand-in for `instancestore-bundler
// bundle-image` (no manifest, no RSA): bench/bundle-image.sh uses the CLI when it has
// that command.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"runtime/pprof"
	"runtime/trace"
	"time"

	"github.com/instancestore/packer-plugin-instancestore/bundle"
)

func main() {
	image := flag.String("i", "", "image file")
	dir := flag.String("d", ".", "destination directory for the parts")
	prefix := flag.String("p", "image", "bundle name")
	level := flag.Int("level", 0, "gzip level (0: bundle.DefaultLevel)")
	workers := flag.Int("j", 0, "gzip workers (0: all cores)")
	cpuprofile := flag.String("cpuprofile", "", "write a CPU profile to this file")
	traceFile := flag.String("trace", "", "write an execution trace to this file")
	flag.Parse()
	if *traceFile != "" {
		f, err := os.Create(*traceFile)
		if err != nil {
			fmt.Fprintln(os.Stderr, "bundlewrite:", err)
			os.Exit(1)
		}
		trace.Start(f)
		defer trace.Stop()
	}
	if *cpuprofile != "" {
		f, err := os.Create(*cpuprofile)
		if err != nil {
			fmt.Fprintln(os.Stderr, "bundlewrite:", err)
			os.Exit(1)
		}
		pprof.StartCPUProfile(f)
		defer pprof.StopCPUProfile()
	}
	if err := run(*image, *dir, *prefix, *level, *workers); err != nil {
		fmt.Fprintln(os.Stderr, "bundlewrite:", err)
		pprof.StopCPUProfile()
		trace.Stop()
		os.Exit(1)
	}
}

func run(image, dir, prefix string, level, workers int) error {
	if image == "" {
		return fmt.Errorf("-i IMAGE is required")
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	img, err := bundle.OpenImage(image)
	if err != nil {
		return err
	}
	defer img.Close()
	key, err := bundle.NewKey()
	if err != nil {
		return err
	}
	start := time.Now()
	res, err := bundle.Write(ctx, img, bundle.WriterConfig{Name: prefix, Key: key, Level: level, Concurrency: workers}, bundle.DirSink(dir))
	if err != nil {
		return err
	}
	fmt.Printf("bundled %s: %d parts, %d bytes, digest %s, %.2fs\n", image, len(res.Parts), res.BundledSize, res.Digest, time.Since(start).Seconds())
	return nil
}
