package store

import (
	"bytes"
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"path/filepath"
	"testing"

	bolt "go.etcd.io/bbolt"

	"github.com/epost-mail/epost/internal/env"
	"github.com/epost-mail/epost/internal/id"
)

// openAt opens a store at path and closes it when the test ends.
func openAt(t testing.TB, path string, cfg Config) *Store {
	t.Helper()
	s, err := Open(path, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// openTemp opens a store in a fresh temporary directory.
func openTemp(t testing.TB, cfg Config) (*Store, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "store.db")
	return openAt(t, path, cfg), path
}

// payload returns n deterministic bytes for object number i; the first 8
// bytes (when n >= 8) are i, so a payload names itself.
func payload(i uint64, n int) []byte {
	b := make([]byte, n)
	r := mrand.New(mrand.NewPCG(i, 0x5eed))
	for j := range b {
		b[j] = byte(r.Uint32())
	}
	if n >= 8 {
		binary.BigEndian.PutUint64(b, i)
	}
	return b
}

// ringKey returns a mutable-object key at ring position (hi, lo) with a
// distinguishing suffix.
func ringKey(hi, lo uint64, suffix uint64) Key {
	var k Key
	x := id.FromUint64(hi, lo)
	copy(k[:], x[:])
	binary.BigEndian.PutUint64(k[24:], suffix)
	return k
}

func mustPut(t testing.TB, s *Store, kind Kind, key Key, data []byte, exp env.Time) {
	t.Helper()
	if err := s.Put(kind, key, data, exp); err != nil {
		t.Fatalf("put %v: %v", Entry{Kind: kind, Key: key}, err)
	}
}

func mustGet(t testing.TB, s *Store, kind Kind, key Key, want []byte) {
	t.Helper()
	got, err := s.Get(kind, key)
	if err != nil {
		t.Fatalf("get %v: %v", Entry{Kind: kind, Key: key}, err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("get %v: %d bytes differ from the %d stored", Entry{Kind: kind, Key: key}, len(got), len(want))
	}
}

// rawUpdate edits the database behind the store's back, to simulate
// damage.
func rawUpdate(t testing.TB, s *Store, fn func(tx *bolt.Tx) error) {
	t.Helper()
	if err := s.db.Update(fn); err != nil {
		t.Fatal(err)
	}
}

// checkInvariants scans every bucket and checks the layout invariants of
// the package doc: each object has a lease record of the right size and
// exactly one matching expiry index entry, there are no orphans, and the
// persisted and in-memory stats equal a recount.
func checkInvariants(t testing.TB, s *Store) {
	t.Helper()
	if err := s.view(func(tx *bolt.Tx) error {
		var checkErr error
		for err := range tx.Check() {
			checkErr = cmp.Or(checkErr, err)
		}
		if checkErr != nil {
			return fmt.Errorf("bbolt check: %w", checkErr)
		}
		var recount counts
		leases := map[string]lease{}
		lb := tx.Bucket([]byte(bucketLease))
		for _, k := range allKinds() {
			err := tx.Bucket(objectBucket(k)).ForEach(func(key, v []byte) error {
				e := Entry{Kind: k, Key: Key(key)}
				if err := verifyEntry(e, v, lb.Get(leaseKey(k, e.Key))); err != nil {
					return fmt.Errorf("%v: %w", e, err)
				}
				l, _ := decodeLease(lb.Get(leaseKey(k, e.Key)))
				leases[string(leaseKey(k, e.Key))] = l
				recount.add(k, 1, l.size)
				return nil
			})
			if err != nil {
				return err
			}
		}
		if n := lb.Stats().KeyN; n != len(leases) {
			return fmt.Errorf("%d lease records for %d objects", n, len(leases))
		}
		seen := 0
		err := tx.Bucket([]byte(bucketExpiry)).ForEach(func(k, _ []byte) error {
			exp, e, err := decodeExpiryKey(k)
			if err != nil {
				return err
			}
			l, ok := leases[string(leaseKey(e.Kind, e.Key))]
			if !ok || l.expiry != exp {
				return fmt.Errorf("index entry %v@%d matches no lease", e, exp)
			}
			seen++
			return nil
		})
		if err != nil {
			return err
		}
		if seen != len(leases) {
			return fmt.Errorf("%d index entries for %d leases", seen, len(leases))
		}
		persisted, err := decodeStats(tx.Bucket([]byte(bucketStore)).Get([]byte(recStats)))
		if err != nil && len(leases) > 0 {
			return err
		}
		for _, k := range allKinds() {
			if persisted.objects[k] != recount.objects[k] || persisted.bytes[k] != recount.bytes[k] {
				return fmt.Errorf("%v: persisted stats %d objects %d bytes, recount %d %d", k,
					persisted.objects[k], persisted.bytes[k], recount.objects[k], recount.bytes[k])
			}
		}
		st := s.Stats()
		for _, ks := range st.PerKind {
			if ks.Objects != recount.objects[ks.Kind] || ks.Bytes != recount.bytes[ks.Kind] {
				return fmt.Errorf("%v: in-memory stats %+v, recount %d %d", ks.Kind, ks, recount.objects[ks.Kind], recount.bytes[ks.Kind])
			}
		}
		return nil
	}); err != nil {
		t.Fatalf("invariants: %v", err)
	}
}

func isBoth(err error, a, b error) bool { return errors.Is(err, a) && errors.Is(err, b) }
