package transport

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
)

// TestNodeReachableOnlyThroughARelay: a member with no listen address at
// all (behind NAT, say) keeps a reservation on a relay member and
// advertises its address through it; another member reaches it there,
// with far more than libp2p's default 128 KiB per relayed connection.
func TestNodeReachableOnlyThroughARelay(t *testing.T) {
	r := &seq{}
	ca := newCA(t, r)
	relay := newConfiguredNode(t, ca, newMember(t, ca, r), func(c *Config) { c.RelayService = true })
	hidden := newConfiguredNode(t, ca, newMember(t, ca, r), func(c *Config) {
		c.ListenAddrs = nil
		c.Relays = []string{string(relay.Addr())}
		c.Advertise = string(relay.Addr()) + "/p2p-circuit"
	})
	other := newNode(t, ca, newMember(t, ca, r))
	if !strings.Contains(string(hidden.Addr()), "/p2p-circuit/p2p/") {
		t.Fatalf("hidden node's address %s is not through the relay", hidden.Addr())
	}
	waitFor(t, "a reservation on the relay", waitLong, func() bool { return hidden.Stats().Reservations > 0 })

	const n = 300
	payload := bytes.Repeat([]byte("x"), 1<<10)
	for i := range n {
		other.Send(hidden.Addr(), append([]byte(fmt.Sprintf("%04d", i)), payload...))
	}
	waitFor(t, "300 KiB through the relay", waitLong, func() bool { return hidden.in.len() == n })
	// And back, to the sender's own address.
	hidden.Send(other.Addr(), []byte("reply"))
	waitFor(t, "the reply", waitLong, func() bool { return other.in.len() == 1 })
	if st := other.Stats(); st.DialFailures != 0 || st.Dropped != 0 {
		t.Errorf("sender: %+v", st)
	}
}

// TestRelayServesMembersOnly: a peer that never showed a member's
// certificate gets no reservation.
func TestRelayServesMembersOnly(t *testing.T) {
	r := &seq{}
	ca := newCA(t, r)
	relay := newConfiguredNode(t, ca, newMember(t, ca, r), func(c *Config) { c.RelayService = true })
	stranger := newCA(t, r) // another community's CA
	m := newMember(t, stranger, r)
	outsider := newConfiguredNode(t, stranger, m, func(c *Config) {
		c.ListenAddrs = nil
		c.Relays = []string{string(relay.Addr())}
		c.Advertise = string(relay.Addr()) + "/p2p-circuit"
	})
	waitFor(t, "the relay to refuse the outsider's hello", waitLong, func() bool { return relay.Stats().Refused > 0 })
	waitFor(t, "two refused reservations", waitLong, func() bool { return outsider.Stats().ReservationsRefused >= 2 })
	if got := outsider.Stats().Reservations; got != 0 {
		t.Errorf("an outsider got %d reservations", got)
	}
}
