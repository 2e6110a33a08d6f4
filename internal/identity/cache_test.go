package identity

import (
	"errors"
	"testing"
)

// TestVerifiedCertificatesAreRemembered: a certificate's CA signature is
// checked once; everything else (address, revocation) every time, and
// altered bytes are never taken for the remembered certificate.
func TestVerifiedCertificatesAreRemembered(t *testing.T) {
	w := newWorld(t, 31)
	for range 2 {
		if _, err := w.v.VerifyUser(w.userCert.Bytes(), w.user.Address); err != nil {
			t.Fatal(err)
		}
		if _, err := w.v.VerifyNode(w.node.Bytes()); err != nil {
			t.Fatal(err)
		}
	}
	if len(w.v.signed.users) != 1 || len(w.v.signed.nodes) != 1 {
		t.Fatalf("cached %d user and %d node certificates, want 1 and 1", len(w.v.signed.users), len(w.v.signed.nodes))
	}
	// The address is still checked on a remembered certificate.
	if _, err := w.v.VerifyUser(w.userCert.Bytes(), "bob@lab.example.org"); !errors.Is(err, ErrWrongAddress) {
		t.Errorf("remembered certificate for another address: %v", err)
	}
	// Altered bytes miss the cache and fail.
	b := w.userCert.Bytes()
	b[len(b)-1] ^= 1
	if _, err := w.v.VerifyUser(b, w.user.Address); err == nil {
		t.Error("an altered certificate verified")
	}
	// Revocation applies to remembered certificates at once.
	rev, err := w.ca.IssueRevocation(1, []Serial{w.node.Serial, w.userCert.Serial})
	if err != nil {
		t.Fatal(err)
	}
	v2, err := w.v.WithRevocation(rev.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := v2.VerifyNode(w.node.Bytes()); !errors.Is(err, ErrRevoked) {
		t.Errorf("revoked node certificate: %v", err)
	}
	if _, err := v2.VerifyUser(w.userCert.Bytes(), w.user.Address); !errors.Is(err, ErrRevoked) {
		t.Errorf("revoked user certificate: %v", err)
	}
	// A certificate handed out is the caller's: changing it does not
	// change what the cache returns.
	c, _ := w.v.VerifyUser(w.userCert.Bytes(), w.user.Address)
	c.Address = "mallory@lab.example.org"
	if c2, err := w.v.VerifyUser(w.userCert.Bytes(), w.user.Address); err != nil || c2.Address != w.user.Address {
		t.Errorf("cache changed by a caller: %v %v", c2, err)
	}
}
