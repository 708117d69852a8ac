package agent

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/instancestore/packer-plugin-instancestore/internal/fuzzcheck"
)

// FuzzDecodeRequest: the request decoder never panics, a small line never costs a
// large allocation, and every request it accepts is valid (its key parses) and
// survives a round trip through the encoder unchanged.
func FuzzDecodeRequest(f *testing.F) {
	key := strings.Repeat("0a", 16)
	for _, r := range []Request{
		{Version: ProtocolVersion, Mode: ModeImage, Name: "image", Key: key, IV: key, Image: "/tmp/image.img", Concurrency: 4},
		{Version: ProtocolVersion, Mode: ModeVolume, Name: "vol", Key: key, IV: key, WorkDir: "/tmp/w",
			Volume: &VolumeRequest{Volume: "/", Scratch: "/mnt", SizeMB: 2048, Excludes: []string{"/home"}, Includes: []string{"/home/a"}, Filter: true, Partition: "gpt"}},
	} {
		b, err := json.Marshal(r)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte(`{"version":1,"mode":"image","name":"../x","key":"00","iv":"00"}`))
	f.Add([]byte(`{"version":2}`))
	fuzzcheck.CapMinimize(time.Second)
	f.Fuzz(func(t *testing.T, line []byte) {
		if len(line) > 64<<10 {
			return
		}
		var req *Request
		var err error
		fuzzcheck.Allocs(t, 1<<20+32*uint64(len(line)), func() { req, err = DecodeRequest(line) })
		if err != nil {
			return
		}
		if cerr := req.Check(); cerr != nil {
			t.Fatalf("accepted a request that does not check: %v", cerr)
		}
		if _, kerr := req.BundleKey(); kerr != nil {
			t.Fatalf("accepted a request whose key does not parse: %v", kerr)
		}
		b, merr := json.Marshal(req)
		if merr != nil {
			t.Fatalf("cannot encode an accepted request: %v", merr)
		}
		again, err := DecodeRequest(b)
		if err != nil {
			t.Fatalf("our own encoding of an accepted request is refused: %v\n%s", err, b)
		}
		if !reflect.DeepEqual(normalize(req), normalize(again)) {
			t.Fatalf("request changed in a round trip:\n%+v\n%+v", req, again)
		}
	})
}

// normalize makes empty and nil lists equal (omitempty drops both alike).
func normalize(r *Request) Request {
	c := *r
	if c.Volume != nil {
		v := *c.Volume
		if len(v.Excludes) == 0 {
			v.Excludes = nil
		}
		if len(v.Includes) == 0 {
			v.Includes = nil
		}
		c.Volume = &v
	}
	return c
}
