package adminapi

import (
	"errors"
	"fmt"
	"net/http"

	"github.com/caddy-targetgroup/caddy-targetgroup/targetgroup"
)

// The error codes of the JSON dialect, as AWS names them. An error answer
// is {"error":{"code":"<code>","message":"<message>"}}.
const (
	CodeValidation       = "ValidationException"
	CodeNotFound         = "ResourceNotFoundException"
	CodeConflict         = "ConflictException"
	CodeDuplicateName    = "DuplicateTargetGroupName"
	CodeResourceInUse    = "ResourceInUse"
	CodeNotPermitted     = "OperationNotPermitted"
	CodePayloadTooLarge  = "PayloadTooLarge"
	CodeMethodNotAllowed = "MethodNotAllowed"
	CodeUnavailable      = "ServiceUnavailable"
	CodeInternal         = "InternalServerException"
	CodeQuotaExceeded    = "ServiceQuotaExceededException"
	// A change that could not be written to storage, or that could
	// overwrite a stored record not read yet: refused, nothing changed.
	CodeStorageUnavailable = "StorageUnavailable"
)

// kindAnswers is how the JSON dialect answers each kind of domain error.
var kindAnswers = map[targetgroup.Kind]struct {
	status int
	code   string
}{
	targetgroup.KindInternal:           {http.StatusInternalServerError, CodeInternal},
	targetgroup.KindValidation:         {http.StatusBadRequest, CodeValidation},
	targetgroup.KindNotFound:           {http.StatusNotFound, CodeNotFound},
	targetgroup.KindConflict:           {http.StatusConflict, CodeConflict},
	targetgroup.KindDuplicateName:      {http.StatusConflict, CodeDuplicateName},
	targetgroup.KindInUse:              {http.StatusConflict, CodeResourceInUse},
	targetgroup.KindNotPermitted:       {http.StatusConflict, CodeNotPermitted},
	targetgroup.KindQuota:              {http.StatusBadRequest, CodeQuotaExceeded},
	targetgroup.KindStorageUnavailable: {http.StatusServiceUnavailable, CodeStorageUnavailable},
}

// httpError is a refusal of the API itself rather than of the domain: a
// path it does not know, a method or body it does not take, or no app to
// ask.
type httpError struct {
	status  int
	code    string
	message string
}

func (e *httpError) Error() string { return e.code + ": " + e.message }

// errorAnswer is the status and body that answer err.
func errorAnswer(err error) (int, any) {
	status, code, message := errorOf(err)
	return status, map[string]any{"error": map[string]string{"code": code, "message": message}}
}

func errorOf(err error) (status int, code, message string) {
	var he *httpError
	if errors.As(err, &he) {
		return he.status, he.code, he.message
	}
	a, ok := kindAnswers[targetgroup.KindOf(err)]
	if !ok {
		a = kindAnswers[targetgroup.KindInternal]
	}
	message = err.Error()
	var de *targetgroup.Error
	if errors.As(err, &de) {
		message = de.Message
	}
	return a.status, a.code, message
}

// invalid is a validation error of the request itself (its body, its query).
func invalid(field, format string, args ...any) error {
	return &targetgroup.ValidationError{Field: field, Message: fmt.Sprintf(format, args...)}
}
