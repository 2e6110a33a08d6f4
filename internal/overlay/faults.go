package overlay

import (
	"sort"

	"github.com/epost-mail/epost/internal/env"
	"github.com/epost-mail/epost/internal/id"
	"github.com/epost-mail/epost/internal/wire"
)

// This file holds the mechanisms for the failures ePOST met in deployment
// (DESIGN.md section 4): partitions, routing anomalies, and nodes whose own
// loop stalled or whose machine slept.

// deadNode is a node this node declared dead, remembered so that hearsay
// does not bring it back and so that it can be tried again after a
// partition.
type deadNode struct {
	h  NodeHandle
	at env.Time
	// confirmed: a leaf-set member or candidate that no route reached, as
	// opposed to a routing-table entry that only we could not reach.
	confirmed bool
}

// graveyard returns the most recently declared dead nodes, up to
// DeadMemoryCount, within DeadMemory; newest first.
func (o *Overlay) graveyard() []NodeHandle {
	o.pruneDead()
	ds := make([]deadNode, 0, len(o.dead))
	for _, d := range o.dead {
		ds = append(ds, d)
	}
	sort.Slice(ds, func(i, j int) bool {
		if ds[i].at != ds[j].at {
			return ds[i].at > ds[j].at
		}
		return ds[i].h.ID.Cmp(ds[j].h.ID.ID) < 0
	})
	if len(ds) > o.cfg.DeadMemoryCount {
		ds = ds[:o.cfg.DeadMemoryCount]
	}
	out := make([]NodeHandle, len(ds))
	for i, d := range ds {
		out[i] = d.h
	}
	return out
}

// reintegrate is ePOST's partition repair: periodically try one node that
// was declared dead recently; if it answers, it may be on the other side of
// a healed partition, so join again through it, which routes to our own id
// in its ring and merges the two. With nobody remembered (a split longer
// than the memory), try a random routing-table entry or a bootstrap.
func (o *Overlay) reintegrate() {
	if !o.active {
		return
	}
	if graves := o.graveyard(); len(graves) > 0 {
		o.startProbe(graves[o.env.Rand.IntN(len(graves))], ProbeReintegrate, 0)
		return
	}
	n := o.table.Len() + len(o.Bootstraps)
	if n == 0 {
		return
	}
	if i := o.env.Rand.IntN(n); i < o.table.Len() {
		h, _ := o.table.At(i)
		o.joinVia(env.Addr(h.Addr))
	} else {
		o.joinVia(o.Bootstraps[i-o.table.Len()])
	}
}

// joinVia routes a join for our own id through the node at addr, while
// staying active: the reply merges that ring's view of our neighbourhood
// into ours.
func (o *Overlay) joinVia(addr env.Addr) {
	if addr == o.env.Self || addr == "" {
		return
	}
	o.stats.Reintegrations++
	m := wire.Route{Hop: o.newHop(), Kind: wire.RouteJoin, Key: o.self.ID.ID, Src: o.self, Sender: o.self}
	o.sendTo(NodeHandle{Addr: string(addr)}, wire.TypeRoute, m)
}

// stalled checks, at each heartbeat tick, whether this node's own event
// loop stalled for longer than others wait before declaring it dead, or its
// wall clock jumped against its monotonic clock (the machine slept). Either
// way its state is stale: it rejoins instead of serving it.
func (o *Overlay) stalled() bool {
	now, wall := o.env.Clock.Now(), o.env.Clock.Wall()
	gap := now.Sub(o.lastTick)
	jump := env.Duration(wall-o.lastWall) - gap
	o.lastTick, o.lastWall = now, wall
	if jump < 0 {
		jump = -jump
	}
	if !o.active || (gap <= o.cfg.HeartbeatPeriod+o.cfg.StallLimit && jump <= o.cfg.WallJumpLimit) {
		return false
	}
	o.stats.Stalls++
	o.env.Log.Info("loop stalled or clock jumped: rejoining", "gap", int64(gap), "wall_jump", int64(jump))
	o.rejoin()
	return true
}

// rejoin makes an active node join again: it stops delivering, and
// becomes active once every leaf-set member has answered, as a new node
// does. Members that died meanwhile are found by the join's probes.
func (o *Overlay) rejoin() {
	var boot env.Addr
	if ms := o.leaf.Members(); len(ms) > 0 {
		boot = env.Addr(ms[o.env.Rand.IntN(len(ms))].Addr)
	} else if h, ok := o.table.At(0); ok {
		boot = env.Addr(h.Addr)
	} else if len(o.Bootstraps) > 0 {
		boot = o.Bootstraps[o.env.Rand.IntN(len(o.Bootstraps))]
	} else {
		return // alone: nothing to rejoin
	}
	o.active = false
	o.joining = true
	o.acked = map[id.ID]bool{}
	o.bootstrap = boot
	o.sendJoin()
	o.checkJoined()
}

// helpRequest is another node's request to probe a target for it.
type helpRequest struct {
	from  NodeHandle
	nonce uint64
}

// search looks for an indirect route to a node whose direct probes went
// unanswered.
type search struct {
	target    NodeHandle
	nonce     uint64
	waiting   int
	candidate bool
	announce  bool
	timer     env.Timer
}

// startSearch asks up to IndirectHelpers leaf-set members, nearest to the
// target first, to probe the target for us. The target is declared dead
// only if none of them reaches it.
func (o *Overlay) startSearch(p *probe) {
	x := p.target.ID.ID
	if _, ok := o.finds[x]; ok {
		return // one search at a time per node
	}
	var helpers []NodeHandle
	for _, m := range o.leaf.Members() {
		if m.ID.ID != x {
			if _, indirect := o.via[m.ID.ID]; !indirect {
				helpers = append(helpers, m)
			}
		}
	}
	sort.Slice(helpers, func(i, j int) bool { return id.Closer(x, helpers[i].ID.ID, helpers[j].ID.ID) })
	n := o.cfg.IndirectHelpers
	if (p.candidate && !o.leaf.Contains(x) || p.reason == ProbeCheck) && n > 3 {
		n = 3 // second-hand doubt: the node is usually just dead
	}
	if len(helpers) > n {
		helpers = helpers[:n]
	}
	if len(helpers) == 0 {
		o.declareDead(p.target, !p.verify, "no helpers")
		return
	}
	o.stats.Searches++
	s := &search{target: p.target, nonce: o.env.Rand.Uint64(), waiting: len(helpers), candidate: p.candidate, announce: !p.verify}
	o.finds[x] = s
	for _, h := range helpers {
		o.sendTo(h, wire.TypeProbeVia, wire.ProbeVia{From: o.self, Target: p.target, Nonce: s.nonce})
	}
	nonce := s.nonce
	// Helpers that have not heard from the target lately probe it
	// themselves, twice (one timeout, then two): allow for that on slow
	// links, so a slow node is not declared dead for it.
	wait := max(o.cfg.SearchTimeout, 3*o.timeout(p.target)+o.cfg.MinTimeout)
	s.timer = o.env.Clock.AfterFunc(wait, func() {
		if cur := o.finds[x]; cur != nil && cur.nonce == nonce {
			o.searchFailed(cur)
		}
	})
}

func (o *Overlay) searchFailed(s *search) {
	delete(o.finds, s.target.ID.ID)
	s.timer.Stop()
	o.declareDead(s.target, s.announce, "search failed")
	o.releaseHeld()
	o.checkJoined()
}

func (o *Overlay) onViaReply(r wire.ViaReply) {
	s := o.finds[r.Target.ID]
	if s == nil || s.nonce != r.Nonce {
		return
	}
	if !r.Reachable {
		if s.waiting--; s.waiting <= 0 {
			o.searchFailed(s)
		}
		return
	}
	delete(o.finds, r.Target.ID)
	s.timer.Stop()
	o.stats.IndirectFound++
	o.via[r.Target.ID] = r.From
	o.env.Log.Debug("link indirect", "peer", r.Target.Short(), "via", r.From.ID.Short())
	if s.candidate {
		o.addLeaf(s.target)
	}
	o.releaseHeld()
	o.checkJoined()
}

// onProbeVia answers a request to probe a target: at once if we know, else
// after our own probe.
func (o *Overlay) onProbeVia(m wire.ProbeVia) {
	x := m.Target.ID.ID
	reply := func(ok bool) {
		o.sendTo(m.From, wire.TypeViaReply, wire.ViaReply{From: o.self, Target: m.Target.ID, Nonce: m.Nonce, Reachable: ok})
	}
	switch {
	case x == o.self.ID.ID:
		reply(true)
		return
	case o.recentlyDead(m.Target):
		reply(false)
		return
	}
	if p := o.peers[x]; p != nil && o.env.Clock.Now().Sub(p.lastHeard) < o.cfg.HelpFresh {
		if _, indirect := o.via[x]; !indirect {
			reply(true)
			return
		}
	}
	o.help[x] = append(o.help[x], helpRequest{from: m.From, nonce: m.Nonce})
	o.startProbe(m.Target, ProbeHelp, 0)
}

// answerHelp settles every pending request to probe x.
func (o *Overlay) answerHelp(x id.ID, reachable bool) {
	reqs := o.help[x]
	if len(reqs) == 0 {
		return
	}
	delete(o.help, x)
	if _, indirect := o.via[x]; indirect {
		reachable = false // we reach it only through someone else
	}
	for _, r := range reqs {
		o.sendTo(r.from, wire.TypeViaReply, wire.ViaReply{From: o.self, Target: id.NodeID{ID: x}, Nonce: r.nonce, Reachable: reachable})
	}
}

// onRelay handles a relayed message: as the helper, pass it on; as the
// destination, handle the payload as if it came from its originator.
//
// The destination trusts the helper's word for who the originator is: the
// helper is a certified member, and only pairs with a broken link use
// relays. Signing relayed payloads with the originator's node key would
// remove that trust; see docs/architecture.md.
func (o *Overlay) onRelay(from env.Addr, m wire.Relay) {
	if m.Via.ID.IsZero() {
		// First leg: we are the helper.
		if m.To.ID.ID == o.self.ID.ID {
			return
		}
		o.stats.Relayed++
		m.Via = o.self
		b, err := wire.Encode(wire.TypeRelay, m)
		if err == nil {
			o.env.Net.Send(env.Addr(m.To.Addr), b)
		}
		return
	}
	if m.To.ID.ID != o.self.ID.ID || o.relayedFrom != nil {
		return
	}
	inner, err := wire.DecodeEnvelope(m.Payload)
	if err != nil || inner.Type == wire.TypeRelay {
		o.malformed(from, err)
		return
	}
	via := m.Via
	o.relayedFrom = &via
	o.Receive(env.Addr(m.From.Addr), m.Payload)
	o.relayedFrom = nil
}

// helperFor picks the leaf-set member nearest to x, other than x, that we
// reach directly: the best bet for a one-hop detour to x.
func (o *Overlay) helperFor(x id.ID) (NodeHandle, bool) {
	var best NodeHandle
	found := false
	for _, m := range o.leaf.Members() {
		if m.ID.ID == x {
			continue
		}
		if _, indirect := o.via[m.ID.ID]; indirect {
			continue
		}
		if !found || id.Closer(x, m.ID.ID, best.ID.ID) {
			best, found = m, true
		}
	}
	return best, found
}

// relayVia sends one message to `to` through helper, whatever the usual
// route to `to` is.
func (o *Overlay) relayVia(helper, to NodeHandle, t wire.Type, body any) {
	b, err := wire.Encode(t, body)
	if err != nil {
		o.env.Log.Error("encode failed", "type", t, "err", err)
		return
	}
	o.stats.SentLookup += boolCount(t == wire.TypeRoute)
	o.relayBytes(helper, to, b)
}

func (o *Overlay) relayBytes(helper, to NodeHandle, b []byte) {
	rb, err := wire.Encode(wire.TypeRelay, wire.Relay{From: o.self, To: to, Payload: b})
	if err == nil {
		o.env.Net.Send(env.Addr(helper.Addr), rb)
	}
}

func boolCount(b bool) uint64 {
	if b {
		return 1
	}
	return 0
}
