package integration

import (
	"net/http"
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
	cors     string        // its SameSite=None twin (lb_cookie only)
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
		return &stickiness{cookie: a.LBCookieName, cors: a.LBCookieName + "CORS", duration: a.LBCookieDuration}
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
		if _, err := r.Cookie(s.app); err != nil {
			return -1
		}
	}
	c, err := r.Cookie(s.cookie)
	if err != nil {
		return -1
	}
	st, err := kr.Open(c.Value, group, now)
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

// setCookies (re)writes the sticky cookies for t, with a fresh expiry, as
// ALB does on every response. A retry of the same request replaces what an
// earlier try set instead of adding a second cookie.
func (s *stickiness) setCookies(w http.ResponseWriter, kr *selection.Keyring, group string, t *targetgroup.Target, now time.Time) {
	if kr == nil {
		return
	}
	cfg := t.Config()
	expires := now.Add(s.duration)
	value, err := kr.Seal(selection.Sticky{Group: group, ID: cfg.ID, Port: cfg.Port, Expires: expires})
	if err != nil {
		return
	}
	h := w.Header()
	kept := h.Values("Set-Cookie")[:0:0]
	for _, sc := range h.Values("Set-Cookie") {
		if !strings.HasPrefix(sc, s.cookie+"=") && (s.cors == "" || !strings.HasPrefix(sc, s.cors+"=")) {
			kept = append(kept, sc)
		}
	}
	h.Del("Set-Cookie")
	for _, sc := range kept {
		h.Add("Set-Cookie", sc)
	}
	// ALB uses Expires, not Max-Age.
	http.SetCookie(w, &http.Cookie{Name: s.cookie, Value: value, Path: "/", Expires: expires})
	if s.cors != "" {
		// Browsers need SameSite=None; Secure to send the cookie with
		// cross-origin requests.
		http.SetCookie(w, &http.Cookie{Name: s.cors, Value: value, Path: "/", Expires: expires, SameSite: http.SameSiteNoneMode, Secure: true})
	}
}
