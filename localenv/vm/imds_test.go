package vm

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func get(t *testing.T, srv *httptest.Server, method, path string, hdr map[string]string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(method, srv.URL+path, nil)
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return -1, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestMetadataPaths(t *testing.T) {
	md := &Metadata{InstanceID: "i-0123456789abcdef0", ImageID: "ami-1", InstanceType: "m3.medium", Region: "us-east-1",
		Zone: "us-east-1a", LocalIPv4: "169.254.0.15", LocalHostname: "ip-169-254-0-15.ec2.internal", KernelID: "aki-1",
		KeyName: "k", PublicKey: "ssh-ed25519 AAAA test", UserData: []byte("#cloud-config\n"),
		BlockDevices: map[string]string{"ami": "sda1", "root": "/dev/sda1", "ephemeral0": "sdb"}}
	srv := httptest.NewServer(NewMetadataServer(md))
	defer srv.Close()
	for path, want := range map[string]string{
		"/latest/meta-data/instance-id":                     md.InstanceID,
		"/latest/meta-data/ami-id":                          "ami-1",
		"/latest/meta-data/instance-type":                   "m3.medium",
		"/latest/meta-data/local-ipv4":                      md.LocalIPv4,
		"/latest/meta-data/local-hostname":                  md.LocalHostname,
		"/latest/meta-data/placement/availability-zone":     "us-east-1a",
		"/latest/meta-data/public-keys/":                    "0=k",
		"/latest/meta-data/public-keys/0/openssh-key":       "ssh-ed25519 AAAA test\n",
		"/latest/meta-data/block-device-mapping/":           "ami\nephemeral0\nroot",
		"/latest/meta-data/block-device-mapping/ephemeral0": "sdb",
		"/2009-04-04/meta-data/kernel-id":                   "aki-1",
		"/latest/user-data":                                 "#cloud-config\n",
	} {
		if code, body := get(t, srv, "GET", path, nil); code != 200 || body != want {
			t.Errorf("GET %s = %d %q, want 200 %q", path, code, body, want)
		}
	}
	// IMDSv2 token flow.
	code, tok := get(t, srv, "PUT", "/latest/api/token", map[string]string{tokenTTLHeader: "60"})
	if code != 200 || tok == "" {
		t.Fatalf("token PUT = %d %q", code, tok)
	}
	if code, _ := get(t, srv, "PUT", "/latest/api/token", nil); code != 400 {
		t.Errorf("token PUT without TTL = %d, want 400", code)
	}
	md.HTTPTokens = "required"
	if code, _ := get(t, srv, "GET", "/latest/meta-data/instance-id", nil); code != 401 {
		t.Errorf("v1 GET with HttpTokens=required = %d, want 401", code)
	}
	if code, _ := get(t, srv, "GET", "/latest/meta-data/instance-id", map[string]string{tokenHeader: "bogus"}); code != 401 {
		t.Errorf("GET with a bad token = %d, want 401", code)
	}
	if code, body := get(t, srv, "GET", "/latest/meta-data/instance-id", map[string]string{tokenHeader: tok}); code != 200 || body != md.InstanceID {
		t.Errorf("v2 GET = %d %q", code, body)
	}
	// Hop limit: a requester two hops away gets no token response.
	md.RequestHops = func(*http.Request) int { return 2 }
	if code, body := get(t, srv, "PUT", "/latest/api/token", map[string]string{tokenTTLHeader: "60"}); code != -1 {
		t.Errorf("token PUT over 2 hops with hop limit 1 = %d %q, want no answer", code, body)
	}
	md.HopLimit = 2
	if code, _ := get(t, srv, "PUT", "/latest/api/token", map[string]string{tokenTTLHeader: "60"}); code != 200 {
		t.Errorf("token PUT over 2 hops with hop limit 2 = %d", code)
	}
	if code, _ := get(t, srv, "GET", "/latest/meta-data/nope", map[string]string{tokenHeader: tok}); code != 404 {
		t.Errorf("unknown path = %d", code)
	}
	_ = strings.TrimSpace
}
