package integration

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strconv"
	"time"

	"go.uber.org/zap"

	"github.com/caddy-targetgroup/caddy-targetgroup/targetgroup"
)

const (
	// consolePoll is how often an event stream looks for a change: the
	// page shows a change within about this long (a write made through
	// the console, at once).
	consolePoll = 500 * time.Millisecond
	// consoleKeepalive is the longest an idle stream stays silent, so
	// that proxies and browsers keep it open.
	consoleKeepalive = 15 * time.Second
	// consoleRetry is the reconnection delay a stream asks the browser
	// for, after a reload ended it.
	consoleRetry = time.Second
	// consoleCacheFor is how long one computed state serves every
	// stream and request.
	consoleCacheFor = 250 * time.Millisecond
	// consoleMaxBody bounds a write's body.
	consoleMaxBody = 1 << 20
	// ConsoleWriteHeader is the header every write to the console's API
	// must carry (any value): a page of another site can't send it.
	ConsoleWriteHeader = "X-Target-Groups-Console"
)

// ConsoleState is what `<path>/api/state` answers and every event of
// `<path>/api/events` carries.
type ConsoleState struct {
	// Whether a target_groups app runs; Message says what to do when not.
	Running bool   `json:"running"`
	Message string `json:"message,omitempty"`
	// Whether the console refuses writes.
	ReadOnly bool `json:"read_only"`
	// This node's availability zone, if it has one.
	Zone   string         `json:"zone,omitempty"`
	Groups []ConsoleGroup `json:"groups"`
}

// ConsoleGroup is one group on the console: its description (as the admin
// API's DescribeTargetGroups has it, without the list of targets), its
// health, and every target's health, draining ones included.
type ConsoleGroup struct {
	targetgroup.GroupDescription
	Health       targetgroup.GroupHealth               `json:"health"`
	TargetHealth []targetgroup.TargetHealthDescription `json:"target_health"`
}

// ConsoleWrite is the body of `<path>/api/register` and
// `<path>/api/deregister`.
type ConsoleWrite struct {
	Group   string                     `json:"group"`
	Targets []targetgroup.TargetConfig `json:"targets"`
}

// stateJSON returns the state as JSON, computed at most every
// consoleCacheFor.
func (c *Console) stateJSON() []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cached != nil && time.Since(c.cachedAt) < consoleCacheFor {
		return c.cached
	}
	st := ConsoleState{ReadOnly: c.ReadOnly, Groups: []ConsoleGroup{}}
	if reg := targetgroup.Current(); reg == nil {
		st.Message = "the target_groups app is not running: declare target groups in the config (apps.target_groups, or the target_groups global option)"
	} else {
		st.Running = true
		st.Zone = reg.Zone()
		for _, g := range reg.Groups() {
			d := g.Describe()
			d.Targets = nil // target_health has them all, draining ones too
			st.Groups = append(st.Groups, ConsoleGroup{GroupDescription: d, Health: g.Health(), TargetHealth: g.DescribeTargetHealth()})
		}
	}
	b, err := json.Marshal(st)
	if err != nil {
		b, _ = json.Marshal(ConsoleState{ReadOnly: c.ReadOnly, Groups: []ConsoleGroup{}, Message: "encoding the state: " + err.Error()})
	}
	c.cached, c.cachedAt = b, time.Now()
	return b
}

// wakeup returns the channel the next write closes.
func (c *Console) wakeup() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.wake == nil {
		c.wake = make(chan struct{})
	}
	return c.wake
}

// changed drops the cached state and wakes the streams: a write changed
// the registry.
func (c *Console) changed() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.cached = nil
	if c.wake != nil {
		close(c.wake)
	}
	c.wake = make(chan struct{})
}

func (c *Console) serveState(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	if r.Method == http.MethodHead {
		return
	}
	_, _ = w.Write(c.stateJSON())
}

// serveEvents streams the state as Server-Sent Events: an event `state`
// with the whole state whenever it changed, and a comment when the stream
// has been idle for consoleKeepalive. It ends when the client goes, when
// the server begins to shut down and when the config is unloaded, so a
// reload never waits for it; the browser then reconnects after
// consoleRetry.
func (c *Console) serveEvents(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("X-Accel-Buffering", "no") // for nginx and the like in front
	rc := http.NewResponseController(w)
	// A stream outlives any write_timeout of the server.
	_ = rc.SetWriteDeadline(time.Time{})
	w.WriteHeader(http.StatusOK)
	// Event ids go on from the browser's last one across reconnections.
	id, _ := strconv.ParseUint(r.Header.Get("Last-Event-ID"), 10, 64)
	flush := func() bool {
		err := rc.Flush()
		return err == nil || errors.Is(err, http.ErrNotSupported)
	}
	if _, err := fmt.Fprintf(w, "retry: %d\n\n", consoleRetry.Milliseconds()); err != nil || !flush() {
		return
	}
	tick := time.NewTicker(consolePoll)
	defer tick.Stop()
	var last []byte
	lastWrite := time.Now()
	for {
		wake := c.wakeup() // before the state: a write after it wakes the next round
		body := c.stateJSON()
		var err error
		wrote := true
		switch {
		case !bytes.Equal(body, last):
			id++
			_, err = fmt.Fprintf(w, "id: %d\nevent: state\ndata: %s\n\n", id, body)
			last = body
		case time.Since(lastWrite) >= consoleKeepalive:
			_, err = io.WriteString(w, ": keepalive\n\n")
		default:
			wrote = false
		}
		if wrote {
			if err != nil || !flush() {
				return
			}
			lastWrite = time.Now()
		}
		select {
		case <-r.Context().Done():
			return
		case <-c.stopping:
			return
		case <-c.done:
			return
		case <-wake:
		case <-tick.C:
		}
	}
}

// serveWrite registers or deregisters targets (op is "register" or
// "deregister") for a same-origin request of a console that is not
// read_only.
func (c *Console) serveWrite(w http.ResponseWriter, r *http.Request, op string) {
	if c.ReadOnly {
		writeConsoleError(w, http.StatusForbidden, "AccessDenied", "this console is read_only: it changes nothing")
		return
	}
	if err := c.xorigin.Check(r); err != nil {
		writeConsoleError(w, http.StatusForbidden, "AccessDenied", "cross-site request refused: the console takes writes from its own page only ("+err.Error()+")")
		return
	}
	if r.Header.Get(ConsoleWriteHeader) == "" {
		writeConsoleError(w, http.StatusForbidden, "AccessDenied", "a write must carry the header "+ConsoleWriteHeader+" (the console's page sends it)")
		return
	}
	if ct, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); ct != "application/json" {
		writeConsoleError(w, http.StatusUnsupportedMediaType, "UnsupportedMediaType", "a write's body must be JSON (Content-Type: application/json)")
		return
	}
	var body ConsoleWrite
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, consoleMaxBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&body); err != nil {
		writeConsoleError(w, http.StatusBadRequest, "ValidationException", "request body: "+err.Error())
		return
	}
	if dec.Decode(&struct{}{}) != io.EOF {
		writeConsoleError(w, http.StatusBadRequest, "ValidationException", "request body: one JSON object expected")
		return
	}
	reg := targetgroup.Current()
	if reg == nil {
		writeConsoleError(w, http.StatusServiceUnavailable, "ServiceUnavailable", "the target_groups app is not running")
		return
	}
	if body.Group == "" {
		writeConsoleError(w, http.StatusBadRequest, "ValidationException", "group: required")
		return
	}
	var out any = map[string]any{}
	var err error
	if op == "register" {
		var norm []targetgroup.TargetConfig
		if norm, err = reg.RegisterTargets(body.Group, body.Targets); err == nil {
			keys := make([]targetgroup.TargetKey, len(norm))
			for i, t := range norm {
				keys[i] = t.Key()
			}
			if g := reg.Group(body.Group); g != nil {
				out = map[string]any{"targets": g.DescribeTargetHealth(keys...)}
			}
		}
	} else {
		err = reg.DeregisterTargets(body.Group, body.Targets)
	}
	if err != nil {
		status, code, msg := consoleErrorOf(err)
		writeConsoleError(w, status, code, msg)
		return
	}
	c.changed()
	if c.logger != nil {
		c.logger.Info(op+"ed targets from the console",
			zap.String("group", body.Group), zap.Any("targets", body.Targets), zap.String("remote_addr", r.RemoteAddr))
	}
	writeConsoleJSON(w, http.StatusOK, out)
}

// consoleKinds answers each kind of domain error with the status and code
// of the admin API's JSON dialect (targetgroup/adminapi), so that a script
// reads the console's errors as it reads the API's.
var consoleKinds = map[targetgroup.Kind]struct {
	status int
	code   string
}{
	targetgroup.KindInternal:           {http.StatusInternalServerError, "InternalServerException"},
	targetgroup.KindValidation:         {http.StatusBadRequest, "ValidationException"},
	targetgroup.KindNotFound:           {http.StatusNotFound, "ResourceNotFoundException"},
	targetgroup.KindConflict:           {http.StatusConflict, "ConflictException"},
	targetgroup.KindDuplicateName:      {http.StatusConflict, "DuplicateTargetGroupName"},
	targetgroup.KindInUse:              {http.StatusConflict, "ResourceInUse"},
	targetgroup.KindNotPermitted:       {http.StatusConflict, "OperationNotPermitted"},
	targetgroup.KindQuota:              {http.StatusBadRequest, "ServiceQuotaExceededException"},
	targetgroup.KindStorageUnavailable: {http.StatusServiceUnavailable, "StorageUnavailable"},
}

func consoleErrorOf(err error) (status int, code, message string) {
	a, ok := consoleKinds[targetgroup.KindOf(err)]
	if !ok {
		a = consoleKinds[targetgroup.KindInternal]
	}
	message = err.Error()
	var de *targetgroup.Error
	if errors.As(err, &de) {
		message = de.Message
	}
	return a.status, a.code, message
}

func writeConsoleJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status, b = http.StatusInternalServerError, []byte(`{"error":{"code":"InternalServerException","message":"encoding the answer"}}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

func writeConsoleError(w http.ResponseWriter, status int, code, message string) {
	writeConsoleJSON(w, status, map[string]any{"error": map[string]string{"code": code, "message": message}})
}
