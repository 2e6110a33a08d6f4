package overlay

import (
	"github.com/epost-mail/epost/internal/env"
	"github.com/epost-mail/epost/internal/id"
	"github.com/epost-mail/epost/internal/wire"
)

// onRoute handles a message arriving on one hop: acknowledge the hop, then
// route it on.
func (o *Overlay) onRoute(m wire.Route) {
	ack := wire.RouteAck{From: o.self, Hop: m.Hop}
	if m.Kind == wire.RouteApp {
		o.stats.SentLookupAcks++
	} else {
		o.stats.SentControlAcks++
	}
	o.sendTo(m.Sender, wire.TypeRouteAck, ack)
	if m.Kind == wire.RouteJoin {
		if m.Src.ID.ID == o.self.ID.ID {
			return // our own old join, looped back through a stale entry
		}
		// Pastry join: every hop contributes the rows the joiner shares
		// with it, so the joiner starts with a table built along its path.
		p := o.self.ID.SharedPrefix(m.Key)
		for r := 0; r <= p && r < id.Digits; r++ {
			m.Rows = append(m.Rows, o.table.Row(r)...)
		}
		m.Rows = append(m.Rows, o.self)
	}
	o.forward(m, nil)
}

// forward routes m one hop on, or delivers it here if this node is root.
func (o *Overlay) forward(m wire.Route, exclude []id.ID) {
	next, root := o.nextHopFor(m, exclude)
	if root {
		if !o.active || o.unconfirmedCloser(m.Key) {
			o.hold(m, exclude)
			return
		}
		o.deliverHere(m)
		return
	}
	if m.Kind == wire.RouteApp {
		msg := Message{Key: m.Key, Src: m.Src, Hops: int(m.Hops), Payload: m.Payload}
		if !o.app.Forward(&msg, next) {
			return
		}
		m.Payload = msg.Payload
	}
	if int(m.Hops) >= o.cfg.MaxHops {
		o.stats.DroppedRoutes++
		o.env.Log.Debug("route dropped: too many hops", "key", m.Key.Short())
		return
	}
	m.Hop = o.newHop()
	m.Sender = o.self
	m.Hops++
	f := &inflight{m: m, next: next, exclude: exclude, sent: o.env.Clock.Now()}
	hop := m.Hop
	f.timer = o.env.Clock.AfterFunc(o.timeout(next), func() { o.hopTimeout(hop) })
	o.hops[hop] = f
	o.sendTo(next, wire.TypeRoute, m)
}

func (o *Overlay) onRouteAck(a wire.RouteAck) {
	f, ok := o.hops[a.Hop]
	if !ok || f.next.ID != a.From.ID {
		return
	}
	delete(o.hops, a.Hop)
	f.timer.Stop()
	o.sampleRTT(f.next, o.env.Clock.Now().Sub(f.sent))
}

// hopTimeout re-routes a message whose next hop stayed silent, and starts
// probing that hop.
func (o *Overlay) hopTimeout(hop uint64) {
	f, ok := o.hops[hop]
	if !ok {
		return
	}
	delete(o.hops, hop)
	o.suspect(f.next)
	if _, indirect := o.via[f.next.ID.ID]; o.cfg.IndirectHelpers > 0 && !f.relayed && !indirect && o.leaf.Contains(f.next.ID.ID) {
		// The silent hop may be the key's root behind a broken link: try
		// once through a helper next to it before routing around it, so the
		// message is not delivered at the wrong node. The probe started
		// above finds out for the messages that follow.
		if helper, ok := o.helperFor(f.next.ID.ID); ok {
			o.stats.Rerouted++
			m := f.m
			m.Hop = o.newHop()
			g := &inflight{m: m, next: f.next, exclude: f.exclude, sent: o.env.Clock.Now(), relayed: true}
			h := m.Hop
			g.timer = o.env.Clock.AfterFunc(o.timeout(helper)+o.timeout(f.next), func() { o.hopTimeout(h) })
			o.hops[h] = g
			o.relayVia(helper, f.next, wire.TypeRoute, m)
			return
		}
	}
	if len(f.exclude) >= o.cfg.MaxReroutes {
		o.stats.DroppedRoutes++
		o.env.Log.Debug("route given up", "key", f.m.Key.Short(), "tries", len(f.exclude)+1)
		return
	}
	o.stats.Rerouted++
	m := f.m
	m.Hops-- // the failed hop does not count
	o.forward(m, append(f.exclude, f.next.ID.ID))
}

// nextHopFor picks the next hop for m, or reports that this node is root.
// Nodes in exclude, and a joiner for its own join, are never chosen.
func (o *Overlay) nextHopFor(m wire.Route, exclude []id.ID) (NodeHandle, bool) {
	key := m.Key
	var skip id.ID
	if m.Kind == wire.RouteJoin {
		skip = m.Src.ID.ID
	}
	if o.leaf.Covers(key) {
		best, _ := o.closestLeaf(key, exclude, skip)
		if best.ID == m.Sender.ID && best.ID != o.self.ID {
			// The node this came from routed it here by prefix, so by its
			// table the key is not in its leaf range; by ours it is, and
			// it is the closest: one of our views is wrong, typically our
			// leaf set with a gap after deaths, filled by a far node.
			// Sending it back would loop: take prefix routing, which
			// always makes progress, and ask the sender for its leaf set.
			if h, ok := o.table.Lookup(key); ok && !excluded(h.ID.ID, exclude, skip) && h.ID != m.Sender.ID {
				o.startProbe(m.Sender, ProbeRepair, wire.ProbeWantLeaf)
				return h, false
			}
		}
		return best, best.ID.ID == o.self.ID.ID
	}
	if h, ok := o.table.Lookup(key); ok && !excluded(h.ID.ID, exclude, skip) {
		return h, false
	}
	// Rare case (Pastry section 2.2): no entry in the slot. Any known node
	// that shares as long a prefix with the key and is numerically closer
	// makes progress.
	best := o.self
	p := o.self.ID.SharedPrefix(key)
	consider := func(h NodeHandle) {
		if excluded(h.ID.ID, exclude, skip) || h.ID.SharedPrefix(key) < p {
			return
		}
		if id.Closer(key, h.ID.ID, best.ID.ID) {
			best = h
		}
	}
	for _, h := range o.leaf.Members() {
		consider(h)
	}
	for _, h := range o.table.All() {
		consider(h)
	}
	return best, best.ID.ID == o.self.ID.ID
}

// closestLeaf returns the member of leaf set and self closest to key.
func (o *Overlay) closestLeaf(key id.ID, exclude []id.ID, skip id.ID) (NodeHandle, bool) {
	best := o.self
	for _, s := range [][]NodeHandle{o.leaf.Right(), o.leaf.Left()} {
		for _, h := range s {
			if !excluded(h.ID.ID, exclude, skip) && id.Closer(key, h.ID.ID, best.ID.ID) {
				best = h
			}
		}
	}
	return best, best.ID.ID != o.self.ID.ID
}

func excluded(x id.ID, exclude []id.ID, skip id.ID) bool {
	if x == skip && !skip.IsZero() {
		return true
	}
	for _, e := range exclude {
		if e == x {
			return true
		}
	}
	return false
}

// unconfirmedCloser reports whether a leaf-set candidate still being
// confirmed is closer to key than this node: MSPastry's condition for
// holding a message instead of delivering it.
func (o *Overlay) unconfirmedCloser(key id.ID) bool {
	for x, p := range o.probe {
		if p.candidate && id.Closer(key, x, o.self.ID.ID) {
			return true
		}
	}
	for x, s := range o.finds {
		if s.candidate && id.Closer(key, x, o.self.ID.ID) {
			return true
		}
	}
	return false
}

func (o *Overlay) hold(m wire.Route, exclude []id.ID) { o.holdFor(m, exclude, id.ID{}) }

// holdFor holds m; if wait is not zero, m stays held while a probe or a
// search about that node is under way.
func (o *Overlay) holdFor(m wire.Route, exclude []id.ID, wait id.ID) {
	o.held = append(o.held, held{m: m, exclude: exclude, wait: wait, until: o.env.Clock.Now().Add(o.cfg.HoldTimeout)})
	if !o.holdArmed {
		o.holdArmed = true
		o.env.Clock.AfterFunc(o.cfg.HoldTimeout, o.expireHeld)
	}
}

// settling reports whether a probe or search about x is under way.
func (o *Overlay) settling(x id.ID) bool {
	if x.IsZero() {
		return false
	}
	_, probing := o.probe[x]
	_, searching := o.finds[x]
	return probing || searching
}

// releaseHeld re-routes every held message; those still not deliverable
// are held again.
func (o *Overlay) releaseHeld() {
	if len(o.held) == 0 {
		return
	}
	hs := o.held
	o.held = nil
	now := o.env.Clock.Now()
	for _, h := range hs {
		switch {
		case now > h.until:
			o.stats.DroppedRoutes++
			o.env.Log.Debug("route dropped: held too long", "key", h.m.Key.Short(), "wait", h.wait.Short())
		case o.settling(h.wait):
			o.held = append(o.held, h)
		default:
			o.forward(h.m, h.exclude)
		}
	}
}

func (o *Overlay) expireHeld() {
	o.holdArmed = false
	now := o.env.Clock.Now()
	kept := o.held[:0]
	for _, h := range o.held {
		if now >= h.until {
			o.stats.DroppedRoutes++
			o.env.Log.Debug("route dropped: held too long", "key", h.m.Key.Short(), "wait", h.wait.Short())
			continue
		}
		kept = append(kept, h)
	}
	o.held = kept
	if len(o.held) > 0 {
		o.holdArmed = true
		next := o.held[0].until
		for _, h := range o.held {
			if h.until < next {
				next = h.until
			}
		}
		o.env.Clock.AfterFunc(next.Sub(now), o.expireHeld)
	}
}

func (o *Overlay) deliverHere(m wire.Route) {
	switch m.Kind {
	case wire.RouteApp:
		if m.Seq != 0 {
			if m.Src.ID == o.self.ID {
				o.onDelivered(m.Seq)
			} else {
				o.sendTo(m.Src, wire.TypeDelivered, wire.Delivered{From: o.self, Seq: m.Seq})
			}
			if !o.firstDelivery(e2eKey{m.Src.ID.ID, m.Seq}) {
				return // a re-sent copy of one already delivered here
			}
		}
		o.stats.Delivered++
		o.app.Deliver(Message{Key: m.Key, Src: m.Src, Hops: int(m.Hops), Payload: m.Payload})
	case wire.RouteJoin:
		rep := wire.JoinReply{From: o.self, Leaf: o.leaf.Members(), Rows: m.Rows}
		o.sendTo(m.Src, wire.TypeJoinReply, rep)
	}
}

// onJoinReply starts the second phase of a join: probe every node that
// belongs in the new leaf set; activation waits for all their answers.
func (o *Overlay) onJoinReply(r wire.JoinReply) {
	if !o.active && !o.joining {
		return
	}
	// An active node gets a reply to a join it sent to merge partitions:
	// the same knowledge, used the same way.
	for _, h := range r.Rows {
		if h.ID.ID != o.self.ID.ID && !h.ID.IsZero() {
			if _, ok := o.table.Lookup(h.ID.ID); !ok {
				o.table.Set(h)
			}
		}
	}
	o.learn(r.Leaf, true)
	o.checkJoined()
}

// checkJoined activates a joining node once every member of its leaf set
// has answered its probe (and so knows of it). Members learnt some other
// way, such as the root that sent the join reply, are probed first.
func (o *Overlay) checkJoined() {
	if o.active || !o.joining || o.leaf.Len() == 0 {
		return
	}
	waiting := false
	for _, m := range o.leaf.Members() {
		if !o.acked[m.ID.ID] {
			waiting = true
			o.startProbe(m, ProbeCandidate, wire.ProbeWantLeaf)
		}
	}
	for _, p := range o.probe {
		if p.candidate {
			waiting = true
		}
	}
	if waiting {
		return
	}
	o.active = true
	o.joining = false
	o.acked = map[id.ID]bool{}
	if o.joinTimer != nil {
		o.joinTimer.Stop()
	}
	o.env.Log.Debug("joined", "leaf", o.leaf.Len(), "table", o.table.Len())
	o.releaseHeld()
}

// End-to-end confirmation. A hop acknowledged by a node that then crashes
// loses the message: per-hop acknowledgements cannot see past the next
// hop. The source therefore keeps each application message until the root
// confirms delivery, and sends it again (along whatever route is current)
// after EndToEndTimeout, up to EndToEndTries times in all. The root
// delivers each (source, seq) once; a copy reaching another root after a
// membership change may be delivered there too, so applications must
// tolerate the rare duplicate (PAST's operations are idempotent).

type e2eMsg struct {
	m     wire.Route
	tries int
	timer env.Timer
}

type e2eKey struct {
	src id.ID
	seq uint64
}

// maxSeen bounds the delivered (source, seq) pairs a root remembers: far
// more than arrive within a source's re-send window.
const maxSeen = 8192

func (o *Overlay) armE2E(e *e2eMsg) {
	seq := e.m.Seq
	e.timer = o.env.Clock.AfterFunc(o.cfg.EndToEndTimeout, func() {
		if o.e2e[seq] != e {
			return
		}
		if e.tries >= o.cfg.EndToEndTries {
			delete(o.e2e, seq)
			return
		}
		e.tries++
		o.stats.Resent++
		o.armE2E(e)
		m := e.m
		m.Hops = 0
		o.forward(m, nil)
	})
}

func (o *Overlay) onDelivered(seq uint64) {
	if e, ok := o.e2e[seq]; ok {
		e.timer.Stop()
		delete(o.e2e, seq)
	}
}

// firstDelivery records k and reports whether it is new.
func (o *Overlay) firstDelivery(k e2eKey) bool {
	if _, ok := o.seen[k]; ok {
		return false
	}
	o.seen[k] = struct{}{}
	o.seenLog = append(o.seenLog, k)
	if len(o.seenLog) > maxSeen {
		delete(o.seen, o.seenLog[0])
		o.seenLog = o.seenLog[1:]
	}
	return true
}
