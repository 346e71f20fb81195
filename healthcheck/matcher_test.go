package healthcheck

import (
	"strings"
	"testing"
)

func TestParseMatcherValid(t *testing.T) {
	tests := []struct {
		spec  string
		grpc  bool
		canon string
		in    []int
		out   []int
	}{
		{"200", false, "200", []int{200}, []int{199, 201, 404}},
		{"200,202", false, "200,202", []int{200, 202}, []int{201, 203}},
		{"200-299", false, "200-299", []int{200, 250, 299}, []int{199, 300}},
		{"200,202-204,300-399", false, "200,202-204,300-399", []int{200, 202, 204, 300, 399}, []int{201, 205, 400}},
		{" 200 , 302 ", false, "200,302", []int{200, 302}, []int{301}},
		{"200 - 204", false, "200-204", []int{203}, []int{205}},
		{"599", false, "599", []int{599}, []int{598}},
		{"0200", false, "200", []int{200}, nil},
		{"12", true, "12", []int{12}, []int{0, 13}},
		{"0", true, "0", []int{0}, []int{1}},
		{"0-99", true, "0-99", []int{0, 50, 99}, []int{-1, 100}},
		{"0,2-4,12", true, "0,2-4,12", []int{0, 3, 12}, []int{1, 5, 11}},
	}
	for _, tt := range tests {
		m, err := ParseMatcher(tt.spec, tt.grpc)
		if err != nil {
			t.Errorf("ParseMatcher(%q, %v): %v", tt.spec, tt.grpc, err)
			continue
		}
		if m.String() != tt.canon {
			t.Errorf("ParseMatcher(%q).String() = %q, want %q", tt.spec, m.String(), tt.canon)
		}
		if m.IsGRPC() != tt.grpc {
			t.Errorf("ParseMatcher(%q).IsGRPC() = %v", tt.spec, m.IsGRPC())
		}
		for _, c := range tt.in {
			if !m.Match(c) {
				t.Errorf("%q should match %d", tt.spec, c)
			}
		}
		for _, c := range tt.out {
			if m.Match(c) {
				t.Errorf("%q should not match %d", tt.spec, c)
			}
		}
	}
}

func TestParseMatcherInvalid(t *testing.T) {
	tests := []struct {
		spec string
		grpc bool
		want string // substring of the error
	}{
		{"", false, "200-599"},
		{"   ", true, "0-99"},
		{"200,", false, "empty item"},
		{",200", false, "empty item"},
		{"200,,300", false, "empty item"},
		{"abc", false, `"abc" is not a code`},
		{"200-", false, `"200-" is not a code`},
		{"-200", false, `"-200" is not a code`},
		{"+200", false, `"+200" is not a code`},
		{"200-300-400", false, "is not a code"},
		{"2OO", false, "200-599"},
		{"299-200", false, `range "299-200" is reversed`},
		{"200,700", false, `matcher "200,700": code 700 is outside 200-599`},
		{"199", false, "code 199 is outside 200-599"},
		{"600", false, "outside 200-599"},
		{"100", true, "code 100 is outside 0-99"},
		{"200", true, "outside 0-99"},
		{"12,5-2", true, "reversed"},
		{"99999999999999999999999", false, "not a code"},
	}
	for _, tt := range tests {
		m, err := ParseMatcher(tt.spec, tt.grpc)
		if err == nil {
			t.Errorf("ParseMatcher(%q, %v) = %q, want error", tt.spec, tt.grpc, m)
			continue
		}
		if !strings.Contains(err.Error(), tt.want) {
			t.Errorf("ParseMatcher(%q, %v) error %q, want it to contain %q", tt.spec, tt.grpc, err, tt.want)
		}
	}
}

func TestZeroMatcherMatchesNothing(t *testing.T) {
	var m Matcher
	if m.Match(200) || m.Match(0) || m.String() != "" {
		t.Fatalf("zero Matcher should match nothing, got %q", m)
	}
}
