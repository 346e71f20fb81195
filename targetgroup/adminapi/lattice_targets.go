package adminapi

import (
	"cmp"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"

	"github.com/caddy-targetgroup/caddy-targetgroup/targetgroup"
)

// The target and tag operations of the Lattice dialect.

// latticeTarget is the model's Target: an id and, but for LAMBDA groups,
// an optional port (the group's when absent).
type latticeTarget struct {
	ID   string `json:"id"`
	Port *int   `json:"port,omitempty"`
}

// latticeFailure is the model's TargetFailure.
type latticeFailure struct {
	ID             string `json:"id"`
	Port           *int   `json:"port,omitempty"`
	FailureCode    string `json:"failureCode"`
	FailureMessage string `json:"failureMessage"`
}

// latticeTargetSummary is an item of ListTargets.
type latticeTargetSummary struct {
	ID         string `json:"id"`
	Port       *int   `json:"port,omitempty"`
	Status     string `json:"status"`
	ReasonCode string `json:"reasonCode,omitempty"`
}

type latticeTargetsRequest struct {
	Targets []latticeTarget `json:"targets"`
}

// The failure codes of per-target refusals, named as ELBv2's errors for
// the same refusals; the Lattice model leaves them free.
var latticeFailureCodes = map[targetgroup.Kind]string{
	targetgroup.KindValidation:         "InvalidTarget",
	targetgroup.KindQuota:              "TooManyTargets",
	targetgroup.KindNotPermitted:       "OperationNotPermitted",
	targetgroup.KindNotFound:           "TargetGroupNotFound",
	targetgroup.KindStorageUnavailable: "ServiceUnavailable",
	targetgroup.KindInternal:           "InternalError",
}

// Lattice's target statuses for the domain's states. unhealthy.draining
// (an NLB state) is a target out of service for failing its checks.
var latticeStatuses = map[targetgroup.State]string{
	targetgroup.StateInitial:           "INITIAL",
	targetgroup.StateHealthy:           "HEALTHY",
	targetgroup.StateUnhealthy:         "UNHEALTHY",
	targetgroup.StateUnhealthyDraining: "UNHEALTHY",
	targetgroup.StateDraining:          "DRAINING",
	targetgroup.StateUnused:            "UNUSED",
	targetgroup.StateUnavailable:       "UNAVAILABLE",
}

// targets reads and checks the targets of a call against the model: 1-100
// (0-max for a filter), ids of 1-200 characters, ports within 1-65535.
func (c *latticeCall) targets(min, max int, optional bool) ([]targetgroup.TargetConfig, error) {
	var req latticeTargetsRequest
	if err := c.decode(&req, optional); err != nil {
		return nil, err
	}
	var cs latticeChecks
	if n := len(req.Targets); n < min || n > max {
		cs.add("targets", "%d targets; give %d-%d", n, min, max)
	}
	out := make([]targetgroup.TargetConfig, len(req.Targets))
	for i, t := range req.Targets {
		if n := len(t.ID); n < 1 || n > 200 {
			cs.add(fmt.Sprintf("targets[%d].id", i), "required: 1-200 characters")
		}
		cs.within(fmt.Sprintf("targets[%d].port", i), t.Port, 1, 65535)
		out[i].ID = t.ID
		if t.Port != nil {
			out[i].Port = *t.Port
		}
	}
	return out, cs.err()
}

func registerLatticeTargets(c *latticeCall) (int, any, error) {
	return c.changeTargets(func(g *targetgroup.Group, batch []targetgroup.TargetConfig) ([]targetgroup.TargetConfig, error) {
		return c.reg.RegisterTargets(g.Name(), batch)
	})
}

func deregisterLatticeTargets(c *latticeCall) (int, any, error) {
	return c.changeTargets(func(g *targetgroup.Group, batch []targetgroup.TargetConfig) ([]targetgroup.TargetConfig, error) {
		if err := c.reg.DeregisterTargets(g.Name(), batch); err != nil {
			return nil, err
		}
		return latticeWithPort(g, batch), nil
	})
}

// changeTargets applies op, with Lattice's partial success, to the group
// and the targets the call names; op returns the targets as changed.
func (c *latticeCall) changeTargets(op func(g *targetgroup.Group, batch []targetgroup.TargetConfig) ([]targetgroup.TargetConfig, error)) (int, any, error) {
	g, err := c.group()
	if err != nil {
		return 0, nil, err
	}
	ts, err := c.targets(1, 100, false)
	if err != nil {
		return 0, nil, err
	}
	res, err := latticePerTarget(g, ts, func(batch []targetgroup.TargetConfig) ([]targetgroup.TargetConfig, error) {
		return op(g, batch)
	})
	if err != nil {
		return 0, nil, latticeWithResource(err, g.ID())
	}
	return http.StatusOK, res, nil
}

// latticePerTarget runs a batch operation with Lattice's partial success: the
// domain's batches are all or nothing, so when one refuses a target (it
// names the field), each target is tried on its own, and those refused are
// reported in unsuccessful with HTTP 200. A refusal of the whole call —
// no such group, storage unavailable — answers the call and changes
// nothing.
func latticePerTarget(g *targetgroup.Group, ts []targetgroup.TargetConfig, op func([]targetgroup.TargetConfig) ([]targetgroup.TargetConfig, error)) (any, error) {
	done, err := op(ts)
	if err == nil {
		return map[string]any{"successful": latticeTargets(done), "unsuccessful": []latticeFailure{}}, nil
	}
	switch targetgroup.KindOf(err) {
	case targetgroup.KindValidation, targetgroup.KindQuota, targetgroup.KindNotPermitted:
	default:
		return nil, err
	}
	ok, failed := []targetgroup.TargetConfig{}, []latticeFailure{}
	for _, t := range ts {
		one, err := op([]targetgroup.TargetConfig{t})
		if err == nil {
			ok = append(ok, one...)
			continue
		}
		f := latticeFailure{ID: t.ID, FailureCode: cmp.Or(latticeFailureCodes[targetgroup.KindOf(err)], "InternalError"), FailureMessage: latticeTargetMessage(err)}
		if p := latticeWithPort(g, []targetgroup.TargetConfig{t})[0].Port; p != 0 {
			f.Port = &p
		}
		failed = append(failed, f)
	}
	return map[string]any{"successful": latticeTargets(ok), "unsuccessful": failed}, nil
}

// latticeTargetMessage is a refusal of one target, its field named within the
// target ("port: …") rather than within the call ("targets[0].port: …").
func latticeTargetMessage(err error) string {
	var ve *targetgroup.ValidationError
	if errors.As(err, &ve) {
		f := strings.TrimPrefix(strings.TrimPrefix(ve.Field, "targets[0]"), ".")
		if f == "" || f == "targets" {
			return ve.Message
		}
		return f + ": " + ve.Message
	}
	var de *targetgroup.Error
	if errors.As(err, &de) {
		return strings.TrimPrefix(de.Message, "targets[0]: ")
	}
	return err.Error()
}

// latticeWithPort fills the group's port into targets given without one, as
// the domain does; a LAMBDA group's targets have none.
func latticeWithPort(g *targetgroup.Group, ts []targetgroup.TargetConfig) []targetgroup.TargetConfig {
	cfg := g.Spec().Config
	out := slices.Clone(ts)
	for i := range out {
		if out[i].Port == 0 && cfg.Type != targetgroup.TypeLambda {
			out[i].Port = cfg.Port
		}
	}
	return out
}

func latticeTargets(ts []targetgroup.TargetConfig) []latticeTarget {
	out := make([]latticeTarget, len(ts))
	for i, t := range ts {
		out[i].ID = t.ID
		if t.Port != 0 {
			p := t.Port
			out[i].Port = &p
		}
	}
	return out
}

func listLatticeTargets(c *latticeCall) (int, any, error) {
	g, err := c.group()
	if err != nil {
		return 0, nil, err
	}
	filter, err := c.targets(0, 20, true)
	if err != nil {
		return 0, nil, err
	}
	q := c.r.URL.Query()
	var cs latticeChecks
	size := latticePageSize(q, &cs)
	var after *targetgroup.TargetKey
	if tok := q.Get("nextToken"); tok != "" {
		after = new(targetgroup.TargetKey)
		if !readPageToken(tok, after) || after.ID == "" {
			cs.add("nextToken", "%v", errLatticeToken(tok))
		}
	}
	if err := cs.err(); err != nil {
		return 0, nil, err
	}
	keys := make([]targetgroup.TargetKey, len(filter))
	for i, t := range latticeWithPort(g, filter) {
		keys[i] = t.Key()
	}
	ds := g.DescribeTargetHealth(keys...)
	slices.SortFunc(ds, func(a, b targetgroup.TargetHealthDescription) int {
		return a.Target.Key().Compare(b.Target.Key())
	})
	items := []latticeTargetSummary{}
	next := ""
	for _, d := range ds {
		k := d.Target.Key()
		if after != nil && k.Compare(*after) <= 0 {
			continue
		}
		if len(items) == size {
			next = pageToken(targetgroup.TargetKey{ID: items[len(items)-1].ID, Port: latticePortOf(items[len(items)-1].Port)})
			break
		}
		s := latticeTargetSummary{ID: k.ID, Status: cmp.Or(latticeStatuses[d.TargetHealth.State], strings.ToUpper(string(d.TargetHealth.State))), ReasonCode: d.TargetHealth.Reason}
		if k.Port != 0 {
			p := k.Port
			s.Port = &p
		}
		items = append(items, s)
	}
	out := map[string]any{"items": items}
	if next != "" {
		out["nextToken"] = next
	}
	return http.StatusOK, out, nil
}

func latticePortOf(p *int) int {
	if p == nil {
		return 0
	}
	return *p
}

func tagLatticeResource(c *latticeCall) (int, any, error) {
	g, err := c.group()
	if err != nil {
		return 0, nil, err
	}
	var req struct {
		Tags map[string]string `json:"tags"`
	}
	if err := c.decode(&req, false); err != nil {
		return 0, nil, err
	}
	if req.Tags == nil {
		return 0, nil, latticeInvalid([]latticeField{{Name: "tags", Message: "required: the tags to add or overwrite"}})
	}
	return modifyLatticeTags(c, g, req.Tags, nil)
}

func untagLatticeResource(c *latticeCall) (int, any, error) {
	g, err := c.group()
	if err != nil {
		return 0, nil, err
	}
	keys := c.r.URL.Query()["tagKeys"]
	var cs latticeChecks
	if len(keys) == 0 || len(keys) > 200 {
		cs.add("tagKeys", "%d keys; give 1-200 tag keys to remove (?tagKeys=a&tagKeys=b)", len(keys))
	}
	for i, k := range keys {
		if n := len([]rune(k)); n < 1 || n > 128 {
			cs.add(fmt.Sprintf("tagKeys[%d]", i), "%q must be 1-128 characters", k)
		}
	}
	if err := cs.err(); err != nil {
		return 0, nil, err
	}
	return modifyLatticeTags(c, g, nil, keys)
}

func modifyLatticeTags(c *latticeCall, g *targetgroup.Group, set map[string]string, remove []string) (int, any, error) {
	if err := c.reg.ModifyTags(g.Name(), set, remove); err != nil {
		switch targetgroup.KindOf(err) {
		case targetgroup.KindValidation:
			return 0, nil, latticeFields(err, "")
		case targetgroup.KindNotPermitted:
			// TagResource and UntagResource have no ConflictException in
			// the model, which the Go SDK would answer as an untyped error:
			// the config owning the tags is a ValidationException.
			var de *targetgroup.Error
			errors.As(err, &de)
			return 0, nil, &latticeError{status: http.StatusBadRequest, typ: latticeValidation, reason: latticeReasonOther, message: de.Message}
		}
		return 0, nil, latticeWithResource(err, g.LatticeARN())
	}
	return http.StatusOK, map[string]any{}, nil
}

func listLatticeTags(c *latticeCall) (int, any, error) {
	g, err := c.group()
	if err != nil {
		return 0, nil, err
	}
	tags := g.Describe().Tags
	if tags == nil {
		tags = map[string]string{}
	}
	return http.StatusOK, map[string]any{"tags": tags}, nil
}
