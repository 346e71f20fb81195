package integration

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// The values of list flags (--targets, --attributes, --tags, --matcher) are
// written as the AWS CLI writes them: one structure per value in shorthand
// syntax,
//
//	Id=127.0.0.1,Port=9001,AvailabilityZone=a
//
// (a value may be quoted, 'a,b' or "a,b", with \ escaping the quote; a
// comma-separated piece without "=" goes on the value before it, so that
// HttpCode=200,202 is one value), or one value holding a JSON list of
// structures with the same member names, [{"Id":"127.0.0.1","Port":9001}],
// or file://<path> of a file holding either.

// member is one member of a structure of the shorthand syntax.
type member struct {
	name  string // as the AWS CLI names it: AvailabilityZone
	field string // the admin API's JSON field: availability_zone
	isInt bool
}

var (
	targetMembers   = []member{{"Id", "id", false}, {"Port", "port", true}, {"AvailabilityZone", "availability_zone", false}, {"Weight", "weight", true}}
	keyValueMembers = []member{{"Key", "key", false}, {"Value", "value", false}}
	matcherMembers  = []member{{"HttpCode", "http_code", false}, {"GrpcCode", "grpc_code", false}}
)

// parseStructs reads the values of list flag flag into structures of
// members, keyed by the API's field names, each value a string or an int.
// A target without Id is refused.
func parseStructs(flag string, values []string, members []member) ([]map[string]any, error) {
	var out []map[string]any
	for _, v := range values {
		if path, ok := strings.CutPrefix(v, "file://"); ok {
			b, err := os.ReadFile(path)
			if err != nil {
				return nil, paramErrorf("Error parsing parameter '--%s': %v", flag, err)
			}
			v = string(b)
		}
		var structs []map[string]any
		var err error
		if t := strings.TrimSpace(v); strings.HasPrefix(t, "[") || strings.HasPrefix(t, "{") {
			structs, err = parseJSONStructs(t, members)
		} else {
			var s map[string]any
			s, err = parseShorthand(v, members)
			structs = []map[string]any{s}
		}
		if err != nil {
			return nil, paramErrorf("Error parsing parameter '--%s': %v", flag, err)
		}
		out = append(out, structs...)
	}
	if flag == "targets" {
		for i, s := range out {
			if id, _ := s["id"].(string); id == "" {
				return nil, paramErrorf("Error parsing parameter '--targets': target %d has no Id", i+1)
			}
		}
	}
	return out, nil
}

// parseShorthand reads one structure in shorthand syntax.
func parseShorthand(s string, members []member) (map[string]any, error) {
	raw := [][2]string{} // key, value, in order
	i := 0
	for i < len(s) {
		for i < len(s) && s[i] == ' ' {
			i++
		}
		// A key, up to "=": or, up to "," or the end, more of the value
		// before it.
		j := i
		for j < len(s) && s[j] != '=' && s[j] != ',' {
			j++
		}
		if j == len(s) || s[j] == ',' {
			piece := strings.TrimSpace(s[i:j])
			if len(raw) == 0 || piece == "" {
				return nil, fmt.Errorf("expected: '=' after %q, in %q", s[i:j], s)
			}
			raw[len(raw)-1][1] += "," + piece
			i = j + 1
			continue
		}
		key := strings.TrimSpace(s[i:j])
		if key == "" {
			return nil, fmt.Errorf("expected a key before '=' at character %d of %q", j+1, s)
		}
		i = j + 1
		var value string
		if i < len(s) && (s[i] == '\'' || s[i] == '"') {
			q := s[i]
			var b strings.Builder
			k := i + 1
			for ; k < len(s) && s[k] != q; k++ {
				if s[k] == '\\' && k+1 < len(s) && (s[k+1] == q || s[k+1] == '\\') {
					k++
				}
				b.WriteByte(s[k])
			}
			if k == len(s) {
				return nil, fmt.Errorf("no closing %c for the value of %s in %q", q, key, s)
			}
			value = b.String()
			i = k + 1
			for i < len(s) && s[i] == ' ' {
				i++
			}
			if i < len(s) && s[i] != ',' {
				return nil, fmt.Errorf("expected: ',' after the quoted value of %s, received: %q", key, s[i:])
			}
		} else {
			k := strings.IndexByte(s[i:], ',')
			if k < 0 {
				k = len(s) - i
			}
			value = strings.TrimSpace(s[i : i+k])
			i += k
		}
		i++ // the comma
		raw = append(raw, [2]string{key, value})
	}
	out := map[string]any{}
	for _, kv := range raw {
		m, err := findMember(kv[0], members)
		if err != nil {
			return nil, err
		}
		if _, dup := out[m.field]; dup {
			return nil, fmt.Errorf("%s is given twice in %q", m.name, s)
		}
		if out[m.field], err = m.value(kv[1]); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// parseJSONStructs reads a JSON list of structures, or one structure.
func parseJSONStructs(s string, members []member) ([]map[string]any, error) {
	var list []map[string]json.RawMessage
	dec := json.NewDecoder(strings.NewReader(s))
	dec.UseNumber()
	var err error
	if strings.HasPrefix(s, "{") {
		var one map[string]json.RawMessage
		err = dec.Decode(&one)
		list = append(list, one)
	} else {
		err = dec.Decode(&list)
	}
	if err != nil {
		return nil, fmt.Errorf("invalid JSON: %v", err)
	}
	out := make([]map[string]any, 0, len(list))
	for _, js := range list {
		s := map[string]any{}
		for k, v := range js {
			m, err := findMember(k, members)
			if err != nil {
				return nil, err
			}
			var text string
			if json.Unmarshal(v, &text) != nil {
				var n json.Number
				if json.Unmarshal(v, &n) != nil {
					return nil, fmt.Errorf("invalid value for %s: %s is not a string or a number", m.name, bytes.TrimSpace(v))
				}
				text = n.String()
			}
			if s[m.field], err = m.value(text); err != nil {
				return nil, err
			}
		}
		out = append(out, s)
	}
	return out, nil
}

// findMember is the member a key names: its AWS name (in any case) or its
// API field name.
func findMember(key string, members []member) (member, error) {
	names := make([]string, len(members))
	for i, m := range members {
		if strings.EqualFold(key, m.name) || key == m.field {
			return m, nil
		}
		names[i] = m.name
	}
	return member{}, fmt.Errorf("unknown parameter %q, must be one of: %s", key, strings.Join(names, ", "))
}

// value is the typed value of text for the member.
func (m member) value(text string) (any, error) {
	if !m.isInt {
		return text, nil
	}
	n, err := strconv.Atoi(text)
	if err != nil {
		return nil, fmt.Errorf("invalid value for %s: %q is not an integer", m.name, text)
	}
	return n, nil
}
