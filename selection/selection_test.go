package selection

import "testing"

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
