package presigned

import (
	"bytes"
	"context"
	"crypto/md5"
	"crypto/sha1"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/instancestore/packer-plugin-instancestore/bundle"
)

// store is a tiny S3 stand-in that checks Content-MD5 and x-amz-acl and can fail.
type store struct {
	mu      sync.Mutex
	objects map[string][]byte
	acl     map[string]string
	fault   func(r *http.Request, w http.ResponseWriter) bool // true: handled (failed)
	puts    atomic.Int64
}

func (s *store) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.puts.Add(1)
	if s.fault != nil && s.fault(r, w) {
		return
	}
	body, err := io.ReadAll(r.Body)
	if err != nil {
		return
	}
	sum := md5.Sum(body)
	if r.Header.Get("Content-MD5") != base64.StdEncoding.EncodeToString(sum[:]) {
		w.WriteHeader(400)
		fmt.Fprint(w, "<Error><Code>BadDigest</Code><Message>md5</Message></Error>")
		return
	}
	s.mu.Lock()
	s.objects[r.URL.Path] = body
	s.acl[r.URL.Path] = r.Header.Get("X-Amz-Acl")
	s.mu.Unlock()
}

func newStore() *store {
	return &store{objects: map[string][]byte{}, acl: map[string]string{}}
}

func parts(n int) []*bundle.Part {
	var ps []*bundle.Part
	for i := range n {
		d := make([]byte, 100<<10+i)
		for j := range d {
			d[j] = byte(i*7 + j)
		}
		ps = append(ps, &bundle.Part{Index: i, Name: fmt.Sprintf("image.part.%02d", i), Data: d,
			SHA1: sha1.Sum(d), MD5: md5.Sum(d)})
	}
	return ps
}

func presignerFor(base string, calls *atomic.Int64) Presigner {
	return func(ctx context.Context, p *bundle.Part, fresh bool) (*Request, error) {
		calls.Add(1)
		h := http.Header{}
		h.Set("x-amz-acl", "aws-exec-read")
		h.Set("Content-MD5", base64.StdEncoding.EncodeToString(p.MD5[:]))
		return &Request{URL: base + "/bucket/" + p.Name + "?X-Amz-Signature=secret", Header: h,
			Expires: time.Now().Add(time.Minute)}, nil
	}
}

func upload(t *testing.T, st *store, cfg Config, ps []*bundle.Part) error {
	t.Helper()
	srv := httptest.NewServer(st)
	t.Cleanup(srv.Close)
	var calls atomic.Int64
	if cfg.Presign == nil {
		cfg.Presign = presignerFor(srv.URL, &calls)
	}
	s := NewSink(context.Background(), cfg)
	for _, p := range ps {
		if err := s.PutPart(p); err != nil {
			s.Close()
			return err
		}
	}
	return s.Close()
}

func checkStored(t *testing.T, st *store, ps []*bundle.Part) {
	t.Helper()
	for _, p := range ps {
		got, ok := st.objects["/bucket/"+p.Name]
		if !ok || !bytes.Equal(got, p.Data) {
			t.Fatalf("part %s: stored %v, equal %v", p.Name, ok, bytes.Equal(got, p.Data))
		}
		if a := st.acl["/bucket/"+p.Name]; a != "aws-exec-read" {
			t.Fatalf("part %s: x-amz-acl %q", p.Name, a)
		}
	}
}

func TestUploadAllParts(t *testing.T) {
	st := newStore()
	ps := parts(9)
	var uploaded atomic.Int64
	if err := upload(t, st, Config{Uploaded: func(*bundle.Part) { uploaded.Add(1) }}, ps); err != nil {
		t.Fatal(err)
	}
	checkStored(t, st, ps)
	if uploaded.Load() != 9 {
		t.Fatalf("Uploaded called %d times", uploaded.Load())
	}
}

// TestRetriesTransientFaults fails a third of the requests in every way S3 and
// networks fail transiently; every part must still arrive intact.
func TestRetriesTransientFaults(t *testing.T) {
	st := newStore()
	var n atomic.Int64
	st.fault = func(r *http.Request, w http.ResponseWriter) bool {
		if rand.N(3) != 0 {
			return false
		}
		switch n.Add(1) % 5 {
		case 0:
			w.WriteHeader(500)
			fmt.Fprint(w, "<Error><Code>InternalError</Code></Error>")
		case 1:
			w.WriteHeader(503)
			fmt.Fprint(w, "<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>")
		case 2: // reset mid-body
			io.CopyN(io.Discard, r.Body, 1000)
			c, _, _ := w.(http.Hijacker).Hijack()
			c.Close()
		case 3: // stall longer than the stall timeout
			time.Sleep(700 * time.Millisecond)
			w.WriteHeader(500)
		case 4: // corrupted in transit
			w.WriteHeader(400)
			fmt.Fprint(w, "<Error><Code>BadDigest</Code></Error>")
		}
		return true
	}
	ps := parts(12)
	var retries atomic.Int64
	cfg := Config{Concurrency: 3, StallTimeout: 300 * time.Millisecond,
		Retry:    Retry{Attempts: 30, BaseDelay: time.Millisecond, MaxDelay: 20 * time.Millisecond},
		Retrying: func(p *bundle.Part, attempt int, err error) { retries.Add(1) }}
	if err := upload(t, st, cfg, ps); err != nil {
		t.Fatal(err)
	}
	checkStored(t, st, ps)
	if retries.Load() == 0 {
		t.Fatal("no retry happened: the fault injection did not work")
	}
}

func TestExpiredURLIsRenewed(t *testing.T) {
	st := newStore()
	var expired atomic.Int64
	st.fault = func(r *http.Request, w http.ResponseWriter) bool {
		if r.URL.Query().Get("gen") == "old" {
			expired.Add(1)
			w.WriteHeader(403)
			fmt.Fprint(w, "<Error><Code>AccessDenied</Code><Message>Request has expired</Message></Error>")
			return true
		}
		return false
	}
	srv := httptest.NewServer(st)
	defer srv.Close()
	var fresh atomic.Int64
	s := NewSink(context.Background(), Config{Presign: func(ctx context.Context, p *bundle.Part, f bool) (*Request, error) {
		gen := "old"
		if f {
			fresh.Add(1)
			gen = "new"
		}
		h := http.Header{"X-Amz-Acl": {"aws-exec-read"}}
		return &Request{URL: srv.URL + "/bucket/" + p.Name + "?gen=" + gen, Header: h}, nil
	}, Retry: Retry{Attempts: 2, BaseDelay: time.Millisecond, MaxDelay: time.Millisecond}})
	ps := parts(3)
	for _, p := range ps {
		if err := s.PutPart(p); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	checkStored(t, st, ps)
	if fresh.Load() != 3 || expired.Load() != 3 {
		t.Fatalf("fresh URLs %d, expired answers %d; want 3 and 3", fresh.Load(), expired.Load())
	}
}

func TestPermanentErrorStopsAndHidesURL(t *testing.T) {
	st := newStore()
	st.fault = func(r *http.Request, w http.ResponseWriter) bool {
		w.WriteHeader(403)
		fmt.Fprint(w, "<Error><Code>AccessDenied</Code><Message>Access Denied</Message></Error>")
		return true
	}
	err := upload(t, st, Config{}, parts(6))
	var se *StatusError
	if !errors.As(err, &se) || se.Code != "AccessDenied" {
		t.Fatalf("want AccessDenied StatusError, got %v", err)
	}
	if strings.Contains(err.Error(), "secret") || strings.Contains(err.Error(), "http://") {
		t.Fatalf("error leaks the URL: %v", err)
	}
	if n := st.puts.Load(); n > 6 {
		t.Fatalf("%d PUTs for a permanent error: want no retries", n)
	}
}

func TestNetworkErrorHidesURL(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	base := srv.URL
	srv.Close() // connection refused
	var calls atomic.Int64
	err := upload(t, newStore(), Config{Presign: presignerFor(base, &calls),
		Retry: Retry{Attempts: 2, BaseDelay: time.Millisecond, MaxDelay: time.Millisecond}}, parts(1))
	if err == nil {
		t.Fatal("no error")
	}
	if strings.Contains(err.Error(), "secret") || strings.Contains(err.Error(), base) {
		t.Fatalf("error leaks the URL: %v", err)
	}
	if !strings.Contains(err.Error(), "giving up after 2 attempts") {
		t.Fatalf("unexpected error: %v", err)
	}
}

// TestConcurrencyBound checks that no more than Concurrency parts are in flight.
func TestConcurrencyBound(t *testing.T) {
	st := newStore()
	var inflight, peak atomic.Int64
	st.fault = func(r *http.Request, w http.ResponseWriter) bool {
		n := inflight.Add(1)
		for {
			p := peak.Load()
			if n <= p || peak.CompareAndSwap(p, n) {
				break
			}
		}
		time.Sleep(20 * time.Millisecond)
		inflight.Add(-1)
		return false
	}
	ps := parts(16)
	if err := upload(t, st, Config{Concurrency: 3}, ps); err != nil {
		t.Fatal(err)
	}
	checkStored(t, st, ps)
	if p := peak.Load(); p > 3 || p < 2 {
		t.Fatalf("peak in-flight %d, want 2..3", p)
	}
}
