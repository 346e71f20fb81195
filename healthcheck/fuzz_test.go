package healthcheck

import (
	"strings"
	"testing"
)

// FuzzParseMatcher parses fuzzed success-code matchers, HTTP and gRPC. No
// input may panic; an accepted matcher holds only codes of its grammar's
// range, and its canonical form parses back to a matcher that matches
// exactly the same codes and prints the same.
//
//	go test ./healthcheck -run '^$' -fuzz '^FuzzParseMatcher$' -fuzztime 1m
func FuzzParseMatcher(f *testing.F) {
	for _, s := range []string{"200", "200,202", "200-299", " 200 - 204 , 302", "0", "12", "0-99", "599", "600", "199", "299-200", "", ",", "2OO", "+200", "-1", "200-", "-200", "00200", "200,,201", "99999999999999999999"} {
		f.Add(s, false)
		f.Add(s, true)
	}
	f.Fuzz(func(t *testing.T, spec string, grpc bool) {
		m, err := ParseMatcher(spec, grpc)
		if err != nil {
			if !strings.Contains(err.Error(), "matcher") {
				t.Fatalf("error %q does not say what it is about", err)
			}
			return
		}
		lo, hi := httpMin, httpMax
		if grpc {
			lo, hi = grpcMin, grpcMax
		}
		if m.isZero() || m.IsGRPC() != grpc {
			t.Fatalf("%q accepted as %+v", spec, m)
		}
		for _, r := range m.ranges {
			if r.lo < lo || r.hi > hi || r.lo > r.hi {
				t.Fatalf("%q accepted with range %d-%d outside %d-%d", spec, r.lo, r.hi, lo, hi)
			}
		}
		again, err := ParseMatcher(m.String(), grpc)
		if err != nil {
			t.Fatalf("canonical form %q of %q is rejected: %v", m.String(), spec, err)
		}
		if again.String() != m.String() {
			t.Fatalf("canonical form of %q is not stable: %q then %q", spec, m.String(), again.String())
		}
		for c := lo - 1; c <= hi+1; c++ {
			if m.Match(c) != again.Match(c) {
				t.Fatalf("%q and its canonical form %q differ on %d", spec, m.String(), c)
			}
			if (c < lo || c > hi) && m.Match(c) {
				t.Fatalf("%q matches %d, outside %d-%d", spec, c, lo, hi)
			}
		}
	})
}
