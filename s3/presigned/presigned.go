// Package presigned uploads bundle parts to presigned S3 PUT URLs, with several parts
// in flight and retries with backoff and jitter. It holds no AWS credentials and
// imports no AWS package: it is the half of the S3 side that runs on the instance
// (inside the agent), while the URLs are issued by whoever holds the credentials.
package presigned

import (
	"bytes"
	"context"
	"crypto/md5"
	"encoding/base64"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"log"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/instancestore/packer-plugin-instancestore/bundle"
)

// Request is one presigned PUT: the URL and the headers that were signed into it
// (x-amz-acl, Content-MD5), which the PUT must send with exactly these values. The URL
// is a secret for as long as it is valid: never log it.
type Request struct {
	URL     string      `json:"url"`
	Header  http.Header `json:"header,omitempty"`
	Expires time.Time   `json:"expires"`
}

// expiredSoon reports whether r should not be used for a new attempt any more.
func (r *Request) expiredSoon(now time.Time) bool {
	return !r.Expires.IsZero() && now.Add(15*time.Second).After(r.Expires)
}

// Presigner issues the presigned PUT for one part. It is called again (with fresh
// set) when the previous URL expired or S3 refused it as expired.
type Presigner func(ctx context.Context, p *bundle.Part, fresh bool) (*Request, error)

// Retry is the retry policy of one part: up to Attempts tries, sleeping a random
// duration in [0, min(MaxDelay, BaseDelay*2^n)) before try n+1 ("full jitter", so that
// parallel uploads hit by the same throttling spread out).
type Retry struct {
	Attempts  int
	BaseDelay time.Duration
	MaxDelay  time.Duration
}

// DefaultRetry survives S3's ordinary throttling and brief outages: 10 tries spread
// over about a minute and a half.
var DefaultRetry = Retry{Attempts: 10, BaseDelay: 500 * time.Millisecond, MaxDelay: 20 * time.Second}

func (r Retry) delay(attempt int) time.Duration {
	d := r.BaseDelay << min(attempt, 20)
	if d <= 0 || d > r.MaxDelay {
		d = r.MaxDelay
	}
	if d <= 0 {
		return 0
	}
	return rand.N(d)
}

// Config configures a Sink.
type Config struct {
	Presign Presigner
	// Client does the PUTs; nil uses a client made for long uploads (see NewClient).
	Client *http.Client
	// Concurrency is how many parts are uploaded at once (default 4). It is also the
	// memory bound of the sink: Concurrency parts of at most 10 MiB each.
	Concurrency int
	Retry       Retry // zero value: DefaultRetry
	// StallTimeout aborts and retries an attempt that made no progress (no request
	// byte sent, or no response after the body was sent) for this long. Default 60s.
	StallTimeout time.Duration
	// Uploaded is called (from the upload goroutines) when a part is stored.
	Uploaded func(p *bundle.Part)
	// Retrying is called before an attempt is retried, with the reason. The error
	// never contains the URL.
	Retrying func(p *bundle.Part, attempt int, err error)
}

// Sink is a bundle.Sink that uploads each part to its presigned URL. PutPart returns
// as soon as the part is handed to an upload goroutine; it blocks while Concurrency
// parts are in flight.
type Sink struct {
	cfg    Config
	ctx    context.Context
	cancel context.CancelFunc
	sem    chan struct{}
	wg     sync.WaitGroup

	mu  sync.Mutex
	err error

	uploadedBytes atomic.Int64
	uploadedParts atomic.Int64
}

// NewSink returns a sink whose uploads stop when ctx is cancelled.
func NewSink(ctx context.Context, cfg Config) *Sink {
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = 4
	}
	if cfg.Retry.Attempts <= 0 {
		cfg.Retry = DefaultRetry
	}
	if cfg.StallTimeout <= 0 {
		cfg.StallTimeout = 60 * time.Second
	}
	if cfg.Client == nil {
		cfg.Client = NewClient(cfg.StallTimeout)
	}
	ctx, cancel := context.WithCancel(ctx)
	return &Sink{cfg: cfg, ctx: ctx, cancel: cancel, sem: make(chan struct{}, cfg.Concurrency)}
}

// NewClient returns an HTTP client for part uploads: proxies from the environment,
// no overall timeout (a part may take long on a slow link; stalls are detected per
// attempt instead), and a response-header timeout of stall.
func NewClient(stall time.Duration) *http.Client {
	tr := &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           (&net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		TLSHandshakeTimeout:   30 * time.Second,
		ResponseHeaderTimeout: stall,
		ExpectContinueTimeout: 0,
		MaxIdleConnsPerHost:   32,
		IdleConnTimeout:       90 * time.Second,
		ForceAttemptHTTP2:     true,
	}
	return &http.Client{Transport: tr}
}

// PutPart implements bundle.Sink.
func (s *Sink) PutPart(p *bundle.Part) error {
	if err := s.Err(); err != nil {
		return err
	}
	select {
	case s.sem <- struct{}{}:
	case <-s.ctx.Done():
		if err := s.Err(); err != nil {
			return err
		}
		return s.ctx.Err()
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		defer func() { <-s.sem }()
		if err := s.upload(p); err != nil {
			s.fail(fmt.Errorf("uploading part %s: %w", p.Name, err))
			return
		}
		s.uploadedBytes.Add(int64(len(p.Data)))
		s.uploadedParts.Add(1)
		if s.cfg.Uploaded != nil {
			s.cfg.Uploaded(p)
		}
	}()
	return nil
}

// Close waits for the uploads in flight and returns the first error.
func (s *Sink) Close() error {
	s.wg.Wait()
	err := s.Err()
	if err == nil && s.ctx.Err() != nil {
		err = s.ctx.Err()
	}
	s.cancel()
	return err
}

// Abort stops every upload in flight.
func (s *Sink) Abort() { s.cancel() }

// Err is the first upload error, if any.
func (s *Sink) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

// Uploaded returns the bytes and parts stored so far.
func (s *Sink) Uploaded() (bytes int64, parts int) {
	return s.uploadedBytes.Load(), int(s.uploadedParts.Load())
}

func (s *Sink) fail(err error) {
	s.mu.Lock()
	if s.err == nil {
		s.err = err
	}
	s.mu.Unlock()
	s.cancel() // one part failing for good fails the bundle: stop the others
}

// upload PUTs one part, retrying what S3 and networks do transiently. Each URL, each
// failed attempt and each wait goes to the log (PACKER_LOG=1 on the host shows the
// agent's log), without the URL's signature.
func (s *Sink) upload(p *bundle.Part) error {
	var req *Request
	fresh := false
	for attempt := 0; ; attempt++ {
		if req == nil || req.expiredSoon(time.Now()) {
			if req != nil {
				log.Printf("[INFO] presigned: part %s: the upload URL expires at %s, asking for a new one", p.Name, req.Expires.UTC().Format(time.RFC3339))
			}
			var err error
			req, err = s.cfg.Presign(s.ctx, p, fresh)
			if err != nil {
				log.Printf("[ERROR] presigned: part %s: getting an upload URL failed: %v", p.Name, err)
				return fmt.Errorf("getting upload URL: %w", err)
			}
			log.Printf("[DEBUG] presigned: part %s (%d bytes): upload URL %s", p.Name, len(p.Data), Describe(req))
			fresh = false
		}
		err := s.put(req, p)
		if err == nil {
			if attempt > 0 {
				log.Printf("[INFO] presigned: part %s stored at attempt %d", p.Name, attempt+1)
			}
			return nil
		}
		if s.ctx.Err() != nil {
			return s.ctx.Err()
		}
		var se *StatusError
		if errors.As(err, &se) && se.Expired() {
			log.Printf("[INFO] presigned: part %s: attempt %d: the URL expired (%v); asking for a new one", p.Name, attempt+1, err)
			req, fresh = nil, true // ask for a new URL, not counted as a failure of S3
		} else if !Retryable(err) {
			log.Printf("[ERROR] presigned: part %s: attempt %d failed, not retried (%s): %v", p.Name, attempt+1, notRetriedWhy(err), err)
			return err
		}
		if attempt+1 >= s.cfg.Retry.Attempts {
			log.Printf("[ERROR] presigned: part %s: attempt %d of %d failed, giving up: %v", p.Name, attempt+1, s.cfg.Retry.Attempts, err)
			return fmt.Errorf("giving up after %d attempts: %w", attempt+1, err)
		}
		if s.cfg.Retrying != nil {
			s.cfg.Retrying(p, attempt+1, err)
		}
		d := s.cfg.Retry.delay(attempt)
		log.Printf("[WARN] presigned: part %s: attempt %d of %d failed (%s): %v; retrying in %s", p.Name, attempt+1, s.cfg.Retry.Attempts, failureKind(err), err, d.Round(time.Millisecond))
		t := time.NewTimer(d)
		select {
		case <-t.C:
		case <-s.ctx.Done():
			t.Stop()
			return s.ctx.Err()
		}
	}
}

// failureKind names the class of a failed attempt for the log: the HTTP status, or
// the network.
func failureKind(err error) string {
	var se *StatusError
	if errors.As(err, &se) {
		return fmt.Sprintf("status %d", se.Status)
	}
	return "network"
}

func notRetriedWhy(err error) string {
	var se *StatusError
	if errors.As(err, &se) {
		return fmt.Sprintf("status %d is not transient", se.Status)
	}
	return "not a transient error"
}

// Describe tells how a presigned request was made, for logs: method-less target
// (host and path), expiry, signing date, region and service, the signed query
// parameters' algorithm and the signed headers. It never includes the signature,
// the access key id or a session token, which are the URL's secrets.
func Describe(r *Request) string {
	u, err := url.Parse(r.URL)
	if err != nil {
		return "(malformed URL)"
	}
	q := u.Query()
	var b strings.Builder
	fmt.Fprintf(&b, "for %s%s", u.Host, u.EscapedPath())
	if !r.Expires.IsZero() {
		fmt.Fprintf(&b, ", expires %s (in %s)", r.Expires.UTC().Format(time.RFC3339), time.Until(r.Expires).Round(time.Second))
	}
	if v := q.Get("X-Amz-Expires"); v != "" {
		fmt.Fprintf(&b, ", X-Amz-Expires %ss", v)
	}
	if v := q.Get("X-Amz-Date"); v != "" {
		fmt.Fprintf(&b, ", signed at %s", v)
	}
	if v := q.Get("X-Amz-Credential"); v != "" {
		// access-key-id/date/region/service/aws4_request: keep the scope only.
		if parts := strings.Split(v, "/"); len(parts) == 5 {
			fmt.Fprintf(&b, " for %s/%s", parts[2], parts[3])
		}
	}
	if v := q.Get("X-Amz-Algorithm"); v != "" {
		fmt.Fprintf(&b, " with %s", v)
	}
	if v := q.Get("X-Amz-SignedHeaders"); v != "" {
		fmt.Fprintf(&b, ", signed headers %s", v)
	}
	if len(r.Header) > 0 {
		var names []string
		for k := range r.Header {
			names = append(names, strings.ToLower(k))
		}
		sort.Strings(names)
		fmt.Fprintf(&b, ", headers sent %s", strings.Join(names, ","))
	}
	if q.Get("X-Amz-Security-Token") != "" {
		b.WriteString(", with a session token")
	}
	return b.String()
}

// errStalled is the cause of an attempt aborted by the stall watchdog.
var errStalled = errors.New("upload stalled")

// put does one attempt. Errors never carry the URL: net/http's *url.Error does, so it
// is unwrapped here.
func (s *Sink) put(r *Request, p *bundle.Part) error {
	ctx, cancel := context.WithCancelCause(s.ctx)
	defer cancel(nil)
	body := &watchedReader{r: bytes.NewReader(p.Data)}
	body.touch()
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPut, r.URL, body)
	if err != nil {
		return errors.New("malformed upload URL")
	}
	hreq.ContentLength = int64(len(p.Data))
	hreq.GetBody = func() (io.ReadCloser, error) {
		return io.NopCloser(&watchedReader{r: bytes.NewReader(p.Data), shared: &body.last}), nil
	}
	for k, vs := range r.Header {
		if strings.EqualFold(k, "Host") {
			continue
		}
		for _, v := range vs {
			hreq.Header.Add(k, v)
		}
	}
	if hreq.Header.Get("Content-MD5") == "" {
		sum := md5.Sum(p.Data)
		hreq.Header.Set("Content-MD5", base64.StdEncoding.EncodeToString(sum[:]))
	}

	// The watchdog aborts an attempt whose body stopped moving; once the body is sent,
	// the transport's ResponseHeaderTimeout takes over.
	done := make(chan struct{})
	defer close(done)
	go func() {
		tick := time.NewTicker(min(s.cfg.StallTimeout/4, time.Second))
		defer tick.Stop()
		for {
			select {
			case <-done:
				return
			case <-tick.C:
				if body.eof.Load() {
					return
				}
				if time.Since(time.Unix(0, body.clock().Load())) > s.cfg.StallTimeout {
					cancel(errStalled)
					return
				}
			}
		}
	}()

	resp, err := s.cfg.Client.Do(hreq)
	if err != nil {
		if c := context.Cause(ctx); errors.Is(c, errStalled) {
			return &NetError{Err: fmt.Errorf("no progress for %s", s.cfg.StallTimeout)}
		}
		if s.ctx.Err() != nil {
			return s.ctx.Err()
		}
		return &NetError{Err: stripURL(err)}
	}
	defer resp.Body.Close()
	b, rerr := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode/100 == 2 {
		if rerr != nil {
			// The part may be stored; a retry with the same MD5 is harmless.
			return &NetError{Err: fmt.Errorf("reading response: %w", stripURL(rerr))}
		}
		return nil
	}
	return newStatusError(resp.StatusCode, b)
}

// watchedReader records when the transport last took bytes from the body.
type watchedReader struct {
	r    io.Reader
	last atomic.Int64
	eof  atomic.Bool
	// shared points at the first attempt's clock when the transport re-reads the body.
	shared *atomic.Int64
}

func (w *watchedReader) clock() *atomic.Int64 {
	if w.shared != nil {
		return w.shared
	}
	return &w.last
}

func (w *watchedReader) touch() { w.clock().Store(time.Now().UnixNano()) }

func (w *watchedReader) Read(p []byte) (int, error) {
	n, err := w.r.Read(p)
	w.touch()
	if err == io.EOF {
		w.eof.Store(true)
	}
	return n, err
}

// NetError is a transport failure (reset, timeout, stall): always retried.
type NetError struct{ Err error }

func (e *NetError) Error() string { return "network: " + e.Err.Error() }
func (e *NetError) Unwrap() error { return e.Err }

// StatusError is a non-2xx answer from S3, with S3's error code and message.
type StatusError struct {
	Status  int
	Code    string
	Message string
}

func newStatusError(status int, body []byte) *StatusError {
	var e struct {
		Code    string
		Message string
	}
	_ = xml.Unmarshal(body, &e)
	return &StatusError{Status: status, Code: e.Code, Message: e.Message}
}

func (e *StatusError) Error() string {
	s := fmt.Sprintf("S3 answered %d %s", e.Status, http.StatusText(e.Status))
	if e.Code != "" {
		s += ": " + e.Code
	}
	if e.Message != "" {
		s += ": " + e.Message
	}
	return s
}

// Expired reports whether S3 refused the URL because its signature expired.
func (e *StatusError) Expired() bool {
	return e.Status == http.StatusForbidden && (e.Code == "ExpiredToken" ||
		strings.Contains(strings.ToLower(e.Message), "expired"))
}

// Retryable reports whether err is worth another attempt: network failures, 5xx,
// throttling (429, SlowDown), request timeouts and corrupted bodies (BadDigest).
func Retryable(err error) bool {
	var ne *NetError
	if errors.As(err, &ne) {
		return true
	}
	var se *StatusError
	if !errors.As(err, &se) {
		return false
	}
	switch {
	case se.Status >= 500:
		return true
	case se.Status == http.StatusTooManyRequests, se.Status == http.StatusRequestTimeout:
		return true
	}
	switch se.Code {
	case "SlowDown", "RequestTimeout", "BadDigest", "RequestTimeTooSkewed", "InternalError", "ServiceUnavailable", "Throttling", "ThrottlingException":
		return true
	}
	return false
}

// stripURL removes the URL (a secret) that net/http puts in its errors.
func stripURL(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return fmt.Errorf("%s: %w", ue.Op, ue.Err)
	}
	return err
}
