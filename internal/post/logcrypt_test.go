package post

import (
	"bytes"
	"errors"
	"testing"

	"github.com/epost-mail/epost/internal/env"
	"github.com/epost-mail/epost/internal/identity"
)

func TestLogKey(t *testing.T) {
	c := testCommunity(t)
	a := c.m("alice").keys
	k := DeriveLogKey(a)
	if k != DeriveLogKey(testCommunity(t).m("alice").keys) {
		t.Fatal("the same keys derive different log keys")
	}
	if k == DeriveLogKey(c.m("bob").keys) {
		t.Fatal("two users share a log key")
	}
	if k == LogKey(a.DeriveSecret("epost/post-log/v2")) {
		t.Fatal("the log key ignores its label")
	}
}

// TestLogKeyFromBackup: the key backup holds only UserKeys, and restores
// the log key.
func TestLogKeyFromBackup(t *testing.T) {
	a := testCommunity(t).m("alice").keys
	code, err := identity.NewRecoveryCode(env.NewRand(9, 9))
	if err != nil {
		t.Fatal(err)
	}
	backup, err := identity.SealBackup(a, code, 1)
	if err != nil {
		t.Fatal(err)
	}
	restored, err := identity.OpenBackup(backup, code)
	if err != nil {
		t.Fatal(err)
	}
	entry := SealEntry(env.NewRand(1, 1), DeriveLogKey(a), []byte("append INBOX uid 7"))
	got, err := OpenEntry(DeriveLogKey(restored), entry)
	if err != nil || string(got) != "append INBOX uid 7" {
		t.Fatalf("restored keys: %q, %v", got, err)
	}
}

func TestLogEntryRoundTrip(t *testing.T) {
	c := testCommunity(t)
	k := DeriveLogKey(c.m("alice").keys)
	for _, plain := range [][]byte{nil, {}, []byte("x"), bytes.Repeat([]byte("flags \\Seen "), 1000)} {
		b := SealEntry(c.rnd, k, plain)
		if len(b) != 24+len(plain)+16 {
			t.Fatalf("entry of %d bytes for %d plaintext", len(b), len(plain))
		}
		got, err := OpenEntry(k, b)
		if err != nil || !bytes.Equal(got, plain) {
			t.Fatalf("round trip: %q, %v", got, err)
		}
	}
	// Random nonces: the same entry twice does not show as the same.
	e1, e2 := SealEntry(c.rnd, k, []byte("expunge 3")), SealEntry(c.rnd, k, []byte("expunge 3"))
	if bytes.Equal(e1, e2) || bytes.Equal(e1[:24], e2[:24]) {
		t.Fatal("equal entries encrypt equally")
	}
	// The nonce comes from the reader alone.
	if !bytes.Equal(SealEntry(env.NewRand(7, 7), k, []byte("a")), SealEntry(env.NewRand(7, 7), k, []byte("a"))) {
		t.Fatal("same reader, different entries")
	}
}

func TestLogEntryNeedsTheKey(t *testing.T) {
	c := testCommunity(t)
	plain := []byte("create folder Lawyers")
	b := SealEntry(c.rnd, DeriveLogKey(c.m("alice").keys), plain)
	if bytes.Contains(b, []byte("Lawyers")) {
		t.Fatal("plaintext visible")
	}
	for _, k := range []LogKey{{}, DeriveLogKey(c.m("bob").keys), LogKey(ConvergentKey(plain))} {
		_, err := OpenEntry(k, b)
		wantErr(t, err, ErrTampered)
	}
	// Nor does a body opened with the same 32 bytes as a content key
	// confuse the two: the constructions and labels differ.
	k := DeriveLogKey(c.m("alice").keys)
	chunks, ref := SealBody(ContentKey(k), bytes.Repeat(plain, 4), 0)
	if _, err := OpenEntry(k, chunks[0]); err == nil {
		t.Fatal("a body chunk opened as a log entry")
	}
	if _, err := OpenBody(ref, chunks); err != nil {
		t.Fatal(err)
	}
}

func TestLogEntryTamper(t *testing.T) {
	c := testCommunity(t)
	k := DeriveLogKey(c.m("alice").keys)
	b := SealEntry(c.rnd, k, []byte("move 12 to Archive"))
	for i := range b {
		x := bytes.Clone(b)
		x[i] ^= 0x01
		_, err := OpenEntry(k, x)
		wantErr(t, err, ErrTampered)
	}
	for n := range b {
		_, err := OpenEntry(k, b[:n])
		wantErr(t, err, ErrTampered)
	}
	_, err := OpenEntry(k, append(bytes.Clone(b), 0))
	wantErr(t, err, ErrTampered)
}

func TestSealEntryPanicsOnFailingReader(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Fatal("sealed with a short nonce")
		}
	}()
	SealEntry(bytes.NewReader(make([]byte, 23)), LogKey{}, []byte("x"))
}

// TestLogKeysAfterRotation: rotated keys seal under a new log key and
// still open what every earlier key sealed; another user's entries stay
// closed.
func TestLogKeysAfterRotation(t *testing.T) {
	c := testCommunity(t)
	old := c.m("alice").keys
	rotated, err := old.Rotate(c.rnd)
	if err != nil {
		t.Fatal(err)
	}
	ks := DeriveLogKeys(rotated)
	if len(ks) != 2 || ks[0] != DeriveLogKey(rotated) || ks[1] != DeriveLogKey(old) || ks[0] == ks[1] {
		t.Fatal("log keys are not the new key, then the old one")
	}
	before := SealEntry(c.rnd, DeriveLogKey(old), []byte("before"))
	after := SealEntry(c.rnd, ks[0], []byte("after"))
	for want, b := range map[string][]byte{"before": before, "after": after} {
		if got, err := OpenEntryAny(ks, b); err != nil || string(got) != want {
			t.Fatalf("%s: %q, %v", want, got, err)
		}
	}
	if _, err := OpenEntry(DeriveLogKey(old), after); err == nil {
		t.Fatal("the old key opens what the new one sealed")
	}
	bobs := SealEntry(c.rnd, DeriveLogKey(c.m("bob").keys), []byte("bob"))
	if _, err := OpenEntryAny(ks, bobs); !errors.Is(err, ErrTampered) {
		t.Fatalf("another user's entry: %v", err)
	}
	if _, err := OpenEntryAny(nil, after); !errors.Is(err, ErrTampered) {
		t.Fatalf("no keys: %v", err)
	}
}
