// Package wire is the one encoding of everything epost sends or signs:
// deterministic CBOR (RFC 8949 section 4.2.1, Core Deterministic Encoding)
// via fxamacker/cbor, inside a versioned envelope.
//
// Invariants:
//   - Encoding is deterministic: the same value always gives the same bytes,
//     so signatures can be computed over encodings and hashes name objects.
//   - Decoding never panics and rejects malformed input with an error:
//     trailing bytes, duplicate map keys, indefinite lengths, unknown fields,
//     tags, oversized containers and excessive nesting are all refused.
//   - Message types (Type) are append-only: a number once assigned is never
//     reused or renumbered. Version bounds are checked before a body is
//     decoded.
package wire

import (
	"errors"
	"fmt"

	"github.com/fxamacker/cbor/v2"
)

// Version is the protocol version this build speaks.
const Version = 1

// MinVersion is the oldest protocol version this build still accepts.
const MinVersion = 1

// MaxMessage bounds the size of a single encoded message (64 MiB). Larger
// data is chunked by the layer that owns it.
const MaxMessage = 64 << 20

// Errors returned by decoders; callers match them with errors.Is.
var (
	ErrMalformed = errors.New("wire: malformed")
	ErrVersion   = errors.New("wire: unsupported version")
	ErrType      = errors.New("wire: unexpected message type")
	ErrTooLarge  = errors.New("wire: message too large")
)

var (
	encMode cbor.EncMode
	decMode cbor.DecMode
)

func init() {
	var err error
	eo := cbor.CoreDetEncOptions()
	encMode, err = eo.EncMode()
	if err != nil {
		panic(err) // static options; fails only if the library changes
	}
	decMode, err = cbor.DecOptions{
		DupMapKey:         cbor.DupMapKeyEnforcedAPF,
		IndefLength:       cbor.IndefLengthForbidden,
		TagsMd:            cbor.TagsForbidden,
		ExtraReturnErrors: cbor.ExtraDecErrorUnknownField,
		MaxNestedLevels:   16,
		MaxArrayElements:  1 << 20,
		MaxMapPairs:       1 << 16,
		UTF8:              cbor.UTF8RejectInvalid,
		DefaultMapType:    nil,
	}.DecMode()
	if err != nil {
		panic(err)
	}
}

// Marshal encodes v deterministically.
func Marshal(v any) ([]byte, error) {
	b, err := encMode.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("wire: encode %T: %w", v, err)
	}
	return b, nil
}

// MustMarshal encodes v and panics on failure. Use only for values whose
// types are known to encode (fixed structs of plain fields).
func MustMarshal(v any) []byte {
	b, err := Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}

// Unmarshal decodes exactly one CBOR item from b into v, rejecting anything
// malformed, non-canonical in the ways listed in the package doc, or
// followed by trailing bytes.
func Unmarshal(b []byte, v any) error {
	if len(b) > MaxMessage {
		return fmt.Errorf("%w: %d bytes", ErrTooLarge, len(b))
	}
	if err := decMode.Unmarshal(b, v); err != nil {
		return fmt.Errorf("%w: decode %T: %v", ErrMalformed, v, err)
	}
	return nil
}

// Type names the kind of body an Envelope carries. Append-only: add new
// types at the end of the list and never reuse a number.
type Type uint16

// Message types. Each protocol layer owns a block; the blocks only grow.
const (
	TypeInvalid Type = 0
	// 1-15: engine and diagnostics.
	TypePing Type = 1
	TypePong Type = 2
)

// Envelope is the outer frame of every message between nodes. The version
// travels first so an old node can refuse a newer message cleanly.
type Envelope struct {
	_       struct{} `cbor:",toarray"`
	Version uint16
	Type    Type
	Body    []byte
}

// Encode wraps an encoded body of type t in an envelope of this version.
func Encode(t Type, body any) ([]byte, error) {
	b, err := Marshal(body)
	if err != nil {
		return nil, err
	}
	return Marshal(Envelope{Version: Version, Type: t, Body: b})
}

// DecodeEnvelope decodes the outer frame and checks its version. It does
// not decode the body: the receiver does that once it knows the type.
func DecodeEnvelope(b []byte) (Envelope, error) {
	var e Envelope
	if err := Unmarshal(b, &e); err != nil {
		return Envelope{}, err
	}
	if e.Version < MinVersion || e.Version > Version {
		return Envelope{}, fmt.Errorf("%w: %d (speak %d..%d)", ErrVersion, e.Version, MinVersion, Version)
	}
	if e.Type == TypeInvalid {
		return Envelope{}, fmt.Errorf("%w: %d", ErrType, e.Type)
	}
	return e, nil
}

// DecodeBody decodes e's body into v after checking that e carries type t.
func DecodeBody(e Envelope, t Type, v any) error {
	if e.Type != t {
		return fmt.Errorf("%w: got %d, want %d", ErrType, e.Type, t)
	}
	return Unmarshal(e.Body, v)
}

// Ping is the engine's liveness and latency probe. Nonce matches a Pong to
// its Ping; Sent is the sender's clock reading, echoed back so the sender
// can measure a round trip without keeping per-probe state.
type Ping struct {
	_     struct{} `cbor:",toarray"`
	Nonce uint64
	Sent  int64
}

// Pong answers a Ping, echoing its fields.
type Pong struct {
	_     struct{} `cbor:",toarray"`
	Nonce uint64
	Sent  int64
}
