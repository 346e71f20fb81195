package targetgroup

import (
	"context"
	"errors"
	"io/fs"
	"strings"
	"time"

	"github.com/caddyserver/certmagic"
	"go.uber.org/zap"
)

// Versions before the fleet stored one record per group, under
// target_groups/groups/<name>.json, written by whichever node changed the
// group. A node that finds no fleet records in storage imports them as
// its own contribution; they are left in place, unused afterwards.
const legacyPrefix = "target_groups/groups"

type legacyRecord struct {
	Name        string         `json:"name"`
	Source      string         `json:"source"`
	Deleted     bool           `json:"deleted,omitempty"`
	Config      *GroupConfig   `json:"config,omitempty"`
	Created     *GroupConfig   `json:"created,omitempty"`
	ClientToken string         `json:"client_token,omitempty"`
	Targets     []TargetConfig `json:"targets"`
}

// readLegacy reads the records of earlier versions as contributions.
func (r *Registry) readLegacy(st certmagic.Storage) ([]*contribution, error) {
	ctx, cancel := context.WithTimeout(context.Background(), storageCallTimeout)
	keys, err := st.List(ctx, legacyPrefix, false)
	cancel()
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, &storageError{"listing", err}
	}
	var out []*contribution
	now := r.clock.Now()
	for _, key := range keys {
		if !strings.HasSuffix(key, ".json") {
			continue
		}
		var rec legacyRecord
		found, err := loadJSON(st, key, &rec)
		var se *storageError
		if errors.As(err, &se) && se.op == "decoding" || err == nil && found && (rec.Deleted || validStoredName(rec.Name) != nil) {
			continue
		}
		if err != nil {
			return nil, err
		}
		if !found {
			continue
		}
		var d delta
		if rec.Source == SourceAPI {
			if rec.Config == nil {
				continue
			}
			d.settings = &settingsEntry{Config: rec.Config, Created: rec.Created, ClientToken: rec.ClientToken}
		}
		d.put = rec.Targets
		out = append(out, (*contribution)(nil).with("", rec.Name, d, r.fleet.hlc.next(), HLC{}, now))
		r.logger.Info("importing a target group stored by an earlier version", zap.String("group", rec.Name), zap.Int("targets", len(rec.Targets)), zap.Time("at", now.Truncate(time.Second)))
	}
	return out, nil
}
