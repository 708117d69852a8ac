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
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
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

// upload PUTs one part, retrying what S3 and networks do transiently.
func (s *Sink) upload(p *bundle.Part) error {
	var req *Request
	fresh := false
	for attempt := 0; ; attempt++ {
		if req == nil || req.expiredSoon(time.Now()) {
			var err error
			req, err = s.cfg.Presign(s.ctx, p, fresh)
			if err != nil {
				return fmt.Errorf("getting upload URL: %w", err)
			}
			fresh = false
		}
		err := s.put(req, p)
		if err == nil {
			return nil
		}
		if s.ctx.Err() != nil {
			return s.ctx.Err()
		}
		var se *StatusError
		if errors.As(err, &se) && se.Expired() {
			req, fresh = nil, true // ask for a new URL, not counted as a failure of S3
		} else if !Retryable(err) {
			return err
		}
		if attempt+1 >= s.cfg.Retry.Attempts {
			return fmt.Errorf("giving up after %d attempts: %w", attempt+1, err)
		}
		if s.cfg.Retrying != nil {
			s.cfg.Retrying(p, attempt+1, err)
		}
		t := time.NewTimer(s.cfg.Retry.delay(attempt))
		select {
		case <-t.C:
		case <-s.ctx.Done():
			t.Stop()
			return s.ctx.Err()
		}
	}
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
