package targetgroup

import (
	"time"

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

// runEvents delivers queued events to the events app of the config in
// force, until the registry is destructed.
func (r *Registry) runEvents() {
	go func() {
		for {
			select {
			case <-r.stop:
				return
			case e := <-r.eventQ:
				if s := r.events.Load(); s != nil && s.app != nil {
					r.runLogged("event "+e.name, func() { s.app.Emit(s.ctx, e.name, e.data) })
				}
			}
		}
	}()
}

// groupEvent is an event about a group as a whole.
func groupEvent(name string, g *Group) event {
	return event{name: name, data: map[string]any{"group": g.name, "id": g.id}}
}
