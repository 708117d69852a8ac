// Package ec2sim is a local EC2 (and STS) endpoint speaking EC2's Query protocol with
// SigV4 checked, for tests and the local demo environment. It keeps EC2's rules where
// the plugin could get them wrong (AMI names, ids, instance-store root devices only on
// previous-generation types, virtualization types, block device names), registers
// instance-store AMIs the way EC2 does (reads the manifest and parts from S3 as the EC2
// principal, decrypts with its own "EC2" key, checks every digest) and really runs the
// instances it launches through a Launcher.
package ec2sim

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// EC2Namespace is the XML namespace of EC2 API version 2016-11-15.
const EC2Namespace = "http://ec2.amazonaws.com/doc/2016-11-15/"

// STSNamespace is the XML namespace of STS API version 2011-06-15.
const STSNamespace = "https://sts.amazonaws.com/doc/2011-06-15/"

// Config configures a simulator.
type Config struct {
	// Region is the simulator's home region (default us-east-1): where seeded AMIs live
	// and the region whose buckets instance-store registration accepts by default.
	Region string
	// AccountID is the caller's 12-digit account (default 123456789012).
	AccountID string
	// Credentials are the only ones accepted (SigV4-checked).
	Credentials Credentials
	// DataDir holds unbundled AMI images, the EC2 key and certificate. Required.
	DataDir string
	// EC2CertPath/EC2KeyPath name an existing "EC2" certificate and RSA key (PEM). When
	// empty, a self-signed pair is generated into DataDir at startup.
	EC2CertPath, EC2KeyPath string
	// S3 is how RegisterImage reads bundles as the EC2 principal. Without it,
	// instance-store RegisterImage answers an error.
	S3 ObjectReader
	// Launcher runs instances. Without it, RunInstances answers Unsupported.
	Launcher Launcher
	// LaunchTimeout bounds one instance's Launch (pending until sshd answers); default
	// 3 minutes. Machines that boot under TCG on a busy host need more.
	LaunchTimeout time.Duration
	// Logf receives one line per request and per instance transition (no secrets).
	Logf func(format string, args ...any)
	// PendingTime is how long a registered or copied AMI stays pending before it is
	// available (default 1s; negative: available at once).
	PendingTime time.Duration
	// Faults fails a share of EC2 calls with RequestLimitExceeded or Unavailable. When
	// unset, New reads FaultsEnv (INSTANCESTORE_EC2_FAULTS). SetFaults changes it.
	Faults Faults
	// Now is the clock (tests); default time.Now.
	Now func() time.Time
}

// Server is a running simulator.
type Server struct {
	cfg     Config
	ec2Key  *ec2Identity
	st      *state
	httpSrv *http.Server
	ln      net.Listener
	wg      sync.WaitGroup // instance goroutines
	ctx     context.Context
	cancel  context.CancelFunc
	faults  faulter

	keyFileOnce sync.Once // the EC2 key as a file, for openssl
	keyFile     string
	keyFileErr  error
}

// New prepares a simulator (EC2 identity, seeded state) without listening.
func New(cfg Config) (*Server, error) {
	if cfg.Region == "" {
		cfg.Region = "us-east-1"
	}
	if !knownRegion(cfg.Region) {
		return nil, fmt.Errorf("ec2sim: region %q is not one the simulator knows (see DescribeRegions)", cfg.Region)
	}
	if cfg.AccountID == "" {
		cfg.AccountID = "123456789012"
	}
	if len(cfg.AccountID) != 12 || strings.Trim(cfg.AccountID, "0123456789") != "" {
		return nil, fmt.Errorf("ec2sim: AccountID %q must be 12 digits", cfg.AccountID)
	}
	if cfg.Credentials.AccessKeyID == "" || cfg.Credentials.SecretAccessKey == "" {
		return nil, errors.New("ec2sim: Credentials.AccessKeyID and SecretAccessKey are required")
	}
	if cfg.DataDir == "" {
		return nil, errors.New("ec2sim: DataDir is required (unbundled images and the EC2 key live there)")
	}
	if err := os.MkdirAll(filepath.Join(cfg.DataDir, "images"), 0o700); err != nil {
		return nil, fmt.Errorf("ec2sim: creating data dir: %w", err)
	}
	if cfg.Logf == nil {
		cfg.Logf = log.Printf
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.PendingTime == 0 {
		cfg.PendingTime = time.Second
	}
	id, err := loadOrCreateEC2Identity(cfg.DataDir, cfg.EC2CertPath, cfg.EC2KeyPath)
	if err != nil {
		return nil, err
	}
	if !cfg.Faults.active() {
		if cfg.Faults, err = faultsFromEnv(); err != nil {
			return nil, fmt.Errorf("ec2sim: %w", err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Server{cfg: cfg, ec2Key: id, st: newState(cfg.AccountID), ctx: ctx, cancel: cancel}
	s.faults.set(cfg.Faults)
	return s, nil
}

// Start listens on 127.0.0.1:0 and serves until Close.
func Start(cfg Config) (*Server, error) {
	s, err := New(cfg)
	if err != nil {
		return nil, err
	}
	if err := s.Listen("127.0.0.1:0"); err != nil {
		return nil, err
	}
	return s, nil
}

// Listen starts serving on addr, which must be a loopback address.
func (s *Server) Listen(addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("ec2sim: listen address %q: %w", addr, err)
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("ec2sim: listen address %q is not a loopback IP; use 127.0.0.1:PORT", addr)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("ec2sim: listening on %s: %w", addr, err)
	}
	s.ln = ln
	s.httpSrv = &http.Server{Handler: s, ReadHeaderTimeout: 30 * time.Second}
	go s.httpSrv.Serve(ln)
	return nil
}

// URL is the endpoint (http://127.0.0.1:PORT) for AWS_ENDPOINT_URL_EC2 and _STS.
func (s *Server) URL() string { return "http://" + s.ln.Addr().String() }

// Region is the home region.
func (s *Server) Region() string { return s.cfg.Region }

// AccountID is the caller account.
func (s *Server) AccountID() string { return s.cfg.AccountID }

// EC2CertPath is the PEM certificate whose private key the simulator decrypts bundle
// keys with: point the plugin's EC2-certificate override at it.
func (s *Server) EC2CertPath() string { return s.ec2Key.certPath }

// Close stops serving, terminates every instance (stopping sshd, removing namespaces
// and mounts) and waits for that to finish.
func (s *Server) Close() error {
	var errs []error
	if s.httpSrv != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_ = s.httpSrv.Shutdown(ctx)
		cancel()
	}
	// Launches still in flight give up first; then every instance is torn down.
	s.cancel()
	errs = append(errs, s.terminateAll())
	s.wg.Wait()
	errs = append(errs, s.closeEBS())
	return errors.Join(errs...)
}

// ServeHTTP answers one EC2 or STS Query request.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	reqID := newRequestID()
	body, err := io.ReadAll(io.LimitReader(r.Body, 16<<20))
	if err != nil {
		s.writeEC2Error(w, reqID, apiErr(400, "InvalidRequest", "reading request body: %v", err))
		return
	}
	form := r.URL.Query()
	if r.Method == http.MethodPost {
		if ct := r.Header.Get("Content-Type"); ct != "" && !strings.HasPrefix(ct, "application/x-www-form-urlencoded") {
			s.writeEC2Error(w, reqID, apiErr(400, "InvalidRequest", "Content-Type %q is not supported; the Query protocol posts application/x-www-form-urlencoded", ct))
			return
		}
		bv, err := url.ParseQuery(string(body))
		if err != nil {
			s.writeEC2Error(w, reqID, apiErr(400, "MalformedQueryString", "request body is not a valid form: %v", err))
			return
		}
		for k, v := range bv {
			form[k] = append(form[k], v...)
		}
	} else if r.Method != http.MethodGet {
		s.writeEC2Error(w, reqID, apiErr(405, "InvalidRequest", "method %s is not supported; use POST or GET", r.Method))
		return
	}
	action := form.Get("Action")
	service := "ec2"
	sig, authErr := verifySigV4(r, body, s.cfg.Credentials, s.cfg.Now())
	if sig != nil && sig.service != "" {
		service = sig.service
	}
	if service == "sts" {
		s.serveSTS(w, reqID, action, sig, authErr)
		return
	}
	if authErr != nil {
		s.cfg.Logf("ec2sim: %s %s rejected: %v", reqID, action, authErr)
		s.writeEC2Error(w, reqID, ec2AuthError(authErr))
		return
	}
	if service != "ec2" {
		s.writeEC2Error(w, reqID, apiErr(400, "InvalidRequest", "credential scope names service %q; this endpoint serves ec2 and sts", service))
		return
	}
	if !knownRegion(sig.region) {
		s.writeEC2Error(w, reqID, apiErr(401, "AuthFailure", "credential scope region %q is not a region this endpoint serves", sig.region))
		return
	}
	if action == "" {
		s.writeEC2Error(w, reqID, apiErr(400, "MissingAction", "The request must contain the parameter Action"))
		return
	}
	h, ok := ec2Actions[action]
	if !ok {
		s.cfg.Logf("ec2sim: %s unknown action %q", reqID, action)
		s.writeEC2Error(w, reqID, apiErr(400, "InvalidAction", "The action %s is not valid for this web service.", action))
		return
	}
	if v := form.Get("Version"); v == "" {
		s.writeEC2Error(w, reqID, apiErr(400, "MissingParameter", "The request must contain the parameter Version"))
		return
	}
	if ae, ok := s.faults.pick(action); ok {
		s.cfg.Logf("ec2sim: %s %s (%s) -> injected %s", reqID, action, sig.region, ae.Code)
		s.writeEC2Error(w, reqID, ae)
		return
	}
	c := &call{s: s, p: newParams(form), region: sig.region, action: action, reqID: reqID, ctx: r.Context()}
	if dry, _, _ := c.p.boolean("DryRun"); dry {
		s.writeEC2Error(w, reqID, apiErr(412, "DryRunOperation", "Request would have succeeded, but DryRun flag is set."))
		return
	}
	resp, err := h(c)
	if err != nil {
		s.cfg.Logf("ec2sim: %s %s (%s) -> %v", reqID, action, sig.region, err)
		s.writeEC2Error(w, reqID, err)
		return
	}
	s.cfg.Logf("ec2sim: %s %s (%s) ok", reqID, action, sig.region)
	resp.setRequestID(reqID)
	writeXMLElement(w, http.StatusOK, xml.StartElement{Name: xml.Name{Local: action + "Response"},
		Attr: []xml.Attr{{Name: xml.Name{Local: "xmlns"}, Value: EC2Namespace}}}, resp)
}

// call is one EC2 request in flight.
type call struct {
	s      *Server
	p      params
	region string
	action string
	reqID  string
	ctx    context.Context
}

// stillWanted reports an error when the caller has gone away (its connection closed,
// e.g. a cancelled SDK call) before a slow action commits: the simulator then applies
// nothing, so a client that saw "context canceled" leaves no key pair or AMI behind.
func (c *call) stillWanted() error {
	if err := c.ctx.Err(); err != nil {
		return fmt.Errorf("the caller went away before %s completed: %w", c.action, err)
	}
	return nil
}

type metaSetter interface{ setRequestID(id string) }

// ResponseMeta is embedded in every EC2 response body: the request id. (Exported so
// that encoding/xml promotes its field.)
type ResponseMeta struct {
	RequestID string `xml:"requestId"`
}

func (m *ResponseMeta) setRequestID(id string) { m.RequestID = id }

// returnResp is the shape of the many EC2 actions that answer <return>true</return>.
type returnResp struct {
	ResponseMeta
	Return bool `xml:"return"`
}

// APIError is an EC2 error: its code, message and HTTP status.
type APIError struct {
	Status  int
	Code    string
	Message string
}

func (e *APIError) Error() string { return e.Code + ": " + e.Message }

func apiErr(status int, code, format string, args ...any) *APIError {
	return &APIError{Status: status, Code: code, Message: fmt.Sprintf(format, args...)}
}

func ec2AuthError(err error) *APIError {
	var ae *authError
	if !errors.As(err, &ae) {
		return apiErr(401, "AuthFailure", "%v", err)
	}
	switch ae.kind {
	case "missing":
		return apiErr(401, "MissingAuthenticationToken", "%s", ae.msg)
	case "expired":
		return apiErr(400, "RequestExpired", "%s", ae.msg)
	case "payload":
		return apiErr(403, "SignatureDoesNotMatch", "%s", ae.msg)
	}
	// EC2 cannot tell a wrong secret from a request altered after signing: both are a
	// signature it cannot reproduce, and it answers AuthFailure to both.
	return apiErr(401, "AuthFailure", "%s", ae.msg)
}

type ec2ErrorXML struct {
	XMLName xml.Name `xml:"Response"`
	Errors  []struct {
		Code    string `xml:"Code"`
		Message string `xml:"Message"`
	} `xml:"Errors>Error"`
	RequestID string `xml:"RequestID"`
}

func (s *Server) writeEC2Error(w http.ResponseWriter, reqID string, err error) {
	var ae *APIError
	if !errors.As(err, &ae) {
		ae = apiErr(500, "InternalError", "An internal error has occurred: %v", err)
	}
	var x ec2ErrorXML
	x.Errors = append(x.Errors, struct {
		Code    string `xml:"Code"`
		Message string `xml:"Message"`
	}{ae.Code, ae.Message})
	x.RequestID = reqID
	writeXML(w, ae.Status, &x)
}

func writeXML(w http.ResponseWriter, status int, v any) {
	writeXMLElement(w, status, xml.StartElement{}, v)
}

// writeXMLElement writes v as the document's root element, named by start when given.
func writeXMLElement(w http.ResponseWriter, status int, start xml.StartElement, v any) {
	var buf strings.Builder
	enc := xml.NewEncoder(&buf)
	var err error
	if start.Name.Local != "" {
		err = enc.EncodeElement(v, start)
	} else {
		err = enc.Encode(v)
	}
	if err == nil {
		err = enc.Close()
	}
	b := []byte(buf.String())
	if err != nil {
		http.Error(w, "encoding response: "+err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/xml;charset=UTF-8")
	w.WriteHeader(status)
	w.Write([]byte(xml.Header))
	w.Write(b)
}

func newRequestID() string {
	var b [16]byte
	rand.Read(b[:])
	h := hex.EncodeToString(b[:])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}

// newID makes an EC2-style id: prefix + 17 hex digits.
func newID(prefix string) string {
	var b [9]byte
	rand.Read(b[:])
	return prefix + "-" + hex.EncodeToString(b[:])[:17]
}
