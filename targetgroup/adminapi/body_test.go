package adminapi

import (
	"encoding/json"
	"strings"
	"testing"
)

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
