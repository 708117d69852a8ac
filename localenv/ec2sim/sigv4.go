package ec2sim

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"time"
)

// Credentials are the one identity the simulator accepts. SessionToken, when set, must
// arrive as X-Amz-Security-Token (temporary credentials, as STS hands them out).
type Credentials struct {
	AccessKeyID     string
	SecretAccessKey string
	SessionToken    string
}

// sigv4Request is what the Authorization header (or the presigned query) says.
type sigv4Request struct {
	accessKey     string
	date          string // yyyymmdd of the scope
	region        string
	service       string
	signedHeaders []string
	signature     string
	amzDate       string // X-Amz-Date
	presigned     bool
}

// authError is a SigV4 rejection; the caller turns it into the service's error XML.
type authError struct {
	kind string // "auth" (unknown key, bad token), "signature", "expired", "missing"
	msg  string
}

func (e *authError) Error() string { return e.msg }

const sigv4Algorithm = "AWS4-HMAC-SHA256"

// parseSigV4 reads the signature parameters from the Authorization header or, for a
// presigned request, from the query string.
func parseSigV4(r *http.Request) (*sigv4Request, error) {
	q := r.URL.Query()
	if auth := r.Header.Get("Authorization"); auth != "" {
		if !strings.HasPrefix(auth, sigv4Algorithm+" ") {
			return nil, &authError{"missing", "Authorization header uses an unsupported algorithm; only AWS4-HMAC-SHA256 (SigV4) is accepted"}
		}
		s := &sigv4Request{amzDate: r.Header.Get("X-Amz-Date")}
		for _, kv := range strings.Split(strings.TrimPrefix(auth, sigv4Algorithm+" "), ",") {
			k, v, ok := strings.Cut(strings.TrimSpace(kv), "=")
			if !ok {
				return nil, &authError{"missing", fmt.Sprintf("Authorization header component %q is malformed", kv)}
			}
			switch k {
			case "Credential":
				if err := s.setCredential(v); err != nil {
					return nil, err
				}
			case "SignedHeaders":
				s.signedHeaders = strings.Split(v, ";")
			case "Signature":
				s.signature = v
			}
		}
		if s.accessKey == "" || s.signature == "" || len(s.signedHeaders) == 0 {
			return nil, &authError{"missing", "Authorization header requires 'Credential', 'Signature' and 'SignedHeaders'"}
		}
		if s.amzDate == "" {
			return nil, &authError{"missing", "Request is missing the X-Amz-Date header"}
		}
		return s, nil
	}
	if q.Get("X-Amz-Algorithm") == sigv4Algorithm {
		s := &sigv4Request{presigned: true, amzDate: q.Get("X-Amz-Date"),
			signature: q.Get("X-Amz-Signature"), signedHeaders: strings.Split(q.Get("X-Amz-SignedHeaders"), ";")}
		if err := s.setCredential(q.Get("X-Amz-Credential")); err != nil {
			return nil, err
		}
		if s.signature == "" || s.amzDate == "" {
			return nil, &authError{"missing", "presigned request lacks X-Amz-Signature or X-Amz-Date"}
		}
		return s, nil
	}
	return nil, &authError{"missing", "Request is missing Authentication Token"}
}

func (s *sigv4Request) setCredential(v string) error {
	parts := strings.Split(v, "/")
	if len(parts) != 5 || parts[4] != "aws4_request" {
		return &authError{"missing", fmt.Sprintf("credential scope %q is malformed; expected KEY/DATE/REGION/SERVICE/aws4_request", v)}
	}
	s.accessKey, s.date, s.region, s.service = parts[0], parts[1], parts[2], parts[3]
	return nil
}

// verifySigV4 checks the request signature against creds. body is the request payload
// already read. now is the server clock, for the 15-minute skew window EC2 allows.
func verifySigV4(r *http.Request, body []byte, creds Credentials, now time.Time) (*sigv4Request, error) {
	s, err := parseSigV4(r)
	if err != nil {
		return nil, err
	}
	if s.accessKey != creds.AccessKeyID {
		return s, &authError{"auth", "AWS was not able to validate the provided access credentials"}
	}
	t, err := time.Parse("20060102T150405Z", s.amzDate)
	if err != nil {
		return s, &authError{"missing", fmt.Sprintf("X-Amz-Date %q is not in the ISO 8601 basic format", s.amzDate)}
	}
	if d := now.Sub(t); d > 15*time.Minute || d < -15*time.Minute {
		return s, &authError{"expired", fmt.Sprintf("Request has expired. Timestamp date is %s, server time is %s", t.Format(time.RFC3339), now.UTC().Format(time.RFC3339))}
	}
	if !strings.HasPrefix(s.amzDate, s.date) {
		return s, &authError{"signature", "Credential scope date does not match X-Amz-Date"}
	}
	if creds.SessionToken != "" {
		tok := r.Header.Get("X-Amz-Security-Token")
		if s.presigned {
			tok = r.URL.Query().Get("X-Amz-Security-Token")
		}
		if tok == "" {
			return s, &authError{"auth", "AWS was not able to validate the provided access credentials: the credentials are temporary and the request carries no X-Amz-Security-Token"}
		}
		if subtle.ConstantTimeCompare([]byte(tok), []byte(creds.SessionToken)) != 1 {
			return s, &authError{"auth", "The security token included in the request is invalid"}
		}
	}
	signedHost := false
	for _, h := range s.signedHeaders {
		if h == "host" {
			signedHost = true
		}
	}
	if !signedHost {
		return s, &authError{"signature", "SignedHeaders must include 'host'"}
	}
	if declared := r.Header.Get("X-Amz-Content-Sha256"); declared != "" && declared != "UNSIGNED-PAYLOAD" && !s.presigned {
		sum := sha256.Sum256(body)
		if declared != hex.EncodeToString(sum[:]) {
			return s, &authError{"payload", "The request signature we calculated does not match the signature you provided: the body does not match its x-amz-content-sha256 header."}
		}
	}
	creq := canonicalRequest(r, body, s)
	scope := strings.Join([]string{s.date, s.region, s.service, "aws4_request"}, "/")
	h := sha256.Sum256([]byte(creq))
	stringToSign := strings.Join([]string{sigv4Algorithm, s.amzDate, scope, hex.EncodeToString(h[:])}, "\n")
	want := hex.EncodeToString(hmacSHA256(signingKey(creds.SecretAccessKey, s.date, s.region, s.service), []byte(stringToSign)))
	if subtle.ConstantTimeCompare([]byte(want), []byte(s.signature)) != 1 {
		return s, &authError{"signature", "AWS was not able to validate the provided access credentials"}
	}
	return s, nil
}

func hmacSHA256(key, data []byte) []byte {
	m := hmac.New(sha256.New, key)
	m.Write(data)
	return m.Sum(nil)
}

func signingKey(secret, date, region, service string) []byte {
	k := hmacSHA256([]byte("AWS4"+secret), []byte(date))
	k = hmacSHA256(k, []byte(region))
	k = hmacSHA256(k, []byte(service))
	return hmacSHA256(k, []byte("aws4_request"))
}

// canonicalRequest builds the SigV4 canonical request: method, URI, query, headers,
// signed header list and payload hash, one per line.
func canonicalRequest(r *http.Request, body []byte, s *sigv4Request) string {
	path := r.URL.EscapedPath()
	if path == "" {
		path = "/"
	}
	// Non-S3 services sign the doubly-escaped path; ours is "/" in practice.
	path = sigv4Escape(path, false)

	q := r.URL.Query()
	if s.presigned {
		q.Del("X-Amz-Signature")
	}
	keys := make([]string, 0, len(q))
	for k := range q {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var qs []string
	for _, k := range keys {
		vals := append([]string(nil), q[k]...)
		sort.Strings(vals)
		for _, v := range vals {
			qs = append(qs, sigv4Escape(k, true)+"="+sigv4Escape(v, true))
		}
	}

	var hs strings.Builder
	for _, name := range s.signedHeaders {
		var vals []string
		if name == "host" {
			vals = []string{r.Host}
		} else if name == "content-length" {
			vals = []string{fmt.Sprint(r.ContentLength)}
		} else {
			vals = r.Header.Values(name)
		}
		for i, v := range vals {
			vals[i] = strings.Join(strings.Fields(v), " ")
		}
		hs.WriteString(name + ":" + strings.Join(vals, ",") + "\n")
	}

	payload := r.Header.Get("X-Amz-Content-Sha256")
	if payload == "" || s.presigned {
		if s.presigned {
			payload = "UNSIGNED-PAYLOAD"
			if r.Method == http.MethodPost && len(body) > 0 {
				sum := sha256.Sum256(body)
				payload = hex.EncodeToString(sum[:])
			}
		} else {
			sum := sha256.Sum256(body)
			payload = hex.EncodeToString(sum[:])
		}
	}
	return strings.Join([]string{r.Method, path, strings.Join(qs, "&"), hs.String(), strings.Join(s.signedHeaders, ";"), payload}, "\n")
}

// sigv4Escape is SigV4's URI encoding: unreserved characters stay, everything else is
// %XX (upper case); '/' stays in paths.
func sigv4Escape(s string, encodeSlash bool) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'A' <= c && c <= 'Z', 'a' <= c && c <= 'z', '0' <= c && c <= '9', c == '-', c == '_', c == '.', c == '~':
			b.WriteByte(c)
		case c == '/' && !encodeSlash:
			b.WriteByte(c)
		default:
			fmt.Fprintf(&b, "%%%02X", c)
		}
	}
	return b.String()
}
