package targetgroup

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// DefaultAllowedCIDRs are the blocks of the AWS documents (RFC 1918 and
// RFC 6598), plus loopback and IPv6 unique local addresses, which are what a
// single host's backends use.
var DefaultAllowedCIDRs = []string{
	"127.0.0.0/8", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10",
	"::1/128", "fc00::/7",
}

// metadataAddrs are the instance metadata services of cloud providers. On
// AWS the load balancer is not on the instance; here Caddy is, and these
// addresses hand out the host's credentials. Some sit inside the private
// blocks (100.100.100.200 in 100.64.0.0/10, fd00:ec2::254 in fc00::/7), so
// they are refused unless allowed_cidrs names them by themselves.
var metadataAddrs = []netip.Addr{
	netip.MustParseAddr("169.254.169.254"), // AWS, Azure, Google Cloud, ...
	netip.MustParseAddr("169.254.170.2"),   // AWS ECS task metadata
	netip.MustParseAddr("100.100.100.200"), // Alibaba Cloud
	netip.MustParseAddr("fd00:ec2::254"),   // AWS, over IPv6
}

// ParseCIDRs parses a list of CIDR blocks; an empty list means the default.
func ParseCIDRs(list []string) ([]netip.Prefix, error) {
	if len(list) == 0 {
		list = DefaultAllowedCIDRs
	}
	out := make([]netip.Prefix, 0, len(list))
	for i, s := range list {
		p, err := netip.ParsePrefix(strings.TrimSpace(s))
		if err != nil {
			return nil, fieldErr(fmt.Sprintf("allowed_cidrs[%d]", i), "%q is not a CIDR block such as 10.0.0.0/8", s)
		}
		out = append(out, p.Masked())
	}
	return out, nil
}

// permitted reports whether a target may have address ip: inside a block of
// allowed, and not a metadata address unless a block is that address alone.
func permitted(ip netip.Addr, allowed []netip.Prefix) bool {
	ip = ip.Unmap()
	if slices.Contains(metadataAddrs, ip) {
		return slices.Contains(allowed, netip.PrefixFrom(ip, ip.BitLen()))
	}
	for _, p := range allowed {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

func checkIP(ip netip.Addr, family string, allowed []netip.Prefix) error {
	if ip.Is4() != (family == IPv4) {
		return fieldErr("id", "%s is not an %s address; every target must match the group's ip_address_type", ip, family)
	}
	if slices.Contains(metadataAddrs, ip) && !permitted(ip, allowed) {
		return fieldErr("id", "%s is a cloud metadata address, which targets can't have unless allowed_cidrs lists %s by itself", ip, netip.PrefixFrom(ip, ip.BitLen()))
	}
	if !permitted(ip, allowed) {
		return fieldErr("id", "%s is outside the allowed CIDR blocks (%s); publicly routable addresses can't be registered", ip, cidrList(allowed))
	}
	return nil
}

func cidrList(allowed []netip.Prefix) string {
	list := make([]string, len(allowed))
	for i, p := range allowed {
		list[i] = p.String()
	}
	return strings.Join(list, ", ")
}

// adminListeners are the addresses this process's admin endpoint answers
// on, learned from the requests it serves (Caddy does not expose its admin
// configuration to modules). There is one admin endpoint per process, hence
// one set. A target there would let whoever can reach the target reach the
// admin API through Caddy itself. Every dial reads the set, so it is an
// immutable value behind an atomic pointer; mu serialises its writers and
// the cache of this host's addresses, which only a dial to an admin port
// needs.
var adminListeners struct {
	set   atomic.Pointer[adminSet]
	mu    sync.Mutex
	local []netip.Addr // this host's interface addresses, cached
	at    time.Time
}

type adminSet struct {
	ports []int            // ports the admin endpoint was reached on
	addrs []netip.AddrPort // exact addresses it was reached on
}

// ForgetAdminListeners starts over: the admin endpoint is rebuilt, perhaps
// elsewhere, at every config load, and its first request teaches the new
// address. A port the admin endpoint gave up may serve a backend next.
func ForgetAdminListeners() {
	adminListeners.mu.Lock()
	defer adminListeners.mu.Unlock()
	adminListeners.set.Store(nil)
}

// NoteAdminListener records an address the admin endpoint was reached on;
// the admin API calls it with the local address of every request.
func NoteAdminListener(a net.Addr) {
	tcp, ok := a.(*net.TCPAddr)
	if !ok {
		return
	}
	ap := tcp.AddrPort()
	ap = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	if cur := adminListeners.set.Load(); cur != nil && slices.Contains(cur.addrs, ap) {
		return // known: the common case, lock-free
	}
	adminListeners.mu.Lock()
	defer adminListeners.mu.Unlock()
	next := &adminSet{}
	if cur := adminListeners.set.Load(); cur != nil {
		if slices.Contains(cur.addrs, ap) {
			return
		}
		next.ports, next.addrs = slices.Clone(cur.ports), slices.Clone(cur.addrs)
	}
	next.addrs = append(next.addrs, ap)
	if !slices.Contains(next.ports, int(ap.Port())) {
		next.ports = append(next.ports, int(ap.Port()))
	}
	adminListeners.set.Store(next)
}

// isAdminListener reports whether ip:port reaches this Caddy's admin
// endpoint: an address it was reached on, or its port on loopback or on an
// address of this host (an admin endpoint on a wildcard address answers on
// every one of them).
func isAdminListener(ip netip.Addr, port int) bool {
	ip = ip.Unmap()
	set := adminListeners.set.Load()
	if set == nil || !slices.Contains(set.ports, port) {
		return false
	}
	if slices.Contains(set.addrs, netip.AddrPortFrom(ip, uint16(port))) || ip.IsLoopback() || ip.IsUnspecified() {
		return true
	}
	adminListeners.mu.Lock()
	defer adminListeners.mu.Unlock()
	if time.Since(adminListeners.at) > 10*time.Second {
		adminListeners.local = adminListeners.local[:0]
		if addrs, err := net.InterfaceAddrs(); err == nil {
			for _, a := range addrs {
				if n, ok := a.(*net.IPNet); ok {
					if x, ok := netip.AddrFromSlice(n.IP); ok {
						adminListeners.local = append(adminListeners.local, x.Unmap())
					}
				}
			}
		}
		adminListeners.at = time.Now()
	}
	return slices.Contains(adminListeners.local, ip)
}

func errAdminListener(ip netip.Addr, port int) error {
	return fieldErr("id", "%s is this Caddy's own admin endpoint; a target can't be the admin API", netip.AddrPortFrom(ip, uint16(port)))
}

// checkDial is the last check before any connection to a target: the
// address is inside the allow-list in force and is not the admin endpoint.
func (r *Registry) checkDial(ap netip.AddrPort) error {
	ip := ap.Addr().Unmap()
	if !permitted(ip, r.Allowed()) {
		return fmt.Errorf("%s is outside allowed_cidrs (%s); not connecting", ip, cidrList(r.Allowed()))
	}
	if isAdminListener(ip, int(ap.Port())) {
		return fmt.Errorf("%s is this Caddy's own admin endpoint; not connecting", ap)
	}
	return nil
}

// CheckDial checks an "ip:port" about to be dialed as checkDial does; a host
// name is refused, since only resolved and checked addresses are dialed.
func (r *Registry) CheckDial(address string) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return fmt.Errorf("%s is not an address a target resolved to; not connecting", address)
	}
	return r.checkDial(ap)
}

// resolver looks host names up; tests replace it.
type resolver interface {
	LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error)
}

// resolve finds the address a host-name target connects to: the first one
// its name resolves to (in the group's IP family) that checkDial accepts at
// port. The error names what it resolved to when none is acceptable.
func (r *Registry) resolve(ctx context.Context, host, family string, port int) (netip.Addr, error) {
	network := "ip4"
	if family == IPv6 {
		network = "ip6"
	}
	ips, err := r.resolver.LookupNetIP(ctx, network, host)
	if err != nil || len(ips) == 0 {
		if err == nil {
			err = fmt.Errorf("no %s address", family)
		}
		return netip.Addr{}, fmt.Errorf("target host name %s does not resolve: %v", host, err)
	}
	var refused []string
	for _, ip := range ips {
		ip = ip.Unmap()
		if err := r.checkDial(netip.AddrPortFrom(ip, uint16(port))); err != nil {
			refused = append(refused, ip.String())
			continue
		}
		return ip, nil
	}
	return netip.Addr{}, fmt.Errorf("target host name %s resolves to %s, outside allowed_cidrs (%s) or this Caddy's admin endpoint; it is never connected to",
		host, strings.Join(refused, ", "), cidrList(r.Allowed()))
}
