package instance

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// serviceAddr is one address every instance can reach, whatever its /30: servers that
// both the host and the instances call (an S3 endpoint the plugin presigns URLs for,
// the EC2 simulator) listen on it, so one URL works from both sides. It sits on the
// host's loopback interface and each instance has a route to it through its veth; the
// instances get no other route out.
var serviceAddr = netip.MustParseAddr("169.254.63.1")

var (
	serviceMu   sync.Mutex
	serviceLock *os.File // shared flock: this process uses the service address
)

// ServiceAddr adds the service address to the host's loopback interface (once per
// host; it stays while any live process uses it, and Cleanup removes it after) and
// returns it. Listen on it, e.g. net.Listen("tcp", addr.String()+":0"), for servers
// that instances must reach.
func ServiceAddr() (netip.Addr, error) {
	serviceMu.Lock()
	defer serviceMu.Unlock()
	if serviceLock != nil {
		return serviceAddr, nil
	}
	if _, err := currentRun(); err != nil { // sweeps first: never races our own Cleanup
		return netip.Addr{}, err
	}
	f, err := os.OpenFile(filepath.Join(StateDir, "service.lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("service address lock: %w", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_SH); err != nil {
		f.Close()
		return netip.Addr{}, fmt.Errorf("service address lock: %w", err)
	}
	assigned, err := addrAssigned(serviceAddr)
	if err == nil && !assigned {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		err = run(ctx, "ip", "addr", "add", serviceAddr.String()+"/32", "dev", "lo")
		if err != nil {
			// Another process may have added it in between.
			if ok, _ := addrAssigned(serviceAddr); ok {
				err = nil
			}
		}
	}
	if err != nil {
		f.Close()
		return netip.Addr{}, fmt.Errorf("adding the service address %s to lo: %w", serviceAddr, err)
	}
	serviceLock = f
	return serviceAddr, nil
}

// removeUnusedServiceAddr takes the service address off lo when no live process
// uses it.
func removeUnusedServiceAddr() error {
	f, err := os.OpenFile(filepath.Join(StateDir, "service.lock"), os.O_RDWR, 0)
	if err != nil {
		return nil // never used
	}
	defer f.Close()
	if unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB) != nil {
		return nil // in use
	}
	if ok, _ := addrAssigned(serviceAddr); !ok {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := run(ctx, "ip", "addr", "del", serviceAddr.String()+"/32", "dev", "lo"); err != nil {
		if ok, _ := addrAssigned(serviceAddr); ok {
			return fmt.Errorf("removing the unused service address: %w", err)
		}
	}
	return nil
}
