package targetgroup

import (
	"errors"
	"net/netip"
	"sync"
)

// Every change the API makes goes through change, in the order that keeps
// what is in force and what is stored alike: the change is validated
// without changing anything, what it writes into this node's contribution
// is stored, and only then does the change take effect. A change that is
// refused, or that can't be stored, changes nothing anywhere; one that is
// acknowledged is what a restart, or every other node of the fleet, brings
// back.

// plan is a validated change: what it writes into this node's contribution
// to the group, and how it takes effect once that is stored.
type plan struct {
	delta delta
	// commit puts the change in force. nil: the change changes nothing,
	// and nothing is stored.
	commit func() error
}

// change makes one API change of the group called name. Under the name's
// lock, so that the node's records are written in the order of its
// changes, prepare validates the change against the state in force and
// returns its plan, changing nothing; the plan's delta is stored; then
// commit puts the change in force, after checking again what a config load
// may have changed while the record was being written (the API holds the
// name's lock, not the registry's). A change a config load overtook is
// taken out of the stored contribution again.
func (r *Registry) change(name string, prepare func() (plan, error)) error {
	defer r.names.lock(name)()
	p, err := prepare()
	if err != nil || p.commit == nil {
		return err
	}
	prev, err := r.record(name, p.delta)
	if err != nil {
		return err
	}
	if err := p.commit(); err != nil {
		r.revert(name, prev)
		if errors.Is(err, errOvertaken) {
			return nil
		}
		return err
	}
	return nil
}

// errOvertaken is what a commit returns when a config load made the change
// needless while its record was being written (the config declared the
// group the change creates): the stored change is taken back, and the call
// succeeds.
var errOvertaken = errors.New("overtaken by a config load")

// edit is a validated change of one group's own state, its targets or its
// settings: what it writes and how it applies (nil: it changes nothing).
// apply runs with the group's mu held.
type edit struct {
	delta delta
	apply func()
}

// changeGroup is change for an edit of an existing group: validate, called
// with g.mu held, checks the edit against the group as it is. The edit
// applies under g.mu, and the group's snapshot is published with it. If a
// config load changed what the edit was validated against while its record
// was being written, the edit is validated again before it applies.
func (r *Registry) changeGroup(name string, validate func(g *Group) (edit, error)) error {
	return r.change(name, func() (plan, error) {
		g, err := r.writableGroup(name)
		if err != nil {
			return plan{}, err
		}
		g.lock()
		defer g.unlock()
		b := r.basis(g)
		e, err := validate(g)
		if err != nil || e.apply == nil {
			return plan{}, err
		}
		return plan{delta: e.delta, commit: func() error {
			g.lock()
			defer g.unlock()
			if r.basis(g) != b {
				if g.closed {
					return errNotFound(name)
				}
				again, err := validate(g)
				if err != nil {
					return err
				}
				e = again
			}
			if e.apply != nil {
				e.apply()
			}
			g.publish()
			return nil
		}}, nil
	})
}

// writableGroup returns the named group if the API may change it now.
func (r *Registry) writableGroup(name string) (*Group, error) {
	g := r.Group(name)
	if g == nil {
		return nil, errNotFound(name)
	}
	if err := r.writable(name); err != nil {
		return nil, err
	}
	return g, nil
}

// changeBasis is what validating an API change of a group depends on. A
// config load may replace any of it while the change's record is being
// written; the change is then validated again before it takes effect.
type changeBasis struct {
	spec    *Spec
	source  string
	closed  bool
	allowed *[]netip.Prefix
	limits  *Limits
}

// basis captures g's change basis. Called with g.mu held.
func (r *Registry) basis(g *Group) changeBasis {
	return changeBasis{spec: g.spec, source: g.source, closed: g.closed, allowed: r.allowed.Load(), limits: r.limits.Load()}
}

// nameLocks serialises the changes of one group name — the API's, and the
// sync loop's merges of other nodes' changes — together with the writes of
// their records, so that records are written in the order of the changes.
// Lock order: a name, then Registry.mu, then a group's mu.
type nameLocks struct {
	mu sync.Mutex
	m  map[string]*nameLock
}

type nameLock struct {
	mu sync.Mutex
	// callers holding or waiting for mu; the entry is dropped at 0, so
	// that names the API tried once cost nothing afterwards.
	holders int
}

// lock takes name's lock and returns its unlock.
func (l *nameLocks) lock(name string) (unlock func()) {
	l.mu.Lock()
	if l.m == nil {
		l.m = make(map[string]*nameLock)
	}
	e := l.m[name]
	if e == nil {
		e = &nameLock{}
		l.m[name] = e
	}
	e.holders++
	l.mu.Unlock()
	e.mu.Lock()
	return func() {
		e.mu.Unlock()
		l.mu.Lock()
		if e.holders--; e.holders == 0 {
			delete(l.m, name)
		}
		l.mu.Unlock()
	}
}

// holders reports how many callers hold or wait for name's lock.
func (l *nameLocks) holders(name string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	if e := l.m[name]; e != nil {
		return e.holders
	}
	return 0
}
