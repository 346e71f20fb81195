// Package healthcheck is the active health checker of the target-group
// plugin: probes that behave like AWS ELB health checks, the consecutive
// threshold state machine that turns check results into target health, and
// a scheduler able to drive checks for thousands of targets from a handful of
// goroutines.
//
// The package deliberately depends on neither Caddy nor zap so that it can be
// tested, benchmarked and reasoned about on its own.
package healthcheck

import (
	"fmt"
	"strconv"
	"strings"
)

// Allowed code ranges, as enforced by the AWS API for HTTP and gRPC matchers.
const (
	httpMin, httpMax = 200, 599
	grpcMin, grpcMax = 0, 99
)

// codeRange is an inclusive range; a single code has lo == hi.
type codeRange struct{ lo, hi int }

// Matcher is a parsed AWS success-code matcher such as "200,202-299".
// The zero value matches nothing; Prober substitutes the AWS default for it.
type Matcher struct {
	spec   string
	grpc   bool
	ranges []codeRange
}

// ParseMatcher parses an AWS success-code matcher: comma-separated codes and
// inclusive ranges "lo-hi". HTTP codes must lie within 200-599 and gRPC codes
// within 0-99, the limits the AWS API enforces, so a configuration accepted
// here is one AWS would accept too.
func ParseMatcher(spec string, grpc bool) (Matcher, error) {
	lo, hi := httpMin, httpMax
	if grpc {
		lo, hi = grpcMin, grpcMax
	}
	fail := func(format string, args ...any) (Matcher, error) {
		return Matcher{}, fmt.Errorf("matcher %q: %s", spec, fmt.Sprintf(format, args...))
	}
	if strings.TrimSpace(spec) == "" {
		return fail("empty, want codes within %d-%d such as %q", lo, hi, defaultSpec(grpc))
	}
	items := strings.Split(spec, ",")
	m := Matcher{grpc: grpc, ranges: make([]codeRange, 0, len(items))}
	canon := make([]string, 0, len(items))
	for _, item := range items {
		item = strings.TrimSpace(item)
		if item == "" {
			return fail("empty item, want codes within %d-%d", lo, hi)
		}
		first, last, isRange := strings.Cut(item, "-")
		a, err := parseCode(first)
		if err != nil {
			return fail("%q is not a code or range of codes within %d-%d", item, lo, hi)
		}
		b := a
		if isRange {
			if b, err = parseCode(last); err != nil {
				return fail("%q is not a code or range of codes within %d-%d", item, lo, hi)
			}
		}
		for _, c := range []int{a, b} {
			if c < lo || c > hi {
				return fail("code %d is outside %d-%d", c, lo, hi)
			}
		}
		if a > b {
			return fail("range %q is reversed, want lo-hi with lo <= hi", item)
		}
		m.ranges = append(m.ranges, codeRange{a, b})
		if a == b && !isRange {
			canon = append(canon, strconv.Itoa(a))
		} else {
			canon = append(canon, strconv.Itoa(a)+"-"+strconv.Itoa(b))
		}
	}
	m.spec = strings.Join(canon, ",")
	return m, nil
}

// parseCode accepts only plain decimal digits: strconv.Atoi alone would also
// take signs, which have no meaning in a matcher and would hide typos.
func parseCode(s string) (int, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return 0, strconv.ErrSyntax
	}
	for _, r := range s {
		if r < '0' || r > '9' {
			return 0, strconv.ErrSyntax
		}
	}
	return strconv.Atoi(s)
}

// The success codes of a check whose matcher is not given, as AWS sets them
// for ALB target groups. gRPC 12 (UNIMPLEMENTED) lets any live gRPC server
// pass ALB's default method, which no server implements.
const (
	DefaultHTTPCodes = "200"
	DefaultGRPCCodes = "12"
)

func defaultSpec(grpc bool) string {
	if grpc {
		return DefaultGRPCCodes
	}
	return DefaultHTTPCodes
}

// Match reports whether code is one of the matcher's success codes.
func (m Matcher) Match(code int) bool {
	for _, r := range m.ranges {
		if code >= r.lo && code <= r.hi {
			return true
		}
	}
	return false
}

// String returns the matcher in canonical form: items trimmed, numbers
// without leading zeros, in the order given.
func (m Matcher) String() string { return m.spec }

// IsGRPC reports whether the matcher was parsed with the gRPC grammar.
func (m Matcher) IsGRPC() bool { return m.grpc }

// isZero reports whether m was never parsed; ranges is non-empty after any
// successful parse.
func (m Matcher) isZero() bool { return len(m.ranges) == 0 }
