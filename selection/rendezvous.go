package selection

import "hash/maphash"

// Rendezvous returns the acceptable index whose (key, id) pair scores
// highest (highest-random-weight hashing): a key keeps its target while that
// target stays acceptable, and when targets come or go only the keys of
// those targets move. It returns -1 when none is acceptable.
func Rendezvous(seed maphash.Seed, key string, n int, id func(i int) string, ok func(i int) bool) int {
	best, bestScore := -1, uint64(0)
	for i := 0; i < n; i++ {
		if !ok(i) {
			continue
		}
		var h maphash.Hash
		h.SetSeed(seed)
		h.WriteString(key)
		h.WriteByte(0)
		h.WriteString(id(i))
		if s := h.Sum64(); best < 0 || s > bestScore {
			best, bestScore = i, s
		}
	}
	return best
}
