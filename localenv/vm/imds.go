package vm

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Metadata is what one instance's metadata service (169.254.169.254) answers: the
// paths cloud-init's EC2 datasource reads, IMDSv1 and IMDSv2.
type Metadata struct {
	InstanceID, ImageID, InstanceType string
	Region, Zone                      string
	LocalIPv4, LocalHostname, MAC     string
	ReservationID                     string
	KernelID, RamdiskID               string // paravirtual AMIs
	KeyName, PublicKey                string
	RootDeviceName                    string
	BlockDevices                      map[string]string // ami, root, ephemeral0 -> sda1, sdb (no /dev/)
	UserData                          []byte
	HTTPTokens                        string // "required": a request without a valid token gets 401
	HopLimit                          int    // HttpPutResponseHopLimit
	SecurityGroups                    []string
	// Forwards lists "LISTEN TARGET" pairs for the guest's relay unit: the host
	// service the guest reaches on its own LISTEN address (127.0.0.1:PORT, the same
	// host:port the plugin presigned for) through TARGET (a guestfwd address). Served
	// at /instancestore-localenv/forwards, outside EC2's paths.
	Forwards []string
	// RequestHops says how many network hops a request crossed to reach the service;
	// nil means 1. See ServeHTTP.
	RequestHops func(*http.Request) int
	// Now is the clock (tests); nil means time.Now.
	Now func() time.Time
}

// MetadataServer serves one instance's Metadata over HTTP.
type MetadataServer struct {
	md     *Metadata
	mu     sync.Mutex
	tokens map[string]time.Time // token -> expiry
}

// NewMetadataServer returns the handler of md's metadata service.
func NewMetadataServer(md *Metadata) *MetadataServer {
	return &MetadataServer{md: md, tokens: map[string]time.Time{}}
}

const (
	tokenHeader    = "X-Aws-Ec2-Metadata-Token"
	tokenTTLHeader = "X-Aws-Ec2-Metadata-Token-Ttl-Seconds"
)

var versionPath = regexp.MustCompile(`^/(latest|\d{4}-\d{2}-\d{2})(/.*)?$`)

func (s *MetadataServer) now() time.Time {
	if s.md.Now != nil {
		return s.md.Now()
	}
	return time.Now()
}

// ServeHTTP answers like EC2's metadata service:
//   - PUT /latest/api/token with X-aws-ec2-metadata-token-ttl-seconds (1-21600) gives
//     a session token (IMDSv2); a PUT carrying X-Forwarded-For is refused (403), as EC2
//     refuses tokens to requests that came through a proxy;
//   - any other request with X-aws-ec2-metadata-token must carry a valid, unexpired
//     token (else 401); one without is IMDSv1, answered unless HttpTokens=required
//     (then 401);
//   - hop limit: EC2 sends the token response with the IP TTL set to the hop limit, so
//     it dies on the way to a requester more hops away (a container behind a bridge on
//     the instance). Here the guest's connection is carried by qemu's user network and
//     a relay, which end the guest's IP packets, so there is no TTL to set: the
//     service counts the hops a request crossed (RequestHops: 1 for the guest itself,
//     one more per X-Forwarded-For proxy hop) and, when that exceeds the hop limit,
//     drops the token response the way the packet would have been lost: the
//     connection closes with no answer.
func (s *MetadataServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "/instancestore-localenv/forwards" {
		w.Header().Set("Content-Type", "text/plain")
		w.Write([]byte(strings.Join(s.md.Forwards, "\n") + "\n"))
		return
	}
	m := versionPath.FindStringSubmatch(r.URL.Path)
	if m == nil {
		if r.URL.Path == "/" {
			w.Write([]byte("latest\n"))
			return
		}
		http.NotFound(w, r)
		return
	}
	rest := strings.TrimPrefix(m[2], "/")
	if rest == "api/token" {
		s.serveToken(w, r)
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "OPTIONS, GET, HEAD")
		http.Error(w, "Method Not Allowed", http.StatusMethodNotAllowed)
		return
	}
	if tok := r.Header.Get(tokenHeader); tok != "" {
		s.mu.Lock()
		exp, ok := s.tokens[tok]
		s.mu.Unlock()
		if !ok || !s.now().Before(exp) {
			http.Error(w, "Unauthorized", http.StatusUnauthorized)
			return
		}
	} else if s.md.HTTPTokens == "required" {
		http.Error(w, "Unauthorized", http.StatusUnauthorized)
		return
	}
	if rest == "" {
		w.Write([]byte("dynamic\nmeta-data\nuser-data\n"))
		return
	}
	if rest == "user-data" || rest == "user-data/" {
		if len(s.md.UserData) == 0 {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Write(s.md.UserData)
		return
	}
	node, ok := lookup(s.tree(), rest)
	if !ok {
		http.NotFound(w, r)
		return
	}
	w.Header().Set("Content-Type", "text/plain")
	switch n := node.(type) {
	case string:
		w.Write([]byte(n))
	case dir:
		w.Write([]byte(n.listing()))
	}
}

func (s *MetadataServer) hops(r *http.Request) int {
	if s.md.RequestHops != nil {
		return s.md.RequestHops(r)
	}
	n := 1
	for _, v := range r.Header.Values("X-Forwarded-For") {
		n += len(strings.Split(v, ","))
	}
	return n
}

func (s *MetadataServer) serveToken(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPut {
		w.Header().Set("Allow", "OPTIONS, PUT")
		http.Error(w, "Method Not Allowed", http.StatusMethodNotAllowed)
		return
	}
	if r.Header.Get("X-Forwarded-For") != "" {
		http.Error(w, "Forbidden", http.StatusForbidden)
		return
	}
	ttl, err := strconv.Atoi(r.Header.Get(tokenTTLHeader))
	if err != nil || ttl < 1 || ttl > 21600 {
		http.Error(w, "Bad Request", http.StatusBadRequest)
		return
	}
	limit := s.md.HopLimit
	if limit < 1 {
		limit = 1
	}
	if s.hops(r) > limit {
		// The answer is lost on the way, as a packet whose TTL ran out.
		if hj, ok := w.(http.Hijacker); ok {
			if c, _, err := hj.Hijack(); err == nil {
				c.Close()
				return
			}
		}
		panic(http.ErrAbortHandler)
	}
	b := make([]byte, 28)
	if _, err := rand.Read(b); err != nil {
		http.Error(w, "Internal Server Error", http.StatusInternalServerError)
		return
	}
	tok := "AQAEA" + hex.EncodeToString(b)
	s.mu.Lock()
	now := s.now()
	for t, exp := range s.tokens {
		if !now.Before(exp) {
			delete(s.tokens, t)
		}
	}
	s.tokens[tok] = now.Add(time.Duration(ttl) * time.Second)
	s.mu.Unlock()
	w.Header().Set(tokenTTLHeader, strconv.Itoa(ttl))
	w.Header().Set("Content-Type", "text/plain")
	w.Write([]byte(tok))
}

// dir is a metadata category: names to string leaves or sub-dirs. Listing names are
// the keys, sub-dirs with a trailing slash; label overrides a key's listed name
// (public-keys lists "0=my-key").
type dir struct {
	entries map[string]any
	label   map[string]string
}

func (d dir) listing() string {
	var names []string
	for k, v := range d.entries {
		name := k
		if l, ok := d.label[k]; ok {
			name = l
		} else if _, isDir := v.(dir); isDir {
			name += "/"
		}
		names = append(names, name)
	}
	sort.Strings(names)
	return strings.Join(names, "\n")
}

func lookup(root dir, path string) (any, bool) {
	var node any = root
	for _, part := range strings.Split(strings.Trim(path, "/"), "/") {
		if part == "" {
			continue
		}
		d, ok := node.(dir)
		if !ok {
			return nil, false
		}
		if node, ok = d.entries[part]; !ok {
			return nil, false
		}
	}
	if _, isLeaf := node.(string); isLeaf && strings.HasSuffix(path, "/") {
		return nil, false
	}
	return node, true
}

func leaves(m map[string]string) dir {
	d := dir{entries: map[string]any{}}
	for k, v := range m {
		d.entries[k] = v
	}
	return d
}

func (s *MetadataServer) tree() dir {
	md := s.md
	meta := map[string]any{
		"ami-id":               md.ImageID,
		"ami-launch-index":     "0",
		"ami-manifest-path":    "(unknown)",
		"hostname":             md.LocalHostname,
		"instance-action":      "none",
		"instance-id":          md.InstanceID,
		"instance-type":        md.InstanceType,
		"local-hostname":       md.LocalHostname,
		"local-ipv4":           md.LocalIPv4,
		"mac":                  md.MAC,
		"reservation-id":       md.ReservationID,
		"security-groups":      strings.Join(md.SecurityGroups, "\n"),
		"profile":              "default-" + map[bool]string{true: "paravirtual", false: "hvm"}[md.KernelID != ""],
		"placement":            leaves(map[string]string{"availability-zone": md.Zone, "region": md.Region}),
		"services":             leaves(map[string]string{"domain": "amazonaws.com", "partition": "aws"}),
		"block-device-mapping": leaves(md.BlockDevices),
	}
	if md.KernelID != "" {
		meta["kernel-id"] = md.KernelID
	}
	if md.RamdiskID != "" {
		meta["ramdisk-id"] = md.RamdiskID
	}
	if md.PublicKey != "" {
		key := dir{entries: map[string]any{"openssh-key": strings.TrimSpace(md.PublicKey) + "\n"}}
		meta["public-keys"] = dir{entries: map[string]any{"0": key}, label: map[string]string{"0": "0=" + md.KeyName}}
	}
	if md.MAC != "" {
		iface := leaves(map[string]string{"device-number": "0", "local-ipv4s": md.LocalIPv4, "local-hostname": md.LocalHostname, "mac": md.MAC})
		meta["network"] = dir{entries: map[string]any{"interfaces": dir{entries: map[string]any{"macs": dir{entries: map[string]any{md.MAC: iface}}}}}}
	}
	doc, _ := json.MarshalIndent(map[string]any{
		"accountId": "000000000000", "architecture": "x86_64", "availabilityZone": md.Zone,
		"imageId": md.ImageID, "instanceId": md.InstanceID, "instanceType": md.InstanceType,
		"kernelId": nullable(md.KernelID), "ramdiskId": nullable(md.RamdiskID), "pendingTime": time.Now().UTC().Format(time.RFC3339),
		"privateIp": md.LocalIPv4, "region": md.Region, "version": "2017-09-30",
	}, "", "  ")
	return dir{entries: map[string]any{
		"meta-data": dir{entries: meta},
		"dynamic":   dir{entries: map[string]any{"instance-identity": leaves(map[string]string{"document": string(doc)})}},
	}}
}

func nullable(s string) any {
	if s == "" {
		return nil
	}
	return s
}
