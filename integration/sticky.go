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

// The HTTP half of cookie stickiness (lb_cookie, app_cookie): reading the
// pinned target from the request's cookie, for targetgroup's Pick, and
// sealing the picked target into the response's cookies.

// pinnedKey is the target the request's cookie names, or the zero key:
// when the group is not cookie-sticky, there is no cookie (or, for
// app_cookie, no application cookie), or it can't be decoded, has expired
// or belongs to another group. Pick checks that the target is one of the
// snapshot's, healthy and acceptable for this try, so a forged cookie can
// never make Caddy dial anything else.
func pinnedKey(r *http.Request, st targetgroup.Stickiness, kr *selection.Keyring, group string, now time.Time) targetgroup.TargetKey {
	if !st.Cookied() || kr == nil {
		return targetgroup.TargetKey{}
	}
	if st.AppCookie != "" {
		// app_cookie: stickiness lasts as long as the application's cookie.
		if _, ok := cookieValue(r, st.AppCookie); !ok {
			return targetgroup.TargetKey{}
		}
	}
	value, found := cookieValue(r, st.Cookie)
	if !found {
		return targetgroup.TargetKey{}
	}
	sealed, err := kr.Open(value, group, now)
	if err != nil {
		return targetgroup.TargetKey{}
	}
	return targetgroup.TargetKey{ID: sealed.ID, Port: sealed.Port}
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
	stick   targetgroup.Stickiness
	expires int64 // Unix seconds
	headers []string
}

// setCookies (re)writes the sticky cookies for t, with a fresh expiry, as
// ALB does on every response. A retry of the same request replaces what an
// earlier try set instead of adding a second cookie.
func setCookies(w http.ResponseWriter, st targetgroup.Stickiness, kr *selection.Keyring, group string, t *targetgroup.Target, now time.Time) {
	if kr == nil {
		return
	}
	sec := now.Add(st.Duration).Unix()
	memo := t.ProxyMemo()
	c, _ := memo.Load().(*sealedCookies)
	if c == nil || c.kr != kr || c.expires != sec || c.group != group || c.stick != st {
		var err error
		if c, err = seal(st, kr, group, t, sec); err != nil {
			return
		}
		memo.Store(c)
	}
	h := w.Header()
	kept := h["Set-Cookie"]
	if len(kept) > 0 {
		kept = slices.DeleteFunc(kept, func(v string) bool { return sets(st, v) })
	}
	// A copy: the memo's slice is shared by every response.
	h["Set-Cookie"] = append(kept, c.headers...)
}

func seal(st targetgroup.Stickiness, kr *selection.Keyring, group string, t *targetgroup.Target, sec int64) (*sealedCookies, error) {
	key := t.Key()
	expires := time.Unix(sec, 0)
	value, err := kr.Seal(selection.Sticky{Group: group, ID: key.ID, Port: key.Port, Expires: expires})
	if err != nil {
		return nil, err
	}
	c := &sealedCookies{kr: kr, group: group, stick: st, expires: sec}
	// ALB uses Expires, not Max-Age.
	c.headers = append(c.headers, (&http.Cookie{Name: st.Cookie, Value: value, Path: "/", Expires: expires}).String())
	if st.CORS {
		// Browsers need SameSite=None; Secure to send the cookie with
		// cross-origin requests.
		c.headers = append(c.headers, (&http.Cookie{Name: st.Cookie + "CORS", Value: value, Path: "/", Expires: expires, SameSite: http.SameSiteNoneMode, Secure: true}).String())
	}
	return c, nil
}

// sets tells whether a Set-Cookie value is one of the cookies st sets.
func sets(st targetgroup.Stickiness, setCookie string) bool {
	rest, ok := strings.CutPrefix(setCookie, st.Cookie)
	if ok && st.CORS {
		rest = strings.TrimPrefix(rest, "CORS")
	}
	return ok && strings.HasPrefix(rest, "=")
}
