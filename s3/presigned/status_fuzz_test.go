package presigned

import (
	"bytes"
	"encoding/xml"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/instancestore/packer-plugin-instancestore/internal/fuzzcheck"
)

// FuzzStatusError: the S3 error body parser never panics on any body, costs a bounded
// allocation, and reads back the Code and Message of an error S3 would send, whatever
// characters they hold; the classification (Expired, Retryable) never panics.
func FuzzStatusError(f *testing.F) {
	f.Add(403, []byte(`<?xml version="1.0" encoding="UTF-8"?><Error><Code>AccessDenied</Code><Message>Request has expired</Message><RequestId>1</RequestId></Error>`), "AccessDenied", "Request has expired")
	f.Add(503, []byte(`<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>`), "SlowDown", "a & b <c>")
	f.Add(400, []byte(`<Error><Code>BadDigest</Code></Error>`), "BadDigest", "")
	f.Add(500, []byte("<html>oops</html>"), "", "")
	f.Add(404, []byte(""), "NoSuchKey", "The specified key does not exist.")
	fuzzcheck.CapMinimize(time.Second)
	f.Fuzz(func(t *testing.T, status int, body []byte, code, msg string) {
		if len(body) > 64<<10 || len(code)+len(msg) > 4<<10 {
			return
		}
		var e *StatusError
		fuzzcheck.Allocs(t, 256<<10+64*uint64(len(body)), func() { e = newStatusError(status, body) })
		if e.Status != status {
			t.Fatalf("status %d became %d", status, e.Status)
		}
		_ = e.Error()
		_ = e.Expired()
		_ = Retryable(e)

		// The body S3 sends for code and msg (XML-escaped, as S3 does) reads back.
		if !xmlText(code) || !xmlText(msg) {
			return
		}
		var b bytes.Buffer
		b.WriteString(`<?xml version="1.0" encoding="UTF-8"?>` + "\n<Error><Code>")
		xml.EscapeText(&b, []byte(code))
		b.WriteString("</Code><Message>")
		xml.EscapeText(&b, []byte(msg))
		b.WriteString("</Message><RequestId>4442587FB7D0A2F9</RequestId></Error>")
		got := newStatusError(status, b.Bytes())
		if got.Code != code || got.Message != msg {
			t.Fatalf("code %q message %q read back as %q %q from %s", code, msg, got.Code, got.Message, b.Bytes())
		}
		if code != "" && !strings.Contains(got.Error(), code) {
			t.Fatalf("error text %q does not name the code %q", got.Error(), code)
		}
	})
}

// xmlText reports whether s can be the text of an XML element and read back as is:
// valid UTF-8, only XML's characters, and no \r (which XML normalizes).
func xmlText(s string) bool {
	if !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		switch {
		case r == '\t' || r == '\n':
		case r < 0x20 || r == 0xFFFE || r == 0xFFFF || r == utf8.RuneError:
			return false
		}
	}
	return true
}
