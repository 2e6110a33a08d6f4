package past

import "github.com/epost-mail/epost/internal/env"

// Day is 24 hours of ticks.
const Day = 24 * env.Hour

// Lease lengths by class of object (DESIGN.md section 5). Mailbox data
// must outlive a user's long absence. A pending-notification set (and the
// releases merged into it) is where mail waits for a user who is away, so
// it lives as long: each add or release renews the whole set's lease, and a
// set left alone for 30 days (ePOST's 28) would take the mail of anyone away
// longer with it. Released notifications leave the set at once, so its
// size follows the mail waiting, not the mail ever sent. Storage receipts
// are messages, never stored, so they have no class.
const (
	LeaseMailbox      = 365 * Day
	LeaseNotification = LeaseMailbox
)

// Config tunes PAST. Start from DefaultConfig.
type Config struct {
	// Replicas is k, the number of nodes that keep each object.
	Replicas int
	// MaxObjectSize bounds the bytes of one object; larger ones are
	// refused.
	MaxObjectSize int
	// MaxLease bounds the lease an insert may ask for.
	MaxLease env.Duration
	// InsertTimeout is how long an insert waits for its receipts, over
	// all its attempts, before failing.
	InsertTimeout env.Duration
	// InsertAttempts is how many times an insert is routed (a root that
	// fails mid-insert loses it).
	InsertAttempts int
	// LookupTimeout bounds one routed lookup attempt; FetchTimeout one
	// direct fetch from a replica.
	LookupTimeout env.Duration
	FetchTimeout  env.Duration
	// MaintainPeriod is the replica maintenance period; MaintainDelay is
	// how soon after a leaf-set change a round runs.
	MaintainPeriod env.Duration
	MaintainDelay  env.Duration
	// FullSyncRounds: every this many rounds the node forgets which
	// neighbours hold what and offers everything again, so a replica that
	// lost data (a scrubbed corruption, a replaced disk) is refilled.
	FullSyncRounds int
	// RepairDelay is Carbonite's patience: how long a node must have been
	// in the leaf set before it is given copies, or how long fewer than k
	// holders must have been reachable before a new copy is made.
	RepairDelay env.Duration
	// TickPeriod is how often the store's uptime counter is advanced and
	// expired objects are swept.
	TickPeriod env.Duration
	// ScrubPeriod is how often a slice of the local store is re-verified
	// (the store's scrub), ScrubBatch how many entries one slice holds:
	// a pass over the whole store takes ScrubPeriod * entries / ScrubBatch,
	// in small steps so that no one scrub holds the node up. A corrupt
	// entry is dropped, and replica maintenance's next full round refills
	// it from another holder. ScrubPeriod 0 turns scrubbing off.
	ScrubPeriod env.Duration
	ScrubBatch  int
	// MaxOfferEntries bounds the entries in one offer message.
	MaxOfferEntries int
	// MaxForks bounds the versions kept for one forked mutable object.
	MaxForks int
	// MaxSetMembers caps a set (a recipient's queue of pending
	// notifications); adds beyond it are refused.
	MaxSetMembers int
}

// DefaultConfig is what a node runs with: ePOST's k = 3.
func DefaultConfig() Config {
	return Config{
		Replicas:       3,
		MaxObjectSize:  4 << 20,
		MaxLease:       2 * 365 * Day,
		InsertTimeout:  30 * env.Second,
		InsertAttempts: 3,
		LookupTimeout:  5 * env.Second,
		FetchTimeout:   2 * env.Second,
		MaintainPeriod: 10 * env.Minute,
		MaintainDelay:  30 * env.Second,
		FullSyncRounds: 6,
		RepairDelay:    30 * env.Minute,
		TickPeriod:     env.Minute,
		// 500 entries a minute: a store of a million objects is
		// re-read about once every day and a half.
		ScrubPeriod:     env.Minute,
		ScrubBatch:      500,
		MaxOfferEntries: 2000,
		MaxForks:        4,
		MaxSetMembers:   10000,
	}
}

func (c Config) majority() int { return c.Replicas/2 + 1 }
