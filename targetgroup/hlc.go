package targetgroup

import (
	"cmp"
	"strings"
	"sync"
	"time"
)

// HLC is a hybrid logical clock value: the wall time in milliseconds, a
// counter for changes within one millisecond (or behind a clock that went
// back), and the node that made the change, which breaks ties. Between two
// changes of one thing made by nodes of a fleet, the one with the higher
// HLC wins on every node.
type HLC struct {
	Wall  int64  `json:"w"`
	Count uint32 `json:"c,omitempty"`
	Node  string `json:"n"`
}

// Compare orders two HLC values: by wall time, counter, then node.
func (h HLC) Compare(o HLC) int {
	if c := cmp.Compare(h.Wall, o.Wall); c != 0 {
		return c
	}
	if c := cmp.Compare(h.Count, o.Count); c != 0 {
		return c
	}
	return strings.Compare(h.Node, o.Node)
}

// IsZero reports whether h is the zero value, older than every change.
func (h HLC) IsZero() bool { return h == HLC{} }

// maxClockSkew bounds how far ahead of this node's clock an observed HLC may
// be and still move the clock: a peer whose clock runs ahead by more must
// not drag every later change of the fleet into its future.
const maxClockSkew = time.Minute

// hlcClock issues HLC values for one node: each one higher than every value
// issued or observed before (within maxClockSkew of the wall clock).
type hlcClock struct {
	mu   sync.Mutex
	last HLC
	node string
	now  func() time.Time
}

// next returns a value higher than any issued or observed so far.
func (c *hlcClock) next() HLC {
	c.mu.Lock()
	defer c.mu.Unlock()
	wall := c.now().UnixMilli()
	if wall > c.last.Wall {
		c.last = HLC{Wall: wall, Node: c.node}
	} else {
		c.last = HLC{Wall: c.last.Wall, Count: c.last.Count + 1, Node: c.node}
	}
	return c.last
}

// observe moves the clock past h, a value another node issued, unless h is
// further ahead of the wall clock than maxClockSkew.
func (c *hlcClock) observe(h HLC) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if h.Wall > c.now().Add(maxClockSkew).UnixMilli() {
		return
	}
	if h.Compare(c.last) > 0 {
		c.last = HLC{Wall: h.Wall, Count: h.Count, Node: c.node}
	}
}
