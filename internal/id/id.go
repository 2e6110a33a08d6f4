// Package id defines positions on the 128-bit identifier ring that the
// overlay routes on: node ids, user ids and object keys all map to an ID.
//
// Invariants: an ID is exactly 16 bytes, read as a big-endian unsigned
// integer modulo 2^128. Digits are base 16 (Pastry's b = 4), most
// significant first, so an ID has 32 digits. Every function here is pure.
package id

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"math/bits"
)

// Bytes is the length of an ID in bytes.
const Bytes = 16

// Digits is the number of base-16 digits in an ID (routing-table rows).
const Digits = 32

// Base is the digit base, 2^b with b = 4 (routing-table columns).
const Base = 16

// ErrLength is returned when decoding an ID from a byte string of the
// wrong length.
var ErrLength = errors.New("id: wrong length")

// ID is a point on the ring: a 128-bit unsigned integer, big-endian.
type ID [Bytes]byte

// NodeID is the ring position of an overlay node, drawn at random by the
// community CA and bound to the node's key by its certificate.
type NodeID struct{ ID }

// UserID is the ring position of a user: the hash of the user's address.
type UserID struct{ ID }

// FromBytes returns the ID made of the first 16 bytes of SHA-256(b).
func FromBytes(b []byte) ID {
	sum := sha256.Sum256(b)
	var x ID
	copy(x[:], sum[:Bytes])
	return x
}

// FromHash returns the ring position of a full SHA-256 digest: its first
// 16 bytes.
func FromHash(sum [32]byte) ID {
	var x ID
	copy(x[:], sum[:Bytes])
	return x
}

// ForUser returns the user id for a mail address, H(address). The address
// must already be in canonical form (see identity.CanonicalAddress).
func ForUser(address string) UserID { return UserID{FromBytes([]byte(address))} }

// FromUint64 builds an ID from two halves; handy in tests and simulations.
func FromUint64(hi, lo uint64) ID {
	var x ID
	putU64(x[:8], hi)
	putU64(x[8:], lo)
	return x
}

// Parse decodes a 32-character hex string.
func Parse(s string) (ID, error) {
	var x ID
	if len(s) != 2*Bytes {
		return x, fmt.Errorf("id: parse %q: %w", s, ErrLength)
	}
	if _, err := hex.Decode(x[:], []byte(s)); err != nil {
		return x, fmt.Errorf("id: parse %q: %w", s, err)
	}
	return x, nil
}

// String is the full 32-digit hex form.
func (x ID) String() string { return hex.EncodeToString(x[:]) }

// Short is the first 8 hex digits, for logs.
func (x ID) Short() string { return hex.EncodeToString(x[:4]) }

// MarshalBinary lets the CBOR codec encode an ID as a 16-byte string.
func (x ID) MarshalBinary() ([]byte, error) { return x[:], nil }

// UnmarshalBinary rejects any length other than 16 bytes.
func (x *ID) UnmarshalBinary(b []byte) error {
	if len(b) != Bytes {
		return fmt.Errorf("id: decode %d bytes: %w", len(b), ErrLength)
	}
	copy(x[:], b)
	return nil
}

// Digit returns digit i (0 = most significant), in [0, 16).
func (x ID) Digit(i int) int {
	b := x[i/2]
	if i%2 == 0 {
		return int(b >> 4)
	}
	return int(b & 0x0f)
}

// WithDigit returns x with digit i replaced by d.
func (x ID) WithDigit(i, d int) ID {
	if i%2 == 0 {
		x[i/2] = x[i/2]&0x0f | byte(d)<<4
	} else {
		x[i/2] = x[i/2]&0xf0 | byte(d&0x0f)
	}
	return x
}

// SharedPrefix returns the number of leading base-16 digits x and y share
// (32 when equal).
func (x ID) SharedPrefix(y ID) int {
	hx, lx := x.halves()
	hy, ly := y.halves()
	if d := hx ^ hy; d != 0 {
		return bits.LeadingZeros64(d) / 4
	}
	if d := lx ^ ly; d != 0 {
		return 16 + bits.LeadingZeros64(d)/4
	}
	return Digits
}

// Cmp compares x and y as unsigned integers: -1, 0 or +1.
func (x ID) Cmp(y ID) int {
	hx, lx := x.halves()
	hy, ly := y.halves()
	switch {
	case hx < hy:
		return -1
	case hx > hy:
		return 1
	case lx < ly:
		return -1
	case lx > ly:
		return 1
	}
	return 0
}

// Add returns x + y mod 2^128.
func (x ID) Add(y ID) ID {
	hx, lx := x.halves()
	hy, ly := y.halves()
	lo, c := bits.Add64(lx, ly, 0)
	hi, _ := bits.Add64(hx, hy, c)
	return FromUint64(hi, lo)
}

// Sub returns x - y mod 2^128.
func (x ID) Sub(y ID) ID {
	hx, lx := x.halves()
	hy, ly := y.halves()
	lo, b := bits.Sub64(lx, ly, 0)
	hi, _ := bits.Sub64(hx, hy, b)
	return FromUint64(hi, lo)
}

// CW returns the clockwise distance from x to y: (y - x) mod 2^128, the
// distance walking towards larger ids with wrap-around.
func (x ID) CW(y ID) ID { return y.Sub(x) }

// CCW returns the counter-clockwise distance from x to y: (x - y) mod 2^128.
func (x ID) CCW(y ID) ID { return x.Sub(y) }

// Dist returns the ring distance between x and y: the shorter of the two
// directions.
func (x ID) Dist(y ID) ID {
	cw, ccw := x.CW(y), x.CCW(y)
	if cw.Cmp(ccw) <= 0 {
		return cw
	}
	return ccw
}

// Closer reports whether a is strictly closer to key than b on the ring.
// Ties in distance (a and b exactly opposite around key) break towards the
// numerically smaller id, so every node agrees on a single root.
func Closer(key, a, b ID) bool {
	da, db := key.Dist(a), key.Dist(b)
	if c := da.Cmp(db); c != 0 {
		return c < 0
	}
	return a.Cmp(b) < 0
}

// Between reports whether x lies on the clockwise arc from a to b,
// exclusive at both ends. When a == b the arc is the whole ring except a.
func Between(a, x, b ID) bool {
	if x == a || x == b {
		return false
	}
	return a.CW(x).Cmp(a.CW(b)) < 0 || a == b
}

// IsZero reports whether x is the zero id.
func (x ID) IsZero() bool { return x == ID{} }

// Float returns x / 2^128 in [0, 1), for plotting the ring.
func (x ID) Float() float64 {
	h, l := x.halves()
	return (float64(h) + float64(l)/18446744073709551616.0) / 18446744073709551616.0
}

// Uint64s returns the high and low halves.
func (x ID) Uint64s() (hi, lo uint64) { return x.halves() }

func (x ID) halves() (uint64, uint64) { return getU64(x[:8]), getU64(x[8:]) }

func getU64(b []byte) uint64 {
	_ = b[7]
	return uint64(b[0])<<56 | uint64(b[1])<<48 | uint64(b[2])<<40 | uint64(b[3])<<32 |
		uint64(b[4])<<24 | uint64(b[5])<<16 | uint64(b[6])<<8 | uint64(b[7])
}

func putU64(b []byte, v uint64) {
	_ = b[7]
	b[0], b[1], b[2], b[3] = byte(v>>56), byte(v>>48), byte(v>>40), byte(v>>32)
	b[4], b[5], b[6], b[7] = byte(v>>24), byte(v>>16), byte(v>>8), byte(v)
}
