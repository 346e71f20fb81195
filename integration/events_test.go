package integration_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyevents"
)

// recordedEvents collects what the test subscriber module receives.
var recordedEvents struct {
	sync.Mutex
	names []string
	slow  chan struct{} // while open, the subscriber blocks
}

// eventRecorder is an events handler of the tests: it records each event
// it gets, and blocks while recordedEvents.slow is open (a slow
// subscriber).
type eventRecorder struct{}

func (eventRecorder) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{ID: "events.handlers.test_recorder", New: func() caddy.Module { return new(eventRecorder) }}
}

func (eventRecorder) Handle(_ context.Context, e caddy.Event) error {
	recordedEvents.Lock()
	slow := recordedEvents.slow
	recordedEvents.Unlock()
	if slow != nil {
		<-slow
	}
	recordedEvents.Lock()
	defer recordedEvents.Unlock()
	recordedEvents.names = append(recordedEvents.names, fmt.Sprintf("%s %v:%v", e.Name(), e.Data["group"], e.Data["port"]))
	return nil
}

func init() { caddy.RegisterModule(eventRecorder{}) }

var _ caddyevents.Handler = eventRecorder{}

// Events reach a subscriber of Caddy's events app, the new ones included,
// and a subscriber that blocks delays neither the API nor health checks.
func TestEventsReachSubscribersWithoutBlocking(t *testing.T) {
	recordedEvents.Lock()
	recordedEvents.names, recordedEvents.slow = nil, make(chan struct{})
	recordedEvents.Unlock()
	release := sync.OnceFunc(func() {
		recordedEvents.Lock()
		close(recordedEvents.slow)
		recordedEvents.slow = nil
		recordedEvents.Unlock()
	})
	defer release()
	a := newBackend(t, "a")
	in := startCaddy(t, caddyConfig{
		groups: map[string]any{"evented": `{"health_check": {"path": "/health", "interval": "5s", "timeout": "2s"}, "attributes": {"deregistration_delay.timeout_seconds": "0"}}`},
		routes: groupRoutes("evented"),
		apps: map[string]any{"events": map[string]any{"subscriptions": []any{map[string]any{
			"events":   []string{"target_registered", "healthy", "target_group_created", "target_group_deleted", "target_deregistered", "drained", "target_group_health_changed"},
			"handlers": []any{map[string]any{"handler": "test_recorder"}},
		}}}},
	}.json())
	// The subscriber blocks: the API and the first health check go on.
	in.register("evented", a.port())
	in.waitStates("evented", map[string]string{fmt.Sprintf("127.0.0.1:%d", a.port()): "healthy"})
	in.mustAPI("POST", "/target-groups/", map[string]any{"name": "fleeting", "port": 80}, nil)
	in.mustAPI("DELETE", "/target-groups/fleeting", nil, nil)
	in.mustAPI("POST", "/target-groups/evented/targets/deregister", targets(a.port()), nil)
	release()
	want := []string{
		fmt.Sprintf("target_registered evented:%d", a.port()),
		fmt.Sprintf("healthy evented:%d", a.port()),
		"target_group_created fleeting:<nil>",
		"target_group_deleted fleeting:<nil>",
		fmt.Sprintf("target_deregistered evented:%d", a.port()),
		fmt.Sprintf("drained evented:%d", a.port()),
		"target_group_health_changed evented:<nil>",
	}
	waitFor(t, "the events to reach the subscriber", 10*time.Second, func() bool {
		recordedEvents.Lock()
		defer recordedEvents.Unlock()
		for _, w := range want {
			if !slices.Contains(recordedEvents.names, w) {
				return false
			}
		}
		return true
	})
}
