package adminapi

import (
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"testing"

	"github.com/caddy-targetgroup/caddy-targetgroup/targetgroup"
)

// Each kind of domain refusal is answered as the Lattice model has it: the
// type in X-Amzn-ErrorType, the model's status, and the members the
// model requires of the type.
func TestLatticeErrorAnswers(t *testing.T) {
	for _, c := range []struct {
		kind       targetgroup.Kind
		status     int
		typ        string
		retryAfter string
		members    []string
	}{
		{targetgroup.KindNotFound, 404, "ResourceNotFoundException", "", []string{"message", "resourceId", "resourceType"}},
		{targetgroup.KindConflict, 409, "ConflictException", "", []string{"message", "resourceId", "resourceType"}},
		{targetgroup.KindDuplicateName, 409, "ConflictException", "", []string{"message", "resourceId", "resourceType"}},
		{targetgroup.KindInUse, 409, "ConflictException", "", []string{"message", "resourceId", "resourceType"}},
		{targetgroup.KindNotPermitted, 409, "ConflictException", "", []string{"message", "resourceId", "resourceType"}},
		{targetgroup.KindQuota, 402, "ServiceQuotaExceededException", "", []string{"message", "resourceId", "resourceType", "serviceCode", "quotaCode"}},
		{targetgroup.KindStorageUnavailable, 503, "InternalServerException", "1", []string{"message"}},
		{targetgroup.KindInternal, 500, "InternalServerException", "", []string{"message"}},
	} {
		err := fmt.Errorf("wrapped: %w", &targetgroup.Error{Kind: c.kind, Message: "the message"})
		w := httptest.NewRecorder()
		writeLatticeError(w, latticeErrorOf(latticeWithResource(err, "tg-0123456789abcdef0")))
		var body map[string]any
		if err := json.Unmarshal(w.Body.Bytes(), &body); err != nil {
			t.Fatal(err)
		}
		if w.Code != c.status || w.Header()["X-Amzn-ErrorType"][0] != c.typ || w.Header().Get("Retry-After") != c.retryAfter || body["message"] != "the message" {
			t.Errorf("%s: %d %v %s", c.kind, w.Code, w.Header(), w.Body.Bytes())
		}
		for _, m := range c.members {
			if _, ok := body[m]; !ok {
				t.Errorf("%s: no %s in %s", c.kind, m, w.Body.Bytes())
			}
		}
	}
	ve := &targetgroup.ValidationError{Field: "health_check.interval", Message: "4s is outside 5s-300s"}
	le := latticeErrorOf(latticeFields(ve, "config."))
	if le.status != 400 || le.reason != "fieldValidationFailed" || len(le.fields) != 1 || le.fields[0].Name != "config.healthCheck.healthCheckIntervalSeconds" ||
		le.message != "config.healthCheck.healthCheckIntervalSeconds: 4s is outside 5s-300s" {
		t.Errorf("validation error: %+v", le)
	}
}
