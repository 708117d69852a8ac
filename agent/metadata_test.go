package agent

import (
	"context"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/instancestore/packer-plugin-instancestore/localenv/vm"
)

// metadataService serves the local environment's real metadata service (the one its
// VM instances get) on 127.0.0.1.
func metadataService(t *testing.T, md *vm.Metadata) string {
	t.Helper()
	srv := httptest.NewServer(vm.NewMetadataServer(md))
	t.Cleanup(srv.Close)
	return srv.URL
}

func TestReadBlockDeviceMapping(t *testing.T) {
	devices := map[string]string{"ami": "sda1", "root": "/dev/sda1", "ephemeral0": "sdb", "ephemeral1": "sdc"}
	twoHops := func(*http.Request) int { return 2 }
	cases := []struct {
		name    string
		md      vm.Metadata
		wantErr string
	}{
		{"imdsv2-required", vm.Metadata{BlockDevices: devices, HTTPTokens: "required"}, ""},
		{"imdsv1", vm.Metadata{BlockDevices: devices}, ""},
		// The token's answer is lost on the way (hop limit 1, the request crossed 2):
		// the agent goes on with IMDSv1, as the SDK does.
		{"token-lost-v1-fallback", vm.Metadata{BlockDevices: devices, HopLimit: 1, RequestHops: twoHops}, ""},
		{"token-lost-v2-required", vm.Metadata{BlockDevices: devices, HopLimit: 1, RequestHops: twoHops, HTTPTokens: "required"}, "HttpPutResponseHopLimit"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			url := metadataService(t, &tc.md)
			got, err := readBlockDeviceMapping(context.Background(), url)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("got %v, %v; want an error saying %q", got, err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !maps.Equal(got, devices) {
				t.Errorf("read %v, want %v", got, devices)
			}
		})
	}
}

// TestNoMetadataService: nothing listens: no cross-check, and the run goes on.
func TestNoMetadataService(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	url := "http://" + ln.Addr().String()
	ln.Close()
	r := instanceMetadata(context.Background(), url)
	if r == nil || r.Read || !strings.Contains(r.Note, "no metadata service") {
		t.Fatalf("report %+v, want not read, with a note saying there is no metadata service", r)
	}
	if r := instanceMetadata(context.Background(), ""); r != nil {
		t.Errorf("no URL: report %+v, want none", r)
	}
}

// TestMetadataRetriesATimeout: a busy instance (or service) misses the first answer's
// timeout for every path; the read is retried, as the SDK's IMDS client does, and the
// mapping is complete, instead of a new AMI silently left without its ephemeralN.
func TestMetadataRetriesATimeout(t *testing.T) {
	devices := map[string]string{"ami": "sda1", "root": "/dev/sda1", "ephemeral0": "sdb"}
	inner := vm.NewMetadataServer(&vm.Metadata{BlockDevices: devices, HTTPTokens: "required"})
	var mu sync.Mutex
	seen := map[string]int{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen[r.Method+" "+r.URL.Path]++
		first := seen[r.Method+" "+r.URL.Path] == 1
		mu.Unlock()
		if first {
			select { // longer than the client's ResponseHeaderTimeout
			case <-time.After(3 * time.Second):
			case <-r.Context().Done():
				return
			}
		}
		inner.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	got, err := readBlockDeviceMapping(context.Background(), srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	if !maps.Equal(got, devices) {
		t.Errorf("read %v, want %v", got, devices)
	}
	mu.Lock()
	defer mu.Unlock()
	if seen["PUT /latest/api/token"] != 2 {
		t.Errorf("the token was asked for %d times, want 2 (one timeout, one retry)", seen["PUT /latest/api/token"])
	}
}
