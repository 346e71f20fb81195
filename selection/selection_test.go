package selection

import (
	"fmt"
	"hash/maphash"
	"testing"
)

func all(int) bool { return true }

func TestRoundRobinSpreadsEvenly(t *testing.T) {
	counts := make([]int, 3)
	for c := uint64(0); c < 300; c++ {
		counts[RoundRobin(3, c, all)]++
	}
	for i, n := range counts {
		if n != 100 {
			t.Errorf("target %d got %d picks, want 100", i, n)
		}
	}
}

func TestRoundRobinSkipsUnacceptable(t *testing.T) {
	ok := func(i int) bool { return i != 1 }
	for c := uint64(0); c < 10; c++ {
		if got := RoundRobin(3, c, ok); got == 1 || got < 0 {
			t.Fatalf("cursor %d: picked %d", c, got)
		}
	}
	if got := RoundRobin(3, 0, func(int) bool { return false }); got != -1 {
		t.Fatalf("no acceptable candidate: got %d, want -1", got)
	}
	if got := RoundRobin(0, 5, all); got != -1 {
		t.Fatalf("empty pool: got %d, want -1", got)
	}
}

func TestLeastOutstanding(t *testing.T) {
	load := []int64{5, 2, 2, 7}
	in := func(i int) int64 { return load[i] }
	if got := LeastOutstanding(4, 0, in, all); got != 1 {
		t.Fatalf("got %d, want 1", got)
	}
	// Ties rotate with the cursor.
	if got := LeastOutstanding(4, 2, in, all); got != 2 {
		t.Fatalf("tie from cursor 2: got %d, want 2", got)
	}
	if got := LeastOutstanding(4, 0, in, func(i int) bool { return i != 1 && i != 2 }); got != 0 {
		t.Fatalf("got %d, want 0", got)
	}
	if got := LeastOutstanding(4, 0, in, func(int) bool { return false }); got != -1 {
		t.Fatalf("got %d, want -1", got)
	}
}

func TestRendezvousMovesOnlyTheKeysOfAChangedTarget(t *testing.T) {
	seed := maphash.MakeSeed()
	ids := []string{"10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80", "10.0.0.4:80"}
	const clients = 20000
	pick := func(n int) []int {
		out := make([]int, clients)
		for c := range out {
			out[c] = Rendezvous(seed, fmt.Sprintf("192.0.2.%d:%d", c%250, c), n, func(i int) string { return ids[i] }, all)
		}
		return out
	}
	before, after := pick(3), pick(4)
	moved := 0
	for c := range before {
		if before[c] != after[c] {
			moved++
			if after[c] != 3 {
				t.Fatalf("client %d moved from %d to %d, not to the new target", c, before[c], after[c])
			}
		}
	}
	// About 1/4 of the clients move to the fourth target; the standard
	// deviation of that binomial count is sqrt(n p (1-p)) ≈ 61, so 6 sigma
	// is a bound that a correct hash never breaks.
	if want := clients / 4; moved < want-370 || moved > want+370 {
		t.Fatalf("%d of %d clients moved, want about %d", moved, clients, want)
	}
	// A target that leaves takes only its own clients away.
	gone := func(i int) bool { return i != 1 }
	for c := 0; c < 1000; c++ {
		key := fmt.Sprintf("198.51.100.%d", c)
		was := Rendezvous(seed, key, 4, func(i int) string { return ids[i] }, all)
		now := Rendezvous(seed, key, 4, func(i int) string { return ids[i] }, gone)
		if was != 1 && now != was {
			t.Fatalf("client %s moved from %d to %d though its target stayed", key, was, now)
		}
	}
}
