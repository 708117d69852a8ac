package s3bundle

import (
	"bytes"
	"context"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
)

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestLogShowsRetriesAndPresigningWithoutSecrets: with PACKER_LOG=1 the plugin's log
// shows each retried S3 request (operation, status, code, delay) and how a part URL
// was presigned, and never the secret key, the access key id, the session token or the
// signature.
func TestLogShowsRetriesAndPresigningWithoutSecrets(t *testing.T) {
	out := &lockedBuffer{}
	log.SetOutput(out)
	t.Cleanup(func() { log.SetOutput(os.Stderr) })

	var heads atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodHead && heads.Add(1) == 1 {
			w.Header().Set("Content-Type", "application/xml")
			w.WriteHeader(503)
			return
		}
		w.WriteHeader(200)
	}))
	defer srv.Close()

	const ak, sk, tok = "AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "session-token-secret"
	cfg := aws.Config{
		Region:       "us-east-1",
		Credentials:  credentials.NewStaticCredentialsProvider(ak, sk, tok),
		BaseEndpoint: aws.String(srv.URL),
	}
	b, err := New(cfg, "us-east-1", "bundles", "prefix", Options{PathStyle: true})
	if err != nil {
		t.Fatal(err)
	}
	if ok, err := b.Exists(context.Background(), "image.manifest.xml"); err != nil || !ok {
		t.Fatalf("Exists after one 503: %v, %v", ok, err)
	}
	req, err := b.PresignPart(context.Background(), "image.part.00", [16]byte{1, 2, 3})
	if err != nil {
		t.Fatal(err)
	}
	sig := req.URL[strings.Index(req.URL, "X-Amz-Signature=")+len("X-Amz-Signature="):]
	if i := strings.IndexByte(sig, '&'); i >= 0 {
		sig = sig[:i]
	}

	text := out.String()
	t.Logf("log:\n%s", text)
	for _, want := range []string{
		"[WARN] s3: S3 request attempt 1 failed (status 503, ServiceUnavailable); retrying in ",
		"; retrying in ",
		"[DEBUG] s3: presigned PUT of part image.part.00 for 127.0.0.1:",
		"/bundles/prefix/image.part.00, expires ",
		"X-Amz-Expires 900s",
		"for us-east-1/s3 with AWS4-HMAC-SHA256, signed headers content-md5;host;x-amz-acl",
		"with a session token",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("the log lacks %q", want)
		}
	}
	for _, secret := range []string{ak, sk, tok, sig} {
		if secret == "" || strings.Contains(text, secret) {
			t.Errorf("the log shows the secret %q", secret)
		}
	}
}
