package presigned

import (
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/instancestore/packer-plugin-instancestore/bundle"
)

// syncBuffer is a log destination safe for the upload goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func captureLog(t *testing.T) *syncBuffer {
	buf := &syncBuffer{}
	log.SetOutput(buf)
	t.Cleanup(func() { log.SetOutput(os.Stderr) })
	return buf
}

// The secrets of a SigV4 presigned URL, as a real one carries them.
const (
	testAccessKey = "AKIAIOSFODNN7EXAMPLE"
	testSignature = "aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404"
	testToken     = "FQoGZXIvYXdzEJr-session-token"
)

func sigv4Presigner(base string, expiry time.Duration) Presigner {
	return func(ctx context.Context, p *bundle.Part, fresh bool) (*Request, error) {
		h := http.Header{}
		h.Set("X-Amz-Acl", "aws-exec-read")
		h.Set("Content-Md5", base64.StdEncoding.EncodeToString(p.MD5[:]))
		u := fmt.Sprintf("%s/bucket/prefix/%s?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=%s%%2F20261201%%2Fus-east-1%%2Fs3%%2Faws4_request&X-Amz-Date=20261201T210000Z&X-Amz-Expires=900&X-Amz-Security-Token=%s&X-Amz-SignedHeaders=content-md5%%3Bhost%%3Bx-amz-acl&X-Amz-Signature=%s",
			base, p.Name, testAccessKey, testToken, testSignature)
		return &Request{URL: u, Header: h, Expires: time.Now().Add(expiry)}, nil
	}
}

// TestLogShowsRetriesAndURLsWithoutSecrets: what PACKER_LOG=1 shows of the uploads:
// each URL's expiry and signed headers, each failed attempt with its status and the
// delay before the next, an expired URL being renewed, and a part that fails for good
// with the reason; never the signature, the access key or the session token.
func TestLogShowsRetriesAndURLsWithoutSecrets(t *testing.T) {
	out := captureLog(t)
	st := newStore()
	var n0, n1 atomic.Int64
	st.fault = func(r *http.Request, w http.ResponseWriter) bool {
		switch {
		case strings.HasSuffix(r.URL.Path, ".part.00") && n0.Add(1) == 1:
			w.WriteHeader(503)
			fmt.Fprint(w, "<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>")
			return true
		case strings.HasSuffix(r.URL.Path, ".part.01") && n1.Add(1) <= 2:
			w.WriteHeader(403)
			fmt.Fprint(w, "<Error><Code>AccessDenied</Code><Message>Request has expired</Message></Error>")
			return true
		case strings.HasSuffix(r.URL.Path, ".part.02"):
			w.WriteHeader(403)
			fmt.Fprint(w, "<Error><Code>AccessDenied</Code><Message>Access Denied</Message></Error>")
			return true
		}
		return false
	}
	srv := httptest.NewServer(st)
	defer srv.Close()
	sink := NewSink(context.Background(), Config{
		Presign: sigv4Presigner(srv.URL, 15*time.Minute),
		Retry:   Retry{Attempts: 5, BaseDelay: time.Millisecond, MaxDelay: 5 * time.Millisecond},
	})
	ps := parts(3)
	for _, p := range ps[:2] {
		if err := sink.PutPart(p); err != nil {
			t.Fatal(err)
		}
	}
	if err := sink.Close(); err != nil {
		t.Fatalf("the first two parts: %v", err)
	}
	sink = NewSink(context.Background(), Config{
		Presign: sigv4Presigner(srv.URL, 15*time.Minute),
		Retry:   Retry{Attempts: 5, BaseDelay: time.Millisecond, MaxDelay: 5 * time.Millisecond},
	})
	_ = sink.PutPart(ps[2])
	if err := sink.Close(); err == nil {
		t.Fatal("part 2 was stored although S3 denied it")
	}

	text := out.String()
	t.Logf("log:\n%s", text)
	for _, want := range []string{
		// How the URL was made.
		"part image.part.00 (102400 bytes): upload URL for 127.0.0.1:",
		"/bucket/prefix/image.part.00, expires ",
		"X-Amz-Expires 900s, signed at 20261201T210000Z for us-east-1/s3 with AWS4-HMAC-SHA256, signed headers content-md5;host;x-amz-acl",
		"headers sent content-md5,x-amz-acl, with a session token",
		// A retry: attempt, status, reason, delay.
		"[WARN] presigned: part image.part.00: attempt 1 of 5 failed (status 503): S3 answered 503 Service Unavailable: SlowDown: Please reduce your request rate.; retrying in ",
		"[INFO] presigned: part image.part.00 stored at attempt 2",
		// An expired URL.
		"[INFO] presigned: part image.part.01: attempt 1: the URL expired (S3 answered 403 Forbidden: AccessDenied: Request has expired); asking for a new one",
		// A part that fails for good, and why.
		"[ERROR] presigned: part image.part.02: attempt 1 failed, not retried (status 403 is not transient): S3 answered 403 Forbidden: AccessDenied: Access Denied",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("the log lacks %q", want)
		}
	}
	for _, secret := range []string{testSignature, testAccessKey, testToken, "X-Amz-Signature", "X-Amz-Credential="} {
		if strings.Contains(text, secret) {
			t.Errorf("the log shows the secret %q", secret)
		}
	}
}

// TestLogGivingUp: the last attempt says so, with the count.
func TestLogGivingUp(t *testing.T) {
	out := captureLog(t)
	st := newStore()
	st.fault = func(r *http.Request, w http.ResponseWriter) bool {
		w.WriteHeader(500)
		return true
	}
	srv := httptest.NewServer(st)
	defer srv.Close()
	sink := NewSink(context.Background(), Config{
		Presign: sigv4Presigner(srv.URL, 15*time.Minute),
		Retry:   Retry{Attempts: 3, BaseDelay: time.Millisecond, MaxDelay: 2 * time.Millisecond},
	})
	_ = sink.PutPart(parts(1)[0])
	if err := sink.Close(); err == nil {
		t.Fatal("no error after three 500s")
	}
	text := out.String()
	for _, want := range []string{
		"attempt 1 of 3 failed (status 500): S3 answered 500 Internal Server Error; retrying in ",
		"attempt 2 of 3 failed (status 500)",
		"[ERROR] presigned: part image.part.00: attempt 3 of 3 failed, giving up: S3 answered 500 Internal Server Error",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("the log lacks %q; log:\n%s", want, text)
		}
	}
}
