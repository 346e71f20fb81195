package adminapi

import (
	"fmt"
	"maps"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"strings"
)

// The request side of ELBv2's Query protocol: a flat list of parameters,
// Name=value, whose structures are dotted (Matcher.HttpCode) and whose
// lists count their members from 1 (Targets.member.2.Port,
// Names.member.1). An empty list is sent as the bare name with an empty
// value (Targets=). Clients order the parameters as they like, so nothing
// here depends on their order.

// elbv2Params are one request's parameters. Every read marks what it
// read, so that a parameter no operation reads can be refused by name
// (checkUnused): a misspelt one would otherwise be ignored in silence.
type elbv2Params struct {
	vals map[string]string
	used map[string]bool
}

// parseELBv2Params decodes a form body or query string. A parameter given
// twice is refused: which of the two a client meant can't be known.
func parseELBv2Params(raw string) (*elbv2Params, error) {
	vs, err := url.ParseQuery(raw)
	if err != nil {
		return nil, elbv2Invalid("the request's parameters are not a valid URL-encoded form: %v", err)
	}
	p := &elbv2Params{vals: make(map[string]string, len(vs)), used: make(map[string]bool, len(vs))}
	for _, k := range slices.Sorted(maps.Keys(vs)) {
		if len(vs[k]) > 1 {
			return nil, elbv2Invalid("%s: given %d times; give each parameter once", k, len(vs[k]))
		}
		p.vals[k] = vs[k][0]
	}
	return p, nil
}

// str returns a scalar parameter and whether it was given.
func (p *elbv2Params) str(name string) (string, bool) {
	v, ok := p.vals[name]
	if ok {
		p.used[name] = true
	}
	return v, ok
}

// required returns a scalar parameter that the operation can't go without.
func (p *elbv2Params) required(name string) (string, error) {
	v, ok := p.str(name)
	if !ok || v == "" {
		return "", elbv2Missing(name)
	}
	return v, nil
}

// optString returns a pointer to a given parameter's value, nil when absent.
func (p *elbv2Params) optString(name string) *string {
	if v, ok := p.str(name); ok {
		return &v
	}
	return nil
}

// intIn reads an optional integer parameter within lo-hi, the range the
// model gives its shape.
func (p *elbv2Params) intIn(name string, lo, hi int) (*int, error) {
	v, ok := p.str(name)
	if !ok {
		return nil, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		return nil, elbv2Invalid("%s: %q is not an integer (%d-%d)", name, v, lo, hi)
	}
	if n < lo || n > hi {
		return nil, elbv2Invalid("%s: %d is outside %d-%d", name, n, lo, hi)
	}
	return &n, nil
}

// boolean reads an optional boolean parameter, true or false.
func (p *elbv2Params) boolean(name string) (*bool, error) {
	v, ok := p.str(name)
	if !ok {
		return nil, nil
	}
	switch strings.ToLower(v) {
	case "true":
		b := true
		return &b, nil
	case "false":
		b := false
		return &b, nil
	}
	return nil, elbv2Invalid("%s: %q must be true or false", name, v)
}

// list reads a list of strings, Name.member.N; given reports whether the
// list was sent at all (Name= is a given, empty list).
func (p *elbv2Params) list(name string) (vals []string, given bool, err error) {
	members, given, err := p.members(name, nil)
	if err != nil {
		return nil, false, err
	}
	vals = make([]string, len(members))
	for i, m := range members {
		vals[i] = m[""]
	}
	return vals, given, nil
}

// structs reads a list of structures, Name.member.N.Field, whose fields
// are among fields; each member maps its fields to their values.
func (p *elbv2Params) structs(name string, fields ...string) ([]map[string]string, bool, error) {
	return p.members(name, fields)
}

// members reads the list name: of strings when fields is nil (a member is
// then {"": value}), else of structures with those fields. The members
// come in the order of their numbers, which must be 1 or more; gaps are
// let be, as the numbers only order the list.
func (p *elbv2Params) members(name string, fields []string) ([]map[string]string, bool, error) {
	given := false
	if v, ok := p.str(name); ok {
		if v != "" {
			return nil, false, elbv2Invalid("%s: a list is sent as %s.member.1, %s.member.2, …, or as %s= for an empty list; %q is no list", name, name, name, name, v)
		}
		given = true
	}
	byIndex := map[int]map[string]string{}
	prefix := name + ".member."
	for k, v := range p.vals {
		rest, ok := strings.CutPrefix(k, prefix)
		if !ok {
			if strings.HasPrefix(k, name+".") {
				return nil, false, elbv2Invalid("%s: not a list member; members are %s.member.N (N from 1)", k, name)
			}
			continue
		}
		num, field, dotted := strings.Cut(rest, ".")
		i, err := strconv.Atoi(num)
		if err != nil || i < 1 || num[0] == '0' || num[0] == '+' {
			return nil, false, elbv2Invalid("%s: the member number %q must be an integer from 1", k, num)
		}
		switch {
		case fields == nil && dotted:
			return nil, false, elbv2Invalid("%s: the members of %s are strings, sent as %s.member.N", k, name, name)
		case fields != nil && !dotted:
			return nil, false, elbv2Invalid("%s: the members of %s have fields (%s), sent as %s.member.N.<field>", k, name, strings.Join(fields, ", "), name)
		case fields != nil && !slices.Contains(fields, field):
			return nil, false, elbv2Invalid("%s: %s has no field %q; its fields are %s", k, name, field, strings.Join(fields, ", "))
		}
		m := byIndex[i]
		if m == nil {
			m = map[string]string{}
			byIndex[i] = m
		}
		m[field] = v
		p.used[k] = true
		given = true
	}
	idx := slices.Sorted(maps.Keys(byIndex))
	out := make([]map[string]string, len(idx))
	for n, i := range idx {
		out[n] = byIndex[i]
	}
	return out, given, nil
}

// checkUnused refuses the parameters the operation did not read, listing
// those it takes.
func (p *elbv2Params) checkUnused(action string, takes []string) error {
	var unknown []string
	for k := range p.vals {
		if !p.used[k] {
			unknown = append(unknown, k)
		}
	}
	if len(unknown) == 0 {
		return nil
	}
	sort.Strings(unknown)
	return elbv2Invalid("%s: unknown parameter of %s, which takes %s", strings.Join(unknown, ", "), action, strings.Join(takes, ", "))
}

// memberName is how the Query protocol names field of the i-th (from 0)
// member of list: Targets.member.3.Port.
func memberName(list string, i int, field string) string {
	s := fmt.Sprintf("%s.member.%d", list, i+1)
	if field != "" {
		s += "." + field
	}
	return s
}
