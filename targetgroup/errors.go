package targetgroup

import (
	"cmp"
	"errors"
	"fmt"
)

// Kind is what sort of refusal an error of the domain is. The domain says
// what went wrong and why; each dialect of the admin API chooses the status
// and code its clients expect for a kind, so that no HTTP lives here.
type Kind uint8

const (
	// KindInternal is a failure of ours. It is the zero Kind, so that an
	// error nobody classified is never blamed on the caller.
	KindInternal Kind = iota
	// KindValidation: the request is malformed or breaks a rule; the error
	// is a *ValidationError naming the field.
	KindValidation
	// KindNotFound: no target group of that name.
	KindNotFound
	// KindConflict: a client token used before with other parameters.
	KindConflict
	// KindDuplicateName: a group of that name exists with other settings.
	KindDuplicateName
	// KindInUse: a route of the running config uses the group.
	KindInUse
	// KindNotPermitted: the config owns what the call would change.
	KindNotPermitted
	// KindQuota: the change would exceed one of the app's Limits.
	KindQuota
	// KindStorageUnavailable: the change could not be stored, or could
	// overwrite a stored record not read yet; nothing changed.
	KindStorageUnavailable
)

var kindNames = [...]string{
	KindInternal:           "internal",
	KindValidation:         "validation",
	KindNotFound:           "not found",
	KindConflict:           "conflict",
	KindDuplicateName:      "duplicate name",
	KindInUse:              "in use",
	KindNotPermitted:       "not permitted",
	KindQuota:              "quota exceeded",
	KindStorageUnavailable: "storage unavailable",
}

func (k Kind) String() string {
	if int(k) < len(kindNames) {
		return kindNames[k]
	}
	return fmt.Sprintf("Kind(%d)", k)
}

// Error is a refusal of the domain that is not a validation error: its kind,
// and a message that says what is wrong and what to do instead.
type Error struct {
	Kind    Kind
	Message string
}

func (e *Error) Error() string { return e.Message }

func refuse(kind Kind, format string, args ...any) *Error {
	return &Error{Kind: kind, Message: fmt.Sprintf(format, args...)}
}

// KindOf classifies any error: an *Error by its kind, a ValidationError as
// KindValidation, anything else as KindInternal.
func KindOf(err error) Kind {
	var e *Error
	if errors.As(err, &e) {
		return e.Kind
	}
	if IsValidationError(err) {
		return KindValidation
	}
	return KindInternal
}

func errNotFound(name string) *Error {
	return refuse(KindNotFound, "target group %q not found", name)
}

func errQuota(format string, args ...any) *Error { return refuse(KindQuota, format, args...) }

// ValidationError names the field that is wrong and what it allows. Every
// rule of the AWS documents is checked in validate.go and attributes.go, for
// config and admin API alike.
type ValidationError struct {
	// Field is the path of the wrong value ("health_check.interval",
	// "targets[3].id", "attributes.<key>"), by which the Caddyfile finds
	// the line that set it.
	Field string
	// Label, when set, stands for Field at the head of the message: an
	// error about a key of a map itself (an unknown attribute key, a
	// malformed tag key) reads "attributes: unknown attribute key "x"",
	// the message naming the key.
	Label string
	// Cause is the field whose value makes Field wrong, when Field may not
	// have been given at all (an attribute that another one requires): the
	// Caddyfile points there when no line set Field.
	Cause   string
	Message string
}

func (e *ValidationError) Error() string {
	if head := cmp.Or(e.Label, e.Field); head != "" {
		return head + ": " + e.Message
	}
	return e.Message
}

func fieldErr(field, format string, args ...any) error {
	return &ValidationError{Field: field, Message: fmt.Sprintf(format, args...)}
}

// keyErr refuses a key of the map field (attributes, tags) itself, rather
// than its value.
func keyErr(field, key, format string, args ...any) error {
	return &ValidationError{Field: field + "." + key, Label: field, Message: fmt.Sprintf(format, args...)}
}

// IsValidationError reports whether err is (or wraps) a ValidationError.
func IsValidationError(err error) bool {
	var ve *ValidationError
	return errors.As(err, &ve)
}

// prefixField places err's fields under prefix ("targets[2]"), for the
// errors of one element of a list.
func prefixField(prefix string, err error) error {
	var ve *ValidationError
	if !errors.As(err, &ve) {
		return fmt.Errorf("%s: %w", prefix, err)
	}
	under := func(f string) string {
		if f == "" {
			return prefix
		}
		return prefix + "." + f
	}
	out := &ValidationError{Field: under(ve.Field), Message: ve.Message}
	if ve.Label != "" {
		out.Label = under(ve.Label)
	}
	if ve.Cause != "" {
		out.Cause = under(ve.Cause)
	}
	return out
}
