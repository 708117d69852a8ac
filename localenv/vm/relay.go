package vm

import (
	"io"
	"net"
	"os"
	"sync"
)

// relayEnv names the host address a relay process connects to. qemu's guestfwd runs
// one relay per guest connection (cmd:), the connection on its stdin and stdout; the
// relay is this very program (os.Executable) started with relayEnv set, so the
// localenv daemon and test binaries need no helper installed.
const relayEnv = "INSTANCESTORE_VM_RELAY"

func init() {
	if target := os.Getenv(relayEnv); target != "" {
		os.Exit(relay(target, os.Stdin, os.Stdout))
	}
}

// relay copies stdin to a TCP connection to target (127.0.0.1:PORT only) and the
// connection to stdout, half-closing each way so HTTP keep-alive and EOF both work.
func relay(target string, in io.Reader, out io.WriteCloser) int {
	host, _, err := net.SplitHostPort(target)
	if err != nil || !net.ParseIP(host).IsLoopback() {
		return 2
	}
	c, err := net.Dial("tcp", target)
	if err != nil {
		return 1
	}
	defer c.Close()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		io.Copy(c, in)
		c.(*net.TCPConn).CloseWrite()
	}()
	io.Copy(out, c)
	out.Close()
	// The guest side may keep its half open; the server closed, so we are done.
	return 0
}
