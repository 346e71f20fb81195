// Package selection holds the target-picking algorithms of target groups.
// They are pure: callers describe candidates through small functions, so the
// same code serves reverse_proxy and layer 4 and is tested without Caddy.
package selection

// RoundRobin returns the first acceptable index at or after cursor (mod n),
// or -1 when none is acceptable. Skipping unacceptable candidates from a
// shared cursor keeps the spread even when some are out.
func RoundRobin(n int, cursor uint64, ok func(i int) bool) int {
	if n <= 0 {
		return -1
	}
	start := int(cursor % uint64(n))
	for k := 0; k < n; k++ {
		i := start + k
		if i >= n {
			i -= n
		}
		if ok(i) {
			return i
		}
	}
	return -1
}

// LeastOutstanding returns the acceptable index with the fewest requests in
// flight; ties go to the first one at or after cursor, so that equally busy
// targets take turns. It returns -1 when none is acceptable.
func LeastOutstanding(n int, cursor uint64, inflight func(i int) int64, ok func(i int) bool) int {
	if n <= 0 {
		return -1
	}
	best, bestLoad := -1, int64(0)
	start := int(cursor % uint64(n))
	for k := 0; k < n; k++ {
		i := start + k
		if i >= n {
			i -= n
		}
		if !ok(i) {
			continue
		}
		if load := inflight(i); best < 0 || load < bestLoad {
			best, bestLoad = i, load
		}
	}
	return best
}
