package identity

import (
	"bytes"
	"path/filepath"
	"strings"
	"testing"

	"github.com/epost-mail/epost/internal/wire"
)

// Fuzz targets for every decoder. The verify targets run each input twice:
// as a signed object (which random bytes almost never pass), and as a body
// that the test CA signs, so that the decoding behind the signature check
// is fuzzed too.

const fuzzAddress = "alice@lab.example.org"

// signBody wraps body as a CA-signed object under label.
func signBody(ca *CA, label string, body []byte) []byte {
	return wire.MustMarshal(signed{Body: body, Sig: ca.key.sign(label, body)})
}

// bodyOf returns the signed body inside an encoding.
func bodyOf(t testing.TB, b []byte) []byte {
	var s signed
	if err := wire.Unmarshal(b, &s); err != nil {
		t.Fatal(err)
	}
	return s.Body
}

func FuzzVerifyNodeCert(f *testing.F) {
	w := newWorld(f, 1)
	f.Add(w.node.Bytes())
	f.Add(bodyOf(f, w.node.Bytes()))
	f.Add(w.userCert.Bytes())
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, in := range [][]byte{b, signBody(w.ca, labelNodeCert, b)} {
			c, err := w.v.VerifyNode(in)
			if err != nil {
				continue
			}
			if c.CA != w.ca.Fingerprint() || c.Version != CertVersion {
				t.Fatalf("accepted a bad certificate: %+v", c)
			}
			again, err := w.v.VerifyNode(c.Bytes())
			if err != nil || again.NodeID != c.NodeID || again.Serial != c.Serial || again.Key != c.Key {
				t.Fatalf("re-verify: %v", err)
			}
		}
	})
}

func FuzzVerifyUserCert(f *testing.F) {
	w := newWorld(f, 1)
	f.Add(w.userCert.Bytes())
	f.Add(bodyOf(f, w.userCert.Bytes()))
	f.Add(w.node.Bytes())
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, in := range [][]byte{b, signBody(w.ca, labelUserCert, b)} {
			c, err := w.v.VerifyUser(in, fuzzAddress)
			if err != nil {
				continue
			}
			if c.Address != fuzzAddress || c.CA != w.ca.Fingerprint() || c.Sealing.IsZero() {
				t.Fatalf("accepted a bad certificate: %+v", c)
			}
			_ = c.Sealing.AgeRecipient() // must not panic: validated
		}
	})
}

func FuzzVerifyRevocation(f *testing.F) {
	w := newWorld(f, 1)
	r, err := w.ca.IssueRevocation(2, []Serial{{1}, {2}, {0xff}})
	if err != nil {
		f.Fatal(err)
	}
	v2, err := w.v.WithRevocation(r.Bytes())
	if err != nil {
		f.Fatal(err)
	}
	f.Add(r.Bytes())
	f.Add(bodyOf(f, r.Bytes()))
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, in := range [][]byte{b, signBody(w.ca, labelRevocation, b)} {
			rev, err := w.v.VerifyRevocation(in)
			if err != nil {
				continue
			}
			s := rev.Revoked()
			for i := 1; i < len(s); i++ {
				if s[i-1].Compare(s[i]) >= 0 {
					t.Fatalf("accepted unsorted serials %v", s)
				}
			}
			nv, err := v2.WithRevocation(in)
			if err == nil && nv.Epoch() < v2.Epoch() {
				t.Fatalf("epoch went back from %d to %d", v2.Epoch(), nv.Epoch())
			}
		}
	})
}

func FuzzOpenBackup(f *testing.F) {
	w := newWorld(f, 1)
	code, err := NewRecoveryCode(bytes.NewReader(make([]byte, recoveryData)))
	if err != nil {
		f.Fatal(err)
	}
	// Work factor 1: the fuzzer then reaches the decryption and the key
	// decoding cheaply.
	sealed, err := SealBackup(w.user, code, 1)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(sealed)
	f.Add([]byte("age-encryption.org/v1\n-> scrypt AAAAAAAAAAAAAAAAAAAAAA 1\nAAAA\n--- AAAA\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		keys, err := openBackup(b, code, 4)
		if err == nil && keys.Address == "" {
			t.Fatal("opened to empty keys")
		}
	})
}

func FuzzNormalizeRecoveryCode(f *testing.F) {
	code, _ := NewRecoveryCode(bytes.NewReader(bytes.Repeat([]byte{7, 200, 31, 64}, 8)))
	f.Add(code)
	f.Add(strings.ToLower(strings.ReplaceAll(code, "-", " ")))
	f.Add("0000-0000-0000-0000-0000-0000-0000-0000")
	f.Add("")
	f.Fuzz(func(t *testing.T, s string) {
		n, err := NormalizeRecoveryCode(s)
		if err != nil {
			return
		}
		if len(n) != recoverySymbols+recoverySymbols/recoveryGroup-1 {
			t.Fatalf("normalized %q to %q", s, n)
		}
		if again, err := NormalizeRecoveryCode(n); err != nil || again != n {
			t.Fatalf("normal form %q not stable: %q, %v", n, again, err)
		}
	})
}

func FuzzCanonicalAddress(f *testing.F) {
	for _, s := range []string{fuzzAddress, " Bob.Smith+x@Sub.Example.COM ", "a@b", "../x@y", "a@b@c", "jörg@x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		a, err := CanonicalAddress(s)
		if err != nil {
			return
		}
		if again, err := CanonicalAddress(a); err != nil || again != a {
			t.Fatalf("canonical form %q not stable: %q, %v", a, again, err)
		}
		d, err := UserDir("/data", a)
		if err != nil || filepath.Dir(d) != "/data/users" || filepath.Base(d) != a {
			t.Fatalf("address %q escapes its directory: %q", a, d)
		}
	})
}

func FuzzDecodeKeyFile(f *testing.F) {
	w := newWorld(f, 1)
	uk, err := encodeUserKeys(w.user)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(uk)
	rotated, err := w.user.Rotate(w.rnd)
	if err != nil {
		f.Fatal(err)
	}
	if uk, err = encodeUserKeys(rotated); err != nil {
		f.Fatal(err)
	}
	f.Add(uk)
	f.Add(encodeNodeKey(w.nodeKey))
	f.Add(encodeCAKey(w.ca))
	f.Add(encodeCAPublic(w.ca.Public()))
	f.Fuzz(func(t *testing.T, b []byte) {
		if ca, err := decodeCAKey(b); err == nil {
			if got, err := decodeCAKey(encodeCAKey(ca)); err != nil || got.Public() != ca.Public() {
				t.Fatalf("CA key round trip: %v", err)
			}
		}
		if k, err := decodeCAPublic(b); err == nil {
			if got, err := decodeCAPublic(encodeCAPublic(k)); err != nil || got != k {
				t.Fatalf("CA public key round trip: %v", err)
			}
		}
		if k, err := decodeNodeKey(b); err == nil {
			if got, err := decodeNodeKey(encodeNodeKey(k)); err != nil || got.Public() != k.Public() {
				t.Fatalf("node key round trip: %v", err)
			}
		}
		if keys, err := decodeUserKeys(b); err == nil {
			enc, err := encodeUserKeys(keys)
			if err != nil {
				t.Fatal(err)
			}
			if got, err := decodeUserKeys(enc); err != nil || !got.Equal(keys) {
				t.Fatalf("user keys round trip: %v", err)
			}
		}
	})
}

// FuzzParseKeys: the public key parsers take exactly the 32 bytes they
// give back; the age key parsers accept only what re-parses to the same
// key.
func FuzzParseKeys(f *testing.F) {
	w := newWorld(f, 1)
	f.Add(w.ca.Public().Bytes())
	f.Add([]byte(w.user.Sealing.Recipient().String()))
	f.Add([]byte(w.user.Sealing.secret()))
	f.Add([]byte(strings.ToLower(w.user.Sealing.secret())))
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, got := range [][]byte{keyBytes(ParseCAPublicKey(b)), keyBytes(ParseVerifyingKey(b)), keyBytes(ParseNodePublicKey(b))} {
			if got != nil && !bytes.Equal(got, b) {
				t.Fatalf("parsed %x as %x", b, got)
			}
		}
		if r, err := ParseSealingRecipient(string(b)); err == nil {
			if again, err := ParseSealingRecipient(r.String()); err != nil || again != r {
				t.Fatalf("recipient %q re-parses as %q, %v", r, again, err)
			}
		}
		if k, err := ParseSealingKey(string(b)); err == nil {
			if again, err := ParseSealingKey(k.secret()); err != nil || !again.equal(k) || again.Recipient() != k.Recipient() {
				t.Fatalf("sealing key does not re-parse: %v", err)
			}
		}
	})
}

// keyBytes is a parsed key's bytes, nil if it did not parse.
func keyBytes[K interface{ Bytes() []byte }](k K, err error) []byte {
	if err != nil {
		return nil
	}
	return k.Bytes()
}
