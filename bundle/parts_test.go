package bundle

import (
	"bytes"
	"context"
	"crypto/md5"
	"crypto/sha1"
	"encoding/hex"
	"errors"
	"strings"
	"testing"
)

func TestPartNames(t *testing.T) {
	for _, c := range []struct{ count, width int }{
		{0, 1}, {1, 1}, {9, 1}, {10, 2}, {11, 2}, {99, 2}, {100, 3}, {1000, 4},
	} {
		if got := PartNameWidth(c.count); got != c.width {
			t.Errorf("PartNameWidth(%d) = %d, want %d", c.count, got, c.width)
		}
	}
	for _, c := range []struct {
		index, width int
		want         string
	}{
		{0, 1, "image.part.0"}, {8, 1, "image.part.8"}, {0, 2, "image.part.00"},
		{10, 2, "image.part.10"}, {7, 3, "image.part.007"}, {123, 2, "image.part.123"},
	} {
		if got := PartName("image", c.index, c.width); got != c.want {
			t.Errorf("PartName(image, %d, %d) = %q, want %q", c.index, c.width, got, c.want)
		}
	}
}

func TestPartWriterBoundaries(t *testing.T) {
	const size = 100
	for _, c := range []struct {
		total int
		sizes []int
	}{
		{0, nil},
		{1, []int{1}},
		{size - 1, []int{size - 1}},
		{size, []int{size}},
		{size + 1, []int{size, 1}},
		{3 * size, []int{size, size, size}}, // no empty trailing part
		{3*size + 42, []int{size, size, size, 42}},
	} {
		for _, chunk := range []int{1, 7, size, 3*size + 1} {
			data := bytes.Repeat([]byte("abcdefghijklm"), c.total/13+1)[:c.total]
			sink := &memSink{}
			pw := newPartWriter(context.Background(), sink, "img", 2)
			pw.size = size
			for p := data; len(p) > 0; {
				n := min(chunk, len(p))
				if k, err := pw.Write(p[:n]); err != nil || k != n {
					t.Fatalf("Write = %d, %v", k, err)
				}
				p = p[n:]
			}
			if err := pw.Close(); err != nil {
				t.Fatal(err)
			}
			if len(sink.parts) != len(c.sizes) || len(pw.parts) != len(c.sizes) {
				t.Fatalf("total %d chunk %d: %d parts, want %d", c.total, chunk, len(sink.parts), len(c.sizes))
			}
			var joined []byte
			for i, p := range sink.parts {
				info := pw.parts[i]
				if len(p.Data) != c.sizes[i] || info.Size != int64(c.sizes[i]) || p.Index != i || info.Index != i {
					t.Errorf("part %d: %d bytes (info %d), index %d, want %d bytes", i, len(p.Data), info.Size, p.Index, c.sizes[i])
				}
				if want := PartName("img", i, 2); p.Name != want || info.Name != want {
					t.Errorf("part %d named %q / %q, want %q", i, p.Name, info.Name, want)
				}
				if p.SHA1 != sha1.Sum(p.Data) || info.SHA1 != hex.EncodeToString(p.SHA1[:]) || p.MD5 != md5.Sum(p.Data) || info.MD5 != p.MD5 {
					t.Errorf("part %d: wrong digests", i)
				}
				if i > 0 && &sink.parts[i-1].Data[0] == &p.Data[0] {
					t.Errorf("parts %d and %d share a buffer: the sink owns each part's data", i-1, i)
				}
				joined = append(joined, p.Data...)
			}
			if !bytes.Equal(joined, data) || pw.written != int64(len(data)) {
				t.Errorf("total %d chunk %d: parts do not add up to the input", c.total, chunk)
			}
		}
	}
}

func TestPartWriterErrors(t *testing.T) {
	pw := newPartWriter(context.Background(), &memSink{fail: 1}, "img", 1)
	pw.size = 10
	_, err := pw.Write(make([]byte, 25))
	if err == nil || !strings.Contains(err.Error(), "img.part.1") {
		t.Errorf("sink failure: Write = %v, want an error naming img.part.1", err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	pw = newPartWriter(ctx, &memSink{}, "img", 1)
	pw.size = 10
	cancel()
	if _, err := pw.Write(make([]byte, 5)); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled: Write = %v", err)
	}
}
