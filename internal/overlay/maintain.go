package overlay

import (
	"fmt"
	"sort"

	"github.com/epost-mail/epost/internal/env"
	"github.com/epost-mail/epost/internal/id"
	"github.com/epost-mail/epost/internal/wire"
)

// startTimers starts the periodic maintenance, each at a random phase so
// nodes started together do not act in lockstep.
func (o *Overlay) startTimers() {
	if o.started {
		return
	}
	o.started = true
	o.every(o.cfg.HeartbeatPeriod, o.heartbeat)
	o.every(o.tableProbeInterval(), o.probeTableEntry)
	o.every(o.cfg.RowExchangePeriod, o.exchangeRow)
	o.every(o.cfg.LeafExchangePeriod, o.exchangeLeaf)
	o.every(o.cfg.ReintegratePeriod, o.reintegrate)
	o.lastTick, o.lastWall = o.env.Clock.Now(), o.env.Clock.Wall()
}

// exchangeLeaf asks a random leaf-set member for its leaf set. Heartbeats
// carry knowledge leftwards only; this lets it flow both ways, so a stray
// far member left by a burst of failures is eventually replaced.
func (o *Overlay) exchangeLeaf() {
	if !o.active {
		return
	}
	ms := o.leaf.Members()
	if len(ms) == 0 {
		return
	}
	o.startProbe(ms[o.env.Rand.IntN(len(ms))], ProbeRepair, wire.ProbeWantLeaf)
}

// every runs f periodically, first after a random fraction of period.
func (o *Overlay) every(period env.Duration, f func()) {
	var tick func()
	tick = func() {
		f()
		o.env.Clock.AfterFunc(period, tick)
	}
	o.env.Clock.AfterFunc(env.Duration(o.env.Rand.Uint64()%uint64(period)), tick)
}

// heartbeat is MSPastry's failure detector: tell the left neighbour we are
// alive unless other traffic already did, and probe the right neighbour if
// it has been silent too long.
func (o *Overlay) heartbeat() {
	if o.stalled() || !o.active {
		return
	}
	now := o.env.Clock.Now()
	o.refill()
	if l, ok := o.leaf.LeftNeighbour(); ok {
		if p := o.peers[l.ID.ID]; p == nil || now.Sub(p.lastSent) >= o.cfg.HeartbeatPeriod {
			o.sendTo(l, wire.TypeHeartbeat, wire.Heartbeat{From: o.self, Leaf: o.leaf.Members()})
		}
	}
	if r, ok := o.leaf.RightNeighbour(); ok {
		if p := o.peers[r.ID.ID]; p == nil || now.Sub(p.lastHeard) >= o.cfg.SuspectAfter {
			o.suspect(r)
		}
	}
	o.recheckLinks(now)
}

// recheckLinks tries every indirect link directly now and then. A link
// found broken may work again (the node restarted at its address, the
// route healed); relayed traffic succeeds meanwhile, so nothing else would
// ever try. A direct answer drops the relay; silence changes nothing.
func (o *Overlay) recheckLinks(now env.Time) {
	for x := range o.via {
		p := o.peers[x]
		if p == nil || now.Sub(p.linkChecked) < o.cfg.LinkRecheck {
			continue
		}
		p.linkChecked = now
		o.startProbe(p.h, ProbeLink, 0)
	}
}

// ProbeReason says why a probe was sent; Stats.Probes counts sends by it.
type ProbeReason uint8

// Probe reasons.
const (
	ProbeSuspect     ProbeReason = iota // silence: right neighbour, next hop or table entry
	ProbeVerify                         // another node reported the target dead
	ProbeCandidate                      // a leaf-set candidate learnt second-hand
	ProbeTable                          // a routing-table candidate from a row exchange
	ProbeRepair                         // asking a member for its leaf set to fill a gap
	ProbeReintegrate                    // a remembered dead node: is it back, across a partition?
	ProbeHelp                           // on behalf of a node that cannot reach the target
	ProbeCheck                          // a neighbour's leaf set lacks a member of ours
	ProbeLink                           // a direct try of a link known to be broken
	ProbeRefresh                        // the periodic check of a routing-table entry not heard from
	probeReasons
)

var probeReasonNames = [probeReasons]string{"suspect", "verify", "candidate", "table", "repair", "reintegrate", "help", "check", "link", "refresh"}

// String names the reason as experiments report it.
func (r ProbeReason) String() string {
	if int(r) < len(probeReasonNames) {
		return probeReasonNames[r]
	}
	return fmt.Sprintf("reason%d", uint8(r))
}

// suspect starts probing h unless a probe is already out.
func (o *Overlay) suspect(h NodeHandle) { o.startProbe(h, ProbeSuspect, 0) }

// verifyDeath probes h after another node reported it dead. If h is
// indeed dead it is removed without a second announcement: the reporter's
// announcement already reached the leaf set.
//
// A report is not news if h answered a verification of ours started less
// than RecentDeath ago: reports ride on every probe for that long, so it
// may be the very report we checked. Without this, a live node declared
// dead behind a broken link is re-verified on every probe that mentions
// it, and verifying probes carry their own sender's reports: one probe
// begets several, and the probes multiply without bound. A node that
// really dies meanwhile is still found by our own failure detection
// (heartbeats, the neighbours' leaf sets, silent hops).
func (o *Overlay) verifyDeath(h NodeHandle) {
	now := o.env.Clock.Now()
	p := o.peers[h.ID.ID]
	if p != nil && p.verifying && p.lastHeard > p.verifiedAt && now.Sub(p.verifiedAt) < o.cfg.RecentDeath {
		return
	}
	if _, probing := o.probe[h.ID.ID]; !probing && p != nil {
		p.verifying, p.verifiedAt = true, now
	}
	o.startProbe(h, ProbeVerify, 0)
}

// startProbe sends a probe to h, or widens the one already out.
func (o *Overlay) startProbe(h NodeHandle, why ProbeReason, flags uint8) {
	if h.ID.ID == o.self.ID.ID {
		return
	}
	p, ok := o.probe[h.ID.ID]
	if !ok {
		p = &probe{target: h, nonce: o.env.Rand.Uint64(), reason: why, verify: why == ProbeVerify || why == ProbeCheck}
		o.probe[h.ID.ID] = p
	}
	if ok && (p.reason == ProbeHelp || p.reason == ProbeReintegrate) && why != ProbeHelp && why != ProbeReintegrate {
		// A probe that would end with "nothing to declare" now also stands
		// for one of our own doubts: let its failure count as ours.
		p.reason = why
		p.verify = why == ProbeVerify || why == ProbeCheck
	}
	p.flags |= flags
	p.candidate = p.candidate || why == ProbeCandidate
	p.forTable = p.forTable || why == ProbeTable
	// A death this node found itself is announced even if someone else
	// reported it too.
	p.verify = p.verify && (why == ProbeVerify || why == ProbeCheck)
	if !ok {
		o.sendProbe(p)
	}
}

func (o *Overlay) sendProbe(p *probe) {
	p.attempts++
	o.stats.Probes[p.reason]++
	p.sent = o.env.Clock.Now()
	flags := p.flags | wire.ProbeWantReply
	if !o.active {
		flags |= wire.ProbeJoining
	}
	m := wire.Probe{From: o.self, Nonce: p.nonce, Sent: int64(p.sent), Flags: flags, Dead: o.recentDeaths()}
	if !o.active {
		// A joiner shows its leaf set so that members learn of other nodes
		// joining next to it at the same time.
		m.Leaf = o.leaf.Members()
	}
	// A link check goes direct, the others the way messages to the
	// target go.
	o.transmit(p.target, wire.TypeProbe, m, p.reason != ProbeLink)
	x := p.target.ID.ID
	nonce := p.nonce
	// Back off on retries: a slow node is not a dead one.
	p.timer = o.env.Clock.AfterFunc(o.timeout(p.target)*env.Duration(p.attempts), func() { o.probeTimeout(x, nonce) })
}

func (o *Overlay) probeTimeout(x id.ID, nonce uint64) {
	p, ok := o.probe[x]
	if !ok || p.nonce != nonce {
		return
	}
	// A death another node reported was already searched for by it; one
	// we merely inferred from a neighbour's leaf set was not.
	searchable := o.cfg.IndirectHelpers > 0 && (!p.verify || p.reason == ProbeCheck) && (o.leaf.Contains(x) || p.candidate)
	attempts := o.cfg.ProbeAttempts
	if p.reason == ProbeHelp || p.reason == ProbeReintegrate || p.reason == ProbeLink || searchable {
		// Someone else is waiting, nothing depends on it, or the helpers'
		// probes add the redundancy a third attempt would. Never more
		// than configured, though: that would slow the search down.
		attempts = min(2, attempts)
	}
	if p.attempts < attempts {
		o.sendProbe(p)
		return
	}
	delete(o.probe, x)
	o.answerHelp(x, false)
	switch {
	case p.reason == ProbeHelp || p.reason == ProbeReintegrate || p.reason == ProbeLink:
		// Not our own finding, or only the direct link (known broken)
		// failed: nothing to declare.
	case p.reason == ProbeRepair && !o.leaf.Contains(x):
	case searchable:
		// A leaf-set member or candidate: before calling it dead, find out
		// whether only our link to it is broken.
		o.startSearch(p)
		return
	default:
		o.declareDead(p.target, !p.verify, probeReasonNames[p.reason])
	}
	o.releaseHeld()
	o.checkJoined()
}

// probeAnswered finishes a probe that the target answered (its reply or
// any other message, once active).
func (o *Overlay) probeAnswered(p *probe, h NodeHandle) {
	o.resolveProbe(p)
	if p.candidate {
		o.addLeaf(h)
	}
	if p.forTable {
		o.considerTable(h)
	}
	if p.reason == ProbeReintegrate {
		o.joinVia(env.Addr(h.Addr))
	}
	o.releaseHeld()
	o.checkJoined()
}

func (o *Overlay) resolveProbe(p *probe) {
	delete(o.probe, p.target.ID.ID)
	if p.timer != nil {
		p.timer.Stop()
	}
}

// declareDead removes h everywhere. If it was in the leaf set, the repair
// is announced to the leaf set: members still holding h probe it
// themselves, and members that know nodes we now lack offer them.
func (o *Overlay) declareDead(h NodeHandle, announce bool, why string) {
	x := h.ID.ID
	o.stats.DeclaredDead++
	// Only a leaf-set member's death is passed on and silences hearsay: a
	// routing-table entry that does not answer us may just sit behind a
	// broken link (a member gets a search for a detour before this).
	_, searched := o.finds[x]
	if p, ok := o.probe[x]; ok {
		o.resolveProbe(p) // settled: no second verdict later
	}
	if s, ok := o.finds[x]; ok {
		delete(o.finds, x)
		s.timer.Stop()
	}
	o.dead[x] = deadNode{h: h, at: o.env.Clock.Now(), confirmed: o.leaf.Contains(x) || searched || why == "search failed" || why == probeReasonNames[ProbeCandidate]}
	o.pruneDead()
	delete(o.via, x)
	if o.OnDeclaredDead != nil {
		o.OnDeclaredDead(h, o.leaf.Contains(x))
	}
	inLeaf := o.leaf.Remove(x)
	o.table.Remove(x)
	delete(o.peers, x)
	o.env.Log.Debug("declared dead", "peer", h.ID.Short(), "leaf", inLeaf, "why", why)
	if !inLeaf {
		return
	}
	o.app.LeafSetChanged(h, false)
	if announce {
		ann := wire.Probe{From: o.self, Leaf: o.leaf.Members(), Dead: o.recentDeaths()}
		for _, m := range o.leaf.Members() {
			o.sendTo(m, wire.TypeProbe, ann)
		}
	}
	o.refill()
}

// refill looks for nodes to fill a side of the leaf set left short: first
// among spare nodes seen recently, then by asking the farthest member on
// the short side for its leaf set. A side is short only if the set holds
// more distinct nodes than fit on one side; in a smaller ring both sides
// simply hold everyone.
func (o *Overlay) refill() {
	half := o.cfg.LeafSetSize / 2
	if o.leaf.Len() <= half || o.leaf.Full() {
		return
	}
	o.learnCandidates(o.spares)
	view := o.leafWithPending()
	if len(view.Left()) < half {
		if l := o.leaf.Left(); len(l) > 0 {
			o.startProbe(l[len(l)-1], ProbeRepair, wire.ProbeWantLeaf)
		}
	}
	if len(view.Right()) < half {
		if r := o.leaf.Right(); len(r) > 0 {
			o.startProbe(r[len(r)-1], ProbeRepair, wire.ProbeWantLeaf)
		}
	}
}

// crossCheck compares a neighbour's leaf set with ours: a member of ours
// that belongs in theirs but is missing from it is either unknown to them
// or dead, so we probe it. Heartbeats bring a neighbour's leaf set every
// period, so a dead member whose death announcement missed us is found
// without extra messages in the common case.
func (o *Overlay) crossCheck(from NodeHandle, theirs []NodeHandle) {
	if !o.active || len(theirs) == 0 {
		return
	}
	view := NewLeafSet(from.ID.ID, o.cfg.LeafSetSize)
	for _, h := range theirs {
		view.Add(h)
	}
	view.Add(o.self)
	for _, m := range o.leaf.Members() {
		if m.ID != from.ID && view.WouldAccept(m.ID.ID) {
			// The neighbour dropped it, most likely as dead: check, without
			// announcing (the neighbour knows).
			o.startProbe(m, ProbeCheck, 0)
		}
	}
}

// addSpare remembers a node seen in someone's leaf set that ours had no
// room for: the first place to look when a member dies.
func (o *Overlay) addSpare(h NodeHandle) {
	for _, s := range o.spares {
		if s.ID == h.ID {
			return
		}
	}
	if len(o.spares) >= o.cfg.LeafSetSize*2 {
		o.spares = o.spares[1:]
	}
	o.spares = append(o.spares, h)
}

// recentDeaths lists, newest first, up to maxRecentDeaths nodes this node
// declared dead within the last RecentDeath window. They ride on every
// probe, so a member that joins the leaf set after the announcement still
// hears of a death it may hold.
func (o *Overlay) recentDeaths() []id.NodeID {
	now := o.env.Clock.Now()
	type death struct {
		x  id.ID
		at env.Time
	}
	var ds []death
	for x, d := range o.dead {
		if d.confirmed && now.Sub(d.at) <= o.cfg.RecentDeath {
			ds = append(ds, death{x, d.at})
		}
	}
	sort.Slice(ds, func(i, j int) bool {
		if ds[i].at != ds[j].at {
			return ds[i].at > ds[j].at
		}
		return ds[i].x.Cmp(ds[j].x) < 0
	})
	if len(ds) > maxRecentDeaths {
		ds = ds[:maxRecentDeaths]
	}
	var out []id.NodeID
	for _, d := range ds {
		out = append(out, id.NodeID{ID: d.x})
	}
	return out
}

// knownDead returns the nodes of hs that this node recently confirmed
// dead.
func (o *Overlay) knownDead(hs []NodeHandle) []id.NodeID {
	var out []id.NodeID
	now := o.env.Clock.Now()
	for _, h := range hs {
		if d, ok := o.dead[h.ID.ID]; ok && d.confirmed && now.Sub(d.at) <= o.cfg.RecentDeath && len(out) < maxRecentDeaths {
			out = append(out, h.ID)
		}
	}
	return out
}

// maxRecentDeaths bounds the deaths carried on one probe.
const maxRecentDeaths = 8

// pruneDead forgets nodes declared dead longer ago than DeadMemory.
func (o *Overlay) pruneDead() {
	now := o.env.Clock.Now()
	for x, d := range o.dead {
		if now.Sub(d.at) > o.cfg.DeadMemory {
			delete(o.dead, x)
		}
	}
}

// recentlyDead reports whether h, at that address, was found dead
// recently. A node that restarted at another address is news, not
// hearsay: its new address was never probed.
func (o *Overlay) recentlyDead(h NodeHandle) bool {
	d, ok := o.dead[h.ID.ID]
	return ok && d.confirmed && d.h.Addr == h.Addr && o.env.Clock.Now().Sub(d.at) <= o.cfg.HearsayMemory
}

func (o *Overlay) onProbe(m wire.Probe) {
	for _, d := range m.Dead {
		if d.ID == o.self.ID.ID {
			continue // the sender hears from us with this very exchange
		}
		if h, ok := o.leaf.Get(d.ID); ok {
			o.verifyDeath(h)
		} else if h, ok := o.table.Lookup(d.ID); ok && h.ID == d {
			o.verifyDeath(h)
		}
	}
	if m.Flags&wire.ProbeWantReply != 0 {
		r := wire.ProbeReply{From: o.self, Nonce: m.Nonce, Sent: m.Sent}
		if m.Flags&wire.ProbeWantLeaf != 0 {
			r.Leaf = o.leaf.Members()
		}
		o.sendTo(m.From, wire.TypeProbeReply, r)
	} else if m.Leaf != nil && o.knowsMissing(m.From, m.Leaf) {
		// An announcement from a node whose leaf set lacks nodes we know:
		// offer ours so it can repair.
		o.sendTo(m.From, wire.TypeProbeReply, wire.ProbeReply{From: o.self, Leaf: o.leaf.Members()})
	}
	o.learnCandidates(m.Leaf)
}

// knowsMissing reports whether our leaf set holds a node that belongs in
// the leaf set of h, given h's current members.
func (o *Overlay) knowsMissing(h NodeHandle, theirs []NodeHandle) bool {
	ls := NewLeafSet(h.ID.ID, o.cfg.LeafSetSize)
	for _, m := range theirs {
		ls.Add(m)
	}
	ls.Add(o.self)
	for _, m := range o.leaf.Members() {
		if ls.WouldAccept(m.ID.ID) {
			return true
		}
	}
	return false
}

func (o *Overlay) onProbeReply(r wire.ProbeReply) {
	if r.Nonce != 0 {
		// The reply echoes our send time, so no per-probe state is needed
		// to measure the round trip (heard() may already have resolved a
		// candidate's probe).
		o.sampleRTT(r.From, o.env.Clock.Now().Sub(env.Time(r.Sent)))
	}
	if p, ok := o.probe[r.From.ID.ID]; ok && p.nonce == r.Nonce {
		if !o.active {
			o.acked[r.From.ID.ID] = true
		}
		o.probeAnswered(p, r.From)
	}
	// heard() already confirmed the sender as a leaf member if it belongs.
	o.learnCandidates(r.Leaf)
	if o.active && r.Nonce != 0 {
		o.crossCheck(r.From, r.Leaf)
	}
	o.releaseHeld()
	o.checkJoined()
}

// learnCandidates probes the nodes in hs that would enter our leaf set:
// second-hand knowledge is confirmed before it is used. Candidates already
// being probed count as members, and nearer candidates go first, so a
// batch only probes as many nodes as it could place: a side holding a
// stray far member does not turn every rumour into a probe.
func (o *Overlay) learnCandidates(hs []NodeHandle) { o.learn(hs, false) }

// learn is learnCandidates; fresh lists (a join reply, just sent by a node
// that answered us) are used even if they name nodes we declared dead:
// after a partition heals, that is exactly the news.
func (o *Overlay) learn(hs []NodeHandle, fresh bool) {
	if len(hs) == 0 {
		return
	}
	self := o.self.ID.ID
	hs = append([]NodeHandle(nil), hs...)
	sort.Slice(hs, func(i, j int) bool {
		return self.Dist(hs[i].ID.ID).Cmp(self.Dist(hs[j].ID.ID)) < 0
	})
	var view *LeafSet
	for _, h := range hs {
		x := h.ID.ID
		if x == self || h.ID.IsZero() || (!fresh && o.recentlyDead(h)) {
			continue
		}
		if !o.leaf.WouldAccept(x) {
			if !o.leaf.Contains(x) {
				o.addSpare(h)
			}
			if _, ok := o.table.Lookup(x); !ok {
				if row, _ := o.table.Slot(x); row < id.Digits {
					o.table.Set(h)
				}
			}
			continue
		}
		if view == nil {
			view = o.leafWithPending()
		}
		if !view.WouldAccept(x) {
			continue
		}
		view.Add(h)
		o.startProbe(h, ProbeCandidate, wire.ProbeWantLeaf)
	}
}

// leafWithPending is the leaf set as it would be if every candidate being
// confirmed answered.
func (o *Overlay) leafWithPending() *LeafSet {
	v := NewLeafSet(o.self.ID.ID, o.cfg.LeafSetSize)
	for _, h := range o.leaf.Members() {
		v.Add(h)
	}
	for _, p := range o.probe {
		if p.candidate {
			v.Add(p.target)
		}
	}
	return v
}

// tableProbeInterval spreads the routing-table probes over the period: a
// probe slot comes round often enough to visit a full table's worth of
// entries (about 4 rows at the sizes we run) once per period.
func (o *Overlay) tableProbeInterval() env.Duration {
	return o.cfg.TableProbePeriod / 64
}

// probeTableEntry checks the next routing-table entry, unless traffic from
// it proved it alive within the period.
func (o *Overlay) probeTableEntry() {
	if !o.active {
		return
	}
	n := o.table.Len()
	if n == 0 {
		return
	}
	// Visit each entry about once a period: skip slots when the table is
	// small (more slots than entries).
	slots := 64
	if n > slots {
		slots = n
	}
	o.tableCursor = (o.tableCursor + 1) % slots
	h, ok := o.table.At(o.tableCursor)
	if !ok {
		return
	}
	if p := o.peers[h.ID.ID]; p != nil && o.env.Clock.Now().Sub(p.lastHeard) < o.cfg.TableProbePeriod {
		return
	}
	// Handled as a suspicion; its own reason only so that experiments
	// can tell table upkeep from other doubts.
	o.startProbe(h, ProbeRefresh, 0)
}

// exchangeRow asks an entry of a random non-empty row for its own row:
// fills holes and offers nearer candidates.
func (o *Overlay) exchangeRow() {
	if !o.active {
		return
	}
	rows := o.table.Rows()
	if rows == 0 {
		return
	}
	r := o.env.Rand.IntN(rows)
	entries := o.table.Row(r)
	if len(entries) == 0 {
		return
	}
	h := entries[o.env.Rand.IntN(len(entries))]
	o.sendTo(h, wire.TypeRowRequest, wire.RowRequest{From: o.self, Row: uint8(r)})
}

func (o *Overlay) onRowRequest(m wire.RowRequest) {
	if int(m.Row) >= id.Digits {
		return
	}
	o.sendTo(m.From, wire.TypeRowReply, wire.RowReply{From: o.self, Row: m.Row, Entries: o.table.Row(int(m.Row))})
}

func (o *Overlay) onRowReply(m wire.RowReply) {
	for _, h := range m.Entries {
		x := h.ID.ID
		if x == o.self.ID.ID || h.ID.IsZero() || o.recentlyDead(h) {
			continue
		}
		cur, ok := o.table.Lookup(x)
		switch {
		case !ok:
			o.startProbe(h, ProbeTable, 0)
		case cur.ID != h.ID && o.env.Rand.IntN(4) == 0:
			// Occasionally measure an alternative: proximity neighbour
			// selection keeps whichever answers faster.
			o.startProbe(h, ProbeTable, 0)
		}
	}
}
