package targetgroup

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"go.uber.org/zap"
)

// fakeResolver answers every lookup with what the test set last.
type fakeResolver struct {
	mu  sync.Mutex
	ips []netip.Addr
	err error
}

func (f *fakeResolver) set(ips ...string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.ips, f.err = nil, nil
	for _, s := range ips {
		f.ips = append(f.ips, netip.MustParseAddr(s))
	}
}

func (f *fakeResolver) LookupNetIP(_ context.Context, network, _ string) ([]netip.Addr, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []netip.Addr
	for _, ip := range f.ips {
		if ip.Is4() == (network == "ip4") {
			out = append(out, ip)
		}
	}
	return out, f.err
}

// countingBackend is an HTTP server that counts the connections it accepts.
func countingBackend(t *testing.T) (port int, conns *atomic.Int64) {
	conns = new(atomic.Int64)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	srv.Start()
	t.Cleanup(srv.Close)
	return srv.Listener.Addr().(*net.TCPAddr).Port, conns
}

// nameGroup is a registry with one instance group whose host names resolve
// through a fake resolver, and allowed_cidrs set to allowed.
func nameGroup(t *testing.T, allowed string, port int) (*Registry, *Group, *fakeResolver) {
	t.Helper()
	r := newRegistry(zap.NewNop())
	t.Cleanup(func() { _ = r.Destruct() })
	res := &fakeResolver{}
	r.resolver = res
	prefixes, err := ParseCIDRs([]string{allowed})
	if err != nil {
		t.Fatal(err)
	}
	r.allowed.Store(&prefixes)
	g, _, err := r.CreateGroup(CreateRequest{Name: "names", GroupConfig: GroupConfig{Type: TypeInstance, Port: port}})
	if err != nil {
		t.Fatal(err)
	}
	return r, g, res
}

func onlyTarget(g *Group) *Target {
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, t := range g.targets {
		return t
	}
	return nil
}

// A host name resolving outside allowed_cidrs is unused with the address in
// its description, never connected to, never routable; one resolving
// inside is checked and routed to its address, and a later answer outside
// (DNS rebinding) takes it out again at once.
func TestHostNamesStayInsideAllowedCIDRs(t *testing.T) {
	port, conns := countingBackend(t)
	r, g, res := nameGroup(t, "10.0.0.0/8", port)
	if _, err := r.RegisterTargets("names", []TargetConfig{{ID: "app.internal"}}); err != nil {
		t.Fatal(err)
	}
	tg := onlyTarget(g)
	res.set("127.0.0.1")
	g.check(context.Background(), tg)
	d := g.DescribeTargetHealth()[0].TargetHealth
	if d.State != StateUnused || d.Reason != ReasonInvalidState || !strings.Contains(d.Description, "127.0.0.1") {
		t.Fatalf("name resolving outside allowed_cidrs: %+v, want unused / Target.InvalidState naming 127.0.0.1", d)
	}
	if n := conns.Load(); n != 0 {
		t.Fatalf("the health check connected %d times to an address outside allowed_cidrs", n)
	}
	if _, err := tg.DialAddr(); err == nil {
		t.Fatal("DialAddr gave an address for a name that resolves outside allowed_cidrs")
	}
	if n := len(g.Snapshot().Routable); n != 0 {
		t.Fatalf("%d routable targets, want 0", n)
	}

	// Inside: checked at the resolved address, routed there.
	wide, _ := ParseCIDRs([]string{"127.0.0.0/8"})
	r.allowed.Store(&wide)
	res.set("192.0.2.1", "127.0.0.1") // the first answer is outside: skipped
	for range 2 {
		g.check(context.Background(), tg)
	}
	if s := g.DescribeTargetHealth()[0].TargetHealth.State; s != StateHealthy {
		t.Fatalf("name resolving inside: %s, want healthy", s)
	}
	if conns.Load() == 0 {
		t.Fatal("no health check reached the resolved address")
	}
	snap := g.Snapshot()
	if len(snap.Routable) != 1 || snap.Dial(0) != netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(port)).String() {
		t.Fatalf("routable %d, dial %v: want the resolved address", len(snap.Routable), snap.dials)
	}

	// Rebinding: the next answer points elsewhere.
	before := conns.Load()
	res.set("169.254.169.254")
	g.check(context.Background(), tg)
	if s := g.DescribeTargetHealth()[0].TargetHealth.State; s != StateUnused {
		t.Fatalf("after rebinding: %s, want unused", s)
	}
	if len(g.Snapshot().Routable) != 0 || conns.Load() != before {
		t.Fatal("a rebound name stayed routable or was connected to")
	}
	if _, err := tg.DialAddr(); err == nil {
		t.Fatal("DialAddr gave an address after rebinding")
	}
}

// IPv6 groups resolve host names to IPv6 addresses only.
func TestIPv6InstanceTargetsResolveToIPv6(t *testing.T) {
	r := newRegistry(zap.NewNop())
	defer r.Destruct()
	res := &fakeResolver{}
	res.set("127.0.0.1", "::1")
	r.resolver = res
	ip, err := r.resolve(context.Background(), "app", IPv6, 80)
	if err != nil || ip != netip.MustParseAddr("::1") {
		t.Fatalf("resolve in an ipv6 group: %v %v, want ::1", ip, err)
	}
	res.err = errors.New("no such host")
	res.ips = nil
	if _, err := r.resolve(context.Background(), "app", IPv6, 80); err == nil || !strings.Contains(err.Error(), "does not resolve") {
		t.Fatalf("unresolvable: %v", err)
	}
}

func TestMetadataAddressesAreRefusedByDefault(t *testing.T) {
	def := mustCIDRs(t)
	v4 := mustSpec(t, &GroupConfig{Port: 80})
	v6 := mustSpec(t, &GroupConfig{Port: 80, IPAddressType: IPv6})
	for _, c := range []struct {
		spec *Spec
		id   string
	}{{v4, "100.100.100.200"}, {v6, "fd00:ec2::254"}} {
		_, err := c.spec.NormalizeTarget(TargetConfig{ID: c.id}, def)
		if err == nil || !strings.Contains(err.Error(), "metadata") {
			t.Errorf("%s with the default allowed_cidrs: %v, want refused as a metadata address", c.id, err)
		}
		own, _ := ParseCIDRs([]string{netip.PrefixFrom(netip.MustParseAddr(c.id), netip.MustParseAddr(c.id).BitLen()).String()})
		if _, err := c.spec.NormalizeTarget(TargetConfig{ID: c.id}, own); err != nil {
			t.Errorf("%s named by itself in allowed_cidrs: %v", c.id, err)
		}
	}
	// Their neighbours in the same blocks are fine.
	if _, err := v4.NormalizeTarget(TargetConfig{ID: "100.100.100.201"}, def); err != nil {
		t.Error(err)
	}
}

func TestAdminListenerIsNoTarget(t *testing.T) {
	NoteAdminListener(&net.TCPAddr{IP: net.ParseIP("127.0.0.1"), Port: 42019})
	spec := mustSpec(t, &GroupConfig{Port: 80})
	_, err := spec.NormalizeTarget(TargetConfig{ID: "127.0.0.1", Port: 42019}, mustCIDRs(t))
	var ve *ValidationError
	if !errors.As(err, &ve) || ve.Field != "id" || !strings.Contains(ve.Message, "admin") {
		t.Fatalf("the admin listener as a target: %v, want a validation error on id naming the admin endpoint", err)
	}
	if _, err := spec.NormalizeTarget(TargetConfig{ID: "127.0.0.1", Port: 42020}, mustCIDRs(t)); err != nil {
		t.Fatalf("another port: %v", err)
	}
	r := newRegistry(zap.NewNop())
	defer r.Destruct()
	if err := r.CheckDial("127.0.0.1:42019"); err == nil {
		t.Fatal("a dial to the admin listener was allowed")
	}
}

// A load re-checks targets registered through the API: one that no longer
// fits is unused and unroutable, and comes back through initial when a
// later load makes it fit.
func TestRevalidateOnReload(t *testing.T) {
	l := newLifecycle(t, &GroupConfig{})
	if _, err := l.reg.RegisterTargets("web", []TargetConfig{{ID: "127.0.0.1", Port: 1}, {ID: "127.0.0.1", Port: 2}}); err != nil {
		t.Fatal(err)
	}
	l.check(1, true)
	l.check(2, true)
	narrow, _ := ParseCIDRs([]string{"10.0.0.0/8"})
	l.g.lock()
	l.g.revalidate(narrow)
	l.g.publish()
	l.g.unlock()
	l.expect(1, StateUnused, ReasonInvalidState)
	if d := l.g.DescribeTargetHealth()[0].TargetHealth.Description; !strings.Contains(d, "outside the allowed CIDR blocks") {
		t.Fatalf("description %q does not say why", d)
	}
	if n := len(l.g.Snapshot().Routable); n != 0 {
		t.Fatalf("%d routable after narrowing, want 0", n)
	}
	// A check already under way changes nothing.
	l.check(1, true)
	l.expect(1, StateUnused, ReasonInvalidState)

	l.g.lock()
	l.g.revalidate(mustCIDRs(t))
	l.g.publish()
	l.g.unlock()
	l.expect(1, StateInitial, ReasonRegistrationInProgress)
	l.check(1, true)
	l.expect(1, StateHealthy, "")

	// A type change: the one-target rule of alb keeps one.
	alb := mustSpec(t, &GroupConfig{Type: TypeALB, Port: 80})
	l.g.lock()
	l.g.setSpec(alb)
	l.g.revalidate(mustCIDRs(t))
	l.g.publish()
	l.g.unlock()
	s1, _ := l.state(1)
	s2, r2 := l.state(2)
	if s1 == StateUnused || s2 != StateUnused || r2 != ReasonInvalidState {
		t.Fatalf("alb group with two targets: %s and %s (%s), want the second unused", s1, s2, r2)
	}
}

func TestIPv6GroupsOnlyWithTCPOrTLS(t *testing.T) {
	for _, p := range []string{ProtocolUDP, ProtocolTCPUDP} {
		_, err := NewSpec(&GroupConfig{Protocol: p, Port: 53, IPAddressType: IPv6}, mustCIDRs(t))
		if err == nil || !strings.Contains(err.Error(), "ip_address_type") {
			t.Errorf("ipv6 %s group: %v, want refused naming ip_address_type", p, err)
		}
	}
	for _, p := range []string{ProtocolTCP, ProtocolTLS, ProtocolHTTP} {
		if _, err := NewSpec(&GroupConfig{Protocol: p, Port: 443, IPAddressType: IPv6}, mustCIDRs(t)); err != nil {
			t.Errorf("ipv6 %s group: %v", p, err)
		}
	}
}

// NLB: a group is healthy as long as it has at least one healthy target;
// an empty one is not.
func TestGroupHealthNeedsAHealthyTarget(t *testing.T) {
	l := newLifecycle(t, &GroupConfig{})
	if h := l.g.Health(); !h.DNSFailover {
		t.Fatalf("empty group: %+v, want dns_failover", h)
	}
	l.reg.RegisterTargets("web", []TargetConfig{{ID: "127.0.0.1", Port: 1}})
	if h := l.g.Health(); !h.DNSFailover {
		t.Fatalf("only an initial target: %+v, want dns_failover", h)
	}
	l.check(1, true)
	if h := l.g.Health(); h.DNSFailover {
		t.Fatalf("one healthy target: %+v", h)
	}
}

// Re-registration changes a target's zone and weight while the request
// path reads its identity: no data race (run with -race).
func TestReRegistrationRacesNothing(t *testing.T) {
	l := newLifecycle(t, &GroupConfig{})
	l.reg.RegisterTargets("web", []TargetConfig{{ID: "127.0.0.1", Port: 1}})
	l.check(1, true)
	var wg sync.WaitGroup
	stop := make(chan struct{})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			for _, tg := range l.g.Snapshot().Routable {
				_ = tg.Key().String()
				_, _ = tg.DialAddr()
			}
		}
	}()
	for i := range 200 {
		zone := []string{"a", "b"}[i%2]
		if _, err := l.reg.RegisterTargets("web", []TargetConfig{{ID: "127.0.0.1", Port: 1, AvailabilityZone: zone, Weight: i%5 + 1}}); err != nil {
			t.Fatal(err)
		}
	}
	close(stop)
	wg.Wait()
}
