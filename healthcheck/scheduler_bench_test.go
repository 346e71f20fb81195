//go:build unix

package healthcheck

import (
	"context"
	"net"
	"strconv"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// BenchmarkScheduler measures the steady-state cost of checking N targets by
// TCP every 5s: CPU seconds consumed per wall second (1.0 = one core busy).
// The figure covers the whole process, the local listener that accepts and
// closes every connection included. Each iteration observes two intervals,
// so -benchtime 1x finishes both sizes in about 25s.
func BenchmarkScheduler(b *testing.B) {
	for _, n := range []int{5000, 10000} {
		b.Run(strconv.Itoa(n), func(b *testing.B) { benchScheduler(b, n) })
	}
}

func benchScheduler(b *testing.B, targets int) {
	const interval = 5 * time.Second
	raiseFileLimit(b)

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			// A graceful close: resetting here could reach the prober
			// before its connect returns, failing the check. The prober's
			// own reset leaves no TIME_WAIT socket on either side.
			c.Close()
		}
	}()
	addr := ln.Addr().String()

	p := NewProber()
	defer p.Close()
	s := NewScheduler(0)
	defer s.Stop()
	// Spread first runs over a whole interval: steady state from the start.
	s.SetFirstJitter(interval)
	var checks, failures atomic.Int64
	spec := Spec{Protocol: "TCP", Timeout: 2 * time.Second}
	for i := range targets {
		s.Upsert("bench", "target-"+strconv.Itoa(i), interval, func(ctx context.Context) {
			if !p.Probe(ctx, "tcp", addr, spec).Healthy {
				failures.Add(1)
			}
			checks.Add(1)
		})
	}
	s.Start()

	var cpu, wall time.Duration
	var done, failed int64
	b.ResetTimer()
	for range b.N {
		u0, c0, f0, t0 := cpuTime(b), checks.Load(), failures.Load(), time.Now()
		time.Sleep(2 * interval) // a fixed wall window is the measurement itself
		cpu += cpuTime(b) - u0
		wall += time.Since(t0)
		done += checks.Load() - c0
		failed += failures.Load() - f0
	}
	b.StopTimer()
	b.ReportMetric(cpu.Seconds()/wall.Seconds(), "cpu/wall")
	b.ReportMetric(float64(done)/wall.Seconds(), "checks/s")
	b.ReportMetric(float64(failed), "failures")
}

// cpuTime returns the user plus system CPU time of the process.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// raiseFileLimit lifts the soft descriptor limit to the hard one: at most 64
// checks run at once, but a CI default of 1024 leaves little headroom for
// sockets still closing.
func raiseFileLimit(b *testing.B) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return
	}
	if lim.Cur < lim.Max {
		lim.Cur = lim.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
			b.Logf("cannot raise the file limit: %v", err)
		}
	}
}
