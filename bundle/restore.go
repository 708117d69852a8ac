package bundle

import (
	"context"
	"fmt"
	"io"
)

// WriteImageAt rebuilds the image of a bundle onto dst, a block device (or a file of
// at least the image's size) that already reads zeros: a fresh EBS volume. Only the
// image's non-zero blocks are written, each at its offset; zeros are skipped, never
// written. Every check Unbundle makes is made (part names, each part's size and SHA-1,
// the decryption, the single tar member and its size, the SHA-1 of the tar stream),
// and the image is good only when WriteImageAt returns nil: the data is written as it
// streams, so on error dst holds a partial image. written, if not nil, is told the
// bytes of every write. The report lists the checks that held.
func WriteImageAt(ctx context.Context, m *Manifest, key Key, src PartSource, dst io.WriterAt, written func(n int64)) (*VerifyReport, error) {
	rep := &VerifyReport{}
	out := func(off int64, p []byte) error {
		if _, err := dst.WriteAt(p, off); err != nil {
			return fmt.Errorf("writing %d bytes at offset %d: %w", len(p), off, err)
		}
		if written != nil {
			written(int64(len(p)))
		}
		return nil
	}
	err := readBundle(ctx, m, key, src, out, rep)
	return rep, err
}
