package identity

import (
	"bytes"
	"errors"
	"regexp"
	"strings"
	"testing"

	"filippo.io/age"

	"github.com/epost-mail/epost/internal/env"
	"github.com/epost-mail/epost/internal/wire"
)

// testWorkFactor keeps scrypt fast in tests; production uses
// DefaultScryptWorkFactor.
const testWorkFactor = 10

func TestRecoveryCodeFormat(t *testing.T) {
	rnd := env.NewRand(3, 4)
	shape := regexp.MustCompile(`^[0-9A-HJKMNP-TV-Z]{4}(-[0-9A-HJKMNP-TV-Z]{4}){7}$`)
	seen := map[string]bool{}
	for range 200 {
		c, err := NewRecoveryCode(rnd)
		if err != nil {
			t.Fatal(err)
		}
		if !shape.MatchString(c) {
			t.Fatalf("code %q has the wrong shape", c)
		}
		if seen[c] {
			t.Fatalf("code %q drawn twice", c)
		}
		seen[c] = true
		n, err := NormalizeRecoveryCode(c)
		if err != nil || n != c {
			t.Fatalf("normalize %q = %q, %v", c, n, err)
		}
	}
	if RecoveryCodeBits < 128 {
		t.Fatalf("recovery codes carry %d bits", RecoveryCodeBits)
	}
}

func TestNormalizeRecoveryCode(t *testing.T) {
	code, err := NewRecoveryCode(env.NewRand(5, 6))
	if err != nil {
		t.Fatal(err)
	}
	plain := strings.ReplaceAll(code, "-", "")
	// Spell the code with confusable letters where it has 0 or 1.
	confused := strings.NewReplacer("0", "o", "1", "l").Replace(strings.ToLower(plain))
	for _, in := range []string{
		code, strings.ToLower(code), plain, " " + plain[:7] + " " + plain[7:] + "\n",
		strings.ReplaceAll(code, "-", " "), confused,
	} {
		got, err := NormalizeRecoveryCode(in)
		if err != nil || got != code {
			t.Errorf("normalize %q = %q, %v; want %q", in, got, err, code)
		}
	}

	// Every single-character typo and every swap of two neighbours that
	// changes the code is detected.
	for i := range plain {
		for _, c := range recoveryAlphabet {
			if byte(c) == plain[i] {
				continue
			}
			typo := plain[:i] + string(c) + plain[i+1:]
			if _, err := NormalizeRecoveryCode(typo); !errors.Is(err, ErrBadRecoveryCode) {
				t.Fatalf("typo at %d not detected: %v", i, err)
			}
		}
		if i+1 < len(plain) && plain[i] != plain[i+1] {
			swap := plain[:i] + plain[i+1:i+2] + plain[i:i+1] + plain[i+2:]
			if _, err := NormalizeRecoveryCode(swap); !errors.Is(err, ErrBadRecoveryCode) {
				t.Fatalf("swap at %d not detected: %v", i, err)
			}
		}
	}
	for _, in := range []string{"", plain[:31], plain + "0", plain[:31] + "U", plain[:31] + "!", plain[:31] + "é"} {
		_, err := NormalizeRecoveryCode(in)
		if !errors.Is(err, ErrBadRecoveryCode) {
			t.Errorf("normalize %q: %v", in, err)
		}
		if err != nil && len(in) > 8 && strings.Contains(err.Error(), in[:8]) {
			t.Errorf("error quotes the code: %v", err)
		}
	}
}

func TestBackupRoundTrip(t *testing.T) {
	w := newWorld(t, 1)
	code, err := NewRecoveryCode(w.rnd)
	if err != nil {
		t.Fatal(err)
	}
	sealed, err := SealBackup(w.user, code, testWorkFactor)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(sealed, []byte(w.user.Address)) {
		t.Fatal("backup reveals the address")
	}
	for _, typed := range []string{code, strings.ToLower(strings.ReplaceAll(code, "-", " "))} {
		got, err := OpenBackup(sealed, typed)
		if err != nil {
			t.Fatal(err)
		}
		if !got.Equal(w.user) || !w.userCert.Matches(got) {
			t.Fatal("backup opened to different keys")
		}
	}

	other, _ := NewRecoveryCode(w.rnd)
	if _, err := OpenBackup(sealed, other); !errors.Is(err, ErrWrongRecoveryCode) {
		t.Fatalf("wrong code: %v", err)
	}
	typo := []byte(code)
	typo[0] ^= 1
	if _, err := OpenBackup(sealed, string(typo)); !errors.Is(err, ErrBadRecoveryCode) {
		t.Fatalf("mistyped code: %v", err)
	}
	if _, err := SealBackup(w.user, "correct horse battery staple", testWorkFactor); !errors.Is(err, ErrBadRecoveryCode) {
		t.Fatalf("human passphrase accepted: %v", err)
	}
	for _, wf := range []int{0, MaxScryptWorkFactor + 1} {
		if _, err := SealBackup(w.user, code, wf); err == nil {
			t.Fatalf("work factor %d accepted", wf)
		}
	}

	damaged := bytes.Clone(sealed)
	damaged[len(damaged)-1] ^= 1
	if _, err := OpenBackup(damaged, code); !errors.Is(err, ErrMalformed) {
		t.Fatalf("damaged backup: %v", err)
	}
	if _, err := OpenBackup([]byte("not age"), code); !errors.Is(err, ErrMalformed) {
		t.Fatalf("garbage: %v", err)
	}
	// A file sealed to an X25519 key, not a code, is not a backup.
	var buf bytes.Buffer
	aw, _ := age.Encrypt(&buf, w.user.Sealing.Recipient().AgeRecipient())
	aw.Write([]byte("x"))
	aw.Close()
	if _, err := OpenBackup(buf.Bytes(), code); !errors.Is(err, ErrMalformed) {
		t.Fatalf("X25519 file: %v", err)
	}
	// A work factor above the bound is refused before any scrypt work.
	if _, err := openBackup(sealed, code, testWorkFactor-1); !errors.Is(err, ErrMalformed) {
		t.Fatalf("work factor above bound: %v", err)
	}
}

func TestUserKeysEncoding(t *testing.T) {
	w := newWorld(t, 1)
	b, err := encodeUserKeys(w.user)
	if err != nil {
		t.Fatal(err)
	}
	got, err := decodeUserKeys(b)
	if err != nil || !got.Equal(w.user) {
		t.Fatalf("round trip: %v", err)
	}
	// A node key file is not a user key file, nor a CA key.
	if _, err := decodeUserKeys(encodeNodeKey(w.nodeKey)); !errors.Is(err, ErrMalformed) {
		t.Fatalf("node key as user keys: %v", err)
	}
	if _, err := decodeCAKey(encodeNodeKey(w.nodeKey)); !errors.Is(err, ErrMalformed) {
		t.Fatalf("node key as CA key: %v", err)
	}
	if _, err := encodeUserKeys(UserKeys{Address: "a@b"}); err == nil {
		t.Fatal("encoded user keys without keys")
	}
}

func TestRotateUserKeys(t *testing.T) {
	w := newWorld(t, 1)
	v1, err := encodeUserKeys(w.user)
	if err != nil {
		t.Fatal(err)
	}
	once, err := w.user.Rotate(w.rnd)
	if err != nil {
		t.Fatal(err)
	}
	twice, err := once.Rotate(w.rnd)
	if err != nil {
		t.Fatal(err)
	}
	if twice.Address != w.user.Address || twice.Generation() != 3 || w.user.Generation() != 1 {
		t.Fatalf("address %q, generations %d and %d", twice.Address, twice.Generation(), w.user.Generation())
	}
	gens := twice.Generations()
	if len(gens) != 3 || !gens[1].Equal(once.Generations()[0]) || !gens[2].Equal(w.user) || w.userCert.Matches(twice) {
		t.Fatal("rotated keys do not keep the earlier ones, newest first, or reuse a key")
	}
	// Keys never rotated keep the version 1 encoding, which older builds
	// read; rotated ones round-trip with every retired pair.
	if b, _ := encodeUserKeys(w.user); !bytes.Equal(b, v1) {
		t.Fatal("unrotated keys changed encoding")
	}
	b, err := encodeUserKeys(twice)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := decodeUserKeys(b); err != nil || !got.Equal(twice) {
		t.Fatalf("round trip: %v", err)
	}
	if got, err := decodeUserKeys(v1); err != nil || !got.Equal(w.user) {
		t.Fatalf("version 1: %v", err)
	}
	// The one encoding of unrotated keys is version 1.
	bad := wire.MustMarshal(userKeysFileRotated{Kind: kindUserKeys, Version: userKeysRotatedVersion, Address: twice.Address,
		Signing: twice.Signing.seed(), Sealing: twice.Sealing.secret()})
	if _, err := decodeUserKeys(bad); !errors.Is(err, ErrMalformed) {
		t.Fatalf("version 2 without retired keys: %v", err)
	}
	// The backup carries what recovery needs: every generation.
	code, _ := NewRecoveryCode(w.rnd)
	sealed, err := SealBackup(twice, code, testWorkFactor)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := OpenBackup(sealed, code); err != nil || !got.Equal(twice) {
		t.Fatalf("backup of rotated keys: %v", err)
	}
}
