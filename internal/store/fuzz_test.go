package store

import (
	"bytes"
	"errors"
	"testing"

	"github.com/epost-mail/epost/internal/env"
)

// Fuzz targets for every decoder of stored records. Seed corpora live in
// testdata/fuzz/<target>; each target also adds the encodings of a few
// typical records. Every decoder must fail with ErrCorrupt, never panic,
// and whatever it accepts must survive an encode/decode round trip.

func FuzzObjectRecord(f *testing.F) {
	f.Add(encodeObject(KindImmutable, []byte("hello")))
	f.Add(encodeObject(KindMutable, nil))
	f.Add(encodeObject(kindMeta, []byte{0}))
	f.Fuzz(func(t *testing.T, b []byte) {
		rec, err := decodeObject(b)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("error %v is not ErrCorrupt", err)
			}
			return
		}
		err = rec.verify(rec.Kind, Key(rec.Sum))
		again := encodeObject(rec.Kind, rec.Data)
		if (err == nil) != bytes.Equal(again, b) {
			t.Fatalf("verify says %v but re-encoding equal is %v", err, bytes.Equal(again, b))
		}
		if err != nil && !errors.Is(err, ErrCorrupt) {
			t.Fatalf("verify error %v is not ErrCorrupt", err)
		}
		if rec.Kind == KindImmutable && err == nil && ImmutableKey(rec.Data) != Key(rec.Sum) {
			t.Fatal("verified immutable record does not hash to its key")
		}
	})
}

func FuzzLeaseRecord(f *testing.F) {
	f.Add(encodeLease(lease{expiry: 0, size: 0}))
	f.Add(encodeLease(lease{expiry: Forever, size: 1 << 20}))
	f.Add(encodeLease(lease{expiry: env.Time(env.Hour), size: 4096}))
	f.Fuzz(func(t *testing.T, b []byte) {
		l, err := decodeLease(b)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("error %v is not ErrCorrupt", err)
			}
			return
		}
		if l.expiry < 0 || l.size < 0 {
			t.Fatalf("decoded negative lease %+v", l)
		}
		l2, err := decodeLease(encodeLease(l))
		if err != nil || l2 != l {
			t.Fatalf("round trip %+v -> %+v, %v", l, l2, err)
		}
	})
}

func FuzzStatsRecord(f *testing.F) {
	var c counts
	f.Add(encodeStats(&c))
	c.add(KindImmutable, 3, 300)
	c.add(KindMutable, 1, 10)
	c.corrupt, c.expired = 2, 7
	f.Add(encodeStats(&c))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := decodeStats(b)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("error %v is not ErrCorrupt", err)
			}
			return
		}
		c2, err := decodeStats(encodeStats(&c))
		if err != nil || c2 != c {
			t.Fatalf("round trip changed the stats: %v", err)
		}
	})
}

func FuzzCounterRecord(f *testing.F) {
	f.Add(encodeCounter(0))
	f.Add(encodeCounter(formatVersion))
	f.Add(encodeCounter(uint64(Forever)))
	f.Add(encodeCounter(1 << 63))
	f.Fuzz(func(t *testing.T, b []byte) {
		v, err := decodeCounter(b)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("error %v is not ErrCorrupt", err)
			}
			return
		}
		if v2, err := decodeCounter(encodeCounter(v)); err != nil || v2 != v {
			t.Fatalf("round trip %d -> %d, %v", v, v2, err)
		}
		tk, err := decodeTicks(b)
		if (err == nil) != (v <= uint64(Forever)) || (err == nil && uint64(tk) != v) {
			t.Fatalf("ticks %d from counter %d, %v", tk, v, err)
		}
	})
}

func FuzzExpiryIndexKey(f *testing.F) {
	f.Add(expiryKey(0, KindImmutable, Key{}))
	f.Add(expiryKey(Forever, KindMutable, Key{0xff}))
	f.Add(expiryKey(12345, KindMutable, ImmutableKey([]byte("x"))))
	f.Fuzz(func(t *testing.T, b []byte) {
		exp, e, err := decodeExpiryKey(b)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("error %v is not ErrCorrupt", err)
			}
			return
		}
		if !bytes.Equal(expiryKey(exp, e.Kind, e.Key), b) {
			t.Fatal("re-encoding an index key changed it")
		}
	})
}
