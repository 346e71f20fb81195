package targetgroup

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// Draining targets count toward max_targets_per_group: register/deregister
// cycles can't grow a group past it.
func TestDrainingTargetsCountTowardTheQuota(t *testing.T) {
	l := newLifecycle(t, &GroupConfig{Attributes: map[string]string{AttrDeregistrationDelay: "300"}})
	limits := Limits{MaxTargetsPerGroup: 10}.withDefaults()
	l.reg.limits.Store(&limits)
	batch := func(cycle int) []TargetConfig {
		ts := make([]TargetConfig, 10)
		for i := range ts {
			ts[i] = TargetConfig{ID: "127.0.0.1", Port: 1000*cycle + i + 1}
		}
		return ts
	}
	mustRegister(t, l.reg, "web", batch(0))
	must(t, l.reg.DeregisterTargets("web", batch(0)))
	for cycle := 1; cycle < 5; cycle++ {
		_, err := l.reg.RegisterTargets("web", batch(cycle))
		expectAPIError(t, "registering past the quota", err, http.StatusBadRequest, CodeQuotaExceeded)
		if msg := err.Error(); !strings.Contains(msg, "draining") || !strings.Contains(msg, "max_targets_per_group is 10") {
			t.Fatalf("the quota error does not say draining targets count: %v", err)
		}
		_ = l.reg.DeregisterTargets("web", batch(cycle))
	}
	if n := len(l.g.DescribeTargetHealth()); n != 10 {
		t.Fatalf("the group holds %d targets under a quota of 10", n)
	}
	// Bringing a draining target back adds none.
	mustRegister(t, l.reg, "web", batch(0)[:1])
	// Once the delay is over, the drained ones make room.
	l.clock.Advance(300 * time.Second)
	mustRegister(t, l.reg, "web", batch(1)[:9])
	if n := len(l.g.DescribeTargetHealth()); n != 10 {
		t.Fatalf("%d targets after the delay, want 10", n)
	}
}

// configGroup is a registry with config group "web": a config target on
// port 1 in zone "a" with weight 5, and a config target on port 2 with
// neither.
func configGroup(t *testing.T) (*Registry, *Group) {
	t.Helper()
	r := startRegistry(t, newFlakyStorage(t), newTestClock(), map[string]*GroupConfig{"web": {
		HealthCheck: &HealthCheckConfig{Enabled: &noChecks},
		Attributes:  map[string]string{AttrAlgorithm: AlgorithmWeightedRandom},
		Targets:     []TargetConfig{{ID: "127.0.0.1", Port: 1, AvailabilityZone: "a", Weight: 5}, {ID: "127.0.0.1", Port: 2}},
	}})
	return r, r.Group("web")
}

// The API can't change the zone or weight of a target the config declares:
// registering it as the config has it changes nothing, otherwise it is
// refused naming the target and the field.
func TestConfigTargetsKeepTheirZoneAndWeight(t *testing.T) {
	r, g := configGroup(t)
	before := fingerprint(t, r)
	mustRegister(t, r, "web", []TargetConfig{{ID: "127.0.0.1", Port: 1, AvailabilityZone: "a", Weight: 5}})
	mustRegister(t, r, "web", []TargetConfig{{ID: "127.0.0.1", Port: 2, Weight: 1}}) // 1 is the default weight
	if after := fingerprint(t, r); after != before {
		t.Fatalf("registering config targets as declared changed the state:\nbefore %s\nafter  %s", before, after)
	}
	for _, c := range []struct {
		target TargetConfig
		field  string
	}{
		{TargetConfig{ID: "127.0.0.1", Port: 1, AvailabilityZone: "b", Weight: 5}, "availability_zone"},
		{TargetConfig{ID: "127.0.0.1", Port: 1, AvailabilityZone: "a", Weight: 7}, "weight"},
		{TargetConfig{ID: "127.0.0.1", Port: 1, AvailabilityZone: "a"}, "weight"},
		{TargetConfig{ID: "127.0.0.1", Port: 2, AvailabilityZone: "c"}, "availability_zone"},
	} {
		_, err := r.RegisterTargets("web", []TargetConfig{{ID: "127.0.0.1", Port: 3}, c.target})
		expectAPIError(t, "changing "+c.field, err, http.StatusConflict, CodeNotPermitted)
		if msg := err.Error(); !strings.Contains(msg, "targets[1]."+c.field) || !strings.Contains(msg, c.target.Key().String()) {
			t.Fatalf("the refusal does not name the target and the field %s: %v", c.field, err)
		}
		if after := fingerprint(t, r); after != before {
			t.Fatalf("a refused call changed the state:\nbefore %s\nafter  %s", before, after)
		}
	}
	// An API target's zone and weight are the API's.
	mustRegister(t, r, "web", []TargetConfig{{ID: "127.0.0.1", Port: 3, AvailabilityZone: "a"}})
	mustRegister(t, r, "web", []TargetConfig{{ID: "127.0.0.1", Port: 3, AvailabilityZone: "b", Weight: 9}})
	if d := g.DescribeTargetHealth(TargetKey{ID: "127.0.0.1", Port: 3})[0].Target; d.AvailabilityZone != "b" || d.Weight != 9 {
		t.Fatalf("API target after re-registration: %+v", d)
	}
}

// adminCall sends one request to the admin API of r.
func adminCall(t *testing.T, r *Registry, method, path, body string) (int, apiErrorBody) {
	t.Helper()
	current.Store(r)
	defer current.CompareAndSwap(r, nil)
	w := httptest.NewRecorder()
	if err := new(AdminAPI).serve(w, httptest.NewRequest(method, path, strings.NewReader(body))); err != nil {
		t.Fatal(err)
	}
	var e apiErrorBody
	_ = json.Unmarshal(w.Body.Bytes(), &e)
	return w.Code, e
}

type apiErrorBody struct {
	Error struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

// A key given twice in one object, at any depth, is refused naming it;
// bodies over 1 MiB are 413, trailing data included.
func TestAdminBodiesAreStrict(t *testing.T) {
	r := adminFixture(t)
	defer r.Destruct()
	before := fingerprint(t, r)
	for _, c := range []struct{ method, path, body, key string }{
		{"POST", "/target-groups/", `{"name":"dup-a","name":"dup-b","port":80}`, `name`},
		{"POST", "/target-groups/web/targets", `{"targets":[{"id":"127.0.0.1","port":7},{"id":"127.0.0.1","port":8,"port":9}]}`, `targets[1].port`},
		{"POST", "/target-groups/web/targets", `{"targets":[{"id":"127.0.0.1","port":7}],"targets":[]}`, `targets`},
		{"PATCH", "/target-groups/api", `{"health_check":{"path":"/a","matcher":{"http_code":"200","http_code":"500"}}}`, `health_check.matcher.http_code`},
		{"PATCH", "/target-groups/api/attributes", `{"attributes":{"deregistration_delay.timeout_seconds":"5","deregistration_delay.timeout_seconds":"6"}}`, `attributes.deregistration_delay.timeout_seconds`},
	} {
		code, e := adminCall(t, r, c.method, c.path, c.body)
		if code != http.StatusBadRequest || e.Error.Code != CodeValidation || !strings.HasPrefix(e.Error.Message, c.key+": ") {
			t.Fatalf("%s %s %s: %d %+v, want 400 ValidationException naming %s", c.method, c.path, c.body, code, e, c.key)
		}
	}
	if after := fingerprint(t, r); after != before {
		t.Fatalf("refused bodies changed the state:\nbefore %s\nafter  %s", before, after)
	}
	// The same key in two objects is no duplicate.
	if code, e := adminCall(t, r, "POST", "/target-groups/web/targets", `{"targets":[{"id":"127.0.0.1","port":7},{"id":"127.0.0.1","port":8}]}`); code != http.StatusOK {
		t.Fatalf("two targets: %d %+v", code, e)
	}
	small := `{"targets":[{"id":"127.0.0.1","port":9}]}`
	for what, body := range map[string]string{
		"a body over 1 MiB":          `{"targets":[{"id":"127.0.0.1","port":9,"availability_zone":"` + strings.Repeat("a", maxBodyBytes) + `"}]}`,
		"trailing spaces past 1 MiB": small + strings.Repeat(" ", maxBodyBytes),
		"trailing data past 1 MiB":   small + strings.Repeat("{}", maxBodyBytes/2),
	} {
		if code, e := adminCall(t, r, "POST", "/target-groups/web/targets", body); code != http.StatusRequestEntityTooLarge || e.Error.Code != CodePayloadTooLarge {
			t.Fatalf("%s: %d %+v, want 413 PayloadTooLarge", what, code, e)
		}
	}
	if code, e := adminCall(t, r, "POST", "/target-groups/web/targets", small+` {}`); code != http.StatusBadRequest || !strings.Contains(e.Error.Message, "after the JSON object") {
		t.Fatalf("trailing data: %d %+v", code, e)
	}
}

// tokenDuplicate is duplicateKey's reference: the same question answered
// with encoding/json's tokenizer (slower, but obviously right).
func tokenDuplicate(dec *json.Decoder, depth int) (dup, deep bool) {
	tok, err := dec.Token()
	if err != nil {
		return false, false
	}
	delim, ok := tok.(json.Delim)
	if !ok {
		return false, false
	}
	if depth >= maxBodyDepth {
		return false, true
	}
	seen := map[string]bool{}
	for dec.More() {
		if delim == '{' {
			tok, _ := dec.Token()
			key, _ := tok.(string)
			if seen[key] {
				return true, false
			}
			seen[key] = true
		}
		if dup, deep := tokenDuplicate(dec, depth+1); dup || deep {
			return dup, deep
		}
	}
	_, _ = dec.Token()
	return false, false
}

// FuzzDuplicateKey checks the scan against the reference on valid JSON.
func FuzzDuplicateKey(f *testing.F) {
	for _, s := range []string{
		`{"a":1,"a":2}`, `{"a":{"b":1,"b":[1,2]}}`, `[{"x":"\"}","x":1}]`, `{"na\u006de":1,"name":2}`,
		`{"":1,"":2}`, `{"a":[[[[[[1]]]]]],"b":{"c":true,"d":null,"e":-1.5e3}}`, ` {"k" : [ {} , [] ] } `,
		`{"1":1,"2":2,"3":3,"4":4,"5":5,"6":6,"7":7,"8":8,"9":9,"10":10,"3":0}`,
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if !json.Valid([]byte(s)) {
			return
		}
		err := duplicateKey([]byte(s))
		dup, deep := tokenDuplicate(json.NewDecoder(strings.NewReader(s)), 0)
		if deep {
			return // which of the two errors comes first may differ
		}
		if (err != nil) != dup {
			t.Fatalf("%q: duplicateKey says %v, the tokenizer finds a duplicate: %v", s, err, dup)
		}
	})
}
