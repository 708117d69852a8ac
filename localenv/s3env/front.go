package s3env

import (
	"bytes"
	"context"
	"encoding/xml"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"regexp"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/s3"
)

// FrontOptions configure a Front.
type FrontOptions struct {
	// Listen is the address to listen on: "127.0.0.1:0" when empty. When instances
	// must reach S3 from their network namespaces, listen on instance.ServiceAddr()
	// (reachable from the host and every instance, so one endpoint URL serves both)
	// or on one instance's HostAddr().
	Listen string
	// Faults makes the Front fail a fraction of requests.
	Faults Faults
	// DefaultObjectOwnership is the Object Ownership of buckets created without an
	// x-amz-object-ownership header (and of buckets the Front did not see created).
	// S3's own default since 2023 is "BucketOwnerEnforced" (ACLs disabled: PUTs with
	// an ACL other than bucket-owner-full-control fail with AccessControlListNotSupported);
	// empty means "ObjectWriter" (ACLs enabled), which is lenient for tests that do
	// not care.
	DefaultObjectOwnership string
}

// Front is a reverse proxy in front of a Backend that records what S3 keeps and the
// backends do not: the canned ACL of each object (x-amz-acl of PutObject, CopyObject,
// CreateMultipartUpload and PutObjectAcl; "private" when absent), the region of each
// bucket (CreateBucket's LocationConstraint) and every object deleted. It answers
// GetBucketLocation and HeadBucket with the recorded region and rejects requests
// signed for another region than the bucket's, as S3 does. Signatures are checked by
// the backend (MinIO): the Front forwards requests unchanged, Host header included.
type Front struct {
	backend *Backend
	ln      net.Listener
	srv     *http.Server
	proxy   *httputil.ReverseProxy
	faults  *faulter
	closing chan struct{}

	defaultOwnership string

	mu       sync.Mutex
	acls     map[string]string // bucket + "/" + key -> canned ACL
	regions  map[string]string // bucket -> region
	owners   map[string]string // bucket -> Object Ownership
	deleted  []string          // bucket/key, in order
	requests []Request
}

// Request is one request the Front saw, for test assertions. Query values that are
// secrets (signatures, credentials, tokens) are redacted.
type Request struct {
	Method, Bucket, Key, Query string
	Status                     int       // 0 when the connection was reset or stalled
	Fault                      FaultKind // "" when forwarded
}

// NewFront starts a Front for b.
func NewFront(b *Backend, opts FrontOptions) (*Front, error) {
	target, err := url.Parse(b.URL)
	if err != nil {
		return nil, fmt.Errorf("backend URL %q: %w", b.URL, err)
	}
	listen := opts.Listen
	if listen == "" {
		listen = "127.0.0.1:0"
	}
	if host, _, err := net.SplitHostPort(listen); err != nil || host == "" || net.ParseIP(host).IsUnspecified() {
		return nil, fmt.Errorf("S3 front: listen address %q must name a loopback or namespace address (never all interfaces)", listen)
	}
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return nil, fmt.Errorf("S3 front: %w", err)
	}
	f := &Front{
		backend: b,
		ln:      ln,
		faults:  newFaulter(opts.Faults),
		closing: make(chan struct{}),
		acls:    map[string]string{},
		regions: map[string]string{},
		owners:  map[string]string{},

		defaultOwnership: opts.DefaultObjectOwnership,
	}
	if f.defaultOwnership == "" {
		f.defaultOwnership = "ObjectWriter"
	}
	f.proxy = &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(target)
			// SigV4 signs the Host header: the backend must see the client's.
			pr.Out.Host = pr.In.Host
		},
		ModifyResponse: f.modifyResponse,
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			writeS3Error(w, http.StatusBadGateway, "InternalError", "S3 front: backend: "+err.Error(), nil)
		},
		FlushInterval: -1,
	}
	f.srv = &http.Server{Handler: f, ReadHeaderTimeout: 30 * time.Second}
	go f.srv.Serve(ln)
	return f, nil
}

// URL is the Front's endpoint, "http://ADDR:PORT".
func (f *Front) URL() string { return "http://" + f.ln.Addr().String() }

// Backend is the server behind the Front.
func (f *Front) Backend() *Backend { return f.backend }

// Client returns an aws-sdk-go-v2 S3 client for the Front with the backend's
// credentials, signing for region.
func (f *Front) Client(region string) *s3.Client {
	return NewClient(f.URL(), f.backend.Credentials, region)
}

// Close stops the Front (not the backend), ending stalled requests.
func (f *Front) Close() error {
	select {
	case <-f.closing:
		return nil
	default:
		close(f.closing)
	}
	return f.srv.Close()
}

// ACL returns the canned ACL recorded for an object, and whether the object is known.
func (f *Front) ACL(bucket, key string) (string, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	acl, ok := f.acls[bucket+"/"+key]
	return acl, ok
}

// BucketRegion returns the region recorded when the bucket was created through the
// Front.
func (f *Front) BucketRegion(bucket string) (string, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	r, ok := f.regions[bucket]
	return r, ok
}

// SetBucketRegion records a bucket's region, for buckets made behind the Front's back.
func (f *Front) SetBucketRegion(bucket, region string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.regions[bucket] = region
}

// ObjectOwnership returns a bucket's Object Ownership setting (ObjectWriter,
// BucketOwnerPreferred or BucketOwnerEnforced).
func (f *Front) ObjectOwnership(bucket string) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.ownershipLocked(bucket)
}

func (f *Front) ownershipLocked(bucket string) string {
	if o, ok := f.owners[bucket]; ok {
		return o
	}
	return f.defaultOwnership
}

// SetObjectOwnership sets a bucket's Object Ownership, as PutBucketOwnershipControls
// would.
func (f *Front) SetObjectOwnership(bucket, ownership string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.owners[bucket] = ownership
}

// Deleted lists the objects deleted through the Front ("bucket/key"), in order.
func (f *Front) Deleted() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.deleted...)
}

// Objects lists the keys under prefix in bucket, straight from the backend.
func (f *Front) Objects(ctx context.Context, bucket, prefix string) ([]string, error) {
	client := f.backend.Client(f.regionOf(bucket))
	var keys []string
	p := s3.NewListObjectsV2Paginator(client, &s3.ListObjectsV2Input{Bucket: &bucket, Prefix: &prefix})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return nil, fmt.Errorf("listing s3://%s/%s: %w", bucket, prefix, err)
		}
		for _, o := range page.Contents {
			keys = append(keys, *o.Key)
		}
	}
	sort.Strings(keys)
	return keys, nil
}

// Requests returns every request the Front has seen.
func (f *Front) Requests() []Request {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]Request(nil), f.requests...)
}

func (f *Front) regionOf(bucket string) string {
	if r, ok := f.BucketRegion(bucket); ok {
		return r
	}
	return f.backend.Region
}

// op is what the Front learned about a request before forwarding it.
type op struct {
	kind     string // CreateBucket, PutObject, DeleteObjects, ... ("" for the rest)
	bucket   string
	key      string
	acl      string
	region   string   // CreateBucket's LocationConstraint
	owner    string   // CreateBucket's x-amz-object-ownership, PutBucketOwnershipControls' rule
	delKeys  []string // DeleteObjects' keys
	recIndex int
}

type opKey struct{}

func (f *Front) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	o := classify(r)
	f.mu.Lock()
	o.recIndex = len(f.requests)
	f.requests = append(f.requests, Request{Method: r.Method, Bucket: o.bucket, Key: o.key, Query: redactQuery(r.URL.Query())})
	f.mu.Unlock()

	if kind, ok := f.faults.pick(r); ok {
		f.setFault(o.recIndex, kind)
		f.setStatus(o.recIndex, f.inject(w, r, kind))
		return
	}
	if err := readBodyFor(r, o); err != nil {
		writeS3Error(w, http.StatusBadRequest, "MalformedXML", err.Error(), nil)
		f.setStatus(o.recIndex, http.StatusBadRequest)
		return
	}
	if want, ok := f.BucketRegion(o.bucket); ok && o.kind != "CreateBucket" {
		if got := signedRegion(r); got != "" && got != want {
			h := http.Header{"X-Amz-Bucket-Region": {want}}
			writeS3Error(w, http.StatusBadRequest, "AuthorizationHeaderMalformed",
				fmt.Sprintf("The authorization header is malformed; the region '%s' is wrong; expecting '%s'", got, want), h)
			f.setStatus(o.recIndex, http.StatusBadRequest)
			return
		}
	}
	if o.acl != "" && o.acl != "bucket-owner-full-control" && f.ObjectOwnership(o.bucket) == "BucketOwnerEnforced" {
		writeS3Error(w, http.StatusBadRequest, "AccessControlListNotSupported", "The bucket does not allow ACLs", nil)
		f.setStatus(o.recIndex, http.StatusBadRequest)
		return
	}
	f.proxy.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), opKey{}, o)))
}

func (f *Front) setFault(i int, k FaultKind) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.requests[i].Fault = k
}

func (f *Front) setStatus(i int, status int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.requests[i].Status = status
}

// modifyResponse records what a successful request changed, and gives bucket
// location answers the recorded region.
func (f *Front) modifyResponse(resp *http.Response) error {
	o, _ := resp.Request.Context().Value(opKey{}).(*op)
	if o == nil {
		return nil
	}
	if o.kind == "GetBucketOwnershipControls" || o.kind == "PutBucketOwnershipControls" {
		// Neither backend keeps Object Ownership: the Front answers, once the backend
		// has had its say on the signature (403 stands).
		return f.answerOwnership(resp, o)
	}
	f.setStatus(o.recIndex, resp.StatusCode)
	if resp.StatusCode/100 != 2 {
		return nil
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	switch o.kind {
	case "CreateBucket":
		f.regions[o.bucket] = o.region
		if o.owner != "" {
			f.owners[o.bucket] = o.owner
		} else {
			delete(f.owners, o.bucket)
		}
	case "DeleteBucket":
		delete(f.regions, o.bucket)
		delete(f.owners, o.bucket)
	case "PutObject", "CreateMultipartUpload", "PutObjectAcl":
		f.acls[o.bucket+"/"+o.key] = o.acl
	case "DeleteObject":
		delete(f.acls, o.bucket+"/"+o.key)
		f.deleted = append(f.deleted, o.bucket+"/"+o.key)
	case "DeleteObjects":
		body, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
		resp.Body.Close()
		resp.Body = io.NopCloser(bytes.NewReader(body))
		if err != nil {
			return err
		}
		// Quiet mode lists only failures: the deleted keys are the requested ones
		// without those.
		var result struct {
			Error []struct{ Key string } `xml:"Error"`
		}
		if err := xml.Unmarshal(body, &result); err != nil {
			return fmt.Errorf("S3 front: DeleteObjects response: %w", err)
		}
		failed := map[string]bool{}
		for _, e := range result.Error {
			failed[e.Key] = true
		}
		for _, k := range o.delKeys {
			if !failed[k] {
				delete(f.acls, o.bucket+"/"+k)
				f.deleted = append(f.deleted, o.bucket+"/"+k)
			}
		}
	case "GetBucketLocation":
		if region, ok := f.regions[o.bucket]; ok {
			if region == "us-east-1" {
				region = "" // S3 answers an empty constraint for us-east-1
			}
			body := []byte(xml.Header + `<LocationConstraint xmlns="http://s3.amazonaws.com/doc/2006-03-01/">` + region + `</LocationConstraint>`)
			resp.Body.Close()
			resp.Body = io.NopCloser(bytes.NewReader(body))
			resp.ContentLength = int64(len(body))
			resp.Header.Set("Content-Length", fmt.Sprint(len(body)))
		}
	case "HeadBucket":
		if region, ok := f.regions[o.bucket]; ok {
			resp.Header.Set("X-Amz-Bucket-Region", region)
		}
	}
	return nil
}

// classify names the S3 operation of a path-style request.
func classify(r *http.Request) *op {
	path := strings.TrimPrefix(r.URL.Path, "/")
	bucket, key, _ := strings.Cut(path, "/")
	o := &op{bucket: bucket, key: key}
	q := r.URL.Query()
	has := func(name string) bool { _, ok := q[name]; return ok }
	acl := r.Header.Get("X-Amz-Acl")
	if acl == "" {
		acl = q.Get("x-amz-acl")
	}
	switch {
	case bucket == "":
	case key == "":
		switch {
		case r.Method == http.MethodPut && len(q) == 0:
			o.kind = "CreateBucket"
			o.owner = r.Header.Get("X-Amz-Object-Ownership")
		case r.Method == http.MethodGet && has("ownershipControls"):
			o.kind = "GetBucketOwnershipControls"
		case r.Method == http.MethodPut && has("ownershipControls"):
			o.kind = "PutBucketOwnershipControls"
		case r.Method == http.MethodDelete && len(q) == 0:
			o.kind = "DeleteBucket"
		case r.Method == http.MethodGet && has("location"):
			o.kind = "GetBucketLocation"
		case r.Method == http.MethodHead:
			o.kind = "HeadBucket"
		case r.Method == http.MethodPost && has("delete"):
			o.kind = "DeleteObjects"
		}
	case r.Method == http.MethodPut && has("acl"):
		o.kind = "PutObjectAcl"
		o.acl = acl
		if o.acl == "" {
			o.acl = "custom" // an AccessControlPolicy body or x-amz-grant-* headers
		}
	case r.Method == http.MethodPut && (has("uploadId") || has("partNumber")):
		o.kind = "UploadPart"
	case r.Method == http.MethodPut && onlySigningParams(q):
		o.kind = "PutObject" // and CopyObject: a copy gets the ACL of its own request
		o.acl = acl
	case r.Method == http.MethodPost && has("uploads"):
		o.kind = "CreateMultipartUpload"
		o.acl = acl
	case r.Method == http.MethodDelete && !has("uploadId"):
		o.kind = "DeleteObject"
	}
	if (o.kind == "PutObject" || o.kind == "CreateMultipartUpload") && o.acl == "" {
		o.acl = "private"
	}
	return o
}

// onlySigningParams reports whether a query holds nothing but presigned-URL
// parameters (a presigned PutObject).
func onlySigningParams(q url.Values) bool {
	for k := range q {
		if !strings.HasPrefix(strings.ToLower(k), "x-amz-") && !strings.EqualFold(k, "x-id") {
			return false
		}
	}
	return true
}

// readBodyFor reads the bodies the Front must understand (small XML documents) and
// puts them back for the backend.
func readBodyFor(r *http.Request, o *op) error {
	if o.kind != "CreateBucket" && o.kind != "DeleteObjects" && o.kind != "PutBucketOwnershipControls" {
		return nil
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, 16<<20))
	if err != nil {
		return err
	}
	r.Body.Close()
	r.Body = io.NopCloser(bytes.NewReader(body))
	switch o.kind {
	case "CreateBucket":
		o.region = "us-east-1"
		if len(bytes.TrimSpace(body)) > 0 {
			var c struct{ LocationConstraint string }
			if err := xml.Unmarshal(body, &c); err != nil {
				return fmt.Errorf("CreateBucketConfiguration: %w", err)
			}
			if c.LocationConstraint != "" {
				o.region = c.LocationConstraint
			}
		}
	case "PutBucketOwnershipControls":
		var c struct {
			Rule []struct{ ObjectOwnership string }
		}
		if err := xml.Unmarshal(body, &c); err != nil || len(c.Rule) != 1 || c.Rule[0].ObjectOwnership == "" {
			return fmt.Errorf("OwnershipControls: want one Rule with an ObjectOwnership (%v)", err)
		}
		o.owner = c.Rule[0].ObjectOwnership
	case "DeleteObjects":
		var d struct {
			Object []struct{ Key string }
		}
		if err := xml.Unmarshal(body, &d); err != nil {
			return fmt.Errorf("DeleteObjects body: %w", err)
		}
		for _, obj := range d.Object {
			o.delKeys = append(o.delKeys, obj.Key)
		}
	}
	return nil
}

var credentialScope = regexp.MustCompile(`Credential=[^/,\s]+/\d{8}/([^/,\s]+)/s3/aws4_request`)

// signedRegion returns the region of a request's SigV4 credential scope ("" when the
// request is not SigV4-signed).
func signedRegion(r *http.Request) string {
	if m := credentialScope.FindStringSubmatch(r.Header.Get("Authorization")); m != nil {
		return m[1]
	}
	if c := r.URL.Query().Get("X-Amz-Credential"); c != "" {
		parts := strings.Split(c, "/")
		if len(parts) == 5 {
			return parts[2]
		}
	}
	return ""
}

// redactQuery renders a query with the values of secret parameters replaced.
func redactQuery(q url.Values) string {
	red := url.Values{}
	for k, vs := range q {
		switch strings.ToLower(k) {
		case "x-amz-signature", "x-amz-credential", "x-amz-security-token":
			red[k] = []string{"REDACTED"}
		default:
			red[k] = vs
		}
	}
	return red.Encode()
}

// S3Error is an error answer in S3's format.
type S3Error struct {
	StatusCode int
	Code       string
	Message    string
}

func (e *S3Error) Error() string {
	return fmt.Sprintf("S3 %d %s: %s", e.StatusCode, e.Code, e.Message)
}

func writeS3Error(w http.ResponseWriter, status int, code, msg string, h http.Header) {
	for k, vs := range h {
		w.Header()[k] = vs
	}
	w.Header().Set("Content-Type", "application/xml")
	w.WriteHeader(status)
	var b bytes.Buffer
	b.WriteString(xml.Header + "<Error><Code>")
	xml.EscapeText(&b, []byte(code))
	b.WriteString("</Code><Message>")
	xml.EscapeText(&b, []byte(msg))
	b.WriteString("</Message><RequestId>s3env</RequestId></Error>")
	w.Write(b.Bytes())
}

// parseS3Error reads an S3 error body.
func parseS3Error(status int, body []byte) *S3Error {
	var e struct{ Code, Message string }
	if xml.Unmarshal(body, &e) != nil || e.Code == "" {
		e.Code = http.StatusText(status)
	}
	return &S3Error{StatusCode: status, Code: e.Code, Message: e.Message}
}

// answerOwnership replaces the backend's answer to Get/PutBucketOwnershipControls
// with S3's, unless the backend refused the request (signature, missing bucket).
func (f *Front) answerOwnership(resp *http.Response, o *op) error {
	if resp.StatusCode/100 != 2 {
		// Neither backend implements the API. Where the backend checked the request
		// first, its refusal stands; MinIO answers GET with NotImplemented before any
		// signature check, so the Front's answer to that is unauthenticated.
		body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		resp.Body.Close()
		resp.Body = io.NopCloser(bytes.NewReader(body))
		if err != nil {
			return err
		}
		switch parseS3Error(resp.StatusCode, body).Code {
		case "AccessDenied", "SignatureDoesNotMatch", "InvalidAccessKeyId", "AuthorizationHeaderMalformed",
			"RequestTimeTooSkewed", "ExpiredToken", "InvalidToken", "NoSuchBucket":
			f.setStatus(o.recIndex, resp.StatusCode)
			return nil
		}
	}
	f.mu.Lock()
	var body string
	if o.kind == "PutBucketOwnershipControls" {
		f.owners[o.bucket] = o.owner
	} else {
		body = xml.Header + `<OwnershipControls xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Rule><ObjectOwnership>` +
			f.ownershipLocked(o.bucket) + `</ObjectOwnership></Rule></OwnershipControls>`
	}
	f.mu.Unlock()
	resp.Body.Close()
	resp.StatusCode, resp.Status = http.StatusOK, "200 OK"
	resp.Body = io.NopCloser(strings.NewReader(body))
	resp.ContentLength = int64(len(body))
	resp.Header = http.Header{"Content-Length": {fmt.Sprint(len(body))}}
	if body != "" {
		resp.Header.Set("Content-Type", "application/xml")
	}
	f.setStatus(o.recIndex, http.StatusOK)
	return nil
}
