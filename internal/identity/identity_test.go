package identity

import (
	"bytes"
	"crypto/ecdh"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"

	"filippo.io/age"

	"github.com/epost-mail/epost/internal/env"
	"github.com/epost-mail/epost/internal/id"
	"github.com/epost-mail/epost/internal/wire"
)

// world is a community for tests, built from a fixed seed.
type world struct {
	rnd      env.Rand
	ca       *CA
	v        *Verifier
	nodeKey  NodeKey
	node     *NodeCert
	user     UserKeys
	userCert *UserCert
}

func newWorld(t testing.TB, seed uint64) *world {
	t.Helper()
	w := &world{rnd: env.NewRand(seed, 7)}
	var err error
	if w.ca, err = NewCA(w.rnd); err != nil {
		t.Fatal(err)
	}
	w.v = NewVerifier(w.ca.Public())
	if w.nodeKey, err = GenerateNodeKey(w.rnd); err != nil {
		t.Fatal(err)
	}
	if w.node, err = w.ca.IssueNode(w.rnd, w.nodeKey.Public()); err != nil {
		t.Fatal(err)
	}
	if w.user, err = GenerateUserKeys(w.rnd, "Alice@Lab.Example.ORG"); err != nil {
		t.Fatal(err)
	}
	if w.userCert, err = w.ca.IssueUser(w.rnd, w.user.Address, w.user.Signing.Public(), w.user.Sealing.Recipient()); err != nil {
		t.Fatal(err)
	}
	return w
}

func TestSealingKeyMatchesAge(t *testing.T) {
	// Our bech32 encoder against age's: the secret key we build from raw
	// bytes must parse, print back identically, and have the recipient
	// X25519 computes from the same scalar.
	rnd := env.NewRand(1, 2)
	for i := range 50 {
		scalar := make([]byte, 32)
		rnd.Read(scalar)
		k, err := GenerateSealingKey(bytes.NewReader(scalar))
		if err != nil {
			t.Fatal(err)
		}
		if got, want := k.secret(), k.AgeIdentity().String(); got != want || !strings.HasPrefix(got, "AGE-SECRET-KEY-1") {
			t.Fatalf("%d: secret %q, age prints %q", i, got, want)
		}
		priv, err := ecdh.X25519().NewPrivateKey(scalar)
		if err != nil {
			t.Fatal(err)
		}
		want := bech32Encode("age", priv.PublicKey().Bytes())
		if got := k.Recipient().String(); got != want {
			t.Fatalf("%d: recipient %q, want %q", i, got, want)
		}
		// Sealing to the recipient opens with the key.
		var buf bytes.Buffer
		wr, err := age.Encrypt(&buf, k.Recipient().AgeRecipient())
		if err != nil {
			t.Fatal(err)
		}
		io.WriteString(wr, "hello")
		wr.Close()
		r, err := age.Decrypt(&buf, k.AgeIdentity())
		if err != nil {
			t.Fatal(err)
		}
		if b, _ := io.ReadAll(r); string(b) != "hello" {
			t.Fatalf("decrypted %q", b)
		}
	}
}

func TestKeysAreDeterministic(t *testing.T) {
	a, b := newWorld(t, 5), newWorld(t, 5)
	if !bytes.Equal(a.node.Bytes(), b.node.Bytes()) || !bytes.Equal(a.userCert.Bytes(), b.userCert.Bytes()) {
		t.Fatal("same seed gave different certificates")
	}
	if !a.user.Equal(b.user) {
		t.Fatal("same seed gave different user keys")
	}
	c := newWorld(t, 6)
	if a.node.NodeID == c.node.NodeID || a.user.Equal(c.user) {
		t.Fatal("different seeds gave the same keys")
	}
}

func TestGenerateShortRead(t *testing.T) {
	short := func() io.Reader { return bytes.NewReader(make([]byte, 10)) }
	if _, err := GenerateSigningKey(short()); err == nil {
		t.Error("signing key from 10 bytes")
	}
	if _, err := GenerateNodeKey(short()); err == nil {
		t.Error("node key from 10 bytes")
	}
	if _, err := GenerateSealingKey(short()); err == nil {
		t.Error("sealing key from 10 bytes")
	}
	if _, err := NewCA(short()); err == nil {
		t.Error("CA from 10 bytes")
	}
	if _, err := NewRecoveryCode(short()); err == nil {
		t.Error("recovery code from 10 bytes")
	}
	w := newWorld(t, 1)
	if _, err := w.ca.IssueNode(short(), w.nodeKey.Public()); err == nil {
		t.Error("node cert from 10 bytes")
	}
}

func TestPrivateKeysDoNotPrint(t *testing.T) {
	w := newWorld(t, 1)
	var secrets []string
	for _, seed := range [][]byte{w.user.Signing.seed(), w.nodeKey.seed(), w.ca.key.seed()} {
		secrets = append(secrets, fmt.Sprintf("%x", seed[:8]), strings.Trim(fmt.Sprint(seed[:6]), "[]"))
	}
	secrets = append(secrets, w.user.Sealing.secret()[16:30])
	for _, s := range []string{
		fmt.Sprint(w.user), fmt.Sprintf("%+v", w.user), fmt.Sprintf("%#v", w.user),
		fmt.Sprint(w.nodeKey), fmt.Sprintf("%#v", w.nodeKey), fmt.Sprintf("%x", w.nodeKey),
		fmt.Sprint(w.ca), fmt.Sprintf("%#v", w.ca), fmt.Sprint(*w.ca), fmt.Sprintf("%+v", []any{w.ca}),
	} {
		for _, secret := range secrets {
			if strings.Contains(s, secret) {
				t.Errorf("private key printed: %s", s)
			}
		}
	}
}

func TestSignVerify(t *testing.T) {
	w := newWorld(t, 1)
	sig := w.user.Signing.Sign("test v1\x00", []byte("msg"))
	pub := w.user.Signing.Public()
	if !pub.Verify("test v1\x00", []byte("msg"), sig) {
		t.Fatal("own signature rejected")
	}
	if pub.Verify("other v1\x00", []byte("msg"), sig) {
		t.Fatal("signature accepted under another label")
	}
	if pub.Verify("test v1\x00", []byte("msg"), sig[:63]) {
		t.Fatal("short signature accepted")
	}
	p2, err := ParseVerifyingKey(pub.Bytes())
	if err != nil || p2 != pub {
		t.Fatalf("parse verifying key: %v", err)
	}
	if _, err := ParseVerifyingKey(pub.Bytes()[1:]); !errors.Is(err, ErrMalformed) {
		t.Fatalf("31-byte key: %v", err)
	}
}

func TestCertRoundTrip(t *testing.T) {
	w := newWorld(t, 1)
	n, err := w.v.VerifyNode(w.node.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	if n.NodeID != w.node.NodeID || n.Key != w.nodeKey.Public() || n.Serial != w.node.Serial ||
		n.CA != w.ca.Fingerprint() || n.Version != CertVersion || !n.Matches(w.nodeKey) {
		t.Fatalf("node cert: got %+v, issued %+v", n, w.node)
	}
	if n.NodeID.ID == id.FromBytes(w.nodeKey.Public().Bytes()) {
		t.Fatal("node id derived from the key")
	}
	u, err := w.v.VerifyUser(w.userCert.Bytes(), "alice@LAB.example.org")
	if err != nil {
		t.Fatal(err)
	}
	if u.Address != "alice@lab.example.org" || u.UserID != id.ForUser("alice@lab.example.org") ||
		u.Signing != w.user.Signing.Public() || u.Sealing != w.user.Sealing.Recipient() || !u.Matches(w.user) {
		t.Fatalf("user cert: got %+v", u)
	}
	other := newWorld(t, 2)
	if u.Matches(other.user) || n.Matches(other.nodeKey) {
		t.Fatal("certificate matches a stranger's keys")
	}
}

// reSign returns a certificate whose body is edited by f and then signed
// by ca again: a validly signed but wrong certificate, as only a buggy or
// malicious CA would make.
func reSign(t *testing.T, ca *CA, label string, cert []byte, body any, f func()) []byte {
	t.Helper()
	var s signed
	if err := wire.Unmarshal(cert, &s); err != nil {
		t.Fatal(err)
	}
	if err := wire.Unmarshal(s.Body, body); err != nil {
		t.Fatal(err)
	}
	f()
	b, err := ca.sign(label, body)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// tamper decodes the outer form, lets f change it, and encodes it again.
func tamper(t *testing.T, cert []byte, f func(s *signed)) []byte {
	t.Helper()
	var s signed
	if err := wire.Unmarshal(cert, &s); err != nil {
		t.Fatal(err)
	}
	s.Body, s.Sig = bytes.Clone(s.Body), bytes.Clone(s.Sig)
	f(&s)
	return wire.MustMarshal(s)
}

func TestVerifyErrors(t *testing.T) {
	w := newWorld(t, 1)
	other := newWorld(t, 2)
	rev, err := w.ca.IssueRevocation(1, []Serial{w.node.Serial, w.userCert.Serial})
	if err != nil {
		t.Fatal(err)
	}
	revoking, err := w.v.WithRevocation(rev.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	node, user := w.node.Bytes(), w.userCert.Bytes()
	const addr = "alice@lab.example.org"

	tests := []struct {
		name string
		v    *Verifier
		user bool // verify as a user certificate for addr
		cert []byte
		want error
	}{
		{"node ok", w.v, false, node, nil},
		{"user ok", w.v, true, user, nil},
		{"node wrong CA", w.v, false, other.node.Bytes(), ErrWrongCA},
		{"user wrong CA", w.v, true, other.userCert.Bytes(), ErrWrongCA},
		{"node tampered body byte", w.v, false, tamper(t, node, func(s *signed) { s.Body[len(s.Body)-1] ^= 1 }), ErrTampered},
		{"user tampered body byte", w.v, true, tamper(t, user, func(s *signed) { s.Body[len(s.Body)-3] ^= 1 }), ErrTampered},
		{"node tampered signature", w.v, false, tamper(t, node, func(s *signed) { s.Sig[10] ^= 0x80 }), ErrTampered},
		{"user tampered signature", w.v, true, tamper(t, user, func(s *signed) { s.Sig[63] ^= 1 }), ErrTampered},
		{"node body rewritten", w.v, false, tamper(t, node, func(s *signed) { s.Body = other.node.Bytes() }), ErrTampered},
		{"node cert as user cert", w.v, true, node, ErrTampered},
		{"user cert as node cert", w.v, false, user, ErrTampered},
		{"revocation as node cert", w.v, false, rev.Bytes(), ErrTampered},
		{"user wrong address", w.v, true, mustIssueUser(t, w, "bob@lab.example.org"), ErrWrongAddress},
		{"node revoked", revoking, false, node, ErrRevoked},
		{"user revoked", revoking, true, user, ErrRevoked},
		{"node truncated", w.v, false, node[:len(node)-1], ErrMalformed},
		{"node trailing byte", w.v, false, append(bytes.Clone(node), 0), ErrMalformed},
		{"node empty", w.v, false, nil, ErrMalformed},
		{"node short signature", w.v, false, tamper(t, node, func(s *signed) { s.Sig = s.Sig[:32] }), ErrMalformed},
	}

	// Validly signed by our CA but wrong inside.
	var nb nodeCertBody
	var ub userCertBody
	tests = append(tests, []struct {
		name string
		v    *Verifier
		user bool
		cert []byte
		want error
	}{
		{"user id not H(address)", w.v, true, reSign(t, w.ca, labelUserCert, user, &ub, func() { ub.UserID = id.ForUser("bob@lab.example.org") }), ErrWrongAddress},
		{"user address not canonical", w.v, true, reSign(t, w.ca, labelUserCert, user, &ub, func() {
			ub.Address = "Alice@lab.example.org"
			ub.UserID = id.ForUser(ub.Address)
		}), ErrWrongAddress},
		{"node names other CA", w.v, false, reSign(t, w.ca, labelNodeCert, node, &nb, func() { fp := other.ca.Fingerprint(); nb.CA = fp[:] }), ErrWrongCA},
		{"node version 2", w.v, false, reSign(t, w.ca, labelNodeCert, node, &nb, func() { nb.Version = 2 }), wire.ErrVersion},
		{"node short serial", w.v, false, reSign(t, w.ca, labelNodeCert, node, &nb, func() { nb.Serial = nb.Serial[:15] }), ErrMalformed},
		{"user bad sealing recipient", w.v, true, reSign(t, w.ca, labelUserCert, user, &ub, func() { ub.Sealing = "age1qqq" }), ErrMalformed},
	}...)

	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var err error
			if tt.user {
				_, err = tt.v.VerifyUser(tt.cert, addr)
			} else {
				_, err = tt.v.VerifyNode(tt.cert)
			}
			if tt.want == nil && err != nil || !errors.Is(err, tt.want) {
				t.Fatalf("got %v, want %v", err, tt.want)
			}
			t.Log(err)
			if errors.Is(err, ErrMalformed) && !errors.Is(err, wire.ErrMalformed) {
				t.Fatalf("%v does not wrap wire.ErrMalformed", err)
			}
			if err != nil && !strings.HasPrefix(err.Error(), "identity: verify ") {
				t.Fatalf("error without context: %v", err)
			}
		})
	}
}

func mustIssueUser(t *testing.T, w *world, addr string) []byte {
	t.Helper()
	k, err := GenerateUserKeys(w.rnd, addr)
	if err != nil {
		t.Fatal(err)
	}
	c, err := w.ca.IssueUser(w.rnd, addr, k.Signing.Public(), k.Sealing.Recipient())
	if err != nil {
		t.Fatal(err)
	}
	return c.Bytes()
}

func TestVerifyUserBadWantAddress(t *testing.T) {
	w := newWorld(t, 1)
	if _, err := w.v.VerifyUser(w.userCert.Bytes(), "alice"); !errors.Is(err, ErrBadAddress) {
		t.Fatalf("got %v, want ErrBadAddress", err)
	}
}

func TestIssueRefusesBadInput(t *testing.T) {
	w := newWorld(t, 1)
	if _, err := w.ca.IssueNode(w.rnd, NodePublicKey{}); err == nil {
		t.Error("node cert for the zero key")
	}
	if _, err := w.ca.IssueUser(w.rnd, "not an address", w.user.Signing.Public(), w.user.Sealing.Recipient()); !errors.Is(err, ErrBadAddress) {
		t.Errorf("user cert for a bad address: %v", err)
	}
	if _, err := w.ca.IssueUser(w.rnd, "a@b", VerifyingKey{}, w.user.Sealing.Recipient()); err == nil {
		t.Error("user cert for the zero signing key")
	}
	if _, err := w.ca.IssueUser(w.rnd, "a@b", w.user.Signing.Public(), SealingRecipient{}); err == nil {
		t.Error("user cert for the zero sealing recipient")
	}
	if _, err := w.ca.IssueRevocation(0, nil); err == nil {
		t.Error("revocation at epoch 0")
	}
}

func TestRevocation(t *testing.T) {
	w := newWorld(t, 1)
	other := newWorld(t, 2)
	s1, s2, s3 := Serial{1}, Serial{2}, Serial{3}
	issue := func(ca *CA, epoch uint64, s ...Serial) []byte {
		r, err := ca.IssueRevocation(epoch, s)
		if err != nil {
			t.Fatal(err)
		}
		return r.Bytes()
	}
	r1 := issue(w.ca, 1, s2, s1, s2) // unsorted, duplicated: the CA sorts
	got, err := w.v.VerifyRevocation(r1)
	if err != nil {
		t.Fatal(err)
	}
	if got.Epoch != 1 || len(got.Revoked()) != 2 || !got.IsRevoked(s1) || !got.IsRevoked(s2) || got.IsRevoked(s3) {
		t.Fatalf("revocation %+v %v", got, got.Revoked())
	}
	if !got.Newer(nil) || (*Revocation)(nil).Newer(got) || got.Newer(got) {
		t.Fatal("Newer")
	}

	v1, err := w.v.WithRevocation(r1)
	if err != nil {
		t.Fatal(err)
	}
	if w.v.Epoch() != 0 || v1.Epoch() != 1 {
		t.Fatal("WithRevocation changed the old verifier or did not advance")
	}
	v3, err := v1.WithRevocation(issue(w.ca, 3, s1, s2, s3))
	if err != nil {
		t.Fatal(err)
	}
	if same, err := v3.WithRevocation(issue(w.ca, 3, s3, s2, s1)); err != nil || same != v3 {
		t.Fatalf("same list again: %v", err)
	}

	var rb revocationBody
	tests := []struct {
		name string
		v    *Verifier
		list []byte
		want error
	}{
		{"older epoch refused", v3, r1, ErrStaleRevocation},
		{"other list at same epoch", v3, issue(w.ca, 3, s1), ErrStaleRevocation},
		{"wrong CA", v3, issue(other.ca, 9, s1), ErrWrongCA},
		{"tampered", v3, tamper(t, issue(w.ca, 9, s1), func(s *signed) { s.Body[len(s.Body)-1] ^= 1 }), ErrTampered},
		{"tampered signature", v3, tamper(t, issue(w.ca, 9, s1), func(s *signed) { s.Sig[0] ^= 1 }), ErrTampered},
		{"unsorted", v3, reSign(t, w.ca, labelRevocation, issue(w.ca, 9, s1, s2), &rb, func() {
			rb.Revoked[0], rb.Revoked[1] = rb.Revoked[1], rb.Revoked[0]
		}), ErrMalformed},
		{"duplicate", v3, reSign(t, w.ca, labelRevocation, issue(w.ca, 9, s1, s2), &rb, func() { rb.Revoked[1] = rb.Revoked[0] }), ErrMalformed},
		{"epoch 0", v3, reSign(t, w.ca, labelRevocation, issue(w.ca, 9, s1), &rb, func() { rb.Epoch = 0 }), ErrMalformed},
		{"node cert as revocation", v3, w.node.Bytes(), ErrTampered},
		{"newer", v3, issue(w.ca, 4), nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			nv, err := tt.v.WithRevocation(tt.list)
			if tt.want == nil && err != nil || !errors.Is(err, tt.want) {
				t.Fatalf("got %v, want %v", err, tt.want)
			}
			if err == nil && nv.Epoch() <= tt.v.Epoch() {
				t.Fatalf("epoch %d after %d", nv.Epoch(), tt.v.Epoch())
			}
		})
	}
}
