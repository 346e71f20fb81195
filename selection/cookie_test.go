package selection

import (
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
)

var t0 = time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC)

// fixedKey is deterministic so that fuzz seeds and failures reproduce.
func fixedKey(id uint32, created time.Time) Key {
	k := Key{ID: id, Created: created}
	for i := range k.Secret {
		k.Secret[i] = byte(id*31 + uint32(i))
	}
	return k
}

func mustRing(t testing.TB, keys ...Key) *Keyring {
	t.Helper()
	kr, err := NewKeyring(keys)
	if err != nil {
		t.Fatal(err)
	}
	return kr
}

func mustSeal(t testing.TB, kr *Keyring, s Sticky) string {
	t.Helper()
	v, err := kr.Seal(s)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

var sticky = Sticky{Group: "web-prod", ID: "i-0123456789abcdef0", Port: 8080, Expires: t0.Add(24 * time.Hour)}

func TestCookieRoundTrip(t *testing.T) {
	kr := mustRing(t, fixedKey(1, t0))
	for _, s := range []Sticky{
		sticky,
		{Group: "web-prod", ID: "10.0.1.23", Port: 80, Expires: t0.Add(time.Second)},
		{Group: "", ID: "", Port: 0, Expires: t0.Add(7 * 24 * time.Hour)},
		{Group: strings.Repeat("g", 300), ID: strings.Repeat("x", MaxStickyID), Port: 65535, Expires: t0.Add(time.Hour)},
		{Group: "lambda", ID: "arn:aws:lambda:us-east-1:123456789012:function:my-function", Expires: t0.Add(time.Hour)},
	} {
		v := mustSeal(t, kr, s)
		got, err := kr.Open(v, s.Group, t0)
		if err != nil {
			t.Fatalf("%+v: %v", s, err)
		}
		if got.Group != s.Group || got.ID != s.ID || got.Port != s.Port || !got.Expires.Equal(s.Expires) {
			t.Fatalf("round trip: got %+v, want %+v", got, s)
		}
		if strings.ContainsAny(v, "=+/%;, \"\\") {
			t.Fatalf("value %q is not cookie-safe without encoding", v)
		}
		if len(s.ID) < 100 {
			t.Logf("target %q port %d: %d characters", s.ID, s.Port, len(v))
		}
	}
	// Nonces are random: two seals of the same sticky differ.
	if mustSeal(t, kr, sticky) == mustSeal(t, kr, sticky) {
		t.Fatal("two seals gave the same value")
	}
}

func TestCookieLength(t *testing.T) {
	kr := mustRing(t, fixedKey(1, t0))
	for _, c := range []struct {
		id   string
		port int
		max  int
	}{
		{"i-0123456789abcdef0", 8080, 96},
		{"10.0.1.23", 80, 82},
	} {
		v := mustSeal(t, kr, Sticky{Group: "web-prod", ID: c.id, Port: c.port, Expires: t0.Add(24 * time.Hour)})
		if len(v) > c.max {
			t.Errorf("%s: %d characters, want at most %d (as documented)", c.id, len(v), c.max)
		}
	}
}

func TestCookieSubSecondExpiryTruncates(t *testing.T) {
	kr := mustRing(t, fixedKey(1, t0))
	s := sticky
	s.Expires = t0.Add(90*time.Second + 700*time.Millisecond)
	got, err := kr.Open(mustSeal(t, kr, s), s.Group, t0)
	if err != nil || !got.Expires.Equal(t0.Add(90*time.Second)) {
		t.Fatalf("got %v, %v", got.Expires, err)
	}
}

func TestCookieTamperEveryByte(t *testing.T) {
	kr := mustRing(t, fixedKey(1, t0))
	v := mustSeal(t, kr, sticky)
	raw, err := base64.RawURLEncoding.DecodeString(v)
	if err != nil {
		t.Fatal(err)
	}
	const hdr = 1 + 1 + tagSize // version, key id 1, group tag
	for pos := range raw {
		for _, mask := range []byte{0x01, 0x80, 0xff} {
			b := []byte(string(raw))
			b[pos] ^= mask
			_, err := kr.Open(base64.RawURLEncoding.EncodeToString(b), sticky.Group, t0)
			switch {
			case err == nil:
				t.Fatalf("byte %d ^ %#x: tampered cookie opened", pos, mask)
			case pos >= hdr && !errors.Is(err, ErrTampered):
				t.Fatalf("byte %d ^ %#x: %v, want ErrTampered", pos, mask, err)
			}
		}
	}
	// Every character replaced by every other of the alphabet, including
	// the last one's unused low bits, and by characters outside it.
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
	for pos := range len(v) {
		for _, c := range alphabet + "=+/%\n\r \x00\xff" {
			if byte(c) == v[pos] || c > 0xff {
				continue
			}
			w := v[:pos] + string([]byte{byte(c)}) + v[pos+1:]
			if _, err := kr.Open(w, sticky.Group, t0); err == nil {
				t.Fatalf("character %d changed to %q: opened", pos, c)
			}
		}
	}
	// Truncations and extensions.
	for i := range len(v) {
		if _, err := kr.Open(v[:i], sticky.Group, t0); err == nil {
			t.Fatalf("prefix of %d characters opened", i)
		}
	}
	for _, suffix := range []string{"A", "AA", "AAA", "AAAA", "\n"} {
		if _, err := kr.Open(v+suffix, sticky.Group, t0); err == nil {
			t.Fatalf("extended by %q: opened", suffix)
		}
	}
}

func TestCookieNonMinimalKeyIDFails(t *testing.T) {
	kr := mustRing(t, fixedKey(1, t0))
	raw, _ := base64.RawURLEncoding.DecodeString(mustSeal(t, kr, sticky))
	// Key id 1 spelled as a two-byte varint: the same id, another header.
	b := append([]byte{raw[0], 0x81, 0x00}, raw[2:]...)
	if _, err := kr.Open(base64.RawURLEncoding.EncodeToString(b), sticky.Group, t0); !errors.Is(err, ErrTampered) {
		t.Fatalf("non-minimal key id: %v, want ErrTampered", err)
	}
}

func TestCookieOtherGroup(t *testing.T) {
	kr := mustRing(t, fixedKey(1, t0))
	v := mustSeal(t, kr, sticky)
	if _, err := kr.Open(v, "web-staging", t0); !errors.Is(err, ErrOtherGroup) {
		t.Fatalf("other group: %v, want ErrOtherGroup", err)
	}
	// The tag is only a hint; the group itself is authenticated. These two
	// names share a tag (found by a birthday search over "group-%d"), so
	// one's cookie gets past the tag on the other and must fail there.
	a, b := "group-549599", "group-712382"
	if groupTag(a) != groupTag(b) {
		t.Fatal("the test's names no longer share a tag")
	}
	s := sticky
	s.Group = a
	if _, err := kr.Open(mustSeal(t, kr, s), b, t0); !errors.Is(err, ErrTampered) {
		t.Fatalf("groups %q and %q share a tag: %v, want ErrTampered", a, b, err)
	}
}

func TestCookieExpiry(t *testing.T) {
	kr := mustRing(t, fixedKey(1, t0))
	s := sticky
	s.Expires = t0.Add(time.Hour)
	v := mustSeal(t, kr, s)
	if _, err := kr.Open(v, s.Group, s.Expires.Add(-time.Nanosecond)); err != nil {
		t.Fatalf("just before expiry: %v", err)
	}
	for _, at := range []time.Time{s.Expires, s.Expires.Add(time.Second), s.Expires.Add(365 * 24 * time.Hour)} {
		if _, err := kr.Open(v, s.Group, at); !errors.Is(err, ErrExpired) {
			t.Fatalf("at %v: %v, want ErrExpired", at, err)
		}
	}
}

func TestCookieUnknownKey(t *testing.T) {
	v := mustSeal(t, mustRing(t, fixedKey(1, t0)), sticky)
	if _, err := mustRing(t, fixedKey(2, t0)).Open(v, sticky.Group, t0); !errors.Is(err, ErrUnknownKey) {
		t.Fatalf("%v, want ErrUnknownKey", err)
	}
	// Same id, other secret: authentication fails.
	other := fixedKey(1, t0)
	other.Secret[0]++
	if _, err := mustRing(t, other).Open(v, sticky.Group, t0); !errors.Is(err, ErrTampered) {
		t.Fatalf("%v, want ErrTampered", err)
	}
}

func TestCookieGarbage(t *testing.T) {
	kr := mustRing(t, fixedKey(1, t0))
	for _, v := range []string{
		"", "A", "AA", "====", "%41%42", "AWSALB=x", "é", "\x00\x00\x00",
		strings.Repeat("A", 100), strings.Repeat("_", 100), strings.Repeat("A", maxValue+1),
		strings.Repeat("A", 1<<20),
		base64.RawURLEncoding.EncodeToString([]byte{cookieVersion, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01}),
		base64.RawURLEncoding.EncodeToString(append([]byte{cookieVersion, 1}, make([]byte, 60)...)),
		base64.RawURLEncoding.EncodeToString(append([]byte{2, 1}, make([]byte, 60)...)),
		base64.StdEncoding.EncodeToString([]byte("some other cookie entirely")),
	} {
		if s, err := kr.Open(v, "web-prod", t0); err == nil {
			t.Fatalf("%.40q opened: %+v", v, s)
		} else if !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrUnknownKey) && !errors.Is(err, ErrOtherGroup) && !errors.Is(err, ErrTampered) {
			t.Fatalf("%.40q: unexpected error %v", v, err)
		}
	}
}

func TestSealRejects(t *testing.T) {
	kr := mustRing(t, fixedKey(1, t0))
	for _, s := range []Sticky{
		{ID: "a", Port: -1, Expires: t0},
		{ID: "a", Port: 65536, Expires: t0},
		{ID: strings.Repeat("a", MaxStickyID+1), Expires: t0},
		{ID: "a"},
		{ID: "a", Expires: time.Unix(-5, 0)},
	} {
		if _, err := kr.Seal(s); err == nil {
			t.Errorf("%+v sealed", s)
		}
	}
}

func TestKeyring(t *testing.T) {
	if _, err := NewKeyring(nil); err == nil {
		t.Error("empty key ring built")
	}
	if _, err := NewKeyring([]Key{fixedKey(1, t0), fixedKey(1, t0.Add(time.Hour))}); err == nil {
		t.Error("duplicate ids accepted")
	}
	kr := mustRing(t, fixedKey(7, t0.Add(time.Hour)), fixedKey(9, t0), fixedKey(3, t0.Add(time.Hour)))
	if kr.SealingKey() != 7 {
		t.Errorf("sealing key %d, want 7 (newest; highest id among equals)", kr.SealingKey())
	}
	k, err := NewKey(4, t0)
	if err != nil {
		t.Fatal(err)
	}
	if k.Secret == ([32]byte{}) {
		t.Error("zero secret")
	}
	k2, _ := NewKey(4, t0)
	if k.Secret == k2.Secret {
		t.Error("two keys share a secret")
	}
	for _, s := range []string{k.String(), fmt.Sprintf("%v %+v %#v %s", k, k, k, k)} {
		if strings.Contains(s, fmt.Sprint(k.Secret)) || strings.Contains(s, base64.StdEncoding.EncodeToString(k.Secret[:])) || strings.Contains(s, "Secret") {
			t.Errorf("key formatted with its secret: %s", s)
		}
	}
}

func TestRotate(t *testing.T) {
	const period, keep = 24 * time.Hour, 7 * 24 * time.Hour
	keys, changed, err := Rotate(nil, t0, period, keep)
	if err != nil || !changed || len(keys) != 1 || keys[0].ID != 1 {
		t.Fatalf("first rotation: %v %v %v", keys, changed, err)
	}
	first := keys[0]
	old := mustSeal(t, mustRing(t, keys...), sticky)

	if again, changed, _ := Rotate(keys, t0.Add(period-time.Second), period, keep); changed || len(again) != 1 {
		t.Fatalf("rotated before the period: %v", again)
	}

	// Daily rotation: the first key stops sealing on day 1 and must open
	// its cookies until day 1 + keep.
	now := t0
	for day := 1; day <= 9; day++ {
		now = t0.Add(time.Duration(day) * period)
		in := append([]Key(nil), keys...)
		keys, changed, err = Rotate(keys, now, period, keep)
		if err != nil || !changed {
			t.Fatalf("day %d: changed %v, %v", day, changed, err)
		}
		if len(in) > 0 && in[0] != first && day == 1 {
			t.Fatal("input modified")
		}
		kr := mustRing(t, keys...)
		if kr.SealingKey() != uint32(day+1) {
			t.Fatalf("day %d: sealing with key %d", day, kr.SealingKey())
		}
		_, err := kr.Open(old, sticky.Group, t0)
		retiredFor := now.Sub(t0.Add(period))
		switch {
		case retiredFor <= keep && err != nil:
			t.Fatalf("day %d: key 1 retired %v ago (keep %v) no longer opens: %v", day, retiredFor, keep, err)
		case retiredFor > keep && !errors.Is(err, ErrUnknownKey):
			t.Fatalf("day %d: key 1 retired %v ago still opens (%v)", day, retiredFor, err)
		}
		// keep/period+2 keys at most: the ones retired within keep, and the newest.
		if len(keys) > int(keep/period)+2 {
			t.Fatalf("day %d: %d keys kept", day, len(keys))
		}
	}
	// Rotation that ran late (the server was down for a month) drops all
	// retired keys but never the newest.
	late := now.Add(30 * 24 * time.Hour)
	keys, _, err = Rotate(keys, late, period, keep)
	if err != nil || len(keys) != 2 || !keys[1].Created.Equal(late) {
		t.Fatalf("late rotation: %v %v", keys, err)
	}
	// Once the late key has sealed for longer than keep, its predecessor
	// goes; the late key itself stays, retired only now.
	keys, _, _ = Rotate(keys, late.Add(keep+time.Second), period, keep)
	if len(keys) != 2 || !keys[0].Created.Equal(late) {
		t.Fatalf("after keep: %v", keys)
	}

	for _, c := range [][2]time.Duration{{0, keep}, {period, 0}, {-1, keep}} {
		if _, _, err := Rotate(nil, t0, c[0], c[1]); err == nil {
			t.Errorf("period %v keep %v accepted", c[0], c[1])
		}
	}
	if _, _, err := Rotate([]Key{fixedKey(^uint32(0), t0)}, t0.Add(period), period, keep); err == nil {
		t.Error("id overflow accepted")
	}
}

func TestMarshalKeys(t *testing.T) {
	keys := []Key{fixedKey(1, t0), fixedKey(2, t0.Add(time.Hour))}
	data, err := MarshalKeys(keys)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(data), base64.StdEncoding.EncodeToString(keys[0].Secret[:])) {
		t.Fatalf("secret not in standard base64: %s", data)
	}
	back, err := UnmarshalKeys(data)
	if err != nil {
		t.Fatal(err)
	}
	if len(back) != 2 {
		t.Fatalf("got %v", back)
	}
	for i := range keys {
		if back[i].ID != keys[i].ID || back[i].Secret != keys[i].Secret || !back[i].Created.Equal(keys[i].Created) {
			t.Fatalf("key %d: got %v", i, back[i])
		}
	}
	// A cookie sealed before storage opens after.
	v := mustSeal(t, mustRing(t, keys...), sticky)
	if _, err := mustRing(t, back...).Open(v, sticky.Group, t0); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []string{
		`not json`,
		`{"keys":[{"id":1,"secret":"AAAA","created":"2024-05-01T12:00:00Z"}]}`,
		`{"keys":[{"id":1,"secret":"!!","created":"2024-05-01T12:00:00Z"}]}`,
		fmt.Sprintf(`{"keys":[{"id":1,"secret":%q},{"id":1,"secret":%q}]}`,
			base64.StdEncoding.EncodeToString(make([]byte, 32)), base64.StdEncoding.EncodeToString(make([]byte, 32))),
	} {
		if _, err := UnmarshalKeys([]byte(bad)); err == nil {
			t.Errorf("%s accepted", bad)
		}
	}
}

func FuzzOpen(f *testing.F) {
	kr := mustRing(f, fixedKey(1, t0), fixedKey(2, t0.Add(time.Hour)))
	old := mustRing(f, fixedKey(1, t0))
	for _, v := range []string{
		mustSeal(f, kr, sticky),
		mustSeal(f, old, sticky),
		mustSeal(f, kr, Sticky{Group: "web-prod", ID: "10.0.1.23", Port: 80, Expires: t0.Add(time.Second)}),
		mustSeal(f, kr, Sticky{Group: "other", ID: "x", Expires: t0.Add(time.Hour)}),
		"", "A", "AQEAAAAA", "====", "%41", strings.Repeat("_", 120),
	} {
		f.Add(v, "web-prod")
	}
	f.Fuzz(func(t *testing.T, value, group string) {
		s, err := kr.Open(value, group, t0)
		if err != nil {
			return
		}
		// Only our own seeds can open; whatever opens is consistent.
		if s.Group != group || !s.Expires.After(t0) || s.Port < 0 || s.Port > 65535 {
			t.Fatalf("opened %q as %+v", value, s)
		}
	})
}
