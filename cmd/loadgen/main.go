// Command loadgen is the benchmark's helper (scripts/bench.sh):
//
//	loadgen run -url URL -c 64 -d 10s [-H 'Name: value']...
//	    a closed-loop HTTP/1.1 load generator with keep-alive connections,
//	    for machines without wrk; prints one RESULT line like the wrk
//	    script's (bench/wrk-report.lua).
//	loadgen report -in bench/results/runs.raw -out bench/results.md [-meta k=v]...
//	    turns the RESULT lines of every round into the markdown results:
//	    medians over rounds, per-round ratios against the stock reverse_proxy.
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	var err error
	switch os.Args[1] {
	case "run":
		err = run(os.Args[2:])
	case "report":
		err = report(os.Args[2:])
	default:
		usage()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "loadgen:", err)
		os.Exit(1)
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: loadgen run -url URL [-c N] [-d DURATION] [-H 'Name: value']... | loadgen report -in FILE -out FILE [-meta key=value]...")
	os.Exit(2)
}

type multi []string

func (m *multi) String() string     { return strings.Join(*m, ", ") }
func (m *multi) Set(s string) error { *m = append(*m, s); return nil }

// run keeps c requests in flight for d and prints the RESULT line.
func run(args []string) error {
	fs := flag.NewFlagSet("run", flag.ExitOnError)
	url := fs.String("url", "", "URL to request")
	conns := fs.Int("c", 64, "connections (requests in flight)")
	dur := fs.Duration("d", 10*time.Second, "duration")
	var headers multi
	fs.Var(&headers, "H", "request header 'Name: value' (repeatable)")
	_ = fs.Parse(args)
	if *url == "" {
		return errors.New("run: -url is required")
	}
	req, err := http.NewRequest(http.MethodGet, *url, nil)
	if err != nil {
		return err
	}
	for _, h := range headers {
		k, v, ok := strings.Cut(h, ":")
		if !ok {
			return fmt.Errorf("run: header %q is not 'Name: value'", h)
		}
		req.Header.Add(strings.TrimSpace(k), strings.TrimSpace(v))
	}
	ctx, cancel := context.WithTimeout(context.Background(), *dur)
	defer cancel()
	var (
		mu        sync.Mutex
		lat       []time.Duration
		errStatus int
		errOther  int
		wg        sync.WaitGroup
	)
	start := time.Now()
	for range *conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tr := &http.Transport{MaxIdleConnsPerHost: 1, DisableCompression: true, DialContext: (&net.Dialer{}).DialContext}
			defer tr.CloseIdleConnections()
			client := &http.Client{Transport: tr}
			var mine []time.Duration
			var bad, broken int
			for ctx.Err() == nil {
				t0 := time.Now()
				resp, err := client.Do(req.WithContext(ctx))
				if err != nil {
					if ctx.Err() == nil {
						broken++
					}
					continue
				}
				_, err = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				switch {
				case err != nil:
					if ctx.Err() == nil {
						broken++
					}
				case resp.StatusCode > 399:
					bad++
					mine = append(mine, time.Since(t0))
				default:
					mine = append(mine, time.Since(t0))
				}
			}
			mu.Lock()
			lat = append(lat, mine...)
			errStatus += bad
			errOther += broken
			mu.Unlock()
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	slices.Sort(lat)
	pct := func(p float64) int64 {
		if len(lat) == 0 {
			return 0
		}
		return lat[min(len(lat)-1, int(p/100*float64(len(lat))))].Microseconds()
	}
	var maxLat int64
	if len(lat) > 0 {
		maxLat = lat[len(lat)-1].Microseconds()
	}
	fmt.Printf("RESULT requests=%d duration_us=%d rps=%.1f p50_us=%d p90_us=%d p99_us=%d max_us=%d errors_connect=0 errors_read=%d errors_write=0 errors_status=%d errors_timeout=0\n",
		len(lat), elapsed.Microseconds(), float64(len(lat))/elapsed.Seconds(), pct(50), pct(90), pct(99), maxLat, errOther, errStatus)
	return nil
}

// sample is one RESULT line of one target in one round.
type sample struct {
	round  int
	target string
	f      map[string]float64
}

// targets in the order of the table, with their descriptions.
var targets = []struct{ key, label string }{
	{"direct", "backend directly (the limit)"},
	{"stock", "Caddy reverse_proxy, static upstreams, round_robin"},
	{"tg-rr", "Caddy target group, round_robin"},
	{"tg-rr-nm", "Caddy target group, round_robin, per-target metrics off"},
	{"tg-lor", "Caddy target group, least_outstanding_requests"},
	{"tg-sticky", "Caddy target group, lb_cookie stickiness"},
	{"tg-sticky-new", "Caddy target group, lb_cookie, clients without a cookie"},
	{"dyn-rr", "reverse_proxy dynamic target_group, round_robin"},
	{"dyn-lor", "reverse_proxy dynamic target_group, least_outstanding_requests"},
	{"dyn-sticky-new", "reverse_proxy dynamic target_group, lb_cookie, clients without a cookie"},
	{"stock-cookie", "Caddy reverse_proxy, static upstreams, cookie policy (its stickiness)"},
	{"stock-cookie-new", "Caddy reverse_proxy, static upstreams, cookie policy, clients without a cookie"},
	{"haproxy", "HAProxy, roundrobin"},
}

func report(args []string) error {
	fs := flag.NewFlagSet("report", flag.ExitOnError)
	in := fs.String("in", "", "the RESULT lines of every round (round=N target=NAME RESULT k=v...)")
	out := fs.String("out", "", "the markdown file to write")
	var meta multi
	fs.Var(&meta, "meta", "key=value shown in the header (repeatable, in order)")
	_ = fs.Parse(args)
	if *in == "" || *out == "" {
		return errors.New("report: -in and -out are required")
	}
	samples, err := readSamples(*in)
	if err != nil {
		return err
	}
	by := map[string][]sample{}
	for _, s := range samples {
		by[s.target] = append(by[s.target], s)
	}
	var b strings.Builder
	b.WriteString("# Benchmark results\n\n")
	b.WriteString("Produced by `make bench` (scripts/bench.sh); raw numbers in bench/results/ (not committed).\n\n")
	for _, m := range meta {
		k, v, _ := strings.Cut(m, "=")
		fmt.Fprintf(&b, "- %s: %s\n", k, v)
	}
	b.WriteString("\nMedians over the rounds (min–max of requests/s in brackets). Latency is the load generator's, per request, at the fixed concurrency. " +
		"Server CPU is the user + system CPU time of the process under test (the backend for the direct run) divided by the requests it served: " +
		"unlike requests/s, it is hardly moved by other tenants of the machine.\n\n")
	b.WriteString("| configuration | requests/s | p50 ms | p99 ms | server CPU µs/request | non-2xx + socket errors |\n|---|---:|---:|---:|---:|---:|\n")
	for _, t := range targets {
		ss := by[t.key]
		if len(ss) == 0 {
			continue
		}
		rps := values(ss, "rps")
		fmt.Fprintf(&b, "| %s | %.0f (%.0f–%.0f) | %.2f | %.2f | %.1f | %.0f |\n", t.label, median(rps), slices.Min(rps), slices.Max(rps),
			median(values(ss, "p50_us"))/1000, median(values(ss, "p99_us"))/1000, median(values(ss, "server_cpu_us")),
			sum(ss, "errors_connect", "errors_read", "errors_write", "errors_status", "errors_timeout"))
	}
	b.WriteString("\nRatios against Caddy's stock reverse_proxy: the median over rounds of each round's ratio (the two ran minutes apart at most, so drift cancels).\n\n")
	b.WriteString("| configuration | requests/s ratio | p50 ratio | p99 ratio | server CPU/request ratio | goal (requests/s ≥ 0.97, CPU/request ≤ 1.03) |\n|---|---:|---:|---:|---:|---|\n")
	var missed []string
	for _, t := range targets {
		if t.key == "stock" || len(by[t.key]) == 0 || len(by["stock"]) == 0 {
			continue
		}
		r := pairedRatio(by[t.key], by["stock"], "rps")
		cpu := pairedRatio(by[t.key], by["stock"], "server_cpu_us")
		goal := ""
		// The sticky path with a cookie is held against Caddy's cookie
		// policy below, not against round robin.
		if (strings.HasPrefix(t.key, "tg-") || strings.HasPrefix(t.key, "dyn-")) && t.key != "tg-sticky" && t.key != "tg-rr-nm" {
			goal = "met"
			if r < 0.97 || cpu > 1.03 {
				goal = "**missed**"
				missed = append(missed, t.label)
			}
		}
		fmt.Fprintf(&b, "| %s | %.3f | %.3f | %.3f | %.3f | %s |\n", t.label, r, pairedRatio(by[t.key], by["stock"], "p50_us"),
			pairedRatio(by[t.key], by["stock"], "p99_us"), cpu, goal)
	}
	if len(by["tg-sticky"]) > 0 && len(by["stock-cookie"]) > 0 {
		// Stickiness against stickiness: both read a cookie on every
		// request and set one on every response.
		fmt.Fprintf(&b, "| lb_cookie against Caddy's cookie policy | %.3f | %.3f | %.3f | %.3f |  |\n",
			pairedRatio(by["tg-sticky"], by["stock-cookie"], "rps"), pairedRatio(by["tg-sticky"], by["stock-cookie"], "p50_us"),
			pairedRatio(by["tg-sticky"], by["stock-cookie"], "p99_us"), pairedRatio(by["tg-sticky"], by["stock-cookie"], "server_cpu_us"))
	}
	// What the metrics cost: the same configuration with and without the
	// per-target series, in two processes pinned alike.
	if len(by["tg-rr"]) > 0 && len(by["tg-rr-nm"]) > 0 {
		fmt.Fprintf(&b, "| round_robin with per-target metrics against without | %.3f | %.3f | %.3f | %.3f |  |\n",
			pairedRatio(by["tg-rr"], by["tg-rr-nm"], "rps"), pairedRatio(by["tg-rr"], by["tg-rr-nm"], "p50_us"),
			pairedRatio(by["tg-rr"], by["tg-rr-nm"], "p99_us"), pairedRatio(by["tg-rr"], by["tg-rr-nm"], "server_cpu_us"))
	}
	// New clients against new clients: both seal a cookie into every
	// response, which round robin does not.
	for _, k := range []string{"tg-sticky-new", "dyn-sticky-new"} {
		if len(by[k]) > 0 && len(by["stock-cookie-new"]) > 0 {
			fmt.Fprintf(&b, "| %s against Caddy's cookie policy, new clients | %.3f | %.3f | %.3f | %.3f |  |\n", k,
				pairedRatio(by[k], by["stock-cookie-new"], "rps"), pairedRatio(by[k], by["stock-cookie-new"], "p50_us"),
				pairedRatio(by[k], by["stock-cookie-new"], "p99_us"), pairedRatio(by[k], by["stock-cookie-new"], "server_cpu_us"))
		}
	}
	if len(missed) > 0 {
		fmt.Fprintf(&b, "\nBelow the goal: %s.\n", strings.Join(missed, "; "))
	}
	b.WriteString("\nPer round (requests/s):\n\n| round |")
	for _, t := range targets {
		if len(by[t.key]) > 0 {
			fmt.Fprintf(&b, " %s |", t.key)
		}
	}
	b.WriteString("\n|---|")
	for _, t := range targets {
		if len(by[t.key]) > 0 {
			b.WriteString("---:|")
		}
	}
	b.WriteString("\n")
	rounds := map[int]bool{}
	for _, s := range samples {
		rounds[s.round] = true
	}
	var rs []int
	for r := range rounds {
		rs = append(rs, r)
	}
	sort.Ints(rs)
	for _, r := range rs {
		fmt.Fprintf(&b, "| %d |", r)
		for _, t := range targets {
			if len(by[t.key]) == 0 {
				continue
			}
			v := "–"
			for _, s := range by[t.key] {
				if s.round == r {
					v = fmt.Sprintf("%.0f", s.f["rps"])
				}
			}
			fmt.Fprintf(&b, " %s |", v)
		}
		b.WriteString("\n")
	}
	return os.WriteFile(*out, []byte(b.String()), 0o644)
}

func readSamples(path string) ([]sample, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []sample
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		s := sample{f: map[string]float64{}}
		ok := false
		for _, kv := range fields {
			k, v, found := strings.Cut(kv, "=")
			if !found {
				ok = ok || kv == "RESULT"
				continue
			}
			switch k {
			case "round":
				s.round, _ = strconv.Atoi(v)
			case "target":
				s.target = v
			default:
				n, err := strconv.ParseFloat(v, 64)
				if err != nil {
					return nil, fmt.Errorf("%s: %q: %v", path, kv, err)
				}
				s.f[k] = n
			}
		}
		if ok && s.target != "" {
			out = append(out, s)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s: no RESULT lines", path)
	}
	return out, sc.Err()
}

func values(ss []sample, k string) []float64 {
	out := make([]float64, len(ss))
	for i, s := range ss {
		out[i] = s.f[k]
	}
	return out
}

func sum(ss []sample, keys ...string) float64 {
	var n float64
	for _, s := range ss {
		for _, k := range keys {
			n += s.f[k]
		}
	}
	return n
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// pairedRatio is the median over rounds of a's value divided by b's in the
// same round.
func pairedRatio(a, b []sample, k string) float64 {
	var rs []float64
	for _, x := range a {
		for _, y := range b {
			if x.round == y.round && y.f[k] > 0 {
				rs = append(rs, x.f[k]/y.f[k])
			}
		}
	}
	return median(rs)
}
