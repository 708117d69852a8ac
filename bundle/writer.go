package bundle

import (
	"context"
	"crypto/sha1"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/klauspost/pgzip"
)

// DefaultLevel is the gzip level Write uses when WriterConfig.Level is 0. See
// bench/README.md (bench/levels.sh) for how it was chosen: level 6 of klauspost's
// deflate on all cores is the fastest level that keeps both a system image and an
// image of the Go source tree within 1.05x of `gzip -9`'s size (level 5 gives 1.058x
// on the Go tree), for about the CPU time of level 5.
const DefaultLevel = 6

// gzipBlockSize is the input each gzip worker compresses at a time. Each block is
// compressed with the previous block's tail as dictionary, so larger blocks gain
// little; memory is about 3 x gzipBlockSize per block in flight.
const gzipBlockSize = 1 << 20

// readChunk is how much of the image is read at once.
const readChunk = 1 << 20

// WriterConfig configures Write.
type WriterConfig struct {
	Name  string // bundle name: tar member name and part-name prefix
	Key   Key
	Level int // gzip level 1 (fastest) to 9 (smallest); 0 means DefaultLevel
	// Concurrency is how many gzip blocks may be queued for compression behind the one
	// being written out; each compresses on a goroutine of its own, so GOMAXPROCS
	// bounds the cores used. 0 means 2 x GOMAXPROCS.
	Concurrency int
	// Progress, if set, is called after each stored part and once at the end, never
	// concurrently.
	Progress func(Progress)
}

// Progress reports how far Write got.
type Progress struct {
	BytesRead    int64 // image data read so far
	BytesTotal   int64 // image data to read (holes are not read)
	BytesWritten int64 // ciphertext handed to the sink
	Parts        int   // parts handed to the sink
}

// Write bundles img into parts handed to sink, in one pass over the image's data
// extents. The pipeline, from the image down to the sink:
//
//	image (data extents only, ReadAt)
//	-> tar: one old-GNU sparse member named cfg.Name, padded to a 10240-byte record
//	-> tee: SHA-1 of the tar stream (Result.Digest)
//	-> gzip: blocks compressed in parallel (pgzip), one valid gzip stream
//	-> latch: keeps the first error below so that gzip shuts down cleanly
//	-> AES-128-CBC with PKCS#7 padding
//	-> parts: 10 MiB pieces, SHA-1 and MD5 each
//	-> sink
//
// Parts are named while streaming, zero-padded to the digits of an upper bound of the
// part count; if sink is a PartRenamer and the real count needs fewer digits, the
// parts are renamed to the exact ec2-ami-tools names at the end. Result.Parts has the
// final names. Memory stays bounded whatever the image size: the gzip blocks in
// flight, one part being filled, and what the sink holds.
//
// Write closes sink before it returns, on failure too, and returns the first error.
// Cancelling ctx stops it within a block or so.
func Write(ctx context.Context, img *Image, cfg WriterConfig, sink Sink) (res *Result, err error) {
	defer func() {
		if cerr := sink.Close(); cerr != nil && err == nil {
			res, err = nil, fmt.Errorf("closing bundle sink: %w", cerr)
		}
		if err == nil && res != nil {
			err = renameParts(sink, res)
		}
		if err != nil {
			res = nil
		}
	}()

	if img.Size() > MaxImageSize {
		return nil, fmt.Errorf("image is %d bytes: EC2 instance-store images are limited to %d bytes (10240 MiB)", img.Size(), int64(MaxImageSize))
	}
	arch, err := newTarArchive(cfg.Name, img)
	if err != nil {
		return nil, err
	}
	level := cfg.Level
	if level == 0 {
		level = DefaultLevel
	}
	if level < 1 || level > 9 {
		return nil, fmt.Errorf("gzip level %d is out of range: use 1 to 9", level)
	}
	if cfg.Key == (Key{}) {
		return nil, errors.New("bundle key and IV are all zeros: make them with NewKey")
	}
	queued := cfg.Concurrency
	if queued <= 0 {
		// Two blocks per core absorb the bursts of the ordered output (a part handed
		// to the sink) without idling the cores: a few percent faster than one.
		queued = 2 * runtime.GOMAXPROCS(0)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	// Bottom-up: sink <- parts <- AES-CBC <- latch <- gzip <- tee SHA-1 <- tar.
	width := PartNameWidth(maxParts(arch.size))
	parts := newPartWriter(ctx, sink, cfg.Name, width)
	enc, err := newCBCWriter(parts, cfg.Key)
	if err != nil {
		return nil, fmt.Errorf("setting up AES-128-CBC: %w", err)
	}
	latch := &errLatch{w: enc, cancel: cancel}
	gz, err := pgzip.NewWriterLevel(latch, level)
	if err != nil {
		return nil, err
	}
	if err := gz.SetConcurrency(gzipBlockSize, queued); err != nil {
		return nil, err
	}
	gz.ModTime = time.Unix(0, 0) // as gzip writes for a pipe: no time, no name
	gz.OS = 3                    // Unix
	digest := sha1.New()
	tee := io.MultiWriter(digest, gz)

	var read atomic.Int64
	total := dataSize(arch.extents)
	report := func() {
		if cfg.Progress != nil {
			cfg.Progress(Progress{BytesRead: read.Load(), BytesTotal: total, BytesWritten: parts.written, Parts: len(parts.parts)})
		}
	}
	parts.progress = report

	werr := arch.writeTo(ctx, tee, make([]byte, readChunk), func(n int64) { read.Add(n) })
	if werr != nil {
		cancel() // the parts stage drops what gzip still flushes
	}
	gerr := gz.Close() // also after a failure: it stops its goroutines only here
	switch {
	case latch.failed() != nil:
		return nil, latch.failed()
	case werr != nil:
		return nil, fmt.Errorf("bundling %s: %w", cfg.Name, werr)
	case gerr != nil:
		return nil, fmt.Errorf("compressing %s: %w", cfg.Name, gerr)
	}
	if err := enc.Close(); err != nil {
		return nil, err
	}
	if err := parts.Close(); err != nil {
		return nil, err
	}
	report()
	return &Result{
		Name:        cfg.Name,
		Digest:      hex.EncodeToString(digest.Sum(nil)),
		Size:        img.Size(),
		BundledSize: parts.written,
		Parts:       parts.parts,
	}, nil
}

// maxParts is an upper bound of the part count of a bundle whose tar stream is
// tarSize bytes: deflate never grows data by more than its stored-block overhead (5
// bytes per 64 KiB) plus a few bytes per parallel block and the gzip header and
// trailer; the bound takes 1/1024 and more.
func maxParts(tarSize int64) int {
	blocks := tarSize/gzipBlockSize + 1
	ciphertext := tarSize + tarSize/1024 + 64*blocks + 64 + 16
	return int((ciphertext + PartSize - 1) / PartSize)
}

// renameParts gives the parts their exact ec2-ami-tools names when the sink can
// rename them and the streaming width was wider than needed.
func renameParts(sink Sink, res *Result) error {
	width := PartNameWidth(len(res.Parts))
	for i := range res.Parts {
		p := &res.Parts[i]
		name := PartName(res.Name, p.Index, width)
		if name == p.Name {
			continue
		}
		r, ok := sink.(PartRenamer)
		if !ok {
			return nil // the names stay wider than ec2-ami-tools', which EC2 accepts
		}
		if err := r.RenamePart(p.Name, name); err != nil {
			return fmt.Errorf("renaming part %s to %s: %w", p.Name, name, err)
		}
		p.Name = name
	}
	return nil
}

// errLatch passes writes on until one fails; then it keeps that error, cancels the
// pipeline and swallows the rest. pgzip leaves a goroutine behind when its output
// fails, so the gzip stage must never see the error.
type errLatch struct {
	w      io.Writer
	cancel context.CancelFunc
	mu     sync.Mutex
	err    error
}

func (l *errLatch) Write(p []byte) (int, error) {
	if l.failed() != nil {
		return len(p), nil
	}
	if _, err := l.w.Write(p); err != nil {
		l.mu.Lock()
		l.err = err
		l.mu.Unlock()
		l.cancel()
	}
	return len(p), nil
}

func (l *errLatch) failed() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.err
}
