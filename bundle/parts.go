package bundle

import (
	"context"
	"crypto/md5"
	"crypto/sha1"
	"encoding/hex"
	"fmt"
	"hash"
	"strconv"
)

// PartName is the file name of part index of bundle bundleName, the index zero-padded
// to width digits: "image.part.07".
func PartName(bundleName string, index, width int) string {
	return fmt.Sprintf("%s.part.%0*d", bundleName, width, index)
}

// PartNameWidth is the number of digits ec2-ami-tools pads part indexes to for a
// bundle of count parts: the number of decimal digits of count (9 parts: .part.0 to
// .part.8; 10 parts: .part.00 to .part.09).
func PartNameWidth(count int) int {
	if count < 1 {
		return 1
	}
	return len(strconv.Itoa(count))
}

// partWriter cuts what is written to it into PartSize parts, hashes each with SHA-1
// and MD5 as the bytes arrive (hashing a whole part at once would stall the stages
// above for tens of milliseconds per part) and hands it to the sink. Parts are named
// with a fixed width decided before the stream starts. Close emits the last, shorter
// part; an empty trailing part is never made.
type partWriter struct {
	ctx      context.Context
	sink     Sink
	name     string
	width    int
	size     int // part size, PartSize but for tests
	buf      []byte
	sha1     hash.Hash
	md5      hash.Hash
	parts    []PartInfo
	written  int64
	progress func() // called after each stored part, may be nil
}

func newPartWriter(ctx context.Context, sink Sink, name string, width int) *partWriter {
	return &partWriter{ctx: ctx, sink: sink, name: name, width: width, size: PartSize, sha1: sha1.New(), md5: md5.New()}
}

func (pw *partWriter) Write(p []byte) (int, error) {
	n := len(p)
	if err := pw.ctx.Err(); err != nil {
		return 0, err
	}
	for len(p) > 0 {
		if pw.buf == nil {
			// A fresh buffer for every part: the sink owns the last one.
			pw.buf = make([]byte, 0, pw.size)
		}
		k := min(pw.size-len(pw.buf), len(p))
		pw.buf = append(pw.buf, p[:k]...)
		pw.sha1.Write(p[:k])
		pw.md5.Write(p[:k])
		p = p[k:]
		if len(pw.buf) == pw.size {
			if err := pw.emit(); err != nil {
				return n - len(p), err
			}
		}
	}
	return n, nil
}

// Close hands the last part to the sink. It does not close the sink.
func (pw *partWriter) Close() error {
	if len(pw.buf) == 0 {
		return nil
	}
	return pw.emit()
}

func (pw *partWriter) emit() error {
	if err := pw.ctx.Err(); err != nil {
		return err
	}
	p := &Part{
		Index: len(pw.parts),
		Name:  PartName(pw.name, len(pw.parts), pw.width),
		Data:  pw.buf,
	}
	pw.sha1.Sum(p.SHA1[:0])
	pw.md5.Sum(p.MD5[:0])
	pw.sha1.Reset()
	pw.md5.Reset()
	pw.buf = nil
	if err := pw.sink.PutPart(p); err != nil {
		return fmt.Errorf("storing part %s: %w", p.Name, err)
	}
	pw.parts = append(pw.parts, PartInfo{
		Index: p.Index,
		Name:  p.Name,
		Size:  int64(len(p.Data)),
		SHA1:  hex.EncodeToString(p.SHA1[:]),
		MD5:   p.MD5,
	})
	pw.written += int64(len(p.Data))
	if pw.progress != nil {
		pw.progress()
	}
	return nil
}
