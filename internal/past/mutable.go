package past

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"

	"github.com/epost-mail/epost/internal/id"
	"github.com/epost-mail/epost/internal/identity"
	store "github.com/epost-mail/epost/internal/store/object"
	"github.com/epost-mail/epost/internal/wire"
)

const (
	labelMutable = "epost/past-mutable/v1"
	labelReceipt = "epost/past-receipt/v1"
	mutableKeyNS = "epost/past-mutable-key/v1\x00"
)

// Errors a mutable object can fail with.
var (
	ErrRollback  = errors.New("past: older version than the one stored")
	ErrBadObject = errors.New("past: object fails verification")
)

// Mutable is a signed object with a single writer: a user. Its key is
// MutableKey(writer, Name); Version orders its states (a counter, never a
// time); Sig covers Address, Name, Version and Data; Cert is the writer's
// user certificate, so any holder can verify it against the CA alone.
type Mutable struct {
	_       struct{} `cbor:",toarray"`
	Address string
	Name    string
	Version uint64
	Data    []byte
	Cert    []byte
	Sig     []byte
}

type mutableBody struct {
	_       struct{} `cbor:",toarray"`
	Address string
	Name    string
	Version uint64
	Data    []byte
}

// MutableKey is the key of the mutable object called name written by
// user.
func MutableKey(user id.UserID, name string) store.Key {
	h := sha256.New()
	h.Write([]byte(mutableKeyNS))
	h.Write(user.ID[:])
	h.Write([]byte(name))
	return store.Key(h.Sum(nil))
}

// SignMutable makes version of the mutable object name with data, signed
// by the user's keys.
func SignMutable(keys identity.UserKeys, cert *identity.UserCert, name string, version uint64, data []byte) (*Mutable, error) {
	if !cert.Matches(keys) {
		return nil, fmt.Errorf("past: sign %q: certificate is not for these keys", name)
	}
	m := &Mutable{Address: cert.Address, Name: name, Version: version, Data: bytes.Clone(data), Cert: cert.Bytes()}
	m.Sig = keys.Signing.Sign(labelMutable, m.body())
	return m, nil
}

func (m *Mutable) body() []byte {
	return wire.MustMarshal(mutableBody{Address: m.Address, Name: m.Name, Version: m.Version, Data: m.Data})
}

// Key returns the object's key (unverified).
func (m *Mutable) Key() store.Key { return MutableKey(id.ForUser(m.Address), m.Name) }

// Verify checks the certificate against v and the signature, and returns
// the key the object is stored under.
func (m *Mutable) Verify(v *identity.Verifier) (store.Key, error) {
	cert, err := v.VerifyUser(m.Cert, m.Address)
	if err != nil {
		return store.Key{}, fmt.Errorf("%w: %w", ErrBadObject, err)
	}
	if !cert.Signing.Verify(labelMutable, m.body(), m.Sig) {
		return store.Key{}, fmt.Errorf("%w: bad signature on %q v%d by %s", ErrBadObject, m.Name, m.Version, m.Address)
	}
	return MutableKey(cert.UserID, m.Name), nil
}

// Equal reports whether two objects are the same signed state.
func (m *Mutable) Equal(o *Mutable) bool {
	return m.Address == o.Address && m.Name == o.Name && m.Version == o.Version &&
		bytes.Equal(m.Data, o.Data) && bytes.Equal(m.Sig, o.Sig)
}

// Encode returns the object's bytes, as inserted.
func (m *Mutable) Encode() []byte { return wire.MustMarshal(m) }

// DecodeMutable reads one object (unverified).
func DecodeMutable(b []byte) (*Mutable, error) {
	var m Mutable
	if err := wire.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadObject, err)
	}
	return &m, nil
}

// A mutable slot is what a holder stores under a mutable key: every valid
// object it has at the highest version (more than one is a fork).
type slot []*Mutable

func encodeSlot(s slot) []byte { return wire.MustMarshal([]*Mutable(s)) }

func decodeSlot(b []byte) (slot, error) {
	var s []*Mutable
	if err := wire.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("%w: slot: %w", ErrBadObject, err)
	}
	if len(s) == 0 {
		return nil, fmt.Errorf("%w: empty slot", ErrBadObject)
	}
	for _, m := range s {
		if m == nil || m.Version != s[0].Version {
			return nil, fmt.Errorf("%w: slot mixes versions", ErrBadObject)
		}
	}
	return s, nil
}

func (s slot) version() uint64 {
	if len(s) == 0 {
		return 0
	}
	return s[0].Version
}

// merge folds a verified object into the slot: a higher version replaces
// it, an equal one already there changes nothing, an equal but different
// one is a fork and is kept (up to maxForks), and a lower one is a
// rollback.
func (s slot) merge(m *Mutable, maxForks int) (out slot, changed bool, err error) {
	switch {
	case len(s) == 0 || m.Version > s.version():
		return slot{m}, true, nil
	case m.Version < s.version():
		return s, false, fmt.Errorf("%w: have version %d, offered %d", ErrRollback, s.version(), m.Version)
	}
	for _, x := range s {
		if x.Equal(m) {
			return s, false, nil
		}
	}
	if len(s) >= maxForks {
		return s, false, nil
	}
	return append(append(slot(nil), s...), m), true, nil
}
