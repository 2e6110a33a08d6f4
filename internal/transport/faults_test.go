package transport

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/epost-mail/epost/internal/env"
	"github.com/epost-mail/epost/internal/identity"
)

// newFaultyNode is newNode with a Faults hook; post, if not nil, replaces
// the test loop as Config.Post.
func newFaultyNode(t *testing.T, ca *identity.CA, m member, f *Faults, post func(func())) *node {
	t.Helper()
	n := &node{in: &inbox{}, loop: newTestLoop(t), m: m}
	if post == nil {
		post = n.loop.Post
	}
	tr, err := New(Config{
		ListenAddrs: []string{"/ip4/127.0.0.1/tcp/0"},
		Key:         m.key,
		Cert:        m.cert,
		Verifier:    identity.NewVerifier(ca.Public()),
		Post:        post,
		Deliver:     n.in.deliver,
		Log:         testLog(t),
		Faults:      f,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := tr.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	n.Transport = tr
	return n
}

// messages returns what the inbox holds, as strings, in order.
func (b *inbox) messages() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []string
	for _, m := range b.msgs {
		out = append(out, string(m))
	}
	return out
}

// TestFaultsCutLinkBothWays: blocking b at a alone cuts the link in both
// directions (a sends nothing to b and discards what b sends), leaves a's
// link to c alone, and unblocking restores it on the same connection.
func TestFaultsCutLinkBothWays(t *testing.T) {
	r := &seq{}
	ca := newCA(t, r)
	fa := &Faults{}
	a := newFaultyNode(t, ca, newMember(t, ca, r), fa, nil)
	b := newNode(t, ca, newMember(t, ca, r))
	c := newNode(t, ca, newMember(t, ca, r))

	// Connect first, so the block meets open streams in both directions.
	a.Send(b.Addr(), []byte("before"))
	b.Send(a.Addr(), []byte("before"))
	waitFor(t, "first contact", waitLong, func() bool { return a.in.len() == 1 && b.in.len() == 1 })

	fa.Block(b.Addr())
	if !fa.Blocked(b.Addr()) || fa.Blocked(c.Addr()) {
		t.Fatalf("Blocked(b) = %v, Blocked(c) = %v", fa.Blocked(b.Addr()), fa.Blocked(c.Addr()))
	}
	const n = 10
	for i := range n {
		a.Send(b.Addr(), []byte(fmt.Sprintf("a->b %d", i)))
		b.Send(a.Addr(), []byte(fmt.Sprintf("b->a %d", i)))
		a.Send(c.Addr(), []byte(fmt.Sprintf("a->c %d", i)))
	}
	waitFor(t, "c to receive from a", waitLong, func() bool { return c.in.len() == n })
	// b's frames travel on a stream a already accepted: wait until a has
	// read and discarded all of them, so that none is still in flight when
	// the block is lifted.
	waitFor(t, "a to discard b's frames", waitLong, func() bool { return a.Stats().Blocked == 2*n })
	if got := fa.Dropped(); got != 2*n {
		t.Errorf("Faults.Dropped = %d, want %d", got, 2*n)
	}

	fa.Unblock(b.Addr())
	a.Send(b.Addr(), []byte("after"))
	b.Send(a.Addr(), []byte("after"))
	waitFor(t, "traffic after unblocking", waitLong, func() bool { return a.in.len() == 2 && b.in.len() == 2 })
	// Each direction is one ordered stream, so "after" arriving next to
	// "before" shows nothing sent during the block got through.
	for name, in := range map[string]*inbox{"a": a.in, "b": b.in} {
		if got := strings.Join(in.messages(), ","); got != "before,after" {
			t.Errorf("%s received %q, want %q", name, got, "before,after")
		}
	}
	st := a.Stats()
	if st.Dropped != 0 || st.Refused != 0 || st.DialFailures != 0 {
		t.Errorf("a block is not a failure of the transport: %+v", st)
	}
	if st.StreamsOpened != 2 {
		t.Errorf("a opened %d streams, want 2 (b's survives the block)", st.StreamsOpened)
	}
}

// TestFaultsFailReliableSendsThroughPost: a reliable send to a blocked
// peer fails with ErrBlocked, reported through Post and never on the
// caller's stack, as a real unreachable peer's failure is.
func TestFaultsFailReliableSendsThroughPost(t *testing.T) {
	r := &seq{}
	ca := newCA(t, r)
	var mu sync.Mutex
	var posted []func()
	post := func(f func()) {
		mu.Lock()
		posted = append(posted, f)
		mu.Unlock()
	}
	fa := &Faults{}
	a := newFaultyNode(t, ca, newMember(t, ca, r), fa, post)
	b := newNode(t, ca, newMember(t, ca, r))
	fa.Block(b.Addr())

	var got []error
	a.SendReliable(b.Addr(), []byte("lost"), func(err error) { got = append(got, err) })
	a.Send(b.Addr(), []byte("lost quietly"))
	if len(got) != 0 {
		t.Fatal("the failure was reported on the caller's stack")
	}
	mu.Lock()
	fs := posted
	posted = nil
	mu.Unlock()
	for _, f := range fs {
		f()
	}
	if len(got) != 1 || !errors.Is(got[0], ErrBlocked) {
		t.Fatalf("reported %v, want one ErrBlocked", got)
	}
	if st := a.Stats(); st.Blocked != 2 || st.Dropped != 0 || st.StreamsOpened != 0 {
		t.Errorf("stats %+v: want 2 blocked, nothing dropped, no stream opened", st)
	}
	if b.in.len() != 0 {
		t.Errorf("b received %d messages through a block", b.in.len())
	}
}

// TestFaultsMatchPeerNotAddress: a block names a peer, whatever address
// it is reached at; a nil or zero Faults blocks nothing.
func TestFaultsMatchPeerNotAddress(t *testing.T) {
	const pid = "12D3KooWGzxzKZYveHXtpG6AsrUJBcWxHBFS2HsEoGTxrMLvKXtf"
	var nilFaults *Faults
	if nilFaults.Blocked("/ip4/127.0.0.1/tcp/1/p2p/"+pid) || nilFaults.Dropped() != 0 {
		t.Fatal("a nil Faults blocks")
	}
	f := &Faults{}
	if f.Blocked("/ip4/127.0.0.1/tcp/1/p2p/" + pid) {
		t.Fatal("a zero Faults blocks")
	}
	f.Block("/ip4/127.0.0.1/tcp/1/p2p/"+pid, "/ip4/127.0.0.1/tcp/2")
	for _, a := range []env.Addr{"/ip4/127.0.0.1/tcp/1/p2p/" + pid, "/ip4/10.0.0.1/udp/9/quic-v1/p2p/" + pid} {
		if !f.Blocked(a) {
			t.Errorf("%s not blocked", a)
		}
	}
	if f.Blocked("/ip4/127.0.0.1/tcp/2") || f.Blocked("") {
		t.Error("an address without a peer ID is blocked")
	}
	f.UnblockAll()
	if f.Blocked("/ip4/127.0.0.1/tcp/1/p2p/" + pid) {
		t.Error("still blocked after UnblockAll")
	}
}

// TestFaultsConcurrentUse: blocks may change while sends run (the race
// detector checks it).
func TestFaultsConcurrentUse(t *testing.T) {
	r := &seq{}
	ca := newCA(t, r)
	fa := &Faults{}
	a := newFaultyNode(t, ca, newMember(t, ca, r), fa, nil)
	b := newNode(t, ca, newMember(t, ca, r))
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		for range 200 {
			fa.Block(b.Addr())
			fa.Unblock(b.Addr())
		}
	}()
	go func() {
		defer wg.Done()
		for i := range 200 {
			a.Send(b.Addr(), []byte(fmt.Sprint(i)))
		}
	}()
	wg.Wait()
	waitFor(t, "every message delivered or blocked", waitLong, func() bool {
		return uint64(b.in.len())+a.Stats().Blocked == 200
	})
}
