// Package overlay is a Pastry overlay (Rowstron and Druschel, Middleware
// 2001) with MSPastry's consistent routing and cheap failure detection
// (Castro, Costa, Rowstron, DSN 2004): prefix routing over a 32 x 16
// routing table and a leaf set, join through any node, heartbeats to the
// left neighbour only, probes on suspicion, leaf-set repair announced to the
// leaf set, routing-table probing, and per-hop acknowledgements with
// re-routing around silent next hops.
//
// Invariants:
//   - The Overlay is a deterministic state machine: it is driven only by
//     Receive, by timers from env.Clock and by calls from the application,
//     all on one event loop; it uses env.Rand for every choice.
//   - A node delivers a message for key K only while it is active and no
//     unconfirmed leaf-set candidate lies closer to K than itself
//     (consistent routing); otherwise the message is held, then re-routed.
//   - A joining node becomes active only once every member of its leaf set
//     has answered it, which is also how every member learns of it.
//   - A node is removed from leaf set and routing table only after it failed
//     to answer ProbeAttempts probes, or first-hand contact shows it
//     restarted; second-hand reports only trigger a probe.
//   - Every message is decoded strictly; malformed ones and ones whose
//     claimed sender is not the transport-level sender are dropped and
//     counted.
package overlay

import (
	"fmt"

	"github.com/epost-mail/epost/internal/env"
	"github.com/epost-mail/epost/internal/id"
	"github.com/epost-mail/epost/internal/wire"
)

// NodeHandle names a node: ring id and transport address.
type NodeHandle = wire.NodeHandle

// Message is what the application sees of a routed message.
type Message struct {
	Key     id.ID
	Src     NodeHandle
	Hops    int
	Payload []byte
}

// App is the application above the overlay (PAST, POST, a test workload).
// Upcalls run on the node's event loop.
type App interface {
	// Deliver is called at the root of m.Key.
	Deliver(m Message)
	// Forward is called at every hop before m goes to next; returning false
	// consumes the message here.
	Forward(m *Message, next NodeHandle) bool
	// Direct receives a payload sent with SendDirect.
	Direct(from NodeHandle, payload []byte)
	// LeafSetChanged reports a node entering (joined) or leaving the leaf
	// set; replica maintenance hangs off it.
	LeafSetChanged(h NodeHandle, joined bool)
}

// Stats counts the overlay's work. Messages are counted when sent.
type Stats struct {
	SentLookup      uint64 // routed application messages (each hop)
	SentLookupAcks  uint64 // per-hop acks of application messages
	SentControl     uint64 // maintenance: probes, replies, heartbeats, joins, rows, announcements
	SentControlAcks uint64 // per-hop acks of join messages
	SentDirect      uint64
	Delivered       uint64 // application messages delivered here as root
	Rerouted        uint64 // hops re-sent around a silent next hop
	DroppedRoutes   uint64 // messages given up after MaxReroutes or HoldTimeout
	Malformed       uint64 // undecodable messages dropped
	Unauthenticated uint64 // messages whose claimed sender is not the real one
	DeclaredDead    uint64 // nodes this node declared dead
	Joins           uint64 // joins started (first and retries)
	Reintegrations  uint64 // joins sent through a node found across a partition
	Stalls          uint64 // times this node found its own loop stalled or its clock jumped, and rejoined
	Searches        uint64 // searches for an indirect route to a silent node
	IndirectFound   uint64 // searches that found a helper reaching the target
	Relayed         uint64 // messages relayed for other nodes
	Resent          uint64 // application messages sent again for want of the root's confirmation
	// Probes counts probe messages sent (retries included) by reason.
	Probes [probeReasons]uint64
	// ByType counts sent messages per overlay message type, indexed by
	// wire type minus wire.TypeRoute.
	ByType [wire.TypeDelivered - wire.TypeRoute + 1]uint64
}

// peer is what a node knows about a node it talks to.
type peer struct {
	h         NodeHandle
	srtt      env.Duration // 0 when not measured
	rttvar    env.Duration
	lastHeard env.Time
	lastSent  env.Time
	// linkChecked: when the direct link, while indirect, was last tried.
	linkChecked env.Time
	// verifiedAt: when we last probed the node to check another node's
	// report of its death (verifying tells whether we ever did).
	verifiedAt env.Time
	verifying  bool
}

// probe is an outstanding liveness check.
type probe struct {
	target    NodeHandle
	nonce     uint64
	sent      env.Time
	attempts  int
	reason    ProbeReason
	flags     uint8
	candidate bool // a leaf-set candidate learnt second-hand, pending confirmation
	forTable  bool // a routing-table candidate to insert if it answers
	verify    bool // checking another node's report of a death: do not announce again
	timer     env.Timer
}

// inflight is a routed message awaiting its next hop's ack.
type inflight struct {
	m       wire.Route
	next    NodeHandle
	exclude []id.ID
	sent    env.Time
	timer   env.Timer
	relayed bool // this attempt went through a helper
}

// held is a message waiting until this node may deliver it.
type held struct {
	m       wire.Route
	exclude []id.ID
	wait    id.ID // held while a probe or search about this node runs
	until   env.Time
}

// Overlay is one node's Pastry state machine.
type Overlay struct {
	cfg  Config
	env  env.Env
	self NodeHandle
	app  App

	// Bootstraps are addresses to try when looking for the other side of a
	// partition; Join adds its bootstrap.
	Bootstraps []env.Addr

	// OnDeclaredDead, when set, is told of every node this node declares
	// dead and whether it was in the leaf set (the simulator's oracle uses
	// it to count false deaths).
	OnDeclaredDead func(h NodeHandle, inLeaf bool)

	// Authenticate, when set, confirms that the transport sender from is
	// the node claiming id; the real runtime checks it against the peer's
	// certificate. Nil trusts the claim (the simulator's hosts are honest).
	Authenticate func(from env.Addr, claimed id.NodeID) bool

	active    bool
	joining   bool
	bootstrap env.Addr
	joinTimer env.Timer

	leaf *LeafSet
	// acked holds, while joining, the leaf-set members that answered our
	// probe and so have learnt of us.
	acked map[id.ID]bool
	// spares are recently seen nodes that did not fit in the leaf set.
	spares []NodeHandle
	table  *RoutingTable
	peers  map[id.ID]*peer
	probe  map[id.ID]*probe
	dead   map[id.ID]deadNode
	hops   map[uint64]*inflight
	held   []held
	// holdArmed is set while an expireHeld timer is pending.
	holdArmed bool

	// via holds nodes reachable only through another node (a routing
	// anomaly): messages to them are relayed through the helper.
	via map[id.ID]NodeHandle
	// help holds requests from other nodes to probe a target for them.
	help map[id.ID][]helpRequest
	// finds holds searches for an indirect route to a silent node.
	finds map[id.ID]*search
	// relayedFrom is set while a relayed message is processed: the helper
	// it came through.
	relayedFrom *NodeHandle

	lastTick env.Time // monotonic time of the last heartbeat tick
	lastWall int64    // wall time of the last heartbeat tick

	// e2e holds application messages this node sent and the root has not
	// confirmed; seen remembers recent (source, seq) pairs delivered here.
	e2e     map[uint64]*e2eMsg
	nextSeq uint64
	seen    map[e2eKey]struct{}
	seenLog []e2eKey

	nextHop     uint64
	tableCursor int
	stats       Stats
	started     bool
}

// New returns the overlay state of node self. Call Create to start a new
// ring or Join to enter an existing one.
func New(cfg Config, e env.Env, self NodeHandle, app App) *Overlay {
	return &Overlay{
		cfg:   cfg,
		env:   e,
		self:  self,
		app:   app,
		leaf:  NewLeafSet(self.ID.ID, cfg.LeafSetSize),
		table: NewRoutingTable(self.ID.ID),
		peers: map[id.ID]*peer{},
		probe: map[id.ID]*probe{},
		acked: map[id.ID]bool{},
		dead:  map[id.ID]deadNode{},
		via:   map[id.ID]NodeHandle{},
		help:  map[id.ID][]helpRequest{},
		finds: map[id.ID]*search{},
		hops:  map[uint64]*inflight{},
		e2e:   map[uint64]*e2eMsg{},
		seen:  map[e2eKey]struct{}{},
	}
}

// Self is this node's handle.
func (o *Overlay) Self() NodeHandle { return o.self }

// Active reports whether the node has joined and may deliver messages.
func (o *Overlay) Active() bool { return o.active }

// Leaf returns the leaf set (read-only for callers).
func (o *Overlay) Leaf() *LeafSet { return o.leaf }

// Table returns the routing table (read-only for callers).
func (o *Overlay) Table() *RoutingTable { return o.table }

// IndirectLinks is the number of nodes this node reaches only through a
// helper.
func (o *Overlay) IndirectLinks() int { return len(o.via) }

// Stats returns the counters.
func (o *Overlay) Stats() Stats { return o.stats }

// Create starts a new ring with this node as its only member.
func (o *Overlay) Create() {
	o.active = true
	o.startTimers()
}

// Join enters the ring that the node at bootstrap belongs to.
func (o *Overlay) Join(bootstrap env.Addr) {
	o.bootstrap = bootstrap
	o.joining = true
	o.startTimers()
	o.sendJoin()
}

func (o *Overlay) sendJoin() {
	o.stats.Joins++
	m := wire.Route{Hop: o.newHop(), Kind: wire.RouteJoin, Key: o.self.ID.ID, Src: o.self, Sender: o.self}
	o.sendTo(NodeHandle{Addr: string(o.bootstrap)}, wire.TypeRoute, m)
	if o.joinTimer != nil {
		o.joinTimer.Stop()
	}
	o.joinTimer = o.env.Clock.AfterFunc(o.cfg.JoinTimeout, func() {
		if !o.active {
			o.sendJoin()
		}
	})
}

// IsRoot reports whether this node, by its own state, would deliver a
// message for key now: the simulator's oracle uses it to find dual roots.
func (o *Overlay) IsRoot(key id.ID) bool {
	if !o.active || !o.leaf.Covers(key) {
		return false
	}
	best, _ := o.closestLeaf(key, nil, id.ID{})
	return best.ID.ID == o.self.ID.ID && !o.unconfirmedCloser(key)
}

// Route sends payload to the root of key.
func (o *Overlay) Route(key id.ID, payload []byte) {
	m := wire.Route{Kind: wire.RouteApp, Key: key, Src: o.self, Payload: payload}
	if o.cfg.EndToEndTimeout > 0 {
		if o.nextSeq == 0 {
			// A random start: a restarted node must not reuse the numbers
			// its previous incarnation's messages carried, which roots
			// still remember as delivered.
			o.nextSeq = o.env.Rand.Uint64() >> 1
		}
		o.nextSeq++
		m.Seq = o.nextSeq
		e := &e2eMsg{m: m, tries: 1}
		o.e2e[m.Seq] = e
		o.armE2E(e)
	}
	o.forward(m, nil)
}

// SendDirect sends payload straight to one node.
func (o *Overlay) SendDirect(to NodeHandle, payload []byte) {
	o.stats.SentDirect++
	o.sendTo(to, wire.TypeDirect, wire.Direct{From: o.self, Payload: payload})
}

// Receive is the overlay's input: one message from the transport.
func (o *Overlay) Receive(from env.Addr, msg []byte) {
	e, err := wire.DecodeEnvelope(msg)
	if err != nil {
		o.malformed(from, err)
		return
	}
	switch e.Type {
	case wire.TypeRoute:
		var m wire.Route
		if o.decode(from, e, &m, &m.Sender) {
			o.onRoute(m)
		}
	case wire.TypeRouteAck:
		var m wire.RouteAck
		if o.decode(from, e, &m, &m.From) {
			o.onRouteAck(m)
		}
	case wire.TypeJoinReply:
		var m wire.JoinReply
		if o.decode(from, e, &m, &m.From) {
			o.onJoinReply(m)
		}
	case wire.TypeProbe:
		var m wire.Probe
		if o.decode(from, e, &m, &m.From) {
			o.onProbe(m)
		}
	case wire.TypeProbeReply:
		var m wire.ProbeReply
		if o.decode(from, e, &m, &m.From) {
			o.onProbeReply(m)
		}
	case wire.TypeHeartbeat:
		var m wire.Heartbeat
		if o.decode(from, e, &m, &m.From) {
			o.learnCandidates(m.Leaf)
			o.crossCheck(m.From, m.Leaf)
			if stale := o.knownDead(m.Leaf); len(stale) > 0 {
				// The sender still lists nodes we found dead: tell it.
				o.sendTo(m.From, wire.TypeProbe, wire.Probe{From: o.self, Dead: stale})
			}
			if o.active && o.knowsMissing(m.From, m.Leaf) {
				// Heartbeats flow leftwards; answer only when the sender
				// lacks nodes we know, so knowledge also flows rightwards.
				o.sendTo(m.From, wire.TypeProbeReply, wire.ProbeReply{From: o.self, Leaf: o.leaf.Members()})
			}
		}
	case wire.TypeRowRequest:
		var m wire.RowRequest
		if o.decode(from, e, &m, &m.From) {
			o.onRowRequest(m)
		}
	case wire.TypeRowReply:
		var m wire.RowReply
		if o.decode(from, e, &m, &m.From) {
			o.onRowReply(m)
		}
	case wire.TypeProbeVia:
		var m wire.ProbeVia
		if o.decode(from, e, &m, &m.From) {
			o.onProbeVia(m)
		}
	case wire.TypeViaReply:
		var m wire.ViaReply
		if o.decode(from, e, &m, &m.From) {
			o.onViaReply(m)
		}
	case wire.TypeRelay:
		var m wire.Relay
		sender := &m.From
		if err := wire.Unmarshal(e.Body, &m); err == nil && !m.Via.ID.IsZero() {
			sender = &m.Via // second leg: the helper is the transport-level sender
		}
		if o.decode(from, e, &m, sender) {
			o.onRelay(from, m)
		}
	case wire.TypeDirect:
		var m wire.Direct
		if o.decode(from, e, &m, &m.From) {
			o.app.Direct(m.From, m.Payload)
		}
	case wire.TypeDelivered:
		var m wire.Delivered
		if o.decode(from, e, &m, &m.From) {
			o.onDelivered(m.Seq)
		}
	default:
		o.malformed(from, fmt.Errorf("%w: %d", wire.ErrType, e.Type))
	}
}

// decode decodes the body, authenticates its claimed sender and records
// the first-hand contact. It reports whether the message may be used.
func (o *Overlay) decode(from env.Addr, e wire.Envelope, v any, sender *NodeHandle) bool {
	if err := wire.Unmarshal(e.Body, v); err != nil {
		o.malformed(from, err)
		return false
	}
	// A relayed message's originator is the helper's word: the transport
	// authenticated the helper, and the originator may never have reached
	// us directly (that is why it is relayed).
	if sender.Addr != string(from) || sender.ID.IsZero() ||
		(o.Authenticate != nil && o.relayedFrom == nil && !o.Authenticate(from, sender.ID)) {
		o.stats.Unauthenticated++
		o.env.Log.Debug("dropped message with a false sender", "from", string(from), "claimed", sender.ID.Short())
		return false
	}
	if sender.ID.ID == o.self.ID.ID {
		// Our own id from another address: a stale incarnation or an
		// impostor. Either way it is not a peer.
		o.stats.Unauthenticated++
		return false
	}
	o.heard(*sender)
	return true
}

func (o *Overlay) malformed(from env.Addr, err error) {
	o.stats.Malformed++
	o.env.Log.Debug("dropped malformed message", "from", string(from), "err", err)
}

// heard records first-hand evidence that h is alive right now.
func (o *Overlay) heard(h NodeHandle) {
	now := o.env.Clock.Now()
	delete(o.dead, h.ID.ID)
	if o.relayedFrom == nil {
		delete(o.via, h.ID.ID) // a direct message: the link works again
	} else if _, ok := o.via[h.ID.ID]; !ok {
		o.via[h.ID.ID] = *o.relayedFrom // answer the way it came
	}
	o.answerHelp(h.ID.ID, true)
	p := o.peer(h)
	p.lastHeard = now
	if p.h.Addr != h.Addr {
		// The node came back at another address; use the new one.
		p.h = h
		if o.leaf.Remove(h.ID.ID) {
			o.leaf.Add(h)
		}
		if o.table.Remove(h.ID.ID) {
			o.table.Set(h)
		}
	}
	if pr, ok := o.probe[h.ID.ID]; ok && o.active {
		// Any message proves the node alive: settle the probe now, or a
		// probe sent while the node was down could still declare it dead
		// after it came back. (A joining node waits for the reply itself:
		// only that shows the member has learnt of the joiner.)
		o.probeAnswered(pr, h)
	}
	if s, ok := o.finds[h.ID.ID]; ok && o.relayedFrom == nil {
		// It reached us directly after all.
		delete(o.finds, h.ID.ID)
		s.timer.Stop()
		if s.candidate {
			o.addLeaf(h)
		}
		o.releaseHeld()
	}
	if o.leaf.WouldAccept(h.ID.ID) {
		o.addLeaf(h)
	}
	o.considerTable(h)
}

func (o *Overlay) peer(h NodeHandle) *peer {
	p, ok := o.peers[h.ID.ID]
	if !ok {
		p = &peer{h: h}
		o.peers[h.ID.ID] = p
	}
	return p
}

// forgetPeer drops what we know of x once it is in neither table.
func (o *Overlay) forgetPeer(x id.ID) {
	if !o.leaf.Contains(x) && !o.table.Contains(x) {
		if _, probing := o.probe[x]; !probing {
			delete(o.peers, x)
		}
	}
}

func (o *Overlay) addLeaf(h NodeHandle) {
	changed, evicted := o.leaf.Add(h)
	if !changed {
		return
	}
	o.env.Log.Debug("leaf add", "peer", h.ID.Short())
	o.app.LeafSetChanged(h, true)
	for _, e := range evicted {
		o.env.Log.Debug("leaf evict", "peer", e.ID.Short())
		o.app.LeafSetChanged(e, false)
		o.forgetPeer(e.ID.ID)
	}
}

// considerTable puts h in its routing-table slot if the slot is empty, or
// if h is measurably nearer than the current entry (proximity neighbour
// selection).
func (o *Overlay) considerTable(h NodeHandle) {
	cur, ok := o.table.Lookup(h.ID.ID)
	if ok && cur.ID == h.ID {
		return
	}
	if row, _ := o.table.Slot(h.ID.ID); row >= id.Digits {
		return
	}
	if !ok {
		o.table.Set(h)
		return
	}
	pc, pn := o.peers[cur.ID.ID], o.peers[h.ID.ID]
	if pc != nil && pn != nil && pn.srtt > 0 && (pc.srtt == 0 || pn.srtt < pc.srtt) {
		o.table.Set(h)
		o.forgetPeer(cur.ID.ID)
	}
}

// timeout is the wait for an answer from h: 1.5 srtt + 4 rttvar, clamped.
// The margin above srtt matters on stable links, where rttvar decays to
// nothing and an answer arriving exactly on time would otherwise race the
// timer.
func (o *Overlay) timeout(h NodeHandle) env.Duration {
	p := o.peers[h.ID.ID]
	if p == nil || p.srtt == 0 {
		return o.cfg.DefaultTimeout
	}
	t := p.srtt + p.srtt/2 + 4*p.rttvar
	if t < o.cfg.MinTimeout {
		t = o.cfg.MinTimeout
	}
	if t > o.cfg.MaxTimeout {
		t = o.cfg.MaxTimeout
	}
	return t
}

// sampleRTT folds a round-trip measurement into h's estimate (RFC 6298).
func (o *Overlay) sampleRTT(h NodeHandle, rtt env.Duration) {
	if rtt <= 0 {
		return
	}
	p := o.peer(h)
	if p.srtt == 0 {
		p.srtt, p.rttvar = rtt, rtt/2
		return
	}
	d := p.srtt - rtt
	if d < 0 {
		d = -d
	}
	p.rttvar = (3*p.rttvar + d) / 4
	p.srtt = (7*p.srtt + rtt) / 8
}

func (o *Overlay) newHop() uint64 {
	o.nextHop++
	return o.nextHop
}

// sendTo encodes and sends one message, counting it by class; a node
// reached only through a helper gets it relayed.
func (o *Overlay) sendTo(to NodeHandle, t wire.Type, body any) { o.transmit(to, t, body, true) }

// transmit is sendTo with the choice of relaying: probes go direct, since
// they test the link itself.
func (o *Overlay) transmit(to NodeHandle, t wire.Type, body any, relay bool) {
	b, err := wire.Encode(t, body)
	if err != nil {
		o.env.Log.Error("encode failed", "type", t, "err", err)
		return
	}
	if t >= wire.TypeRoute && t <= wire.TypeDelivered {
		o.stats.ByType[t-wire.TypeRoute]++
	}
	switch t {
	case wire.TypeRoute:
		if body.(wire.Route).Kind == wire.RouteApp {
			o.stats.SentLookup++
		} else {
			o.stats.SentControl++
		}
	case wire.TypeRouteAck, wire.TypeDirect:
	case wire.TypeDelivered:
		o.stats.SentLookupAcks++
	default:
		o.stats.SentControl++
	}
	if p, ok := o.peers[to.ID.ID]; ok && !to.ID.IsZero() {
		p.lastSent = o.env.Clock.Now()
	}
	if helper, ok := o.via[to.ID.ID]; ok && relay && t != wire.TypeRelay {
		// Source routing around a broken link (DESIGN.md section 4).
		o.relayBytes(helper, to, b)
		return
	}
	o.env.Net.Send(env.Addr(to.Addr), b)
}
