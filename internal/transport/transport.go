package transport

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	"github.com/libp2p/go-libp2p/p2p/muxer/yamux"
	relayclient "github.com/libp2p/go-libp2p/p2p/protocol/circuitv2/client"
	relayv2 "github.com/libp2p/go-libp2p/p2p/protocol/circuitv2/relay"
	"github.com/libp2p/go-libp2p/p2p/security/noise"
	libp2pquic "github.com/libp2p/go-libp2p/p2p/transport/quic"
	"github.com/libp2p/go-libp2p/p2p/transport/tcp"
	ma "github.com/multiformats/go-multiaddr"
	manet "github.com/multiformats/go-multiaddr/net"

	"github.com/epost-mail/epost/internal/env"
	"github.com/epost-mail/epost/internal/id"
	"github.com/epost-mail/epost/internal/identity"
	"github.com/epost-mail/epost/internal/wire"
)

// ProtocolID is the libp2p protocol that carries overlay frames. Its
// version changes only when the framing or the hello changes.
const ProtocolID protocol.ID = "/epost/overlay/1.0.0"

// Errors reported to SendReliable callbacks and returned by New; callers
// match them with errors.Is.
var (
	// ErrClosed: the transport was closed.
	ErrClosed = errors.New("transport: closed")
	// ErrQueueFull: the destination's send queue is full (the peer or the
	// link is slower than the traffic).
	ErrQueueFull = errors.New("transport: send queue full")
	// ErrBadAddr: an address is not a canonical multiaddr ending in
	// /p2p/<peer ID> with a transport part.
	ErrBadAddr = errors.New("transport: bad address")
	// ErrTooLarge: a message exceeds wire.MaxMessage.
	ErrTooLarge = errors.New("transport: message too large")
)

// Tuning holds the transport's limits and timeouts. Zero fields take the
// values of DefaultTuning.
type Tuning struct {
	// DialTimeout bounds connecting to a peer and opening a stream.
	DialTimeout time.Duration
	// WriteTimeout bounds one flush of queued frames to a stream; a peer
	// that does not drain its stream for this long is treated as failed.
	WriteTimeout time.Duration
	// HelloTimeout bounds how long an inbound stream may take to present
	// its hello.
	HelloTimeout time.Duration
	// IdleTimeout closes an outbound stream (and stops its writer and
	// watcher goroutines) after this long without traffic.
	IdleTimeout time.Duration
	// QueueLen is the number of messages that may wait for one
	// destination's writer.
	QueueLen int
	// MaxInflight bounds received messages handed to Post but not yet run;
	// at the bound readers stop reading, which pushes back on senders
	// through the stream's flow control instead of growing memory.
	MaxInflight int
}

// DefaultTuning returns the limits for a real node.
func DefaultTuning() Tuning {
	return Tuning{
		DialTimeout:  10 * time.Second, // the overlay's probes retry on their own
		WriteTimeout: 10 * time.Second, // far above a sane RTT; only a stuck peer hits it
		HelloTimeout: 10 * time.Second,
		// Longer than the overlay's routing-table probe period (15 min), so
		// the streams to table entries stay open between probes: reopening
		// costs the first message a round trip or, with the connection
		// gone too, a dial, and the overlay's per-hop timeouts are derived
		// from round trips measured on open streams.
		IdleTimeout: 20 * time.Minute,
		QueueLen:    1024, // bursts of routed messages to one next hop
		MaxInflight: 4096,
	}
}

func (t Tuning) withDefaults() Tuning {
	d := DefaultTuning()
	if t.DialTimeout <= 0 {
		t.DialTimeout = d.DialTimeout
	}
	if t.WriteTimeout <= 0 {
		t.WriteTimeout = d.WriteTimeout
	}
	if t.HelloTimeout <= 0 {
		t.HelloTimeout = d.HelloTimeout
	}
	if t.IdleTimeout <= 0 {
		t.IdleTimeout = d.IdleTimeout
	}
	if t.QueueLen <= 0 {
		t.QueueLen = d.QueueLen
	}
	if t.MaxInflight <= 0 {
		t.MaxInflight = d.MaxInflight
	}
	return t
}

// Config is what New needs. Key, Cert, Verifier, Post and Deliver are
// required.
type Config struct {
	// ListenAddrs are the multiaddrs to listen on, without /p2p/, for
	// example "/ip4/0.0.0.0/tcp/4001" and "/ip4/0.0.0.0/udp/4001/quic-v1".
	// Port 0 picks a free port. At least one is required.
	ListenAddrs []string
	// Advertise, when set, is the multiaddr (without /p2p/) other nodes
	// reach this node at, for a node behind a port mapping. By default it
	// is the first listen address as bound; an unspecified IP (0.0.0.0)
	// is replaced by one of the host's interface addresses.
	Advertise string
	// Key is the node's key; it is also the libp2p identity.
	Key identity.NodeKey
	// Cert is the node's certificate, presented in every hello. It must be
	// for Key.
	Cert *identity.NodeCert
	// Verifier checks the certificates peers present. SetVerifier swaps in
	// a newer one (a new revocation epoch).
	Verifier *identity.Verifier
	// Post runs f on the node's event loop. It must not block and must not
	// run f on the calling goroutine; after the loop stops it may drop f.
	Post func(f func())
	// Deliver receives every authenticated message, through Post. The
	// slice is the receiver's to keep.
	Deliver func(from env.Addr, msg []byte)
	// Log receives the transport's records; nil discards them.
	Log *slog.Logger
	// Tuning holds limits and timeouts.
	Tuning Tuning
	// Options are extra libp2p options appended after the transport's own
	// (for example libp2p.NATPortMap(), libp2p.EnableHolePunching()).
	Options []libp2p.Option
	// Faults, when set, cuts links to chosen peers: for tests and fault
	// drills only, never on a production node.
	Faults *Faults
	// OnRevocation, if set, hears (through Post) of every newer
	// revocation list a peer's hello brought and the verifier adopted,
	// for the node to keep.
	OnRevocation func(list []byte)
	// RelayService makes this node a circuit relay (libp2p circuit v2)
	// for community members that cannot be reached directly: it grants
	// reservations only to peers that have shown a valid node certificate,
	// with limits far above libp2p's defaults (which cut a relayed
	// connection after 2 minutes and 128 KiB).
	RelayService bool
	// Relays are relay nodes' full addresses (with /p2p/) this node keeps
	// a reservation on, so that others reach it through them: for a node
	// behind NAT, whose Advertise is then the first relay's address
	// followed by /p2p-circuit. ListenAddrs may be empty for such a node.
	Relays []string
}

// Relayed connection limits for members: generous, but still bounded.
const (
	relayDuration = 24 * time.Hour
	relayData     = 1 << 30
)

// Stats counts the transport's work. Hellos are not counted as messages.
type Stats struct {
	MsgsSent      uint64 // messages flushed to a stream the peer accepted
	BytesSent     uint64 // payload bytes of MsgsSent
	MsgsReceived  uint64 // messages read from authenticated streams
	BytesReceived uint64 // payload bytes of MsgsReceived
	StreamsOpened uint64 // outbound streams opened (one per destination while in use)
	DialFailures  uint64 // streams that could not be opened (dial, security, protocol) or whose hello the peer refused
	WriteFailures uint64 // flushes that failed on an open stream
	Dropped       uint64 // messages not sent: queue full, bad address, dial or write failure, closed
	Refused       uint64 // inbound streams refused: bad hello or certificate, key or address mismatch
	Malformed     uint64 // inbound frames dropped: empty, oversized or truncated
	Blocked       uint64 // messages to or from a peer Config.Faults blocks, discarded (not in Dropped)
	Reservations  uint64 // relay reservations made or renewed (Config.Relays)
	// ReservationsRefused counts reservation attempts that failed.
	ReservationsRefused uint64
}

// counters are the live Stats, updated from many goroutines.
type counters struct {
	msgsSent, bytesSent, msgsReceived, bytesReceived    atomic.Uint64
	streamsOpened, dialFailures, writeFailures, dropped atomic.Uint64
	refused, malformed, blocked                         atomic.Uint64
	reservations, reservationsRefused                   atomic.Uint64
}

// authEntry is what a verified hello established about a peer.
type authEntry struct {
	addr env.Addr
	node id.NodeID
	cert []byte // the certificate its hello showed, re-checked when a revocation arrives
}

// Transport is a libp2p host speaking ProtocolID. It implements
// env.Transport; its methods are safe for concurrent use.
type Transport struct {
	cfg      Config
	tune     Tuning
	log      *slog.Logger
	host     host.Host
	self     env.Addr
	selfID   peer.ID
	hello    atomic.Pointer[[]byte] // this node's encoded hello, written first on every stream
	verifier atomic.Pointer[identity.Verifier]
	ctx      context.Context // cancelled by Close
	cancel   context.CancelFunc
	inflight chan struct{} // a token per delivered message not yet run
	wg       sync.WaitGroup
	stats    counters

	mu     sync.Mutex
	closed bool
	peers  map[env.Addr]*outPeer

	authMu sync.RWMutex
	// auth maps the /p2p/ suffix of a peer's address (its peer ID) to what
	// its latest verified hello said. Keyed by peer, not by address, so a
	// member cannot grow it by claiming many addresses; bounded by the
	// number of certified keys that ever connected.
	auth map[string]authEntry
}

var _ env.Transport = (*Transport)(nil)

// New starts a libp2p host listening on cfg.ListenAddrs and serving
// ProtocolID.
func New(cfg Config) (*Transport, error) {
	if cfg.Cert == nil || cfg.Verifier == nil || cfg.Post == nil || cfg.Deliver == nil {
		return nil, errors.New("transport: config needs Cert, Verifier, Post and Deliver")
	}
	if len(cfg.ListenAddrs) == 0 && (len(cfg.Relays) == 0 || cfg.Advertise == "") {
		return nil, errors.New("transport: config needs a listen address, or relays and an advertised address through one")
	}
	var relays []peer.AddrInfo
	for _, r := range cfg.Relays {
		ai, err := peer.AddrInfoFromString(r)
		if err != nil {
			return nil, fmt.Errorf("transport: relay %q: %w", r, err)
		}
		relays = append(relays, *ai)
	}
	if !cfg.Cert.Matches(cfg.Key) {
		return nil, fmt.Errorf("transport: node certificate: %w", identity.ErrKeyMismatch)
	}
	// Refuse our own certificate early if the CA would: peers will.
	if _, err := cfg.Verifier.VerifyNode(cfg.Cert.Bytes()); err != nil {
		return nil, fmt.Errorf("transport: own node certificate: %w", err)
	}
	priv, err := crypto.UnmarshalEd25519PrivateKey(cfg.Key.Ed25519())
	if err != nil {
		return nil, fmt.Errorf("transport: node key as libp2p identity: %w", err)
	}
	listen := make([]ma.Multiaddr, 0, len(cfg.ListenAddrs))
	for _, s := range cfg.ListenAddrs {
		m, err := ma.NewMultiaddr(s)
		if err != nil {
			return nil, fmt.Errorf("transport: listen address %q: %w", s, err)
		}
		listen = append(listen, m)
	}
	var tp *Transport // for the relay's admission control, set below
	opts := []libp2p.Option{
		libp2p.Identity(priv),
		libp2p.ListenAddrs(listen...),
		// Without port reuse each dial gets its own source port. With it,
		// two nodes dialling each other at the same moment (a heartbeat
		// crossing a join reply) make one TCP simultaneous open in which
		// both sides start the Noise handshake as initiator and both dials
		// fail. Hole punching still works over QUIC, which needs no port
		// reuse.
		libp2p.Transport(tcp.NewTCPTransport, tcp.DisableReuseport()),
		libp2p.Transport(libp2pquic.NewTransport),
		libp2p.Security(noise.ID, noise.New),
		libp2p.Muxer(yamux.ID, yamux.DefaultTransport),
		// The circuit-relay client: dials through relays and accepts
		// connections relayed to this node.
		libp2p.EnableRelay(),
		// libp2p's metrics register with the global Prometheus registry;
		// the node exports Stats instead, and tests run many hosts.
		libp2p.DisableMetrics(),
	}
	if len(listen) == 0 {
		opts = append(opts, libp2p.NoListenAddrs)
	}
	if cfg.RelayService {
		res := relayv2.DefaultResources()
		res.Limit = &relayv2.RelayLimit{Duration: relayDuration, Data: relayData}
		opts = append(opts, libp2p.EnableRelayService(relayv2.WithResources(res), relayv2.WithACL(memberACL{func() *Transport { return tp }})),
			// libp2p starts a relay only once AutoNAT finds the host public;
			// a node configured as the community's relay is taken at its word.
			libp2p.ForceReachabilityPublic())
	}
	opts = append(opts, cfg.Options...)
	h, err := libp2p.New(opts...)
	if err != nil {
		return nil, fmt.Errorf("transport: start libp2p host: %w", err)
	}
	t := &Transport{
		cfg:    cfg,
		tune:   cfg.Tuning.withDefaults(),
		log:    cfg.Log,
		host:   h,
		selfID: h.ID(),
		peers:  map[env.Addr]*outPeer{},
		auth:   map[string]authEntry{},
	}
	if t.log == nil {
		t.log = env.Discard
	}
	t.inflight = make(chan struct{}, t.tune.MaxInflight)
	t.verifier.Store(cfg.Verifier)
	t.ctx, t.cancel = context.WithCancel(context.Background())
	self, err := t.resolveSelf()
	if err != nil {
		_ = h.Close()
		return nil, err
	}
	t.self = self
	if err := t.refreshHello(); err != nil {
		_ = h.Close()
		return nil, err
	}
	t.auth[peerPart(self)] = authEntry{addr: self, node: cfg.Cert.NodeID}
	tp = t
	h.SetStreamHandler(ProtocolID, t.handleStream)
	for _, r := range relays {
		t.wg.Add(1)
		go t.keepReservation(r)
	}
	return t, nil
}

// refreshHello encodes this node's hello with the newest revocation list
// its verifier holds.
func (t *Transport) refreshHello() error {
	var rev []byte
	if r := t.verifier.Load().Revocation(); r != nil {
		rev = r.Bytes()
	}
	b, err := encodeHello(t.cfg.Cert, t.self, rev)
	if err != nil {
		return err
	}
	t.hello.Store(&b)
	return nil
}

// RevocationChanged is called after the verifier adopted a newer
// revocation list: the hello passes it on from now, and peers whose
// certificates it revokes are disconnected.
func (t *Transport) RevocationChanged() {
	if err := t.refreshHello(); err != nil {
		t.log.Error("transport: hello with the new revocation list", "err", err)
	}
	v := t.verifier.Load()
	var gone []string
	t.authMu.Lock()
	for p, e := range t.auth {
		if e.cert == nil {
			continue
		}
		if _, err := v.VerifyNode(e.cert); err != nil {
			gone = append(gone, p)
			delete(t.auth, p)
		}
	}
	t.authMu.Unlock()
	for _, p := range gone {
		if pid, err := peer.Decode(p); err == nil {
			t.log.Warn("disconnecting a revoked peer", "peer", p)
			_ = t.host.Network().ClosePeer(pid)
		}
	}
}

// memberACL admits relay reservations only from peers that have shown a
// valid node certificate in a hello; anyone may connect through the relay
// to a member that holds a reservation (the member checks their hello).
type memberACL struct{ t func() *Transport }

func (a memberACL) AllowReserve(p peer.ID, _ ma.Multiaddr) bool {
	t := a.t()
	if t == nil {
		return false
	}
	t.authMu.Lock()
	defer t.authMu.Unlock()
	_, ok := t.auth[p.String()]
	return ok
}

func (a memberACL) AllowConnect(peer.ID, ma.Multiaddr, peer.ID) bool { return true }

// keepReservation holds a reservation on a relay while the transport
// runs: it announces this node to the relay with a hello first (the
// relay admits only members), then reserves and renews before expiry,
// retrying on failure.
func (t *Transport) keepReservation(ai peer.AddrInfo) {
	defer t.wg.Done()
	relayAddr := env.Addr(ai.Addrs[0].Encapsulate(ma.StringCast("/p2p/" + ai.ID.String())).String())
	wait := time.Duration(0)
	for {
		select {
		case <-t.ctx.Done():
			return
		case <-time.After(wait):
		}
		// A stream with a hello and no message: the relay learns that this
		// peer is a member.
		t.enqueue(relayAddr, nil, nil)
		ctx, cancel := context.WithTimeout(t.ctx, t.tune.DialTimeout)
		res, err := relayclient.Reserve(ctx, t.host, ai)
		cancel()
		if err != nil {
			t.stats.reservationsRefused.Add(1)
			t.log.Debug("relay reservation failed", "relay", string(relayAddr), "err", err)
			wait = 2 * time.Second
			continue
		}
		t.stats.reservations.Add(1)
		wait = max(time.Until(res.Expiration)-time.Minute, time.Second)
	}
}

// resolveSelf computes this node's canonical address.
func (t *Transport) resolveSelf() (env.Addr, error) {
	p2p, err := ma.NewComponent("p2p", t.selfID.String())
	if err != nil {
		return "", fmt.Errorf("transport: own peer id: %w", err)
	}
	if t.cfg.Advertise != "" {
		m, err := ma.NewMultiaddr(t.cfg.Advertise)
		if err != nil {
			return "", fmt.Errorf("transport: advertise address %q: %w", t.cfg.Advertise, err)
		}
		return env.Addr(m.Encapsulate(p2p).String()), nil
	}
	want, _ := ma.NewMultiaddr(t.cfg.ListenAddrs[0]) // parsed once already in New
	var bound ma.Multiaddr
	for _, la := range t.host.Network().ListenAddresses() {
		if sameListener(want, la) {
			bound = la
			break
		}
	}
	if bound == nil {
		return "", fmt.Errorf("transport: no listener bound for %s", want)
	}
	if ip, err := manet.ToIP(bound); err == nil && ip.IsUnspecified() {
		// A wildcard listener is reachable at each interface address;
		// prefer one other machines can reach.
		var loop ma.Multiaddr
		for _, a := range t.host.Addrs() {
			if !sameShape(bound, a) {
				continue
			}
			if manet.IsIPLoopback(a) {
				if loop == nil {
					loop = a
				}
				continue
			}
			bound = a
			loop = nil
			break
		}
		if loop != nil {
			bound = loop
		}
	}
	return env.Addr(bound.Encapsulate(p2p).String()), nil
}

// sameListener reports whether bound is the listener configured as want:
// the same protocols and values, except that a configured port 0 matches
// any port.
func sameListener(want, bound ma.Multiaddr) bool {
	if len(want) != len(bound) {
		return false
	}
	for i := range want {
		w, b := want[i], bound[i]
		if w.Code() != b.Code() {
			return false
		}
		if w.Value() == b.Value() {
			continue
		}
		if (w.Code() == ma.P_TCP || w.Code() == ma.P_UDP) && w.Value() == "0" {
			continue
		}
		return false
	}
	return true
}

// sameShape reports whether a has the protocols of b and b's ports, that
// is whether a is b's wildcard listener seen at one interface.
func sameShape(b, a ma.Multiaddr) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].Code() != b[i].Code() {
			return false
		}
		if (a[i].Code() == ma.P_TCP || a[i].Code() == ma.P_UDP) && a[i].Value() != b[i].Value() {
			return false
		}
	}
	return true
}

// Addr is this node's canonical address, the one it presents in hellos.
func (t *Transport) Addr() env.Addr { return t.self }

// PeerID is this node's libp2p peer ID.
func (t *Transport) PeerID() peer.ID { return t.selfID }

// ListenAddrs returns every address the host listens on, each with /p2p/
// appended, for display.
func (t *Transport) ListenAddrs() []env.Addr {
	p2p, err := ma.NewComponent("p2p", t.selfID.String())
	if err != nil {
		return nil
	}
	var out []env.Addr
	for _, a := range t.host.Addrs() {
		out = append(out, env.Addr(a.Encapsulate(p2p).String()))
	}
	return out
}

// SetVerifier swaps in v (normally the same CA at a newer revocation
// epoch) for hellos that arrive from now on. Streams already accepted stay
// open.
func (t *Transport) SetVerifier(v *identity.Verifier) { t.verifier.Store(v) }

// Authenticate reports whether a verified hello from the peer at from
// bound it to claimed: the overlay's Authenticate hook. It holds for
// messages the transport delivered from an honest peer, and fails for an
// address the transport never authenticated, or one the peer's latest
// hello did not claim.
func (t *Transport) Authenticate(from env.Addr, claimed id.NodeID) bool {
	t.authMu.RLock()
	e, ok := t.auth[peerPart(from)]
	t.authMu.RUnlock()
	return ok && e.addr == from && e.node == claimed
}

// NodeID returns the NodeID certified for the peer at from, if a verified
// hello from it arrived.
func (t *Transport) NodeID(from env.Addr) (id.NodeID, bool) {
	t.authMu.RLock()
	e, ok := t.auth[peerPart(from)]
	t.authMu.RUnlock()
	if !ok || e.addr != from {
		return id.NodeID{}, false
	}
	return e.node, true
}

// peerPart returns the peer-ID text after the last "/p2p/" of a, or "" if
// there is none. Addresses in the auth table are canonical, so comparing
// this text is comparing peer IDs.
func peerPart(a env.Addr) string {
	i := strings.LastIndex(string(a), "/p2p/")
	if i < 0 {
		return ""
	}
	return string(a[i+len("/p2p/"):])
}

// parseAddr checks that a is a canonical multiaddr with a transport part
// and a final /p2p/ component, and splits it.
func parseAddr(a env.Addr) (peer.ID, ma.Multiaddr, error) {
	m, err := ma.NewMultiaddr(string(a))
	if err != nil {
		return "", nil, fmt.Errorf("%w: %q: %v", ErrBadAddr, a, err)
	}
	if m.String() != string(a) {
		return "", nil, fmt.Errorf("%w: %q is not in canonical form (%s)", ErrBadAddr, a, m)
	}
	tpt, pid := peer.SplitAddr(m)
	if pid == "" || len(tpt) == 0 {
		return "", nil, fmt.Errorf("%w: %q needs a transport address and /p2p/<peer ID>", ErrBadAddr, a)
	}
	return pid, tpt, nil
}

// Send queues msg for to, best effort: failures are counted, not
// reported. msg must not be modified afterwards.
func (t *Transport) Send(to env.Addr, msg []byte) { t.enqueue(to, msg, nil) }

// SendReliable queues msg for to, in order with other messages to to;
// if the stream cannot be opened or written, or the peer refuses this
// node's hello, failed (if not nil) runs on the event loop with the
// reason. Messages written to a stream the peer had accepted, before the
// stream broke, may still be lost unreported: the protocol above
// acknowledges what it needs.
func (t *Transport) SendReliable(to env.Addr, msg []byte, failed func(error)) {
	if failed == nil {
		failed = func(error) {}
	}
	t.enqueue(to, msg, failed)
}

// frame is a queued outbound message.
type frame struct {
	msg    []byte
	failed func(error) // nil for best effort
}

func (t *Transport) enqueue(to env.Addr, msg []byte, failed func(error)) {
	if len(msg) > wire.MaxMessage {
		t.fail(frame{msg, failed}, fmt.Errorf("%w: %d bytes to %s", ErrTooLarge, len(msg), to))
		return
	}
	if to == t.self {
		// The overlay may address itself; libp2p cannot dial itself.
		t.stats.msgsSent.Add(1)
		t.stats.bytesSent.Add(uint64(len(msg)))
		t.stats.msgsReceived.Add(1)
		t.stats.bytesReceived.Add(uint64(len(msg)))
		self := t.self
		t.cfg.Post(func() { t.cfg.Deliver(self, msg) })
		return
	}
	if t.cfg.Faults.drop(to) {
		t.stats.blocked.Add(1)
		if failed != nil {
			// Through Post, as a real unreachable peer's failure arrives:
			// never on the caller's stack.
			err := fmt.Errorf("%w: to %s", ErrBlocked, to)
			t.cfg.Post(func() { failed(err) })
		}
		return
	}
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		t.fail(frame{msg, failed}, ErrClosed)
		return
	}
	p := t.peers[to]
	if p == nil {
		pid, tpt, err := parseAddr(to)
		if err == nil && pid == t.selfID {
			err = fmt.Errorf("%w: %q names this node at another address", ErrBadAddr, to)
		}
		if err != nil {
			t.mu.Unlock()
			t.fail(frame{msg, failed}, fmt.Errorf("transport: send: %w", err))
			return
		}
		p = &outPeer{t: t, addr: to, pid: pid, maddr: tpt, queue: make(chan frame, t.tune.QueueLen)}
		t.peers[to] = p
		t.wg.Add(1)
		go p.run()
	}
	select {
	case p.queue <- frame{msg, failed}:
		t.mu.Unlock()
	default:
		t.mu.Unlock()
		t.fail(frame{msg, failed}, fmt.Errorf("%w: to %s", ErrQueueFull, to))
	}
}

// fail counts a message that was not sent and reports it if reliable.
func (t *Transport) fail(f frame, err error) {
	t.stats.dropped.Add(1)
	if f.failed != nil {
		cb := f.failed
		t.cfg.Post(func() { cb(err) })
	}
}

// Stats returns a snapshot of the counters.
func (t *Transport) Stats() Stats {
	s := &t.stats
	return Stats{
		MsgsSent:            s.msgsSent.Load(),
		BytesSent:           s.bytesSent.Load(),
		MsgsReceived:        s.msgsReceived.Load(),
		BytesReceived:       s.bytesReceived.Load(),
		StreamsOpened:       s.streamsOpened.Load(),
		DialFailures:        s.dialFailures.Load(),
		WriteFailures:       s.writeFailures.Load(),
		Dropped:             s.dropped.Load(),
		Refused:             s.refused.Load(),
		Malformed:           s.malformed.Load(),
		Blocked:             s.blocked.Load(),
		Reservations:        s.reservations.Load(),
		ReservationsRefused: s.reservationsRefused.Load(),
	}
}

// Close stops the host, fails queued reliable messages with ErrClosed and
// waits for every goroutine the transport started. It is idempotent.
func (t *Transport) Close() error {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return nil
	}
	t.closed = true
	t.mu.Unlock()
	t.cancel()
	t.host.RemoveStreamHandler(ProtocolID)
	err := t.host.Close()
	t.wg.Wait()
	if err != nil {
		return fmt.Errorf("transport: close libp2p host: %w", err)
	}
	return nil
}
