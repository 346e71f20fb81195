package adminapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
)

// maxBodyBytes bounds request bodies: Caddy's admin server limits none of
// the routes that modules add.
const maxBodyBytes = 1 << 20

// decodeBody reads a bounded JSON body strictly: unknown fields, a key
// given twice in one object and trailing data are validation errors. The
// whole body counts toward maxBodyBytes, trailing data included.
func decodeBody(w http.ResponseWriter, r *http.Request, v any) error {
	raw, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBodyBytes))
	var tooBig *http.MaxBytesError
	switch {
	case errors.As(err, &tooBig):
		return &httpError{http.StatusRequestEntityTooLarge, CodePayloadTooLarge, fmt.Sprintf("request body exceeds %d bytes", maxBodyBytes)}
	case err != nil:
		return invalid("body", "reading the request body: %v", err)
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	err = dec.Decode(v)
	if err == nil && dec.Decode(new(json.RawMessage)) != io.EOF {
		err = errors.New("unexpected data after the JSON object")
	}
	switch {
	case err == nil:
		// The body is one valid JSON value now, which the scan relies on.
		return duplicateKey(raw)
	case errors.Is(err, io.EOF):
		return invalid("body", "a JSON object is required")
	default:
		return invalid("body", "%v", err)
	}
}

// maxBodyDepth bounds the nesting duplicateKey follows; no body of the API
// nests deeper than a few levels, and a PATCH body's raw values could
// otherwise nest as deep as the decoder allows.
const maxBodyDepth = 32

// duplicateKey refuses a key given twice in one object of the JSON value
// raw holds, at any depth, naming it by its path ("targets[1].port").
// encoding/json keeps the last one silently, so that a client, a proxy in
// front of the admin API and Caddy could each read a different request.
// raw must be valid JSON (the decoder has accepted it): the scan checks
// nothing else, and allocates nothing for objects of few keys, so that a
// large registration costs little more than its decoding.
func duplicateKey(raw []byte) error {
	if _, bad := scanKeys(raw, skipSpace(raw, 0), 0); bad != nil {
		var path strings.Builder
		for i := len(bad.path) - 1; i >= 0; i-- {
			switch seg := bad.path[i]; {
			case seg.index >= 0:
				path.WriteString("[" + strconv.Itoa(seg.index) + "]")
			case path.Len() > 0:
				path.WriteString("." + seg.key)
			default:
				path.WriteString(seg.key)
			}
		}
		return invalid(path.String(), "%s", bad.msg)
	}
	return nil
}

// badKey is what scanKeys found wrong, and where: the path's segments
// innermost first (port, [1], targets), added as the scan unwinds so that
// nothing is built while the body is fine.
type badKey struct {
	path []pathSegment
	msg  string
}

// pathSegment is a key in an object, or an index (>= 0) in an array.
type pathSegment struct {
	key   string
	index int
}

// scanKeys scans the value at raw[i] and returns the index after it.
func scanKeys(raw []byte, i, depth int) (int, *badKey) {
	switch raw[i] {
	case '"':
		return skipString(raw, i), nil
	case '{', '[':
	default: // a number, true, false or null
		for i < len(raw) && !isValueEnd(raw[i]) {
			i++
		}
		return i, nil
	}
	if depth >= maxBodyDepth {
		return 0, &badKey{msg: fmt.Sprintf("JSON nested deeper than %d levels", maxBodyDepth)}
	}
	object, closing := raw[i] == '{', byte(']')
	if object {
		closing = '}'
	}
	var few [8][]byte
	keys := few[:0]
	var many map[string]bool
	i = skipSpace(raw, i+1)
	for n := 0; raw[i] != closing; n++ {
		var key []byte
		if object {
			end := skipString(raw, i)
			if key = raw[i+1 : end-1]; bytes.IndexByte(key, '\\') >= 0 {
				var s string
				_ = json.Unmarshal(raw[i:end], &s)
				key = []byte(s)
			}
			dup := false
			if many != nil {
				dup = many[string(key)]
				many[string(key)] = true
			} else {
				for _, k := range keys {
					dup = dup || bytes.Equal(k, key)
				}
				if keys = append(keys, key); len(keys) > len(few) {
					// Past a few keys, a set: a large object must not cost
					// its size squared.
					many = make(map[string]bool, 2*len(keys))
					for _, k := range keys {
						many[string(k)] = true
					}
				}
			}
			if dup {
				return 0, &badKey{path: []pathSegment{{key: string(key), index: -1}}, msg: "given twice in one object of the request body; give each key once"}
			}
			i = skipSpace(raw, skipSpace(raw, end)+1) // past the colon
		}
		var bad *badKey
		if i, bad = scanKeys(raw, i, depth+1); bad != nil {
			seg := pathSegment{key: string(key), index: -1}
			if !object {
				seg.index = n
			}
			bad.path = append(bad.path, seg)
			return 0, bad
		}
		if i = skipSpace(raw, i); raw[i] == ',' {
			i = skipSpace(raw, i+1)
		}
	}
	return i + 1, nil
}

func isValueEnd(c byte) bool {
	switch c {
	case ',', ']', '}', ' ', '\t', '\r', '\n':
		return true
	}
	return false
}

// skipString returns the index after the JSON string that starts at raw[i].
func skipString(raw []byte, i int) int {
	for i++; raw[i] != '"'; i++ {
		if raw[i] == '\\' {
			i++
		}
	}
	return i + 1
}

func skipSpace(raw []byte, i int) int {
	for i < len(raw) && (raw[i] == ' ' || raw[i] == '\t' || raw[i] == '\r' || raw[i] == '\n') {
		i++
	}
	return i
}
