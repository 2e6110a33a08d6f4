package post

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"sort"

	"github.com/epost-mail/epost/internal/env"
	"github.com/epost-mail/epost/internal/id"
	"github.com/epost-mail/epost/internal/identity"
	"github.com/epost-mail/epost/internal/past"
	"github.com/epost-mail/epost/internal/store/object"
	"github.com/epost-mail/epost/internal/wire"
)

// Errors the front-end sees.
var (
	ErrNoUser       = errors.New("post: user not served by this node")
	ErrNoFolder     = errors.New("post: no such folder")
	ErrFolderExists = errors.New("post: folder exists")
	ErrNotReady     = errors.New("post: mailbox not loaded yet")
	ErrUnknownRcpt  = errors.New("post: unknown recipient")
	// ErrOverQuota: the change would take the user past Config.Quota.
	ErrOverQuota = errors.New("post: over quota")
)

// Config tunes POST. Start from DefaultConfig.
type Config struct {
	// Lease lengths for what POST stores.
	MailLease, NotifyLease env.Duration
	// WatchPeriod is how often a user's node renews its watch on the
	// user's pending set (ePOST announced presence every 60 s); the watch
	// lasts three periods.
	WatchPeriod env.Duration
	// PollPeriod is how often the pending set is read in full, in case a
	// push was lost.
	PollPeriod env.Duration
	// FlushDelay coalesces folder changes into one log entry.
	FlushDelay env.Duration
	// CheckpointEvery writes a snapshot of a folder every so many
	// entries, so that opening it reads a bounded part of the log.
	CheckpointEvery uint64
	// SnapshotChunk is how many messages one part of a checkpoint's
	// snapshot holds (about 110 bytes each): parts keep every object far
	// below PAST's limit however big the folder, and a checkpoint
	// rewrites only the parts that changed. 0 keeps the whole snapshot
	// in the checkpoint entry.
	SnapshotChunk int
	// ChunkSize splits message bodies.
	ChunkSize int
	// RenewPeriod is how often an account renews the leases of what it
	// still references.
	RenewPeriod env.Duration
	// Gateways are the community's gateway users, whose injected mail may
	// carry any From.
	Gateways []string
	// Quota bounds each user's mail in bytes (see Account.Usage); 0 means
	// unlimited. What the user adds (APPEND) and mail to the user from
	// this node's SMTP server (CheckQuota) are refused beyond it. Mail
	// another node already accepted is still delivered: it was
	// acknowledged, and refusing it would keep it in the pending set,
	// taking places in the user's queue.
	Quota int64
	// KeepRejected leaves notifications that fail verification (forged,
	// re-sealed, tampered) in the pending set until their lease ends,
	// for inspection. By default the recipient releases each with its
	// receipt, so that they do not hold places in its queue. Either way
	// each is counted once in Stats.Forged.
	KeepRejected bool
}

// DefaultQuota is each user's quota unless configured: generous for a
// personal mailbox, and a bound on what one user can make the community
// store.
const DefaultQuota = 1 << 30

// DefaultConfig is what a node runs with.
func DefaultConfig() Config {
	return Config{
		MailLease:       past.LeaseMailbox,
		NotifyLease:     past.LeaseNotification,
		WatchPeriod:     60 * env.Second,
		PollPeriod:      5 * env.Minute,
		FlushDelay:      20 * env.Millisecond,
		CheckpointEvery: 64,
		SnapshotChunk:   2048,
		ChunkSize:       ChunkSize,
		RenewPeriod:     30 * past.Day,
		Quota:           DefaultQuota,
	}
}

// Local is the node's own small durable state (store metadata): where
// the owner's node keeps its folder heads and root record, its authority
// over what the network says. A missing name is an error matching
// object.ErrNotFound.
type Local interface {
	GetMeta(name string) ([]byte, error)
	SetMeta(name string, value []byte) error
}

// Node is what POST needs of its node: its signing identity.
type Node struct {
	Key      identity.NodeKey
	Cert     *identity.NodeCert
	Verifier *identity.Verifier
}

// Stats counts POST's work on this node.
type Stats struct {
	Sent, SendFailed          uint64
	Delivered                 uint64 // messages appended to an INBOX
	Duplicates                uint64 // notifications for messages already delivered, released again
	Forged                    uint64 // notifications that failed verification, each counted once
	SenderMismatch            uint64 // messages whose From is not their signed sender (flagged)
	Released                  uint64
	Entries, EntryFailures    uint64 // folder log entries written
	ForksMerged               uint64
	FolderLoads, LoadFailures uint64
	// SnapshotParts counts the parts of checkpoints written;
	// SnapshotPartsReused those a checkpoint named again unchanged.
	SnapshotParts, SnapshotPartsReused uint64
	// CachedLoads counts folders opened from the local cache.
	CachedLoads uint64
}

// Post is one node's POST instance: it serves the users whose keys it
// holds, over the node's PAST.
type Post struct {
	cfg   Config
	env   env.Env
	past  *past.Past
	node  Node
	local Local
	users map[string]*Account
	stats Stats

	// OnDelivered, if set, hears of every message appended to an INBOX
	// from a notification (experiments measure delivery with it).
	OnDelivered func(user string, id [16]byte)
	// Archive, if set, is handed every object a local user's mailbox
	// needs once it is durable in PAST (log entries, heads, the root
	// record, certificate, key backup, and message bodies, the received
	// ones included), for the erasure-coded archive. Kind and key are
	// those PAST stores it under; data is what PAST was given.
	Archive func(user id.UserID, kind object.Kind, key object.Key, data []byte)
	// Cache, if set, keeps the owner's folder logs on this node, so
	// that its mailboxes are served at once after a restart, before the
	// network answers (see cache.go). Set it before AddUser.
	Cache Cache
	// OnAddUser, if set, hears of every user this node starts serving,
	// before anything of theirs is archived.
	OnAddUser func(keys identity.UserKeys, cert *identity.UserCert)
}

// archive hands one of a's durable objects to the archive.
func (a *Account) archive(kind object.Kind, key object.Key, data []byte) {
	if a.x.Archive != nil {
		a.x.Archive(a.cert.UserID, kind, key, data)
	}
}

// archiveMutable hands a's signed mutable object to the archive.
func (a *Account) archiveMutable(m *past.Mutable) {
	if a.x.Archive != nil {
		a.x.Archive(a.cert.UserID, object.KindMutable, past.MutableKey(a.cert.UserID, m.Name), m.Encode())
	}
}

// New makes POST over p, installs its set policy and takes the pushed
// members of watched sets.
func New(cfg Config, e env.Env, p *past.Past, node Node, local Local) *Post {
	x := &Post{cfg: cfg, env: e, past: p, node: node, local: local, users: map[string]*Account{}}
	p.SetPolicy(NewPolicy(node.Verifier, e.Clock, DefaultLimits()))
	p.OnSetMember = x.onSetMember
	return x
}

// Stats returns the counters.
func (x *Post) Stats() Stats { return x.stats }

// Env is the environment POST runs in.
func (x *Post) Env() env.Env { return x.env }

// PendingKey is where notifications for user wait: a set at the replica
// set of the user's id.
func PendingKey(user id.UserID) object.Key {
	var k object.Key
	copy(k[:16], user.ID[:])
	h := sha256.Sum256(append([]byte("epost/post-pending/v1\x00"), user.ID[:]...))
	copy(k[16:], h[:16])
	return k
}

// CertKey is where a user's certificate is published (a mutable object
// the user signs).
func CertKey(user id.UserID) object.Key { return past.MutableKey(user, "cert") }

// Policy is the set policy for pending sets: a member must be a sealed
// notification its sending node signed, for the set's user; a release
// must be signed by that user; and a sending node may add only so many
// notifications per minute, to one recipient and overall, at each replica.
type Policy struct {
	Verifier *identity.Verifier
	clock    env.Clock
	limits   Limits
	buckets  map[bucketKey]*bucket
}

// Limits bound notification floods, per sending node, at each replica.
type Limits struct {
	PerRecipient, PerRecipientBurst float64 // notifications per minute, and burst, to one recipient
	Overall, OverallBurst           float64 // to everyone this replica stores for
}

// DefaultLimits allow a busy mailing list, not a flood.
func DefaultLimits() Limits {
	return Limits{PerRecipient: 30, PerRecipientBurst: 100, Overall: 600, OverallBurst: 2000}
}

// NewPolicy makes the pending-set policy.
func NewPolicy(v *identity.Verifier, clock env.Clock, l Limits) *Policy {
	return &Policy{Verifier: v, clock: clock, limits: l, buckets: map[bucketKey]*bucket{}}
}

type bucketKey struct {
	node id.NodeID
	set  object.Key // zero: the node's overall bucket
}

type bucket struct {
	tokens float64
	at     env.Time
}

// take spends a token from the bucket, refilled at rate per minute up to
// burst.
func (p *Policy) take(k bucketKey, rate, burst float64) bool {
	now := p.clock.Now()
	b := p.buckets[k]
	if b == nil {
		if len(p.buckets) > 100000 {
			p.buckets = map[bucketKey]*bucket{} // bound memory: forget old buckets
		}
		b = &bucket{tokens: burst, at: now}
		p.buckets[k] = b
	}
	b.tokens = min(burst, b.tokens+rate*float64(now-b.at)/float64(env.Minute))
	b.at = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// ErrFlood refuses a notification beyond a sending node's limits.
var ErrFlood = errors.New("post: too many notifications from this node")

// Admit implements past.Admitter.
func (p *Policy) Admit(set object.Key, member []byte) error {
	s, err := DecodeSealed(member)
	if err != nil {
		return err
	}
	if !p.take(bucketKey{node: s.Node, set: set}, p.limits.PerRecipient, p.limits.PerRecipientBurst) ||
		!p.take(bucketKey{node: s.Node}, p.limits.Overall, p.limits.OverallBurst) {
		return fmt.Errorf("%w %s", ErrFlood, s.Node.Short())
	}
	return nil
}

// releaseProof is what a release carries: the signed release and the
// recipient's certificate, so any holder can check it.
type releaseProof struct {
	_       struct{} `cbor:",toarray"`
	Release []byte
	Cert    []byte
}

// CheckMember implements past.SetPolicy.
func (p *Policy) CheckMember(set object.Key, member []byte) error {
	s, err := DecodeSealed(member)
	if err != nil {
		return err
	}
	if err := s.VerifyNode(p.Verifier); err != nil {
		return err
	}
	if PendingKey(id.ForUser(s.Recipient)) != set {
		return fmt.Errorf("%w: notification for %s in another user's set", ErrNotForMe, s.Recipient)
	}
	return nil
}

// CheckRelease implements past.SetPolicy.
func (p *Policy) CheckRelease(set object.Key, member object.Key, proof []byte) error {
	var rp releaseProof
	if err := wire.Unmarshal(proof, &rp); err != nil {
		return fmt.Errorf("%w: release proof: %w", ErrMalformed, err)
	}
	r, err := DecodeRelease(rp.Release)
	if err != nil {
		return err
	}
	cert, err := p.Verifier.VerifyUser(rp.Cert, r.Recipient)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrForged, err)
	}
	if PendingKey(cert.UserID) != set || r.Entry != member {
		return fmt.Errorf("%w: release names another set or entry", ErrForged)
	}
	return r.Verify(cert)
}

// Account is one user served by this node.
type Account struct {
	x       *Post
	keys    identity.UserKeys
	cert    *identity.UserCert
	logKeys []LogKey // of every key pair held, current first: seal with [0], open with any
	root    *rootRecord
	rootVer uint64
	rootID  [32]byte           // of the root record as last written or read: the next one names it
	folders map[string]*Folder // by name
	ready   bool
	// delivered holds the ids of every message appended to INBOX, from
	// the log: a notification is applied exactly once.
	delivered map[[16]byte]bool
	inflight  map[object.Key]bool // pending members being delivered
	rejected  map[object.Key]bool // pending members that failed verification, counted
	retired   bool                // another node took the mailbox over: no more writes
	cached    bool                // served from this node's cache, checked with the network after
	rootSeen  bool                // the network's root record has been read since (when cached)
	onReady   []func(error)
	// usage is the size of the distinct bodies in the folders; bodies
	// counts the messages referring to each (by first chunk key).
	usage  int64
	bodies map[object.Key]int
}

// Address is the account's address.
func (a *Account) Address() string { return a.keys.Address }

// Ready reports whether the mailbox has been loaded.
func (a *Account) Ready() bool { return a.ready }

// AddUser starts serving a user whose keys this node holds: it publishes
// the certificate, loads (or creates) the mailbox from the network, then
// watches the pending set. ready runs once the mailbox is loaded.
func (x *Post) AddUser(keys identity.UserKeys, cert *identity.UserCert, ready func(error)) (*Account, error) {
	if !cert.Matches(keys) {
		return nil, fmt.Errorf("post: add user %s: certificate does not match keys", keys.Address)
	}
	if a := x.users[keys.Address]; a != nil {
		return a, nil
	}
	a := &Account{x: x, keys: keys, cert: cert, logKeys: DeriveLogKeys(keys), folders: map[string]*Folder{},
		delivered: map[[16]byte]bool{}, inflight: map[object.Key]bool{}, rejected: map[object.Key]bool{}, bodies: map[object.Key]int{}}
	if ready != nil {
		a.onReady = append(a.onReady, ready)
	}
	x.users[keys.Address] = a
	if x.OnAddUser != nil {
		x.OnAddUser(keys, cert)
	}
	a.publishCert()
	a.loadRoot()
	return a, nil
}

// Pending is the number of notifications being taken in for the users
// served here (read, not yet in the INBOX and released).
func (x *Post) Pending() int {
	n := 0
	for _, a := range x.users {
		n += len(a.inflight)
	}
	return n
}

// Users is the number of users served here.
func (x *Post) Users() int { return len(x.users) }

// Addresses lists the users served here, sorted.
func (x *Post) Addresses() []string { return sortedNames(x.users) }

// User returns the account for address, nil if not served here.
func (x *Post) User(address string) *Account { return x.users[address] }

func (a *Account) publishCert() {
	// The version grows with each key rotation, so the new certificate
	// replaces the one senders find.
	m, err := past.SignMutable(a.keys, a.cert, "cert", a.keys.Generation(), a.cert.Bytes())
	if err != nil {
		a.x.env.Log.Error("post: sign certificate", "user", a.keys.Address, "err", err)
		return
	}
	a.x.past.InsertMutable(m, a.x.cfg.MailLease, func(_ past.InsertResult, err error) {
		if err != nil {
			a.x.env.Log.Warn("post: publish certificate", "user", a.keys.Address, "err", err)
			a.x.env.Clock.AfterFunc(a.x.cfg.WatchPeriod, a.publishCert)
			return
		}
		a.archiveMutable(m)
	})
}

func (a *Account) becomeReady(err error) {
	if err == nil {
		a.ready = true
		a.markServed()
		a.watch()
		a.poll()
		a.x.env.Clock.AfterFunc(a.x.cfg.RenewPeriod, a.renew)
		if a.cached {
			a.reconcileRoot()
		}
	}
	cbs := a.onReady
	a.onReady = nil
	for _, f := range cbs {
		f(err)
	}
}

// watch keeps this node told of new notifications for the user.
func (a *Account) watch() {
	if a.retired {
		return
	}
	a.x.past.Watch(PendingKey(a.cert.UserID), 3*a.x.cfg.WatchPeriod)
	a.checkWriter()
	a.x.env.Clock.AfterFunc(a.x.cfg.WatchPeriod, a.watch)
}

// checkWriter reads the root record: if another node has taken the
// mailbox over (a restored or moved user), this node stops writing it.
func (a *Account) checkWriter() {
	if a.cached && !a.rootSeen {
		return // on a restart this node takes the mailbox back first (reconcileRoot)
	}
	me := a.x.node.Cert.NodeID.ID
	a.x.past.LookupMutable(past.MutableKey(a.cert.UserID, a.rootName()), func(res past.MutableResult, err error) {
		if err != nil || res.Versions[0].Version <= a.rootVer {
			return
		}
		for _, m := range res.Versions {
			if r, err := a.openRoot(m.Data); err == nil && r.Writer != me {
				a.retired = true
				a.x.env.Log.Warn("post: another node now writes this mailbox; this node stops", "user", a.keys.Address)
				return
			}
		}
	})
}

// ErrNotWriter refuses changes on a node that another node has taken the
// mailbox over from.
var ErrNotWriter = errors.New("post: another node now serves this mailbox")

// Retired reports whether another node has taken the mailbox over.
func (a *Account) Retired() bool { return a.retired }

// poll reads the whole pending set: what arrived while offline, or a push
// that was lost.
func (a *Account) poll() {
	a.x.past.LookupSet(PendingKey(a.cert.UserID), func(members [][]byte, err error) {
		if err == nil {
			for _, m := range members {
				a.pending(m)
			}
		}
	})
	a.x.env.Clock.AfterFunc(a.x.cfg.PollPeriod, a.poll)
}

func (x *Post) onSetMember(set object.Key, member []byte) {
	for _, a := range x.users {
		if PendingKey(a.cert.UserID) == set {
			a.pending(member)
		}
	}
}

// sortedNames returns map keys in order, for deterministic iteration.
func sortedNames[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
