package transport

import (
	"sync"
	"testing"

	"github.com/epost-mail/epost/internal/identity"
)

// TestRevocationSpreadsWithHellos: a node that holds a newer revocation
// list passes it on in its hello; the receiver adopts it, tells its node,
// drops the revoked peer's connection and refuses it from then on.
func TestRevocationSpreadsWithHellos(t *testing.T) {
	r := &seq{}
	ca := newCA(t, r)
	var mu sync.Mutex
	var heard [][]byte
	a := newNode(t, ca, newMember(t, ca, r))
	b := newConfiguredNode(t, ca, newMember(t, ca, r), func(c *Config) {
		c.OnRevocation = func(list []byte) { mu.Lock(); heard = append(heard, list); mu.Unlock() }
	})
	cm := newMember(t, ca, r)
	c := newNode(t, ca, cm)
	c.Send(b.Addr(), []byte("before"))
	waitFor(t, "c's first message", waitLong, func() bool { return b.in.len() == 1 })

	rev, err := ca.IssueRevocation(1, []identity.Serial{cm.cert.Serial})
	if err != nil {
		t.Fatal(err)
	}
	if ok, err := a.verifier.Load().Adopt(rev.Bytes()); !ok || err != nil {
		t.Fatalf("adopt: %v %v", ok, err)
	}
	a.RevocationChanged()
	a.Send(b.Addr(), []byte("news"))
	waitFor(t, "b to adopt epoch 1", waitLong, func() bool { return b.verifier.Load().Epoch() == 1 })
	waitFor(t, "b's node to hear of it", waitLong, func() bool { mu.Lock(); defer mu.Unlock(); return len(heard) == 1 })
	waitFor(t, "a's message", waitLong, func() bool { return b.in.len() == 2 })

	// c may write its next message into the connection b closed before it
	// learns of the close: that message is lost, as an unreliable send may
	// be, and never delivered (b reset the stream before it read "news").
	// So c keeps sending; its next connection must be refused.
	refused := b.Stats().Refused
	polls := 0
	waitFor(t, "b to refuse the revoked node", waitLong, func() bool {
		if polls%20 == 0 {
			c.Send(b.Addr(), []byte("after"))
		}
		polls++
		return b.Stats().Refused > refused
	})
	for _, m := range b.in.messages() {
		if m == "after" {
			t.Fatal("a revoked node's message was delivered")
		}
	}
}
