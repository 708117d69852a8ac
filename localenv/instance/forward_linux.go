package instance

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Forwarder makes host loopback services reachable inside an instance at the very same
// address: it listens on 127.0.0.1:PORT inside the instance's network namespace and
// relays each connection to 127.0.0.1:PORT of the host. A presigned S3 URL made on the
// host (Host header and all) then works unchanged on the instance, and nothing listens
// beyond loopback.
type Forwarder struct {
	lns []net.Listener
	wg  sync.WaitGroup
	mu  sync.Mutex
	cs  map[net.Conn]bool
}

// ListenInNetNS opens a TCP listener on addr inside the named network namespace. The
// socket keeps its namespace after the thread that made it leaves.
func ListenInNetNS(netns, addr string) (net.Listener, error) {
	return inNetNS(netns, func() (net.Listener, error) { return net.Listen("tcp", addr) })
}

// DialInNetNS connects to addr from inside the named network namespace (e.g. to a
// loopback service of the namespace).
func DialInNetNS(netns, addr string, timeout time.Duration) (net.Conn, error) {
	return inNetNS(netns, func() (net.Conn, error) { return net.DialTimeout("tcp", addr, timeout) })
}

// inNetNS runs fn on an OS thread that has entered the named network namespace; the
// sockets fn makes belong to that namespace for good.
func inNetNS[T io.Closer](netns string, fn func() (T, error)) (T, error) {
	type result struct {
		v   T
		err error
	}
	ch := make(chan result, 1)
	go func() {
		var zero T
		// The thread goes back to its own namespace before it is unlocked. Letting it
		// die instead is not an option: a process started from it with Pdeathsig
		// (instance sshd) would be killed with it.
		runtime.LockOSThread()
		self, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			runtime.UnlockOSThread()
			ch <- result{zero, err}
			return
		}
		defer self.Close()
		f, err := os.Open(filepath.Join("/run/netns", netns))
		if err != nil {
			runtime.UnlockOSThread()
			ch <- result{zero, err}
			return
		}
		defer f.Close()
		if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			ch <- result{zero, fmt.Errorf("entering network namespace %s: %w", netns, err)}
			return
		}
		v, err := fn()
		if rerr := unix.Setns(int(self.Fd()), unix.CLONE_NEWNET); rerr != nil {
			// Stay locked: the runtime then retires this thread rather than reuse it
			// in the wrong namespace.
			if err == nil {
				v.Close()
			}
			ch <- result{zero, fmt.Errorf("returning from network namespace %s: %w", netns, rerr)}
			return
		}
		runtime.UnlockOSThread()
		ch <- result{v, err}
	}()
	r := <-ch
	return r.v, r.err
}

// StartForwarder listens on each of addrs (loopback host:port) inside the named
// network namespace and relays to the same address of the host. Close it to stop.
func StartForwarder(netns string, addrs []string) (*Forwarder, error) {
	fw := &Forwarder{cs: map[net.Conn]bool{}}
	for _, a := range addrs {
		host, _, err := net.SplitHostPort(a)
		if err != nil || !net.ParseIP(host).IsLoopback() {
			fw.Close()
			return nil, fmt.Errorf("forwarding %q into instances: only loopback host:port addresses can be forwarded", a)
		}
		ln, err := ListenInNetNS(netns, a)
		if err != nil {
			fw.Close()
			return nil, fmt.Errorf("forwarding %s into instance namespace %s: %w", a, netns, err)
		}
		fw.lns = append(fw.lns, ln)
		fw.wg.Add(1)
		go fw.serve(ln, func() (net.Conn, error) { return net.Dial("tcp", a) })
	}
	return fw, nil
}

// StartRelayInNetNS listens on listen inside the named network namespace and relays
// each connection to target, dialled from inside the namespace too (e.g. from the
// namespace's address to a service on its loopback). Close it to stop.
func StartRelayInNetNS(netns, listen, target string) (*Forwarder, error) {
	ln, err := ListenInNetNS(netns, listen)
	if err != nil {
		return nil, fmt.Errorf("relaying %s to %s in namespace %s: %w", listen, target, netns, err)
	}
	fw := &Forwarder{cs: map[net.Conn]bool{}, lns: []net.Listener{ln}}
	fw.wg.Add(1)
	go fw.serve(ln, func() (net.Conn, error) { return DialInNetNS(netns, target, 10*time.Second) })
	return fw, nil
}

func (fw *Forwarder) track(c net.Conn, on bool) {
	fw.mu.Lock()
	defer fw.mu.Unlock()
	if on {
		fw.cs[c] = true
	} else {
		delete(fw.cs, c)
	}
}

func (fw *Forwarder) serve(ln net.Listener, dial func() (net.Conn, error)) {
	defer fw.wg.Done()
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		fw.wg.Add(1)
		go func() {
			defer fw.wg.Done()
			defer c.Close()
			up, err := dial()
			if err != nil {
				return
			}
			defer up.Close()
			fw.track(c, true)
			fw.track(up, true)
			defer fw.track(c, false)
			defer fw.track(up, false)
			done := make(chan struct{}, 2)
			go func() { io.Copy(up, c); up.(*net.TCPConn).CloseWrite(); done <- struct{}{} }()
			go func() { io.Copy(c, up); c.(*net.TCPConn).CloseWrite(); done <- struct{}{} }()
			<-done
			<-done
		}()
	}
}

// Close stops listening, drops open connections and waits for the relays.
func (fw *Forwarder) Close() error {
	var errs []error
	for _, ln := range fw.lns {
		if err := ln.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			errs = append(errs, err)
		}
	}
	fw.mu.Lock()
	for c := range fw.cs {
		c.Close()
	}
	fw.mu.Unlock()
	fw.wg.Wait()
	return errors.Join(errs...)
}
