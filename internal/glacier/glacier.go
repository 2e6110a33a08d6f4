package glacier

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
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

// Overlay is what Glacier uses of the overlay below it.
type Overlay interface {
	Self() NodeHandle
	Active() bool
	Leaf() *overlay.LeafSet
	Route(key id.ID, payload []byte)
	SendDirect(to NodeHandle, payload []byte)
}

// Storage is the local store as Glacier sees it: fragments live there
// under store.KindFragment with leases like PAST's objects. past.Storage
// satisfies it, so a node shares one store between the two.
type Storage interface {
	Get(kind store.Kind, key store.Key) ([]byte, error)
	Lease(kind store.Kind, key store.Key) (env.Time, error)
	Ticks() env.Time
	PutAsync(kind store.Kind, key store.Key, data []byte, expiry env.Time, done func(error))
	ExtendLeaseAsync(kind store.Kind, key store.Key, expiry env.Time, done func(error))
	Keys(kind store.Kind, r store.Range, after *store.Key, limit int) ([]store.Key, bool, error)
}

// Errors reported to callers.
var (
	ErrInput = errors.New("glacier: invalid request")
	// ErrNoBundle: no node answered with any fragment of the bundle (past
	// the end of a chain, or a bundle never archived).
	ErrNoBundle = errors.New("glacier: no such bundle")
	// ErrUnrecoverable: fragments were found, but fewer than the code
	// needs.
	ErrUnrecoverable = errors.New("glacier: too few fragments to rebuild")
	ErrBroken        = errors.New("glacier: chain broken")
	// ErrLost: recovery found bundles past positions it could not
	// rebuild, which no later bundle supersedes.
	ErrLost = errors.New("glacier: bundles lost from the chain")
)

// Config tunes Glacier. Start from DefaultConfig.
type Config struct {
	// Code is the erasure code new bundles use (CodeFor the community's
	// size).
	Code Code
	// PerNode is the most fragments of one bundle a node holds: 1 puts
	// every fragment on a distinct node; a community smaller than Code.N
	// needs ceil(Code.N / nodes).
	PerNode int
	// ArchiveDelay bounds how long an object waits in the archive queue
	// before its bundle is sealed and placed, however small.
	ArchiveDelay env.Duration
	// MaxBundleBytes and MaxBundleObjects seal a bundle early.
	MaxBundleBytes, MaxBundleObjects int
	// StoreTimeout is how long a placement waits for acknowledgements
	// before re-sending the fragments still unacknowledged, up to
	// StoreAttempts times.
	StoreTimeout  env.Duration
	StoreAttempts int
	// A fragment walks clockwise past nodes that hold their share of its
	// bundle already. After SoftSkips hops a node takes up to twice its
	// share, after twice as many any node takes it: when fewer nodes are
	// alive than the fragments need (after a large failure) the walk
	// stays bounded instead of circling the ring.
	SoftSkips int
	// FetchTimeout bounds one round of fetching a bundle's fragments;
	// FetchAttempts rounds are tried. FetchSkips is how far clockwise a
	// routed fetch walks to find a fragment placed past its key's root.
	FetchTimeout  env.Duration
	FetchAttempts int
	FetchSkips    int
	// AuditPeriod: every holder tells each of its bundles' coordinators
	// what it holds once per period; a coordinator that counts fewer
	// than RepairBelow fragments rebuilds the missing ones.
	AuditPeriod env.Duration
	RepairBelow int
	// MaxRepairs bounds the repairs one coordinator runs at once, and so
	// the bandwidth maintenance takes.
	MaxRepairs int
	// Lease is the lease fragments are stored with (ticks of the holder's
	// own uptime counter); MaxLease the most a holder grants. Owners renew
	// their bundles' fragments every RenewPeriod.
	Lease, MaxLease env.Duration
	RenewPeriod     env.Duration
	// HandoverDelay is how long after a node joins the leaf set this node
	// waits before handing it the fragments whose keys it now owns.
	HandoverDelay env.Duration
	// SealAhead: a queue is sealed this long before its oldest object
	// has waited ArchiveDelay (at most half of it), so that placement,
	// which takes seconds, ends within ArchiveDelay.
	SealAhead env.Duration
	// Compaction (see compact.go): partial bundles are merged once the
	// oldest has waited CompactAfter (0: never), or CompactMax of them
	// wait. RecoverLookAhead is how many missing positions recovery
	// probes past a gap before it takes the chain as ended: more than the
	// longest run of positions one compaction frees.
	CompactAfter     env.Duration
	CompactMax       int
	RecoverLookAhead int
}

// sealWait is how long after its oldest object arrived a queue is sealed.
func (g *Glacier) sealWait() env.Duration {
	return max(g.cfg.ArchiveDelay-g.cfg.SealAhead, g.cfg.ArchiveDelay/2)
}

// DefaultConfig is for a community of at least 256 nodes.
func DefaultConfig() Config {
	c := CodeFor(1000, 4.0)
	return Config{
		Code:             c,
		PerNode:          1,
		ArchiveDelay:     10 * env.Minute,
		MaxBundleBytes:   MaxBundleBytes,
		MaxBundleObjects: MaxBundleObjects,
		StoreTimeout:     20 * env.Second,
		StoreAttempts:    4,
		SoftSkips:        32,
		FetchTimeout:     10 * env.Second,
		FetchAttempts:    3,
		FetchSkips:       3,
		AuditPeriod:      4 * env.Hour,
		RepairBelow:      c.N - c.N/8,
		MaxRepairs:       2,
		Lease:            365 * 24 * env.Hour,
		MaxLease:         2 * 365 * 24 * env.Hour,
		RenewPeriod:      30 * 24 * env.Hour,
		HandoverDelay:    30 * env.Second,
		SealAhead:        30 * env.Second,
		CompactAfter:     24 * env.Hour,
		CompactMax:       64,
		RecoverLookAhead: 80,
	}
}

// ConfigFor adapts DefaultConfig to a community of about nodes nodes.
func ConfigFor(nodes int) Config {
	c := DefaultConfig()
	c.Code = CodeFor(nodes, 4.0)
	c.PerNode = 1
	if nodes > 0 && nodes < c.Code.N {
		c.PerNode = (c.Code.N + nodes - 1) / nodes
		// Balance is exact only if a fragment may walk the whole ring to
		// the last node with room.
		c.SoftSkips = max(c.SoftSkips, nodes)
	}
	c.RepairBelow = c.Code.N - c.Code.N/8
	return c
}

// Stats counts Glacier's work on this node.
type Stats struct {
	// Owner side.
	Queued, QueuedBytes uint64 // objects and bytes put in archive queues
	Bundles             uint64 // bundles sealed
	BundleBytes         uint64 // their encoded bytes (before padding)
	FragmentBytes       uint64 // bytes of all their stored records
	Archived            uint64 // bundles whose every fragment was acknowledged
	Incomplete          uint64 // placements that gave up with fragments unacknowledged
	// Holder side.
	Stored, StoredBytes uint64 // fragments made durable here
	Handed              uint64 // fragments handed clockwise (this node held its share)
	Dropped             uint64 // fragments that walked too far
	BadFragments        uint64 // fragments or records that failed verification
	Malformed           uint64 // undecodable Glacier messages
	StoreErrors         uint64
	// Fetching and recovery.
	Fetches, FetchesOK, FetchesFailed uint64
	// Maintenance.
	Renewals     uint64 // lease renewals of fragments held here
	HandedOver   uint64 // fragments handed to a node that joined closer to their key
	Holdings     uint64 // audit messages sent
	Repairs      uint64 // bundles repaired by this node as coordinator
	Regenerated  uint64 // fragments it regenerated
	Unrepairable uint64 // audits that counted fewer fragments than the code needs
	// Compaction.
	Compactions       uint64 // compacted bundles sealed by this node's owners
	Released          uint64 // bundles they freed once a compaction was placed
	ReleasedFragments uint64 // fragments freed here at an owner's word
	// MaintenanceMsgs counts every audit, repair fetch and repair
	// placement message this node sent.
	MaintenanceMsgs uint64
}

// Glacier is one node's archive: the owner side (archive queues, bundle
// placement), the holder side (fragments on disk), fetching and recovery,
// and audits with repair. It is PAST's upper App; messages that are not
// Glacier's go on to its own upper App.
type Glacier struct {
	cfg      Config
	env      env.Env
	st       Storage
	verifier *identity.Verifier
	upper    overlay.App
	ov       Overlay
	self     NodeHandle

	tickBase, clockBase env.Time

	nextReq uint64
	owners  map[id.ID]*owner
	placing map[uint64]*placement
	fetches map[uint64]*fetch
	repairs map[uint64]*repair
	// held indexes this node's fragments: bundle key -> index -> store
	// key. An entry is added when a write starts, so that the per-node
	// cap counts writes in flight.
	held map[id.ID]map[uint16]store.Key
	// bundleOwner names each held bundle's owner; certs holds an
	// owner's certificate records (stored once, not beside every
	// fragment: 300 bytes a fragment is 2% of the archive): one, or one
	// per key that signed bundles held here once the owner has rotated
	// keys.
	bundleOwner map[id.ID]id.ID
	bundleN     map[id.ID]int // each held bundle's fragment count (its code's N)
	certs       map[id.ID][]*certEntry
	bundleCert  map[id.ID]*certEntry // which of them signed each held bundle, once known
	// handed: fragments already handed to a node that joined closer to
	// their key; handoverSet: a check is scheduled.
	handed      map[store.Key]bool
	handoverSet bool
	// journals: what Attach found of each owner's queue journal.
	journals map[id.ID]*recovered
	coord    map[auditKey]*audit
	// released: bundles whose owner freed them (a compacted bundle
	// supersedes them), so that neither a holder nor a coordinator brings
	// them back. Soft state, bounded.
	released map[id.ID]bool
	// answered: fetches this node has sent all its fragments of a bundle
	// to. Soft state, bounded.
	answered map[answeredKey]bool
	// verified caches the manifests whose signature checked out, each
	// with the address and certificate it was checked against (keyed by
	// the hash of all three): an owner who rotated keys has several
	// certificates, and one that does not fit the manifest must not ride
	// on the cache.
	verified map[Hash]bool
	// inflight: fragment writes not yet durable, with what waits on them.
	inflight map[store.Key][]func()

	// OnArchived, if set, hears of every bundle whose fragments were all
	// acknowledged, with how long each of its objects waited since it was
	// queued.
	OnArchived func(owner id.ID, seq uint64, waited []env.Duration)
	// OnChainPlaced, if set, hears of every bundle of a local owner's
	// chain whose fragments were all acknowledged, with its position,
	// manifest hash and the keys of the objects in it: the layer above
	// records the chain's end in the user's root record, which recovery
	// reads as a floor (and skips bundles that hold nothing but that
	// record, which would otherwise start the cycle again).
	OnChainPlaced func(owner id.ID, seq uint64, manifest Hash, objects [][32]byte)
	// OnSealed, if set, hears of every bundle sealed, with the chain
	// position that follows: the caller persists it, so that a restarted
	// node continues the chain instead of overwriting it.
	OnSealed func(owner id.ID, next uint64, prev Hash)

	stats Stats
}

// New makes a Glacier instance over st. Call Attach with the overlay
// before use.
func New(cfg Config, e env.Env, st Storage, v *identity.Verifier, upper overlay.App) (*Glacier, error) {
	if err := cfg.Code.Validate(); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInput, err)
	}
	if cfg.PerNode < 1 || cfg.StoreAttempts < 1 || cfg.FetchAttempts < 1 || cfg.MaxBundleBytes < 1 || cfg.MaxBundleObjects < 1 || cfg.Lease <= 0 || cfg.Lease > cfg.MaxLease || v == nil {
		return nil, fmt.Errorf("%w: config %+v", ErrInput, cfg)
	}
	return &Glacier{
		cfg: cfg, env: e, st: st, verifier: v, upper: upper,
		owners:      map[id.ID]*owner{},
		placing:     map[uint64]*placement{},
		fetches:     map[uint64]*fetch{},
		repairs:     map[uint64]*repair{},
		held:        map[id.ID]map[uint16]store.Key{},
		bundleOwner: map[id.ID]id.ID{},
		bundleN:     map[id.ID]int{},
		handed:      map[store.Key]bool{},
		journals:    map[id.ID]*recovered{},
		certs:       map[id.ID][]*certEntry{},
		bundleCert:  map[id.ID]*certEntry{},
		coord:       map[auditKey]*audit{},
		released:    map[id.ID]bool{},
		answered:    map[answeredKey]bool{},
		verified:    map[Hash]bool{},
	}, nil
}

// Attach connects Glacier to the overlay, indexes the fragments already
// on disk and starts the audit timer.
func (g *Glacier) Attach(ov Overlay) error {
	g.ov = ov
	g.self = ov.Self()
	g.tickBase = g.st.Ticks()
	g.clockBase = g.env.Clock.Now()
	var after *store.Key
	for {
		keys, more, err := g.st.Keys(store.KindFragment, store.Range{}, after, 10000)
		if err != nil {
			return fmt.Errorf("glacier: index fragments: %w", err)
		}
		for _, k := range keys {
			bk, idx := parseFragmentKey(k)
			if idx == certIndex {
				g.loadCert(bk, k)
				continue
			}
			if !isFragmentIndex(idx) {
				g.loadJournal(bk, idx, k)
				continue
			}
			g.hold(bk, idx, k)
		}
		if !more || len(keys) == 0 {
			break
		}
		last := keys[len(keys)-1]
		after = &last
	}
	for bk, m := range g.held {
		for _, k := range m {
			if f, err := g.readFragment(k); err == nil {
				g.bundleOwner[bk] = f.Manifest.Owner
				g.bundleN[bk] = f.Manifest.Code.N
				break
			}
		}
	}
	first := g.cfg.AuditPeriod/2 + env.Duration(g.env.Rand.IntN(int(g.cfg.AuditPeriod/2)+1))
	g.env.Clock.AfterFunc(first, g.auditTick)
	return nil
}

// Stats returns the counters.
func (g *Glacier) Stats() Stats { return g.stats }

// Config returns the configuration.
func (g *Glacier) Config() Config { return g.cfg }

func (g *Glacier) ticks() env.Time { return g.tickBase + env.Time(g.env.Clock.Now()-g.clockBase) }

func (g *Glacier) req() uint64 {
	g.nextReq++
	return g.nextReq
}

// fragmentKey is where a holder stores fragment idx of a bundle: the
// bundle key's 16 bytes (so the store's ring order groups a bundle's
// fragments), the index, and part of the manifest hash (so two manifests
// for one bundle key, which only a forking owner could make, do not
// overwrite each other).
func fragmentKey(bk id.ID, idx uint16, manifest Hash) store.Key {
	var k store.Key
	copy(k[:16], bk[:])
	binary.BigEndian.PutUint16(k[16:18], idx)
	copy(k[18:], manifest[:14])
	return k
}

// certIndex marks a store entry holding an owner's certificate record:
// the key is the owner's id, certIndex, and part of the hash of the
// address and certificate (of the address alone in records written before
// keys could rotate; those load all the same).
const certIndex = 0xFFFF

type certEntry struct {
	key    store.Key
	expiry env.Time
	rec    wire.GlacierRecord // Address and Cert only
}

func certKey(owner id.ID, address string, cert []byte) store.Key {
	return fragmentKey(owner, certIndex, sha256.Sum256(append([]byte(address+"\x00"), cert...)))
}

func (g *Glacier) loadCert(owner id.ID, k store.Key) {
	b, err := g.st.Get(store.KindFragment, k)
	if err != nil {
		return
	}
	var r wire.GlacierRecord
	if wire.Unmarshal(b, &r) != nil {
		g.stats.BadFragments++
		return
	}
	exp, err := g.st.Lease(store.KindFragment, k)
	if err != nil {
		return
	}
	g.certs[owner] = append(g.certs[owner], &certEntry{key: k, expiry: exp, rec: r})
}

// keepCert stores an owner's certificate record for at least as long as
// a fragment of theirs that expires at expiry.
func (g *Glacier) keepCert(owner id.ID, address string, cert []byte, expiry env.Time) {
	var c *certEntry
	for _, e := range g.certs[owner] {
		if e.rec.Address == address && bytes.Equal(e.rec.Cert, cert) {
			c = e
		}
	}
	switch {
	case c == nil:
		c = &certEntry{key: certKey(owner, address, cert), rec: wire.GlacierRecord{Address: address, Cert: cert}}
		g.certs[owner] = append(g.certs[owner], c)
	case c.expiry >= expiry:
		return
	}
	c.expiry = expiry
	g.st.PutAsync(store.KindFragment, c.key, wire.MustMarshal(c.rec), expiry, func(err error) {
		if err != nil {
			g.stats.StoreErrors++
			g.certs[owner] = slices.DeleteFunc(g.certs[owner], func(e *certEntry) bool { return e == c })
		}
	})
}

// attachCert puts into r, a stored fragment of bundle bk, the owner's
// certificate that signed the bundle's manifest: after a key rotation an
// owner's older bundles are signed by an older key. The first look at a
// bundle after a restart decodes the fragment and checks which one.
func (g *Glacier) attachCert(bk id.ID, r *wire.GlacierRecord) {
	c := g.bundleCert[bk]
	if c == nil {
		f, err := DecodeFragment(r.Fragment)
		if err != nil {
			return
		}
		for _, e := range g.certs[g.bundleOwner[bk]] {
			if cert, err := g.verifier.VerifyUser(e.rec.Cert, e.rec.Address); err == nil && f.Manifest.Verify(cert.Signing) == nil {
				c = e
			}
		}
		if c == nil {
			return
		}
		g.bundleCert[bk] = c
	}
	r.Address, r.Cert = c.rec.Address, c.rec.Cert
}

// readFragment reads and decodes one stored fragment.
func (g *Glacier) readFragment(k store.Key) (*Fragment, error) {
	b, err := g.st.Get(store.KindFragment, k)
	if err != nil {
		return nil, err
	}
	var r wire.GlacierRecord
	if err := wire.Unmarshal(b, &r); err != nil {
		return nil, err
	}
	return DecodeFragment(r.Fragment)
}

func parseFragmentKey(k store.Key) (id.ID, uint16) {
	var bk id.ID
	copy(bk[:], k[:16])
	return bk, binary.BigEndian.Uint16(k[16:18])
}

func (g *Glacier) hold(bk id.ID, idx uint16, k store.Key) {
	m := g.held[bk]
	if m == nil {
		m = map[uint16]store.Key{}
		g.held[bk] = m
	}
	m[idx] = k
}

func (g *Glacier) unhold(bk id.ID, idx uint16) {
	if m := g.held[bk]; m != nil {
		delete(m, idx)
		if len(m) == 0 {
			delete(g.held, bk)
			delete(g.bundleOwner, bk)
			delete(g.bundleN, bk)
			delete(g.bundleCert, bk)
		}
	}
}

// Held returns how many fragments and distinct bundles this node holds.
func (g *Glacier) Held() (fragments, bundles int) {
	for _, m := range g.held {
		fragments += len(m)
	}
	return fragments, len(g.held)
}

// send sends a message straight to a node; to itself, it arrives on the
// next turn of the loop, as from anyone else.
func (g *Glacier) send(to NodeHandle, t wire.Type, body any) int {
	b, err := wire.Encode(t, body)
	if err != nil {
		g.env.Log.Error("glacier: encode", "type", t, "err", err)
		return 0
	}
	if to.ID == g.self.ID {
		g.env.Clock.AfterFunc(0, func() { g.Direct(g.self, b) })
		return len(b)
	}
	g.ov.SendDirect(to, b)
	return len(b)
}

// route sends a message to the root of key.
func (g *Glacier) route(key id.ID, t wire.Type, body any) int {
	b, err := wire.Encode(t, body)
	if err != nil {
		g.env.Log.Error("glacier: encode", "type", t, "err", err)
		return 0
	}
	g.ov.Route(key, b)
	return len(b)
}

func isGlacier(t wire.Type) bool { return t >= 96 && t < 128 }

func (g *Glacier) decode(e wire.Envelope, v any) bool {
	if err := wire.DecodeBody(e, e.Type, v); err != nil {
		g.stats.Malformed++
		return false
	}
	return true
}

// Deliver implements overlay.App.
func (g *Glacier) Deliver(m overlay.Message) {
	e, err := wire.DecodeEnvelope(m.Payload)
	if err != nil || !isGlacier(e.Type) {
		if g.upper != nil {
			g.upper.Deliver(m)
		}
		return
	}
	switch e.Type {
	case wire.TypeGlacierStore:
		var s wire.GlacierStore
		if g.decode(e, &s) {
			g.onStore(s)
		}
	case wire.TypeGlacierFetch:
		var f wire.GlacierFetch
		if g.decode(e, &f) {
			g.onFetch(f)
		}
	case wire.TypeGlacierHolding:
		var h wire.GlacierHolding
		if g.decode(e, &h) {
			g.onHolding(h)
		}
	case wire.TypeGlacierRenew:
		var r wire.GlacierRenew
		if g.decode(e, &r) {
			g.onRenew(r)
		}
	case wire.TypeGlacierAudit:
		var a wire.GlacierAudit
		if g.decode(e, &a) {
			g.onAudit(a)
		}
	case wire.TypeGlacierRelease:
		var r wire.GlacierRelease
		if g.decode(e, &r) {
			g.onRelease(r)
		}
	default:
		g.stats.Malformed++
	}
}

// Forward implements overlay.App.
func (g *Glacier) Forward(m *overlay.Message, next NodeHandle) bool {
	e, err := wire.DecodeEnvelope(m.Payload)
	if err != nil || !isGlacier(e.Type) {
		if g.upper != nil {
			return g.upper.Forward(m, next)
		}
	}
	return true
}

// Direct implements overlay.App.
func (g *Glacier) Direct(from NodeHandle, payload []byte) {
	e, err := wire.DecodeEnvelope(payload)
	if err != nil || !isGlacier(e.Type) {
		if g.upper != nil {
			g.upper.Direct(from, payload)
		}
		return
	}
	switch e.Type {
	case wire.TypeGlacierStore:
		var s wire.GlacierStore
		if g.decode(e, &s) {
			g.onStore(s)
		}
	case wire.TypeGlacierStored:
		var s wire.GlacierStored
		if g.decode(e, &s) {
			g.onStored(s)
		}
	case wire.TypeGlacierFetch:
		var f wire.GlacierFetch
		if g.decode(e, &f) {
			g.onFetch(f)
		}
	case wire.TypeGlacierFragments:
		var f wire.GlacierFragments
		if g.decode(e, &f) {
			g.onFragments(f)
		}
	case wire.TypeGlacierRenew:
		var r wire.GlacierRenew
		if g.decode(e, &r) {
			g.onRenew(r)
		}
	case wire.TypeGlacierRelease:
		var r wire.GlacierRelease
		if g.decode(e, &r) {
			g.onRelease(r)
		}
	default:
		g.stats.Malformed++
	}
}

// LeafSetChanged implements overlay.App: a node that joins closer to some
// fragment's key than this node becomes that key's root, and is handed
// the fragment, so fetches and renewals routed to the key find it there.
func (g *Glacier) LeafSetChanged(h NodeHandle, joined bool) {
	if joined && !g.handoverSet && len(g.held) > 0 {
		g.handoverSet = true
		// Let the leaf set settle first: a join brings several changes.
		g.env.Clock.AfterFunc(g.cfg.HandoverDelay, g.handover)
	}
	if g.upper != nil {
		g.upper.LeafSetChanged(h, joined)
	}
}

// checkRecord decodes a record and verifies everything in it: the
// owner's certificate (against the community CA), the manifest's
// signature, and the fragment's Merkle proof. It returns the fragment and
// its bundle key.
func (g *Glacier) checkRecord(r wire.GlacierRecord) (*Fragment, id.ID, error) {
	f, err := DecodeFragment(r.Fragment)
	if err != nil {
		return nil, id.ID{}, err
	}
	if err := f.Check(); err != nil {
		return nil, id.ID{}, err
	}
	mh := f.Manifest.Hash()
	vk := sha256.Sum256(append(append(mh[:], r.Address+"\x00"...), r.Cert...))
	if !g.verified[vk] {
		cert, err := g.verifier.VerifyUser(r.Cert, r.Address)
		if err != nil {
			return nil, id.ID{}, err
		}
		if cert.UserID.ID != f.Manifest.Owner {
			return nil, id.ID{}, fmt.Errorf("%w: manifest owner %s, certificate for %s", ErrInput, f.Manifest.Owner.Short(), cert.UserID.Short())
		}
		if err := f.Manifest.Verify(cert.Signing); err != nil {
			return nil, id.ID{}, err
		}
		if len(g.verified) >= 4096 {
			clear(g.verified)
		}
		g.verified[vk] = true
	}
	return f, BundleKey(f.Manifest.Owner, f.Manifest.Seq), nil
}

// onStore holds a fragment, or hands it clockwise if this node holds its
// share of the bundle already.
func (g *Glacier) onStore(s wire.GlacierStore) {
	f, bk, err := g.checkRecord(s.Record)
	if err != nil {
		g.stats.BadFragments++
		g.env.Log.Warn("glacier: refused fragment", "from", s.Origin.ID.Short(), "err", err)
		return
	}
	if env.Duration(s.Lease) <= 0 || env.Duration(s.Lease) > g.cfg.MaxLease {
		g.stats.BadFragments++
		return
	}
	if g.released[bk] {
		// Superseded and freed: a late repair must not bring it back.
		return
	}
	idx := uint16(f.Index)
	mh := f.Manifest.Hash()
	ack := wire.GlacierStored{Req: s.Req, Manifest: mh, Index: idx, Holder: g.self}
	if k, ok := g.held[bk][idx]; ok && k == fragmentKey(bk, idx, mh) {
		// A re-sent fragment (its acknowledgement was lost): the write
		// may still be in flight, so acknowledge once it is durable.
		g.afterWrite(k, func() { g.send(s.Origin, wire.TypeGlacierStored, ack) })
		return
	}
	perNode := max(int(s.Cap), 1)
	switch {
	case int(s.Skips) >= 2*g.cfg.SoftSkips:
		perNode = MaxShards
	case int(s.Skips) >= g.cfg.SoftSkips:
		perNode *= 2
	}
	if len(g.held[bk]) >= perNode {
		next, ok := g.ov.Leaf().RightNeighbour()
		if !ok || s.Skips == 255 {
			g.stats.Dropped++
			return
		}
		s.Skips++
		g.stats.Handed++
		g.send(next, wire.TypeGlacierStore, s)
		return
	}
	k := fragmentKey(bk, idx, mh)
	g.hold(bk, idx, k)
	g.bundleOwner[bk] = f.Manifest.Owner
	g.bundleN[bk] = f.Manifest.Code.N
	expiry := g.ticks().Add(env.Duration(s.Lease))
	g.keepCert(f.Manifest.Owner, s.Record.Address, s.Record.Cert, expiry)
	data := wire.MustMarshal(wire.GlacierRecord{Fragment: s.Record.Fragment})
	g.writing(k)
	g.st.PutAsync(store.KindFragment, k, data, expiry, func(err error) {
		g.written(k, err)
		if err != nil {
			g.stats.StoreErrors++
			g.env.Log.Warn("glacier: store fragment", "err", err)
			g.unhold(bk, idx)
			return
		}
		g.stats.Stored++
		g.stats.StoredBytes += uint64(len(data))
		g.send(s.Origin, wire.TypeGlacierStored, ack)
	})
}

type answeredKey struct {
	origin id.NodeID
	req    uint64
	bundle id.ID
}

// onFetch answers with the fragments of a bundle held here, and walks a
// routed fetch on clockwise when the fragment asked for is not among
// them.
func (g *Glacier) onFetch(f wire.GlacierFetch) {
	reply := wire.GlacierFragments{Req: f.Req, From: g.self, Index: f.Index}
	held := g.held[f.Bundle]
	if len(held) > 0 {
		idxs := make([]int, 0, len(held))
		// A node that holds several fragments of the bundle (a small
		// community) is asked once per index: it answers the first
		// request of a fetch with all of them, later ones with the
		// fragment asked for only.
		ak := answeredKey{f.Origin.ID, f.Req, f.Bundle}
		if _, ok := held[f.Index]; ok && g.answered[ak] {
			idxs = append(idxs, int(f.Index))
		} else {
			for i := range held {
				idxs = append(idxs, int(i))
			}
			if len(g.answered) >= 1<<14 {
				clear(g.answered)
			}
			g.answered[ak] = true
		}
		sort.Ints(idxs)
		var recs []wire.GlacierRecord
		for _, i := range idxs {
			b, err := g.st.Get(store.KindFragment, held[uint16(i)])
			if err != nil {
				// Lost (expired or scrubbed): the audit will notice.
				g.unhold(f.Bundle, uint16(i))
				continue
			}
			var r wire.GlacierRecord
			if wire.Unmarshal(b, &r) != nil {
				g.stats.BadFragments++
				continue
			}
			g.attachCert(f.Bundle, &r)
			recs = append(recs, r)
		}
		if len(recs) > 0 {
			reply.Records = recs
		}
	}
	_, holds := held[f.Index]
	next, ok := g.ov.Leaf().RightNeighbour()
	if holds || f.Skips == 0 || !ok {
		reply.Last = true
		g.send(f.Origin, wire.TypeGlacierFragments, reply)
		return
	}
	if len(reply.Records) > 0 {
		g.send(f.Origin, wire.TypeGlacierFragments, reply)
	}
	f.Skips--
	g.send(next, wire.TypeGlacierFetch, f)
}

// handover sends every fragment whose key a leaf-set member is now the
// root of to that member. This node's copy stays until its lease runs
// out: renewals routed to the key reach the new holder, not it.
func (g *Glacier) handover() {
	g.handoverSet = false
	if g.ov == nil || !g.ov.Active() {
		return
	}
	members := g.ov.Leaf().Members()
	if len(members) == 0 {
		return
	}
	bks := make([]id.ID, 0, len(g.held))
	for bk := range g.held {
		bks = append(bks, bk)
	}
	sortIDs(bks)
	for _, bk := range bks {
		n := g.bundleN[bk]
		if n == 0 {
			continue
		}
		keys := FragmentKeys(bk, n)
		held := g.held[bk]
		idxs := make([]int, 0, len(held))
		for i := range held {
			idxs = append(idxs, int(i))
		}
		sort.Ints(idxs)
		for _, i := range idxs {
			sk := held[uint16(i)]
			if g.handed[sk] || i >= len(keys) {
				continue
			}
			root := g.self
			for _, m := range members {
				if id.Closer(keys[i], m.ID.ID, root.ID.ID) {
					root = m
				}
			}
			if root.ID == g.self.ID {
				continue
			}
			b, err := g.st.Get(store.KindFragment, sk)
			if err != nil {
				continue
			}
			exp, err := g.st.Lease(store.KindFragment, sk)
			if err != nil || exp <= g.ticks() {
				continue
			}
			var r wire.GlacierRecord
			if wire.Unmarshal(b, &r) != nil {
				continue
			}
			g.attachCert(bk, &r)
			g.handed[sk] = true
			g.stats.HandedOver++
			g.stats.MaintenanceMsgs++
			g.send(root, wire.TypeGlacierStore, wire.GlacierStore{
				Req: 0, Origin: g.self, Record: r, Cap: uint16(g.cfg.PerNode), Lease: int64(exp - g.ticks()),
			})
		}
	}
}

// onRenew extends the leases of the bundle's fragments held here (and of
// their owner's certificate record), and walks the renewal on clockwise
// when the fragment it names was handed on.
func (g *Glacier) onRenew(r wire.GlacierRenew) {
	if env.Duration(r.Lease) <= 0 || env.Duration(r.Lease) > g.cfg.MaxLease {
		g.stats.Malformed++
		return
	}
	expiry := g.ticks().Add(env.Duration(r.Lease))
	held := g.held[r.Bundle]
	keys := make([]store.Key, 0, len(held)+1)
	for _, k := range held {
		keys = append(keys, k)
	}
	// Every certificate of the owner's lives on: which one this bundle
	// needs is known only by decoding a fragment, and they are small.
	for _, c := range g.certs[g.bundleOwner[r.Bundle]] {
		if len(held) > 0 && c.expiry < expiry {
			c.expiry = expiry
			keys = append(keys, c.key)
		}
	}
	sort.Slice(keys, func(i, j int) bool { return string(keys[i][:]) < string(keys[j][:]) })
	for _, k := range keys {
		g.stats.Renewals++
		g.st.ExtendLeaseAsync(store.KindFragment, k, expiry, func(err error) {
			if err != nil {
				g.stats.StoreErrors++
			}
		})
	}
	if _, ok := held[r.Index]; ok || r.Skips == 0 {
		return
	}
	if next, ok := g.ov.Leaf().RightNeighbour(); ok {
		r.Skips--
		g.send(next, wire.TypeGlacierRenew, r)
	}
}

func (g *Glacier) onStored(s wire.GlacierStored) {
	if p := g.placing[s.Req]; p != nil {
		p.acked(g, s)
	}
}

func (g *Glacier) onFragments(f wire.GlacierFragments) {
	if x := g.fetches[f.Req]; x != nil {
		x.add(g, f.Records)
		if g.fetches[f.Req] != nil && f.Last {
			x.answered(g, f.Index)
		}
		return
	}
	if r := g.repairs[f.Req]; r != nil {
		r.add(g, f.Records)
	}
}

// Writes in flight, so that a duplicate store is acknowledged only once
// the first write is durable.
func (g *Glacier) writing(k store.Key) {
	if g.inflight == nil {
		g.inflight = map[store.Key][]func(){}
	}
	g.inflight[k] = nil
}

func (g *Glacier) written(k store.Key, err error) {
	waiting := g.inflight[k]
	delete(g.inflight, k)
	if err != nil {
		return
	}
	for _, f := range waiting {
		f()
	}
}

func (g *Glacier) afterWrite(k store.Key, f func()) {
	if w, ok := g.inflight[k]; ok {
		g.inflight[k] = append(w, f)
		return
	}
	f()
}
