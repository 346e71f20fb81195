package targetgroup

import (
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyevents"
	"go.uber.org/zap"
)

// Events are emitted through Caddy's events app from one queue, drained
// by a goroutine of its own: the health-check, API and sync paths that
// produce them never wait for a subscriber. A queue that is full (a
// subscriber slower than the changes) drops the event, counts it
// (caddy_target_group_events_dropped_total) and logs at most every 10 s.
const eventQueueSize = 4096

type event struct {
	name string
	data map[string]any
}

// emit queues e. It never blocks.
func (r *Registry) emit(e event) {
	if r.observe != nil {
		r.observe(e.name, e.data)
	}
	select {
	case r.eventQ <- e:
	default:
		eventsDropped.Inc()
		if now := time.Now().UnixNano(); now-r.eventDropLogged.Load() > int64(10*time.Second) {
			r.eventDropLogged.Store(now)
			r.logger.Warn("event queue full: events are dropped until subscribers catch up", zap.String("event", e.name), zap.Int("queue", eventQueueSize))
		}
	}
}

// runEvents delivers queued events to the events app of the running
// config, until the registry is destructed. The running config's, not the
// one being loaded: Caddy makes a context active once all its apps have
// started, the events app included, whose subscriptions are set up as it
// starts.
func (r *Registry) runEvents() {
	go func() {
		for {
			select {
			case <-r.stop:
				return
			case e := <-r.eventQ:
				ctx, ok := r.activeContext()
				if !ok {
					return
				}
				app, err := ctx.AppIfConfigured("events")
				if events, ok := app.(*caddyevents.App); err == nil && ok {
					r.runLogged("event "+e.name, func() { events.Emit(ctx, e.name, e.data) })
				}
			}
		}
	}()
}

// groupEvent is an event about a group as a whole.
func groupEvent(name string, g *Group) event {
	return event{name: name, data: map[string]any{"group": g.name, "id": g.id}}
}

// activeContext waits for a running config, which there is not while the
// first one starts (its events wait for it), up to 10 s. ok is false when
// the registry was destructed meanwhile.
func (r *Registry) activeContext() (ctx caddy.Context, ok bool) {
	for wait := 0; ; wait++ {
		if ctx = caddy.ActiveContext(); ctx.Context != nil || wait == 1000 {
			return ctx, true
		}
		select {
		case <-r.stop:
			return ctx, false
		case <-time.After(10 * time.Millisecond):
		}
	}
}
