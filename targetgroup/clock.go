package targetgroup

import "github.com/caddy-targetgroup/caddy-targetgroup/healthcheck"

// clock is time as the registry sees it: timestamps, drain timers, the
// health-check scheduler and the background loops all read the same one,
// so that a test that injects a manual clock exercises them without
// sleeping. It is the scheduler's own clock type, so that one value serves
// both.
type clock = healthcheck.Clock

// stopper is a pending timer a target holds, to cancel it.
type stopper interface{ Stop() bool }
