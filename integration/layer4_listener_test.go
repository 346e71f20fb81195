package integration_test

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	_ "github.com/mholt/caddy-l4/modules/l4subroute"
)

// listenerConfig is a config with the given groups and layer4 servers
// (name → listen addresses and the handler JSON of their one route).
func listenerConfig(groups map[string]any, servers map[string]struct {
	listen []string
	handle map[string]any
}) string {
	srvs := map[string]any{}
	for name, s := range servers {
		srvs[name] = map[string]any{"listen": s.listen, "routes": []any{map[string]any{"handle": []any{s.handle}}}}
	}
	return caddyConfig{groups: groups, layer4: srvs}.json()
}

// TestLayer4ListenerMustFitGroupProtocol: a layer4 route whose listener
// network its group's protocol does not carry is a config error naming
// the server, the listener, the group and what fits; nothing is started.
func TestLayer4ListenerMustFitGroupProtocol(t *testing.T) {
	type server = struct {
		listen []string
		handle map[string]any
	}
	groups := map[string]any{
		"tcp-group": l4Group("TCP", nil),
		"tls-group": l4Group("TLS", nil),
		"udp-group": l4Group("UDP", nil),
		"both":      l4Group("TCP_UDP", endAtDeregistration),
	}
	udp, tcp := "udp/"+l4Listen(t), l4Listen(t)
	for _, c := range []struct {
		name    string
		servers map[string]server
		want    []string // in the error
	}{
		{"udp listener to a TCP group", map[string]server{"dns": {[]string{udp}, tgHandler("tcp-group")}},
			[]string{`layer4 server "dns"`, `listener "` + udp + `"`, `target group "tcp-group"`, "protocol TCP", "UDP or TCP_UDP"}},
		{"udp listener to a TLS group", map[string]server{"dns": {[]string{udp}, tgHandler("tls-group")}},
			[]string{`layer4 server "dns"`, `target group "tls-group"`, "protocol TLS", "UDP or TCP_UDP"}},
		{"tcp listener to a UDP group", map[string]server{"db": {[]string{tcp}, tgHandler("udp-group")}},
			[]string{`layer4 server "db"`, `listener "` + tcp + `"`, `target group "udp-group"`, "protocol UDP", "TCP, TLS or TCP_UDP"}},
		{"one of two listeners does not fit", map[string]server{"db": {[]string{tcp, udp}, tgHandler("tcp-group")}},
			[]string{`layer4 server "db"`, `listener "` + udp + `"`, `target group "tcp-group"`}},
		{"in a subroute, beside a fitting server", map[string]server{
			"fine": {[]string{tcp}, tgHandler("tcp-group")},
			"nested": {[]string{udp}, map[string]any{"handler": "subroute", "routes": []any{
				map[string]any{"handle": []any{tgHandler("tcp-group")}},
			}}},
		}, []string{`layer4 server "nested"`, `target group "tcp-group"`}},
	} {
		t.Run(c.name, func(t *testing.T) {
			in := newInstance(t)
			err := in.load(listenerConfig(groups, c.servers))
			if err == nil {
				_ = caddy.Stop()
				t.Fatal("the config loaded")
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error lacks %q: %v", w, err)
				}
			}
		})
	}

	// Configs that fit load: TCP_UDP on both networks, each protocol on its
	// own, and a group the config does not declare (created through the
	// API later, so checked per connection).
	in := startCaddy(t, listenerConfig(groups, map[string]server{
		"both":     {[]string{tcp, udp}, tgHandler("both")},
		"dns":      {[]string{"udp/" + l4Listen(t)}, tgHandler("udp-group")},
		"db":       {[]string{l4Listen(t)}, tgHandler("tcp-group")},
		"tls":      {[]string{l4Listen(t)}, tgHandler("tls-group")},
		"api-only": {[]string{"udp/" + l4Listen(t)}, tgHandler("made-later")},
	}))
	// A config that does not fit, loaded over a running one, is refused
	// and the running one stays.
	if err := in.load(listenerConfig(groups, map[string]server{"dns": {[]string{udp}, tgHandler("tcp-group")}})); err == nil {
		t.Fatal("a config with a udp listener to a TCP group replaced the running one")
	}
	// The refused load replaced the admin endpoint and put the running one
	// back: wait until it answers again.
	waitFor(t, "the admin endpoint after the refused load", 10*time.Second, func() bool {
		resp, err := http.Get("http://" + in.admin + "/config/")
		if err == nil {
			resp.Body.Close()
		}
		return err == nil
	})
	var running map[string]any
	if code := in.api("GET", "/config/apps/layer4/servers", nil, &running); code != 200 || len(running) != 5 || running["both"] == nil {
		t.Fatalf("after the refused load, the running layer4 servers are %v (status %d)", running, code)
	}
	a := newL4Backend(t, "a", "127.0.0.1", l4TCPUDP)
	in.mustAPI("POST", "/target-groups/both/targets", map[string]any{"targets": []any{a.target()}}, nil)
	in.waitStates("both", map[string]string{a.key(): "healthy"})
	if got := udpExchange(t, udpDial(t, strings.TrimPrefix(udp, "udp/")), "still"); got != "a:still" {
		t.Fatalf("the running config answers %q", got)
	}
	// End the flow now rather than at the idle timeout.
	in.mustAPI("POST", "/target-groups/both/targets/deregister", map[string]any{"targets": []any{a.target()}}, nil)
	l4NoHandlersLeft(t)
}
