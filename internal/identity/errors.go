package identity

import (
	"errors"
	"fmt"

	"github.com/epost-mail/epost/internal/wire"
)

// Errors callers match with errors.Is. Every error the package returns
// wraps at most one of these, with context in front.
var (
	// ErrMalformed: the bytes do not decode to a valid object of the
	// expected kind and version. It wraps wire.ErrMalformed.
	ErrMalformed = fmt.Errorf("identity: %w", wire.ErrMalformed)
	// ErrWrongCA: the object was issued by another community's CA.
	ErrWrongCA = errors.New("identity: issued by a different CA")
	// ErrTampered: the signature does not match the signed bytes (altered
	// in transit or storage, or forged).
	ErrTampered = errors.New("identity: bad signature (tampered or forged)")
	// ErrWrongAddress: a user certificate is not for the expected address,
	// or its UserID is not id.ForUser of its address.
	ErrWrongAddress = errors.New("identity: certificate is for another address")
	// ErrRevoked: the certificate's serial is in the current revocation
	// list.
	ErrRevoked = errors.New("identity: certificate revoked")
	// ErrStaleRevocation: a revocation list older than the one held (or a
	// different list at the same epoch) was offered.
	ErrStaleRevocation = errors.New("identity: revocation epoch is not newer")
	// ErrBadAddress: a string is not a valid mail address in the form epost
	// accepts.
	ErrBadAddress = errors.New("identity: invalid address")
	// ErrBadRecoveryCode: a recovery code has the wrong length, a character
	// outside the alphabet, or a failed checksum (a typo).
	ErrBadRecoveryCode = errors.New("identity: invalid recovery code")
	// ErrWrongRecoveryCode: a well-formed recovery code that does not open
	// the backup.
	ErrWrongRecoveryCode = errors.New("identity: wrong recovery code for this backup")
	// ErrKeyMismatch: a certificate does not certify the private key it is
	// stored or used with.
	ErrKeyMismatch = errors.New("identity: certificate does not match the key")
	// ErrExists: a key or certificate file already exists and would be
	// overwritten.
	ErrExists = errors.New("identity: refusing to overwrite existing file")
)

// malformed wraps ErrMalformed with a description.
func malformed(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrMalformed}, args...)...)
}

// asMalformed marks err (typically from internal/wire, which already says
// "malformed") as ErrMalformed too, without repeating the message.
func asMalformed(err error) error { return malformedError{err} }

type malformedError struct{ err error }

func (e malformedError) Error() string   { return e.err.Error() }
func (e malformedError) Unwrap() []error { return []error{ErrMalformed, e.err} }
