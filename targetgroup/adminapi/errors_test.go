package adminapi

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/caddy-targetgroup/caddy-targetgroup/targetgroup"
)

// Each kind of domain refusal is answered with the status and code of the
// contract, and with the domain's message.
func TestErrorAnswers(t *testing.T) {
	for _, c := range []struct {
		kind   targetgroup.Kind
		status int
		code   string
	}{
		{targetgroup.KindValidation, 400, "ValidationException"},
		{targetgroup.KindNotFound, 404, "ResourceNotFoundException"},
		{targetgroup.KindConflict, 409, "ConflictException"},
		{targetgroup.KindDuplicateName, 409, "DuplicateTargetGroupName"},
		{targetgroup.KindInUse, 409, "ResourceInUse"},
		{targetgroup.KindNotPermitted, 409, "OperationNotPermitted"},
		{targetgroup.KindQuota, 400, "ServiceQuotaExceededException"},
		{targetgroup.KindStorageUnavailable, 503, "StorageUnavailable"},
		{targetgroup.KindInternal, 500, "InternalServerException"},
	} {
		err := fmt.Errorf("wrapped: %w", &targetgroup.Error{Kind: c.kind, Message: "the message"})
		if status, code, msg := errorOf(err); status != c.status || code != c.code || msg != "the message" {
			t.Errorf("%s: %d %s %q, want %d %s with the domain's message", c.kind, status, code, msg, c.status, c.code)
		}
	}
	ve := &targetgroup.ValidationError{Field: "health_check.interval", Message: "4s is outside 5s-300s"}
	if status, code, msg := errorOf(ve); status != 400 || code != CodeValidation || msg != "health_check.interval: 4s is outside 5s-300s" {
		t.Errorf("validation error: %d %s %q", status, code, msg)
	}
	if status, code, msg := errorOf(errors.New("boom")); status != 500 || code != CodeInternal || msg != "boom" {
		t.Errorf("unexpected error: %d %s %q", status, code, msg)
	}
}

// Without a target_groups app there is no registry to answer from.
func TestNotRunning(t *testing.T) {
	if targetgroup.Current() != nil {
		t.Fatal("a registry is live")
	}
	w := httptest.NewRecorder()
	if err := new(AdminAPI).serve(w, httptest.NewRequest(http.MethodGet, "/target-groups/web", nil)); err != nil {
		t.Fatal(err)
	}
	var e struct {
		Error struct{ Code, Message string }
	}
	if err := json.Unmarshal(w.Body.Bytes(), &e); err != nil {
		t.Fatal(err)
	}
	want := "the target_groups app is not running: declare target groups in the config (apps.target_groups, or the target_groups global option)"
	if w.Code != http.StatusServiceUnavailable || e.Error.Code != CodeUnavailable || e.Error.Message != want {
		t.Fatalf("%d %+v", w.Code, e)
	}
	if ct := w.Header().Get("Content-Type"); ct != "application/json" {
		t.Fatalf("Content-Type %q", ct)
	}
}
