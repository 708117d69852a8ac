package bundle

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/sha1"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"path/filepath"

	"github.com/klauspost/compress/gzip"
)

// PartSource opens the parts of a bundle by their manifest file names.
type PartSource interface {
	OpenPart(name string) (io.ReadCloser, error)
}

// DirSource reads parts from a local directory. It refuses names that are not plain
// base names, so a manifest cannot make it read outside dir.
func DirSource(dir string) PartSource { return dirSource{dir: dir} }

type dirSource struct{ dir string }

func (s dirSource) OpenPart(name string) (io.ReadCloser, error) {
	if err := CheckBaseName("part", name); err != nil {
		return nil, err
	}
	f, err := os.Open(filepath.Join(s.dir, name))
	if err != nil {
		return nil, fmt.Errorf("opening part: %w", err)
	}
	return f, nil
}

// partReader streams the ciphertext of all parts in manifest order. Each part is read
// whole into a buffer and checked (size and SHA-1) before any of its bytes go on, so a
// corrupt or swapped part is reported as such rather than as a decryption or gzip
// error further down. A goroutine reads the next part while the current one is
// consumed; memory is two part buffers.
type partReader struct {
	ctx    context.Context
	cancel context.CancelFunc
	parts  <-chan checkedPart
	free   chan []byte
	cur    []byte
	buf    []byte // backing buffer of cur, returned to free when consumed
	err    error
	done   chan struct{}
	bytes  int64
	count  int
}

type checkedPart struct {
	data []byte
	err  error
}

// partSize is the size part i of m must have: PartSize for all but the last.
func partSize(m *Manifest, i int) int64 {
	if i < len(m.Parts)-1 {
		return PartSize
	}
	return m.BundledSize - int64(len(m.Parts)-1)*PartSize
}

func newPartReader(ctx context.Context, m *Manifest, src PartSource) *partReader {
	ctx, cancel := context.WithCancel(ctx)
	parts := make(chan checkedPart)
	r := &partReader{ctx: ctx, cancel: cancel, parts: parts, free: make(chan []byte, 2), done: make(chan struct{})}
	// Part 0 is the largest; one byte more detects an oversized part.
	bufSize := partSize(m, 0) + 1
	r.free <- make([]byte, bufSize)
	r.free <- make([]byte, bufSize)
	go func() {
		defer close(r.done)
		defer close(parts)
		for i := range m.Parts {
			var buf []byte
			select {
			case buf = <-r.free:
			case <-ctx.Done():
				return
			}
			data, err := readPart(src, m, i, buf)
			select {
			case parts <- checkedPart{data, err}:
			case <-ctx.Done():
				return
			}
			if err != nil {
				return
			}
		}
	}()
	return r
}

// readPart reads part i into buf and checks it against the manifest.
func readPart(src PartSource, m *Manifest, i int, buf []byte) ([]byte, error) {
	p := m.Parts[i]
	rc, err := src.OpenPart(p.Filename)
	if err != nil {
		return nil, fmt.Errorf("part %s: %w", p.Filename, err)
	}
	defer rc.Close()
	n, err := io.ReadFull(rc, buf)
	if err != nil && err != io.ErrUnexpectedEOF && err != io.EOF {
		return nil, fmt.Errorf("reading part %s: %w", p.Filename, err)
	}
	if want := partSize(m, i); int64(n) != want {
		more := ""
		if n == len(buf) {
			more = " or more"
		}
		return nil, fmt.Errorf("part %s (index %d): %d bytes%s, want %d (the manifest's bundled_size and %d-byte parts)", p.Filename, i, n, more, want, PartSize)
	}
	sum := sha1.Sum(buf[:n])
	if got := hex.EncodeToString(sum[:]); got != p.Digest {
		return nil, fmt.Errorf("part %s (index %d): SHA-1 %s does not match the manifest's %s: the part is corrupt, in the wrong place or from another bundle", p.Filename, i, got, p.Digest)
	}
	return buf[:n], nil
}

func (r *partReader) Read(p []byte) (int, error) {
	for len(r.cur) == 0 {
		if r.err != nil {
			return 0, r.err
		}
		if r.buf != nil {
			r.free <- r.buf
			r.buf = nil
		}
		cp, ok := <-r.parts
		switch {
		case !ok && r.ctx.Err() != nil:
			r.err = r.ctx.Err()
		case !ok:
			r.err = io.EOF
		case cp.err != nil:
			r.err = cp.err
		default:
			r.cur, r.buf = cp.data, cp.data[:cap(cp.data)]
			r.bytes += int64(len(cp.data))
			r.count++
		}
	}
	n := copy(p, r.cur)
	r.cur = r.cur[n:]
	return n, nil
}

// Close stops the reading goroutine and waits for it.
func (r *partReader) Close() error {
	r.cancel()
	<-r.done
	return nil
}

// decryptReader undoes AES-128-CBC with PKCS#7 padding (openssl enc -d). It holds the
// last ciphertext block back until the end of the input, where the padding is.
type decryptReader struct {
	src  io.Reader
	mode cipher.BlockMode
	in   []byte // ciphertext not yet decrypted: in[:n]
	n    int
	out  []byte // plaintext ready to be read
	obuf []byte
	eof  bool
}

const decryptChunk = 256 << 10

func newDecryptReader(src io.Reader, k Key) (*decryptReader, error) {
	return newDecryptReaderSize(src, k, decryptChunk)
}

// newDecryptReaderSize decrypts chunk bytes at a time (a multiple of the block size):
// a small bundle needs no 256 KiB buffers.
func newDecryptReaderSize(src io.Reader, k Key, chunk int) (*decryptReader, error) {
	block, err := aes.NewCipher(k.Key[:])
	if err != nil {
		return nil, fmt.Errorf("bundle key: %w", err)
	}
	return &decryptReader{
		src:  src,
		mode: cipher.NewCBCDecrypter(block, k.IV[:]),
		in:   make([]byte, chunk+aes.BlockSize),
		obuf: make([]byte, chunk+aes.BlockSize),
	}, nil
}

var errPadding = errors.New("decrypting bundle: bad PKCS#7 padding (wrong key or IV, or the parts are damaged)")

func (r *decryptReader) Read(p []byte) (int, error) {
	for len(r.out) == 0 {
		if r.eof {
			return 0, io.EOF
		}
		if err := r.fill(); err != nil {
			return 0, err
		}
	}
	n := copy(p, r.out)
	r.out = r.out[n:]
	return n, nil
}

func (r *decryptReader) fill() error {
	m, err := r.src.Read(r.in[r.n:])
	r.n += m
	switch {
	case err == io.EOF:
		if r.n%aes.BlockSize != 0 || r.n == 0 {
			return fmt.Errorf("decrypting bundle: ciphertext ends with a partial %d-byte AES block", r.n%aes.BlockSize)
		}
		r.mode.CryptBlocks(r.obuf[:r.n], r.in[:r.n])
		pad := int(r.obuf[r.n-1])
		if pad == 0 || pad > aes.BlockSize {
			return errPadding
		}
		for _, b := range r.obuf[r.n-pad : r.n] {
			if int(b) != pad {
				return errPadding
			}
		}
		r.out, r.eof, r.n = r.obuf[:r.n-pad], true, 0
		return nil
	case err != nil:
		return err
	}
	// Decrypt all whole blocks but the last, which may hold the padding.
	d := (r.n/aes.BlockSize - 1) * aes.BlockSize
	if d <= 0 {
		return nil
	}
	r.mode.CryptBlocks(r.obuf[:d], r.in[:d])
	r.n = copy(r.in, r.in[d:r.n])
	r.out = r.obuf[:d]
	return nil
}

// roundUpBlock rounds n up to a multiple of the AES block size (at least one block).
func roundUpBlock(n int64) int64 {
	return max(aes.BlockSize, (n+aes.BlockSize-1)/aes.BlockSize*aes.BlockSize)
}

// maxTarTrailer bounds the padding read after the tar end marker: GNU tar's largest
// usual record (blocking factor 20 = 10240 bytes) with a wide margin.
const maxTarTrailer = 1 << 20

// hashingReader hashes and counts what is read through it.
type hashingReader struct {
	r io.Reader
	h hash.Hash
	n int64
}

func (h *hashingReader) Read(p []byte) (int, error) {
	n, err := h.r.Read(p)
	h.h.Write(p[:n])
	h.n += int64(n)
	return n, err
}

// VerifyCheck is one check that held.
type VerifyCheck struct {
	Name   string // "parts", "decryption", "tar", "digest", ...
	Detail string
}

// VerifyReport lists what was checked, in order. When a check fails, the error is
// returned beside the report, which lists the checks that held before it.
type VerifyReport struct {
	Checks []VerifyCheck
}

// Add records a check that held.
func (r *VerifyReport) Add(name, format string, args ...any) {
	r.Checks = append(r.Checks, VerifyCheck{Name: name, Detail: fmt.Sprintf(format, args...)})
}

// imageWriter receives the image's data; holes are never passed.
type imageWriter func(off int64, p []byte) error

// Hole detection granularity: the file system block size of every Linux file system
// an image lives on.
const holeBlock = 4096

// readBundle runs the whole reader pipeline: parts (size, SHA-1) -> AES-CBC ->
// gunzip -> SHA-1 of the tar stream -> the single tar member, whose non-zero blocks
// go to out (nil: only check).
func readBundle(ctx context.Context, m *Manifest, key Key, src PartSource, out imageWriter, rep *VerifyReport) error {
	if err := m.Validate(); err != nil {
		return err
	}
	rep.Add("manifest", "version %s, %s, image %q of %d bytes, all fields valid", m.Version, plural(len(m.Parts), "part"), m.Name, m.Size)
	rep.Add("part names", "%s, no paths", plural(len(m.Parts), "plain file name"))
	parts := newPartReader(ctx, m, src)
	defer parts.Close()
	dec, err := newDecryptReaderSize(parts, key, int(min(decryptChunk, roundUpBlock(m.BundledSize))))
	if err != nil {
		return err
	}
	gz, err := gzip.NewReader(dec)
	if err != nil {
		if parts.err != nil && parts.err != io.EOF {
			return parts.err
		}
		return fmt.Errorf("decompressing bundle: %w (wrong key or IV?)", err)
	}
	defer gz.Close()
	tarStream := &hashingReader{r: gz, h: sha1.New()}
	tr := tar.NewReader(tarStream)
	hdr, err := tr.Next()
	if err != nil {
		return wrapStreamErr(parts, "reading the tar header", err)
	}
	switch hdr.Typeflag {
	case tar.TypeReg, tar.TypeGNUSparse:
	default:
		return fmt.Errorf("bundle tar member %q has type %q, want a regular or sparse file", hdr.Name, hdr.Typeflag)
	}
	if hdr.Size != m.Size {
		return fmt.Errorf("bundle tar member %q is %d bytes, but the manifest's <size> is %d", hdr.Name, hdr.Size, m.Size)
	}
	if err := copyImage(ctx, tr, hdr.Size, out); err != nil {
		return wrapStreamErr(parts, "reading the image from the tar stream", err)
	}
	if next, err := tr.Next(); err != io.EOF {
		if err != nil {
			return wrapStreamErr(parts, "reading the end of the tar stream", err)
		}
		return fmt.Errorf("bundle tar stream has a second member %q; a bundle holds exactly one", next.Name)
	}
	// The digest covers the whole stream, including the padding after the end marker
	// (GNU tar pads to a 10240-byte record). Anything much longer is not a bundle.
	if n, err := io.CopyN(io.Discard, tarStream, maxTarTrailer+1); err != io.EOF {
		if err != nil {
			return wrapStreamErr(parts, "reading the end of the tar stream", err)
		}
		return fmt.Errorf("bundle tar stream goes on for more than %d bytes after its end marker", n-1)
	}
	rep.Add("parts", "%s, %d bytes = <bundled_size>, every size and SHA-1 matches the manifest", plural(parts.count, "part"), parts.bytes)
	rep.Add("decryption", "AES-128-CBC with valid PKCS#7 padding, gzip stream intact")
	kind := "regular file"
	if hdr.Typeflag == tar.TypeGNUSparse {
		kind = "GNU sparse file"
	}
	rep.Add("tar", "one member %q (%s) of %d bytes = <size>", hdr.Name, kind, hdr.Size)
	sum := hex.EncodeToString(tarStream.h.Sum(nil))
	if sum != m.Digest {
		return fmt.Errorf("SHA-1 of the tar stream %s does not match the manifest's <digest> %s", sum, m.Digest)
	}
	rep.Add("digest", "SHA-1 of the %d-byte tar stream = <digest> %s", tarStream.n, sum)
	return nil
}

// wrapStreamErr prefers the part reader's error: a bad part makes everything after it
// fail, and the part is what the user must fix.
func wrapStreamErr(parts *partReader, what string, err error) error {
	if parts.err != nil && parts.err != io.EOF {
		return parts.err
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	return fmt.Errorf("%s: %w", what, err)
}

// copyImage reads size bytes of image data from r and passes the blocks that are not
// all zero to out, coalesced.
func copyImage(ctx context.Context, r io.Reader, size int64, out imageWriter) error {
	buf := make([]byte, min(1<<20, (size+holeBlock-1)/holeBlock*holeBlock))
	zero := make([]byte, holeBlock)
	var off int64
	for off < size {
		if err := ctx.Err(); err != nil {
			return err
		}
		n := int64(len(buf))
		if size-off < n {
			n = size - off
		}
		if _, err := io.ReadFull(r, buf[:n]); err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return err
		}
		if out != nil {
			if err := writeData(buf[:n], off, zero, out); err != nil {
				return err
			}
		}
		off += n
	}
	return nil
}

// writeData writes the runs of non-zero blocks of p (at file offset off).
func writeData(p []byte, off int64, zero []byte, out imageWriter) error {
	start := -1 // start of the current data run in p
	for i := 0; i < len(p); i += holeBlock {
		end := min(i+holeBlock, len(p))
		isZero := bytes.Equal(p[i:end], zero[:end-i])
		if !isZero && start < 0 {
			start = i
		}
		if isZero && start >= 0 {
			if err := out(off+int64(start), p[start:i]); err != nil {
				return err
			}
			start = -1
		}
	}
	if start >= 0 {
		return out(off+int64(start), p[start:])
	}
	return nil
}

// Unbundle rebuilds the image of a bundle into dst: it checks the part names, every
// part's size and SHA-1, the decryption, the single tar member and its size, and the
// SHA-1 of the tar stream. Blocks of zeros become holes, so sparse images come back
// sparse. dst is truncated first; on error its content is undefined. The signature is
// not checked here (see Manifest.VerifySignature).
func Unbundle(ctx context.Context, m *Manifest, key Key, src PartSource, dst *os.File) error {
	if err := dst.Truncate(0); err != nil {
		return fmt.Errorf("unbundle: truncating %s: %w", dst.Name(), err)
	}
	write := func(off int64, p []byte) error {
		if _, err := dst.WriteAt(p, off); err != nil {
			return fmt.Errorf("writing image %s: %w", dst.Name(), err)
		}
		return nil
	}
	if err := readBundle(ctx, m, key, src, write, &VerifyReport{}); err != nil {
		return err
	}
	if err := dst.Truncate(m.Size); err != nil {
		return fmt.Errorf("unbundle: setting the size of %s: %w", dst.Name(), err)
	}
	return nil
}

// Verify does every check Unbundle does without writing the image, and returns what it
// checked. On failure the report lists the checks that held before the error.
func Verify(ctx context.Context, m *Manifest, key Key, src PartSource) (*VerifyReport, error) {
	rep := &VerifyReport{}
	err := readBundle(ctx, m, key, src, nil, rep)
	return rep, err
}

// VerifyParts checks what can be checked without the bundle key: the manifest fields,
// the part names, and every part's size and SHA-1.
func VerifyParts(ctx context.Context, m *Manifest, src PartSource) (*VerifyReport, error) {
	rep := &VerifyReport{}
	if err := m.Validate(); err != nil {
		return rep, err
	}
	rep.Add("manifest", "version %s, %s, image %q of %d bytes, all fields valid", m.Version, plural(len(m.Parts), "part"), m.Name, m.Size)
	rep.Add("part names", "%s, no paths", plural(len(m.Parts), "plain file name"))
	parts := newPartReader(ctx, m, src)
	defer parts.Close()
	if _, err := io.Copy(io.Discard, parts); err != nil {
		return rep, err
	}
	rep.Add("parts", "%s, %d bytes = <bundled_size>, every size and SHA-1 matches the manifest", plural(parts.count, "part"), parts.bytes)
	return rep, nil
}

// plural formats "1 part", "2 parts".
func plural(n int, what string) string {
	if n == 1 {
		return "1 " + what
	}
	return fmt.Sprintf("%d %ss", n, what)
}
