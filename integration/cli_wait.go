package integration

import (
	"fmt"
	"net/http"
	"time"

	"github.com/spf13/pflag"

	"github.com/caddy-targetgroup/caddy-targetgroup/targetgroup"
)

// The waiters of `caddy target-groups wait`, as the AWS CLI's: they poll
// DescribeTargetHealth until every target asked about is in the state
// waited for. The AWS CLI polls every 15s, 40 times (10 minutes); these
// poll every second by default, for as long.
const (
	waitTimeout      = 10 * time.Minute
	waitPollInterval = time.Second
)

func cliWaiters() []cliOp {
	return []cliOp{
		{
			name: "target-in-service", group: true,
			short: "Waits until targets are healthy",
			long: `Polls DescribeTargetHealth until every target of --targets (every
registered target of the group without it, and at least one) is healthy, or
unavailable (health checks disabled: it gets traffic). Exit status 255 when
--timeout passes first.`,
			flags: waitFlags,
			run:   waiter("TargetInService", targetInService),
		},
		{
			name: "target-deregistered", group: true,
			short: "Waits until targets are deregistered and drained",
			long: `Polls DescribeTargetHealth until no target of --targets (no target of the
group without it) is registered any more: draining targets are waited for.
Exit status 255 when --timeout passes first.`,
			flags: waitFlags,
			run:   waiter("TargetDeregistered", targetDeregistered),
		},
	}
}

func waitFlags(fs *pflag.FlagSet) {
	fs.StringArray("targets", nil, "targets, `Id=...`,Port=... (several after one flag; default: every target of the group)")
	fs.Duration("timeout", waitTimeout, "how long to wait before giving up (exit status 255)")
	fs.Duration("poll-interval", waitPollInterval, "how often to ask")
}

// targetInService tells whether every target is in service, and if not,
// which target is not and why.
func targetInService(ts []targetgroup.TargetHealthDescription) (bool, string) {
	if len(ts) == 0 {
		return false, "the group has no targets"
	}
	for _, t := range ts {
		if s := t.TargetHealth.State; s != targetgroup.StateHealthy && s != targetgroup.StateUnavailable {
			return false, describeState(t)
		}
	}
	return true, ""
}

// targetDeregistered tells whether no target is registered any more.
func targetDeregistered(ts []targetgroup.TargetHealthDescription) (bool, string) {
	for _, t := range ts {
		if t.TargetHealth.State != targetgroup.StateUnused {
			return false, describeState(t)
		}
	}
	return true, ""
}

func describeState(t targetgroup.TargetHealthDescription) string {
	s := fmt.Sprintf("%s is %s", t.Target.Key(), t.TargetHealth.State)
	if t.TargetHealth.Reason != "" {
		s += " (" + t.TargetHealth.Reason + ")"
	}
	return s
}

// waiter runs a waiter: done reports whether the answer is the one waited
// for, and if not, why, for the message of a timeout.
func waiter(name string, done func([]targetgroup.TargetHealthDescription) (bool, string)) func(c *cliCall) error {
	return func(c *cliCall) error {
		timeout, _ := c.fs.GetDuration("timeout")
		poll, _ := c.fs.GetDuration("poll-interval")
		if timeout <= 0 || poll <= 0 {
			return paramErrorf("--timeout and --poll-interval must be positive")
		}
		deadline := time.Now().Add(timeout)
		g, err := c.group()
		if err != nil {
			return err
		}
		path, err := c.healthPath(g)
		if err != nil {
			return err
		}
		why := "no answer yet"
		for {
			raw, err := c.doWithin(deadline, http.MethodGet, path)
			if err != nil {
				if time.Now().After(deadline) {
					break
				}
				return err
			}
			hs, err := decodeHealth(raw)
			if err != nil {
				return err
			}
			var ok bool
			if ok, why = done(hs); ok {
				return nil
			}
			left := time.Until(deadline)
			if left <= 0 {
				break
			}
			time.Sleep(min(poll, left))
		}
		return &cliWaiterError{name, fmt.Sprintf("Max attempts exceeded: not done after %s (--timeout): %s", timeout, why)}
	}
}
