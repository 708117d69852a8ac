package vm

import (
	"bytes"
	"io"
	"net"
	"testing"
)

type nopWriteCloser struct{ io.Writer }

func (nopWriteCloser) Close() error { return nil }

// TestRelay: the relay carries a request to a loopback server and its answer back,
// half-closing so the server sees EOF; it refuses non-loopback targets.
func TestRelay(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		b, _ := io.ReadAll(c) // until the relay half-closes
		c.Write(append([]byte("got:"), b...))
		c.Close()
	}()
	var out bytes.Buffer
	if rc := relay(ln.Addr().String(), bytes.NewBufferString("hello"), nopWriteCloser{&out}); rc != 0 {
		t.Fatalf("relay exit %d", rc)
	}
	if out.String() != "got:hello" {
		t.Errorf("relayed %q, want got:hello", out.String())
	}
	if rc := relay("192.0.2.1:80", bytes.NewBuffer(nil), nopWriteCloser{&out}); rc != 2 {
		t.Errorf("relay to a non-loopback target: exit %d, want 2", rc)
	}
}
