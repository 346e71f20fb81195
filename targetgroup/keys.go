package targetgroup

import (
	"context"
	"errors"
	"io/fs"
	"time"

	"go.uber.org/zap"

	"github.com/caddy-targetgroup/caddy-targetgroup/selection"
)

// Sticky cookies are sealed with the newest key of a ring that rotates
// every keyRotation and keeps each key for keyLifetime: longer than the
// longest cookie (7 days) plus a rotation, so that a cookie stays readable
// for its whole life. The ring lives in Caddy's storage, so a restart (and
// every node sharing the storage) accepts the cookies issued before.
const (
	keyRotation = 24 * time.Hour
	keyLifetime = 7*24*time.Hour + 2*keyRotation
	keysKey     = "target_groups/cookie_keys.json"
	// keyActivation: a new key seals only once it is this old, by when
	// every node of the fleet has read it (they re-read the ring every
	// keysEvery), so that any node opens the cookies any node seals.
	keyActivation = 2 * time.Minute
)

// Keyring returns the key ring that seals and opens sticky cookies.
func (r *Registry) Keyring() *selection.Keyring { return r.keyring.Load() }

// rotateKeys loads the stored ring, adds a key when the newest is older than
// the rotation period, drops keys past their lifetime, and stores the ring
// back if it changed — under the storage lock, so nodes sharing the storage
// converge on one ring.
func (r *Registry) rotateKeys() error {
	r.keyMu.Lock()
	defer r.keyMu.Unlock()
	now := r.clock.Now()
	var keys []selection.Key
	var changed bool
	var err error
	if st := r.storage(); st == nil {
		keys, _, err = selection.Rotate(r.memKeys, now, keyRotation, keyLifetime)
	} else {
		err = r.readModifyWrite(st, keysKey, func(stored []byte, found bool) ([]byte, error) {
			// A ring missing from storage (lost with its data) is this
			// node's ring, not a new one: the cookies sealed so far must
			// keep opening.
			prev := r.memKeys
			if found {
				var bad error
				if prev, bad = selection.UnmarshalKeys(stored); bad != nil {
					r.logger.Error("replacing unreadable sticky cookie keys", zap.Error(bad))
					prev = nil
				}
			}
			var err error
			if keys, changed, err = selection.Rotate(prev, now, keyRotation, keyLifetime); err != nil || !changed && found {
				return nil, err
			}
			return selection.MarshalKeys(keys)
		})
		if err == nil && changed {
			r.logger.Info("rotated sticky cookie keys", zap.Int("keys", len(keys)))
		}
	}
	if err != nil {
		return err
	}
	return r.useKeys(keys, now)
}

// useKeys makes keys the ring in force. Called with keyMu held.
func (r *Registry) useKeys(keys []selection.Key, now time.Time) error {
	kr, err := selection.NewKeyringAt(keys, now, keyActivation)
	if err != nil {
		return err
	}
	r.memKeys = keys
	r.keyring.Store(kr)
	return nil
}

// reloadKeys reads the key ring another node may have rotated, without the
// storage lock that rotation takes, and makes the newest key old enough to
// seal the sealing key.
func (r *Registry) reloadKeys() error {
	st := r.storage()
	if st == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), storageCallTimeout)
	raw, err := st.Load(ctx, keysKey)
	cancel()
	r.keyMu.Lock()
	defer r.keyMu.Unlock()
	keys := r.memKeys
	switch {
	case err == nil:
		stored, bad := selection.UnmarshalKeys(raw)
		if bad != nil {
			return bad
		}
		keys = stored
	case !errors.Is(err, fs.ErrNotExist):
		return err
	case len(keys) > 0:
		// The storage lost the ring (a Redis restarted without its data):
		// store it again before a node that starts creates another one and
		// the cookies sealed so far stop opening.
		err := r.readModifyWrite(st, keysKey, func(_ []byte, found bool) ([]byte, error) {
			if found {
				return nil, nil
			}
			return selection.MarshalKeys(keys)
		})
		if err != nil {
			return err
		}
		r.logger.Warn("the sticky cookie keys were missing from storage; stored them again")
	}
	if len(keys) == 0 {
		return nil
	}
	return r.useKeys(keys, r.clock.Now())
}
