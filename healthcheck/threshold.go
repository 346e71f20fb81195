package healthcheck

// Status is the health of a target as decided by its Threshold.
type Status uint8

const (
	StatusInitial   Status = iota // registered, no check has passed yet
	StatusHealthy                 // passing: receives traffic
	StatusUnhealthy               // failed unhealthyThreshold checks in a row
)

// String returns the lower-case name used in logs and the admin API.
func (s Status) String() string {
	switch s {
	case StatusInitial:
		return "initial"
	case StatusHealthy:
		return "healthy"
	case StatusUnhealthy:
		return "unhealthy"
	}
	return "unknown"
}

// Threshold is the consecutive-result state machine of ELB target health.
// Thresholds are passed to Observe rather than stored so that a settings
// change applies to the run in progress without resetting it. The zero value
// is a freshly registered target. It is not safe for concurrent use; a target
// is checked by one job at a time.
type Threshold struct {
	Status Status
	passes int // consecutive passes, reset by a failure
	fails  int // consecutive failures, reset by a pass
}

// Observe records one check result and reports whether Status changed.
//
// A new target becomes healthy on its first pass, whatever healthyThreshold,
// as ELB does: a target that was just registered should get traffic as soon
// as it proves alive, while a target that went unhealthy has to earn its
// place back with healthyThreshold passes in a row. Thresholds below 1 count
// as 1.
func (t *Threshold) Observe(pass bool, healthyThreshold, unhealthyThreshold int) (changed bool) {
	old := t.Status
	if pass {
		t.fails = 0
		t.passes++
		switch t.Status {
		case StatusInitial:
			t.Status = StatusHealthy
		case StatusUnhealthy:
			if t.passes >= healthyThreshold {
				t.Status = StatusHealthy
			}
		}
	} else {
		t.passes = 0
		t.fails++
		if t.Status != StatusUnhealthy && t.fails >= unhealthyThreshold {
			t.Status = StatusUnhealthy
		}
	}
	return t.Status != old
}

// Reset returns the target to Initial, as on re-registration.
func (t *Threshold) Reset() { *t = Threshold{} }
