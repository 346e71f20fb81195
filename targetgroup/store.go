package targetgroup

import (
	"context"
	"encoding/json"
	"errors"
	"io/fs"
	"time"

	"github.com/caddyserver/certmagic"
	"go.uber.org/zap"
)

// storagePrefix is where records live in Caddy's storage: one record per
// group, so that nodes sharing a storage never rewrite each other's groups.
const storagePrefix = "target_groups/groups/"

func recordKey(name string) string { return storagePrefix + name + ".json" }

// Storage timeouts. A write waits longer than a read: it may have to wait
// for the storage lock of a writer that crashed (file system locks go stale
// after 10 s).
const (
	saveTimeout    = 30 * time.Second
	restoreTimeout = 10 * time.Second // of each listing and each record
)

// storage is the storage of the config in force.
func (r *Registry) storage() certmagic.Storage {
	if s := r.store.Load(); s != nil {
		return *s
	}
	return nil
}

// save writes rec as the record of group rec.Name and returns the version
// it wrote, one above both the stored version and own, the version the
// caller last wrote or read: a node that reads a newer version than its own
// knows another node wrote in between. The file system storage writes
// atomically (temporary file and rename). Callers hold the name's lock
// (r.names), so that a group's records are written in the order of its
// changes.
func (r *Registry) save(rec groupRecord, own int64) (int64, error) {
	st := r.storage()
	if st == nil {
		return own, nil
	}
	err := r.readModifyWrite(st, recordKey(rec.Name), func(stored []byte, found bool) ([]byte, error) {
		// Only the stored version matters here.
		var prev struct {
			Version int64 `json:"version"`
		}
		if found && json.Unmarshal(stored, &prev) != nil {
			r.logger.Warn("replacing an unreadable target group record", zap.String("group", rec.Name))
		}
		rec.Version = max(prev.Version, own) + 1
		raw, err := json.Marshal(rec)
		if err != nil {
			return nil, &storageError{"encoding", err}
		}
		return raw, nil
	})
	if err != nil {
		var se *storageError
		if !errors.As(err, &se) {
			se = &storageError{"writing", err}
		}
		r.logger.Error("target group storage failed", zap.String("group", rec.Name), zap.String("operation", se.op), zap.Error(se.err))
		return 0, errStorageUnavailable(rec.Name, se)
	}
	return rec.Version, nil
}

// errStorageUnavailable refuses a change whose record could not be written.
// The change is not in force either: what the API acknowledges is exactly
// what a restart brings back.
func errStorageUnavailable(name string, err error) *Error {
	return refuse(KindStorageUnavailable,
		"target group %q was not changed: the change could not be written to storage (%v); retry once the storage is reachable", name, err)
}

// rewrite stores g's record as memory has it. It follows a change that a
// config load overtook while its record was being written (the stored
// record then says what the change would have made): storage follows
// memory again. Called with the name's lock held; a failure is logged.
func (r *Registry) rewrite(g *Group) {
	g.lock()
	rec, own := g.record(), g.version.Load()
	g.unlock()
	v, err := r.save(rec, own)
	if err != nil {
		r.logger.Error("the stored record of the target group may differ from what is in force until its next change", zap.String("group", g.name), zap.Error(err))
		return
	}
	g.version.Store(v)
}

// storageError is a failed storage call and the step it was for.
type storageError struct {
	op  string // locking, reading, encoding, writing, removing
	err error
}

func (e *storageError) Error() string { return e.op + ": " + e.err.Error() }

func (e *storageError) Unwrap() error { return e.err }

// readModifyWrite replaces the value of key under the storage's lock, which
// serialises the writers of every node sharing the storage: modify gets the
// stored value (found is false when there is none) and returns the value
// to store, or nil to store nothing. A failed storage call is returned as
// a *storageError.
func (r *Registry) readModifyWrite(st certmagic.Storage, key string, modify func(stored []byte, found bool) ([]byte, error)) error {
	return r.locked(st, key, saveTimeout, func(ctx context.Context) error {
		stored, err := st.Load(ctx, key)
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return &storageError{"reading", err}
		}
		next, err := modify(stored, err == nil)
		if err != nil || next == nil {
			return err
		}
		if err := st.Store(ctx, key, next); err != nil {
			return &storageError{"writing", err}
		}
		return nil
	})
}

// locked runs f with the storage lock of key held, its context bounded by
// timeout. A failure to lock is returned as a *storageError.
func (r *Registry) locked(st certmagic.Storage, key string, timeout time.Duration, f func(ctx context.Context) error) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if err := st.Lock(ctx, key); err != nil {
		return &storageError{"locking", err}
	}
	defer r.unlockStorage(st, key)
	return f(ctx)
}

// unlockStorage releases a storage lock, within a bound of its own: a
// storage that stopped answering must not hold the caller (for a record,
// the group's name lock and every later change of the group) for ever.
func (r *Registry) unlockStorage(st certmagic.Storage, key string) {
	ctx, cancel := context.WithTimeout(context.Background(), saveTimeout)
	defer cancel()
	if err := st.Unlock(ctx, key); err != nil {
		r.logger.Error("releasing a storage lock", zap.String("key", key), zap.Error(err))
	}
}
