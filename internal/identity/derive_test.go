package identity

import (
	"crypto/hkdf"
	"crypto/sha256"
	"testing"
)

func TestDeriveSecret(t *testing.T) {
	w := newWorld(t, 1)
	again := newWorld(t, 1)
	other := newWorld(t, 2)
	const label = "epost/test/v1"

	a := w.user.DeriveSecret(label)
	if a != again.user.DeriveSecret(label) {
		t.Fatal("same keys, same label: different secrets")
	}
	if a == w.user.DeriveSecret("epost/test/v2") {
		t.Fatal("different labels give the same secret")
	}
	if a == other.user.DeriveSecret(label) {
		t.Fatal("different users give the same secret")
	}
	if a == [32]byte{} {
		t.Fatal("zero secret")
	}

	// The address is the salt: the same signing key under another address
	// derives another secret.
	moved := w.user
	moved.Address = "bob@lab.example.org"
	if a == moved.DeriveSecret(label) {
		t.Fatal("address does not enter the derivation")
	}

	// It is RFC 5869 HKDF-SHA256 as documented, so another implementation
	// can recompute it from a key backup.
	want, err := hkdf.Key(sha256.New, w.user.Signing.seed(), []byte(w.user.Address), label, 32)
	if err != nil || a != [32]byte(want) {
		t.Fatalf("not HKDF-SHA256(seed, address, label): %v", err)
	}

	// Keys restored from their encoding (what a backup holds) derive the
	// same secrets.
	keys, err := decodeUserKeys(mustEncodeUserKeys(t, w.user))
	if err != nil {
		t.Fatal(err)
	}
	if keys.DeriveSecret(label) != a {
		t.Fatal("restored keys derive another secret")
	}
}

func mustEncodeUserKeys(t *testing.T, k UserKeys) []byte {
	t.Helper()
	b, err := encodeUserKeys(k)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
