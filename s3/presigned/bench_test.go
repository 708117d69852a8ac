package presigned

import (
	"context"
	"crypto/md5"
	"encoding/base64"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/instancestore/packer-plugin-instancestore/bundle"
)

// BenchmarkSink measures the sink's own cost: 10 MiB parts PUT over loopback to a
// server that checks Content-MD5 and discards the body, 4 in flight.
func BenchmarkSink(b *testing.B) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := md5.New()
		io.Copy(h, r.Body)
		if base64.StdEncoding.EncodeToString(h.Sum(nil)) != r.Header.Get("Content-MD5") {
			w.WriteHeader(400)
		}
	}))
	defer srv.Close()
	data := make([]byte, bundle.PartSize)
	for i := range data {
		data[i] = byte(i * 31)
	}
	sum := md5.Sum(data)
	presign := func(ctx context.Context, p *bundle.Part, fresh bool) (*Request, error) {
		return &Request{URL: srv.URL + "/" + p.Name, Expires: time.Now().Add(time.Minute)}, nil
	}
	b.SetBytes(int64(len(data)))
	b.ResetTimer()
	s := NewSink(context.Background(), Config{Presign: presign, Concurrency: 4})
	for i := 0; i < b.N; i++ {
		if err := s.PutPart(&bundle.Part{Index: i, Name: "image.part." + string(rune('a'+i%26)), Data: data, MD5: sum}); err != nil {
			b.Fatal(err)
		}
	}
	if err := s.Close(); err != nil {
		b.Fatal(err)
	}
}
