package transport

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/epost-mail/epost/internal/env"
	"github.com/epost-mail/epost/internal/identity"
	"github.com/epost-mail/epost/internal/wire"
)

const waitLong = 20 * time.Second

func TestAddrIsCanonicalWithPeerID(t *testing.T) {
	r := &seq{}
	ca := newCA(t, r)
	a := newNode(t, ca, newMember(t, ca, r))
	s := string(a.Addr())
	if !strings.HasPrefix(s, "/ip4/127.0.0.1/tcp/") || !strings.HasSuffix(s, "/p2p/"+a.PeerID().String()) {
		t.Fatalf("Addr = %q, want /ip4/127.0.0.1/tcp/PORT/p2p/%s", s, a.PeerID())
	}
	if strings.Contains(s, "/tcp/0/") {
		t.Fatalf("Addr %q names port 0, not the bound port", s)
	}
	if _, _, err := parseAddr(a.Addr()); err != nil {
		t.Fatalf("own address does not parse: %v", err)
	}
	if !a.Authenticate(a.Addr(), a.m.cert.NodeID) {
		t.Fatal("a transport does not authenticate itself")
	}
}

// TestExchange: two hosts exchange frames in order, each attributed to
// the sender's canonical address, and authenticate each other's NodeID.
func TestExchange(t *testing.T) {
	r := &seq{}
	ca := newCA(t, r)
	a := newNode(t, ca, newMember(t, ca, r))
	b := newNode(t, ca, newMember(t, ca, r))

	const n = 1000
	for i := range n {
		msg := []byte(fmt.Sprintf("a->b %d", i))
		if i%2 == 0 {
			a.Send(b.Addr(), msg)
		} else {
			a.SendReliable(b.Addr(), msg, func(err error) { t.Errorf("reliable send %d failed: %v", i, err) })
		}
	}
	waitFor(t, "b to receive every message", waitLong, func() bool { return b.in.len() == n })
	for i := range n {
		from, msg := b.in.get(i)
		if from != a.Addr() {
			t.Fatalf("message %d from %q, want %q", i, from, a.Addr())
		}
		if want := fmt.Sprintf("a->b %d", i); string(msg) != want {
			t.Fatalf("message %d = %q, want %q (order lost?)", i, msg, want)
		}
	}

	// b answers the address it was given; a attributes the answer to b.
	from, _ := b.in.get(0)
	b.Send(from, []byte("b->a"))
	waitFor(t, "a to receive the answer", waitLong, func() bool { return a.in.len() == 1 })
	if from, msg := a.in.get(0); from != b.Addr() || string(msg) != "b->a" {
		t.Fatalf("a got %q from %q, want %q from %q", msg, from, "b->a", b.Addr())
	}

	if !b.Authenticate(a.Addr(), a.m.cert.NodeID) {
		t.Error("b does not authenticate a's NodeID")
	}
	if b.Authenticate(a.Addr(), b.m.cert.NodeID) {
		t.Error("b authenticates a's address for b's NodeID")
	}
	if got, ok := b.NodeID(a.Addr()); !ok || got != a.m.cert.NodeID {
		t.Errorf("b.NodeID(a) = %v, %v", got, ok)
	}
	other := env.Addr(strings.Replace(string(a.Addr()), "/tcp/", "/tcp/1", 1))
	if b.Authenticate(other, a.m.cert.NodeID) {
		t.Error("b authenticates a's NodeID at an address a never claimed")
	}

	// A message counts as sent once the peer's answer to the hello is in,
	// which may come just after the message itself was delivered.
	waitFor(t, "send counters", waitLong, func() bool { return a.Stats().MsgsSent == n && b.Stats().MsgsSent == 1 })
	sa, sb := a.Stats(), b.Stats()
	if sa.MsgsSent != n || sb.MsgsReceived != n || sb.MsgsSent != 1 || sa.MsgsReceived != 1 {
		t.Errorf("counts: a %+v, b %+v", sa, sb)
	}
	if sa.BytesSent != sb.BytesReceived || sa.BytesSent == 0 {
		t.Errorf("bytes: a sent %d, b received %d", sa.BytesSent, sb.BytesReceived)
	}
	if sa.Dropped+sb.Dropped+sa.Refused+sb.Refused+sa.Malformed+sb.Malformed != 0 {
		t.Errorf("unexpected failures: a %+v, b %+v", sa, sb)
	}
}

func TestSelfSendIsDeliveredLocally(t *testing.T) {
	r := &seq{}
	ca := newCA(t, r)
	a := newNode(t, ca, newMember(t, ca, r))
	a.Send(a.Addr(), []byte("me"))
	waitFor(t, "self delivery", waitLong, func() bool { return a.in.len() == 1 })
	if from, msg := a.in.get(0); from != a.Addr() || string(msg) != "me" {
		t.Fatalf("got %q from %q", msg, from)
	}
}

func TestQUIC(t *testing.T) {
	r := &seq{}
	ca := newCA(t, r)
	a := newNode(t, ca, newMember(t, ca, r), "/ip4/127.0.0.1/udp/0/quic-v1")
	b := newNode(t, ca, newMember(t, ca, r), "/ip4/127.0.0.1/udp/0/quic-v1")
	if !strings.Contains(string(a.Addr()), "/quic-v1/p2p/") {
		t.Fatalf("Addr = %q, want a quic-v1 address", a.Addr())
	}
	a.Send(b.Addr(), []byte("over quic"))
	waitFor(t, "delivery over QUIC", waitLong, func() bool { return b.in.len() == 1 })
	if from, _ := b.in.get(0); from != a.Addr() {
		t.Fatalf("from %q, want %q", from, a.Addr())
	}
}

// waitRefused waits until n refused count reaches want.
func waitRefused(t *testing.T, n *node, want uint64) {
	t.Helper()
	waitFor(t, fmt.Sprintf("%d refused", want), waitLong, func() bool { return n.Stats().Refused >= want })
}

// TestRefusesOtherCommunity: a node certified by another CA is refused,
// and nothing it sends is delivered.
func TestRefusesOtherCommunity(t *testing.T) {
	r := &seq{}
	ca, ca2 := newCA(t, r), newCA(t, r)
	a := newNode(t, ca, newMember(t, ca, r))
	stranger := newNode(t, ca2, newMember(t, ca2, r))

	failed := make(chan error, 10)
	for i := range 10 {
		stranger.SendReliable(a.Addr(), []byte(fmt.Sprintf("x%d", i)), func(err error) { failed <- err })
	}
	waitRefused(t, a, 1)
	// The stranger hears of a failure for every message it queued: from
	// the missing answer to its hello, or from its write into the stream
	// the refusal reset, whichever it notices first.
	for i := range 10 {
		select {
		case err := <-failed:
			if err == nil {
				t.Fatalf("failure %d reported with a nil error", i)
			}
		case <-time.After(waitLong):
			t.Fatalf("only %d of 10 failures reported", i)
		}
	}
	if st := stranger.Stats(); st.DialFailures+st.WriteFailures == 0 || st.MsgsSent != 0 {
		t.Fatalf("stranger stats %+v: want a failed stream and nothing counted as sent", st)
	}
	if a.in.len() != 0 {
		t.Fatalf("a delivered %d messages from a stranger", a.in.len())
	}
	if a.Authenticate(stranger.Addr(), stranger.m.cert.NodeID) {
		t.Fatal("a authenticates a stranger")
	}
}

// helloFor encodes a hello with any certificate and address.
func helloFor(t testing.TB, cert *identity.NodeCert, addr env.Addr) []byte {
	t.Helper()
	b, err := encodeHello(cert, addr, nil)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestRefusesCertificateForAnotherKey: a valid certificate of this
// community, presented over a connection authenticated with a different
// key (a stolen or replayed certificate), is refused.
func TestRefusesCertificateForAnotherKey(t *testing.T) {
	r := &seq{}
	ca := newCA(t, r)
	a := newNode(t, ca, newMember(t, ca, r))
	victim := newMember(t, ca, r)
	thiefKey := newMember(t, ca, r).key
	thief := newRawPeer(t, thiefKey)

	s := thief.open(t, a.Addr())
	_, _ = s.Write(frames(helloFor(t, victim.cert, thief.addr()), []byte("forged")))
	waitRefused(t, a, 1)
	if a.in.len() != 0 {
		t.Fatalf("delivered %d messages under a certificate for another key", a.in.len())
	}
	if a.Authenticate(thief.addr(), victim.cert.NodeID) {
		t.Fatal("the thief is authenticated as the victim")
	}
}

// TestRefusesAddressOfAnotherPeer: a hello whose address names another
// peer ID is refused, so nobody can have frames attributed to a node it
// is not.
func TestRefusesAddressOfAnotherPeer(t *testing.T) {
	r := &seq{}
	ca := newCA(t, r)
	a := newNode(t, ca, newMember(t, ca, r))
	b := newNode(t, ca, newMember(t, ca, r))
	m := newMember(t, ca, r)
	p := newRawPeer(t, m.key)

	for i, claimed := range []env.Addr{
		b.Addr(), // someone else's address
		env.Addr(strings.Replace(string(p.addr()), "/ip4/", "/ip4//", 1)), // not canonical
		"/p2p/" + env.Addr(p.h.ID().String()),                             // no transport part
		"garbage",
	} {
		s := p.open(t, a.Addr())
		_, _ = s.Write(frames(helloFor(t, m.cert, claimed), []byte("x")))
		waitRefused(t, a, uint64(i+1))
		p.waitDisconnected(t, a.Addr())
	}
	if a.in.len() != 0 {
		t.Fatalf("delivered %d messages after a bad hello", a.in.len())
	}

	// The same peer with an honest hello is accepted.
	s := p.open(t, a.Addr())
	_, _ = s.Write(frames(helloFor(t, m.cert, p.addr()), []byte("honest")))
	waitFor(t, "the honest message", waitLong, func() bool { return a.in.len() == 1 })
	if from, _ := a.in.get(0); from != p.addr() {
		t.Fatalf("from %q, want %q", from, p.addr())
	}
}

// TestMalformedFramesAreDroppedAndCounted: bad framing never panics,
// never reaches Deliver, and is counted; good frames around it still
// arrive.
func TestMalformedFramesAreDroppedAndCounted(t *testing.T) {
	r := &seq{}
	ca := newCA(t, r)
	a := newNode(t, ca, newMember(t, ca, r))
	m := newMember(t, ca, r)
	p := newRawPeer(t, m.key)
	hello := helloFor(t, m.cert, p.addr())

	// An empty frame between good ones is skipped.
	s := p.open(t, a.Addr())
	_, _ = s.Write(frames(hello, []byte("one"), nil, []byte("two")))
	waitFor(t, "two good frames", waitLong, func() bool { return a.in.len() == 2 })
	if a.Stats().Malformed != 1 {
		t.Fatalf("Malformed = %d after an empty frame, want 1", a.Stats().Malformed)
	}

	// A length above wire.MaxMessage ends the stream.
	var big [binary.MaxVarintLen64]byte
	n := binary.PutUvarint(big[:], wire.MaxMessage+1)
	_, _ = s.Write(big[:n])
	waitFor(t, "oversized frame counted", waitLong, func() bool { return a.Stats().Malformed == 2 })

	// A length that overflows 64 bits ends the stream.
	s = p.open(t, a.Addr())
	_, _ = s.Write(append(frames(hello, []byte("three")), bytes.Repeat([]byte{0xff}, 11)...))
	waitFor(t, "overflowing length counted", waitLong, func() bool { return a.Stats().Malformed == 3 })

	// A stream that ends inside a frame.
	s = p.open(t, a.Addr())
	_, _ = s.Write(append(frames(hello, []byte("four")), 100, 'x', 'y'))
	_ = s.CloseWrite()
	waitFor(t, "truncated frame counted", waitLong, func() bool { return a.Stats().Malformed == 4 })

	// A hello that is not one is a refusal, not a malformed frame.
	s = p.open(t, a.Addr())
	_, _ = s.Write(frames([]byte{0xa1, 0x01}, []byte("five")))
	waitRefused(t, a, 1)

	if got := a.in.len(); got != 4 {
		t.Fatalf("delivered %d messages, want 4", got)
	}
	for i, want := range []string{"one", "two", "three", "four"} {
		if _, msg := a.in.get(i); string(msg) != want {
			t.Errorf("message %d = %q, want %q", i, msg, want)
		}
	}
}

// TestSilentStreamIsRefused: a stream that never presents a hello is
// refused after HelloTimeout; one that ends before its hello is just
// closed (a peer going away is no offence).
func TestSilentStreamIsRefused(t *testing.T) {
	r := &seq{}
	ca := newCA(t, r)
	a := newTunedNode(t, ca, newMember(t, ca, r), Tuning{HelloTimeout: 200 * time.Millisecond})
	p := newRawPeer(t, newMember(t, ca, r).key)

	s := p.open(t, a.Addr())
	_ = s.Close() // ends before any hello
	s = p.open(t, a.Addr())
	_, _ = s.Write([]byte{0x05, 'a'}) // part of a hello, then silence
	waitRefused(t, a, 1)
	if st := a.Stats(); st.Refused != 1 {
		t.Fatalf("Refused = %d, want 1 (the silent stream only)", st.Refused)
	}
}

func TestReliableSendFailures(t *testing.T) {
	r := &seq{}
	ca := newCA(t, r)
	a := newNode(t, ca, newMember(t, ca, r))
	gone := newNode(t, ca, newMember(t, ca, r))
	goneAddr := gone.Addr()
	if err := gone.Close(); err != nil {
		t.Fatal(err)
	}

	errs := make(chan error, 4)
	report := func(err error) { errs <- err }
	a.SendReliable(goneAddr, []byte("to the dead"), report)
	a.SendReliable("/ip4/127.0.0.1/tcp/1", []byte("no peer id"), report)
	a.SendReliable("not a multiaddr", []byte("junk"), report)
	a.SendReliable(a.Addr()+"x", []byte("bad peer id"), report)
	var got []error
	for range 4 {
		select {
		case err := <-errs:
			got = append(got, err)
		case <-time.After(waitLong):
			t.Fatalf("only %d of 4 failures reported: %v", len(got), got)
		}
	}
	bad := 0
	for _, err := range got {
		if errors.Is(err, ErrBadAddr) {
			bad++
		}
	}
	if bad != 3 {
		t.Errorf("want 3 ErrBadAddr among %v", got)
	}
	st := a.Stats()
	if st.DialFailures != 1 || st.Dropped != 4 {
		t.Errorf("stats %+v, want 1 dial failure and 4 dropped", st)
	}
	// Best-effort sends fail silently but are counted.
	a.Send(goneAddr, []byte("x"))
	waitFor(t, "dropped best-effort send", waitLong, func() bool { return a.Stats().Dropped == 5 })
}

func TestCloseFailsLaterSends(t *testing.T) {
	r := &seq{}
	ca := newCA(t, r)
	a := newNode(t, ca, newMember(t, ca, r))
	b := newNode(t, ca, newMember(t, ca, r))
	a.Send(b.Addr(), []byte("hi"))
	waitFor(t, "delivery", waitLong, func() bool { return b.in.len() == 1 })
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	if err := a.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	errs := make(chan error, 1)
	a.SendReliable(b.Addr(), []byte("after close"), func(err error) { errs <- err })
	a.Send(b.Addr(), []byte("after close"))
	select {
	case err := <-errs:
		if !errors.Is(err, ErrClosed) {
			t.Fatalf("err = %v, want ErrClosed", err)
		}
	case <-time.After(waitLong):
		t.Fatal("no failure reported after Close")
	}
}

// TestReconnectAfterPeerRestart: a peer that comes back with the same key
// at the same address is reached again on a fresh stream.
func TestReconnectAfterPeerRestart(t *testing.T) {
	r := &seq{}
	ca := newCA(t, r)
	a := newNode(t, ca, newMember(t, ca, r))
	bm := newMember(t, ca, r)
	b := newNode(t, ca, bm)
	a.Send(b.Addr(), []byte("1"))
	waitFor(t, "first delivery", waitLong, func() bool { return b.in.len() == 1 })
	addr := b.Addr()
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	listen := strings.TrimSuffix(string(addr), "/p2p/"+b.PeerID().String())
	b2 := newNode(t, ca, bm, listen)
	if b2.Addr() != addr {
		t.Fatalf("restarted at %q, want %q", b2.Addr(), addr)
	}
	// The old stream is dead; sends are retried until one lands on the
	// new incarnation (best effort may lose the first).
	waitFor(t, "delivery to the restarted peer", waitLong, func() bool {
		a.Send(addr, []byte("2"))
		return b2.in.len() > 0
	})
}

func TestNewChecksConfig(t *testing.T) {
	r := &seq{}
	ca := newCA(t, r)
	m, other := newMember(t, ca, r), newMember(t, ca, r)
	loop := newTestLoop(t)
	base := Config{
		ListenAddrs: []string{"/ip4/127.0.0.1/tcp/0"},
		Key:         m.key,
		Cert:        m.cert,
		Verifier:    identity.NewVerifier(ca.Public()),
		Post:        loop.Post,
		Deliver:     func(env.Addr, []byte) {},
	}
	for name, mod := range map[string]func(*Config){
		"cert for another key": func(c *Config) { c.Cert = other.cert },
		"other CA":             func(c *Config) { c.Verifier = identity.NewVerifier(newCA(t, r).Public()) },
		"no listen address":    func(c *Config) { c.ListenAddrs = nil },
		"bad listen address":   func(c *Config) { c.ListenAddrs = []string{"tcp:0"} },
		"no Post":              func(c *Config) { c.Post = nil },
	} {
		c := base
		mod(&c)
		if tr, err := New(c); err == nil {
			_ = tr.Close()
			t.Errorf("%s: New succeeded", name)
		}
	}
}

func TestCheckHelloUnit(t *testing.T) {
	r := &seq{}
	ca := newCA(t, r)
	v := identity.NewVerifier(ca.Public())
	m := newMember(t, ca, r)
	p := newRawPeer(t, m.key)
	addr, node, err := checkHello(v, p.h.ID(), p.h.Peerstore().PubKey(p.h.ID()), helloFor(t, m.cert, p.addr()))
	if err != nil || addr != p.addr() || node != m.cert.NodeID {
		t.Fatalf("checkHello = %q, %v, %v", addr, node, err)
	}
	// A newer revocation list voids the certificate.
	rev, err := ca.IssueRevocation(1, []identity.Serial{m.cert.Serial})
	if err != nil {
		t.Fatal(err)
	}
	v2, err := v.WithRevocation(rev.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := checkHello(v2, p.h.ID(), nil, helloFor(t, m.cert, p.addr())); !errors.Is(err, identity.ErrRevoked) {
		t.Fatalf("revoked certificate: err = %v", err)
	}
	// A hello of an unknown version.
	b := wire.MustMarshal(hello{Version: 2, Cert: m.cert.Bytes(), Addr: string(p.addr())})
	if _, _, err := checkHello(v, p.h.ID(), nil, b); !errors.Is(err, wire.ErrVersion) {
		t.Fatalf("version 2: err = %v", err)
	}
}
