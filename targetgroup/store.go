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

// Storage timeouts. A locked write waits longer than a read: it may have to
// wait for the storage lock of a writer that crashed (file system locks go
// stale after 10 s). Only the sticky cookie key ring takes a lock.
const saveTimeout = 30 * time.Second

// storage is the storage of the config in force.
func (r *Registry) storage() certmagic.Storage {
	if s := r.store.Load(); s != nil {
		return *s
	}
	return nil
}

// record stores what an API change of group writes into this node's
// contribution, stamped with a new HLC: the change is in force on every
// node once this returns (each applies it at its next sync). It returns the
// contribution as it was, for revert. Called with the name's lock held.
func (r *Registry) record(group string, d delta) (prev *contribution, err error) {
	f := r.fleet
	floor := merge(f.contributions(group)).floor
	f.mu.Lock()
	defer f.mu.Unlock()
	prev = f.own[group]
	next := prev.with(f.node, group, d, f.hlc.next(), floor, r.clock.Now())
	if err := r.storeOwn(group, next); err != nil {
		r.logger.Error("target group storage failed", zap.String("group", group), zap.Error(err))
		return prev, errStorageUnavailable(group, err)
	}
	return prev, nil
}

// revert stores this node's contribution to group as it was before a
// change that was stored but could not take effect (a config load
// overtook it). Called with the name's lock held; a failure is logged and
// retried by the sync loop.
func (r *Registry) revert(group string, prev *contribution) {
	f := r.fleet
	f.mu.Lock()
	defer f.mu.Unlock()
	if prev == nil {
		prev = &contribution{Node: f.node, Group: group, Targets: []targetEntry{}}
	}
	c := *prev
	if err := r.storeOwn(group, &c); err != nil {
		r.logger.Error("the stored record of the target group may differ from what is in force until storage answers", zap.String("group", group), zap.Error(err))
	}
}

// errStorageUnavailable refuses a change whose record could not be written.
// The change is not in force either: what the API acknowledges is exactly
// what a restart, or another node, brings back.
func errStorageUnavailable(name string, err error) *Error {
	return refuse(KindStorageUnavailable,
		"target group %q was not changed: the change could not be written to storage (%v); retry once the storage is reachable", name, err)
}

// storeOwn writes c as this node's contribution to group, then the index
// and head that tell peers about it, and makes it the node's own. Without
// storage (tests), it is own at once. A write stored only in part marks
// the group dirty: the sync loop writes it again. Called with f.mu held.
func (r *Registry) storeOwn(group string, c *contribution) error {
	f := r.fleet
	st := r.storage()
	if st == nil {
		f.own[group] = c
		return nil
	}
	seq := f.seq + 1
	c.Seq = seq
	index := f.index.clone()
	index.Seq, index.Groups[group] = seq, seq
	if err := storeJSON(st, contributionKey(f.node, group), c); err != nil {
		return err
	}
	if err := r.storeIndexHead(st, index); err != nil {
		f.dirty[group] = true
		return err
	}
	f.own[group] = c
	delete(f.dirty, group)
	return nil
}

// storeIndexHead stores the node's index, then its head: a peer that sees
// the head's seq move finds every record it names stored. Called with f.mu
// held; on success the index is the node's.
func (r *Registry) storeIndexHead(st certmagic.Storage, index nodeIndex) error {
	f := r.fleet
	if err := storeJSON(st, indexKey(f.node), index); err != nil {
		return err
	}
	now := r.clock.Now().UTC()
	head := nodeHead{Node: f.node, Epoch: f.epoch, Seq: index.Seq, Heartbeat: now, Zone: r.Zone()}
	if err := storeJSON(st, headKey(f.node), head); err != nil {
		return err
	}
	f.seq, f.index, f.lastHeartbeat = index.Seq, index, now
	return nil
}

// storeJSON stores v as JSON under key, within storageCallTimeout.
func storeJSON(st certmagic.Storage, key string, v any) error {
	raw, err := json.Marshal(v)
	if err != nil {
		return &storageError{"encoding", err}
	}
	ctx, cancel := context.WithTimeout(context.Background(), storageCallTimeout)
	defer cancel()
	if err := st.Store(ctx, key, raw); err != nil {
		return &storageError{"writing", err}
	}
	return nil
}

// loadJSON loads key into v within storageCallTimeout; found is false
// when the key does not exist. A value that does not decode is an error.
func loadJSON(st certmagic.Storage, key string, v any) (found bool, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), storageCallTimeout)
	defer cancel()
	raw, err := st.Load(ctx, key)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return false, nil
	case err != nil:
		return false, &storageError{"reading", err}
	}
	if err := json.Unmarshal(raw, v); err != nil {
		return false, &storageError{"decoding", err}
	}
	return true, nil
}

// storageError is a failed storage call and the step it was for.
type storageError struct {
	op  string // locking, reading, decoding, encoding, writing, listing
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
// storage that stopped answering must not hold the caller for ever.
func (r *Registry) unlockStorage(st certmagic.Storage, key string) {
	ctx, cancel := context.WithTimeout(context.Background(), saveTimeout)
	defer cancel()
	if err := st.Unlock(ctx, key); err != nil {
		r.logger.Error("releasing a storage lock", zap.String("key", key), zap.Error(err))
	}
}
