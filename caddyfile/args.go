package caddyfile

import (
	"strconv"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

	"github.com/caddy-targetgroup/caddy-targetgroup/targetgroup"
)

// errAt wraps err with the file and line of tok, as the dispenser would
// had it been at tok.
func errAt(tok caddyfile.Token, err error) error {
	d := caddyfile.NewDispenser([]caddyfile.Token{tok})
	d.Next()
	return d.WrapErr(err)
}

// oneArg returns the single argument of the current option.
func oneArg(d *caddyfile.Dispenser) (string, error) {
	if !d.NextArg() {
		return "", d.ArgErr()
	}
	v := d.Val()
	if d.NextArg() {
		return "", d.ArgErr()
	}
	return v, nil
}

// durationArg returns the single duration argument of the option opt.
func durationArg(d *caddyfile.Dispenser, opt string) (targetgroup.Duration, error) {
	v, err := oneArg(d)
	if err != nil {
		return 0, err
	}
	dur, err := caddy.ParseDuration(v)
	if err != nil {
		return 0, d.Errf("%s: %v", opt, err)
	}
	// 0 is how the config says "default"; a written 0 would be silently
	// replaced rather than rejected.
	if dur == 0 {
		return 0, d.Errf("%s: must not be 0; leave it out for the default", opt)
	}
	return targetgroup.Duration(dur), nil
}

// intArg returns the single integer argument of the option opt.
func intArg(d *caddyfile.Dispenser, opt string) (int, error) {
	v, err := oneArg(d)
	if err != nil {
		return 0, err
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		return 0, d.Errf("%s: '%s' is not an integer", opt, v)
	}
	// 0 is how the config says "default"; a written 0 would be silently
	// replaced rather than rejected.
	if n == 0 {
		return 0, d.Errf("%s: must not be 0; leave it out for the default", opt)
	}
	return n, nil
}

// wholeSeconds converts a duration argument of opt into the decimal
// seconds AWS attributes hold.
func wholeSeconds(d *caddyfile.Dispenser, opt, v string) (string, error) {
	dur, err := caddy.ParseDuration(v)
	if err != nil {
		return "", d.Errf("%s: %v", opt, err)
	}
	if dur%time.Second != 0 {
		return "", d.Errf("%s: %s is not a whole number of seconds", opt, v)
	}
	return strconv.FormatInt(int64(dur/time.Second), 10), nil
}
