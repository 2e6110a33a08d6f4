package past

import (
	"bytes"
	"errors"
	"fmt"
	"sort"

	"github.com/epost-mail/epost/internal/env"
	"github.com/epost-mail/epost/internal/id"
	"github.com/epost-mail/epost/internal/identity"
	"github.com/epost-mail/epost/internal/overlay"
	store "github.com/epost-mail/epost/internal/store/object"
	"github.com/epost-mail/epost/internal/wire"
)

// NodeHandle names a node.
type NodeHandle = overlay.NodeHandle

// Overlay is what PAST uses of the overlay below it.
type Overlay interface {
	Self() NodeHandle
	Active() bool
	Leaf() *overlay.LeafSet
	Table() *overlay.RoutingTable
	Route(key id.ID, payload []byte)
	SendDirect(to NodeHandle, payload []byte)
}

// Identity is the node's signing identity and the community's verifier.
type Identity struct {
	Key      identity.NodeKey
	Cert     *identity.NodeCert
	Verifier *identity.Verifier
}

// Errors reported to callers.
var (
	ErrTimeout  = errors.New("past: timed out")
	ErrNotFound = errors.New("past: not found")
	ErrRefused  = errors.New("past: refused")
	ErrInput    = errors.New("past: invalid request")
)

// Refusal reasons, counted in Stats.Refused.
const (
	RefusedHash      = iota // immutable bytes do not hash to the key
	RefusedSignature        // mutable object's certificate or signature invalid
	RefusedTooLarge         // beyond Config.MaxObjectSize
	RefusedLease            // lease not positive or beyond Config.MaxLease
	RefusedRollback         // older version than the one held
	RefusedMissing          // renewal of an object not held
	RefusedStore            // the local store failed
	RefusedMalformed        // undecodable request
	RefusedRate             // a set's admission limit (a notification flood)
	refusedReasons
)

// Stats counts PAST's work on this node.
type Stats struct {
	Inserts, InsertsOK, InsertsFailed uint64
	Lookups, LookupsOK, LookupsFailed uint64
	Stored                            uint64 // writes as a replica (inserts, renewals, pushes) made durable
	Receipts                          uint64 // receipts sent
	Refused                           [refusedReasons]uint64
	BadReceipts                       uint64 // receipts that failed verification
	BadObjects                        uint64 // lookup answers or pushes that failed verification
	Forks                             uint64 // mutable objects found forked (stored or read)
	Malformed                         uint64 // undecodable PAST messages
	// Maintenance traffic, messages and bytes sent.
	Offers, Wants, Pushes uint64
	MaintenanceBytes      uint64
	// Swept counts objects whose lease ran out, and their bytes.
	Swept, SweptBytes uint64
	StoreErrors       uint64
	// Scrubbed counts entries the periodic scrub verified, ScrubDropped
	// those it found corrupt and dropped (for maintenance to refill), and
	// ScrubPasses the passes it finished over the whole store.
	Scrubbed, ScrubDropped, ScrubPasses uint64
}

// Past is one node's PAST instance. It is the overlay's App; messages that
// are not PAST's go to the upper application.
type Past struct {
	cfg   Config
	env   env.Env
	st    Storage
	ident Identity
	upper overlay.App
	ov    Overlay
	self  NodeHandle

	// The store's tick counter reads tickBase + (now - clockBase).
	tickBase, clockBase env.Time

	nextReq uint64
	inserts map[uint64]*insertReq
	lookups map[uint64]*lookupReq
	certs   map[id.NodeID]verifiedCert // the last certificate verified per node

	// Mutable writes to one key are applied one at a time.
	busy map[store.Entry][]func()

	sets     SetPolicy
	watchers map[store.Key][]watcher
	// OnSetMember, if set, hears members pushed for sets this node
	// watches (after the policy checked them). It runs on the loop.
	OnSetMember func(set store.Key, member []byte)

	m maintState

	// The periodic scrub: where it resumes, and whether a slice is being
	// checked (one at a time).
	scrubAt   store.ScrubCursor
	scrubbing bool

	stats        Stats
	storeFailing bool // the last store write failed: see storeError
}

// New makes a PAST instance over st. Call Attach with the overlay before
// use.
func New(cfg Config, e env.Env, st Storage, ident Identity, upper overlay.App) (*Past, error) {
	if cfg.Replicas < 1 || cfg.MaxObjectSize < 1 || cfg.ScrubPeriod < 0 || (cfg.ScrubPeriod > 0 && cfg.ScrubBatch < 1) || cfg.InsertAttempts < 1 || cfg.MaxForks < 1 || cfg.MaxOfferEntries < 1 || cfg.MaxSetMembers < 1 {
		return nil, fmt.Errorf("%w: config %+v", ErrInput, cfg)
	}
	if ident.Cert == nil || ident.Verifier == nil || !ident.Cert.Matches(ident.Key) {
		return nil, fmt.Errorf("%w: node identity missing or key does not match certificate", ErrInput)
	}
	return &Past{
		cfg: cfg, env: e, st: st, ident: ident, upper: upper,
		inserts: map[uint64]*insertReq{},
		lookups: map[uint64]*lookupReq{},
		certs: map[id.NodeID]verifiedCert{ident.Cert.NodeID: {
			raw: ident.Cert.Bytes(), key: ident.Key.Public(), epoch: ident.Verifier.Epoch()}},
		busy:     map[store.Entry][]func(){},
		watchers: map[store.Key][]watcher{},
		m:        newMaintState(),
	}, nil
}

// Attach connects PAST to the overlay it is the App of and starts its
// timers.
func (p *Past) Attach(ov Overlay) {
	p.ov = ov
	p.self = ov.Self()
	p.tickBase = p.st.Ticks()
	p.clockBase = p.env.Clock.Now()
	p.scheduleTick()
	if p.cfg.ScrubPeriod > 0 {
		p.scheduleScrub()
	}
	p.scheduleMaintain(p.cfg.MaintainPeriod/2 + env.Duration(p.env.Rand.IntN(int(p.cfg.MaintainPeriod/2)+1)))
}

// Stats returns the counters.
func (p *Past) Stats() Stats { return p.stats }

// Env is the environment PAST runs in, for the layer above to share.
func (p *Past) Env() env.Env { return p.env }

// ticks is the store's uptime counter now.
func (p *Past) ticks() env.Time { return p.tickBase + env.Time(p.env.Clock.Now()-p.clockBase) }

func (p *Past) scheduleTick() {
	p.env.Clock.AfterFunc(p.cfg.TickPeriod, func() {
		p.tick()
		p.scheduleTick()
	})
}

// tick persists the uptime counter and sweeps expired objects.
func (p *Past) tick() {
	if err := p.st.SetTicks(p.ticks()); err != nil {
		p.storeError("set ticks", err)
		return
	}
	for range 100 {
		rep, err := p.st.Sweep(1000)
		if err != nil {
			p.storeError("sweep", err)
			return
		}
		for _, r := range rep.Removed {
			p.stats.Swept++
			p.stats.SweptBytes += uint64(r.Size)
			p.m.forget(r.Entry)
		}
		if !rep.More {
			return
		}
	}
}

func (p *Past) scheduleScrub() {
	p.env.Clock.AfterFunc(p.cfg.ScrubPeriod, func() {
		p.scrub()
		p.scheduleScrub()
	})
}

// scrub verifies the next ScrubBatch entries of the local store. The
// cursor is soft state: a restarted node begins a new pass.
func (p *Past) scrub() {
	if p.scrubbing {
		return // the last slice is still being read: a slow disk
	}
	p.scrubbing = true
	p.st.ScrubAsync(p.scrubAt, p.cfg.ScrubBatch, func(rep store.ScrubReport, err error) {
		p.scrubbing = false
		if err != nil {
			p.storeError("scrub", err)
			return
		}
		p.scrubAt = rep.Next
		p.stats.Scrubbed += uint64(rep.Checked)
		if rep.PassDone {
			p.stats.ScrubPasses++
		}
		for _, e := range rep.Dropped {
			p.stats.ScrubDropped++
			// No longer held here: maintenance must not count this copy,
			// and a holder's next full round offers it back.
			p.m.forget(e)
			p.env.Log.Warn("past: scrub dropped a corrupt entry; maintenance will fetch it again", "entry", e.String())
		}
	})
}

// storeError counts a failed store operation and logs the first of a
// run at warning level, the rest at debug: a full disk fails every write
// until there is room, and a line per write would bury everything else.
func (p *Past) storeError(what string, err error) {
	p.stats.StoreErrors++
	if p.storeFailing {
		p.env.Log.Debug("past: store", "op", what, "err", err)
		return
	}
	p.storeFailing = true
	p.env.Log.Warn("past: store failing (more failures until a write succeeds are logged at debug level)", "op", what, "err", err)
}

// stored counts a replica write made durable, which ends a run of store
// failures.
func (p *Past) stored() {
	p.stats.Stored++
	if p.storeFailing {
		p.storeFailing = false
		p.env.Log.Info("past: store writes succeed again")
	}
}

// Deliver implements overlay.App.
func (p *Past) Deliver(m overlay.Message) {
	e, err := wire.DecodeEnvelope(m.Payload)
	if err != nil || !isPast(e.Type) {
		p.upperDeliver(m)
		return
	}
	switch e.Type {
	case wire.TypePastStore:
		var s wire.PastStore
		if p.decode(e, &s) && s.Fanout {
			p.onRootStore(s)
		}
	case wire.TypePastLookup:
		var l wire.PastLookup
		if p.decode(e, &l) {
			p.answer(l, true)
		}
	case wire.TypePastWatch:
		var w wire.PastWatch
		if p.decode(e, &w) && w.Fanout {
			p.onWatch(w)
		}
	default:
		p.stats.Malformed++
	}
}

func (p *Past) upperDeliver(m overlay.Message) {
	if p.upper != nil {
		p.upper.Deliver(m)
	}
}

// Forward implements overlay.App: a node on a lookup's path that holds
// the immutable object answers it.
func (p *Past) Forward(m *overlay.Message, next NodeHandle) bool {
	e, err := wire.DecodeEnvelope(m.Payload)
	if err != nil || !isPast(e.Type) {
		if p.upper != nil {
			return p.upper.Forward(m, next)
		}
		return true
	}
	if e.Type != wire.TypePastLookup {
		return true
	}
	var l wire.PastLookup
	if wire.DecodeBody(e, wire.TypePastLookup, &l) != nil || store.Kind(l.Kind) != store.KindImmutable {
		return true
	}
	if ok, err := p.st.Has(store.KindImmutable, l.Key); err != nil || !ok {
		return true
	}
	return !p.answer(l, false)
}

// Direct implements overlay.App.
func (p *Past) Direct(from NodeHandle, payload []byte) {
	e, err := wire.DecodeEnvelope(payload)
	if err != nil || !isPast(e.Type) {
		if p.upper != nil {
			p.upper.Direct(from, payload)
		}
		return
	}
	switch e.Type {
	case wire.TypePastStore:
		var s wire.PastStore
		if p.decode(e, &s) {
			p.onReplicaStore(s, nil)
		}
	case wire.TypePastReceipt:
		var r wire.PastReceipt
		if p.decode(e, &r) {
			p.onReceipt(r)
		}
	case wire.TypePastRefuse:
		var r wire.PastRefuse
		if p.decode(e, &r) {
			p.onRefuse(from, r)
		}
	case wire.TypePastFetch:
		var l wire.PastLookup
		if p.decode(e, &l) {
			p.answer(l, false)
		}
	case wire.TypePastObject:
		var o wire.PastObject
		if p.decode(e, &o) {
			p.onObject(from, o)
		}
	case wire.TypePastOffer:
		var o wire.PastOffer
		if p.decode(e, &o) {
			p.onOffer(from, o)
		}
	case wire.TypePastWant:
		var w wire.PastWant
		if p.decode(e, &w) {
			p.onWant(from, w)
		}
	case wire.TypePastPush:
		var x wire.PastPush
		if p.decode(e, &x) {
			p.onPush(from, x)
		}
	case wire.TypePastWatch:
		var w wire.PastWatch
		if p.decode(e, &w) && !w.Fanout {
			p.onWatch(w)
		}
	case wire.TypePastNotify:
		var n wire.PastNotify
		if p.decode(e, &n) {
			p.onNotify(from, n)
		}
	default:
		p.stats.Malformed++
	}
}

// LeafSetChanged implements overlay.App: replica maintenance follows
// membership.
func (p *Past) LeafSetChanged(h NodeHandle, joined bool) {
	if joined {
		if _, ok := p.m.since[h.ID.ID]; !ok {
			p.m.since[h.ID.ID] = p.env.Clock.Now()
		}
	} else {
		delete(p.m.since, h.ID.ID)
		p.recheckInserts(h)
	}
	p.scheduleMaintain(p.cfg.MaintainDelay)
	if p.upper != nil {
		p.upper.LeafSetChanged(h, joined)
	}
}

// pastKind reports whether PAST stores and serves objects of kind k; the
// store's other kinds (Glacier's fragments) belong to other layers.
func pastKind(k store.Kind) bool {
	return k == store.KindImmutable || k == store.KindMutable || k == store.KindSet
}

func isPast(t wire.Type) bool { return t >= 64 && t < 96 }

func (p *Past) decode(e wire.Envelope, v any) bool {
	if err := wire.DecodeBody(e, e.Type, v); err != nil {
		p.stats.Malformed++
		return false
	}
	return true
}

// send sends a PAST message to one node; to itself, it is handled on a
// later turn of the loop, as a message from the network would be.
func (p *Past) send(to NodeHandle, t wire.Type, body any) int {
	b, err := wire.Encode(t, body)
	if err != nil {
		p.env.Log.Error("past: encode", "type", t, "err", err)
		return 0
	}
	if to.ID == p.self.ID {
		p.env.Clock.AfterFunc(0, func() { p.Direct(p.self, b) })
		return len(b)
	}
	p.ov.SendDirect(to, b)
	return len(b)
}

func (p *Past) route(key store.Key, t wire.Type, body any) {
	b, err := wire.Encode(t, body)
	if err != nil {
		p.env.Log.Error("past: encode", "type", t, "err", err)
		return
	}
	p.ov.Route(key.Ring(), b)
}

// closest returns the n nodes closest to key among cands (deduplicated),
// closest first.
func closest(key id.ID, cands []NodeHandle, n int) []NodeHandle {
	seen := make(map[id.ID]bool, len(cands))
	out := make([]NodeHandle, 0, len(cands))
	for _, c := range cands {
		if c.ID.IsZero() || seen[c.ID.ID] {
			continue
		}
		seen[c.ID.ID] = true
		out = append(out, c)
	}
	sort.Slice(out, func(i, j int) bool { return id.Closer(key, out[i].ID.ID, out[j].ID.ID) })
	if len(out) > n {
		out = out[:n]
	}
	return out
}

// replicaSet is this node's view of the n nodes closest to key: its leaf
// set and itself.
func (p *Past) replicaSet(key store.Key, n int) []NodeHandle {
	return closest(key.Ring(), append(p.ov.Leaf().Members(), p.self), n)
}

// verifiedCert is a node certificate that passed the CA and the
// revocation list of epoch.
type verifiedCert struct {
	raw   []byte
	key   identity.NodePublicKey
	epoch uint64
}

// verifyNode returns the public key of a node certificate, checked
// against the CA. The check is cached per node, but only for the same
// certificate under the same revocation epoch: a node whose key was
// rotated (`epost ca rotate-node`: a new key and certificate for the same
// NodeID) is verified afresh, and a revoked certificate stops counting
// as soon as the list is adopted.
func (p *Past) verifyNode(node id.NodeID, cert []byte) (identity.NodePublicKey, bool) {
	epoch := p.ident.Verifier.Epoch()
	if c, ok := p.certs[node]; ok && c.epoch == epoch && bytes.Equal(c.raw, cert) {
		return c.key, true
	}
	c, err := p.ident.Verifier.VerifyNode(cert)
	if err != nil || c.NodeID != node {
		return identity.NodePublicKey{}, false
	}
	p.certs[node] = verifiedCert{raw: bytes.Clone(cert), key: c.Key, epoch: epoch}
	return c.Key, true
}

// verifyObject checks bytes offered under (kind, key): the hash of an
// immutable object, or every object of a mutable slot or a single mutable
// object. It returns the slot for mutable data.
func (p *Past) verifyObject(kind store.Kind, key store.Key, data []byte, single bool) (slot, int, error) {
	if len(data) > p.cfg.MaxObjectSize {
		return nil, RefusedTooLarge, fmt.Errorf("%w: %d bytes, limit %d", ErrRefused, len(data), p.cfg.MaxObjectSize)
	}
	switch kind {
	case store.KindImmutable:
		if store.ImmutableKey(data) != key {
			return nil, RefusedHash, fmt.Errorf("%w: bytes do not hash to %s", ErrBadObject, key.Short())
		}
		return nil, 0, nil
	case store.KindMutable:
		var s slot
		if single {
			m, err := DecodeMutable(data)
			if err != nil {
				return nil, RefusedMalformed, err
			}
			s = slot{m}
		} else {
			var err error
			if s, err = decodeSlot(data); err != nil {
				return nil, RefusedMalformed, err
			}
		}
		for _, m := range s {
			k, err := m.Verify(p.ident.Verifier)
			if err != nil {
				return nil, RefusedSignature, err
			}
			if k != key {
				return nil, RefusedSignature, fmt.Errorf("%w: object is for key %s, not %s", ErrBadObject, k.Short(), key.Short())
			}
		}
		return s, 0, nil
	}
	return nil, RefusedMalformed, fmt.Errorf("%w: kind %d", ErrInput, kind)
}

// serial runs f once no earlier mutable write to e is in flight; f must
// call the function it is given when its write completes.
func (p *Past) serial(e store.Entry, f func(release func())) {
	if q, ok := p.busy[e]; ok {
		p.busy[e] = append(q, func() { f(func() { p.release(e) }) })
		return
	}
	p.busy[e] = nil
	f(func() { p.release(e) })
}

func (p *Past) release(e store.Entry) {
	q := p.busy[e]
	if len(q) == 0 {
		delete(p.busy, e)
		return
	}
	p.busy[e] = q[1:]
	q[0]()
}
