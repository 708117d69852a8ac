package instance

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sync"
)

// Network is a network namespace of our own with a veth pair: the host side (named
// like the namespace) in the host's namespace, eth0 inside, each with one address of
// a /30 leased from 169.254.64.0/18, loopback up, and one route out: to the service
// address (ServiceAddr). Instances run sshd in one; localenv/vm runs a qemu guest in
// one, whose user network forwards Addr():22 to the guest.
type Network struct {
	name      string
	lease     *addrLease
	closeOnce sync.Once
	closeErr  error
}

// NewNetwork creates a network namespace and its veth pair, at addr (the instance's
// address, see Config.Addr) or, for the zero addr, at a free /30. Close removes it;
// after a crash Cleanup does (the name belongs to this process's run).
func NewNetwork(ctx context.Context, addr netip.Addr) (_ *Network, err error) {
	name, err := newName()
	if err != nil {
		return nil, err
	}
	lease, err := leaseAddr(addr)
	if err != nil {
		return nil, err
	}
	n := &Network{name: name, lease: lease}
	defer func() {
		if err != nil {
			n.Close()
		}
	}()
	host := netip.PrefixFrom(lease.host, 30).String()
	inst := netip.PrefixFrom(lease.inst, 30).String()
	steps := [][]string{
		{"netns", "add", name},
		{"link", "add", name, "type", "veth", "peer", "name", "eth0", "netns", name},
		{"addr", "add", host, "dev", name},
		{"link", "set", name, "up"},
		{"-n", name, "addr", "add", inst, "dev", "eth0"},
		{"-n", name, "link", "set", "lo", "up"},
		{"-n", name, "link", "set", "eth0", "up"},
		// The only way out: to the service address (see ServiceAddr).
		{"-n", name, "route", "add", serviceAddr.String() + "/32", "via", lease.host.String()},
	}
	for _, args := range steps {
		if err := run(ctx, "ip", args...); err != nil {
			return nil, fmt.Errorf("creating network namespace %s: %w", name, err)
		}
	}
	return n, nil
}

// Name is the namespace's name (for `ip netns exec`), also the host-side link's.
func (n *Network) Name() string { return n.name }

// Addr is the address inside the namespace (eth0), reachable from the host.
func (n *Network) Addr() netip.Addr { return n.lease.inst }

// HostAddr is the host side of the veth pair.
func (n *Network) HostAddr() netip.Addr { return n.lease.host }

// PIDs lists the processes that run in the namespace.
func (n *Network) PIDs() ([]int, error) { return netNSPIDs(n.name) }

// Close kills whatever still runs in the namespace, deletes the veth pair and the
// namespace and releases the address. It is idempotent.
func (n *Network) Close() error {
	n.closeOnce.Do(func() {
		var errs []error
		// Deleting the host end removes the pair at once; a namespace deletion alone
		// would free the veth only asynchronously.
		if err := deleteLink(n.name); err != nil {
			errs = append(errs, err)
		}
		if err := removeNetNS(n.name); err != nil {
			errs = append(errs, err)
		}
		n.lease.release()
		n.closeErr = errors.Join(errs...)
	})
	return n.closeErr
}
