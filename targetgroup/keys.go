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
	st := r.storage()
	var keys []selection.Key
	if st != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := st.Lock(ctx, keysKey); err != nil {
			return err
		}
		defer func() { _ = st.Unlock(context.Background(), keysKey) }()
		raw, err := st.Load(ctx, keysKey)
		switch {
		case err == nil:
			if keys, err = selection.UnmarshalKeys(raw); err != nil {
				r.logger.Error("replacing unreadable sticky cookie keys", zap.Error(err))
				keys = nil
			}
		case !errors.Is(err, fs.ErrNotExist):
			return err
		}
	} else {
		keys = r.memKeys
	}
	keys, changed, err := selection.Rotate(keys, now, keyRotation, keyLifetime)
	if err != nil {
		return err
	}
	if changed && st != nil {
		raw, err := selection.MarshalKeys(keys)
		if err != nil {
			return err
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := st.Store(ctx, keysKey, raw); err != nil {
			return err
		}
		r.logger.Info("rotated sticky cookie keys", zap.Int("keys", len(keys)))
	}
	kr, err := selection.NewKeyring(keys)
	if err != nil {
		return err
	}
	r.memKeys = keys
	r.keyring.Store(kr)
	return nil
}
