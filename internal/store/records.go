package store

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"math"

	"github.com/epost-mail/epost/internal/env"
	"github.com/epost-mail/epost/internal/wire"
)

// Stored record formats. Every decoder here is fuzzed (fuzz_test.go) and
// must reject malformed input with an error, never panic.

// formatVersion is the on-disk layout version written under
// store/format. Open refuses a file with a newer version.
const formatVersion = 1

// objectVersion is the first byte of every object record.
const objectVersion = 1

// objectHeader is the fixed prefix of an object record:
// version (1 byte), kind (1 byte), SHA-256 of the data (32 bytes).
const objectHeader = 2 + sha256.Size

// kindMeta marks metadata values, which use the object record format so
// that they are checksummed too. It is not a Kind callers can use.
const kindMeta Kind = 0xff

// objectRecord is a decoded object record. The object bytes follow a
// fixed binary header rather than living inside CBOR so that a read
// neither re-encodes nor copies them twice.
type objectRecord struct {
	Kind Kind
	Sum  [sha256.Size]byte
	Data []byte // aliases the decoded buffer
}

// encodeObject builds the record for data of the given kind. It copies
// data, so the caller may reuse its slice.
func encodeObject(kind Kind, data []byte) []byte {
	b := make([]byte, objectHeader+len(data))
	b[0] = objectVersion
	b[1] = byte(kind)
	sum := sha256.Sum256(data)
	copy(b[2:objectHeader], sum[:])
	copy(b[objectHeader:], data)
	return b
}

// decodeObject parses an object record without verifying the checksum
// (see objectRecord.verify).
func decodeObject(b []byte) (objectRecord, error) {
	if len(b) < objectHeader {
		return objectRecord{}, fmt.Errorf("%w: object record of %d bytes", ErrCorrupt, len(b))
	}
	if b[0] != objectVersion {
		return objectRecord{}, fmt.Errorf("%w: object record version %d", ErrCorrupt, b[0])
	}
	r := objectRecord{Kind: Kind(b[1]), Data: b[objectHeader:]}
	copy(r.Sum[:], b[2:objectHeader])
	return r, nil
}

// verify checks that the record is of the expected kind and that its data
// hashes to its checksum; for an immutable object, also that the checksum
// is the key itself.
func (r objectRecord) verify(kind Kind, key Key) error {
	if r.Kind != kind {
		return fmt.Errorf("%w: record of kind %v in %v bucket", ErrCorrupt, r.Kind, kind)
	}
	if sha256.Sum256(r.Data) != r.Sum {
		return fmt.Errorf("%w: checksum mismatch", ErrCorrupt)
	}
	if kind == KindImmutable && Key(r.Sum) != key {
		return fmt.Errorf("%w: content hash is not the key", ErrCorrupt)
	}
	return nil
}

// leaseRecord is the value in the lease bucket: the tick (on the store's
// persisted uptime counter) at which the object's lease runs out, and the
// object's length, which the size accounting uses even when the object
// record itself is damaged.
type leaseRecord struct {
	_      struct{} `cbor:",toarray"`
	Expiry uint64
	Size   uint64
}

// lease is a decoded lease record.
type lease struct {
	expiry env.Time
	size   int64
}

func encodeLease(l lease) []byte {
	return wire.MustMarshal(leaseRecord{Expiry: uint64(l.expiry), Size: uint64(l.size)})
}

func decodeLease(b []byte) (lease, error) {
	if b == nil {
		return lease{}, fmt.Errorf("%w: lease record missing", ErrCorrupt)
	}
	var r leaseRecord
	if err := wire.Unmarshal(b, &r); err != nil {
		return lease{}, fmt.Errorf("%w: lease record: %w", ErrCorrupt, err)
	}
	if r.Expiry > math.MaxInt64 || r.Size > math.MaxInt32 {
		return lease{}, fmt.Errorf("%w: lease record out of range", ErrCorrupt)
	}
	return lease{expiry: env.Time(r.Expiry), size: int64(r.Size)}, nil
}

// encodeCounter and decodeCounter handle the single-number records in the
// store bucket (format version, uptime ticks).
func encodeCounter(v uint64) []byte { return wire.MustMarshal(v) }

func decodeCounter(b []byte) (uint64, error) {
	var v uint64
	if err := wire.Unmarshal(b, &v); err != nil {
		return 0, fmt.Errorf("%w: counter record: %w", ErrCorrupt, err)
	}
	return v, nil
}

func decodeTicks(b []byte) (env.Time, error) {
	v, err := decodeCounter(b)
	if err != nil {
		return 0, err
	}
	if v > math.MaxInt64 {
		return 0, fmt.Errorf("%w: ticks %d out of range", ErrCorrupt, v)
	}
	return env.Time(v), nil
}

// kindCount is one kind's line in the stats record.
type kindCount struct {
	_       struct{} `cbor:",toarray"`
	Kind    uint8
	Objects uint64
	Bytes   uint64
}

// statsRecord is the persisted size accounting, rewritten in every
// transaction that changes it, so it is always exact for the committed
// state.
type statsRecord struct {
	_       struct{}    `cbor:",toarray"`
	Kinds   []kindCount // strictly increasing Kind, only known kinds
	Corrupt uint64
	Expired uint64
}

// counts is the in-memory form of statsRecord.
type counts struct {
	objects [256]int64 // indexed by Kind
	bytes   [256]int64
	corrupt uint64
	expired uint64
}

func (c *counts) add(k Kind, objects, bytes int64) {
	c.objects[k] += objects
	c.bytes[k] += bytes
}

func encodeStats(c *counts) []byte {
	r := statsRecord{Corrupt: c.corrupt, Expired: c.expired}
	for _, k := range allKinds() {
		r.Kinds = append(r.Kinds, kindCount{Kind: uint8(k), Objects: uint64(c.objects[k]), Bytes: uint64(c.bytes[k])})
	}
	return wire.MustMarshal(r)
}

func decodeStats(b []byte) (counts, error) {
	var r statsRecord
	var c counts
	if err := wire.Unmarshal(b, &r); err != nil {
		return c, fmt.Errorf("%w: stats record: %w", ErrCorrupt, err)
	}
	last := -1
	for _, kc := range r.Kinds {
		k := Kind(kc.Kind)
		if !k.Valid() || int(kc.Kind) <= last {
			return counts{}, fmt.Errorf("%w: stats record: kind %d out of order or unknown", ErrCorrupt, kc.Kind)
		}
		if kc.Objects > math.MaxInt64 || kc.Bytes > math.MaxInt64 {
			return counts{}, fmt.Errorf("%w: stats record: count out of range", ErrCorrupt)
		}
		last = int(kc.Kind)
		c.objects[k], c.bytes[k] = int64(kc.Objects), int64(kc.Bytes)
	}
	c.corrupt, c.expired = r.Corrupt, r.Expired
	return c, nil
}

// leaseKey is the key in the lease bucket: kind, then object key.
func leaseKey(kind Kind, key Key) []byte {
	b := make([]byte, 1+KeySize)
	b[0] = byte(kind)
	copy(b[1:], key[:])
	return b
}

// expiryKeySize is the length of an expiry index key.
const expiryKeySize = 8 + 1 + KeySize

// expiryKey is the key in the expiry index: the expiry tick big-endian
// (so a cursor visits the soonest expiries first), kind, object key.
func expiryKey(expiry env.Time, kind Kind, key Key) []byte {
	b := make([]byte, expiryKeySize)
	binary.BigEndian.PutUint64(b, uint64(expiry))
	b[8] = byte(kind)
	copy(b[9:], key[:])
	return b
}

func decodeExpiryKey(b []byte) (env.Time, Entry, error) {
	if len(b) != expiryKeySize {
		return 0, Entry{}, fmt.Errorf("%w: expiry index key of %d bytes", ErrCorrupt, len(b))
	}
	t := binary.BigEndian.Uint64(b)
	if t > math.MaxInt64 {
		return 0, Entry{}, fmt.Errorf("%w: expiry index tick %d out of range", ErrCorrupt, t)
	}
	e := Entry{Kind: Kind(b[8])}
	if !e.Kind.Valid() {
		return 0, Entry{}, fmt.Errorf("%w: expiry index kind %d", ErrCorrupt, b[8])
	}
	copy(e.Key[:], b[9:])
	return env.Time(t), e, nil
}
