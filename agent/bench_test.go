package agent

import (
	"bufio"
	"context"
	"crypto/md5"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/instancestore/packer-plugin-instancestore/s3/presigned"
)

// BenchmarkAgent runs the agent on a 256 MiB image (half random, half a repeating
// pattern) against a loopback PUT target that checks Content-MD5 and discards, and
// reports image MB/s and the process's peak RSS (VmHWM) in MiB.
func BenchmarkAgent(b *testing.B) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := md5.New()
		io.Copy(h, r.Body)
		if base64.StdEncoding.EncodeToString(h.Sum(nil)) != r.Header.Get("Content-MD5") {
			w.WriteHeader(400)
		}
	}))
	defer srv.Close()
	const size = 256 << 20
	img := filepath.Join(b.TempDir(), "disk.img")
	f, _ := os.Create(img)
	buf := make([]byte, 1<<20)
	for i := 0; i < size>>20; i++ {
		if i%2 == 0 {
			io.ReadFull(randReader{}, buf)
		} else {
			for j := range buf {
				buf[j] = byte(j * i)
			}
		}
		f.Write(buf)
	}
	f.Close()
	b.SetBytes(size)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		req, _ := newRequest(b, img)
		inR, inW := io.Pipe()
		outR, outW := io.Pipe()
		done := make(chan error, 1)
		go func() { done <- Run(context.Background(), inR, outW); outW.Close() }()
		line, _ := json.Marshal(req)
		go inW.Write(append(line, '\n'))
		sc := bufio.NewScanner(outR)
		for sc.Scan() {
			var e Event
			json.Unmarshal(sc.Bytes(), &e)
			if e.Type == EventPart {
				sum, _ := e.Part.MD5Sum()
				r, _ := json.Marshal(Reply{Type: ReplyURL, Name: e.Part.Name, Request: &presigned.Request{URL: srv.URL + "/" + e.Part.Name,
					Header: http.Header{"Content-Md5": {base64.StdEncoding.EncodeToString(sum[:])}}, Expires: time.Now().Add(time.Minute)}})
				go inW.Write(append(r, '\n'))
			}
		}
		inW.Close()
		if err := <-done; err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(peakRSS())/(1<<20), "peak-RSS-MiB")
}

type randReader struct{}

func (randReader) Read(p []byte) (int, error) {
	// A cheap xorshift stream: incompressible enough for gzip, fast to make.
	x := uint64(time.Now().UnixNano()) | 1
	for i := range p {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		p[i] = byte(x)
	}
	return len(p), nil
}

func peakRSS() int64 {
	b, _ := os.ReadFile("/proc/self/status")
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "VmHWM:") {
			f := strings.Fields(l)
			if len(f) >= 2 {
				n, _ := strconv.ParseInt(f[1], 10, 64)
				return n << 10
			}
		}
	}
	return 0
}
