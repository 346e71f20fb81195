package integration

import (
	"net/http"
	"net/textproto"
	"slices"
	"strings"
	"time"

	"github.com/caddy-targetgroup/caddy-targetgroup/selection"
	"github.com/caddy-targetgroup/caddy-targetgroup/targetgroup"
)

// appCookieLB is the load balancer cookie ALB sets beside an application
// cookie (AWSALBAPP-0 … -3; one suffices for our cookie's size).
const appCookieLB = "AWSALBAPP-0"

// stickiness is a group's cookie stickiness (lb_cookie or app_cookie).
type stickiness struct {
	cookie   string        // the load balancer's cookie
	cors     bool          // lb_cookie: a SameSite=None twin, <cookie>CORS, goes with it
	app      string        // app_cookie: the application's cookie
	duration time.Duration // how long a pick sticks, refreshed on every response
}

func stickinessOf(spec *targetgroup.Spec) *stickiness {
	a := spec.Attributes
	if !a.StickinessEnabled {
		return nil
	}
	switch a.StickinessType {
	case "lb_cookie":
		return &stickiness{cookie: a.LBCookieName, cors: true, duration: a.LBCookieDuration}
	case "app_cookie":
		return &stickiness{cookie: appCookieLB, app: a.AppCookieName, duration: a.AppCookieDuration}
	}
	return nil
}

// pinned returns the pool index of the target the request's cookie names,
// or -1 to let the algorithm pick: when there is no cookie, or it can't be
// decoded, has expired, belongs to another group, or names a target that is
// not registered, draining, unhealthy or unacceptable for this try. Only a
// target of the snapshot can come out of it, so a forged cookie can never
// make Caddy dial anything else.
func (s *stickiness) pinned(r *http.Request, kr *selection.Keyring, group string, v view, ok func(int) bool, now time.Time) int {
	if kr == nil {
		return -1
	}
	if s.app != "" {
		// app_cookie: stickiness lasts as long as the application's cookie.
		if _, ok := cookieValue(r, s.app); !ok {
			return -1
		}
	}
	value, found := cookieValue(r, s.cookie)
	if !found {
		return -1
	}
	st, err := kr.Open(value, group, now)
	if err != nil {
		return -1
	}
	si := v.snap.Index(targetgroup.TargetKey{ID: st.ID, Port: st.Port})
	if !v.snap.IsHealthy(si) {
		return -1
	}
	if i := v.poolIndex(si); i >= 0 && ok(i) {
		return i
	}
	return -1
}

// cookieValue is the value of the request's first valid cookie called
// name, read as net/http reads it (names and parts trimmed, quotes removed,
// cookies with bytes not allowed in a value skipped), but in place:
// http.Request.Cookie parses and allocates every cookie of the request to
// find one.
func cookieValue(r *http.Request, name string) (string, bool) {
	for _, line := range r.Header["Cookie"] {
	parts:
		for len(line) > 0 {
			var part string
			part, line, _ = strings.Cut(line, ";")
			k, v, _ := strings.Cut(textproto.TrimString(part), "=")
			if textproto.TrimString(k) != name {
				continue
			}
			if len(v) > 1 && v[0] == '"' && v[len(v)-1] == '"' {
				v = v[1 : len(v)-1]
			}
			for i := 0; i < len(v); i++ {
				if b := v[i]; b < 0x20 || b >= 0x7f || b == '"' || b == ';' || b == '\\' {
					continue parts
				}
			}
			return v, true
		}
	}
	return "", false
}

// sealedCookies are the Set-Cookie values last issued for a target, kept in
// the target's memo: within one second every response for the target gets
// the same cookies (their expiry has a resolution of a second anyway), so
// they are sealed and formatted about once per second per target, not on
// every response.
type sealedCookies struct {
	kr      *selection.Keyring
	group   string
	stick   stickiness
	expires int64 // Unix seconds
	headers []string
}

// setCookies (re)writes the sticky cookies for t, with a fresh expiry, as
// ALB does on every response. A retry of the same request replaces what an
// earlier try set instead of adding a second cookie.
func (s *stickiness) setCookies(w http.ResponseWriter, kr *selection.Keyring, group string, t *targetgroup.Target, now time.Time) {
	if kr == nil {
		return
	}
	sec := now.Add(s.duration).Unix()
	memo := t.ProxyMemo()
	c, _ := memo.Load().(*sealedCookies)
	if c == nil || c.kr != kr || c.expires != sec || c.group != group || c.stick != *s {
		var err error
		if c, err = s.seal(kr, group, t, sec); err != nil {
			return
		}
		memo.Store(c)
	}
	h := w.Header()
	kept := h["Set-Cookie"]
	if len(kept) > 0 {
		kept = slices.DeleteFunc(kept, s.sets)
	}
	// A copy: the memo's slice is shared by every response.
	h["Set-Cookie"] = append(kept, c.headers...)
}

func (s *stickiness) seal(kr *selection.Keyring, group string, t *targetgroup.Target, sec int64) (*sealedCookies, error) {
	key := t.Key()
	expires := time.Unix(sec, 0)
	value, err := kr.Seal(selection.Sticky{Group: group, ID: key.ID, Port: key.Port, Expires: expires})
	if err != nil {
		return nil, err
	}
	c := &sealedCookies{kr: kr, group: group, stick: *s, expires: sec}
	// ALB uses Expires, not Max-Age.
	c.headers = append(c.headers, (&http.Cookie{Name: s.cookie, Value: value, Path: "/", Expires: expires}).String())
	if s.cors {
		// Browsers need SameSite=None; Secure to send the cookie with
		// cross-origin requests.
		c.headers = append(c.headers, (&http.Cookie{Name: s.cookie + "CORS", Value: value, Path: "/", Expires: expires, SameSite: http.SameSiteNoneMode, Secure: true}).String())
	}
	return c, nil
}

// sets tells whether a Set-Cookie value is one of the cookies s sets.
func (s *stickiness) sets(setCookie string) bool {
	rest, ok := strings.CutPrefix(setCookie, s.cookie)
	if ok && s.cors {
		rest = strings.TrimPrefix(rest, "CORS")
	}
	return ok && strings.HasPrefix(rest, "=")
}
