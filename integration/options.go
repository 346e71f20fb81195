package integration

import (
	"fmt"
	"strconv"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
)

// groupArg reads the one argument of a directive that names a group:
//
//	<directive> <group>
func groupArg(d *caddyfile.Dispenser) (string, error) {
	d.Next() // consume the directive name
	if !d.NextArg() {
		return "", d.ArgErr()
	}
	group := d.Val()
	if d.NextArg() {
		return "", d.ArgErr()
	}
	return group, nil
}

// parseHandler reads the directive of either target_group handler, HTTP or
// layer 4, into its fields:
//
//	target_group <group> {
//		retries <n>|off
//		dial_timeout <duration>
//	}
//
// dial_timeout only where dialTimeout is not nil (layer 4); unknown is the
// error for any other option, '%s' its name.
func parseHandler(d *caddyfile.Dispenser, group *string, retries *int, dialTimeout *caddy.Duration, unknown string) error {
	g, err := groupArg(d)
	if err != nil {
		return err
	}
	*group = g
	for d.NextBlock(0) {
		switch opt := d.Val(); {
		case opt == "retries":
			err = parseRetries(d, retries)
		case opt == "dial_timeout" && dialTimeout != nil:
			err = parseDialTimeout(d, dialTimeout)
		default:
			return d.Errf(unknown, opt)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// parseDialTimeout reads `dial_timeout <duration>` into *dst, which must
// still be unset.
func parseDialTimeout(d *caddyfile.Dispenser, dst *caddy.Duration) error {
	if *dst != 0 {
		return d.Errf("target_group: duplicate option 'dial_timeout'")
	}
	if !d.NextArg() {
		return d.ArgErr()
	}
	dur, err := caddy.ParseDuration(d.Val())
	if err != nil {
		return d.Errf("target_group: dial_timeout '%s': %v", d.Val(), err)
	}
	if dur <= 0 {
		return d.Errf("target_group: dial_timeout '%s' must be positive", d.Val())
	}
	*dst = caddy.Duration(dur)
	if d.NextArg() {
		return d.ArgErr()
	}
	return nil
}

// Both handlers try another target when one can't be reached, with the
// same setting: retries is how many other targets a request (HTTP) or a
// connection (layer 4) may try. 0 means the default, -1 none.
const (
	defaultRetries = 2
	// maxRetries bounds retries: a bigger number only delays the failure
	// when every target is unreachable.
	maxRetries = 10
)

// checkRetries validates a handler's retries setting.
func checkRetries(handler string, n int) error {
	if n < -1 || n > maxRetries {
		return fmt.Errorf("%s: retries must be -1 (off) or 0-%d, got %d", handler, maxRetries, n)
	}
	return nil
}

// retriesOf is the number of retries in effect for a setting.
func retriesOf(n int) int {
	switch n {
	case 0:
		return defaultRetries
	case -1:
		return 0
	}
	return n
}

// parseRetries reads `retries <n>|off` into *dst, which must still be
// unset. `retries 0` means off, as `off` does.
func parseRetries(d *caddyfile.Dispenser, dst *int) error {
	if *dst != 0 {
		return d.Errf("target_group: duplicate option 'retries'")
	}
	if !d.NextArg() {
		return d.ArgErr()
	}
	n := -1
	if d.Val() != "off" {
		v, err := strconv.Atoi(d.Val())
		if err != nil || v < 0 || v > maxRetries {
			return d.Errf("target_group: retries must be off or 0-%d, got %q", maxRetries, d.Val())
		}
		if v > 0 {
			n = v
		}
	}
	*dst = n
	if d.NextArg() {
		return d.ArgErr()
	}
	return nil
}
