package instance

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// Each instance gets a /30 out of addrPool: the host side of the veth pair takes the
// first usable address, the instance the second. The pool stays clear of
// 169.254.169.0/24 and 169.254.170.0/24 (the EC2 metadata and ECS task addresses).
var addrPool = netip.MustParsePrefix("169.254.64.0/18")

// addrLease is a /30 held by an flock on StateDir/addrs/<network>.lock for as long as
// the instance lives; a crashed process releases it with its file descriptors.
type addrLease struct {
	host, inst netip.Addr
	lock       *os.File
}

func (l *addrLease) release() {
	if l != nil && l.lock != nil {
		l.lock.Close()
		l.lock = nil
	}
}

// leaseAddr reserves want's /30 (want is the instance address), or a free /30 of
// addrPool when want is the zero Addr.
func leaseAddr(want netip.Addr) (*addrLease, error) {
	dir := filepath.Join(StateDir, "addrs")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("creating address lock directory: %w", err)
	}
	if want.IsValid() {
		host, err := partner(want)
		if err != nil {
			return nil, err
		}
		l, err := tryLease(dir, host, want)
		if err != nil {
			return nil, err
		}
		if l == nil {
			return nil, fmt.Errorf("instance address %s: its /30 is in use by another instance or interface; pick another Config.Addr or leave it empty", want)
		}
		return l, nil
	}
	slots := 1 << (32 - addrPool.Bits() - 2)
	start := rand.IntN(slots)
	base := addrPool.Addr().As4()
	for i := range slots {
		n := uint32(base[0])<<24 | uint32(base[1])<<16 | uint32(base[2])<<8 | uint32(base[3])
		n += uint32((start+i)%slots) * 4
		host := netip.AddrFrom4([4]byte{byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n + 1)})
		l, err := tryLease(dir, host, host.Next())
		if err != nil {
			return nil, err
		}
		if l != nil {
			return l, nil
		}
	}
	return nil, fmt.Errorf("no free instance address in %s: stop some instances or run instance.Cleanup", addrPool)
}

// partner returns the other usable address of a's /30.
func partner(a netip.Addr) (netip.Addr, error) {
	if !a.Is4() {
		return netip.Addr{}, fmt.Errorf("instance address %s: must be IPv4", a)
	}
	b := a.As4()
	switch b[3] & 3 {
	case 1:
		b[3]++
	case 2:
		b[3]--
	default:
		return netip.Addr{}, fmt.Errorf("instance address %s: must be the first or second usable address of its /30 (x.x.x.4n+1 or 4n+2)", a)
	}
	return netip.AddrFrom4(b), nil
}

// tryLease locks host/inst's /30 or returns nil when another instance holds it or an
// interface (a leftover of a crashed run) already carries one of its addresses.
func tryLease(dir string, host, inst netip.Addr) (*addrLease, error) {
	network := netip.PrefixFrom(host, 30).Masked().Addr()
	f, err := os.OpenFile(filepath.Join(dir, network.String()+".lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("address lock: %w", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, nil
		}
		return nil, fmt.Errorf("locking %s: %w", f.Name(), err)
	}
	inUse, err := addrAssigned(host, inst)
	if err != nil || inUse {
		f.Close()
		return nil, err
	}
	return &addrLease{host: host, inst: inst, lock: f}, nil
}

// addrAssigned reports whether an interface of the host's network namespace carries
// one of addrs.
func addrAssigned(addrs ...netip.Addr) (bool, error) {
	ifaddrs, err := net.InterfaceAddrs()
	if err != nil {
		return false, fmt.Errorf("listing host addresses: %w", err)
	}
	for _, ia := range ifaddrs {
		ipn, ok := ia.(*net.IPNet)
		if !ok {
			continue
		}
		got, ok := netip.AddrFromSlice(ipn.IP)
		if !ok {
			continue
		}
		for _, a := range addrs {
			if got.Unmap() == a {
				return true, nil
			}
		}
	}
	return false, nil
}
