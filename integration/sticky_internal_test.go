package integration

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/caddy-targetgroup/caddy-targetgroup/selection"
	"github.com/caddy-targetgroup/caddy-targetgroup/targetgroup"
)

func TestStickyCookiesSealedOncePerSecond(t *testing.T) {
	reg := benchGroup(t, "lb_cookie", 2)
	g := reg.Group("bench")
	snap := g.Snapshot()
	s := snap.Stickiness()
	kr := reg.Keyring()
	t0, t1 := snap.Routable[0], snap.Routable[1]
	now := time.Unix(1_800_000_000, 100)

	set := func(w http.ResponseWriter, tg *targetgroup.Target, at time.Time) []string {
		setCookies(w, s, kr, "bench", tg, at)
		return w.Header()["Set-Cookie"]
	}
	first := set(httptest.NewRecorder(), t0, now)
	if len(first) != 2 || !strings.HasPrefix(first[0], "AWSALB=") || !strings.HasPrefix(first[1], "AWSALBCORS=") {
		t.Fatalf("Set-Cookie %q", first)
	}
	if again := set(httptest.NewRecorder(), t0, now.Add(500*time.Millisecond)); again[0] != first[0] {
		t.Fatalf("same second, another cookie: %q then %q", first[0], again[0])
	}
	later := set(httptest.NewRecorder(), t0, now.Add(time.Second))
	if later[0] == first[0] {
		t.Fatal("a second later the cookie's expiry did not move")
	}
	other := set(httptest.NewRecorder(), t1, now.Add(time.Second))
	if other[0] == later[0] {
		t.Fatal("two targets got the same cookie")
	}
	for _, c := range []struct {
		header string
		want   *targetgroup.Target
	}{{first[0], t0}, {later[0], t0}, {other[0], t1}} {
		v := strings.TrimPrefix(strings.SplitN(c.header, ";", 2)[0], "AWSALB=")
		st, err := kr.Open(v, "bench", now)
		if err != nil {
			t.Fatal(err)
		}
		if want := c.want.Config(); st.ID != want.ID || st.Port != want.Port {
			t.Fatalf("cookie %q names %s:%d, want %s:%d", c.header, st.ID, st.Port, want.ID, want.Port)
		}
	}

	// A retry replaces the earlier try's cookies and keeps the others.
	w := httptest.NewRecorder()
	w.Header().Add("Set-Cookie", "session=1")
	set(w, t0, now)
	got := set(w, t1, now)
	if len(got) != 3 || got[0] != "session=1" || got[1] != set(httptest.NewRecorder(), t1, now)[0] {
		t.Fatalf("after a retry Set-Cookie is %q", got)
	}

	// A rotated key ring seals anew.
	k2, err := selection.NewKey(kr.SealingKey()+1, now)
	if err != nil {
		t.Fatal(err)
	}
	kr2, err := selection.NewKeyring([]selection.Key{k2})
	if err != nil {
		t.Fatal(err)
	}
	rotated := httptest.NewRecorder()
	setCookies(rotated, s, kr2, "bench", t0, now)
	v := strings.TrimPrefix(strings.SplitN(rotated.Header()["Set-Cookie"][0], ";", 2)[0], "AWSALB=")
	if _, err := kr2.Open(v, "bench", now); err != nil {
		t.Fatalf("after rotation the cookie is not under the new key: %v", err)
	}
}

func TestCookieValue(t *testing.T) {
	for _, c := range []struct {
		headers []string
		want    string
		ok      bool
	}{
		{nil, "", false},
		{[]string{"AWSALB=abc"}, "abc", true},
		{[]string{"a=1; AWSALB=abc; b=2"}, "abc", true},
		{[]string{"a=1;AWSALB=abc"}, "abc", true},
		{[]string{`AWSALB="abc"`}, "abc", true},
		{[]string{"AWSALBCORS=x"}, "", false},
		{[]string{"XAWSALB=x"}, "", false},
		{[]string{"AWSALB="}, "", true},
		{[]string{"AWSALB"}, "", true},
		{[]string{"a=1", "AWSALB=second"}, "second", true},
		{[]string{"AWSALB=first; AWSALB=second"}, "first", true},
	} {
		r := httptest.NewRequest("GET", "/", nil)
		for _, h := range c.headers {
			r.Header.Add("Cookie", h)
		}
		got, ok := cookieValue(r, "AWSALB")
		if got != c.want || ok != c.ok {
			t.Errorf("%q: got %q, %v; want %q, %v", c.headers, got, ok, c.want, c.ok)
		}
		// The same answer as net/http's parser for what it accepts.
		if hc, err := r.Cookie("AWSALB"); err == nil && (hc.Value != got || !ok) {
			t.Errorf("%q: net/http reads %q, we read %q", c.headers, hc.Value, got)
		}
	}
}

// FuzzCookieValue checks the in-place cookie reader against net/http's
// parser: whenever net/http finds the cookie, both read the same value.
func FuzzCookieValue(f *testing.F) {
	for _, s := range []string{"AWSALB=abc", "a=1; AWSALB=abc", `AWSALB="q"`, "AWSALB", "AWSALB=; x=y", " AWSALB = v ", "AWSALBCORS=1;AWSALB=2"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, header string) {
		r := httptest.NewRequest("GET", "/", nil)
		r.Header.Set("Cookie", header)
		got, ok := cookieValue(r, "AWSALB")
		if !ok && got != "" {
			t.Fatalf("%q: not found but value %q", header, got)
		}
		if hc, err := r.Cookie("AWSALB"); err == nil && (!ok || hc.Value != got) {
			t.Fatalf("%q: net/http reads %q, we read %q (found %v)", header, hc.Value, got, ok)
		}
	})
}
