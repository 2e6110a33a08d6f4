// Package node composes one real epost node (DESIGN.md sections 2 and 8):
// an event loop with real timers, the libp2p transport, and the overlay,
// with the application above it (for now a Recorder; PAST, Glacier and
// POST later).
//
// Invariants:
//   - All of a node's protocol state is owned by its Loop's goroutine:
//     transport deliveries, send-failure reports, timer callbacks and
//     application calls all run there, one at a time, exactly as in the
//     simulator. Other goroutines reach that state only through Do, Post
//     or the thread-safe methods below, never by touching the overlay
//     directly.
//   - The overlay accepts a message only from the address whose verified
//     certificate binds the NodeID the message claims (Overlay.Authenticate
//     is the transport's Authenticate).
//   - A stopped timer never runs; after Close no callback runs and every
//     goroutine the node started has exited.
package node

import (
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p"

	"github.com/epost-mail/epost/internal/env"
	"github.com/epost-mail/epost/internal/glacier"
	"github.com/epost-mail/epost/internal/id"
	"github.com/epost-mail/epost/internal/identity"
	"github.com/epost-mail/epost/internal/overlay"
	"github.com/epost-mail/epost/internal/past"
	"github.com/epost-mail/epost/internal/post"
	"github.com/epost-mail/epost/internal/store"
	"github.com/epost-mail/epost/internal/transport"
)

// Config is what New needs to run a node. Key, Cert and CA are required.
type Config struct {
	// ListenAddrs are libp2p multiaddrs to listen on, without /p2p/; the
	// first one (as bound) is the node's address unless Advertise is set.
	ListenAddrs []string
	// Advertise, when set, is the multiaddr other nodes reach this node at.
	Advertise string
	// Key is the node's private key, also its libp2p identity.
	Key identity.NodeKey
	// Cert binds Key to the node's NodeID; it must be signed by CA.
	Cert *identity.NodeCert
	// CA is the community CA's public key, which every peer's certificate
	// must verify against.
	CA identity.CAPublicKey
	// Bootstrap lists addresses of nodes to join through, tried in turn
	// until the join completes. Empty (or only this node's own address)
	// starts a new ring.
	Bootstrap []env.Addr
	// Overlay holds the Pastry parameters, in ticks (microseconds).
	Overlay overlay.Config
	// Transport holds the transport's limits and timeouts.
	Transport transport.Tuning
	// Libp2p holds extra libp2p options (NAT port mapping, hole punching).
	Libp2p []libp2p.Option
	// Revocation, if set, is the newest revocation list the node knows of
	// (from its data directory); lists peers pass on in their hellos, and
	// those given to AdoptRevocation, replace it when newer, and are kept
	// in the store.
	Revocation []byte
	// RelayService makes the node a circuit relay for members behind NAT;
	// Relays are relays this node keeps a reservation on (see
	// transport.Config).
	RelayService bool
	Relays       []string
	// App is the application above the overlay; nil runs a Recorder.
	App overlay.App
	// Log is the base logger; the node adds its id to every record. Nil
	// uses slog.Default().
	Log *slog.Logger
	// Faults, when set, cuts the node's links to chosen peers: for tests
	// and fault drills only (see transport.Faults).
	Faults *transport.Faults
	// DataDir, when set, is where the node keeps its store (DataDir/
	// store.db) and runs PAST over it, with App above PAST. Empty runs the
	// overlay alone.
	DataDir string
	// Store tunes the store; zero uses store.DefaultConfig.
	Store store.Config
	// Past tunes PAST; zero uses past.DefaultConfig.
	Past past.Config
	// Post tunes POST, which runs over PAST with a DataDir; zero uses
	// post.DefaultConfig.
	Post post.Config
	// Glacier tunes the archive, which runs between PAST and the layers
	// above with a DataDir; a zero Code uses glacier.ConfigFor(Community).
	Glacier glacier.Config
	// Community is about how many nodes the community has; it sizes the
	// archive's code (glacier.CodeFor). Zero means 1,000.
	Community int
	// ArchiveDelay, when not zero, replaces the archive's delay
	// (glacier.Config.ArchiveDelay) in whichever Glacier config applies.
	ArchiveDelay env.Duration
}

// DefaultConfig listens on every interface, TCP and QUIC, on port 4001,
// with the overlay's deployed parameters. Identity and bootstrap are the
// caller's to fill in.
func DefaultConfig() Config {
	return Config{
		ListenAddrs: []string{"/ip4/0.0.0.0/tcp/4001", "/ip4/0.0.0.0/udp/4001/quic-v1"},
		Overlay:     overlay.DefaultConfig(),
		Transport:   transport.DefaultTuning(),
	}
}

// Node is one running epost node.
type Node struct {
	cfg  Config
	log  *slog.Logger
	loop *Loop
	tr   *transport.Transport
	ov   *overlay.Overlay // owned by the loop
	app  overlay.App
	rec  *Recorder // app, when it is the default Recorder
	st   *store.Store
	past *past.Past       // owned by the loop; nil without DataDir
	gl   *glacier.Glacier // owned by the loop; nil without DataDir
	post *post.Post       // owned by the loop; nil without DataDir
	fc   *folderCache     // POST's folder cache; nil without DataDir
	// The archive's chain end, recorded in each user's root record
	// (archive.go); owned by the loop.
	archiveUsers map[id.ID]string // glacier owner -> address served here
	archiveRoots map[id.ID]*archiveRootWriter

	mu       sync.Mutex
	started  bool
	closed   bool
	counters []namedCounters // front-ends' counters, for the status page
	events   *eventRing      // recent events, for the status page
	verifier *identity.Verifier
}

// namedCounters is one front-end's counters, read on demand.
type namedCounters struct {
	name string
	read func() any
}

// AddCounters makes a front-end's counters (read returns a struct whose
// uint64 fields are counters, such as imapd.Stats) part of the node's
// status page and metrics, under name ("imap", "smtp", "gateway"). Two
// front-ends of one kind on a node are summed.
func (n *Node) AddCounters(name string, read func() any) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.counters = append(n.counters, namedCounters{name, read})
}

// New sets a node up: its transport listens from here on, but nothing
// received is processed, and no timer runs, until Start.
func New(cfg Config) (*Node, error) {
	if cfg.Cert == nil || cfg.CA.IsZero() {
		return nil, errors.New("node: config needs Cert and CA")
	}
	log := cfg.Log
	if log == nil {
		log = slog.Default()
	}
	events := &eventRing{}
	log = slog.New(eventHandler{next: log.Handler(), ring: events}).With("node", cfg.Cert.NodeID.Short())
	// One verifier for the transport and every layer: a revocation list it
	// adopts is enforced everywhere at once.
	n := &Node{cfg: cfg, log: log, loop: NewLoop(), app: cfg.App, events: events, verifier: identity.NewVerifier(cfg.CA)}
	if len(cfg.Revocation) > 0 {
		if _, err := n.verifier.Adopt(cfg.Revocation); err != nil {
			return nil, fmt.Errorf("node: revocation list: %w", err)
		}
	}
	if n.app == nil {
		n.rec = &Recorder{}
		n.app = n.rec
	}
	tr, err := transport.New(transport.Config{
		ListenAddrs: cfg.ListenAddrs,
		Advertise:   cfg.Advertise,
		Key:         cfg.Key,
		Cert:        cfg.Cert,
		Verifier:    n.verifier,
		Post:        func(f func()) { n.loop.Post(f) },
		// n.ov is set below, before Start lets the loop run this.
		Deliver: func(from env.Addr, msg []byte) { n.ov.Receive(from, msg) },
		Log:     log,
		Tuning:  cfg.Transport,
		Options: cfg.Libp2p,
		Faults:  cfg.Faults,

		RelayService: cfg.RelayService,
		Relays:       cfg.Relays,
		OnRevocation: func(list []byte) { n.keepRevocation(list) },
	})
	if err != nil {
		return nil, fmt.Errorf("node %s: %w", cfg.Cert.NodeID.Short(), err)
	}
	n.tr = tr
	e := env.Env{
		Self:  tr.Addr(),
		Clock: n.loop,
		Rand:  env.CryptoRand(),
		Net:   tr,
		Log:   log,
	}
	app := n.app
	if cfg.DataDir != "" {
		if err := n.openPast(e); err != nil {
			tr.Close()
			return nil, fmt.Errorf("node %s: %w", cfg.Cert.NodeID.Short(), err)
		}
		app = n.past
	}
	n.ov = overlay.New(cfg.Overlay, e, overlay.NodeHandle{ID: cfg.Cert.NodeID, Addr: string(tr.Addr())}, app)
	n.ov.Authenticate = tr.Authenticate
	if n.past != nil {
		n.past.Attach(n.ov)
		if err := n.gl.Attach(n.ov); err != nil {
			tr.Close()
			n.st.Close()
			return nil, fmt.Errorf("node %s: %w", cfg.Cert.NodeID.Short(), err)
		}
		pcfg := cfg.Post
		if pcfg.ChunkSize == 0 {
			pcfg = post.DefaultConfig()
		}
		n.post = post.New(pcfg, e, n.past, post.Node{Key: cfg.Key, Cert: cfg.Cert, Verifier: n.verifier}, n.st)
		n.fc = newFolderCache(n.st, n.log)
		n.post.Cache = n.fc
		n.archiveUsers = map[id.ID]string{}
		n.archiveRoots = map[id.ID]*archiveRootWriter{}
		n.wireArchive()
	}
	return n, nil
}

// Start runs the loop and creates a ring or starts joining one. It
// returns once the join is under way, not when it completes (see Active).
func (n *Node) Start() error {
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return ErrStopped
	}
	if n.started {
		n.mu.Unlock()
		return nil
	}
	n.started = true
	n.mu.Unlock()
	n.loop.Start()
	return n.loop.Do(func() {
		var boots []env.Addr
		for _, b := range n.cfg.Bootstrap {
			if b != n.tr.Addr() {
				boots = append(boots, b)
			}
		}
		if len(boots) == 0 {
			n.log.Info("creating a new ring", "addr", string(n.tr.Addr()))
			n.ov.Create()
			return
		}
		n.log.Info("joining", "addr", string(n.tr.Addr()), "bootstrap", string(boots[0]))
		n.ov.Join(boots[0])
		if len(boots) > 1 {
			n.rotateBootstrap(boots, 0)
		}
	})
}

// rotateBootstrap moves the join to the next bootstrap when the current
// one has not let the node in: the overlay itself retries only the one it
// was given, which may be down.
func (n *Node) rotateBootstrap(boots []env.Addr, i int) {
	n.loop.AfterFunc(2*n.cfg.Overlay.JoinTimeout, func() {
		if n.ov.Active() {
			return
		}
		i = (i + 1) % len(boots)
		n.log.Info("join not complete, trying the next bootstrap", "bootstrap", string(boots[i]))
		n.ov.Join(boots[i])
		n.rotateBootstrap(boots, i)
	})
}

// Close stops the node: first the loop, so the overlay does nothing more,
// then the transport. It is idempotent.
func (n *Node) Close() error {
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return nil
	}
	n.closed = true
	n.mu.Unlock()
	n.loop.Stop()
	err := n.tr.Close()
	if n.fc != nil {
		n.fc.Close() // after the loop (nothing queues more), before the store
	}
	if n.st != nil {
		// After the loop: nothing submits writes any more; Close waits
		// for the queued ones.
		err = errors.Join(err, n.st.Close())
	}
	if err != nil {
		return fmt.Errorf("node %s: %w", n.cfg.Cert.NodeID.Short(), err)
	}
	return nil
}

// ID is the node's ring id.
func (n *Node) ID() id.NodeID { return n.cfg.Cert.NodeID }

// Addr is the node's canonical transport address, the one peers reach it
// at and bootstrap through.
func (n *Node) Addr() env.Addr { return n.tr.Addr() }

// Handle is the node's overlay handle (id and address).
func (n *Node) Handle() overlay.NodeHandle {
	return overlay.NodeHandle{ID: n.cfg.Cert.NodeID, Addr: string(n.tr.Addr())}
}

// Log is the node's logger (it carries the node id).
func (n *Node) Log() *slog.Logger { return n.log }

// Do runs f on the node's event loop and waits for it; inside f the
// overlay and the application may be read and called. It returns
// ErrStopped if the node is closed. It must not be called from the loop
// (from an App upcall or a timer), which would wait for itself.
func (n *Node) Do(f func()) error { return n.loop.Do(f) }

// Post queues f to run on the event loop without waiting; it reports
// false once the node is closed.
func (n *Node) Post(f func()) bool { return n.loop.Post(f) }

// Overlay returns the overlay. Use it only inside Do or Post, or from the
// application's upcalls: it belongs to the loop goroutine.
func (n *Node) Overlay() *overlay.Overlay { return n.ov }

// Recorder returns the default application, or nil when Config.App was
// set. Read it only inside Do; set its hooks before Start.
func (n *Node) Recorder() *Recorder { return n.rec }

// Past returns the node's PAST instance, nil without a DataDir. Use it
// only inside Do or Post: it belongs to the loop goroutine.
func (n *Node) Past() *past.Past { return n.past }

// Mail returns the node's POST instance, nil without a DataDir. Use it
// only inside Do or Post: it belongs to the loop goroutine.
func (n *Node) Mail() *post.Post { return n.post }

// AddUser has the node serve a new user whose keys it holds
// (post.Post.AddUser) and waits, at most timeout, until the user's
// mailbox is loaded. It must not be called from the loop.
func (n *Node) AddUser(keys identity.UserKeys, cert *identity.UserCert, timeout time.Duration) error {
	if n.post == nil {
		return errors.New("node: no mail without a DataDir")
	}
	ready := make(chan error, 1)
	var err error
	if e := n.Do(func() { _, err = n.post.AddUser(keys, cert, func(e error) { ready <- e }) }); e != nil {
		return e
	}
	if err != nil {
		return err
	}
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case err := <-ready:
		return err
	case <-t.C:
		return fmt.Errorf("node: mailbox of %s not loaded within %v", keys.Address, timeout)
	}
}

// Store returns the node's store, nil without a DataDir (its methods are
// thread-safe).
func (n *Node) Store() *store.Store { return n.st }

// Transport returns the node's transport (its methods are thread-safe).
func (n *Node) Transport() *transport.Transport { return n.tr }

// Loop returns the node's event loop and clock.
func (n *Node) Loop() *Loop { return n.loop }

// Route sends payload to the root of key, from any goroutine. It returns
// ErrStopped once the node is closed.
func (n *Node) Route(key id.ID, payload []byte) error {
	if !n.loop.Post(func() { n.ov.Route(key, payload) }) {
		return ErrStopped
	}
	return nil
}

// Active reports whether the node has joined the ring and may deliver
// messages (false once closed).
func (n *Node) Active() bool {
	var active bool
	if err := n.Do(func() { active = n.ov.Active() }); err != nil {
		return false
	}
	return active
}
