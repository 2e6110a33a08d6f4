package transport

import (
	"bufio"
	"context"
	"log/slog"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peerstore"
	"github.com/libp2p/go-libp2p/p2p/muxer/yamux"
	"github.com/libp2p/go-libp2p/p2p/security/noise"
	"github.com/libp2p/go-libp2p/p2p/transport/tcp"

	"github.com/epost-mail/epost/internal/env"
	"github.com/epost-mail/epost/internal/identity"
)

// waitFor polls cond until it holds or the deadline passes. Tests
// synchronise on conditions, never on sleeps.
func waitFor(t testing.TB, what string, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// testLoop is a minimal event loop: one goroutine running posted funcs in
// order. (internal/node has the real one; importing it here would be a
// cycle.)
type testLoop struct {
	mu      sync.Mutex
	cond    *sync.Cond
	q       []func()
	stopped bool
	done    chan struct{}
}

func newTestLoop(t testing.TB) *testLoop {
	l := &testLoop{done: make(chan struct{})}
	l.cond = sync.NewCond(&l.mu)
	go func() {
		defer close(l.done)
		for {
			l.mu.Lock()
			for len(l.q) == 0 && !l.stopped {
				l.cond.Wait()
			}
			if l.stopped {
				l.mu.Unlock()
				return
			}
			q := l.q
			l.q = nil
			l.mu.Unlock()
			for _, f := range q {
				f()
			}
		}
	}()
	t.Cleanup(func() {
		l.mu.Lock()
		l.stopped = true
		l.mu.Unlock()
		l.cond.Signal()
		<-l.done
	})
	return l
}

func (l *testLoop) Post(f func()) {
	l.mu.Lock()
	if !l.stopped {
		l.q = append(l.q, f)
	}
	l.mu.Unlock()
	l.cond.Signal()
}

// inbox records what a transport delivered. Deliver runs on the loop;
// the test reads under the mutex.
type inbox struct {
	mu   sync.Mutex
	from []env.Addr
	msgs [][]byte
}

func (b *inbox) deliver(from env.Addr, msg []byte) {
	b.mu.Lock()
	b.from = append(b.from, from)
	b.msgs = append(b.msgs, msg)
	b.mu.Unlock()
}

func (b *inbox) len() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.msgs)
}

func (b *inbox) get(i int) (env.Addr, []byte) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.from[i], b.msgs[i]
}

// seq is a deterministic byte source for keys and certificates.
type seq struct{ n byte }

func (s *seq) Read(p []byte) (int, error) {
	for i := range p {
		s.n++
		p[i] = s.n*31 + byte(i)
	}
	return len(p), nil
}

type member struct {
	key  identity.NodeKey
	cert *identity.NodeCert
}

func newCA(t testing.TB, r *seq) *identity.CA {
	t.Helper()
	ca, err := identity.NewCA(r)
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

func newMember(t testing.TB, ca *identity.CA, r *seq) member {
	t.Helper()
	k, err := identity.GenerateNodeKey(r)
	if err != nil {
		t.Fatal(err)
	}
	c, err := ca.IssueNode(r, k.Public())
	if err != nil {
		t.Fatal(err)
	}
	return member{k, c}
}

func testLog(t testing.TB) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return env.Discard
}

// node is a Transport under test with its loop and inbox.
type node struct {
	*Transport
	in   *inbox
	loop *testLoop
	m    member
}

func newNode(t testing.TB, ca *identity.CA, m member, listen ...string) *node {
	t.Helper()
	return newTunedNode(t, ca, m, Tuning{}, listen...)
}

func newTunedNode(t testing.TB, ca *identity.CA, m member, tune Tuning, listen ...string) *node {
	t.Helper()
	if len(listen) == 0 {
		listen = []string{"/ip4/127.0.0.1/tcp/0"}
	}
	return newConfiguredNode(t, ca, m, func(c *Config) { c.ListenAddrs, c.Tuning = listen, tune })
}

// newConfiguredNode is a node whose Config tweak adjusts before it starts.
func newConfiguredNode(t testing.TB, ca *identity.CA, m member, tweak func(*Config)) *node {
	t.Helper()
	n := &node{in: &inbox{}, loop: newTestLoop(t), m: m}
	cfg := Config{
		ListenAddrs: []string{"/ip4/127.0.0.1/tcp/0"},
		Key:         m.key,
		Cert:        m.cert,
		Verifier:    identity.NewVerifier(ca.Public()),
		Post:        n.loop.Post,
		Deliver:     n.in.deliver,
		Log:         testLog(t),
	}
	tweak(&cfg)
	tr, err := New(cfg)
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

// rawPeer is a bare libp2p host that speaks ProtocolID by hand, to send
// what an honest Transport never would.
type rawPeer struct {
	h host.Host
}

func newRawPeer(t testing.TB, key identity.NodeKey) *rawPeer {
	t.Helper()
	priv, err := crypto.UnmarshalEd25519PrivateKey(key.Ed25519())
	if err != nil {
		t.Fatal(err)
	}
	h, err := libp2p.New(
		libp2p.Identity(priv),
		libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"),
		libp2p.Transport(tcp.NewTCPTransport),
		libp2p.Security(noise.ID, noise.New),
		libp2p.Muxer(yamux.ID, yamux.DefaultTransport),
		libp2p.DisableMetrics(),
	)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = h.Close() })
	return &rawPeer{h: h}
}

// addr is the raw peer's canonical address.
func (r *rawPeer) addr() env.Addr {
	return env.Addr(r.h.Addrs()[0].String() + "/p2p/" + r.h.ID().String())
}

// open opens a ProtocolID stream to the transport at to.
func (r *rawPeer) open(t testing.TB, to env.Addr) network.Stream {
	t.Helper()
	pid, tpt, err := parseAddr(to)
	if err != nil {
		t.Fatal(err)
	}
	r.h.Peerstore().AddAddr(pid, tpt, peerstore.TempAddrTTL)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := r.h.NewStream(ctx, pid, ProtocolID)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// waitDisconnected waits until the raw peer has no connection to the
// transport at to: after a refusal, which closes the connection, a new
// stream must not land on the dying one.
func (r *rawPeer) waitDisconnected(t testing.TB, to env.Addr) {
	t.Helper()
	pid, _, err := parseAddr(to)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the refused connection to close", 10*time.Second, func() bool {
		return len(r.h.Network().ConnsToPeer(pid)) == 0
	})
}

// frames encodes msgs as length-prefixed frames.
func frames(msgs ...[]byte) []byte {
	var out []byte
	w := bufio.NewWriter(writerFunc(func(p []byte) (int, error) {
		out = append(out, p...)
		return len(p), nil
	}))
	for _, m := range msgs {
		_ = writeFrame(w, m)
	}
	_ = w.Flush()
	return out
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }
