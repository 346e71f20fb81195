package healthcheck

import "testing"

func TestThreshold(t *testing.T) {
	const P, F = true, false
	tests := []struct {
		name             string
		healthy, unhealt int
		results          []bool
		want             []Status // status after each result
	}{
		{"initial healthy on first pass despite threshold 5", 5, 2,
			[]bool{P}, []Status{StatusHealthy}},
		{"initial unhealthy after threshold failures", 5, 3,
			[]bool{F, F, F}, []Status{StatusInitial, StatusInitial, StatusUnhealthy}},
		{"initial fail run broken by a pass", 5, 2,
			[]bool{F, P, F}, []Status{StatusInitial, StatusHealthy, StatusHealthy}},
		{"healthy unhealthy after threshold failures", 3, 2,
			[]bool{P, F, F}, []Status{StatusHealthy, StatusHealthy, StatusUnhealthy}},
		{"healthy fail run reset by a pass", 3, 2,
			[]bool{P, F, P, F, P}, []Status{StatusHealthy, StatusHealthy, StatusHealthy, StatusHealthy, StatusHealthy}},
		{"unhealthy healthy after threshold passes", 3, 1,
			[]bool{F, P, P, P}, []Status{StatusUnhealthy, StatusUnhealthy, StatusUnhealthy, StatusHealthy}},
		{"unhealthy pass run reset by a failure", 2, 1,
			[]bool{F, P, F, P, P}, []Status{StatusUnhealthy, StatusUnhealthy, StatusUnhealthy, StatusUnhealthy, StatusHealthy}},
		{"threshold 1 flips at once", 1, 1,
			[]bool{P, F, P, F}, []Status{StatusHealthy, StatusUnhealthy, StatusHealthy, StatusUnhealthy}},
		{"thresholds below 1 count as 1", 0, 0,
			[]bool{F, P}, []Status{StatusUnhealthy, StatusHealthy}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var th Threshold
			prev := th.Status
			for i, r := range tt.results {
				changed := th.Observe(r, tt.healthy, tt.unhealt)
				if th.Status != tt.want[i] {
					t.Fatalf("after result %d (%v): status %v, want %v", i, r, th.Status, tt.want[i])
				}
				if changed != (th.Status != prev) {
					t.Fatalf("after result %d: changed=%v, status %v -> %v", i, changed, prev, th.Status)
				}
				prev = th.Status
			}
		})
	}
}

func TestThresholdReset(t *testing.T) {
	var th Threshold
	th.Observe(false, 3, 2)
	th.Observe(false, 3, 2)
	th.Observe(true, 3, 2)
	th.Reset()
	if th != (Threshold{}) {
		t.Fatalf("Reset left %+v", th)
	}
	// Back to Initial: one pass suffices again.
	if !th.Observe(true, 3, 2) || th.Status != StatusHealthy {
		t.Fatalf("after Reset a pass should make the target healthy, got %v", th.Status)
	}
}

func TestStatusString(t *testing.T) {
	for s, want := range map[Status]string{StatusInitial: "initial", StatusHealthy: "healthy", StatusUnhealthy: "unhealthy", 9: "unknown"} {
		if s.String() != want {
			t.Errorf("Status(%d).String() = %q, want %q", s, s.String(), want)
		}
	}
}
