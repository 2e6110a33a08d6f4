// Package wiretest holds the checks that fuzz targets of wire-encoded
// types share.
package wiretest

import (
	"bytes"
	"testing"

	"github.com/epost-mail/epost/internal/wire"
)

// RoundTrip decodes b as a T. What decodes must re-encode, and the
// re-encoding must be a fixed point: it decodes again and encodes to the
// same bytes. (The first re-encoding need not equal b: the decoder
// accepts a few non-canonical forms, and signatures are always checked
// over the bytes received.) ok is false when b does not decode.
func RoundTrip[T any](t testing.TB, b []byte) (v T, ok bool) {
	t.Helper()
	if wire.Unmarshal(b, &v) != nil {
		return v, false
	}
	enc, err := wire.Marshal(v)
	if err != nil {
		t.Fatalf("%T decoded from %x does not encode: %v", v, b, err)
	}
	var again T
	if err := wire.Unmarshal(enc, &again); err != nil {
		t.Fatalf("%T: re-encoding %x does not decode: %v", v, enc, err)
	}
	if enc2 := wire.MustMarshal(again); !bytes.Equal(enc, enc2) {
		t.Fatalf("%T: encoding not stable: %x, then %x", v, enc, enc2)
	}
	return v, true
}
