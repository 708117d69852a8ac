package agent

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/md5"
	"crypto/rand"
	"crypto/sha1"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/instancestore/packer-plugin-instancestore/bundle"
	"github.com/instancestore/packer-plugin-instancestore/s3/presigned"
)

// objectStore is a minimal PUT target that checks Content-MD5.
type objectStore struct {
	mu   sync.Mutex
	objs map[string][]byte
	hold chan struct{} // if set, PUTs wait for it
}

func (s *objectStore) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if s.hold != nil {
		select {
		case <-s.hold:
		case <-r.Context().Done():
			return
		}
	}
	b, err := io.ReadAll(r.Body)
	if err != nil {
		return
	}
	sum := md5.Sum(b)
	if r.Header.Get("Content-MD5") != base64.StdEncoding.EncodeToString(sum[:]) || r.Header.Get("X-Amz-Acl") != "aws-exec-read" {
		w.WriteHeader(400)
		return
	}
	s.mu.Lock()
	s.objs[strings.TrimPrefix(r.URL.Path, "/")] = b
	s.mu.Unlock()
}

// host plays the plugin: it answers part events with URLs of the store and
// collects the other events.
type host struct {
	events []Event
	result *ResultEvent
	errMsg string
}

func runHost(t *testing.T, req Request, base string, stopAfterParts int) (*host, error, io.Writer) {
	t.Helper()
	inR, inW := io.Pipe()
	outR, outW := io.Pipe()
	done := make(chan error, 1)
	go func() {
		err := Run(context.Background(), inR, outW)
		outW.Close()
		done <- err
	}()
	b, _ := json.Marshal(req)
	go inW.Write(append(b, '\n'))
	h := &host{}
	sc := bufio.NewScanner(outR)
	parts := 0
	for sc.Scan() {
		var e Event
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			t.Fatalf("agent wrote a non-JSON line %q", sc.Text())
		}
		h.events = append(h.events, e)
		switch e.Type {
		case EventPart:
			parts++
			if stopAfterParts > 0 && parts > stopAfterParts {
				inW.Close()
				continue
			}
			sum, err := e.Part.MD5Sum()
			if err != nil {
				t.Fatal(err)
			}
			hd := http.Header{}
			hd.Set("X-Amz-Acl", "aws-exec-read")
			hd.Set("Content-MD5", base64.StdEncoding.EncodeToString(sum[:]))
			r, _ := json.Marshal(Reply{Type: ReplyURL, Name: e.Part.Name, Request: &presigned.Request{URL: base + "/" + e.Part.Name, Header: hd, Expires: time.Now().Add(time.Minute)}})
			go inW.Write(append(r, '\n'))
		case EventResult:
			h.result = e.Result
		case EventError:
			h.errMsg = e.Message
		}
	}
	inW.Close()
	return h, <-done, inW
}

func testImage(t *testing.T, size int64) (string, []byte) {
	t.Helper()
	data := make([]byte, size)
	rand.Read(data[:size/2]) // half random, half zeros
	p := filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return p, data
}

func newRequest(t testing.TB, image string) (Request, bundle.Key) {
	k, err := bundle.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	return Request{Version: ProtocolVersion, Mode: ModeImage, Name: "image", Key: k.KeyHex(), IV: k.IVHex(),
		Image: image, Concurrency: 3, ProgressMillis: 50}, k
}

// decrypt reassembles the tar stream of a bundle from stored parts.
func decrypt(t *testing.T, k bundle.Key, res *ResultEvent, objs map[string][]byte) []byte {
	t.Helper()
	var ct []byte
	for _, p := range res.Parts {
		b, ok := objs[p.Name]
		if !ok {
			t.Fatalf("part %s not stored", p.Name)
		}
		if s := sha1.Sum(b); hex.EncodeToString(s[:]) != p.SHA1 {
			t.Fatalf("part %s: SHA-1 mismatch", p.Name)
		}
		ct = append(ct, b...)
	}
	blk, _ := aes.NewCipher(k.Key[:])
	pt := make([]byte, len(ct))
	cipher.NewCBCDecrypter(blk, k.IV[:]).CryptBlocks(pt, ct)
	pt = pt[:len(pt)-int(pt[len(pt)-1])]
	zr, err := gzip.NewReader(bytes.NewReader(pt))
	if err != nil {
		t.Fatal(err)
	}
	tarData, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	if s := sha1.Sum(tarData); hex.EncodeToString(s[:]) != res.Digest {
		t.Fatalf("tar digest %x, result says %s", s, res.Digest)
	}
	return tarData
}

func TestAgentBundlesImage(t *testing.T) {
	st := &objectStore{objs: map[string][]byte{}}
	srv := httptest.NewServer(st)
	defer srv.Close()
	img, data := testImage(t, 25<<20+12345)
	work := t.TempDir()
	req, k := newRequest(t, img)
	req.WorkDir = filepath.Join(work, "agentdir")
	os.Mkdir(req.WorkDir, 0o700)
	h, err, _ := runHost(t, req, srv.URL, 0)
	if err != nil {
		t.Fatalf("agent: %v (error event %q)", err, h.errMsg)
	}
	if h.result == nil {
		t.Fatal("no result event")
	}
	if h.events[0].Type != EventHello || h.events[0].Hello.Version != ProtocolVersion {
		t.Fatalf("first event %+v, want hello", h.events[0])
	}
	if h.result.Size != int64(len(data)) || len(h.result.Parts) != len(st.objs) {
		t.Fatalf("result size %d parts %d, stored %d objects", h.result.Size, len(h.result.Parts), len(st.objs))
	}
	tarData := decrypt(t, k, h.result, st.objs)
	// The image's bytes are in the tar stream (after headers; the zero half is a hole).
	if !bytes.Contains(tarData, data[:1<<20]) {
		t.Fatal("tar stream does not contain the image data")
	}
	var uploaded, progress int
	for _, e := range h.events {
		switch e.Type {
		case EventUploaded:
			uploaded++
		case EventProgress:
			progress++
		}
	}
	if uploaded != len(h.result.Parts) {
		t.Fatalf("%d uploaded events for %d parts", uploaded, len(h.result.Parts))
	}
	if _, err := os.Stat(req.WorkDir); !os.IsNotExist(err) {
		t.Fatalf("work dir not removed: %v", err)
	}
	// The key never leaves the session as anything but the request: not in events.
	for _, e := range h.events {
		b, _ := json.Marshal(e)
		if bytes.Contains(b, []byte(k.KeyHex())) || bytes.Contains(b, []byte(srv.URL)) {
			t.Fatalf("event carries a secret: %s", b)
		}
	}
}

func TestAgentStopsWhenHostGoes(t *testing.T) {
	st := &objectStore{objs: map[string][]byte{}}
	srv := httptest.NewServer(st)
	defer srv.Close()
	img, _ := testImage(t, 40<<20)
	req, _ := newRequest(t, img)
	req.WorkDir = filepath.Join(t.TempDir(), "agentdir")
	os.Mkdir(req.WorkDir, 0o700)
	start := time.Now()
	h, err, _ := runHost(t, req, srv.URL, 1)
	if err == nil || !strings.Contains(err.Error(), "host closed the connection") {
		t.Fatalf("want an error naming the closed connection, got %v", err)
	}
	if h.result != nil {
		t.Fatal("result despite the host leaving")
	}
	if _, err := os.Stat(req.WorkDir); !os.IsNotExist(err) {
		t.Fatalf("work dir not removed: %v", err)
	}
	if d := time.Since(start); d > 30*time.Second {
		t.Fatalf("agent took %s to stop", d)
	}
}

func TestRequestCheck(t *testing.T) {
	k, _ := bundle.NewKey()
	good := Request{Version: ProtocolVersion, Mode: ModeImage, Name: "image", Key: k.KeyHex(), IV: k.IVHex(), Image: "/x"}
	for name, tc := range map[string]struct {
		mod  func(r *Request)
		want string
	}{
		"ok":           {func(r *Request) {}, ""},
		"version":      {func(r *Request) { r.Version = 9 }, "protocol version 9"},
		"mode":         {func(r *Request) { r.Mode = "x" }, `unknown mode "x"`},
		"key":          {func(r *Request) { r.Key = "abc" }, "32 hex characters"},
		"no image":     {func(r *Request) { r.Image = "" }, "needs the image path"},
		"no volume":    {func(r *Request) { r.Mode = ModeVolume }, "needs the volume options"},
		"bad name":     {func(r *Request) { r.Name = "a/b" }, "bundle name"},
		"metadata":     {func(r *Request) { r.MetadataURL = "http://127.0.0.1:8080" }, ""},
		"bad metadata": {func(r *Request) { r.MetadataURL = "file:///etc/passwd" }, "metadata URL"},
	} {
		t.Run(name, func(t *testing.T) {
			r := good
			tc.mod(&r)
			err := r.Check()
			if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
				t.Fatalf("Check() = %v, want %q", err, tc.want)
			}
		})
	}
	_ = fmt.Sprint()
}

// TestAgentCompressionLevel: the request's compression_level reaches the writer (a
// compressible image gets smaller at 9 than at 1), and an out-of-range one is refused.
func TestAgentCompressionLevel(t *testing.T) {
	data := make([]byte, 4<<20)
	words := []string{"instance ", "store ", "bundle ", "packer ", "image ", "part ", "manifest\n"}
	r := uint32(1)
	for i := 0; i < len(data); {
		r = r*1664525 + 1013904223
		i += copy(data[i:], words[r>>29%uint32(len(words))])
	}
	p := filepath.Join(t.TempDir(), "text.img")
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	size := func(level int) int64 {
		st := &objectStore{objs: map[string][]byte{}}
		srv := httptest.NewServer(st)
		defer srv.Close()
		req, _ := newRequest(t, p)
		req.CompressionLevel = level
		h, err, _ := runHost(t, req, srv.URL, 0)
		if err != nil || h.result == nil {
			t.Fatalf("level %d: %v (error event %q)", level, err, h.errMsg)
		}
		var n int64
		for _, b := range st.objs {
			n += int64(len(b))
		}
		return n
	}
	fast, small := size(1), size(9)
	t.Logf("bundle of 4 MiB of text: level 1 %d bytes, level 9 %d bytes", fast, small)
	if small >= fast {
		t.Fatalf("level 9 gave %d bytes, level 1 %d: the level did not reach the writer", small, fast)
	}
	req, _ := newRequest(t, p)
	req.CompressionLevel = 10
	if err := req.Check(); err == nil || !strings.Contains(err.Error(), "compression level 10") {
		t.Fatalf("Check() of level 10 = %v", err)
	}
}
